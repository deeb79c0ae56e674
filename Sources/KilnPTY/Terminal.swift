import CShims
import Dispatch
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Synchronization

/// One pseudo-terminal running a shell. Output goes to a 256 KiB replay ring and to every attached
/// viewer; a slow viewer slows the terminal (like a real one) for a while, then is dropped and can
/// reattach. The terminal outlives its connections and ends when its shell exits, when deleted, or
/// when nobody has viewed it for the idle limit.
final class Terminal: Sendable {
    static let replayBytes = 256 * 1024
    /// A viewer this far behind holds the terminal back…
    static let viewerHighWater = 4 << 20
    /// …for at most this long before it is dropped.
    static let viewerStallSeconds = 10.0

    struct State {
        var ring = TailBuffer(capacity: Terminal.replayBytes)
        var viewers: [Int: Viewer] = [:]
        var nextViewer = 0
        var exitCode: Int?
        var cols: Int
        var rows: Int
        var lastSeen: Date
        var ended = false
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
    }

    let id: String
    let userID: String
    let wsID: String
    let projectID: String?
    let shell: String
    let cwd: String
    let pid: pid_t
    let master: Int32
    let createdAt: Date
    let state: Mutex<State>
    let writes: DispatchQueue
    /// The secrets this shell was given: replaced in its output before the ring and the viewers.
    let redactor: Redactor

    init(
        id: String, userID: String, wsID: String, projectID: String?, shell: String, cwd: String, pid: pid_t,
        master: Int32, cols: Int, rows: Int, redactor: Redactor = Redactor([])
    ) {
        self.id = id
        self.redactor = redactor
        self.userID = userID
        self.wsID = wsID
        self.projectID = projectID
        self.shell = shell
        self.cwd = cwd
        self.pid = pid
        self.master = master
        self.createdAt = Date()
        state = Mutex(State(cols: cols, rows: rows, lastSeen: Date()))
        writes = DispatchQueue(label: "kiln.pty.\(id)")
    }

    var info: JSONValue {
        state.withLock { s in
            .object([
                "id": .string(id), "pid": .int(Int(pid)), "shell": .string(shell), "cwd": .string(cwd),
                "project_id": projectID.map { .string($0) } ?? .null, "ws_id": .string(wsID),
                "cols": .int(s.cols), "rows": .int(s.rows), "viewers": .int(s.viewers.count),
                "status": s.exitCode == nil ? "running" : "exited", "exit_code": s.exitCode.map { .int($0) } ?? .null,
                "created_at": .string(HTTPDate.iso8601(createdAt)),
                "last_seen_at": .string(HTTPDate.iso8601(s.lastSeen)),
            ])
        }
    }

    var exited: Bool { state.withLock { $0.exitCode != nil } }

    /// Returns once the shell has ended and its viewers were told.
    func waitForExit() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.exitCode != nil { return true }
                s.exitWaiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    /// Into the ring and onto every viewer's socket under the lock, so a viewer attaching now gets
    /// these bytes either in its replay or after it, never both and never before it.
    func deliver(_ bytes: [UInt8], _ count: Int? = nil) -> [Viewer] {
        let n = count ?? bytes.count
        guard n > 0 else { return state.withLock { Array($0.viewers.values) } }
        return bytes.withUnsafeBytes { raw in
            state.withLock { s -> [Viewer] in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                s.ring.append(chunk)
                for v in s.viewers.values { v.output(chunk) }
                return Array(s.viewers.values)
            }
        }
    }

    /// The reader (its own thread): terminal output to the ring and the viewers, until the shell ends.
    func pump(onExit: @escaping @Sendable () -> Void) {
        var buf = [UInt8](repeating: 0, count: 128 * 1024)
        var redacting = StreamRedactor(redactor)
        while true {
            var n = buf.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN {
                // The master is non-blocking (so input writes never stall the write queue): wait here.
                var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, -1)
                continue
            }
            if n <= 0 { break }  // EIO: the slave side closed (the shell and its children are gone)
            // Whatever else is already waiting joins this chunk (the terminal hands out a few KiB per
            // read): one frame instead of many when output is fast, and no wait when it is not.
            while n < buf.count {
                let more = buf.withUnsafeMutableBytes { read(master, $0.baseAddress! + n, $0.count - n) }
                if more > 0 { n += more } else if more < 0 && errno == EINTR { continue } else { break }
            }
            let viewers = redactor.isEmpty ? deliver(buf, n) : deliver(redacting.feed(Array(buf[0..<n])))
            // Back-pressure: wait while a viewer is far behind, but never forever.
            var waited = 0.0
            while let slow = viewers.first(where: { $0.pendingBytes > Terminal.viewerHighWater && !$0.isClosed }) {
                if waited > Terminal.viewerStallSeconds {
                    slow.drop()
                    break
                }
                usleep(200)
                waited += 0.0002
            }
        }
        if !redactor.isEmpty { _ = deliver(redacting.finish()) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7f == 0 ? Int((status >> 8) & 0xff) : 128 + Int(status & 0x7f)
        let waiters = state.withLock { s in
            s.exitCode = code
            for v in s.viewers.values { v.exit(code) }
            defer { s.exitWaiters = [] }
            return s.exitWaiters
        }
        writes.sync { _ = close(master) }
        onExit()
        for w in waiters { w.resume() }
    }

