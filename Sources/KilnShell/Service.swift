import CShims
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

/// The shell domain's options under `kiln serve`.
struct ShellSettings: Sendable {
    static let grace = "--shell-grace"
    static let sshConfig = "--ssh-config"
    static let maxJobsPerUser = "--max-jobs-per-user"
    static let sshAgent = "--ssh-agent"
    static let options: [Config.Option] = [
        .int(
            maxJobsPerUser, env: "KILN_MAX_JOBS_PER_USER",
            help: "running jobs (commands, tests, agent commands) one account may have (default 16)",
            range: 1...10_000),
        Config.Option(
            flag: sshAgent, env: "KILN_SSH_AGENT", help: "let ssh-run and ssh-pull use the server's SSH agent",
            takesValue: false
        ) { c, v in c.set(sshAgent, ["1", "true", "yes", "on", ""].contains(v.lowercased()) ? "true" : nil) },
        .int(
            grace, env: "KILN_SHELL_GRACE", help: "seconds between SIGTERM and SIGKILL for cancelled jobs (default 3)",
            range: 0...600),
        .text(
            sshConfig, env: "KILN_SSH_CONFIG",
            help: "ssh client config listing the hosts ssh-run may reach (default ~/.ssh/config)"),
    ]
}

/// Runs shell jobs: each in its own process group, output streamed as persisted events on the
/// topic `job:<id>` (`started`, `stdout`, `stderr`, `exit`) and its tail kept with the job. The
/// application builds one and hands it to every domain that starts jobs (agents) as a `JobLauncher`.
public final class ShellService: JobLauncher {
    public static let tailBytes = 1 << 20
    /// Output beyond this many bytes per stream is counted but no longer sent as events.
    public static let eventCapBytes = 16 << 20
    public static let maxTimeout: Double = 24 * 3600
    public static let defaultTimeout: Double = 600
    /// SIGTERM first, SIGKILL after this many seconds.
    let graceSeconds: Double
    let store: ShellStore
    let bus: EventBus
    let clock: any Clock
    let projects: any ProjectDirectory
    let sshConfigPath: String
    let sandbox: Sandbox
    let hooks: Hooks
    let secrets: (any SecretProvider)?
    let policy: (any PolicyEngine)?
    /// Where a `require_approval` rule parks a REST caller's job until it is decided.
    let approvals: (any ApprovalGate)?
    /// Running jobs one account may have.
    let maxPerUser: Int
    /// `--ssh-agent`: ssh jobs may use the server's agent socket.
    let passSSHAgent: Bool
    let live = Mutex<[String: RunningJob]>([:])
    /// Jobs between the limit's check and `live`.
    let starting = StartingCounts()
    let instances: Instances
    /// Set at shutdown: no job starts after the running ones were stopped.
    let closing = Atomic<Bool>(false)

    public init(
        services s: Services, projects: any ProjectDirectory, secrets: (any SecretProvider)? = nil,
        policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        self.secrets = secrets
        self.policy = policy
        self.approvals = approvals
        store = ShellStore(db: s.db)
        instances = s.instances
        bus = s.bus
        clock = s.clock
        self.projects = projects
        graceSeconds = s.config.double(ShellSettings.grace) ?? 3
        sshConfigPath = s.config.string(ShellSettings.sshConfig) ?? SSHConfig.defaultPath()
        sandbox = s.sandbox
        hooks = s.hooks
        maxPerUser = s.config.int(ShellSettings.maxJobsPerUser) ?? 16
        passSSHAgent = s.config.string(ShellSettings.sshAgent) == "true"
    }

    public static func topic(_ jobID: String) -> String { "job:\(jobID)" }

    /// Jobs left `running` by a previous process, or by an instance that stopped beating, end as
    /// `lost`, so their streams end too (each once, whoever of the survivors gets there first).
    func recover(alive: Set<String>) async throws {
        for (id, instance) in try await store.runningJobs()
        where !alive.contains(instance ?? "") && live.withLock({ $0[id] == nil }) {
            guard try await store.markLost(id, at: clock.now()) else { continue }
            try await bus.publish(
                topic: Self.topic(id), type: "exit",
                data: JSONValue.object([
                    "code": .null, "signal": .null, "duration_ms": .null, "status": "lost",
                    "error": "the server running the job stopped (restart, crash or lost instance)",
                ]).jsonText)
        }
    }

