import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import Synchronization

/// Runs in flight in this process.
final class LiveRun: Sendable {
    struct State {
        var cancelled = false
        var job: String?
        var task: Task<Void, Never>?
        /// Decisions on its tool calls that waited for an approval (for the receipt).
        var approvals: [RunRecord.Approval] = []
    }
    let id: String
    let userID: String
    let wsID: String
    let projectID: String?
    let state = Mutex(State())
    init(id: String, userID: String, wsID: String, projectID: String? = nil) {
        self.id = id
        self.wsID = wsID
        self.userID = userID
        self.projectID = projectID
    }
}

/// The agent loop: model turn, tool calls, results, repeat; every step an event on `run:<id>`.
final class AgentEngine: Sendable {
    static let terminal: Set<String> = ["run.completed", "run.failed", "run.cancelled"]
    static let eventOutputLimit = 4096

    let store: AgentStore
    let bus: EventBus
    /// This instance (stored with each run: who holds it).
    let instanceID: String
    let clock: any Clock
    let jobs: any JobLauncher
    let directory: any ProjectDirectory
    let snapshots: Snapshots
    let observers: [any RunObserver]
    /// Judges each tool call before it runs (a denial becomes the tool's result).
    let policy: (any PolicyEngine)?
    /// Where a call a rule holds for approval waits (the run's status is `waiting_approval` meanwhile).
    let approvals: (any ApprovalGate)?
    /// The workspace's registry tools (the MCP domain), attached after both are built.
    let external = Mutex<(any ExternalTools)?>(nil)
    /// Notebooks (the notebooks domain), attached after both are built.
    let notebooks = Mutex<(any NotebookCells)?>(nil)
    /// Browser checks (the browser domain), attached after both are built.
    let browser = Mutex<(any BrowserChecks)?>(nil)
    let live = Mutex<[String: LiveRun]>([:])
    /// Runs between the limit's check and `live`.
    let starting = StartingCounts()
    /// Set at shutdown: no run starts after the running ones were cancelled.
    let closing = Atomic<Bool>(false)
    /// Runs one workspace may have going at once (`--max-agent-runs-per-workspace`).
    let maxPerWorkspace: Int
    static let maxRunsFlag = "--max-agent-runs-per-workspace"
    static let maxRunsOption = Config.Option.int(
        maxRunsFlag, env: "KILN_MAX_AGENT_RUNS_PER_WORKSPACE",
        help: "agent runs one workspace may have going at once (default 8)", range: 1...10_000)

    init(
        services: Services, store: AgentStore, projects: any ProjectDirectory, jobs: any JobLauncher,
        observers: [any RunObserver], policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        self.policy = policy
        self.approvals = approvals
        self.store = store
        bus = services.bus
        clock = services.clock
        instanceID = services.instances.id
        self.jobs = jobs
        directory = projects
        snapshots = Snapshots(store: store, dir: services.dataDir + "/snapshots")
        self.observers = observers
        maxPerWorkspace = services.config.int(Self.maxRunsFlag) ?? 8
    }

    static func topic(_ runID: String) -> String { "run:\(runID)" }

    /// Publishes a run's event; a live run's events carry its workspace, starter and project.
    func emit(_ runID: String, _ type: String, _ data: JSONValue) async {
        let scope = live.withLock { $0[runID] }.map {
            EventScope(wsID: $0.wsID, actorID: $0.userID, projectID: $0.projectID)
        }
        _ = try? await bus.publish(topic: AgentEngine.topic(runID), type: type, data: data.jsonText, scope: scope)
    }

