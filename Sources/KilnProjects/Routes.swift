import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// `/api/project/*`: open, list, browse, read, quick open, re-index, search, symbols, findings, recent.
struct ProjectRoutes: Sendable {
    let projects: ProjectService

    static let small = 16 * 1024

    func register(_ routes: Routes) {
        let r = routes.tagged("projects")
        let read = ProjectPermission.read
        let write = ProjectPermission.write
        r.add(
            .POST, "/api/project/load", write,
            "Open a directory under a project root, or clone a git repository (file://, https://, ssh://) into it",
            limit: Self.small, reply: .of(Project.self, status: .created), load)
        r.add(
            .GET, "/api/project/tree", read,
            "One directory level: name, type, size, mtime, git status; ignored entries hidden unless all=1",
            query: [
                .projectID, QueryParam("path", "directory relative to the project (default: its root)"),
                QueryParam("all", "1 to include ignored entries"),
            ],
            reply: .page(of: TreeEntry.self), tree)
        r.add(
            .GET, "/api/project/file", read,
            "A file's content with an ETag; start_line/end_line for a slice; binary files as metadata unless raw=1; 413 above 5 MiB "
                + "unless ranged, and above 64 MiB raw or for a slice; 409 when the file changed while it was opened",
            query: [
                .projectID, QueryParam("path", "file relative to the project", required: true),
                QueryParam("start_line", "first line (1-based)"), QueryParam("end_line", "last line"),
                QueryParam("raw", "1 for the exact bytes"),
            ],
            file)
        r.add(
            .POST, "/api/project/rescan", write,
            "Re-index a project in the background (unchanged files are not re-read); returns the job",
            limit: Self.small, body: .optional,
            reply: .json(
                Schema.object([
                    "job_id": Schema.string, "project_id": Schema.string, "status": Schema.string,
                    "events_url": Schema.string,
                ]), status: .accepted),
            rescan)
        r.add(
            .GET, "/api/project/rescan/:job_id/events", read,
            "Rescan progress over SSE: progress {files_seen, indexed, copies, skipped, unchanged, removed, bytes, symbols, findings}, "
                + "indexed (search sees the new content), then done (resumable by cursor)",
            reply: .events(), rescanEvents)
        r.add(
            .GET, "/api/project/search", read,
            "Full-text search: literal (or regex=1), case-insensitive unless case=1, path glob; ranked, paginated, with context",
            query: [
                .projectID, QueryParam("q", "the text or pattern", required: true),
                QueryParam("regex", "1 for a regular expression"),
                QueryParam("case", "1 for case-sensitive"),
                QueryParam("path", "glob on file paths, e.g. src/**/*.swift"),
            ]
                + QueryParam.paging,
            search)
        r.add(
            .GET, "/api/project/symbols", read,
            "Find symbols: exact, prefix and fuzzy matches ranked, with kind, path, line, scope and language",
            query: [
                .projectID, QueryParam("q", "name or part of it"),
                QueryParam("kind", "function, method, class, struct, interface, constant…"), .limit,
            ],
            reply: .page(of: Symbol.self), symbols)
        r.add(
            .GET, "/api/project/findings", read,
            "What the last rescan found: likely secrets (masked), merge-conflict markers, to-do and fix-me notes, large files",
            query: [.projectID], reply: .page(of: Finding.self), findings)
        r.add(
            .GET, "/api/project/recent", read, "Your recently opened projects in a workspace, newest first",
            query: [.wsID],
            reply: .page(of: Project.self), recent)
        r.add(
            .GET, "/api/project/list", read, "Every project open in a workspace, by name", query: [.wsID],
            reply: .page(of: Project.self), list)
        r.add(
            .GET, "/api/project/paths", read,
            "Quick open: the project's indexed paths ranked against q (every character in order, case-insensitive; "
                + "runs, word starts and the file name first), with the matched byte offsets",
            query: [
                .projectID, QueryParam("q", "what was typed (up to 256 bytes; empty: the shortest paths)"), .limit,
            ],
            reply: .page(of: PathMatch.self), paths)
    }

    @Sendable func load(_ req: Request, _ ctx: RequestContext, _ input: LoadInput) async throws -> Response {
        let p = try ctx.requirePrincipal()
        let (project, created) = try await projects.load(
            input, access: try ctx.requireWorkspace(), userID: p.userID,
            actorKind: p.apiKeyID == nil ? "user" : "api_key")
        return try .json(project, status: created ? .created : .ok)
    }

