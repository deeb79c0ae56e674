import Foundation
import KilnCore
import KilnHTTP

/// `/api/notebook/*`: notebooks in a project, their cells, with ETags for concurrent editors.
struct NotebookRoutes: Sendable {
    let notebooks: NotebookService

    func register(_ routes: Routes) {
        let r = routes.tagged("notebooks")
        let small = 2 << 20
        let cellParams = "; If-Match: the notebook's ETag (412 when stale)"
        r.add(
            .GET, "/api/notebook", NotebookPermission.read,
            "The project's notebooks: {id, path, cells, kernel, etag, last_run_at}",
            query: [QueryParam("project_id", "the project (default: your most recent)")],
            reply: .json(Schema.page(Schema.any)), list)
        r.add(
            .POST, "/api/notebook", NotebookPermission.write,
            "Create a notebook {project_id, path, kernel?} (nbformat 4.5, kernel python3 by default); "
                + "409 when the file exists",
            limit: small, reply: .json(Schema.any, status: .created), create)
        r.add(
            .GET, "/api/notebook/:nb_id", NotebookPermission.read,
            "The notebook: its metadata and cells {id, cell_type, source, metadata, outputs, execution_count}; "
                + "ETag header",
            reply: .json(Schema.any), get)
        r.add(
            .POST, "/api/notebook/:nb_id/cells", NotebookPermission.write,
            "Add a cell {index?, cell_type: code|markdown|raw, source}" + cellParams, limit: small,
            reply: .json(Schema.any, status: .created), addCell)
        r.add(
            .PATCH, "/api/notebook/:nb_id/cells/:cell_id", NotebookPermission.write,
            "Change a cell {source?, cell_type?, metadata?}" + cellParams, limit: small, reply: .json(Schema.any),
            patchCell)
        r.add(
            .DELETE, "/api/notebook/:nb_id/cells/:cell_id", NotebookPermission.write, "Remove a cell" + cellParams,
            reply: .noContent, deleteCell)
        r.add(
            .POST, "/api/notebook/:nb_id/cells/:cell_id/move", NotebookPermission.write,
            "Move a cell to {index}" + cellParams, limit: 4096, reply: .json(Schema.any), moveCell)
        r.add(
            .POST, "/api/notebook/run/:nb_id/:cell_id", NotebookPermission.run,
            "Run a cell on the notebook's kernel: SSE cell.started {execution_count}, stream {name, text}, "
                + "display_data/execute_result {data, metadata}, error {ename, evalue, traceback}, cell.completed "
                + "{status, duration_ms}; with Accept: application/json, waits and answers the outputs",
            reply: .events(), runCell)
        r.add(
            .POST, "/api/notebook/:nb_id/run-all", NotebookPermission.run,
            "Run every code cell in order {continue_on_error?}; stops at the first error unless asked not to",
            limit: 4096, body: .optional, reply: .json(Schema.any), runAll)
        r.add(
            .POST, "/api/notebook/:nb_id/interrupt", NotebookPermission.run,
            "Interrupt the running cell (KeyboardInterrupt in Python)", reply: .json(Schema.any), interrupt)
        r.add(
            .POST, "/api/notebook/:nb_id/restart", NotebookPermission.run,
            "Restart the notebook's kernel (its state is gone), or start a dead one", reply: .json(Schema.any), restart)
        r.add(
            .GET, "/api/notebook/:nb_id/kernel", NotebookPermission.read,
            "The kernel: {state: none|starting|idle|busy|dead, kernel, language, since}", reply: .json(Schema.any),
            kernel)
    }

    @Sendable func runCell(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        let (runID, task) = try await notebooks.run(
            try ctx.parameter("nb_id"), cellID: try ctx.parameter("cell_id"), access: try ctx.requireWorkspace(),
            userID: p.userID, ip: req.remoteAddress, actorKind: p.apiKeyID == nil ? "user" : "api_key")
        if req.prefersJSON { return .json(await task.value) }
        return try notebooks.runner.bus.sse(
            topic: NotebookRunner.topic(runID), request: req, endTypes: ["cell.completed"])
    }

