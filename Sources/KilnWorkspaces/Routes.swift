import Foundation
import KilnCore
import KilnHTTP

/// `/api/workspaces/*` and `/api/audit`.
struct WorkspaceRoutes: Sendable {
    let workspaces: WorkspaceService

    static let small = 16 * 1024

    func register(_ routes: Routes) {
        let r = routes.tagged("workspaces")
        typealias P = WorkspacePermission
        r.add(
            .POST, "/api/workspaces", P.create, "Create a workspace (you become its owner)", limit: Self.small,
            reply: .of(Workspace.self, status: .created), create)
        r.add(
            .GET, "/api/workspaces", P.list, "The workspaces you belong to, with your role", query: QueryParam.paging,
            reply: .page(of: Workspace.self), list)
        r.add(
            .GET, "/api/workspaces/:ws_id", P.read, "A workspace and your role in it", reply: .of(Workspace.self), get)
        r.add(
            .PATCH, "/api/workspaces/:ws_id", P.write, "Rename a workspace", limit: Self.small,
            reply: .of(Workspace.self), rename)
        r.add(
            .DELETE, "/api/workspaces/:ws_id", P.delete, "Delete a workspace; needs step-up", reply: .noContent, delete)
        r.add(
            .GET, "/api/workspaces/:ws_id/members", P.membersRead, "Members and their roles", query: QueryParam.paging,
            reply: .page(of: Member.self), members)
        r.add(
            .POST, "/api/workspaces/:ws_id/members", P.membersWrite, "Add an existing account as a member",
            limit: Self.small,
            reply: .of(Member.self, status: .created), addMember)
        r.add(
            .PATCH, "/api/workspaces/:ws_id/members/:user_id", P.membersWrite, "Change a member's role",
            limit: Self.small,
            reply: .of(Member.self), changeRole)
        r.add(
            .DELETE, "/api/workspaces/:ws_id/members/:user_id", P.membersRead,
            "Remove a member (admins and owners), or leave the workspace with your own id (not its last owner)",
            reply: .noContent, removeMember)
        r.add(
            .GET, "/api/audit", P.auditRead,
            "A workspace's audit trail (filters actor, action, resource, since, until), newest first",
            query: [
                .wsID, QueryParam("actor", "user id"), QueryParam("action", "e.g. member.added"),
                QueryParam("resource", "resource id or type"), QueryParam("since", "ISO 8601"),
                QueryParam("until", "ISO 8601"),
            ]
                + QueryParam.paging,
            audit)
    }

    @Sendable func create(_ req: Request, _ ctx: RequestContext, _ input: NameInput) async throws -> Response {
        try .json(
            try await workspaces.create(name: input.name, by: try ctx.requirePrincipal(), ip: req.remoteAddress),
            status: .created)
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            try await workspaces.list(
                userID: try ctx.requirePrincipal().userID, page: try PageRequest(query: req.query)))
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(try await workspaces.get(try ctx.requireWorkspace().wsID, userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func rename(_ req: Request, _ ctx: RequestContext, _ input: NameInput) async throws -> Response {
        let access = try ctx.requireWorkspace()
        return try .json(
            try await workspaces.rename(
                access.wsID, name: input.name, by: try ctx.requirePrincipal(), ip: req.remoteAddress))
    }

    @Sendable func delete(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await workspaces.delete(
            try ctx.requireWorkspace().wsID, by: try ctx.requirePrincipal(), ip: req.remoteAddress)
        return .noContent()
    }

    @Sendable func members(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            try await workspaces.members(try ctx.requireWorkspace().wsID, page: try PageRequest(query: req.query)))
    }

    @Sendable func addMember(_ req: Request, _ ctx: RequestContext, _ input: AddMemberInput) async throws -> Response {
        let access = try ctx.requireWorkspace()
        let m = try await workspaces.addMember(
            access.wsID, email: input.email, userID: input.userId, role: input.role,
            by: try ctx.requirePrincipal(), actorRole: access.role, ip: req.remoteAddress)
        return try .json(m, status: .created)
    }

    @Sendable func changeRole(_ req: Request, _ ctx: RequestContext, _ input: RoleInput) async throws -> Response {
        let access = try ctx.requireWorkspace()
        return try .json(
            try await workspaces.changeRole(
                access.wsID, userID: try ctx.parameter("user_id"), to: input.role,
                by: try ctx.requirePrincipal(), actorRole: access.role, ip: req.remoteAddress))
    }

    @Sendable func removeMember(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let access = try ctx.requireWorkspace()
        try await workspaces.removeMember(
            access.wsID, userID: try ctx.parameter("user_id"), by: try ctx.requirePrincipal(),
            actorRole: access.role, ip: req.remoteAddress)
        return .noContent()
    }

    @Sendable func audit(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        var filter = try AuditLog.Filter(query: req.query)
        filter.wsID = try ctx.requireWorkspace().wsID
        return try .json(try await workspaces.auditTrail(filter, page: try PageRequest(query: req.query)))
    }
}
