import Foundation
import KilnCore
import KilnHTTP

/// `/api/agent/*` and `/api/shell/suggest`.
struct AgentRoutes: Sendable {
    let agents: AgentService

    static let small = 64 * 1024

    func register(_ routes: Routes) {
        let r = routes.tagged("agents")
        typealias P = AgentPermission
        r.add(
            .POST, "/api/agent/run", P.run,
            "Start an agent run; SSE: run.started, message.delta, message, tool.call, tool.result, file.changed, usage, then run.completed "
                + "/ run.failed / run.cancelled. Accept: application/json returns {run_id} at once",
            limit: Self.small, reply: .events(Schema.of(RunStarted.self)), start)
        r.add(
            .GET, "/api/agent/follow", P.read,
            "Reattach to a run: every event after cursor (or Last-Event-ID), then live ones until it ends (default: your latest running run)",
            query: [
                QueryParam("run_id", "the run (default: your latest in-flight run)"),
                QueryParam("cursor", "resume after this event id (default 0)"),
            ],
            reply: .events(), follow)
        r.add(
            .POST, "/api/agent/cancel/:run_id", P.run,
            "Cancel a run within a second: its model call stops, its shell jobs are killed, the stream ends with run.cancelled",
            cancel)
        r.add(
            .POST, "/api/agent/rollback", P.run,
            "Restore every file a run changed (deleting files it created); 409 with the paths changed since, unless force: true",
            limit: Self.small, rollback)
        r.add(
            .GET, "/api/agent/history", P.read,
            "Runs with prompt, status, model, steps, tokens, files changed, start/end and who, newest first",
            query: [QueryParam("ws_id", "the workspace"), QueryParam("project_id", "only this project's")]
                + QueryParam.paging, history)
        r.add(
            .GET, "/api/agent/runs/:run_id", P.read,
            "One run with its full transcript, tool calls (whole output) and changed files", detail)
        r.add(
            .GET, "/api/agent/prefs", P.prefs,
            "Your agent preferences, the workspace default, and the effective values",
            query: [QueryParam("ws_id", "the workspace")], getPrefs)
        r.add(
            .POST, "/api/agent/prefs", P.prefs,
            "Set your preferences (scope user) or, as a workspace admin, the workspace default (scope workspace): provider, model, "
                + "max_steps, temperature, system_instructions",
            limit: Self.small, setPrefs)
        routes.tagged("agents", "shell").add(
            .POST, "/api/shell/suggest", P.run,
            "Suggest a shell command for a task from the configured model, given the project's toolchain ({command, explanation}); "
                + "never runs it",
            limit: Self.small, suggest)
    }

    @Sendable func start(_ req: Request, _ ctx: RequestContext, _ input: StartInput) async throws -> Response {
        let runID = try await agents.start(
            input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID)
        if req.prefersJSON {
            return .json(
                JSONValue.object([
                    "run_id": .string(runID), "status": "running",
                    "follow_url": .string("/api/agent/follow?run_id=\(runID)"),
                ]), status: .accepted)
        }
        return try agents.bus.sse(topic: AgentEngine.topic(runID), request: req, endTypes: AgentEngine.terminal)
    }

    @Sendable func follow(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let id = try await agents.runToFollow(
            req.query["run_id"], access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID)
        return try agents.bus.sse(topic: AgentEngine.topic(id), request: req, endTypes: AgentEngine.terminal)
    }

    @Sendable func cancel(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let id = try ctx.parameter("run_id")
        try await agents.cancel(id, access: try ctx.requireWorkspace())
        return .json(JSONValue.object(["run_id": .string(id), "status": "cancelled"]))
    }

    @Sendable func rollback(_ req: Request, _ ctx: RequestContext, _ input: RollbackInput) async throws -> Response {
        let restored = try await agents.rollback(
            input, access: try ctx.requireWorkspace(), by: try ctx.requirePrincipal(), ip: req.remoteAddress)
        return .json(
            JSONValue.object(["run_id": .string(input.runId), "restored": .array(restored.map { .string($0) })]))
    }

    @Sendable func history(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let project = req.query["project_id"].flatMap { $0.isEmpty ? nil : $0 }
        return .json(
            try await agents.history(
                wsID: try ctx.requireWorkspace().wsID, projectID: project, page: try PageRequest(query: req.query)
            ).json)
    }

    @Sendable func detail(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await agents.detail(try ctx.parameter("run_id"), in: try ctx.requireWorkspace().wsID))
    }

    @Sendable func getPrefs(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let access = try ctx.requireWorkspace()
        return .json(try await agents.prefsDocument(userID: try ctx.requirePrincipal().userID, wsID: access.wsID))
    }

    @Sendable func setPrefs(_ req: Request, _ ctx: RequestContext, _ input: PrefsInput) async throws -> Response {
        .json(
            try await agents.setPrefs(
                input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func suggest(_ req: Request, _ ctx: RequestContext, _ input: SuggestInput) async throws -> Response {
        .json(
            try await agents.suggest(
                input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID))
    }
}
