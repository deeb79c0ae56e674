import Foundation
import KilnCore
import KilnHTTP

/// `/api/collab/*`: activity, notifications, invitations, reviews and share links; and the share
/// links' own pages at `/s/<token>` (and `/s/<token>.json`).
struct CollabRoutes: Sendable {
    let collab: CollabService

    func register(_ routes: Routes) {
        let r = routes.tagged("collab")
        typealias P = CollabPermission
        r.add(
            .GET, "/api/collab/activity", P.read,
            "The workspace's activity, newest first: items {id, kind, actor, subject {type, id, title}, summary, "
                + "created_at}; filters kind (or a kind's prefix: run, member, review…), actor, project_id",
            query: [
                .wsID, .limit, .cursor, QueryParam("kind", "run.started, job.finished, review…"),
                QueryParam("actor", "a user id"), QueryParam("project_id", "a project"),
            ], reply: .json(Schema.page(Schema.any)), activity)
        r.add(
            .GET, "/api/collab/activity/stream", P.read,
            "The workspace's activity as it happens (SSE, each event's type is the item's kind, its id the item's); "
                + "resumes after Last-Event-ID or ?cursor=",
            query: [.wsID, .cursor], reply: .events(), activityStream)
        r.add(
            .GET, "/api/collab/notifications", Permission.authenticated,
            "Your notifications across workspaces, newest first, with unread_count; ?unread=1 for the unread only",
            query: [QueryParam("unread", "1: only the unread"), .limit, .cursor], reply: .json(Schema.any),
            notifications)
        r.add(
            .POST, "/api/collab/notifications/:nid/read", Permission.authenticated, "Mark one notification read",
            limit: 16 * 1024, body: .optional, reply: .json(Schema.any), markRead)
        r.add(
            .POST, "/api/collab/notifications/read-all", Permission.authenticated, "Mark every notification read",
            limit: 16 * 1024, body: .optional, reply: .json(Schema.any), markAllRead)
        r.add(
            .GET, "/api/collab/notifications/stream", Permission.authenticated,
            "Your notifications as they come (SSE `notification` with unread_count, `read` when the count drops); "
                + "resumes after Last-Event-ID",
            query: [.cursor], reply: .events(), notificationStream)
        r.add(
            .GET, "/api/collab/notification-settings", Permission.authenticated,
            "How you are told of each kind: in_app, email (batched, at most one mail per kind per 10 minutes) or off",
            reply: .json(Schema.any), settings)
        r.add(
            .PUT, "/api/collab/notification-settings", Permission.authenticated,
            "Set {settings: {kind: in_app|email|off}}", limit: 16 * 1024, reply: .json(Schema.any), putSettings)
        r.add(
            .POST, "/api/collab/invite", Permission.membersWrite,
            "Invite {ws_id, email, role}: a single-use link (seven days) is mailed; only owners invite owners",
            limit: 16 * 1024, reply: .json(Schema.any, status: .created), invite)
        r.add(
            .GET, "/api/collab/invitations", Permission.membersRead,
            "The workspace's invitations: pending, accepted, expired or revoked", query: [.wsID],
            reply: .json(Schema.page(Schema.any)), invitations)
        r.add(
            .DELETE, "/api/collab/invitations/:invitation", Permission.membersWrite, "Withdraw a pending invitation",
            query: [.wsID], reply: .noContent, revokeInvitation)
        r.add(
            .POST, "/api/collab/invitations/:invitation/accept", Permission.publicAccess,
            "Accept an invitation by its token: signed in (the invited, verified address) you join; without an "
                + "account send {name, password} to register through it",
            limit: 16 * 1024, body: .optional, reply: .json(Schema.any), accept)
        r.add(
            .POST, "/api/collab/request-review", P.write,
            "Ask for a review {ws_id, subject: {type: run|file|diff|job, id, path?, lines?}, reviewers: [user_id], "
                + "note}", limit: 16 * 1024, reply: .json(Schema.any, status: .created), requestReview)
        r.add(
            .GET, "/api/collab/reviews", P.read,
            "The workspace's reviews, newest first; ?state=open|approved|"
                + "changes_requested",
            query: [.wsID, QueryParam("state", "open, approved or changes_requested"), .limit, .cursor],
            reply: .json(Schema.page(Schema.any)), reviews)
        r.add(
            .GET, "/api/collab/reviews/:review_id", P.read,
            "A review with its reviewers, verdicts and comments; a run's also with its transcript, diffs and receipt",
            reply: .json(Schema.any), review)
        r.add(
            .POST, "/api/collab/reviews/:review_id/comments", P.write,
            "Comment {body, path?, line?}; @name mentions a member (notified)", limit: 64 * 1024,
            reply: .json(Schema.any, status: .created), comment)
        r.add(
            .POST, "/api/collab/reviews/:review_id/verdict", P.write,
            "A reviewer's verdict {verdict: approve|request_changes|comment}", limit: 16 * 1024,
            reply: .json(Schema.any),
            verdict)
        r.add(
            .POST, "/api/collab/share-link", P.write,
            "Share read-only {ws_id, subject: {type: run|file|receipt_chain, id, path? (a file's, id being the "
                + "project)}, expires_in_hours (≤ 720, default 72), password?} → {id, url, expires_at}; the token "
                + "is shown once",
            limit: 16 * 1024, reply: .json(Schema.any, status: .created), create)
        r.add(
            .GET, "/api/collab/share-links", P.read,
            "The workspace's share links: subject, state (active, expired, revoked), views", query: [.wsID],
            reply: .json(Schema.page(Schema.any)), list)
        r.add(
            .DELETE, "/api/collab/share-links/:link_id", P.write, "Revoke a share link at once",
            reply: .noContent, revoke)
        r.add(
            .GET, "/s/:token", Permission.anonymous,
            "A share link's page (…/s/<token>.json: the same as JSON); ?password= for a protected one; "
                + "404 unknown or "
                + "revoked, 410 expired, 401 without the password",
            query: [QueryParam("password", "the link's password, when it has one")], reply: .json(Schema.any), page)
    }

