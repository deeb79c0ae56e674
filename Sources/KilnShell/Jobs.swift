import CShims
import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

enum ShellMigrations {
    static let all = [
        Migration(module: "shell", version: 1, name: "shell jobs and settings", sql: """
            CREATE TABLE shell_jobs (
                id TEXT PRIMARY KEY,
                ws_id TEXT NOT NULL,
                project_id TEXT,
                user_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                command TEXT NOT NULL,
                cwd TEXT NOT NULL,
                host TEXT,
                status TEXT NOT NULL,
                pid INTEGER,
                exit_code INTEGER,
                signal INTEGER,
                started_at INTEGER NOT NULL,
                ended_at INTEGER,
                duration_ms INTEGER,
                summary TEXT,
                stdout_tail BLOB,
                stderr_tail BLOB,
                stdout_bytes INTEGER NOT NULL DEFAULT 0,
                stderr_bytes INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX shell_jobs_by_project ON shell_jobs (project_id, started_at);
            CREATE INDEX shell_jobs_by_user ON shell_jobs (user_id, started_at);
            CREATE TABLE shell_settings (
                project_id TEXT PRIMARY KEY,
                test_command TEXT,
                updated_at INTEGER NOT NULL
            );
            """),
    ]
}

/// A job as the API shows it.
public struct ShellJob: Codable, Sendable, NullEncoding {
    public let id: String
    public let jobId: String
    public let wsId: String
    public let projectId: String?
    public let userId: String
    public let kind: String
    public let command: String
    public let cwd: String
    public let host: String?
    public let status: String
    public let pid: Int?
    public let exitCode: Int?
    public let signal: Int?
    public let startedAt: Date
    public let endedAt: Date?
    public let durationMs: Int?
    public let summary: JSONValue?
    public let stdoutBytes: Int
    public let stderrBytes: Int
}

/// How a job ended.
public struct JobOutcome: Sendable {
    public let status: String
    public let exitCode: Int?
    public let signal: Int?
    public let durationMs: Int
    /// The kept tails of the output (the last `tailBytes` of each stream).
    public let stdout: [UInt8]
    public let stderr: [UInt8]
}

/// What to run.
public struct JobSpec: Sendable {
    public var wsID: String
    public var projectID: String?
    public var userID: String
    public var kind: String
    public var command: String
    /// The argv to execute (default: `/bin/sh -c command`).
    public var argv: [String]?
    /// The real working directory (already path-checked).
    public var cwd: String
    /// The cwd as shown (relative to the project).
    public var displayCwd: String
    public var env: [String: String]
    public var timeout: Double
    public var host: String?

    public init(wsID: String, projectID: String?, userID: String, kind: String, command: String, argv: [String]? = nil,
                cwd: String, displayCwd: String, env: [String: String] = [:], timeout: Double, host: String? = nil) {
        self.wsID = wsID; self.projectID = projectID; self.userID = userID; self.kind = kind; self.command = command
        self.argv = argv; self.cwd = cwd; self.displayCwd = displayCwd; self.env = env; self.timeout = timeout; self.host = host
    }
}

/// Runs shell jobs: each in its own process group, output streamed as persisted events on the
/// topic `job:<id>` (`started`, `stdout`, `stderr`, `exit`) and its tail kept with the job.
/// One instance per database, shared by every domain that starts jobs (shell, agents).
public final class ShellJobs: Sendable {
    public static let tailBytes = 1 << 20
    /// Output beyond this many bytes per stream is counted but no longer sent as events.
    public static let eventCapBytes = 16 << 20
    public static let maxTimeout: Double = 24 * 3600
    public static let defaultTimeout: Double = 600
    /// SIGTERM first, SIGKILL after this many seconds.
    let graceSeconds: Double

    let db: Database
    let bus: EventBus
    let clock: any Clock
    let live = Mutex<[String: RunningJob]>([:])

    private static let instances = Mutex<[ObjectIdentifier: ShellJobs]>([:])

