import Foundation
import KilnCore
import KilnHTTP

/// `/api/account/*`: the signed-in user's own sessions, password, profile, deletion, export, audit
/// trail and API keys.
struct AccountRoutes: Sendable {
    let account: AccountService
    let clock: any Clock

    static let small = 16 * 1024

    func register(_ routes: Routes) {
        let r = routes.tagged("account")
        let read = Permission.accountRead
        let write = Permission.accountWrite
        r.add(
            .GET, "/api/account/sessions", read, "Your active sessions (the current one marked)",
            reply: .page(of: SessionInfo.self), sessions)
        r.add(.POST, "/api/account/sessions/:sid/revoke", write, "End one of your sessions", revokeSession)
        r.add(
            .POST, "/api/account/change-password", write,
            "Change your password (the old one is needed); ends your other sessions",
            limit: Self.small, changePassword)
        r.add(
            .POST, "/api/account/update-profile", write,
            "Change your name, avatar URL or email (a new email is confirmed by mail before it applies)",
            limit: Self.small, updateProfile)
        r.add(
            .POST, "/api/account/request-delete", write,
            "Delete your account and its data in 30 days unless cancelled; needs step-up",
            requestDelete)
        r.add(
            .POST, "/api/account/cancel-delete", write, "Keep your account: cancel a requested deletion", cancelDelete)
        r.add(
            .GET, "/api/account/export-data", read,
            "Everything Kiln holds about you as one JSON document (no passwords, tokens or secret values)", exportData)
        r.add(
            .GET, "/api/account/audit-list", read, "Your own audit events, newest first", query: QueryParam.paging,
            auditList)
        r.add(
            .GET, "/api/account/api-keys", read, "Your API keys (never their values)", query: QueryParam.paging,
            reply: .page(of: APIKey.self), listKeys)
        r.add(
            .POST, "/api/account/api-keys", write,
            "Create an API key (kf_…, shown once) with scopes and an optional expiry; from a session only, "
                + "after step-up",
            limit: Self.small, reply: .json(status: .created), createKey)
        r.add(.DELETE, "/api/account/api-keys/:id", write, "Revoke an API key", reply: .noContent, revokeKey)
    }

    static let ok = Response.json(JSONValue.object(["status": "ok"]))

    @Sendable func sessions(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        return try .json(Page(all: try await account.accounts.sessions(userID: p.userID, current: p.sessionID)))
    }

    @Sendable func revokeSession(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        let sid = try ctx.parameter("sid")
        try Validate.id(sid, prefix: "ses", notFound: "No such session")
        try await account.accounts.revokeSession(userID: p.userID, sessionID: sid, actorIP: req.remoteAddress)
        return Self.ok
    }

    @Sendable func changePassword(
        _ req: Request, _ ctx: RequestContext, _ input: PasswordInput
    ) async throws -> Response {
        let p = try ctx.requirePrincipal()
        try await account.accounts.changePassword(
            userID: p.userID, currentSession: p.sessionID, old: input.oldPassword,
            new: input.newPassword, ip: req.remoteAddress)
        return Self.ok
    }

    @Sendable func updateProfile(_ req: Request, _ ctx: RequestContext, _ input: ProfileChange) async throws -> Response
    {
        let (user, pending) = try await account.accounts.updateProfile(
            userID: try ctx.requirePrincipal().userID, input, ip: req.remoteAddress)
        return try .json(ProfileBody(user: user, emailVerificationSent: pending))
    }

    @Sendable func requestDelete(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        try p.requireStepUp(now: clock.now())
        let when = try await account.accounts.requestDelete(userID: p.userID, ip: req.remoteAddress)
        return .json(JSONValue.object(["status": "scheduled", "delete_after": .string(HTTPDate.iso8601(when))]))
    }

    @Sendable func cancelDelete(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await account.accounts.cancelDelete(userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        return .json(JSONValue.object(["status": "ok", "delete_after": .null]))
    }

    @Sendable func exportData(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        var res = Response.json(try await account.export(try ctx.requirePrincipal(), ip: req.remoteAddress))
        res.headers["Content-Disposition"] = "attachment; filename=\"kiln-account-export.json\""
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    @Sendable func auditList(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            try await account.auditEvents(
                userID: try ctx.requirePrincipal().userID, page: try PageRequest(query: req.query)))
    }

    @Sendable func listKeys(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            try await account.keys(userID: try ctx.requirePrincipal().userID, page: try PageRequest(query: req.query)))
    }

    @Sendable func createKey(_ req: Request, _ ctx: RequestContext, _ input: APIKeyInput) async throws -> Response {
        let p = try ctx.requirePrincipal()
        // Keys are made from a signed-in session: a leaked key must not be able to mint more.
        guard p.apiKeyID == nil else {
            throw HTTPError(
                .forbidden, code: "step_up_required", message: "An API key cannot create API keys; sign in to make one")
        }
        try p.requireStepUp(now: clock.now())
        let (key, token) = try await account.createKey(userID: p.userID, input, ip: req.remoteAddress)
        // The key's fields at the top level plus the one-time `key`; `api_key` repeats them for clients that nest.
        guard case .object(var body) = try JSONValue(encoding: key) else { throw APIError(.internalServerError) }
        body["api_key"] = .object(body)
        body["key"] = .string(token)
        var res = Response.json(JSONValue.object(body), status: .created)
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    @Sendable func revokeKey(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await account.revokeKey(
            userID: try ctx.requirePrincipal().userID, id: try ctx.parameter("id"), ip: req.remoteAddress)
        return .noContent()
    }
}