    /// Starts a run; returns once `run.started` is stored.
    func start(project: ProjectRef, userID: String, provider: any ModelProvider, input: RunInput) async throws -> String
    {
        guard !closing.load(ordering: .relaxed) else { throw APIError.unavailable("The server is shutting down") }
        let wsID = project.wsID
        if let going = starting.reserve(
            wsID, limit: maxPerWorkspace, running: { live.withLock { $0.values.filter { $0.wsID == wsID }.count } })
        {
            throw HTTPError(
                .tooManyRequests, code: "rate_limited",
                message: "This workspace has \(going) agent runs going (the limit is \(maxPerWorkspace)); "
                    + "wait for one or cancel it")
        }
        var admitted = false
        defer { if !admitted { starting.finish(wsID) } }
        for o in observers { try await o.runWillStart(wsID: project.wsID, userID: userID, model: input.model) }
        let id = IDs.make("run")
        let now = clock.now()
        try await store.insertRun(
            id: id, project: project, userID: userID, prompt: input.prompt, model: input.model, provider: provider.kind,
            maxSteps: input.maxSteps, instance: instanceID, at: now)
        let run = LiveRun(id: id, userID: userID, wsID: project.wsID, projectID: project.id)
        starting.finish(wsID) { live.withLock { $0[id] = run } }
        admitted = true
        await emit(
            id, "run.started",
            [
                "run_id": .string(id), "project_id": .string(project.id), "model": .string(input.model),
                "max_steps": .int(input.maxSteps),
            ])
        let task = Task { await self.loop(run, project: project, provider: provider, input: input, started: now) }
        run.state.withLock { $0.task = task }
        return id
    }

    /// Stops a run: its model call and tool are interrupted and its shell job killed.
    func cancel(_ runID: String) -> Bool {
        guard let run = live.withLock({ $0[runID] }) else { return false }
        let (task, job) = run.state.withLock { s -> (Task<Void, Never>?, String?) in
            s.cancelled = true
            return (s.task, s.job)
        }
        if let job { jobs.cancel(job, grace: 0) }
        task?.cancel()
        return true
    }

    /// Cancels every run in flight and waits until each has ended and published its end (shutdown).
    func stopAll() async {
        closing.store(true, ordering: .relaxed)
        let runs = live.withLock { Array($0.values) }
        for r in runs { _ = cancel(r.id) }
        for r in runs { await r.state.withLock { $0.task }?.value }
    }

    func isLive(_ runID: String) -> Bool { live.withLock { $0[runID] != nil } }

    func latestLive(userID: String) -> String? {
        live.withLock { Array($0.values) }.filter { $0.userID == userID }.map(\.id).sorted().last
    }

    /// Why the workspace's policy stops this tool call (nil: it may run). A call a rule holds for
    /// approval waits here until it is decided: the run's status is `waiting_approval`, and no model
    /// turn (so no token spend) happens meanwhile.
    func policyRefusal(
        _ run: LiveRun, project: ProjectRef, call: ToolCall, _ args: JSONValue?, action given: String? = nil
    ) async throws -> String? {
        guard let policy else { return nil }
        let c = Self.policyContext(actorKind: "agent", args)
        let action = given ?? "agent.tool.\(call.name)"
        let d: PolicyDecision
        do {
            d = try await policy.decide(wsID: project.wsID, userID: run.userID, action: action, context: c)
        } catch {
            return "error: the workspace's policy could not be read, so the call was not made"
        }
        let rule = (d.ruleId.map { " (rule \($0))" } ?? "") + (d.reason.map { ": \($0)" } ?? "")
        switch d.effect {
        case .allow: return nil
        case .deny: return "error: the workspace's policy does not allow this call" + rule
        case .requireApproval:
            guard let approvals else {
                return "error: the workspace's policy requires an approval for this call" + rule
                    + ", and this server cannot ask for one"
            }
            return try await awaitApproval(
                run, gate: approvals, call: call,
                ApprovalRequest(
                    wsID: project.wsID, action: action, context: c, decision: d, requestedBy: run.userID,
                    runID: run.id, callID: call.id), rule: rule)
        }
    }

    /// A registry tool as the model sees it: provider APIs allow only [A-Za-z0-9_-] in tool names, so
    /// `server.tool` is offered as `server__tool`.
    static func modelFacing(_ d: ToolDescriptor) -> ToolDescriptor {
        ToolDescriptor(
            name: d.name.replacingOccurrences(of: ".", with: "__"), description: d.description, schema: d.schema)
    }

