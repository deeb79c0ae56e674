import CShims
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Synchronization

/// The terminals domain's options under `kiln serve`.
struct PTYSettings: Sendable {
    static let idleMinutes = "--pty-idle-minutes"
    static let maxPerUser = "--max-terminals-per-user"
    static let options: [Config.Option] = [
        .int(
            idleMinutes, env: "KILN_PTY_IDLE_MINUTES",
            help: "end a terminal nobody has viewed for this long (default 30)", range: 1...100_000),
        .int(
            maxPerUser, env: "KILN_MAX_TERMINALS_PER_USER", help: "open terminals one account may have (default 16)",
            range: 1...10_000),
    ]
}

/// Every live terminal of this application: started in a project (or the server's home), attached
/// over WebSocket, ended when deleted, idle, or at shutdown.
final class TerminalService: Sendable {
    let all = Mutex<[String: Terminal]>([:])
    /// Terminals between the limit's check and `all`.
    let starting = StartingCounts()
    let store: TerminalStore
    let instances: Instances
    /// Set at shutdown: no terminal starts after the open ones were hung up.
    let closing = Atomic<Bool>(false)
    let idleSeconds: Double
    let maxPerUser: Int
    let projects: any ProjectDirectory
    let sandbox: Sandbox
    let secrets: (any SecretProvider)?
    let policy: (any PolicyEngine)?
    /// Where a `require_approval` rule parks a spawn until it is decided.
    let approvals: (any ApprovalGate)?
    /// Exited terminals stay listed (for their exit code and replay) this long after the last viewer left.
    static let keepExitedSeconds = 600.0

    init(
        idleSeconds: Double, maxPerUser: Int = 16, projects: any ProjectDirectory, sandbox: Sandbox,
        store: TerminalStore, instances: Instances,
        secrets: (any SecretProvider)? = nil, policy: (any PolicyEngine)? = nil,
        approvals: (any ApprovalGate)? = nil
    ) {
        self.store = store
        self.instances = instances
        self.approvals = approvals
        self.secrets = secrets
        self.policy = policy
        self.idleSeconds = idleSeconds
        self.maxPerUser = maxPerUser
        self.projects = projects
        self.sandbox = sandbox
    }

    func get(_ id: String) -> Terminal? { IDs.isValid(id, prefix: "pty") ? all.withLock { $0[id] } : nil }

    /// The caller's own terminal in the admitted workspace (404 otherwise: others' terminals are not
    /// revealed); 421 naming the instance when another instance sharing the database holds it.
    func own(_ id: String, access: WorkspaceAccess, userID: String) async throws -> Terminal {
        if let t = get(id), t.wsID == access.wsID, t.userID == userID { return t }
        if get(id) == nil, IDs.isValid(id, prefix: "pty"), let held = try await store.open(id),
            held.wsID == access.wsID, held.userID == userID, held.instance != instances.id
        {
            throw try await instances.misdirected("Terminal \(id)", holder: held.instance)
        }
        throw APIError.notFound("No such terminal")
    }

    /// The workspace of a terminal here or on another instance (for admitting its routes).
    func workspaceOf(_ id: String) async throws -> String? {
        if let t = get(id) { return t.wsID }
        guard IDs.isValid(id, prefix: "pty") else { return nil }
        return try await store.open(id)?.wsID
    }

    func list(userID: String, wsID: String) -> [Terminal] {
        all.withLock { Array($0.values) }.filter { $0.userID == userID && $0.wsID == wsID }.sorted {
            $0.createdAt < $1.createdAt
        }
    }

