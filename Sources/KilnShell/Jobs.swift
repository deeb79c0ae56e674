import CShims
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Synchronization

func signalName(_ s: Int) -> String {
    let names = [
        1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV",
        13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
    ]
    return names[s] ?? "SIG\(s)"
}

extension String {
    /// The text when `bytes` are valid UTF-8, else nil.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        var it = bytes.makeIterator()
        var codec = UTF8()
        var s = String.UnicodeScalarView()
        loop: while true {
            switch codec.decode(&it) {
            case .scalarValue(let v): s.append(v)
            case .emptyInput: break loop
            case .error: return nil
            }
        }
        self = String(s)
    }
}

/// One process being pumped: its output, tails, and the way it ends.
final class RunningJob: Sendable {
    struct Chunk: Sendable {
        let stream: Int
        var bytes: [UInt8]
    }

    struct State {
        var pending: [Chunk] = []
        var pendingBytes = 0
        var waiter: CheckedContinuation<Void, Never>?
        var outcome: JobOutcome?
        var outcomeWaiters: [CheckedContinuation<JobOutcome, Never>] = []
        var outTail = TailBuffer(capacity: ShellService.tailBytes)
        var errTail = TailBuffer(capacity: ShellService.tailBytes)
        var outTotal = 0
        var errTotal = 0
        var stopReason: String?
        var stopDeadline: Double?
        var summarizer: (@Sendable (JobOutcome) -> JSONValue?)?
        var finishedPump = false
        var final: JobOutcome?
    }

    let id: String
    let userID: String
    let pid: pid_t
    /// Started through bubblewrap: signals go to the command inside (`Sandbox.signal`).
    let sandboxed: Bool
    let started: Date
    let startNanos = kilnMonotonicNanos()
    let timeout: Double
    /// The secrets handed to this job: replaced in its output before it is kept or sent anywhere.
    let redactor: Redactor
    /// A person's job (not an agent's tool call): its start and exit reach the activity feed.
    let scope: EventScope?
    let state = Mutex(State())

    init(
        id: String, userID: String, pid: pid_t, sandboxed: Bool, started: Date, timeout: Double,
        redactor: Redactor = Redactor([]), scope: EventScope? = nil
    ) {
        self.id = id
        self.scope = scope
        self.redactor = redactor
        self.sandboxed = sandboxed
        self.userID = userID
        self.pid = pid
        self.started = started
        self.timeout = timeout
    }

    var tails: ([UInt8], [UInt8]) { state.withLock { ($0.outTail.bytes, $0.errTail.bytes) } }
    var totals: (Int, Int) { state.withLock { ($0.outTotal, $0.errTotal) } }
    var summarizer: (@Sendable (JobOutcome) -> JSONValue?)? { state.withLock { $0.summarizer } }
    func setSummarizer(_ f: @escaping @Sendable (JobOutcome) -> JSONValue?) { state.withLock { $0.summarizer = f } }

    /// Asks the process group to stop: SIGTERM now, SIGKILL once `grace` passes.
    func stop(reason: String, grace: Double) {
        let first = state.withLock { s -> Bool in
            guard s.stopReason == nil, !s.finishedPump else { return false }
            s.stopReason = reason
            s.stopDeadline = Double(kilnMonotonicNanos()) / 1e9 + grace
            return true
        }
        if first { Sandbox.signal(pid, grace > 0 ? SIGTERM : SIGKILL, sandboxed: sandboxed) }
    }

