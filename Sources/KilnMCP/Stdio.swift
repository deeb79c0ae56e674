import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Synchronization

/// A stdio MCP server's process: newline-delimited JSON-RPC on its stdin and stdout, one reader
/// thread handing each answer to the request waiting for its id. The tail of its stderr is kept to
/// say why it ended.
final class StdioSession: Sendable {
    let pid: pid_t
    let input: Int32
    let output: Int32
    struct State {
        var waiters: [Int: CheckedContinuation<JSONValue, any Error>] = [:]
        var alive = true
        var stopped = false
        var stderrTail: [UInt8] = []
    }
    let state = Mutex(State())
    let writeLock = Mutex(())
    /// A line longer than this ends the session (a server flooding its stdout).
    static let maxLine = 8 << 20

    init(pid: pid_t, input: Int32, output: Int32) {
        self.pid = pid
        self.input = input
        self.output = output
    }

    static func start(_ launch: Sandbox.Launch) throws -> StdioSession {
        let (inR, inW) = try ProcessRunner.pipePair()
        let (outR, outW) = try ProcessRunner.pipePair()
        let (errR, errW) = try ProcessRunner.pipePair()
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(launch, stdin: inR, stdout: outW, stderr: errW)
        } catch {
            [inR, inW, outR, outW, errR, errW].forEach { close($0) }
            throw RemoteFailure(description: "the server's command could not be started")
        }
        [inR, outW, errW].forEach { close($0) }
        let s = StdioSession(pid: pid, input: inW, output: outR)
        Thread { s.readLoop() }.start()
        Thread { s.drainStderr(errR) }.start()
        return s
    }

    /// Keeps the last 2 KiB of what the process wrote to stderr.
    func drainStderr(_ fd: Int32) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 4096) }
            if n <= 0 { break }
            state.withLock { s in
                s.stderrTail += chunk[0..<n]
                if s.stderrTail.count > 2048 { s.stderrTail.removeFirst(s.stderrTail.count - 2048) }
            }
        }
        close(fd)
    }

    /// Why the process ended, with the last line it wrote to stderr.
    var endedReason: String {
        let tail = String(decoding: state.withLock { $0.stderrTail }, as: UTF8.self)
            .split(separator: "\n").last.map { String($0.prefix(300)) }
        return "the server's process ended" + (tail.map { " (\($0))" } ?? "")
    }

    var isAlive: Bool { state.withLock { $0.alive } }

    func write(_ message: JSONValue) throws {
        let bytes = Array((message.jsonText + "\n").utf8)
        let ok = writeLock.withLock { _ -> Bool in
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(input, $0.baseAddress! + off, bytes.count - off) }
                if n <= 0 { return false }
                off += n
            }
            return true
        }
        if !ok { throw RemoteFailure(description: "the server's process is gone") }
    }

    /// Sends a request and waits for its answer (at most `timeout` seconds).
    func request(_ message: JSONValue, id: Int, timeout: Double) async throws -> JSONValue {
        try await withThrowingTaskGroup(of: JSONValue.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<JSONValue, any Error>) in
                    let alive = self.state.withLock { s -> Bool in
                        if s.alive { s.waiters[id] = c }
                        return s.alive
                    }
                    guard alive else {
                        c.resume(throwing: RemoteFailure(description: "the server's process is gone"))
                        return
                    }
                    do { try self.write(message) } catch {
                        if let w = self.state.withLock({ $0.waiters.removeValue(forKey: id) }) {
                            w.resume(throwing: error)
                        }
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(timeout))
                if let w = self.state.withLock({ $0.waiters.removeValue(forKey: id) }) {
                    w.resume(throwing: RemoteFailure(description: "the server did not answer in time", timedOut: true))
                }
                throw CancellationError()
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw RemoteFailure(description: "no answer") }
            return first
        }
    }

    /// Reads answers until the process closes its stdout, then fails whoever still waits.
    func readLoop() {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        reading: while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(output, $0.baseAddress, 65536) }
            if n <= 0 { break }
            buffer += chunk[0..<n]
            while let nl = buffer.firstIndex(of: 10) {
                let line = Array(buffer[..<nl])
                buffer.removeFirst(nl + 1)
                guard let v = try? JSONDecoder().decode(JSONValue.self, from: Data(line)), case .object(let o) = v,
                    case .int(let id)? = o["id"], o["result"] != nil || o["error"] != nil
                else { continue }  // notifications, logs and requests to the client are not answered
                if let w = state.withLock({ $0.waiters.removeValue(forKey: id) }) { w.resume(returning: v) }
            }
            if buffer.count > Self.maxLine { break reading }
        }
        let waiting = state.withLock { s -> [CheckedContinuation<JSONValue, any Error>] in
            s.alive = false
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        usleep(20_000)  // stderr's last words usually come with the exit
        let reason = endedReason
        for w in waiting { w.resume(throwing: RemoteFailure(description: reason + " mid-call")) }
        stop()
        // Only this thread reads it, so only this thread closes it.
        close(output)
    }

    /// Ends the process (SIGTERM, then SIGKILL) and reaps it.
    func stop() {
        let first = state.withLock { s -> Bool in
            defer {
                s.alive = false
                s.stopped = true
            }
            return !s.stopped
        }
        guard first else { return }
        // Its own process group: whatever it started goes too.
        kill(-pid, SIGTERM)
        Thread {
            var status: Int32 = 0
            var reaped = false
            for _ in 0..<20 where !reaped {
                reaped = waitpid(self.pid, &status, WNOHANG) == self.pid
                if !reaped { usleep(50_000) }
            }
            if !reaped {
                kill(-self.pid, SIGKILL)
                _ = waitpid(self.pid, &status, 0)
            }
            close(self.input)
        }.start()
    }
}
