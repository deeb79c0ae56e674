import Foundation
import KilnAuth
import KilnCore
import KilnHTTP
import KilnStore

/// Workspaces, their members and roles, and the workspace audit trail.
public struct WorkspacesModule: KilnModule {
    public let name = "workspaces"
    public init() {}
    public var migrations: [Migration] { WorkspaceMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("workspace:create", "Create workspaces", workspaceScoped: false),
            PermissionGrant("workspace:list", "List the workspaces you belong to", workspaceScoped: false),
            PermissionGrant("workspace:read", "See a workspace", minimumRole: .viewer),
            PermissionGrant("workspace:write", "Rename a workspace", minimumRole: .admin),
            PermissionGrant("workspace:delete", "Delete a workspace and everything in it", minimumRole: .owner),
            PermissionGrant("members:read", "See a workspace's members and roles", minimumRole: .viewer),
            PermissionGrant("members:write", "Add and remove members, change roles", minimumRole: .admin),
            PermissionGrant("audit:read", "Read a workspace's audit trail", minimumRole: .admin),
        ]
    }

    static let str: JSONValue = ["type": "string"]
    static let role: JSONValue = ["type": "string", "enum": ["owner", "admin", "member", "viewer"]]

    public func register(_ routes: Routes, _ services: Services) {
        let auth = AuthService(services: services)
        let ws = WorkspaceService(db: services.db, clock: services.clock, auth: auth)
        let db = services.db
        services.hooks.provideRoles(ws)
        services.hooks.onUserCreated { tx, uid, name, at in
            _ = try WorkspaceService.insert(tx, name: "\(name)'s workspace", ownerID: uid, at: at)
        }
        services.hooks.onUserPurged { tx, uid in try WorkspaceService.purge(tx, userID: uid) }
        // A request naming no workspace and no project falls back to the caller's first workspace.
        services.hooks.provideDefaultWorkspace(fallback: true) { uid in
            try await db.read { tx in
                try tx.first("SELECT ws_id FROM memberships WHERE user_id = ? ORDER BY created_at, ws_id LIMIT 1", uid)?.string("ws_id")
            }
        }
        services.hooks.exportSection("workspaces") { uid in
            let page = try await ws.list(userID: uid, page: PageRequest(limit: 200))
            return try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(page.items)))
        }
        let small = 16 * 1024
        let paging: [(name: String, description: String, required: Bool)] = [("limit", "1 to 200 (default 50)", false), ("cursor", "next_cursor of the previous page", false)]

        struct NameInput: Decodable { let name: String }
        routes.add(.POST, "/api/workspaces", permission: "workspace:create", summary: "Create a workspace (you become its owner)", tags: ["workspaces"],
                   requestBody: ["type": "object", "required": ["name"], "properties": ["name": Self.str]], successStatus: 201, bodyLimit: small) { req, ctx in
            let p = try ctx.requirePrincipal()
            let input = try await req.decode(NameInput.self, limit: small)
            return try .json(try await ws.create(name: input.name, by: p, ip: req.remoteAddress), status: .created)
        }
        routes.add(.GET, "/api/workspaces", permission: "workspace:list", summary: "The workspaces you belong to, with your role", tags: ["workspaces"],
                   query: paging) { req, ctx in
            let p = try ctx.requirePrincipal()
            return try .json(try await ws.list(userID: p.userID, page: try PageRequest(query: req.query)))
        }
        routes.add(.GET, "/api/workspaces/:ws_id", permission: "workspace:read", summary: "A workspace and your role in it", tags: ["workspaces"]) { _, ctx in
            let access = try ctx.requireWorkspace()
            return try .json(try await ws.get(access.wsID, userID: try ctx.requirePrincipal().userID))
        }
        routes.add(.PATCH, "/api/workspaces/:ws_id", permission: "workspace:write", summary: "Rename a workspace", tags: ["workspaces"],
                   requestBody: ["type": "object", "required": ["name"], "properties": ["name": Self.str]], bodyLimit: small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let input = try await req.decode(NameInput.self, limit: small)
            return try .json(try await ws.rename(access.wsID, name: input.name, by: try ctx.requirePrincipal(), ip: req.remoteAddress))
        }
        routes.add(.DELETE, "/api/workspaces/:ws_id", permission: "workspace:delete", summary: "Delete a workspace", tags: ["workspaces"],
                   successStatus: 204) { req, ctx in
            let access = try ctx.requireWorkspace()
            try await ws.delete(access.wsID, by: try ctx.requirePrincipal(), ip: req.remoteAddress)
            return .noContent()
        }
        routes.add(.GET, "/api/workspaces/:ws_id/members", permission: "members:read", summary: "Members and their roles", tags: ["workspaces"],
                   query: paging) { req, ctx in
            let access = try ctx.requireWorkspace()
            return try .json(try await ws.members(access.wsID, page: try PageRequest(query: req.query)))
        }
        struct AddInput: Decodable { let email: String?; let userId: String?; let role: Role }
        routes.add(.POST, "/api/workspaces/:ws_id/members", permission: "members:write", summary: "Add an existing account as a member",
                   tags: ["workspaces"],
                   requestBody: ["type": "object", "required": ["role"], "properties": ["email": Self.str, "user_id": Self.str, "role": Self.role]],
                   successStatus: 201, bodyLimit: small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let input = try await req.decode(AddInput.self, limit: small)
            return try .json(try await ws.addMember(access.wsID, email: input.email, userID: input.userId, role: input.role,
                                                    by: try ctx.requirePrincipal(), actorRole: access.role, ip: req.remoteAddress), status: .created)
        }
        struct RoleInput: Decodable { let role: Role }
        routes.add(.PATCH, "/api/workspaces/:ws_id/members/:user_id", permission: "members:write", summary: "Change a member's role",
                   tags: ["workspaces"], requestBody: ["type": "object", "required": ["role"], "properties": ["role": Self.role]], bodyLimit: small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let input = try await req.decode(RoleInput.self, limit: small)
            return try .json(try await ws.changeRole(access.wsID, userID: try ctx.parameter("user_id"), to: input.role,
                                                     by: try ctx.requirePrincipal(), actorRole: access.role, ip: req.remoteAddress))
        }
        routes.add(.DELETE, "/api/workspaces/:ws_id/members/:user_id", permission: "members:write", summary: "Remove a member",
                   tags: ["workspaces"], successStatus: 204) { req, ctx in
            let access = try ctx.requireWorkspace()
            try await ws.removeMember(access.wsID, userID: try ctx.parameter("user_id"), by: try ctx.requirePrincipal(),
                                      actorRole: access.role, ip: req.remoteAddress)
            return .noContent()
        }
        routes.add(.GET, "/api/audit", permission: "audit:read",
                   summary: "A workspace's audit trail (filters actor, action, resource, since, until), newest first", tags: ["workspaces"],
                   query: [("ws_id", "the workspace", true), ("actor", "user id", false), ("action", "e.g. member.added", false),
                           ("resource", "resource id or type", false), ("since", "ISO 8601", false), ("until", "ISO 8601", false)] + paging) { req, ctx in
            let access = try ctx.requireWorkspace()
            var filter = try AuditLog.Filter(query: req.query)
            filter.wsID = access.wsID
            return try .json(try await AuditLog.list(db, filter, page: try PageRequest(query: req.query)))
        }
    }
}

extension WorkspaceService: WorkspaceRoleResolver {}