    /// The namespaced name of a registry tool the model called by its model-facing name.
    static func externalName(_ called: String, in external: [ToolDescriptor]) -> String? {
        external.first { $0.name == called || $0.name.replacingOccurrences(of: ".", with: "__") == called }?.name
    }

    /// The facts a tool call is judged on: its command and path arguments.
    static func policyContext(actorKind: String, _ args: JSONValue?) -> PolicyContext {
        var c = PolicyContext(actorKind: actorKind)
        if case .object(let o) = args ?? .null {
            if case .string(let s) = o["command"] ?? .null { c.command = s }
            if case .string(let s) = o["path"] ?? .null { c.path = s }
        }
        return c
    }

    /// Parks the run on an approval; nil when approved, else the tool result that says why not.
    func awaitApproval(
        _ run: LiveRun, gate: any ApprovalGate, call: ToolCall, _ request: ApprovalRequest, rule: String
    ) async throws -> String? {
        let ticket: ApprovalTicket
        do { ticket = try await gate.open(request) } catch {
            return "error: the call needs an approval" + rule + ", which could not be requested"
        }
        try? await store.setLiveStatus(run.id, "waiting_approval")
        await emit(
            run.id, "approval.required",
            [
                "approval_id": .string(ticket.id), "call_id": .string(call.id), "tool": .string(call.name),
                "action": .string(request.action), "rule_id": request.decision.ruleId.map { .string($0) } ?? .null,
                "reason": request.decision.reason.map { .string($0) } ?? .null,
                "expires_at": .string(HTTPDate.iso8601(ticket.expiresAt)),
            ])
        let waited = kilnMonotonicNanos()
        let outcome = await gate.outcome(of: ticket.id)
        let waitedMs = Int((kilnMonotonicNanos() &- waited) / 1_000_000)
        let (decision, by, why): (String, String?, String?) =
            switch outcome {
            case .approved(let by): ("approved", by, nil)
            case .rejected(let by, let reason): ("rejected", by, reason)
            case .expired: ("expired", nil, "nobody decided before it expired")
            case .cancelled: ("cancelled", nil, nil)
            }
        run.state.withLock {
            $0.approvals.append(
                RunRecord.Approval(
                    approvalID: ticket.id, callID: call.id, action: request.action, decision: decision, decidedBy: by,
                    decidedAt: clock.now()))
        }
        if case .cancelled = outcome { throw CancellationError() }
        try? await store.setLiveStatus(run.id, "running")
        await emit(
            run.id, "approval.resolved",
            [
                "approval_id": .string(ticket.id), "call_id": .string(call.id), "decision": .string(decision),
                "decided_by": by.map { .string($0) } ?? .null, "reason": why.map { .string($0) } ?? .null,
                "waited_ms": .int(waitedMs),
            ])
        switch outcome {
        case .approved: return nil
        case .expired:
            return "error: the call needed an approval" + rule + " and nobody approved it in time, so it was not made"
        default:
            return "error: the call was rejected by an approver" + (why.map { ": \($0)" } ?? "")
                + "; it was not made"
        }
    }

    static func systemPrompt(_ project: ProjectRef, _ extra: String?) -> String {
        var s = """
            You are a careful software engineer working in the project "\(project.name)" through tools. Paths are relative to \
            the project root. Read before you edit; prefer edit_file for small changes; run the tests after changes; record \
            important claims about the code with record_finding. When the task is done, answer with a short summary and no tool call.
            """
        if let extra, !extra.isEmpty { s += "\n\n" + extra }
        return s
    }

