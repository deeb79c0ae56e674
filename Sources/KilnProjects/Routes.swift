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
                   summary: "A file's content with an ETag; start_line/end_line for a slice; binary files as metadata unless raw=1; 413 above 5 MiB unless ranged",
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
                res = Response.json(raw: Array(JSONValue.object(body).jsonText.utf8))
            }
            res.headers["ETag"] = f.etag
            return res
        }

        routes.add(.GET, "/api/project/recent", permission: "project:read", summary: "Your recently opened projects in a workspace, newest first",
                   tags: ["projects"], query: [("ws_id", "the workspace", true)]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let list = try await projects.recent(userID: try ctx.requirePrincipal().userID, wsID: access.wsID)
            return try .json(Page(items: list, nextCursor: nil))
        }
    }
}
