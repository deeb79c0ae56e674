import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnProjects
import KilnShell
import KilnStore
import Synchronization

enum AgentMigrations {
    static let all = [
        Migration(module: "agents", version: 1, name: "runs, transcripts, tool calls, snapshots, findings, prefs", sql: """
            CREATE TABLE agent_runs (
                id TEXT PRIMARY KEY,
                ws_id TEXT NOT NULL,
                project_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                prompt TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                status TEXT NOT NULL,
                max_steps INTEGER NOT NULL,
                steps INTEGER NOT NULL DEFAULT 0,
                input_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                summary TEXT,
                error TEXT,
                reason TEXT,
                started_at INTEGER NOT NULL,
                ended_at INTEGER,
                rolled_back_at INTEGER
            );
            CREATE INDEX agent_runs_by_ws ON agent_runs (ws_id, started_at);
            CREATE INDEX agent_runs_by_user ON agent_runs (user_id, started_at);
            CREATE TABLE agent_messages (
                run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL,
                content TEXT NOT NULL,
                tool_calls TEXT,
                tool_call_id TEXT,
                created_at INTEGER NOT NULL,
                PRIMARY KEY (run_id, seq)
            );
            CREATE TABLE agent_tool_calls (
                run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                call_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                tool TEXT NOT NULL,
                args TEXT NOT NULL,
                ok INTEGER NOT NULL,
                output TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            );
            CREATE TABLE agent_snapshots (
                run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                path TEXT NOT NULL,
                existed INTEGER NOT NULL,
                file TEXT,
                sha_before TEXT,
                sha_after TEXT,
                PRIMARY KEY (run_id, path)
            );
            CREATE TABLE agent_findings (
                run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                path TEXT NOT NULL,
                line INTEGER NOT NULL,
                claim TEXT NOT NULL,
                evidence TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            );
            CREATE TABLE agent_prefs (
                scope TEXT NOT NULL,
                scope_id TEXT NOT NULL,
                prefs TEXT NOT NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (scope, scope_id)
            );
            """),
    ]
}

/// Prior contents of files a run changed, under `<data-dir>/snapshots/<run_id>/`.
struct Snapshots: Sendable {
    let db: Database
    let dir: String

    /// Saves the prior content (nil: the file did not exist) the first time a run changes `path`.
    func save(runID: String, path: String, prior: [UInt8]?) async throws {
        let exists = try await db.read { tx in try tx.first("SELECT 1 AS x FROM agent_snapshots WHERE run_id = ? AND path = ?", runID, path) != nil }
        if exists { return }
        var file: String? = nil
        if let prior {
            let runDir = dir + "/" + runID
            try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let name = IDs.randomBase62(16)
            guard FileManager.default.createFile(atPath: runDir + "/" + name, contents: Data(prior), attributes: [.posixPermissions: 0o600]) else {
                throw ToolFailure("cannot write the snapshot of \(path)")
            }
            file = name
        }
        let sha = prior.map { Crypto.hex(Crypto.sha256($0)) }
        let stored = file
        _ = try await db.write { tx in
            try tx.run("INSERT OR IGNORE INTO agent_snapshots (run_id, path, existed, file, sha_before) VALUES (?, ?, ?, ?, ?)",
                       runID, path, prior != nil, stored, sha)
        }
    }

    func read(runID: String, file: String) -> [UInt8]? { FileManager.default.contents(atPath: dir + "/" + runID + "/" + file).map(Array.init) }
}

/// What the budget and receipts domains learn about runs.
public struct RunUsage: Sendable {
    public let runID: String
    public let wsID: String
    public let userID: String
    public let model: String
    public let inputTokens: Int
    public let outputTokens: Int
    public let steps: Int

    public init(runID: String, wsID: String, userID: String, model: String, inputTokens: Int, outputTokens: Int, steps: Int) {
        self.runID = runID; self.wsID = wsID; self.userID = userID; self.model = model
        self.inputTokens = inputTokens; self.outputTokens = outputTokens; self.steps = steps
    }
}

