import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Projects: directories or git repositories on the server that a workspace has opened.
public struct ProjectsModule: KilnModule {
    public let name = "projects"
    public init() {}
    public var migrations: [Migration] { ProjectMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("project:read", "Browse, read, search and find symbols in a workspace's projects", minimumRole: .viewer),
            PermissionGrant("project:write", "Open (load or clone) projects and start re-indexing", minimumRole: .member),
        ]
    }

    public func register(_ routes: Routes, _ services: Services) {
        let projects = ProjectService(services: services)
        services.hooks.workspaceOf(param: "project_id") { id in try await projects.workspaceOf(id) }
        services.hooks.provideDefaultWorkspace { uid in try await projects.mostRecent(userID: uid)?.wsID }
        let str: JSONValue = ["type": "string"]
        let projectQuery: [(name: String, description: String, required: Bool)] = [("project_id", "the project (default: your most recently opened)", false)]

        routes.add(.POST, "/api/project/load", permission: "project:write",
                   summary: "Open a directory under a project root, or clone a git repository (file://, https://, ssh://) into it",
                   tags: ["projects"],
                   requestBody: ["type": "object", "required": ["ws_id"],
                                 "properties": ["ws_id": str, "path": str, "git_url": str, "name": str]],
                   successStatus: 201, bodyLimit: 16 * 1024) { req, ctx in
            let access = try ctx.requireWorkspace()
            let input = try await req.decode(ProjectService.LoadInput.self, limit: 16 * 1024)
            let (project, created) = try await projects.load(input, access: access, userID: try ctx.requirePrincipal().userID)
            return try .json(project, status: created ? .created : .ok)
        }

        routes.add(.GET, "/api/project/tree", permission: "project:read",
                   summary: "One directory level: name, type, size, mtime, git status; ignored entries hidden unless all=1", tags: ["projects"],
                   query: projectQuery + [("path", "directory relative to the project (default: its root)", false), ("all", "1 to include ignored entries", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let (project, root) = try await projects.resolve(req.query["project_id"], access: access, userID: try ctx.requirePrincipal().userID)
            let items = try await projects.tree(root, project: project, path: req.query["path"] ?? "", all: req.query["all"] == "1")
            return try .json(Page(items: items, nextCursor: nil))
        }

        routes.add(.GET, "/api/project/file", permission: "project:read",
                   summary: "A file's content with an ETag; start_line/end_line for a slice; binary files as metadata unless raw=1; 413 above 5 MiB unless ranged, and above 64 MiB raw or for a slice; 409 when the file changed while it was opened",
                   tags: ["projects"],
                   query: projectQuery + [("path", "file relative to the project", true), ("start_line", "first line (1-based)", false),
                                          ("end_line", "last line", false), ("raw", "1 for the exact bytes", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let (_, root) = try await projects.resolve(req.query["project_id"], access: access, userID: try ctx.requirePrincipal().userID)
            func line(_ name: String) throws -> Int? {
                guard let v = req.query[name], !v.isEmpty else { return nil }
                guard let n = Int(v), n >= 1, n <= 100_000_000 else { throw APIError.validation("\(name) must be a positive line number", field: name) }
                return n
            }
            let raw = req.query["raw"] == "1"
            let f = try projects.file(root, path: req.query["path"] ?? "", startLine: try line("start_line"), endLine: try line("end_line"), raw: raw)
            if let inm = req.headers["If-None-Match"], inm.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }).contains(f.etag) {
                return Response(status: .notModified, headers: ["ETag": f.etag])
            }
            var res: Response
            if raw {
                res = Response(headers: ["Content-Type": "application/octet-stream"], body: .bytes(f.bytes ?? []))
            } else {
                var body: [String: JSONValue] = ["path": .string(f.path), "size": .int(f.size), "binary": .bool(f.binary),
                                                 "etag": .string(f.etag), "content": .null]
                if let b = f.bytes { body["content"] = .string(String(decoding: b, as: UTF8.self)) }
                if let s = f.startLine, let e = f.endLine, let t = f.totalLines {
                    body["start_line"] = .int(s); body["end_line"] = .int(e); body["total_lines"] = .int(t)
                }
                res = Response.json(JSONValue.object(body))
            }
            res.headers["ETag"] = f.etag
            return res
        }

        let bus = services.bus
        let jobs = services.jobs
        services.hooks.workspaceOf(param: "job_id") { id in try await projects.workspaceOfRescan(id) }

        routes.add(.POST, "/api/project/rescan", permission: "project:write",
                   summary: "Re-index a project in the background (unchanged files are not re-read); returns the job",
                   tags: ["projects"], requestBody: ["type": "object", "properties": ["project_id": str]], successStatus: 202,
                   bodyLimit: 16 * 1024) { req, ctx in
            let access = try ctx.requireWorkspace()
            struct Input: Decodable { let projectId: String? }
            let bytes = try await req.bodyBytes(limit: 16 * 1024)
            let input = bytes.isEmpty ? Input(projectId: nil) : try await req.decode(Input.self, limit: 16 * 1024)
            let uid = try ctx.requirePrincipal().userID
            let (project, root) = try await projects.resolve(input.projectId, access: access, userID: uid)
            let job = try await projects.startRescan(project, root: root, userID: uid, bus: bus, jobs: jobs)
            return .json(JSONValue.object(["job_id": .string(job), "project_id": .string(project.id), "status": "running",
                                                      "events_url": .string("/api/project/rescan/\(job)/events")]), status: .accepted)
        }

        routes.add(.GET, "/api/project/rescan/:job_id/events", permission: "project:read",
                   summary: "Rescan progress over SSE: progress {files_seen, indexed, copies, skipped, unchanged, removed, bytes, symbols, findings}, indexed (search sees the new content), then done (resumable by cursor)",
                   tags: ["projects"], responseContentType: "text/event-stream") { req, ctx in
            _ = try ctx.requireWorkspace()
            return try bus.sse(topic: "rescan:\(try ctx.parameter("job_id"))", request: req, endTypes: ["done", "failed"])
        }

        routes.add(.GET, "/api/project/search", permission: "project:read",
                   summary: "Full-text search: literal (or regex=1), case-insensitive unless case=1, path glob; ranked, paginated, with context",
                   tags: ["projects"],
                   query: projectQuery + [("q", "the text or pattern", true), ("regex", "1 for a regular expression", false),
                                          ("case", "1 for case-sensitive", false), ("path", "glob on file paths, e.g. src/**/*.swift", false),
                                          ("limit", "1 to 200 (default 50)", false), ("cursor", "next_cursor of the previous page", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            let (project, root) = try await projects.resolve(req.query["project_id"], access: access, userID: uid, withGit: false)
            let page = try PageRequest(query: req.query)
            let offset = try page.cursor.map { c -> Int in
                guard let n = Int(c), n >= 0 else { throw APIError.validation("cursor is not one this server issued", field: "cursor") }
                return n
            } ?? 0
            try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs, bus: bus)
            let (slice, total) = try await projects.search(projectID: project.id, root: root, .init(q: req.query["q"] ?? "", regex: req.query["regex"] == "1",
                                                                                       caseSensitive: req.query["case"] == "1", pathGlob: req.query["path"]),
                                                           offset: offset, limit: page.limit)
            let next = offset + slice.count < total ? PageRequest.encodeCursor(String(offset + slice.count)) : nil
            struct Body: Encodable { let items: [SearchMatch]; let nextCursor: String?; let total: Int }
            return try .json(Body(items: slice, nextCursor: next, total: total))
        }

        routes.add(.GET, "/api/project/symbols", permission: "project:read",
                   summary: "Find symbols: exact, prefix and fuzzy matches ranked, with kind, path, line, scope and language",
                   tags: ["projects"],
                   query: projectQuery + [("q", "name or part of it", false), ("kind", "function, method, class, struct, interface, constant…", false),
                                          ("limit", "1 to 200 (default 50)", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            let (project, root) = try await projects.resolve(req.query["project_id"], access: access, userID: uid, withGit: false)
            let page = try PageRequest(query: req.query)
            try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs, bus: bus)
            let found = try projects.symbols(projectID: project.id, q: req.query["q"] ?? "", kind: req.query["kind"], limit: page.limit)
            return try .json(Page(items: found, nextCursor: nil))
        }

        routes.add(.GET, "/api/project/findings", permission: "project:read",
                   summary: "What the last rescan found: likely secrets (masked), merge-conflict markers, to-do and fix-me notes, large files",
                   tags: ["projects"], query: projectQuery) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            let (project, root) = try await projects.resolve(req.query["project_id"], access: access, userID: uid, withGit: false)
            try await projects.ensureIndexed(project.id, root: root, vcs: project.vcs, bus: bus)
            return try .json(Page(items: try await projects.findings(projectID: project.id), nextCursor: nil))
        }

        routes.add(.GET, "/api/project/recent", permission: "project:read", summary: "Your recently opened projects in a workspace, newest first",
                   tags: ["projects"], query: [("ws_id", "the workspace", true)]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let list = try await projects.recent(userID: try ctx.requirePrincipal().userID, wsID: access.wsID)
            return try .json(Page(items: list, nextCursor: nil))
        }
    }
}