    func push(_ stream: Int, _ bytes: ArraySlice<UInt8>) {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            let total = stream == 1 ? s.outTotal : s.errTotal
            if stream == 1 {
                s.outTail.append(bytes)
                s.outTotal += bytes.count
            } else {
                s.errTail.append(bytes)
                s.errTotal += bytes.count
            }
            let room = max(0, ShellService.eventCapBytes - total)
            let sent = bytes.prefix(room)
            if !sent.isEmpty {
                // Merge with the previous pending chunk of the same stream, so a backlog becomes few events.
                if var last = s.pending.last, last.stream == stream, last.bytes.count + sent.count <= 256 * 1024 {
                    last.bytes += sent
                    s.pending[s.pending.count - 1] = last
                } else {
                    s.pending.append(Chunk(stream: stream, bytes: Array(sent)))
                }
                s.pendingBytes += sent.count
            }
            let w = s.waiter
            s.waiter = nil
            return w
        }
        w?.resume()
    }

    /// Output waiting to be published, and the outcome once the pump has finished and all output is taken.
    func nextBatch() async -> ([Chunk], JobOutcome?) {
        while true {
            let got = state.withLock { s -> ([Chunk], JobOutcome?)? in
                if !s.pending.isEmpty {
                    let c = s.pending
                    s.pending = []
                    s.pendingBytes = 0
                    return (c, nil)
                }
                if let f = s.final { return ([], f) }
                return nil
            }
            if let got { return got }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if !s.pending.isEmpty || s.final != nil { return true }
                    s.waiter = c
                    return false
                }
                if ready { c.resume() }
            }
        }
    }

    func resolve(_ o: JobOutcome) {
        let ws = state.withLock { s -> [CheckedContinuation<JobOutcome, Never>] in
            s.outcome = o
            let w = s.outcomeWaiters
            s.outcomeWaiters = []
            return w
        }
        for w in ws { w.resume(returning: o) }
    }

    func outcome() async -> JobOutcome {
        await withCheckedContinuation { c in
            let done = state.withLock { s -> JobOutcome? in
                if let o = s.outcome { return o }
                s.outcomeWaiters.append(c)
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    /// The blocking side (its own thread): reads both pipes until the process ends, enforcing the
    /// timeout and the stop deadline, and records how it ended.
    func pump(outR: Int32, errR: Int32, grace: Double) {
        var fds = [
            pollfd(fd: outR, events: Int16(POLLIN), revents: 0), pollfd(fd: errR, events: Int16(POLLIN), revents: 0),
        ]
        var buf = [UInt8](repeating: 0, count: 65536)
        // Incomplete UTF-8 sequences are carried to the next read so events split on character boundaries.
        var carry: [[UInt8]] = [[], []]
        var redactors = [StreamRedactor(redactor), StreamRedactor(redactor)]
        // Without secrets the feed hands the bytes back as they are (no copy on this hot path).
        func emit(_ i: Int, _ data: [UInt8], end: Bool = false) {
            let out = redactors[i].feed(data)
            if !out.isEmpty { push(i + 1, out[...]) }
            if end {
                let rest = redactors[i].finish()
                if !rest.isEmpty { push(i + 1, rest[...]) }
            }
        }
        var status: Int32 = 0
        var exited = false
        var exitedAt: Double = 0
        var timedOut = false
        let deadline = Double(kilnMonotonicNanos()) / 1e9 + timeout
        while true {
            let now = Double(kilnMonotonicNanos()) / 1e9
            if !exited && !timedOut && now >= deadline {
                timedOut = true
                stop(reason: "timed_out", grace: grace)
            }
            if !exited, let d = state.withLock({ $0.stopDeadline }), now >= d {
                Sandbox.signal(pid, SIGKILL, sandboxed: sandboxed)
            }
            let open = fds.filter { $0.fd >= 0 }.count
            if open == 0 && exited { break }
            // After the main process exits, leftover members of its group get a moment to flush, then end.
            if exited && now - exitedAt > 0.2 { kill(-pid, SIGKILL) }
            if exited && now - exitedAt > 1.0 { break }
            let r =
                open > 0
                ? poll(&fds, 2, 20)
                : {
                    usleep(20_000)
                    return Int32(0)
                }()
            if r < 0 && errno != EINTR { break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, 65536) }
                if n <= 0 {
                    if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    emit(i, carry[i], end: true)
                    carry[i] = []
                    close(fds[i].fd)
                    fds[i].fd = -1
                    continue
                }
                var data = carry[i] + buf[0..<n]
                let cut = RunningJob.utf8Boundary(data)
                carry[i] = Array(data[cut...])
                data.removeSubrange(cut...)
                if !data.isEmpty { emit(i, data) }
            }
            if !exited {
                let w = waitpid(pid, &status, WNOHANG)
                if w == pid {
                    exited = true
                    exitedAt = Double(kilnMonotonicNanos()) / 1e9
                }
            }
        }
        // What is still in a pipe when the loop ends (a pump thread starved past the second above, or a
        // leftover writer keeping it open) is read without waiting, then the pipe closes.
        for i in 0..<2 where fds[i].fd >= 0 {
            var rest = carry[i]
            var one = [pollfd(fd: fds[i].fd, events: Int16(POLLIN), revents: 0)]
            for _ in 0..<16 where poll(&one, 1, 0) > 0 && one[0].revents & Int16(POLLIN) != 0 {
                let n = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, 65536) }
                if n <= 0 { break }
                rest += buf[0..<n]
            }
            emit(i, rest, end: true)
            close(fds[i].fd)
        }
        if !exited { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
        let signaled = status & 0x7f != 0
        var code: Int? = signaled ? nil : Int((status >> 8) & 0xff)
        var sig: Int? = signaled ? Int(status & 0x7f) : nil
        if sandboxed { (code, sig) = Sandbox.commandStatus(code: code, signal: sig) }
        let reason = state.withLock { $0.stopReason }
        let statusText =
            reason == "cancelled" ? "cancelled" : timedOut ? "timed_out" : (code == 0 ? "succeeded" : "failed")
        let ms = Int((kilnMonotonicNanos() - startNanos) / 1_000_000)
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finishedPump = true
            s.final = JobOutcome(
                status: statusText, exitCode: code, signal: sig, durationMs: ms, stdout: s.outTail.bytes,
                stderr: s.errTail.bytes)
            let w = s.waiter
            s.waiter = nil
            return w
        }
        w?.resume()
    }

    /// The index where a trailing incomplete UTF-8 sequence starts (data.count when none).
    static func utf8Boundary(_ data: [UInt8]) -> Int {
        var i = data.count - 1
        var seen = 0
        while i >= 0 && seen < 4 {
            let b = data[i]
            if b & 0xC0 != 0x80 {
                // 0xF8...0xFF never start a character: nothing to wait for.
                let need = b >= 0xF8 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return need > seen + 1 ? i : data.count
            }
            seen += 1
            i -= 1
        }
        return data.count
    }
}