/// A finished run, as receipts record it.
public struct RunRecord: Sendable {
    public struct Call: Sendable { public let callID: String; public let tool: String; public let argsSHA256: String; public let ok: Bool }
    public struct FileChange: Sendable { public let path: String; public let before: String?; public let after: String? }
    public struct Finding: Sendable {
        public let path: String; public let line: Int; public let claim: String; public let evidenceSHA256: String
        /// The evidence itself (kept beside the receipt for re-checking, not in the signed body).
        public let evidence: String
    }
    public let runID: String
    public let wsID: String
    public let projectID: String
    public let userID: String
    public let model: String
    public let prompt: String
    public let status: String
    public let startedAt: Date
    public let endedAt: Date
    public let inputTokens: Int
    public let outputTokens: Int
    public let steps: Int
    public let calls: [Call]
    public let files: [FileChange]
    public let findings: [Finding]
}

/// Extension points for the budget and receipts domains (one instance per server).
public final class AgentHooks: Sendable {
    public typealias BeforeStart = @Sendable (_ wsID: String, _ userID: String, _ model: String) async throws -> Void
    /// Returns a reason to stop the run (`budget_exceeded`), or nil.
    public typealias OnUsage = @Sendable (RunUsage) async throws -> String?
    public typealias OnEnd = @Sendable (RunRecord) async -> Void
    struct State { var before: [BeforeStart] = []; var usage: [OnUsage] = []; var end: [OnEnd] = [] }
    let state = Mutex(State())
    private static let instances = Mutex<[ObjectIdentifier: AgentHooks]>([:])

    public static func shared(_ services: Services) -> AgentHooks {
        instances.withLock { m in
            if let h = m[ObjectIdentifier(services.db)] { return h }
            let h = AgentHooks(); m[ObjectIdentifier(services.db)] = h; return h
        }
    }
    public func beforeStart(_ f: @escaping BeforeStart) { state.withLock { $0.before.append(f) } }
    public func onUsage(_ f: @escaping OnUsage) { state.withLock { $0.usage.append(f) } }
    public func onEnd(_ f: @escaping OnEnd) { state.withLock { $0.end.append(f) } }
    var before: [BeforeStart] { state.withLock { $0.before } }
    var usage: [OnUsage] { state.withLock { $0.usage } }
    var end: [OnEnd] { state.withLock { $0.end } }
}

/// Runs in flight in this process.
final class LiveRun: Sendable {
    struct State { var cancelled = false; var job: String?; var task: Task<Void, Never>? }
    let id: String
    let userID: String
    let state = Mutex(State())
    init(id: String, userID: String) { self.id = id; self.userID = userID }
}

public struct RunInput: Sendable {
    public var prompt: String
    public var model: String
    public var maxSteps: Int
    public var temperature: Double?
    public var instructions: String?
}

/// The agent loop: model turn, tool calls, results, repeat; every step an event on `run:<id>`.
final class AgentEngine: Sendable {
    static let terminal: Set<String> = ["run.completed", "run.failed", "run.cancelled"]
    static let eventOutputLimit = 4096

    let db: Database
    let bus: EventBus
    let clock: any Clock
    let jobs: ShellJobs
    let directory: ProjectDirectory
    let snapshots: Snapshots
    let hooks: AgentHooks
    let live = Mutex<[String: LiveRun]>([:])

    init(services: Services) {
        db = services.db; bus = services.bus; clock = services.clock
        jobs = ShellJobs.shared(services)
        directory = ProjectDirectory(services: services)
        snapshots = Snapshots(db: services.db, dir: services.dataDir + "/snapshots")
        hooks = AgentHooks.shared(services)
    }

    static func topic(_ runID: String) -> String { "run:\(runID)" }

    func emit(_ runID: String, _ type: String, _ data: JSONValue) async {
        _ = try? await bus.publish(topic: AgentEngine.topic(runID), type: type, data: data.jsonText)
    }

    /// Starts a run; returns once `run.started` is stored.
    func start(project: ProjectRef, userID: String, provider: any ModelProvider, input: RunInput) async throws -> String {
        for f in hooks.before { try await f(project.wsID, userID, input.model) }
        let id = IDs.make("run")
        let now = clock.now()
        _ = try await db.write { tx in
            try tx.run("""
                INSERT INTO agent_runs (id, ws_id, project_id, user_id, prompt, model, provider, status, max_steps, started_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)
                """, id, project.wsID, project.id, userID, input.prompt, input.model, provider.kind, input.maxSteps, now)
            try tx.run("INSERT INTO agent_messages (run_id, seq, role, content, created_at) VALUES (?, 1, 'user', ?, ?)", id, input.prompt, now)
        }
        let run = LiveRun(id: id, userID: userID)
        live.withLock { $0[id] = run }
        await emit(id, "run.started", ["run_id": .string(id), "project_id": .string(project.id), "model": .string(input.model),
                                       "max_steps": .int(input.maxSteps)])
        let task = Task { await self.loop(run, project: project, provider: provider, input: input, started: now) }
        run.state.withLock { $0.task = task }
        return id
    }