    // MARK: Activity

    @Sendable func activity(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        func filter(_ k: String) throws -> String? {
            guard let v = req.query[k], !v.isEmpty else { return nil }
            guard v.utf8.count <= 100 else { throw APIError.validation("\(k) is too long", field: k) }
            return v
        }
        return .json(
            try await collab.activity(
                wsID: try ctx.requireWorkspace().wsID, page: try PageRequest(query: req.query),
                kind: try filter("kind"),
                actor: try filter("actor"), projectID: try filter("project_id")))
    }

    @Sendable func activityStream(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        // A new follower hears what happens from now on; a resuming one gets what it missed.
        let topic = CollabFeed.activityTopic(try ctx.requireWorkspace().wsID)
        let now = try SSE.resumeCursor(req) == nil ? try await collab.bus.head(topic: topic) : 0
        return try collab.bus.sse(topic: topic, request: req, startingAt: now)
    }

    // MARK: Notifications

    @Sendable func notifications(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let unread = req.query["unread"]
        guard unread == nil || ["0", "1", "true", "false"].contains(unread ?? "") else {
            throw APIError.validation("unread must be 1 or 0", field: "unread")
        }
        return .json(
            try await collab.notifications(
                userID: try ctx.requirePrincipal().userID, unreadOnly: unread == "1" || unread == "true",
                page: try PageRequest(query: req.query)))
    }

    @Sendable func markRead(_ req: Request, _ ctx: RequestContext, _ input: JSONValue) async throws -> Response {
        .json(try await collab.markRead(userID: try ctx.requirePrincipal().userID, id: try ctx.parameter("nid")))
    }

    @Sendable func markAllRead(_ req: Request, _ ctx: RequestContext, _ input: JSONValue) async throws -> Response {
        .json(try await collab.markRead(userID: try ctx.requirePrincipal().userID, id: nil))
    }

    @Sendable func notificationStream(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let topic = CollabFeed.notificationTopic(try ctx.requirePrincipal().userID)
        let now = try SSE.resumeCursor(req) == nil ? try await collab.bus.head(topic: topic) : 0
        return try collab.bus.sse(topic: topic, request: req, startingAt: now)
    }

    @Sendable func settings(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await collab.settings(userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func putSettings(_ req: Request, _ ctx: RequestContext, _ input: SettingsInput) async throws -> Response {
        .json(try await collab.setSettings(userID: try ctx.requirePrincipal().userID, input))
    }

    // MARK: Invitations

    @Sendable func invite(_ req: Request, _ ctx: RequestContext, _ input: InviteInput) async throws -> Response {
        .json(
            try await collab.invite(
                input, access: try ctx.requireWorkspace(), by: try ctx.requirePrincipal(), ip: req.remoteAddress),
            status: .created)
    }

    @Sendable func invitations(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            JSONValue.object([
                "items": .array(try await collab.invitations(wsID: try ctx.requireWorkspace().wsID)),
                "next_cursor": .null,
            ]))
    }

    @Sendable func revokeInvitation(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await collab.revokeInvitation(
            try ctx.parameter("invitation"), wsID: try ctx.requireWorkspace().wsID, by: try ctx.requirePrincipal(),
            ip: req.remoteAddress)
        return Response(status: .noContent)
    }

    /// Open to anyone (the invited person may have no account); a signed-in browser must send its
    /// CSRF token, so no other site can make it join a workspace.
    @Sendable func accept(_ req: Request, _ ctx: RequestContext, _ input: AcceptInput) async throws -> Response {
        let principal = ctx[PrincipalKey.self]
        if let p = principal, p.sessionID != nil { try AccessMiddleware.checkCSRF(req, p) }
        if let p = principal, p.mfaPending { throw APIError.unauthenticated() }
        return .json(
            try await collab.accept(
                token: try ctx.parameter("invitation"), principal: principal, input, ip: req.remoteAddress),
            status: principal == nil ? .created : .ok)
    }

    // MARK: Reviews

    @Sendable func requestReview(_ req: Request, _ ctx: RequestContext, _ input: ReviewInput) async throws -> Response {
        .json(
            try await collab.requestReview(
                input, wsID: try ctx.requireWorkspace().wsID, by: try ctx.requirePrincipal(), ip: req.remoteAddress),
            status: .created)
    }

    @Sendable func reviews(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            try await collab.reviews(
                wsID: try ctx.requireWorkspace().wsID, state: req.query["state"].flatMap { $0.isEmpty ? nil : $0 },
                page: try PageRequest(query: req.query)))
    }

    @Sendable func review(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await collab.review(try ctx.parameter("review_id"), wsID: try ctx.requireWorkspace().wsID))
    }

    @Sendable func comment(_ req: Request, _ ctx: RequestContext, _ input: CommentInput) async throws -> Response {
        .json(
            try await collab.comment(
                try ctx.parameter("review_id"), wsID: try ctx.requireWorkspace().wsID, input,
                by: try ctx.requirePrincipal(), ip: req.remoteAddress), status: .created)
    }

    @Sendable func verdict(_ req: Request, _ ctx: RequestContext, _ input: VerdictInput) async throws -> Response {
        .json(
            try await collab.verdict(
                try ctx.parameter("review_id"), wsID: try ctx.requireWorkspace().wsID, input,
                by: try ctx.requirePrincipal(), ip: req.remoteAddress))
    }

    // MARK: Share links

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
