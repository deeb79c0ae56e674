import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Agent runs as the API offers them: start, follow, cancel, roll back, history, transcripts,
/// preferences, and one-off command suggestions. The loop itself is the `AgentEngine`.
public struct AgentService: Sendable {
    let store: AgentStore
    let engine: AgentEngine
    let projects: any ProjectDirectory
    let jobs: any JobLauncher
    let bus: EventBus
    let instances: Instances
    let clock: any Clock
    /// The server's model provider (nil: none configured).
    let server: ProviderSettings?
    let secrets: (any SecretProvider)?
    /// Where a start that a `require_approval` rule holds (a secret it uses) is parked.
    let approvals: (any ApprovalGate)?
    let hooks: Hooks

    static let unavailable =
        "No model provider is configured. Start kiln with --llm-base-url (an OpenAI-compatible /v1 URL or "
        + "https://api.anthropic.com), --llm-model and KILN_LLM_API_KEY; scripts/local-model.sh serves a small local model"

    /// `observers` follow every run (budgets, receipts), in order.
    public init(
        services: Services, projects: any ProjectDirectory, jobs: any JobLauncher, observers: [any RunObserver],
        secrets: (any SecretProvider)? = nil, policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        self.secrets = secrets
        self.approvals = approvals
        hooks = services.hooks
        store = AgentStore(db: services.db)
        engine = AgentEngine(
            services: services, store: store, projects: projects, jobs: jobs, observers: observers, policy: policy,
            approvals: approvals)
        self.projects = projects
        self.jobs = jobs
        bus = services.bus
        clock = services.clock
        instances = services.instances
        server = ProviderSettings.from(services.config)
    }