    func loop(_ run: LiveRun, project: ProjectRef, provider: any ModelProvider, input: RunInput, started: Date) async {
        let id = run.id
        var messages = [ChatMessage(role: "user", content: input.prompt)]
        var inTokens = 0
        var outTokens = 0
        var steps = 0
        var msgSeq = 1
        var callSeq = 0
        let findingCounter = Mutex(0)
        let redactor = Redactor(input.secrets)
        var outcome: (type: String, data: JSONValue, status: String, summary: String?, error: String?, reason: String?)
        let ctx = ToolContext(
            project: project, runID: id, userID: run.userID, secrets: input.secrets, directory: directory, jobs: jobs,
            snapshots: snapshots,
            onJob: { job in run.state.withLock { $0.job = job } },
            onFileChanged: { [self] path, diff in
                await self.emit(id, "file.changed", ["path": .string(path), "diff": .string(diff)])
            },
            onFinding: { [store] (path: String, line: Int, claim: String, evidence: String) in
                let seq = findingCounter.withLock {
                    $0 += 1
                    return $0
                }
                try await store.insertFinding(
                    runID: id, seq: seq, path: path, line: line, claim: claim, evidence: evidence)
            }, notebooks: notebooks.withLock { $0 }, browser: browser.withLock { $0 },
            onEvent: { [self] type, data in await self.emit(id, type, data) })
        func record(_ m: ChatMessage) async {
            msgSeq += 1
            let seq = msgSeq
            let now = clock.now()
            let calls =
                m.toolCalls.isEmpty
                ? nil : String(decoding: (try? JSONEncoder().encode(m.toolCalls)) ?? Data(), as: UTF8.self)
            try? await store.insertMessage(runID: id, seq: seq, m, toolCalls: calls, at: now)
        }
        do {
            var final: String? = nil
            while steps < input.maxSteps {
                try Task.checkCancellation()
                steps += 1
                let request = ModelRequest(
                    model: input.model, system: AgentEngine.systemPrompt(project, input.instructions),
                    messages: messages,
                    tools: ToolRegistry.all.map(\.descriptor) + input.external.map(Self.modelFacing),
                    temperature: input.temperature, maxTokens: 4096)
                let turn = try await provider.turn(request) { [self] text in
                    await self.emit(id, "message.delta", ["text": .string(text)])
                }
                try Task.checkCancellation()
                inTokens += turn.inputTokens
                outTokens += turn.outputTokens
                let (i, o, s) = (inTokens, outTokens, steps)
                try? await store.setUsage(id, input: i, output: o, steps: s)
                await emit(id, "usage", ["input_tokens": .int(inTokens), "output_tokens": .int(outTokens)])
                let usage = RunUsage(
                    runID: id, wsID: project.wsID, userID: run.userID, model: input.model, inputTokens: inTokens,
                    outputTokens: outTokens, steps: steps)
                for observer in observers {
                    if let reason = try await observer.runUsage(usage) { throw RunStop(reason: reason) }
                }
                let assistant = ChatMessage(role: "assistant", content: turn.text, toolCalls: turn.toolCalls)
                messages.append(assistant)
                await record(assistant)
                var msg: [String: JSONValue] = ["role": "assistant", "content": .string(turn.text)]
                if !turn.toolCalls.isEmpty {
                    msg["tool_calls"] = .array(turn.toolCalls.map { ["id": .string($0.id), "name": .string($0.name)] })
                }
                await emit(id, "message", .object(msg))
                if turn.toolCalls.isEmpty {
                    final = turn.text
                    break
                }
                for modelCall in turn.toolCalls {
                    try Task.checkCancellation()
                    // A registry tool is shown and recorded by its namespaced name.
                    var call = modelCall
                    let externalName = Self.externalName(call.name, in: input.external)
                    if let externalName { call.name = externalName }
                    let parsed = try? JSONDecoder().decode(JSONValue.self, from: Data(call.arguments.utf8))
                    await emit(
                        id, "tool.call",
                        [
                            "call_id": .string(call.id), "tool": .string(call.name),
                            "args": parsed ?? .string(call.arguments),
                        ])
                    var ok = true
                    var output: String
                    if ToolRegistry.named(call.name) != nil,
                        let refusal = try await policyRefusal(run, project: project, call: call, parsed)
                    {
                        ok = false
                        output = refusal
                    } else if let tool = ToolRegistry.named(call.name) {
                        do {
                            guard let parsed else {
                                throw ToolFailure(
                                    "arguments are not valid JSON; send a JSON object matching the tool's schema")
                            }
                            output = try await tool.run(ctx, try ToolRegistry.validate(parsed, tool.schema))
                        } catch let e as ToolFailure {
                            ok = false
                            output = "error: " + e.description
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch {
                            ok = false
                            output = "error: " + String(describing: error).prefix(500)
                        }
                    } else if let externalName {
                        if let refusal = try await policyRefusal(
                            run, project: project, call: call, parsed, action: "mcp." + externalName)
                        {
                            ok = false
                            output = refusal
                        } else if let tools = external.withLock({ $0 }) {
                            let o = await tools.call(
                                wsID: project.wsID, name: externalName, arguments: parsed ?? .object([:]),
                                userID: run.userID)
                            ok = o.ok
                            output = o.text
                        } else {
                            ok = false
                            output = "error: registry tools are not available"
                        }
                    } else {
                        ok = false
                        output =
                            "error: no tool named '\(call.name.prefix(100))'; the tools are "
                            + (ToolRegistry.all.map(\.name) + input.external.map(\.name)).joined(separator: ", ")
                    }
                    if run.state.withLock({ $0.cancelled }) { throw CancellationError() }
                    // A secret's value never reaches the transcript, the events or the model.
                    output = redactor.redact(output)
                    callSeq += 1
                    let (seq, okFlag, out) = (callSeq, ok, output)
                    try? await store.insertToolCall(
                        runID: id, callID: call.id, seq: seq, tool: call.name, args: call.arguments, ok: okFlag,
                        output: out)
                    let shown =
                        output.utf8.count > AgentEngine.eventOutputLimit
                        ? String(output.utf8.prefix(AgentEngine.eventOutputLimit)).map { $0 + "… (truncated)" } ?? ""
                        : output
                    await emit(
                        id, "tool.result", ["call_id": .string(call.id), "ok": .bool(ok), "output": .string(shown)])
                    let result = ChatMessage(
                        role: "tool", content: output, toolCallId: call.id, toolName: modelCall.name)
                    messages.append(result)
                    await record(result)
                }
            }
            if let final {
                outcome = (
                    "run.completed", ["summary": .string(final), "steps": .int(steps)], "completed", final, nil, nil
                )
            } else {
                let s = "Stopped after max_steps (\(input.maxSteps)) model turns."
                outcome = (
                    "run.completed", ["summary": .string(s), "steps": .int(steps), "stop_reason": "max_steps"],
                    "completed", s, nil, "max_steps"
                )
            }
        } catch is CancellationError {
            outcome = ("run.cancelled", ["run_id": .string(id)], "cancelled", nil, nil, nil)
        } catch let stop as RunStop {
            let msg = stop.reason == "budget_exceeded" ? "The workspace's budget cap was reached" : stop.reason
            outcome = (
                "run.failed", ["error": .string(msg), "reason": .string(stop.reason)], "failed", nil, msg, stop.reason
            )
        } catch {
            let msg = (error as? ProviderError)?.description ?? String(describing: error).prefix(500).description
            outcome = (
                "run.failed", ["error": .string(msg), "reason": "provider_error"], "failed", nil, msg, "provider_error"
            )
        }
        if run.state.withLock({ $0.cancelled }) && outcome.type != "run.cancelled" {
            outcome = ("run.cancelled", ["run_id": .string(id)], "cancelled", nil, nil, nil)
        }
        await finish(
            run, project: project, input: input, started: started,
            outcome: (outcome.status, outcome.summary, outcome.error, outcome.reason),
            tokens: (inTokens, outTokens, steps))
        await emit(id, outcome.type, outcome.data)
        live.withLock { $0[id] = nil }
    }

    struct RunStop: Error { let reason: String }

    func finish(
        _ run: LiveRun, project: ProjectRef, input: RunInput, started: Date,
        outcome: (String, String?, String?, String?), tokens: (Int, Int, Int)
    ) async {
        let id = run.id
        let now = clock.now()
        // Record each changed file's content hash after the run (rollback's conflict check, receipts).
        let snaps = (try? await store.snapshots(id)) ?? []
        var files: [RunRecord.FileChange] = []
        for r in snaps {
            let path = r.string("path") ?? ""
            let after = FileManager.default.contents(atPath: project.root + "/" + path).map {
                Crypto.hex(Crypto.sha256(Array($0)))
            }
            files.append(.init(path: path, before: r.string("sha_before"), after: after))
            try? await store.setSnapshotAfter(runID: id, path: path, sha: after)
        }
        let (status, summary, error, reason) = outcome
        try? await store.finishRun(
            id, status: status, summary: summary, error: error, reason: reason, tokens: (tokens.0, tokens.1), at: now)
        if !files.isEmpty { try? await directory.reindex(project) }
        let calls = ((try? await store.toolCalls(id)) ?? []).map { r in
            RunRecord.Call(
                callID: r.string("call_id") ?? "", tool: r.string("tool") ?? "",
                argsSHA256: Crypto.hex(Crypto.sha256(Array((r.string("args") ?? "").utf8))), ok: r.bool("ok") ?? false)
        }
        let findings = ((try? await store.findings(id)) ?? []).map { r in
            RunRecord.Finding(
                path: r.string("path") ?? "", line: r.int("line") ?? 0, claim: r.string("claim") ?? "",
                evidenceSHA256: Crypto.hex(Crypto.sha256(Array((r.string("evidence") ?? "").utf8))),
                evidence: r.string("evidence") ?? "")
        }
        let record = RunRecord(
            runID: id, wsID: project.wsID, projectID: project.id, userID: run.userID, model: input.model,
            prompt: input.prompt,
            status: status, startedAt: started, endedAt: now, inputTokens: tokens.0, outputTokens: tokens.1,
            steps: tokens.2, calls: calls, files: files.sorted { $0.path < $1.path }, findings: findings,
            approvals: run.state.withLock { $0.approvals })
        for o in observers { await o.runEnded(record) }
    }

    /// Restores every file the run changed; 409 listing the files changed since, unless `force`.
    func rollback(runID: String, project: ProjectRef, force: Bool) async throws -> [String] {
        guard !isLive(runID) else { throw APIError.conflict("The run is still going; cancel it first") }
        let snaps = try await store.snapshots(runID)
        var conflicts: [String] = []
        for r in snaps {
            let path = r.string("path") ?? ""
            let current = (try? SafePath.readBeneath(root: project.root, relative: path, max: 1 << 30))?.map {
                Crypto.hex(Crypto.sha256($0))
            }
            if current != r.string("sha_after") { conflicts.append(path) }
        }
        if !conflicts.isEmpty && !force {
            throw HTTPError(
                .conflict,
                message: "\(conflicts.count) file(s) changed after the run; send force: true to overwrite them",
                details: ["paths": .array(conflicts.map { .string($0) })])
        }
        var restored: [String] = []
        for r in snaps {
            let path = r.string("path") ?? ""
            // Beneath the project through no symlink: a folder the project's own code swapped for a
            // link since the run cannot lead the restore out.
            do {
                if r.bool("existed") == true, let file = r.string("file"),
                    let bytes = snapshots.read(runID: runID, file: file)
                {
                    try SafePath.writeBeneath(root: project.root, relative: path, bytes: bytes, createFolders: true)
                } else {
                    try SafePath.removeBeneath(root: project.root, relative: path)
                }
            } catch let e as HTTPError {
                throw APIError.conflict("Could not restore \(path): \(e.message)")
            }
            restored.append(path)
        }
        let now = clock.now()
        try await store.markRolledBack(runID, at: now)
        if !restored.isEmpty { try? await directory.reindex(project) }
        return restored
    }
}