    /// The one instance for this server (keyed by its database).
    public static func shared(_ services: Services) -> ShellJobs {
        instances.withLock { map in
            if let j = map[ObjectIdentifier(services.db)] { return j }
            let j = ShellJobs(db: services.db, bus: services.bus, clock: services.clock, grace: services.config.shellGraceSeconds)
            map[ObjectIdentifier(services.db)] = j
            return j
        }
    }

    init(db: Database, bus: EventBus, clock: any Clock, grace: Double) {
        self.db = db; self.bus = bus; self.clock = clock; self.graceSeconds = grace
    }

    public static func topic(_ jobID: String) -> String { "job:\(jobID)" }

    /// Jobs left `running` by a previous process end as `lost`, so their streams end too.
    func recoverAfterRestart() async throws {
        let stale = try await db.read { tx in try tx.query("SELECT id FROM shell_jobs WHERE status = 'running'") }.compactMap { $0.string("id") }
        for id in stale where live.withLock({ $0[id] == nil }) {
            let now = clock.now()
            _ = try await db.write { tx in try tx.run("UPDATE shell_jobs SET status = 'lost', ended_at = ? WHERE id = ?", now, id) }
            try await bus.publish(topic: ShellJobs.topic(id), type: "exit",
                                  data: JSONValue.object(["code": .null, "signal": .null, "duration_ms": .null, "status": "lost",
                                                          "error": "the server restarted while the job ran"]).jsonText)
        }
    }

    /// The environment a job sees: the server's minus Kiln's own settings, a plain TERM, plus `extra`.
    static func environment(_ extra: [String: String]) -> [String: String] {
        var env = ProcessRunner.childEnvironment(extra)
        env["TERM"] = extra["TERM"] ?? ProcessInfo.processInfo.environment["TERM"] ?? "dumb"
        return env
    }

    /// Checks user-given environment variables.
    public static func validateEnv(_ env: [String: String]?) throws -> [String: String] {
        guard let env else { return [:] }
        guard env.count <= 64 else { throw APIError.validation("env may have at most 64 variables", field: "env") }
        for (k, v) in env {
            guard !k.isEmpty, k.utf8.count <= 128, k.utf8.allSatisfy({ ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }),
                  !(k.utf8.first! >= 48 && k.utf8.first! <= 57) else {
                throw APIError.validation("env names must match [A-Za-z_][A-Za-z0-9_]*", field: "env")
            }
            guard v.utf8.count <= 32 * 1024, !v.utf8.contains(0) else { throw APIError.validation("env values must be under 32 KiB without NUL", field: "env") }
        }
        return env
    }