    /// Runs whose server stopped (a restart, a crash, an instance that stopped beating) end as
    /// `lost`, once, whichever survivor gets there first; `run.failed` ends followers' streams.
    func recover(alive: Set<String>) async throws {
        for (id, instance) in try await store.runningRuns() where !alive.contains(instance ?? "") && !engine.isLive(id)
        {
            guard try await store.markLost(id, at: clock.now()) else { continue }
            try await bus.publish(
                topic: AgentEngine.topic(id), type: "run.failed",
                data: #"{"error":"the server running the run stopped","reason":"instance_lost","status":"lost"}"#)
        }
    }

    func workspaceOf(_ runID: String) async throws -> String? {
        guard IDs.isValid(runID, prefix: "run") else { return nil }
        return try await store.runHead(runID)?.string("ws_id")
    }

    /// The run's row when it belongs to the workspace (404 otherwise).
    func run(_ runID: String, in wsID: String) async throws -> Row {
        guard IDs.isValid(runID, prefix: "run"), let r = try await store.runHead(runID), r.string("ws_id") == wsID
        else {
            throw APIError.notFound("No such run")
        }
        return r
    }

    // MARK: Preferences and provider

    /// The workspace default overlaid by the user's own preferences.
    func prefs(userID: String, wsID: String) async throws -> AgentPrefs {
        let stored = try await store.prefs(userID: userID, wsID: wsID)
        var p = AgentPrefs()
        for scope in ["workspace", "user"] {
            if let text = stored[scope],
                let s = try? JSONCoding.makeDecoder().decode(AgentPrefs.self, from: Data(text.utf8))
            {
                p = p.overlaid(by: s)
            }
        }
        return p
    }

    func provider(_ p: AgentPrefs) throws -> (any ModelProvider, String) {
        guard var s = server else { throw APIError.unavailable(Self.unavailable) }
        if let kind = p.provider { s.kind = kind }
        return (s.provider(), p.model ?? s.model)
    }

    func prefsDocument(userID: String, wsID: String) async throws -> JSONValue {
        let rows = try await store.prefs(userID: userID, wsID: wsID)
        func stored(_ scope: String) -> JSONValue {
            guard let t = rows[scope] else { return .object([:]) }
            return (try? JSONDecoder().decode(JSONValue.self, from: Data(t.utf8))) ?? .object([:])
        }
        let eff = try await prefs(userID: userID, wsID: wsID)
        let effective: JSONValue = [
            "provider": .string(eff.provider ?? server?.kind ?? ""), "model": .string(eff.model ?? server?.model ?? ""),
            "max_steps": .int(eff.maxSteps ?? 20), "temperature": eff.temperature.map { .double($0) } ?? .null,
            "system_instructions": eff.systemInstructions.map { .string($0) } ?? .null,
            "configured": .bool(server != nil),
        ]
        return .object(["user": stored("user"), "workspace": stored("workspace"), "effective": effective])
    }

    func setPrefs(_ input: PrefsInput, access: WorkspaceAccess, userID: String) async throws -> JSONValue {
        let scope = input.scope ?? "user"
        guard ["user", "workspace"].contains(scope) else {
            throw APIError.validation("scope must be user or workspace", field: "scope")
        }
        if scope == "workspace" && ![.owner, .admin].contains(access.role) {
            throw APIError.forbidden("Only workspace owners and admins set the workspace default")
        }
        if let p = input.provider, !["openai", "anthropic"].contains(p) {
            throw APIError.validation("provider must be openai or anthropic", field: "provider")
        }
        try Validate.model(input.model)
        try Validate.maxSteps(input.maxSteps)
        if let t = input.temperature, !(0...2).contains(t) {
            throw APIError.validation("temperature must be from 0 to 2", field: "temperature")
        }
        if let s = input.systemInstructions, s.utf8.count > 8192 {
            throw APIError.validation("system_instructions must be at most 8 KiB", field: "system_instructions")
        }
        if let t = input.tools { _ = try await externalTools(t, wsID: access.wsID) }
        let value = AgentPrefs(
            provider: input.provider, model: input.model, maxSteps: input.maxSteps, temperature: input.temperature,
            systemInstructions: input.systemInstructions, tools: input.tools)
        let text = String(decoding: try JSONCoding.encode(value), as: UTF8.self)
        try await store.setPrefs(scope: scope, scopeID: scope == "user" ? userID : access.wsID, text, at: clock.now())
        return .object([
            "scope": .string(scope),
            "prefs": (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .null,
        ])
    }

    // MARK: Runs

    /// The registry tools a selection names (checked: at most 64 entries, each known).
    func externalTools(_ selection: [String], wsID: String) async throws -> [ToolDescriptor] {
        guard !selection.isEmpty else { return [] }
        guard selection.count <= 64 else { throw APIError.validation("tools: at most 64 entries", field: "tools") }
        guard let external = engine.external.withLock({ $0 }) else {
            throw APIError.unavailable("Registry tools are not available on this server")
        }
        return try await external.tools(wsID: wsID, selection: selection)
    }

    /// Hands runs the workspace's registry tools (set once the MCP domain is built, which itself
    /// uses the agents' tools).
    public func attach(externalTools: any ExternalTools) { engine.external.withLock { $0 = externalTools } }

    /// Hands runs the notebooks (read_notebook, run_cell), built after the agents.
    public func attach(notebooks: any NotebookCells) { engine.notebooks.withLock { $0 = notebooks } }
    /// Hands runs browser checks (browser_check), built after the agents.
    public func attach(browser: any BrowserChecks) { engine.browser.withLock { $0 = browser } }

    /// Starts a run; a `require_approval` rule on a secret it uses parks the start instead (202 with
    /// the approval), and the run starts as the requester once it is approved (`grants`).
    func start(
        _ input: StartInput, access: WorkspaceAccess, userID: String, grants: [PolicyGrant] = []
    ) async throws -> String {
        try Validate.text(input.prompt, field: "prompt", maxBytes: 32 * 1024)
        try Validate.maxSteps(input.maxSteps)
        try Validate.model(input.model)
        let project = try await projects.resolve(input.projectId, access: access, userID: userID)
        let p = try await prefs(userID: userID, wsID: access.wsID)
        let (prov, model) = try provider(p)
        var fixed = input
        fixed.projectId = project.id
        return try await approvals.parking(
            wsID: access.wsID, userID: userID, kind: "agent.run", payload: ["input": try JSONValue(encoding: fixed)],
            grants: grants
        ) {
            var values: [SecretValue] = []
            if let names = input.secrets, !names.isEmpty {
                guard let secrets else { throw APIError.unavailable("Secrets are not available on this server") }
                values = try await secrets.use(
                    names, wsID: access.wsID, userID: userID, purpose: "agent.run", grants: grants)
            }
            let external = try await externalTools(input.tools ?? p.tools ?? [], wsID: access.wsID)
            return try await engine.start(
                project: project, userID: userID, provider: prov,
                input: RunInput(
                    prompt: input.prompt, model: input.model ?? model, maxSteps: input.maxSteps ?? p.maxSteps ?? 20,
                    temperature: p.temperature, instructions: p.systemInstructions, secrets: values,
                    external: external))
        }
    }

    /// Starts the parked runs of approved approvals.
    func registerResumers() {
        guard let approvals else { return }
        approvals.onApproved(kind: "agent.run") { [self] a in
            let access = try await a.access(hooks, needs: AgentPermission.run)
            let id = try await start(try a.input(StartInput.self), access: access, userID: a.userID, grants: a.grants)
            return ["run_id": .string(id)]
        }
    }

    /// The run to follow: the one named, else the caller's latest in flight.
    func runToFollow(_ runID: String?, access: WorkspaceAccess, userID: String) async throws -> String {
        var id = runID ?? ""
        if id.isEmpty {
            guard let latest = engine.latestLive(userID: userID) else {
                throw APIError.notFound("You have no run in flight; pass run_id")
            }
            id = latest
        }
        _ = try await run(id, in: access.wsID)
        return id
    }

    /// Cancels the run and waits (up to a second) until it has stopped.
    func cancel(_ runID: String, access: WorkspaceAccess) async throws {
        let r = try await run(runID, in: access.wsID)
        guard engine.cancel(runID) else {
            let status = r.string("status") ?? ""
            if status == "running" || status == "waiting_approval" {
                throw try await instances.misdirected("Run \(runID)", holder: try await store.instanceOf(runID))
            }
            throw HTTPError(
                .conflict, message: "The run is not running (status \(status.isEmpty ? "?" : status))",
                details: ["status": .string(status)])
        }
        for _ in 0..<100 where engine.isLive(runID) { try await Task.sleep(nanoseconds: 10_000_000) }
    }

    func rollback(_ input: RollbackInput, access: WorkspaceAccess, by p: Principal, ip: String) async throws -> [String]
    {
        let r = try await run(input.runId, in: access.wsID)
        guard let project = try await projects.lookup(r.string("project_id") ?? "") else {
            throw APIError.notFound("The run's project is gone")
        }
        let force = input.force ?? false
        let restored = try await engine.rollback(runID: input.runId, project: project, force: force)
        try await store.audit(
            AuditEvent(
                action: "agent.rollback", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: access.wsID,
                resourceType: "agent_run", resourceID: input.runId, ip: ip,
                details: ["paths": .array(restored.map { .string($0) }), "force": .bool(force)]), at: clock.now())
        _ = try? await bus.publish(
            topic: EventBus.workspaceTopic(access.wsID), type: "run.rolled_back",
            data: JSONValue.object([
                "run_id": .string(input.runId), "paths": .array(restored.map { .string($0) }),
            ]).jsonText,
            scope: EventScope(wsID: access.wsID, actorID: p.userID, projectID: project.id))
        return restored
    }

    func history(wsID: String, projectID: String?, page: PageRequest) async throws -> Page<JSONValue> {
        let rows = try await store.runs(wsID: wsID, projectID: projectID, page: page)
        let kept = Array(rows.prefix(page.limit))
        var next: String? = nil
        if rows.count > page.limit, let last = kept.last {
            next = PageRequest.encodeCursor(
                PageRequest.timeCursorKey(last.date("started_at") ?? Date(), id: last.string("id") ?? ""))
        }
        return Page(items: kept.map(runJSON), nextCursor: next)
    }

    /// One run with its whole transcript, tool calls, changed files and findings.
    func detail(_ runID: String, in wsID: String) async throws -> JSONValue {
        guard let d = try await store.runDetail(runID), d.run.string("ws_id") == wsID,
            case .object(var o) = runJSON(d.run)
        else {
            throw APIError.notFound("No such run")
        }
        o["transcript"] = .array(
            d.messages.map { m in
                var e: [String: JSONValue] = [
                    "role": .string(m.string("role") ?? ""), "content": .string(m.string("content") ?? ""),
                    "created_at": .string(HTTPDate.iso8601(m.date("created_at") ?? Date())),
                ]
                if let tc = m.string("tool_calls"),
                    let v = try? JSONDecoder().decode(JSONValue.self, from: Data(tc.utf8))
                {
                    e["tool_calls"] = v
                }
                if let c = m.string("tool_call_id") { e["tool_call_id"] = .string(c) }
                return .object(e)
            })
        o["tool_calls"] = .array(
            d.calls.map { c in
                let args = c.string("args") ?? ""
                return .object([
                    "call_id": .string(c.string("call_id") ?? ""), "tool": .string(c.string("tool") ?? ""),
                    "args": (try? JSONDecoder().decode(JSONValue.self, from: Data(args.utf8))) ?? .string(args),
                    "ok": .bool(c.bool("ok") ?? false), "output": .string(c.string("output") ?? ""),
                ])
            })
        o["files"] = .array(
            d.files.map { f in
                .object([
                    "path": .string(f.string("path") ?? ""), "created": .bool(f.bool("existed") == false),
                    "sha256_before": f.string("sha_before").map { .string($0) } ?? .null,
                    "sha256_after": f.string("sha_after").map { .string($0) } ?? .null,
                ])
            })
        o["findings"] = .array(
            d.findings.map { f in
                .object([
                    "path": .string(f.string("path") ?? ""), "line": .int(f.int("line") ?? 0),
                    "claim": .string(f.string("claim") ?? ""),
                    "evidence": .string(f.string("evidence") ?? ""),
                ])
            })
        return .object(o)
    }

    /// One shell command for a task, from the configured model, never run.
    func suggest(_ input: SuggestInput, access: WorkspaceAccess, userID: String) async throws -> JSONValue {
        guard !input.prompt.trimmingCharacters(in: .whitespaces).isEmpty, input.prompt.utf8.count <= 8192 else {
            throw APIError.validation("prompt must be 1 byte to 8 KiB", field: "prompt")
        }
        let project = try await projects.resolve(input.projectId, access: access, userID: userID)
        let (prov, model) = try provider(try await prefs(userID: userID, wsID: access.wsID))
        let toolchain = jobs.detectTests(root: project.root).map { "\($0.runner) (tests: \($0.command))" } ?? "unknown"
        let system = """
            You suggest one POSIX shell command for a developer. The project is "\(project.name)"; its toolchain: \(toolchain). \
            Answer with only a JSON object {"command": "...", "explanation": "..."}.
            """
        let turn: ModelTurn
        do {
            turn = try await prov.turn(
                ModelRequest(
                    model: model, system: system, messages: [ChatMessage(role: "user", content: input.prompt)],
                    tools: [], temperature: 0, maxTokens: 512)
            ) { _ in }
        } catch let e as ProviderError {
            throw HTTPError(HTTPStatus(502), code: "unavailable", message: e.description)
        }
        let (command, explanation) = parseSuggestion(turn.text)
        guard !command.isEmpty else {
            throw HTTPError(HTTPStatus(502), code: "unavailable", message: "The model did not suggest a command")
        }
        return .object([
            "command": .string(command), "explanation": .string(explanation), "toolchain": .string(toolchain),
            "model": .string(model),
        ])
    }
}