    /// Adds a viewer on `socket` and sends it the replay (and the exit, if the shell has ended),
    /// atomically with respect to new output.
    func attach(_ socket: WebSocket) -> Viewer {
        state.withLock { s in
            s.nextViewer += 1
            let v = Viewer(id: s.nextViewer, socket: socket)
            s.viewers[v.id] = v
            s.lastSeen = Date()
            let replay = s.ring.bytes
            if !replay.isEmpty { replay.withUnsafeBytes { v.output($0) } }
            if let code = s.exitCode { v.exit(code) }
            return v
        }
    }

    func detach(_ v: Viewer) {
        state.withLock { s in
            s.viewers[v.id] = nil
            s.lastSeen = Date()
        }
    }

    func input(_ bytes: [UInt8]) {
        writes.async { [master] in
            guard !self.exited else { return }
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { write(master, $0.baseAddress! + off, bytes.count - off) }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno == EAGAIN {
                    // The program is not reading its input yet; wait (bounded) rather than drop keystrokes.
                    var p = pollfd(fd: master, events: Int16(POLLOUT), revents: 0)
                    if poll(&p, 1, 5000) <= 0 { return }
                    continue
                }
                if n <= 0 { return }
                off += n
            }
        }
    }

    func resize(cols: Int, rows: Int) {
        state.withLock {
            $0.cols = cols
            $0.rows = rows
        }
        writes.async { [master] in
            guard !self.exited else { return }
            _ = kiln_set_winsize(master, UInt16(cols), UInt16(rows))
        }
    }

    /// Hangs up the shell's session (SIGHUP, then SIGKILL if it lingers).
    func terminate() {
        guard !exited else { return }
        kill(-pid, SIGHUP)
        kill(pid, SIGHUP)
        let pid = self.pid
        DispatchQueue.global().asyncAfter(deadline: .now() + 2) { [weak self] in
            if self?.exited == false {
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
            }
        }
    }
}

/// One attached connection. The reader thread pushes output straight onto its socket, a frame per
/// read in order, without waking a task per chunk (that hop cost more than the bytes themselves).
final class Viewer: Sendable {
    let id: Int
    let socket: WebSocket
    /// Set once the exit was sent or the viewer was dropped: nothing more goes out.
    private let finished = Mutex(false)

    init(id: Int, socket: WebSocket) {
        self.id = id
        self.socket = socket
    }

    /// Bytes pushed and not yet written: how far behind this viewer is.
    var pendingBytes: Int { socket.pushBacklog }
    var isClosed: Bool { socket.isClosed || finished.withLock { $0 } }

    func output(_ bytes: UnsafeRawBufferPointer) {
        guard !finished.withLock({ $0 }) else { return }
        // No limit here: the reader waits on `pendingBytes` after each read instead.
        _ = socket.push(binary: bytes, limit: .max)
    }

    /// The exit message, then the close handshake.
    func exit(_ code: Int) {
        guard
            !finished.withLock({
                let was = $0
                $0 = true
                return was
            })
        else { return }
        _ = socket.push(text: JSONValue.object(["type": "exit", "code": .int(code)]).jsonText, limit: .max)
        socket.close(code: WebSocketCloseCode.normal, reason: "exited")
    }

    /// Too slow for too long: closed, so it reattaches (and gets the replay) when it can keep up.
    func drop() {
        guard
            !finished.withLock({
                let was = $0
                $0 = true
                return was
            })
        else { return }
        socket.close(code: WebSocketCloseCode.policyViolation, reason: "too slow; reattach to resume")
    }
}