    /// Stops a run: its model call and tool are interrupted and its shell job killed.
    func cancel(_ runID: String) -> Bool {
        guard let run = live.withLock({ $0[runID] }) else { return false }
        let (task, job) = run.state.withLock { s -> (Task<Void, Never>?, String?) in s.cancelled = true; return (s.task, s.job) }
        if let job { jobs.cancel(job, grace: 0) }
        task?.cancel()
        return true
    }

    func isLive(_ runID: String) -> Bool { live.withLock { $0[runID] != nil } }

    func latestLive(userID: String) -> String? {
        live.withLock { Array($0.values) }.filter { $0.userID == userID }.map(\.id).sorted().last
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
        var inTokens = 0, outTokens = 0, steps = 0
        var msgSeq = 1, callSeq = 0
        let findingCounter = Mutex(0)
        var outcome: (type: String, data: JSONValue, status: String, summary: String?, error: String?, reason: String?)
        let ctx = ToolContext(project: project, runID: id, userID: run.userID, directory: directory, jobs: jobs, db: db, snapshots: snapshots,
                              onJob: { job in run.state.withLock { $0.job = job } },
                              onFileChanged: { [self] path, diff in await self.emit(id, "file.changed", ["path": .string(path), "diff": .string(diff)]) },
                              onFinding: { [db] (path: String, line: Int, claim: String, evidence: String) in
                                  let seq = findingCounter.withLock { $0 += 1; return $0 }
                                  _ = try await db.write { tx in
                                      try tx.run("INSERT INTO agent_findings (run_id, seq, path, line, claim, evidence) VALUES (?, ?, ?, ?, ?, ?)", id, seq, path, line, claim, evidence)
                                  }
                              })
        func store(_ m: ChatMessage) async {
            msgSeq += 1
            let seq = msgSeq, now = clock.now()
            let calls = m.toolCalls.isEmpty ? nil : String(decoding: (try? JSONEncoder().encode(m.toolCalls)) ?? Data(), as: UTF8.self)
            _ = try? await db.write { tx in
                try tx.run("INSERT INTO agent_messages (run_id, seq, role, content, tool_calls, tool_call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           id, seq, m.role, m.content, calls, m.toolCallId, now)
            }
        }
        do {
            var final: String? = nil
            while steps < input.maxSteps {
                try Task.checkCancellation()
                steps += 1
                let request = ModelRequest(model: input.model, system: AgentEngine.systemPrompt(project, input.instructions), messages: messages,
                                           tools: ToolRegistry.all.map(\.spec), temperature: input.temperature, maxTokens: 4096)
                let turn = try await provider.turn(request) { [self] text in await self.emit(id, "message.delta", ["text": .string(text)]) }
                try Task.checkCancellation()
                inTokens += turn.inputTokens; outTokens += turn.outputTokens
                let (i, o, s) = (inTokens, outTokens, steps)
                _ = try? await db.write { tx in try tx.run("UPDATE agent_runs SET input_tokens = ?, output_tokens = ?, steps = ? WHERE id = ?", i, o, s, id) }
                await emit(id, "usage", ["input_tokens": .int(inTokens), "output_tokens": .int(outTokens)])
                let usage = RunUsage(runID: id, wsID: project.wsID, userID: run.userID, model: input.model, inputTokens: inTokens, outputTokens: outTokens, steps: steps)
                for f in hooks.usage {
                    if let reason = try await f(usage) { throw RunStop(reason: reason) }
                }
                let assistant = ChatMessage(role: "assistant", content: turn.text, toolCalls: turn.toolCalls)
                messages.append(assistant)
                await store(assistant)
                var msg: [String: JSONValue] = ["role": "assistant", "content": .string(turn.text)]
                if !turn.toolCalls.isEmpty {
                    msg["tool_calls"] = .array(turn.toolCalls.map { ["id": .string($0.id), "name": .string($0.name)] })
                }
                await emit(id, "message", .object(msg))
                if turn.toolCalls.isEmpty { final = turn.text; break }
                for call in turn.toolCalls {
                    try Task.checkCancellation()
                    let parsed = try? JSONDecoder().decode(JSONValue.self, from: Data(call.arguments.utf8))
                    await emit(id, "tool.call", ["call_id": .string(call.id), "tool": .string(call.name), "args": parsed ?? .string(call.arguments)])
                    var ok = true
                    var output: String
                    if let tool = ToolRegistry.named(call.name) {
                        do {
                            guard let parsed else { throw ToolFailure("arguments are not valid JSON; send a JSON object matching the tool's schema") }
                            output = try await tool.run(ctx, try ToolRegistry.validate(parsed, tool.schema))
                        } catch let e as ToolFailure {
                            ok = false; output = "error: " + e.description
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch {
                            ok = false; output = "error: " + String(describing: error).prefix(500)
                        }
                    } else {
                        ok = false; output = "error: no tool named '\(call.name.prefix(100))'; the tools are " + ToolRegistry.all.map(\.name).joined(separator: ", ")
                    }
                    if run.state.withLock({ $0.cancelled }) { throw CancellationError() }
                    callSeq += 1
                    let (seq, okFlag, out) = (callSeq, ok, output)
                    _ = try? await db.write { tx in
                        try tx.run("INSERT INTO agent_tool_calls (run_id, call_id, seq, tool, args, ok, output) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   id, call.id, seq, call.name, call.arguments, okFlag, out)
                    }
                    let shown = output.utf8.count > AgentEngine.eventOutputLimit ? String(output.utf8.prefix(AgentEngine.eventOutputLimit)).map { $0 + "… (truncated)" } ?? "" : output
                    await emit(id, "tool.result", ["call_id": .string(call.id), "ok": .bool(ok), "output": .string(shown)])
                    let result = ChatMessage(role: "tool", content: output, toolCallId: call.id, toolName: call.name)
                    messages.append(result)
                    await store(result)
                }
            }
            if let final {
                outcome = ("run.completed", ["summary": .string(final), "steps": .int(steps)], "completed", final, nil, nil)
            } else {
                let s = "Stopped after max_steps (\(input.maxSteps)) model turns."
                outcome = ("run.completed", ["summary": .string(s), "steps": .int(steps), "stop_reason": "max_steps"], "completed", s, nil, "max_steps")
            }
        } catch is CancellationError {
            outcome = ("run.cancelled", ["run_id": .string(id)], "cancelled", nil, nil, nil)
        } catch let stop as RunStop {
            let msg = stop.reason == "budget_exceeded" ? "The workspace's budget cap was reached" : stop.reason
            outcome = ("run.failed", ["error": .string(msg), "reason": .string(stop.reason)], "failed", nil, msg, stop.reason)
        } catch {
            let msg = (error as? ProviderError)?.description ?? String(describing: error).prefix(500).description
            outcome = ("run.failed", ["error": .string(msg), "reason": "provider_error"], "failed", nil, msg, "provider_error")
        }
        if run.state.withLock({ $0.cancelled }) && outcome.type != "run.cancelled" {
            outcome = ("run.cancelled", ["run_id": .string(id)], "cancelled", nil, nil, nil)
        }
        await finish(run, project: project, input: input, started: started, outcome: (outcome.status, outcome.summary, outcome.error, outcome.reason),
                     tokens: (inTokens, outTokens, steps))
        await emit(id, outcome.type, outcome.data)
        live.withLock { $0[id] = nil }
    }

    struct RunStop: Error { let reason: String }

    func finish(_ run: LiveRun, project: ProjectRef, input: RunInput, started: Date, outcome: (String, String?, String?, String?), tokens: (Int, Int, Int)) async {
        let id = run.id
        let now = clock.now()
        // Record each changed file's content hash after the run (rollback's conflict check, receipts).
        let snaps = (try? await db.read { tx in try tx.query("SELECT path, sha_before FROM agent_snapshots WHERE run_id = ?", id) }) ?? []
        var files: [RunRecord.FileChange] = []
        for r in snaps {
            let path = r.string("path") ?? ""
            let after = FileManager.default.contents(atPath: project.root + "/" + path).map { Crypto.hex(Crypto.sha256(Array($0))) }
            files.append(.init(path: path, before: r.string("sha_before"), after: after))
            _ = try? await db.write { tx in try tx.run("UPDATE agent_snapshots SET sha_after = ? WHERE run_id = ? AND path = ?", after, id, path) }
        }
        let (status, summary, error, reason) = outcome
        _ = try? await db.write { tx in
            try tx.run("UPDATE agent_runs SET status = ?, summary = ?, error = ?, reason = ?, ended_at = ?, input_tokens = ?, output_tokens = ? WHERE id = ?",
                       status, summary, error, reason, now, tokens.0, tokens.1, id)
        }
        if !files.isEmpty { try? await directory.reindex(project) }
        let calls = ((try? await db.read { tx in try tx.query("SELECT call_id, tool, args, ok FROM agent_tool_calls WHERE run_id = ? ORDER BY seq", id) }) ?? []).map { r in
            RunRecord.Call(callID: r.string("call_id") ?? "", tool: r.string("tool") ?? "", argsSHA256: Crypto.hex(Crypto.sha256(Array((r.string("args") ?? "").utf8))), ok: r.bool("ok") ?? false)
        }
        let findings = ((try? await db.read { tx in try tx.query("SELECT path, line, claim, evidence FROM agent_findings WHERE run_id = ? ORDER BY seq", id) }) ?? []).map { r in
            RunRecord.Finding(path: r.string("path") ?? "", line: r.int("line") ?? 0, claim: r.string("claim") ?? "",
                              evidenceSHA256: Crypto.hex(Crypto.sha256(Array((r.string("evidence") ?? "").utf8))), evidence: r.string("evidence") ?? "")
        }
        let record = RunRecord(runID: id, wsID: project.wsID, projectID: project.id, userID: run.userID, model: input.model, prompt: input.prompt,
                               status: status, startedAt: started, endedAt: now, inputTokens: tokens.0, outputTokens: tokens.1,
                               steps: tokens.2, calls: calls, files: files.sorted { $0.path < $1.path }, findings: findings)
        for f in hooks.end { await f(record) }
    }

    /// Restores every file the run changed; 409 listing the files changed since, unless `force`.
    func rollback(runID: String, project: ProjectRef, force: Bool) async throws -> [String] {
        guard !isLive(runID) else { throw APIError.conflict("The run is still going; cancel it first") }
        let snaps = try await db.read { tx in try tx.query("SELECT path, existed, file, sha_after FROM agent_snapshots WHERE run_id = ? ORDER BY path", runID) }
        var conflicts: [String] = []
        for r in snaps {
            let path = r.string("path") ?? ""
            let current = FileManager.default.contents(atPath: project.root + "/" + path).map { Crypto.hex(Crypto.sha256(Array($0))) }
            if current != r.string("sha_after") { conflicts.append(path) }
        }
        if !conflicts.isEmpty && !force {
            throw HTTPError(.conflict, message: "\(conflicts.count) file(s) changed after the run; send force: true to overwrite them",
                            details: ["paths": .array(conflicts.map { .string($0) })])
        }
        var restored: [String] = []
        for r in snaps {
            let path = r.string("path") ?? ""
            let abs: String
            do { abs = try SafePath.resolveForCreate(root: project.root, relative: path) } catch { continue }
            if r.bool("existed") == true, let file = r.string("file"), let bytes = snapshots.read(runID: runID, file: file) {
                let tmp = abs + ".kiln-tmp-" + IDs.randomBase62(8)
                guard FileManager.default.createFile(atPath: tmp, contents: Data(bytes)), rename(tmp, abs) == 0 else {
                    unlink(tmp); throw APIError.conflict("Could not restore \(path)")
                }
            } else {
                unlink(abs)
            }
            restored.append(path)
        }
        let now = clock.now()
        _ = try await db.write { tx in try tx.run("UPDATE agent_runs SET rolled_back_at = ? WHERE id = ?", now, runID) }
        if !restored.isEmpty { try? await directory.reindex(project) }
        return restored
    }
}