    /// The project the request names (`project_id`, else the caller's most recent) and its folder.
    func project(
        _ req: Request, _ ctx: RequestContext, _ id: String?, withGit: Bool = true
    ) async throws -> (Project, root: String) {
        try await projects.project(
            id ?? req.query["project_id"], access: try ctx.requireWorkspace(),
            userID: try ctx.requirePrincipal().userID,
            withGit: withGit)
    }

    @Sendable func tree(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (project, root) = try await self.project(req, ctx, nil)
        return try .json(
            Page(
                all: try await projects.tree(
                    root, project: project, path: req.query["path"] ?? "", all: req.query["all"] == "1")))
    }

    @Sendable func file(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (_, root) = try await project(req, ctx, nil)
        func line(_ name: String) throws -> Int? {
            guard let v = req.query[name], !v.isEmpty else { return nil }
            guard let n = Int(v), n >= 1, n <= 100_000_000 else {
                throw APIError.validation("\(name) must be a positive line number", field: name)
            }
            return n
        }
        let raw = req.query["raw"] == "1"
        let f = try projects.file(
            root, path: req.query["path"] ?? "", startLine: try line("start_line"), endLine: try line("end_line"),
            raw: raw)
        if let inm = req.headers["If-None-Match"],
            inm.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }).contains(f.etag)
        {
            return Response(status: .notModified, headers: ["ETag": f.etag])
        }
        var res: Response
        if raw {
            res = Response(headers: ["Content-Type": "application/octet-stream"], body: .bytes(f.bytes ?? []))
        } else {
            var body: [String: JSONValue] = [
                "path": .string(f.path), "size": .int(f.size), "binary": .bool(f.binary),
                "etag": .string(f.etag), "content": .null,
            ]
            if let b = f.bytes { body["content"] = .string(String(decoding: b, as: UTF8.self)) }
            if let s = f.startLine, let e = f.endLine, let t = f.totalLines {
                body["start_line"] = .int(s)
                body["end_line"] = .int(e)
                body["total_lines"] = .int(t)
            }
            res = Response.json(JSONValue.object(body))
        }
        res.headers["ETag"] = f.etag
        return res
    }

    @Sendable func rescan(_ req: Request, _ ctx: RequestContext, _ input: RescanInput) async throws -> Response {
        let (project, root) = try await self.project(req, ctx, input.projectId)
        let job = try await projects.startRescan(project, root: root, userID: try ctx.requirePrincipal().userID)
        return .json(
            JSONValue.object([
                "job_id": .string(job), "project_id": .string(project.id), "status": "running",
                "events_url": .string("/api/project/rescan/\(job)/events"),
            ]), status: .accepted)
    }

    @Sendable func rescanEvents(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        _ = try ctx.requireWorkspace()
        return try projects.bus.sse(
            topic: ProjectService.rescanTopic(try ctx.parameter("job_id")), request: req, endTypes: ["done", "failed"])
    }

    @Sendable func search(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (project, root) = try await self.project(req, ctx, nil, withGit: false)
        let page = try PageRequest(query: req.query)
        let offset = try page.numericCursor()
        try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs)
        let query = ProjectService.SearchQuery(
            q: req.query["q"] ?? "", regex: req.query["regex"] == "1", caseSensitive: req.query["case"] == "1",
            pathGlob: req.query["path"])
        let (slice, total) = try await projects.search(
            projectID: project.id, root: root, query, offset: offset, limit: page.limit)
        let next = offset + slice.count < total ? PageRequest.encodeCursor(String(offset + slice.count)) : nil
        return try .json(SearchPage(items: slice, nextCursor: next, total: total))
    }

    @Sendable func symbols(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (project, root) = try await self.project(req, ctx, nil, withGit: false)
        let page = try PageRequest(query: req.query)
        try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs)
        return try .json(
            Page(
                all: try projects.symbols(
                    projectID: project.id, q: req.query["q"] ?? "", kind: req.query["kind"], limit: page.limit)))
    }

    @Sendable func findings(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (project, root) = try await self.project(req, ctx, nil, withGit: false)
        try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs)
        return try .json(Page(all: try await projects.findings(projectID: project.id)))
    }

    @Sendable func recent(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let access = try ctx.requireWorkspace()
        return try .json(
            Page(all: try await projects.recent(userID: try ctx.requirePrincipal().userID, wsID: access.wsID)))
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(Page(all: try await projects.list(wsID: try ctx.requireWorkspace().wsID)))
    }

    @Sendable func paths(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let (project, root) = try await self.project(req, ctx, nil, withGit: false)
        let page = try PageRequest(query: req.query)
        try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs)
        return try .json(
            Page(all: try await projects.paths(projectID: project.id, q: req.query["q"] ?? "", limit: page.limit)))
    }
}