    @Sendable func runAll(_ req: Request, _ ctx: RequestContext, _ input: RunAllInput) async throws -> Response {
        let p = try ctx.requirePrincipal()
        return .json(
            try await notebooks.runAll(
                try ctx.parameter("nb_id"), continueOnError: input.continueOnError ?? false,
                access: try ctx.requireWorkspace(), userID: p.userID, ip: req.remoteAddress,
                actorKind: p.apiKeyID == nil ? "user" : "api_key"))
    }

    @Sendable func interrupt(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await notebooks.interrupt(try ctx.parameter("nb_id"), access: try ctx.requireWorkspace()))
    }

    @Sendable func restart(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            try await notebooks.restart(
                try ctx.parameter("nb_id"), access: try ctx.requireWorkspace(),
                userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func kernel(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await notebooks.kernelInfo(try ctx.parameter("nb_id"), access: try ctx.requireWorkspace()))
    }

    /// The ETag a client sent back (quotes and a weak prefix dropped).
    static func ifMatch(_ req: Request) throws -> String? {
        guard let h = req.headers["If-Match"] else { return nil }
        let v = h.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "W/", with: "")
            .trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        guard !v.isEmpty, v.utf8.count <= 64 else {
            throw APIError.validation("If-Match must be the notebook's ETag", field: "If-Match")
        }
        return v
    }

    static func tagged(_ body: JSONValue, _ etag: String, status: HTTPStatus = .ok) -> Response {
        var res = Response.json(body, status: status)
        res.headers["ETag"] = "\"\(etag)\""
        return res
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let items = try await notebooks.list(
            projectID: req.query["project_id"], access: try ctx.requireWorkspace(),
            userID: try ctx.requirePrincipal().userID)
        return .json(JSONValue.object(["items": .array(items), "next_cursor": .null]))
    }

    @Sendable func create(_ req: Request, _ ctx: RequestContext, _ input: CreateInput) async throws -> Response {
        let (doc, etag) = try await notebooks.create(
            input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID)
        return Self.tagged(doc, etag, status: .created)
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (doc, etag) = try await notebooks.get(try ctx.parameter("nb_id"), access: try ctx.requireWorkspace())
        return Self.tagged(doc, etag)
    }

    @Sendable func addCell(_ req: Request, _ ctx: RequestContext, _ input: AddCellInput) async throws -> Response {
        let (cell, etag) = try await notebooks.addCell(
            try ctx.parameter("nb_id"), input, access: try ctx.requireWorkspace(), ifMatch: try Self.ifMatch(req))
        return Self.tagged(cell, etag, status: .created)
    }

    @Sendable func patchCell(_ req: Request, _ ctx: RequestContext, _ input: PatchCellInput) async throws -> Response {
        let (cell, etag) = try await notebooks.patchCell(
            try ctx.parameter("nb_id"), try ctx.parameter("cell_id"), input, access: try ctx.requireWorkspace(),
            ifMatch: try Self.ifMatch(req))
        return Self.tagged(cell, etag)
    }

    @Sendable func deleteCell(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let etag = try await notebooks.deleteCell(
            try ctx.parameter("nb_id"), try ctx.parameter("cell_id"), access: try ctx.requireWorkspace(),
            ifMatch: try Self.ifMatch(req))
        var res = Response(status: .noContent)
        res.headers["ETag"] = "\"\(etag)\""
        return res
    }

    @Sendable func moveCell(_ req: Request, _ ctx: RequestContext, _ input: MoveInput) async throws -> Response {
        let (cell, etag) = try await notebooks.moveCell(
            try ctx.parameter("nb_id"), try ctx.parameter("cell_id"), to: input.index,
            access: try ctx.requireWorkspace(), ifMatch: try Self.ifMatch(req))
        return Self.tagged(cell, etag)
    }
}
