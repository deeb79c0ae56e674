import Foundation
import KilnCore
import KilnHTTP
import KilnProjects
import KilnShell
import KilnStore

/// Agent runs: a tool-using model loop over a project, streamed, followable, cancellable, reversible.
public struct AgentsModule: KilnModule {
    public let name = "agents"
    public init() {}
    public var migrations: [Migration] { AgentMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("agent:run", "Start, cancel and roll back agent runs; ask for shell command suggestions", minimumRole: .member),
            PermissionGrant("agent:read", "Follow agent runs and read their history and transcripts", minimumRole: .viewer),
            PermissionGrant("agent:prefs", "Read and set your agent preferences (admins: the workspace default)", minimumRole: .viewer),
        ]
    }

    static let small = 64 * 1024

    public func register(_ routes: Routes, _ services: Services) {
        let engine = AgentEngine(services: services)
        let projects = ProjectDirectory(services: services)
        let db = services.db
        let bus = services.bus
        let server = ProviderSettings.from(services.config)
        services.hooks.workspaceOf(param: "run_id") { id in
            guard IDs.isValid(id, prefix: "run") else { return nil }
            return try await db.read { tx in try tx.first("SELECT ws_id FROM agent_runs WHERE id = ?", id)?.string("ws_id") }
        }
        // Runs that were going when the server stopped end as failed, so followers' streams end.
        services.jobs.run("agents-recover") {
            let stale = try await db.read { tx in try tx.query("SELECT id FROM agent_runs WHERE status = 'running'") }.compactMap { $0.string("id") }
            for id in stale where !engine.isLive(id) {
                let now = services.clock.now()
                _ = try await db.write { tx in try tx.run("UPDATE agent_runs SET status = 'failed', error = 'the server restarted', reason = 'server_restart', ended_at = ? WHERE id = ?", now, id) }
                try await bus.publish(topic: AgentEngine.topic(id), type: "run.failed", data: #"{"error":"the server restarted during the run","reason":"server_restart"}"#)
            }
        }

        let str: JSONValue = ["type": "string"]
        let int: JSONValue = ["type": "integer"]
        let unavailable = "No model provider is configured. Start kiln with --llm-base-url (an OpenAI-compatible /v1 URL or https://api.anthropic.com), --llm-model and KILN_LLM_API_KEY; scripts/local-model.sh serves a small local model"

        @Sendable func prefs(userID: String, wsID: String) async throws -> AgentPrefs {
            let rows = try await db.read { tx in
                try tx.query("SELECT scope, prefs FROM agent_prefs WHERE (scope = 'workspace' AND scope_id = ?) OR (scope = 'user' AND scope_id = ?)", wsID, userID)
            }
            var p = AgentPrefs()
            for scope in ["workspace", "user"] {
                if let r = rows.first(where: { $0.string("scope") == scope }), let text = r.string("prefs"),
                   let stored = try? JSONCoding.makeDecoder().decode(AgentPrefs.self, from: Data(text.utf8)) { p = p.overlaid(by: stored) }
            }
            return p
        }

        @Sendable func provider(_ p: AgentPrefs) throws -> (any ModelProvider, String) {
            guard var s = server else { throw APIError.unavailable(unavailable) }
            if let kind = p.provider { s.kind = kind }
            return (s.provider(), p.model ?? s.model)
        }

        routes.add(.POST, "/api/agent/run", permission: "agent:run",
                   summary: "Start an agent run; SSE: run.started, message.delta, message, tool.call, tool.result, file.changed, usage, then run.completed / run.failed / run.cancelled. Accept: application/json returns {run_id} at once",
                   tags: ["agents"],
                   requestBody: ["type": "object", "required": ["prompt"], "properties": ["project_id": str, "prompt": str, "model": str, "max_steps": int]],
                   responseBody: ["type": "object", "properties": ["run_id": str]], responseContentType: "text/event-stream", bodyLimit: AgentsModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            struct Input: Decodable { let projectId: String?; let prompt: String; let model: String?; let maxSteps: Int? }
            let input = try await req.decode(Input.self, limit: AgentsModule.small)
            guard !input.prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, input.prompt.utf8.count <= 32 * 1024 else {
                throw APIError.validation("prompt must be 1 byte to 32 KiB", field: "prompt")
            }
            if let m = input.maxSteps, !(1...100).contains(m) { throw APIError.validation("max_steps must be from 1 to 100", field: "max_steps") }
            if let m = input.model, m.isEmpty || m.utf8.count > 200 { throw APIError.validation("model must be 1 to 200 characters", field: "model") }
            let project = try await projects.resolve(input.projectId, access: access, userID: uid)
            let p = try await prefs(userID: uid, wsID: access.wsID)
            let (prov, model) = try provider(p)
            let runID = try await engine.start(project: project, userID: uid, provider: prov,
                                               input: RunInput(prompt: input.prompt, model: input.model ?? model, maxSteps: input.maxSteps ?? p.maxSteps ?? 20,
                                                               temperature: p.temperature, instructions: p.systemInstructions))
            if req.prefersJSON {
                return .json(JSONValue.object(["run_id": .string(runID), "status": "running",
                                                          "follow_url": .string("/api/agent/follow?run_id=\(runID)")]), status: .accepted)
            }
            return try bus.sse(topic: AgentEngine.topic(runID), request: req, endTypes: AgentEngine.terminal)
        }

        routes.add(.GET, "/api/agent/follow", permission: "agent:read",
                   summary: "Reattach to a run: every event after cursor (or Last-Event-ID), then live ones until it ends (default: your latest running run)",
                   tags: ["agents"], query: [("run_id", "the run (default: your latest in-flight run)", false), ("cursor", "resume after this event id (default 0)", false)],
                   responseContentType: "text/event-stream") { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            var runID = req.query["run_id"] ?? ""
            if runID.isEmpty {
                guard let latest = engine.latestLive(userID: uid) else { throw APIError.notFound("You have no run in flight; pass run_id") }
                runID = latest
            }
            let rid = runID
            guard IDs.isValid(rid, prefix: "run"),
                  try await db.read({ tx in try tx.first("SELECT ws_id FROM agent_runs WHERE id = ?", rid)?.string("ws_id") }) == access.wsID else {
                throw APIError.notFound("No such run")
            }
            return try bus.sse(topic: AgentEngine.topic(rid), request: req, endTypes: AgentEngine.terminal)
        }

        routes.add(.POST, "/api/agent/cancel/:run_id", permission: "agent:run",
                   summary: "Cancel a run within a second: its model call stops, its shell jobs are killed, the stream ends with run.cancelled", tags: ["agents"]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let id = try ctx.parameter("run_id")
            guard let r = try await db.read({ tx in try tx.first("SELECT ws_id, status FROM agent_runs WHERE id = ?", id) }), r.string("ws_id") == access.wsID else {
                throw APIError.notFound("No such run")
            }
            guard engine.cancel(id) else {
                throw HTTPError(.conflict, message: "The run is not running (status \(r.string("status") ?? "?"))", details: ["status": .string(r.string("status") ?? "")])
            }
            for _ in 0..<100 where engine.isLive(id) { try await Task.sleep(nanoseconds: 10_000_000) }
            return .json(JSONValue.object(["run_id": .string(id), "status": "cancelled"]))
        }

        routes.add(.POST, "/api/agent/rollback", permission: "agent:run",
                   summary: "Restore every file a run changed (deleting files it created); 409 with the paths changed since, unless force: true",
                   tags: ["agents"], requestBody: ["type": "object", "required": ["run_id"], "properties": ["run_id": str, "force": ["type": "boolean"]]],
                   bodyLimit: AgentsModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let p = try ctx.requirePrincipal()
            struct Input: Decodable { let runId: String; let force: Bool? }
            let input = try await req.decode(Input.self, limit: AgentsModule.small)
            let rid = input.runId
            guard IDs.isValid(rid, prefix: "run"), let r = try await db.read({ tx in try tx.first("SELECT ws_id, project_id FROM agent_runs WHERE id = ?", rid) }),
                  r.string("ws_id") == access.wsID else { throw APIError.notFound("No such run") }
            guard let project = try await projects.lookup(r.string("project_id") ?? "") else { throw APIError.notFound("The run's project is gone") }
            let restored = try await engine.rollback(runID: rid, project: project, force: input.force ?? false)
            let now = services.clock.now()
            _ = try await db.write { tx in
                try AuditLog.append(tx, AuditEvent(action: "agent.rollback", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: access.wsID,
                                                   resourceType: "agent_run", resourceID: rid, ip: req.remoteAddress,
                                                   details: ["paths": .array(restored.map { .string($0) }), "force": .bool(input.force ?? false)]), at: now)
            }
            return .json(JSONValue.object(["run_id": .string(rid), "restored": .array(restored.map { .string($0) })]))
        }

        routes.add(.GET, "/api/agent/history", permission: "agent:read",
                   summary: "Runs with prompt, status, model, steps, tokens, files changed, start/end and who, newest first",
                   tags: ["agents"], query: [("ws_id", "the workspace", false), ("project_id", "only this project's", false),
                                             ("limit", "1 to 200 (default 50)", false), ("cursor", "next_cursor of the previous page", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let page = try PageRequest(query: req.query)
            var sql = "SELECT r.*, (SELECT COUNT(*) FROM agent_snapshots s WHERE s.run_id = r.id) AS files_changed FROM agent_runs r WHERE r.ws_id = ?"
            var args: [any SQLBindable] = [access.wsID]
            if let p = req.query["project_id"], !p.isEmpty { sql += " AND r.project_id = ?"; args.append(p) }
            if let c = try page.timeCursor(timeColumn: "r.started_at", idColumn: "r.id") { sql += c.sql; args += c.args }
            sql += " ORDER BY r.started_at DESC, r.id DESC LIMIT ?"; args.append(page.limit + 1)
            let (q, a) = (sql, args)
            let rows = try await db.read { tx in try tx.query(q, arguments: a) }
            let items = rows.map(runJSON)
            let more = items.count > page.limit
            let kept = Array(items.prefix(page.limit))
            var next: JSONValue = .null
            if more, let last = rows.prefix(page.limit).last {
                next = .string(PageRequest.encodeCursor(PageRequest.timeCursorKey(last.date("started_at") ?? Date(), id: last.string("id") ?? "")))
            }
            return .json(JSONValue.object(["items": .array(kept), "next_cursor": next]))
        }

        routes.add(.GET, "/api/agent/runs/:run_id", permission: "agent:read", summary: "One run with its full transcript, tool calls (whole output) and changed files",
                   tags: ["agents"]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let id = try ctx.parameter("run_id")
            guard let r = try await db.read({ tx in
                try tx.first("SELECT r.*, (SELECT COUNT(*) FROM agent_snapshots s WHERE s.run_id = r.id) AS files_changed FROM agent_runs r WHERE r.id = ?", id)
            }), r.string("ws_id") == access.wsID else { throw APIError.notFound("No such run") }
            let (messages, calls, files, findings) = try await db.read { tx in
                (try tx.query("SELECT * FROM agent_messages WHERE run_id = ? ORDER BY seq", id),
                 try tx.query("SELECT * FROM agent_tool_calls WHERE run_id = ? ORDER BY seq", id),
                 try tx.query("SELECT path, existed, sha_before, sha_after FROM agent_snapshots WHERE run_id = ? ORDER BY path", id),
                 try tx.query("SELECT path, line, claim, evidence FROM agent_findings WHERE run_id = ? ORDER BY seq", id))
            }
            guard case .object(var o) = runJSON(r) else { throw APIError.notFound("No such run") }
            o["transcript"] = .array(messages.map { m in
                var e: [String: JSONValue] = ["role": .string(m.string("role") ?? ""), "content": .string(m.string("content") ?? ""),
                                              "created_at": .string(HTTPDate.iso8601(m.date("created_at") ?? Date()))]
                if let tc = m.string("tool_calls"), let v = try? JSONDecoder().decode(JSONValue.self, from: Data(tc.utf8)) { e["tool_calls"] = v }
                if let c = m.string("tool_call_id") { e["tool_call_id"] = .string(c) }
                return .object(e)
            })
            o["tool_calls"] = .array(calls.map { c in
                .object(["call_id": .string(c.string("call_id") ?? ""), "tool": .string(c.string("tool") ?? ""),
                         "args": (try? JSONDecoder().decode(JSONValue.self, from: Data((c.string("args") ?? "").utf8))) ?? .string(c.string("args") ?? ""),
                         "ok": .bool(c.bool("ok") ?? false), "output": .string(c.string("output") ?? "")])
            })
            o["files"] = .array(files.map { f in
                .object(["path": .string(f.string("path") ?? ""), "created": .bool(f.bool("existed") == false),
                         "sha256_before": f.string("sha_before").map { .string($0) } ?? .null, "sha256_after": f.string("sha_after").map { .string($0) } ?? .null])
            })
            o["findings"] = .array(findings.map { f in
                .object(["path": .string(f.string("path") ?? ""), "line": .int(f.int("line") ?? 0), "claim": .string(f.string("claim") ?? ""),
                         "evidence": .string(f.string("evidence") ?? "")])
            })
            return .json(JSONValue.object(o))
        }

        routes.add(.GET, "/api/agent/prefs", permission: "agent:prefs", summary: "Your agent preferences, the workspace default, and the effective values",
                   tags: ["agents"], query: [("ws_id", "the workspace", false)]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            let rows = try await db.read { tx in
                try tx.query("SELECT scope, prefs FROM agent_prefs WHERE (scope = 'workspace' AND scope_id = ?) OR (scope = 'user' AND scope_id = ?)", access.wsID, uid)
            }
            func stored(_ scope: String) -> JSONValue {
                guard let t = rows.first(where: { $0.string("scope") == scope })?.string("prefs") else { return .object([:]) }
                return (try? JSONDecoder().decode(JSONValue.self, from: Data(t.utf8))) ?? .object([:])
            }
            let eff = try await prefs(userID: uid, wsID: access.wsID)
            let effective: JSONValue = ["provider": .string(eff.provider ?? server?.kind ?? ""), "model": .string(eff.model ?? server?.model ?? ""),
                                        "max_steps": .int(eff.maxSteps ?? 20), "temperature": eff.temperature.map { .double($0) } ?? .null,
                                        "system_instructions": eff.systemInstructions.map { .string($0) } ?? .null,
                                        "configured": .bool(server != nil)]
            return .json(JSONValue.object(["user": stored("user"), "workspace": stored("workspace"), "effective": effective]))
        }

        routes.add(.POST, "/api/agent/prefs", permission: "agent:prefs",
                   summary: "Set your preferences (scope user) or, as a workspace admin, the workspace default (scope workspace): provider, model, max_steps, temperature, system_instructions",
                   tags: ["agents"], requestBody: ["type": "object", "properties": ["ws_id": str, "scope": str, "provider": str, "model": str, "max_steps": int,
                                                                                   "temperature": ["type": "number"], "system_instructions": str]],
                   bodyLimit: AgentsModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            struct Input: Decodable { let scope: String?; let provider: String?; let model: String?; let maxSteps: Int?; let temperature: Double?; let systemInstructions: String? }
            let input = try await req.decode(Input.self, limit: AgentsModule.small)
            let scope = input.scope ?? "user"
            guard ["user", "workspace"].contains(scope) else { throw APIError.validation("scope must be user or workspace", field: "scope") }
            if scope == "workspace" && ![.owner, .admin].contains(access.role) { throw APIError.forbidden("Only workspace owners and admins set the workspace default") }
            if let p = input.provider, !["openai", "anthropic"].contains(p) { throw APIError.validation("provider must be openai or anthropic", field: "provider") }
            if let m = input.model, m.isEmpty || m.utf8.count > 200 { throw APIError.validation("model must be 1 to 200 characters", field: "model") }
            if let m = input.maxSteps, !(1...100).contains(m) { throw APIError.validation("max_steps must be from 1 to 100", field: "max_steps") }
            if let t = input.temperature, !(0...2).contains(t) { throw APIError.validation("temperature must be from 0 to 2", field: "temperature") }
            if let s = input.systemInstructions, s.utf8.count > 8192 { throw APIError.validation("system_instructions must be at most 8 KiB", field: "system_instructions") }
            let value = AgentPrefs(provider: input.provider, model: input.model, maxSteps: input.maxSteps, temperature: input.temperature, systemInstructions: input.systemInstructions)
            let text = String(decoding: try JSONCoding.encode(value), as: UTF8.self)
            let sid = scope == "user" ? uid : access.wsID, now = services.clock.now()
            _ = try await db.write { tx in
                try tx.run("INSERT INTO agent_prefs (scope, scope_id, prefs, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (scope, scope_id) DO UPDATE SET prefs = excluded.prefs, updated_at = excluded.updated_at",
                           scope, sid, text, now)
            }
            return .json(JSONValue.object(["scope": .string(scope), "prefs": (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .null]))
        }

        routes.add(.POST, "/api/shell/suggest", permission: "agent:run",
                   summary: "Suggest a shell command for a task from the configured model, given the project's toolchain ({command, explanation}); never runs it",
                   tags: ["agents", "shell"], requestBody: ["type": "object", "required": ["prompt"], "properties": ["project_id": str, "prompt": str]],
                   bodyLimit: AgentsModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            struct Input: Decodable { let projectId: String?; let prompt: String }
            let input = try await req.decode(Input.self, limit: AgentsModule.small)
            guard !input.prompt.trimmingCharacters(in: .whitespaces).isEmpty, input.prompt.utf8.count <= 8192 else {
                throw APIError.validation("prompt must be 1 byte to 8 KiB", field: "prompt")
            }
            let project = try await projects.resolve(input.projectId, access: access, userID: uid)
            let (prov, model) = try provider(try await prefs(userID: uid, wsID: access.wsID))
            let toolchain = TestRunners.detect(root: project.root).map { "\($0.runner) (tests: \($0.command))" } ?? "unknown"
            let system = """
                You suggest one POSIX shell command for a developer. The project is "\(project.name)"; its toolchain: \(toolchain). \
                Answer with only a JSON object {"command": "...", "explanation": "..."}.
                """
            let turn: ModelTurn
            do { turn = try await prov.turn(ModelRequest(model: model, system: system, messages: [ChatMessage(role: "user", content: input.prompt)],
                                                         tools: [], temperature: 0, maxTokens: 512)) { _ in } }
            catch let e as ProviderError { throw HTTPError(HTTPStatus(502), code: "unavailable", message: e.description) }
            let (command, explanation) = parseSuggestion(turn.text)
            guard !command.isEmpty else { throw HTTPError(HTTPStatus(502), code: "unavailable", message: "The model did not suggest a command") }
            return .json(JSONValue.object(["command": .string(command), "explanation": .string(explanation),
                                                      "toolchain": .string(toolchain), "model": .string(model)]))
        }
    }
}

struct AgentPrefs: Codable, Sendable {
    var provider: String?
    var model: String?
    var maxSteps: Int?
    var temperature: Double?
    var systemInstructions: String?

    func overlaid(by o: AgentPrefs) -> AgentPrefs {
        AgentPrefs(provider: o.provider ?? provider, model: o.model ?? model, maxSteps: o.maxSteps ?? maxSteps,
                   temperature: o.temperature ?? temperature, systemInstructions: o.systemInstructions ?? systemInstructions)
    }
}

func runJSON(_ r: Row) -> JSONValue {
    func opt(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
    return .object([
        "id": .string(r.string("id") ?? ""), "run_id": .string(r.string("id") ?? ""), "ws_id": .string(r.string("ws_id") ?? ""),
        "project_id": .string(r.string("project_id") ?? ""), "user_id": .string(r.string("user_id") ?? ""),
        "prompt": .string(r.string("prompt") ?? ""), "model": .string(r.string("model") ?? ""), "provider": .string(r.string("provider") ?? ""),
        "status": .string(r.string("status") ?? ""), "steps": .int(r.int("steps") ?? 0), "max_steps": .int(r.int("max_steps") ?? 0),
        "input_tokens": .int(r.int("input_tokens") ?? 0), "output_tokens": .int(r.int("output_tokens") ?? 0),
        "files_changed": .int(r.int("files_changed") ?? 0), "summary": opt(r.string("summary")), "error": opt(r.string("error")),
        "reason": opt(r.string("reason")),
        "started_at": .string(HTTPDate.iso8601(r.date("started_at") ?? Date())), "ended_at": opt(r.date("ended_at").map(HTTPDate.iso8601)),
        "rolled_back_at": opt(r.date("rolled_back_at").map(HTTPDate.iso8601)),
    ])
}

/// `{command, explanation}` from a model answer: JSON (maybe in a code fence), else the first code line.
func parseSuggestion(_ text: String) -> (String, String) {
    var t = text.trimmingCharacters(in: .whitespacesAndNewlines)
    if let start = t.firstIndex(of: "{"), let end = t.lastIndex(of: "}") {
        let json = String(t[start...end])
        if let o = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any], let c = o["command"] as? String {
            return (c.trimmingCharacters(in: .whitespacesAndNewlines), (o["explanation"] as? String) ?? "")
        }
    }
    if t.hasPrefix("```") { t = t.split(separator: "\n").dropFirst().prefix { !$0.hasPrefix("```") }.joined(separator: "\n") }
    let first = t.split(separator: "\n").first.map(String.init) ?? ""
    return (first.trimmingCharacters(in: CharacterSet(charactersIn: "`$ ")), "")
}