    /// Checks a spawn request: size, shell, and the working directory (in the project when it names one).
    /// A `require_approval` rule (on terminals or a secret) parks the spawn: 202 with the approval,
    /// and the terminal starts when it is approved (`grants`), ready to attach.
    func spawn(
        _ input: SpawnInput, access: WorkspaceAccess, userID: String, grants: [PolicyGrant] = []
    ) async throws -> Terminal {
        let cols = input.cols ?? 80
        let rows = input.rows ?? 24
        guard (1...1000).contains(cols) else { throw APIError.validation("cols must be from 1 to 1000", field: "cols") }
        guard (1...1000).contains(rows) else { throw APIError.validation("rows must be from 1 to 1000", field: "rows") }
        try sandbox.requireUsable()
        let shell =
            input.shell ?? ProcessInfo.processInfo.environment["SHELL"].flatMap {
                FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil
            } ?? "/bin/bash"
        guard shell.hasPrefix("/"), !shell.contains("\0"), FileManager.default.isExecutableFile(atPath: shell) else {
            throw APIError.validation("shell must be the absolute path of an executable on the server", field: "shell")
        }
        var cwd: String? = nil
        var project: ProjectRef? = nil
        if input.projectId != nil || (input.cwd.map { !$0.hasPrefix("/") } ?? false) {
            let p = try await projects.resolve(input.projectId, access: access, userID: userID)
            project = p
            cwd = try SafePath.resolve(root: p.root, relative: input.cwd ?? "", field: "cwd")
        } else if let c = input.cwd {
            guard !c.contains("\0"), let real = SafePath.real(c) else {
                throw APIError.validation("cwd does not exist", field: "cwd")
            }
            // A sandbox shows only the project and its private HOME: a folder elsewhere is not there.
            guard !sandbox.isolates else {
                throw APIError.validation(
                    "cwd outside a project is not visible in the sandbox; give project_id and a relative cwd",
                    field: "cwd")
            }
            cwd = real
        }
        if let cwd {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: cwd, isDirectory: &isDir), isDir.boolValue else {
                throw APIError.validation("cwd is not a directory", field: "cwd")
            }
        }
        var fixed = input
        fixed.wsId = access.wsID
        fixed.projectId = project?.id
        let (proj, policy, secrets) = (project, policy, secrets)
        return try await approvals.parking(
            wsID: access.wsID, userID: userID, kind: "pty.open", payload: ["input": try JSONValue(encoding: fixed)],
            grants: grants
        ) {
            if let policy {
                try await policy.check(
                    wsID: access.wsID, userID: userID, action: "pty.open", context: PolicyContext(), grants: grants)
            }
            var values: [SecretValue] = []
            if let names = input.secrets, !names.isEmpty {
                guard let secrets else { throw APIError.unavailable("Secrets are not available on this server") }
                values = try await secrets.use(
                    names, wsID: access.wsID, userID: userID, purpose: "pty.open", grants: grants)
            }
            let t = try spawn(
                userID: userID, wsID: access.wsID, project: proj, shell: shell, cwd: cwd, cols: cols, rows: rows,
                secrets: values)
            do {
                try await store.record(id: t.id, wsID: access.wsID, userID: userID, instance: instances.id, at: Date())
            } catch {
                await end(t)
                throw error
            }
            return t
        }
    }

    func spawn(
        userID: String, wsID: String, project: ProjectRef?, shell: String, cwd: String?, cols: Int, rows: Int,
        secrets: [SecretValue] = []
    ) throws -> Terminal {
        guard !closing.load(ordering: .relaxed) else { throw APIError.unavailable("The server is shutting down") }
        if let count = starting.reserve(
            userID, limit: maxPerUser,
            running: { all.withLock { $0.values.filter { $0.userID == userID && !$0.exited }.count } })
        {
            throw HTTPError(
                .tooManyRequests, code: "rate_limited",
                message: "You have \(count) terminals open (the limit is \(maxPerUser)); end one first")
        }
        var admitted = false
        defer { if !admitted { starting.finish(userID) } }
        let launch: Sandbox.Launch
        do {
            var env = ["SHELL": shell]
            for s in secrets { env[s.name] = s.value }
            launch = try sandbox.launch(
                [shell, "-i"], workspace: wsID, project: project?.root, cwd: cwd, environment: env, terminal: true)
        } catch let e as HTTPError {
            throw e
        } catch {
            throw APIError.unavailable("Could not prepare the terminal's sandbox: \(error)")
        }
        let argv0 = sandbox.isolates ? "bwrap" : (shell as NSString).lastPathComponent
        let started: (pid: pid_t, master: Int32)
        do {
            started = try ProcessRunner.spawnTerminal(launch, argv0: argv0, cols: cols, rows: rows)
        } catch {
            throw APIError.unavailable("Could not start a terminal: \(error)")
        }
        let t = Terminal(
            id: IDs.make("pty"), userID: userID, wsID: wsID, projectID: project?.id, shell: shell, cwd: cwd ?? "~",
            pid: started.pid, master: started.master, cols: cols, rows: rows, redactor: Redactor(secrets))
        starting.finish(userID) { all.withLock { $0[t.id] = t } }
        admitted = true
        let store = self.store
        Thread { t.pump(onExit: { Task { try? await store.ended(t.id, at: Date()) } }) }.start()
        return t
    }

    /// Hangs up the terminal and returns once its shell has ended (SIGKILL follows a lingering one),
    /// so the answer can carry the exit status; it is then forgotten.
    func end(_ t: Terminal) async {
        t.terminate()
        await t.waitForExit()
        _ = all.withLock { $0.removeValue(forKey: t.id) }
    }

    /// Ends terminals nobody has viewed for the idle limit and forgets long-exited ones.
    func reap(now: Date = Date()) async {
        for t in all.withLock({ Array($0.values) }) {
            let (viewers, lastSeen) = t.state.withLock { ($0.viewers.count, $0.lastSeen) }
            guard viewers == 0 else { continue }
            let idle = now.timeIntervalSince(lastSeen)
            if t.exited {
                if idle > Self.keepExitedSeconds { _ = all.withLock { $0.removeValue(forKey: t.id) } }
            } else if idle > idleSeconds {
                await end(t)
            }
        }
    }

    /// Hangs up every terminal and waits until each shell has ended (shutdown).
    func shutdown() async {
        closing.store(true, ordering: .relaxed)
        let terminals = all.withLock { Array($0.values) }
        for t in terminals { t.terminate() }
        for t in terminals { await t.waitForExit() }
    }

    /// Runs one viewer connection: replay, then output out and keystrokes in, until either side ends.
    static func serve(_ t: Terminal, _ ws: WebSocket) async {
        let viewer = t.attach(ws)
        for await message in ws.messages {
            switch message {
            case .binary(let b): t.input(b)
            case .text(let s): await control(t, ws, s)
            }
        }
        t.detach(viewer)
    }

    /// A JSON control message from the viewer: resize, input, ping.
    static func control(_ t: Terminal, _ ws: WebSocket, _ text: String) async {
        guard case .object(let c)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)),
            case .string(let type)? = c["type"]
        else {
            try? await ws.send(text: #"{"type":"error","message":"control messages are JSON objects with a type"}"#)
            return
        }
        func int(_ key: String) -> Int? {
            switch c[key] {
            case .int(let n)?: n
            case .double(let d)? where d == d.rounded() && abs(d) < 1e9: Int(d)
            default: nil
            }
        }
        switch type {
        case "resize":
            guard let cols = int("cols"), let rows = int("rows"), (1...1000).contains(cols), (1...1000).contains(rows)
            else {
                try? await ws.send(text: #"{"type":"error","message":"resize needs cols and rows from 1 to 1000"}"#)
                return
            }
            t.resize(cols: cols, rows: rows)
        case "input":
            if case .string(let d)? = c["data"] { t.input(Array(d.utf8)) }
        case "ping":
            try? await ws.send(text: #"{"type":"pong"}"#)
        default:
            try? await ws.send(
                text: JSONValue.object(["type": "error", "message": .string("unknown control message type")]).jsonText)
        }
    }
}
