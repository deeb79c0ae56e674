import Foundation
import KilnCore
import KilnHTTP

struct AdminCreateUserInput: Decodable, Sendable {
    let email: String
    let name: String?
}

struct InvitationInput: Decodable, Sendable {
    let email: String
    let ttlHours: Int?
}

/// `/api/admin/*`: the instance's accounts and invitations (permission `instance:admin`, which no
/// workspace role grants). Every write wants a fresh step-up.
struct AdminRoutes: Sendable {
    let auth: AuthService

    func register(_ routes: Routes) {
        let r = routes.tagged("admin")
        let admin = Permission.instanceAdmin
        r.add(
            .GET, "/api/admin/users", admin, "Every account (filter q in email or name), paginated",
            query: [QueryParam("q", "text in the email or name")] + QueryParam.paging, reply: .page(of: User.self),
            listUsers)
        r.add(
            .POST, "/api/admin/users", admin,
            "Create an account and get its one-time setup link (valid 24 hours); needs step-up", limit: 16 * 1024,
            reply: .json(status: .created), createUser)
        for change in AuthService.AdminChange.allCasesInOrder {
            r.add(
                .POST, "/api/admin/users/:user_id/\(change.rawValue)", admin, Self.describe(change),
                reply: .of(User.self)
            ) { req, ctx in try await self.apply(change, req, ctx) }
        }
        r.add(
            .POST, "/api/admin/invitations", admin,
            "Invite an address: a single-use link /register?invitation=… (ttl_hours default 72); needs step-up",
            limit: 16 * 1024, reply: .json(status: .created), invite)
        r.add(
            .GET, "/api/admin/invitations", admin, "Invitations, newest first (never their tokens)",
            reply: .page(of: Invitation.self), invitations)
        r.add(
            .DELETE, "/api/admin/invitations/:id", admin, "Withdraw an invitation; needs step-up", reply: .noContent,
            deleteInvitation)
    }

    static func describe(_ c: AuthService.AdminChange) -> String {
        switch c {
        case .disable: "Disable an account: its sessions end and its API keys stop working; needs step-up"
        case .enable: "Enable a disabled account again; needs step-up"
        case .grantAdmin: "Make an account an instance admin; needs step-up"
        case .revokeAdmin: "Take instance admin away (the last admin stays); needs step-up"
        case .allowExec: "Let an account run commands, terminals and agent commands; needs step-up"
        case .denyExec: "Stop an account from running commands, terminals and agent commands; needs step-up"
        }
    }

    /// The admin making a change, after a fresh step-up.
    func steppedUp(_ ctx: RequestContext) throws -> Principal {
        let p = try ctx.requirePrincipal()
        try p.requireStepUp(now: auth.clock.now())
        return p
    }

    @Sendable func listUsers(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(try await auth.listUsers(q: req.query["q"], page: try PageRequest(query: req.query)))
    }

    @Sendable func createUser(
        _ req: Request, _ ctx: RequestContext, _ input: AdminCreateUserInput
    ) async throws -> Response {
        let p = try steppedUp(ctx)
        let (user, link) = try await auth.adminCreateUser(
            email: input.email, name: input.name, by: p.userID, ip: req.remoteAddress)
        var res = Response.json(
            JSONValue.object(["user": try JSONValue(encoding: user), "setup_url": .string(link)]), status: .created)
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    func apply(_ change: AuthService.AdminChange, _ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try steppedUp(ctx)
        return try .json(
            try await auth.adminChange(
                change, userID: try ctx.parameter("user_id"), by: p.userID, ip: req.remoteAddress))
    }

    @Sendable func invite(_ req: Request, _ ctx: RequestContext, _ input: InvitationInput) async throws -> Response {
        let p = try steppedUp(ctx)
        let (invitation, link) = try await auth.invite(
            email: input.email, ttlHours: input.ttlHours, by: p.userID, ip: req.remoteAddress)
        guard case .object(var body) = try JSONValue(encoding: invitation) else { throw APIError(.internalServerError) }
        body["url"] = .string(link)
        var res = Response.json(JSONValue.object(body), status: .created)
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    @Sendable func invitations(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(Page(all: try await auth.invitations()))
    }

    @Sendable func deleteInvitation(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try steppedUp(ctx)
        try await auth.deleteInvitation(id: try ctx.parameter("id"), by: p.userID, ip: req.remoteAddress)
        return .noContent()
    }
}

extension AuthService.AdminChange {
    static let allCasesInOrder: [Self] = [.disable, .enable, .grantAdmin, .revokeAdmin, .allowExec, .denyExec]
}