    /// Starts a job and returns its id once the `started` event is stored.
    public func start(_ spec: JobSpec) async throws -> String {
        let id = IDs.make("job")
        let now = clock.now()
        _ = try await db.write { tx in
            try tx.run("""
                INSERT INTO shell_jobs (id, ws_id, project_id, user_id, kind, command, cwd, host, status, started_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)
                """, id, spec.wsID, spec.projectID, spec.userID, spec.kind, spec.command, spec.displayCwd, spec.host, now)
        }
        let argv = spec.argv ?? ["/bin/sh", "-c", spec.command]
        guard let program = ProcessRunner.which(argv[0]) else {
            try await finishWithoutProcess(id, error: "\(argv[0]) is not installed (not found on PATH)", started: now)
            throw APIError.programMissing(argv[0], install: "install it on the server")
        }
        let (outR, outW) = try ProcessRunner.pipePair()
        let (errR, errW) = try ProcessRunner.pipePair()
        let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(program, Array(argv.dropFirst()), stdin: devnull, stdout: outW, stderr: errW, cwd: spec.cwd,
                                          environment: ShellJobs.environment(spec.env))
        } catch {
            [outR, outW, errR, errW, devnull].forEach { close($0) }
            try await finishWithoutProcess(id, error: String(describing: error), started: now)
            throw APIError.unavailable("The command could not be started")
        }
        close(outW); close(errW); close(devnull)
        let job = RunningJob(id: id, pid: pid, started: now, timeout: spec.timeout)
        live.withLock { $0[id] = job }
        _ = try await db.write { tx in try tx.run("UPDATE shell_jobs SET pid = ? WHERE id = ?", Int(pid), id) }
        try await bus.publish(topic: ShellJobs.topic(id), type: "started",
                              data: JSONValue.object(["job_id": .string(id), "pid": .int(Int(pid)), "command": .string(spec.command),
                                                      "cwd": .string(spec.displayCwd)]).jsonText)
        let publisher = Task { await self.publishLoop(job) }
        let grace = graceSeconds
        Thread { job.pump(outR: outR, errR: errR, grace: grace); _ = publisher }.start()
        return id
    }

    func finishWithoutProcess(_ id: String, error: String, started: Date) async throws {
        let now = clock.now()
        _ = try await db.write { tx in try tx.run("UPDATE shell_jobs SET status = 'failed', ended_at = ?, duration_ms = 0 WHERE id = ?", now, id) }
        try await bus.publish(topic: ShellJobs.topic(id), type: "exit",
                              data: JSONValue.object(["code": .null, "signal": .null, "duration_ms": 0, "status": "failed", "error": .string(error)]).jsonText)
    }

    /// Moves the pump's output to the event store in order, merging what piled up meanwhile.
    func publishLoop(_ job: RunningJob) async {
        let topic = ShellJobs.topic(job.id)
        while true {
            let (chunks, outcome) = await job.nextBatch()
            for c in chunks {
                var obj: [String: JSONValue] = [:]
                if let text = String(validatingUTF8Bytes: c.bytes) { obj["data"] = .string(text) }
                else { obj["data"] = .string(String(decoding: c.bytes, as: UTF8.self)); obj["b64"] = .string(Data(c.bytes).base64EncodedString()) }
                _ = try? await bus.publish(topic: topic, type: c.stream == 1 ? "stdout" : "stderr", data: JSONValue.object(obj).jsonText)
            }
            if let o = outcome {
                await finish(job, o)
                return
            }
        }
    }

    func finish(_ job: RunningJob, _ o: JobOutcome) async {
        let now = clock.now()
        let (outBytes, errBytes) = job.totals
        var summary: JSONValue? = nil
        if let hook = job.summarizer { summary = hook(o) }
        let summaryText = summary?.jsonText
        let id = job.id
        _ = try? await db.write { tx in
            try tx.run("""
                UPDATE shell_jobs SET status = ?, exit_code = ?, signal = ?, ended_at = ?, duration_ms = ?, summary = ?,
                    stdout_tail = ?, stderr_tail = ?, stdout_bytes = ?, stderr_bytes = ? WHERE id = ?
                """, o.status, o.exitCode, o.signal, now, o.durationMs, summaryText, o.stdout, o.stderr, outBytes, errBytes, id)
        }
        var exit: [String: JSONValue] = ["code": o.exitCode.map { .int($0) } ?? .null, "signal": o.signal.map { .int($0) } ?? .null,
                                         "signal_name": o.signal.map { .string(signalName($0)) } ?? .null,
                                         "duration_ms": .int(o.durationMs), "status": .string(o.status)]
        if outBytes > ShellJobs.eventCapBytes || errBytes > ShellJobs.eventCapBytes {
            exit["truncated"] = true
            exit["stdout_bytes"] = .int(outBytes); exit["stderr_bytes"] = .int(errBytes)
        }
        if let summary { exit["summary"] = summary }
        _ = try? await bus.publish(topic: ShellJobs.topic(id), type: "exit", data: JSONValue.object(exit).jsonText)
        live.withLock { $0[id] = nil }
        job.resolve(o)
    }

    /// Sets a function that adds a summary to the exit event (test runs).
    public func setSummarizer(_ jobID: String, _ f: @escaping @Sendable (JobOutcome) -> JSONValue?) {
        live.withLock { $0[jobID] }?.setSummarizer(f)
    }

    /// Waits for a job this process runs; nil when it is not running here.
    public func wait(_ jobID: String) async -> JobOutcome? {
        guard let job = live.withLock({ $0[jobID] }) else { return nil }
        return await job.outcome()
    }

    /// SIGTERM to the job's process group, SIGKILL after the grace period. False when not running.
    @discardableResult
    public func cancel(_ jobID: String, grace: Double? = nil) -> Bool {
        guard let job = live.withLock({ $0[jobID] }) else { return false }
        job.stop(reason: "cancelled", grace: grace ?? graceSeconds)
        return true
    }

    public func isRunning(_ jobID: String) -> Bool { live.withLock { $0[jobID] != nil } }

    /// Ends every job (shutdown).
    func stopAll() {
        for job in live.withLock({ Array($0.values) }) { job.stop(reason: "cancelled", grace: 0) }
    }

    // MARK: Reading

    static func job(_ r: Row) -> ShellJob {
        let id = r.string("id") ?? ""
        let summary = r.string("summary").flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        return ShellJob(id: id, jobId: id, wsId: r.string("ws_id") ?? "", projectId: r.string("project_id"), userId: r.string("user_id") ?? "",
                        kind: r.string("kind") ?? "run", command: r.string("command") ?? "", cwd: r.string("cwd") ?? "",
                        host: r.string("host"), status: r.string("status") ?? "", pid: r.int("pid"), exitCode: r.int("exit_code"),
                        signal: r.int("signal"), startedAt: r.date("started_at") ?? Date(timeIntervalSince1970: 0),
                        endedAt: r.date("ended_at"), durationMs: r.int("duration_ms"), summary: summary,
                        stdoutBytes: r.int("stdout_bytes") ?? 0, stderrBytes: r.int("stderr_bytes") ?? 0)
    }

    public func get(_ jobID: String) async throws -> (ShellJob, stdout: [UInt8], stderr: [UInt8])? {
        guard IDs.isValid(jobID, prefix: "job") else { return nil }
        guard let r = try await db.read({ tx in try tx.first("SELECT * FROM shell_jobs WHERE id = ?", jobID) }) else { return nil }
        var job = ShellJobs.job(r)
        if let running = live.withLock({ $0[jobID] }) {
            let (o, e) = running.tails
            let (ob, eb) = running.totals
            job = ShellJob(id: job.id, jobId: job.id, wsId: job.wsId, projectId: job.projectId, userId: job.userId, kind: job.kind,
                           command: job.command, cwd: job.cwd, host: job.host, status: job.status, pid: job.pid, exitCode: nil, signal: nil,
                           startedAt: job.startedAt, endedAt: nil, durationMs: nil, summary: nil, stdoutBytes: ob, stderrBytes: eb)
            return (job, o, e)
        }
        return (job, r.blob("stdout_tail") ?? [], r.blob("stderr_tail") ?? [])
    }

    public func workspaceOf(_ jobID: String) async throws -> String? {
        guard IDs.isValid(jobID, prefix: "job") else { return nil }
        return try await db.read { tx in try tx.first("SELECT ws_id FROM shell_jobs WHERE id = ?", jobID)?.string("ws_id") }
    }
}