    /// Checks user-given environment variables.
    static func validateEnv(_ env: [String: String]?) throws -> [String: String] {
        guard let env else { return [:] }
        guard env.count <= 64 else { throw APIError.validation("env may have at most 64 variables", field: "env") }
        for (k, v) in env {
            let u = k.utf8
            guard let first = u.first, u.count <= 128, !(first >= 48 && first <= 57),
                u.allSatisfy({ ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }
                )
            else {
                throw APIError.validation("env names must match [A-Za-z_][A-Za-z0-9_]*", field: "env")
            }
            guard v.utf8.count <= 32 * 1024, !v.utf8.contains(0) else {
                throw APIError.validation("env values must be under 32 KiB without NUL", field: "env")
            }
        }
        return env
    }

    static func timeout(_ t: Double?) throws -> Double {
        guard let t else { return defaultTimeout }
        guard t > 0, t <= maxTimeout else {
            throw APIError.validation("timeout_s must be from 1 to 86400", field: "timeout_s")
        }
        return t
    }

    // MARK: Running (JobLauncher)

    public func start(_ spec: JobSpec) async throws -> String {
        guard !closing.load(ordering: .relaxed) else { throw APIError.unavailable("The server is shutting down") }
        if !spec.isKilnTool { try sandbox.requireUsable() }
        // Every way to a process passes here (routes, tests, the agent's run_command and run_tests).
        guard try await hooks.mayExecute(userID: spec.userID) else {
            throw HTTPError(
                .forbidden,
                message: "Your account may not run commands on this server until an instance admin allows it",
                details: ["can_execute": false])
        }
        // The workspace's policy (an agent's call was judged as its tool call already).
        if let policy, spec.actorKind != "agent", let action = Self.policyAction(spec.kind) {
            try await policy.check(
                wsID: spec.wsID, userID: spec.userID, action: action,
                context: PolicyContext(command: spec.command, host: spec.host, actorKind: spec.actorKind),
                grants: spec.grants)
        }
        let userID = spec.userID
        if let running = starting.reserve(
            userID, limit: maxPerUser, running: { live.withLock { $0.values.filter { $0.userID == userID }.count } })
        {
            throw HTTPError(
                .tooManyRequests, code: "rate_limited",
                message: "You have \(running) jobs running (the limit is \(maxPerUser)); wait for one or cancel it")
        }
        var admitted = false
        defer { if !admitted { starting.finish(userID) } }
        let id = IDs.make("job")
        let now = clock.now()
        try await store.insertJob(id: id, spec, instance: instances.id, at: now)
        let argv = spec.argv ?? ["/bin/sh", "-c", spec.command]
        let launch: Sandbox.Launch
        do {
            launch = try await prepare(spec, argv: argv)
        } catch {
            try await finishWithoutProcess(id, error: String(describing: error))
            throw error
        }
        let (outR, outW) = try ProcessRunner.pipePair()
        let (errR, errW) = try ProcessRunner.pipePair()
        let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(launch, stdin: devnull, stdout: outW, stderr: errW)
        } catch {
            [outR, outW, errR, errW, devnull].forEach { close($0) }
            try await finishWithoutProcess(id, error: String(describing: error))
            throw APIError.unavailable("The command could not be started")
        }
        close(outW)
        close(errW)
        close(devnull)
        let job = RunningJob(
            id: id, userID: spec.userID, pid: pid, sandboxed: launch.path == sandbox.bwrap && !spec.isKilnTool,
            started: now, timeout: spec.timeout, redactor: Redactor(spec.secrets),
            scope: spec.actorKind == "agent"
                ? nil : EventScope(wsID: spec.wsID, actorID: spec.userID, projectID: spec.projectID))
        starting.finish(userID) { live.withLock { $0[id] = job } }
        admitted = true
        try await store.setPID(id, Int(pid))
        try await bus.publish(
            topic: Self.topic(id), type: "started",
            data: JSONValue.object([
                "job_id": .string(id), "pid": .int(Int(pid)), "command": .string(spec.command),
                "cwd": .string(spec.displayCwd), "kind": .string(spec.kind),
            ]).jsonText, scope: job.scope)
        let publisher = Task { await self.publishLoop(job) }
        let grace = graceSeconds
        Thread {
            job.pump(outR: outR, errR: errR, grace: grace)
            _ = publisher
        }.start()
        return id
    }

    static func policyAction(_ kind: String) -> String? {
        switch kind {
        case "run": "shell.run"
        case "test": "shell.test"
        case "ssh": "ssh.run"
        default: nil
        }
    }

    /// How the job's process starts: user code through the sandbox (its project read-write), Kiln's
    /// own tools (ssh) outside it with a built environment.
    func prepare(_ spec: JobSpec, argv: [String]) async throws -> Sandbox.Launch {
        if spec.isKilnTool {
            guard let program = ProcessRunner.which(argv[0]) else {
                throw APIError.programMissing(argv[0], install: "install it on the server")
            }
            return Sandbox.Launch(
                path: program, arguments: Array(argv.dropFirst()),
                environment: toolEnvironment.merging(spec.env) { a, _ in a },
                cwd: spec.cwd)
        }
        var root: String? = nil
        if let projectID = spec.projectID {
            guard let project = try await projects.lookup(projectID), project.wsID == spec.wsID else {
                throw APIError.notFound("No such project")
            }
            root = project.root
        }
        do {
            // Without a project a job starts in the workspace's private HOME.
            var env = spec.env
            for s in spec.secrets { env[s.name] = s.value }
            return try sandbox.launch(
                argv, workspace: spec.wsID, project: root, cwd: root == nil ? nil : spec.cwd, environment: env)
        } catch let e as HTTPError {
            throw e
        } catch {
            throw APIError.unavailable("Could not prepare the sandbox: \(error)")
        }
    }

    func finishWithoutProcess(_ id: String, error: String) async throws {
        try await store.failWithoutProcess(id, at: clock.now())
        try await bus.publish(
            topic: Self.topic(id), type: "exit",
            data: JSONValue.object([
                "code": .null, "signal": .null, "duration_ms": 0, "status": "failed",
                "error": .string(error),
            ]).jsonText)
    }

    /// Moves the pump's output to the event store in order, merging what piled up meanwhile.
    func publishLoop(_ job: RunningJob) async {
        let topic = Self.topic(job.id)
        while true {
            let (chunks, outcome) = await job.nextBatch()
            for c in chunks {
                var obj: [String: JSONValue] = [:]
                if let text = String(validatingUTF8Bytes: c.bytes) {
                    obj["data"] = .string(text)
                } else {
                    obj["data"] = .string(String(decoding: c.bytes, as: UTF8.self))
                    obj["b64"] = .string(Data(c.bytes).base64EncodedString())
                }
                _ = try? await bus.publish(
                    topic: topic, type: c.stream == 1 ? "stdout" : "stderr", data: JSONValue.object(obj).jsonText)
            }
            if let o = outcome {
                await finish(job, o)
                return
            }
        }
    }

    func finish(_ job: RunningJob, _ o: JobOutcome) async {
        let (outBytes, errBytes) = job.totals
        let summary = job.summarizer.flatMap { $0(o) }
        try? await store.finish(job.id, o, summary: summary?.jsonText, totals: (outBytes, errBytes), at: clock.now())
        var exit: [String: JSONValue] = [
            "code": o.exitCode.map { .int($0) } ?? .null, "signal": o.signal.map { .int($0) } ?? .null,
            "signal_name": o.signal.map { .string(signalName($0)) } ?? .null,
            "duration_ms": .int(o.durationMs), "status": .string(o.status),
        ]
        if outBytes > Self.eventCapBytes || errBytes > Self.eventCapBytes {
            exit["truncated"] = true
            exit["stdout_bytes"] = .int(outBytes)
            exit["stderr_bytes"] = .int(errBytes)
        }
        if let summary { exit["summary"] = summary }
        _ = try? await bus.publish(
            topic: Self.topic(job.id), type: "exit", data: JSONValue.object(exit).jsonText, scope: job.scope)
        live.withLock { $0[job.id] = nil }
        job.resolve(o)
    }

    /// Sets a function that adds a summary to the exit event (test runs).
    func setSummarizer(_ jobID: String, _ f: @escaping @Sendable (JobOutcome) -> JSONValue?) {
        live.withLock { $0[jobID] }?.setSummarizer(f)
    }

    public func wait(_ jobID: String) async -> JobOutcome? {
        guard let job = live.withLock({ $0[jobID] }) else { return nil }
        return await job.outcome()
    }

    @discardableResult
    public func cancel(_ jobID: String, grace: Double? = nil) -> Bool {
        guard let job = live.withLock({ $0[jobID] }) else { return false }
        job.stop(reason: "cancelled", grace: grace ?? graceSeconds)
        return true
    }

    public func isRunning(_ jobID: String) -> Bool { live.withLock { $0[jobID] != nil } }

    /// Why a running job cannot be acted on here: 421 naming the instance that runs it.
    func elsewhere(_ jobID: String) async throws -> HTTPError {
        try await instances.misdirected("Job \(jobID)", holder: try await store.instanceOf(jobID))
    }

    /// Ends every job at once and waits until each has ended and published its exit (shutdown).
    func stopAll() async {
        closing.store(true, ordering: .relaxed)
        let jobs = live.withLock { Array($0.values) }
        for job in jobs { job.stop(reason: "cancelled", grace: 0) }
        for job in jobs { _ = await job.outcome() }
    }

    public func detectTests(root: String) -> TestCommand? {
        TestRunners.detect(root: root).map { TestCommand(runner: $0.runner, command: $0.command) }
    }

    public func startTests(
        project: ProjectRef, userID: String, timeout: Double, secrets: [SecretValue] = [], actorKind: String = "user"
    ) async throws -> String {
        try await startTests(
            project: project, userID: userID, timeout: timeout, secrets: secrets, actorKind: actorKind, grants: [])
    }

    func startTests(
        project: ProjectRef, userID: String, timeout: Double, secrets: [SecretValue], actorKind: String,
        grants: [PolicyGrant]
    ) async throws -> String {
        let saved = try await store.testCommand(project.id)
        let detected = TestRunners.detect(root: project.root)
        guard let command = saved ?? detected?.command else {
            throw HTTPError(
                HTTPStatus(422), code: "validation_failed",
                message:
                    "No test command found: save one with PUT /api/shell/settings, or add Package.swift, pytest config, "
                    + "package.json test script, Cargo.toml, go.mod or a Makefile test target",
                details: ["field": "project_id"])
        }
        let runner = saved != nil ? (detected?.command == saved ? detected!.runner : "custom") : detected!.runner
        var spec = JobSpec(
            wsID: project.wsID, projectID: project.id, userID: userID, kind: "test", command: command,
            cwd: project.root, displayCwd: ".", timeout: timeout, secrets: secrets, actorKind: actorKind)
        spec.grants = grants
        let id = try await start(spec)
        setSummarizer(id) { o in
            TestRunners.summarize(
                runner: runner,
                output: String(decoding: o.stdout, as: UTF8.self) + "\n" + String(decoding: o.stderr, as: UTF8.self))
        }
        return id
    }

    // MARK: Starting from requests

    /// Starts a command in a project folder (`cwd` relative to it, path-checked); a
    /// `require_approval` rule (on the command or a secret it uses) parks it
    /// instead: 202 with the approval, and the job starts when it is approved (`grants`).
    func run(
        _ input: RunInput, access: WorkspaceAccess, userID: String, actorKind: String = "user",
        grants: [PolicyGrant] = []
    ) async throws -> String {
        try Validate.command(input.command)
        let project = try await projects.resolve(input.projectId, access: access, userID: userID)
        let (cwd, shown) = try Self.cwd(in: project.root, input.cwd)
        let env = try Self.validateEnv(input.env)
        let timeout = try Self.timeout(input.timeoutS)
        var fixed = input
        fixed.projectId = project.id
        return try await approvals.parking(
            wsID: access.wsID, userID: userID, kind: "shell.run",
            payload: ["input": try JSONValue(encoding: fixed), "actor_kind": .string(actorKind)], grants: grants
        ) {
            let values = try await useSecrets(
                input.secrets, wsID: access.wsID, userID: userID, purpose: "shell.run", grants: grants)
            var spec = JobSpec(
                wsID: access.wsID, projectID: project.id, userID: userID, kind: "run", command: input.command,
                cwd: cwd, displayCwd: shown, env: env, timeout: timeout, secrets: values, actorKind: actorKind)
            spec.grants = grants
            return try await start(spec)
        }
    }

    /// The values of the secrets a request names (none without a secrets domain or names).
    func useSecrets(
        _ names: [String]?, wsID: String, userID: String, purpose: String, grants: [PolicyGrant] = []
    ) async throws -> [SecretValue] {
        guard let names, !names.isEmpty else { return [] }
        guard let secrets else { throw APIError.unavailable("Secrets are not available on this server") }
        return try await secrets.use(names, wsID: wsID, userID: userID, purpose: purpose, grants: grants)
    }

    func runTests(
        _ input: TestInput, access: WorkspaceAccess, userID: String, actorKind: String = "user",
        grants: [PolicyGrant] = []
    ) async throws -> String {
        let project = try await projects.resolve(input.projectId, access: access, userID: userID)
        let timeout = try Self.timeout(input.timeoutS)
        return try await approvals.parking(
            wsID: access.wsID, userID: userID, kind: "shell.test",
            payload: [
                "input": try JSONValue(encoding: TestInput(projectId: project.id, timeoutS: input.timeoutS)),
                "actor_kind": .string(actorKind),
            ], grants: grants
        ) {
            try await startTests(
                project: project, userID: userID, timeout: timeout, secrets: [], actorKind: actorKind, grants: grants)
        }
    }

    /// Resumes the parked jobs of approved approvals.
    func registerResumers() {
        guard let approvals else { return }
        let hooks = hooks
        approvals.onApproved(kind: "shell.run") { [self] a in
            let access = try await a.access(hooks, needs: ShellPermission.run)
            let id = try await run(
                try a.input(RunInput.self), access: access, userID: a.userID, actorKind: a.text("actor_kind") ?? "user",
                grants: a.grants)
            return ["job_id": .string(id)]
        }
        approvals.onApproved(kind: "shell.test") { [self] a in
            let access = try await a.access(hooks, needs: ShellPermission.run)
            let id = try await runTests(
                try a.input(TestInput.self), access: access, userID: a.userID,
                actorKind: a.text("actor_kind") ?? "user", grants: a.grants)
            return ["job_id": .string(id)]
        }
        approvals.onApproved(kind: "ssh.run") { [self] a in
            let access = try await a.access(hooks, needs: ShellPermission.ssh)
            let id = try await sshRun(try a.input(SSHRunInput.self), access: access, userID: a.userID, grants: a.grants)
            return ["job_id": .string(id)]
        }
        approvals.onApproved(kind: "ssh.pull") { [self] a in
            let access = try await a.access(hooks, needs: ShellPermission.ssh)
            let pulled = try await sshPull(
                try a.input(SSHPullInput.self), access: access, userID: a.userID, grants: a.grants)
            return ["pulled": pulled]
        }
    }

    static func cwd(in root: String, _ cwd: String?) throws -> (String, String) {
        let dir = try SafePath.resolve(root: root, relative: cwd ?? "", field: "cwd")
        var st = stat()
        guard stat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw APIError.validation("cwd is not a directory", field: "cwd")
        }
        return (dir, dir == root ? "." : String(dir.dropFirst(root.count + 1)))
    }

    // MARK: Reading

    static func job(_ r: Row) -> ShellJob {
        let id = r.string("id") ?? ""
        let summary = r.string("summary").flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        return ShellJob(
            id: id, jobId: id, wsId: r.string("ws_id") ?? "", projectId: r.string("project_id"),
            userId: r.string("user_id") ?? "",
            kind: r.string("kind") ?? "run", command: r.string("command") ?? "", cwd: r.string("cwd") ?? "",
            host: r.string("host"), status: r.string("status") ?? "", pid: r.int("pid"), exitCode: r.int("exit_code"),
            signal: r.int("signal"), startedAt: r.date("started_at") ?? Date(timeIntervalSince1970: 0),
            endedAt: r.date("ended_at"), durationMs: r.int("duration_ms"), summary: summary,
            stdoutBytes: r.int("stdout_bytes") ?? 0, stderrBytes: r.int("stderr_bytes") ?? 0)
    }

    /// A job with its kept output (live tails while it runs).
    public func get(_ jobID: String) async throws -> (ShellJob, stdout: [UInt8], stderr: [UInt8])? {
        guard IDs.isValid(jobID, prefix: "job"), let r = try await store.job(jobID) else { return nil }
        let job = Self.job(r)
        if let running = live.withLock({ $0[jobID] }) {
            let (o, e) = running.tails
            let (ob, eb) = running.totals
            let now = ShellJob(
                id: job.id, jobId: job.id, wsId: job.wsId, projectId: job.projectId, userId: job.userId, kind: job.kind,
                command: job.command, cwd: job.cwd, host: job.host, status: job.status, pid: job.pid, exitCode: nil,
                signal: nil,
                startedAt: job.startedAt, endedAt: nil, durationMs: nil, summary: nil, stdoutBytes: ob, stderrBytes: eb)
            return (now, o, e)
        }
        return (job, r.blob("stdout_tail") ?? [], r.blob("stderr_tail") ?? [])
    }

    /// The job when it belongs to the workspace (404 otherwise).
    func job(_ jobID: String, in wsID: String) async throws -> (ShellJob, stdout: [UInt8], stderr: [UInt8]) {
        guard let found = try await get(jobID), found.0.wsId == wsID else { throw APIError.notFound("No such job") }
        return found
    }

    public func workspaceOf(_ jobID: String) async throws -> String? {
        guard IDs.isValid(jobID, prefix: "job") else { return nil }
        return try await store.workspaceOf(jobID)
    }

    static let statuses = ["running", "succeeded", "failed", "cancelled", "timed_out", "lost"]

    func jobs(wsID: String, projectID: String?, status: String?, page: PageRequest) async throws -> Page<ShellJob> {
        if let status, !Self.statuses.contains(status) {
            throw APIError.validation("status must be one of \(Self.statuses.joined(separator: ", "))", field: "status")
        }
        let rows = try await store.jobs(wsID: wsID, projectID: projectID, status: status, page: page)
        return Page(fetched: rows.map(Self.job), limit: page.limit) {
            PageRequest.timeCursorKey($0.startedAt, id: $0.id)
        }
    }

    func recentCommands(userID: String, wsID: String, projectID: String?, limit: Int) async throws -> Page<JSONValue> {
        let rows = try await store.recentCommands(userID: userID, wsID: wsID, projectID: projectID, limit: limit)
        return Page(
            all: rows.map { c, runs, last in
                .object(["command": .string(c), "runs": .int(runs), "last_run_at": .string(HTTPDate.iso8601(last))])
            })
    }

    /// The project's saved test command and the one its files suggest.
    func settings(_ projectID: String?, access: WorkspaceAccess, userID: String) async throws -> JSONValue {
        let project = try await projects.resolve(projectID, access: access, userID: userID)
        let saved = try await store.testCommand(project.id)
        let detected = TestRunners.detect(root: project.root)
        return .object([
            "project_id": .string(project.id), "test_command": saved.map { .string($0) } ?? .null,
            "detected_runner": detected.map { .string($0.runner) } ?? .null,
            "detected_command": detected.map { .string($0.command) } ?? .null,
        ])
    }

    func saveSettings(_ input: SettingsInput, access: WorkspaceAccess, userID: String) async throws -> JSONValue {
        if let c = input.testCommand {
            guard !c.trimmingCharacters(in: .whitespaces).isEmpty, c.utf8.count <= 4096, !c.utf8.contains(0) else {
                throw APIError.validation("test_command must be 1 to 4096 bytes without NUL", field: "test_command")
            }
        }
        let project = try await projects.resolve(input.projectId, access: access, userID: userID)
        try await store.setTestCommand(project.id, input.testCommand, at: clock.now())
        return .object([
            "project_id": .string(project.id), "test_command": input.testCommand.map { .string($0) } ?? .null,
        ])
    }
}
