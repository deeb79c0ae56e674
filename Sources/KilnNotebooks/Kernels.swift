import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Synchronization

/// The bridge's process: JSON lines in and out; its events arrive in order on `events`.
final class KernelProcess: Sendable {
    let pid: pid_t
    let input: Int32
    let events: AsyncStream<JSONValue>
    let stopped = Atomic<Bool>(false)
    let writeLock = Mutex(())

    init(pid: pid_t, input: Int32, events: AsyncStream<JSONValue>) {
        self.pid = pid
        self.input = input
        self.events = events
    }

    static func start(_ launch: Sandbox.Launch) throws -> KernelProcess {
        let (inR, inW) = try ProcessRunner.pipePair()
        let (outR, outW) = try ProcessRunner.pipePair()
        let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(launch, stdin: inR, stdout: outW, stderr: devnull)
        } catch {
            [inR, inW, outR, outW, devnull].forEach { close($0) }
            throw APIError.unavailable("The notebook kernel could not be started")
        }
        [inR, outW, devnull].forEach { close($0) }
        let (stream, continuation) = AsyncStream<JSONValue>.makeStream(bufferingPolicy: .unbounded)
        Thread {
            var buffer: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(outR, $0.baseAddress, 65536) }
                if n <= 0 { break }
                buffer += chunk[0..<n]
                var start = 0
                while let nl = buffer[start...].firstIndex(of: 10) {
                    if let v = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer[start..<nl])) {
                        continuation.yield(v)
                    }
                    start = nl + 1
                }
                buffer.removeFirst(start)
                // A single line past 64 MiB is no answer of the bridge's.
                if buffer.count > 64 << 20 { break }
            }
            close(outR)
            continuation.yield(["event": "dead", "reason": "the kernel's bridge ended"])
            continuation.finish()
        }.start()
        return KernelProcess(pid: pid, input: inW, events: stream)
    }

    func send(_ op: JSONValue) {
        let bytes = Array((op.jsonText + "\n").utf8)
        writeLock.withLock { _ in
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(input, $0.baseAddress! + off, bytes.count - off) }
                if n <= 0 { return }
                off += n
            }
        }
    }

    /// Asks the bridge to shut the kernel down, then ends the process group.
    func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        send(["op": "shutdown"])
        let pid = pid
        let input = input
        Thread {
            var status: Int32 = 0
            var reaped = false
            for _ in 0..<40 where !reaped {
                reaped = waitpid(pid, &status, WNOHANG) == pid
                if !reaped { usleep(50_000) }
            }
            if !reaped {
                kill(-pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
            }
            close(input)
        }.start()
    }
}

/// One notebook's kernel, shared by all its viewers: started once, one execution at a time (the
/// rest wait their turn), interruptible, restartable, reported dead when its process ends.
actor NotebookKernel {
    enum State: String { case starting, idle, busy, dead }
    let process: KernelProcess
    let kernelName: String
    /// Who started it (the kernels-per-user limit counts it against them).
    nonisolated let startedBy: String
    /// Set once the kernel is dead, readable without waiting on the actor.
    nonisolated let isDead = Atomic<Bool>(false)
    private(set) var state: State = .starting
    private(set) var since = Date()
    private(set) var language = ""
    private(set) var lastUsed = Date()
    private var ready: CheckedContinuation<Void, any Error>?
    /// Others who asked for this kernel while it was starting.
    private var alsoWaiting: [CheckedContinuation<Void, any Error>] = []
    private var restarting: CheckedContinuation<Void, Never>?
    private var current: AsyncStream<JSONValue>.Continuation?
    private var turn: [CheckedContinuation<Void, Never>] = []
    private var running = false
    private var fatal: String?

    init(process: KernelProcess, kernelName: String, startedBy: String) {
        self.process = process
        self.kernelName = kernelName
        self.startedBy = startedBy
    }

    /// Reads the bridge's events until it ends; waits for the kernel to be ready.
    func start() async throws {
        let events = process.events
        Task { for await e in events { self.route(e) } }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            if state != .starting {
                c.resume()
            } else if let fatal {
                c.resume(throwing: APIError.unavailable(fatal))
            } else {
                ready = c
            }
        }
    }

    /// Returns once the kernel is ready (at once unless it is still starting).
    func waitReady() async throws {
        guard state == .starting else {
            if state == .dead { throw APIError.unavailable(fatal ?? "the kernel is dead; restart it") }
            return
        }
        try await withCheckedThrowingContinuation { alsoWaiting.append($0) }
    }

    private func set(_ s: State) {
        state = s
        since = Date()
        if s == .dead { isDead.store(true, ordering: .relaxed) }
    }

    func route(_ e: JSONValue) {
        let type = e.objectValue?["event"]?.stringValue ?? ""
        switch type {
        case "ready":
            language = e.objectValue?["language"]?.stringValue ?? ""
            set(.idle)
            ready?.resume()
            ready = nil
            for w in alsoWaiting { w.resume() }
            alsoWaiting.removeAll()
        case "fatal":
            let message = e.objectValue?["message"]?.stringValue ?? "the kernel could not start"
            fatal = message
            set(.dead)
            ready?.resume(throwing: APIError.unavailable(message))
            ready = nil
            for w in alsoWaiting { w.resume(throwing: APIError.unavailable(message)) }
            alsoWaiting.removeAll()
        case "restarted":
            set(running ? .busy : .idle)
            restarting?.resume()
            restarting = nil
        case "dead":
            set(.dead)
            ready?.resume(throwing: APIError.unavailable(fatal ?? "the kernel ended before it was ready"))
            ready = nil
            for w in alsoWaiting { w.resume(throwing: APIError.unavailable(fatal ?? "the kernel ended")) }
            alsoWaiting.removeAll()
            current?.yield(e)
            current?.finish()
            current = nil
            restarting?.resume()
            restarting = nil
        case "done":
            current?.yield(e)
            current?.finish()
            current = nil
        default:
            current?.yield(e)
        }
    }

    /// Runs `code`; its events (ending with `done` or `dead`) on the stream returned once it is
    /// this execution's turn.
    func execute(_ code: String, id: String) async -> AsyncStream<JSONValue> {
        if running { await withCheckedContinuation { turn.append($0) } }
        running = true
        lastUsed = Date()
        let (stream, continuation) = AsyncStream<JSONValue>.makeStream(bufferingPolicy: .unbounded)
        if state == .dead {
            continuation.yield(["event": "dead", "reason": "the kernel is dead; restart it"])
            continuation.finish()
        } else {
            current = continuation
            set(.busy)
            process.send(["op": "execute", "id": .string(id), "code": .string(code)])
        }
        return stream
    }

    /// The execution's turn is over: the next one may go.
    func finished() {
        lastUsed = Date()
        if state == .busy { set(.idle) }
        if turn.isEmpty {
            running = false
        } else {
            turn.removeFirst().resume()
        }
    }

    func interrupt() { process.send(["op": "interrupt"]) }

    func restart() async {
        guard state != .dead else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            restarting = c
            process.send(["op": "restart"])
        }
    }

    func stop() {
        process.stop()
        set(.dead)
    }

    var info: JSONValue {
        [
            "state": .string(state.rawValue), "kernel": .string(kernelName), "language": .string(language),
            "since": .string(HTTPDate.iso8601(since)),
        ]
    }
}