func signalName(_ s: Int) -> String {
    let names = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV",
                 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"]
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
    struct Chunk: Sendable { let stream: Int; var bytes: [UInt8] }

    struct State {
        var pending: [Chunk] = []
        var pendingBytes = 0
        var waiter: CheckedContinuation<Void, Never>?
        var outcome: JobOutcome?
        var outcomeWaiters: [CheckedContinuation<JobOutcome, Never>] = []
        var outTail = TailBuffer(capacity: ShellJobs.tailBytes)
        var errTail = TailBuffer(capacity: ShellJobs.tailBytes)
        var outTotal = 0
        var errTotal = 0
        var stopReason: String?
        var stopDeadline: Double?
        var summarizer: (@Sendable (JobOutcome) -> JSONValue?)?
        var finishedPump = false
        var final: JobOutcome?
    }

    let id: String
    let pid: pid_t
    let started: Date
    let startNanos = kilnMonotonicNanos()
    let timeout: Double
    let state = Mutex(State())

    init(id: String, pid: pid_t, started: Date, timeout: Double) {
        self.id = id; self.pid = pid; self.started = started; self.timeout = timeout
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
        if first { kill(-pid, grace > 0 ? SIGTERM : SIGKILL) }
    }

    func push(_ stream: Int, _ bytes: ArraySlice<UInt8>) {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            let total = stream == 1 ? s.outTotal : s.errTotal
            if stream == 1 { s.outTail.append(bytes); s.outTotal += bytes.count } else { s.errTail.append(bytes); s.errTotal += bytes.count }
            let room = max(0, ShellJobs.eventCapBytes - total)
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
            let w = s.waiter; s.waiter = nil; return w
        }
        w?.resume()
    }

    /// Output waiting to be published, and the outcome once the pump has finished and all output is taken.
    func nextBatch() async -> ([Chunk], JobOutcome?) {
        while true {
            let got = state.withLock { s -> ([Chunk], JobOutcome?)? in
                if !s.pending.isEmpty {
                    let c = s.pending; s.pending = []; s.pendingBytes = 0
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
            let w = s.outcomeWaiters; s.outcomeWaiters = []; return w
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
        var fds = [pollfd(fd: outR, events: Int16(POLLIN), revents: 0), pollfd(fd: errR, events: Int16(POLLIN), revents: 0)]
        var buf = [UInt8](repeating: 0, count: 65536)
        // Incomplete UTF-8 sequences are carried to the next read so events split on character boundaries.
        var carry: [[UInt8]] = [[], []]
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
            if !exited, let d = state.withLock({ $0.stopDeadline }), now >= d { kill(-pid, SIGKILL) }
            let open = fds.filter { $0.fd >= 0 }.count
            if open == 0 && exited { break }
            // After the main process exits, leftover members of its group get a moment to flush, then end.
            if exited && now - exitedAt > 0.2 { kill(-pid, SIGKILL) }
            if exited && now - exitedAt > 1.0 { break }
            let r = open > 0 ? poll(&fds, 2, 20) : { usleep(20_000); return Int32(0) }()
            if r < 0 && errno != EINTR { break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, 65536) }
                if n <= 0 {
                    if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    if !carry[i].isEmpty { push(i + 1, carry[i][...]); carry[i] = [] }
                    close(fds[i].fd); fds[i].fd = -1
                    continue
                }
                var data = carry[i] + buf[0..<n]
                let cut = RunningJob.utf8Boundary(data)
                carry[i] = Array(data[cut...])
                data.removeSubrange(cut...)
                if !data.isEmpty { push(i + 1, data[...]) }
            }
            if !exited {
                let w = waitpid(pid, &status, WNOHANG)
                if w == pid { exited = true; exitedAt = Double(kilnMonotonicNanos()) / 1e9 }
            }
        }
        for i in 0..<2 where fds[i].fd >= 0 {
            if !carry[i].isEmpty { push(i + 1, carry[i][...]) }
            close(fds[i].fd)
        }
        if !exited { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
        let signaled = status & 0x7f != 0
        let code: Int? = signaled ? nil : Int((status >> 8) & 0xff)
        let sig: Int? = signaled ? Int(status & 0x7f) : nil
        let reason = state.withLock { $0.stopReason }
        let statusText = reason == "cancelled" ? "cancelled" : timedOut ? "timed_out" : (code == 0 ? "succeeded" : "failed")
        let ms = Int((kilnMonotonicNanos() - startNanos) / 1_000_000)
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finishedPump = true
            s.final = JobOutcome(status: statusText, exitCode: code, signal: sig, durationMs: ms, stdout: s.outTail.bytes, stderr: s.errTail.bytes)
            let w = s.waiter; s.waiter = nil; return w
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
                let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return need > seen + 1 ? i : data.count
            }
            seen += 1
            i -= 1
        }
        return data.count
    }
}
