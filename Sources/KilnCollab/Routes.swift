import Foundation
import KilnCore
import KilnHTTP

/// `/api/collab/share-link*` and the links' own pages at `/s/<token>` (and `/s/<token>.json`).
struct CollabRoutes: Sendable {
    let collab: CollabService

    func register(_ routes: Routes) {
        let r = routes.tagged("collab")
        r.add(
            .POST, "/api/collab/share-link", CollabPermission.write,
            "Share a run read-only {ws_id, subject: {type: run, id}, expires_in_hours (≤ 720, default 72), "
                + "password?} "
                + "→ {id, url, expires_at}; the token is shown once",
            limit: 8192, reply: .json(Schema.any, status: .created), create)
        r.add(
            .GET, "/api/collab/share-links", CollabPermission.read,
            "The workspace's share links: subject, state (active, expired, revoked), views", query: [.wsID],
            reply: .json(Schema.page(Schema.any)), list)
        r.add(
            .DELETE, "/api/collab/share-links/:link_id", CollabPermission.write, "Revoke a share link at once",
            reply: .noContent, revoke)
        r.add(
            .GET, "/s/:token", Permission.anonymous,
            "A share link's page (…/s/<token>.json: the same as JSON); ?password= for a protected one; "
                + "404 unknown or "
                + "revoked, 410 expired, 401 without the password",
            query: [QueryParam("password", "the link's password, when it has one")], reply: .json(Schema.any), page)
    }

    @Sendable func create(_ req: Request, _ ctx: RequestContext, _ input: ShareInput) async throws -> Response {
        .json(
            try await collab.create(
                input, wsID: try ctx.requireWorkspace().wsID, userID: try ctx.requirePrincipal().userID,
                ip: req.remoteAddress), status: .created)
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            JSONValue.object([
                "items": .array(try await collab.list(wsID: try ctx.requireWorkspace().wsID)), "next_cursor": .null,
            ]))
    }

    @Sendable func revoke(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await collab.revoke(
            try ctx.parameter("link_id"), wsID: try ctx.requireWorkspace().wsID,
            userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        return Response(status: .noContent)
    }

    /// No session is read here, nothing is cached, no referrer leaves, no robot indexes it.
    @Sendable func page(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        var token = try ctx.parameter("token")
        let json = token.hasSuffix(".json")
        if json { token.removeLast(5) }
        var res: Response
        do {
            let shared = try await collab.open(
                token: token, password: req.query["password"] ?? req.headers["X-Share-Password"])
            if json {
                res = .json(shared)
            } else {
                res = Response(status: .ok)
                res.headers["Content-Type"] = "text/html; charset=utf-8"
                res.body = .bytes(Array(SharePage.render(shared).utf8))
            }
        } catch let e as any HTTPResponseError {
            res = Response.error(e, requestID: ctx.requestID)
        }
        res.headers["Referrer-Policy"] = "no-referrer"
        res.headers["X-Robots-Tag"] = "noindex"
        res.headers["Cache-Control"] = "no-store"
        return res
    }
}
