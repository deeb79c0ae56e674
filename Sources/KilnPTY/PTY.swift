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

    init(id: String, userID: String, wsID: String, projectID: String?, shell: String, cwd: String, pid: pid_t, master: Int32, cols: Int, rows: Int) {
        self.id = id; self.userID = userID; self.wsID = wsID; self.projectID = projectID; self.shell = shell; self.cwd = cwd
        self.pid = pid; self.master = master; self.createdAt = Date()
        state = Mutex(State(cols: cols, rows: rows, lastSeen: Date()))
        writes = DispatchQueue(label: "kiln.pty.\(id)")
    }

    var info: JSONValue {
        state.withLock { s in
            .object(["id": .string(id), "pid": .int(Int(pid)), "shell": .string(shell), "cwd": .string(cwd),
                     "project_id": projectID.map { .string($0) } ?? .null, "ws_id": .string(wsID),
                     "cols": .int(s.cols), "rows": .int(s.rows), "viewers": .int(s.viewers.count),
                     "status": s.exitCode == nil ? "running" : "exited", "exit_code": s.exitCode.map { .int($0) } ?? .null,
                     "created_at": .string(HTTPDate.iso8601(createdAt)), "last_seen_at": .string(HTTPDate.iso8601(s.lastSeen))])
        }
    }

    var exited: Bool { state.withLock { $0.exitCode != nil } }

    /// The reader (its own thread): terminal output to the ring and the viewers, until the shell ends.
    func pump(onExit: @escaping @Sendable () -> Void) {
        var buf = [UInt8](repeating: 0, count: 128 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN {
                // The master is non-blocking (so input writes never stall the write queue): wait here.
                var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, -1)
                continue
            }
            if n <= 0 { break }  // EIO: the slave side closed (the shell and its children are gone)
            let chunk = buf[0..<n]
            let viewers = state.withLock { s -> [Viewer] in
                s.ring.append(chunk)
                return Array(s.viewers.values)
            }
            for v in viewers { v.push(.output(Array(chunk))) }
            // Back-pressure: wait while a viewer is far behind, but never forever.
            var waited = 0.0
            while let slow = viewers.first(where: { $0.pendingBytes > Terminal.viewerHighWater && !$0.isClosed }) {
                if waited > Terminal.viewerStallSeconds { slow.push(.drop); break }
                usleep(200); waited += 0.0002
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7f == 0 ? Int((status >> 8) & 0xff) : 128 + Int(status & 0x7f)
        let viewers = state.withLock { s -> [Viewer] in s.exitCode = code; return Array(s.viewers.values) }
        for v in viewers { v.push(.exit(code)) }
        writes.sync { _ = close(master) }
        onExit()
    }

    /// Adds a viewer and hands it the replay, atomically with respect to new output.
    func attach() -> (Viewer, replay: [UInt8], exitCode: Int?) {
        state.withLock { s in
            s.nextViewer += 1
            let v = Viewer(id: s.nextViewer)
            s.viewers[v.id] = v
            s.lastSeen = Date()
            return (v, s.ring.bytes, s.exitCode)
        }
    }

    func detach(_ v: Viewer) {
        state.withLock { s in s.viewers[v.id] = nil; s.lastSeen = Date() }
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
        state.withLock { $0.cols = cols; $0.rows = rows }
        writes.async { [master] in guard !self.exited else { return }; _ = kiln_set_winsize(master, UInt16(cols), UInt16(rows)) }
    }

    /// Hangs up the shell's session (SIGHUP, then SIGKILL if it lingers).
    func terminate() {
        guard !exited else { return }
        kill(-pid, SIGHUP); kill(pid, SIGHUP)
        let pid = self.pid
        DispatchQueue.global().asyncAfter(deadline: .now() + 2) { [weak self] in
            if self?.exited == false { kill(-pid, SIGKILL); kill(pid, SIGKILL) }
        }
    }
}

/// What one attached connection still has to send.
final class Viewer: Sendable {
    enum Item: Sendable { case output([UInt8]), exit(Int), drop }
    struct Queue {
        var items: [Item] = []
        var bytes = 0
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
    }
    let id: Int
    let queue = Mutex(Queue())
    init(id: Int) { self.id = id }

    var pendingBytes: Int { queue.withLock { $0.bytes } }
    var isClosed: Bool { queue.withLock { $0.closed } }

    func push(_ item: Item) {
        let w = queue.withLock { q -> CheckedContinuation<Void, Never>? in
            guard !q.closed else { return nil }
            if case .output(let b) = item { q.bytes += b.count }
            q.items.append(item)
            let w = q.waiter; q.waiter = nil; return w
        }
        w?.resume()
    }

    func close() {
        let w = queue.withLock { q -> CheckedContinuation<Void, Never>? in q.closed = true; let w = q.waiter; q.waiter = nil; return w }
        w?.resume()
    }

    /// The next things to send: consecutive output merged into one frame (up to 1 MiB).
    func next() async -> [Item]? {
        while true {
            let got = queue.withLock { q -> [Item]? in
                if q.items.isEmpty { return q.closed ? [] : nil }
                var out: [Item] = []
                var merged: [UInt8] = []
                var taken = 0
                for item in q.items {
                    if case .output(let b) = item, merged.count + b.count <= 1 << 20 || merged.isEmpty {
                        merged += b; taken += 1; continue
                    }
                    break
                }
                if taken > 0 { out.append(.output(merged)); q.bytes -= merged.count; q.items.removeFirst(taken) }
                else { out.append(q.items.removeFirst()) }
                return out
            }
            if let got { return got.isEmpty ? nil : got }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = queue.withLock { q -> Bool in
                    if !q.items.isEmpty || q.closed { return true }
                    q.waiter = c; return false
                }
                if ready { c.resume() }
            }
        }
    }
}

