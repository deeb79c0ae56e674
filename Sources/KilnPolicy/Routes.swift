import Foundation
import KilnCore
import KilnHTTP

/// `/api/policies/*`: the workspace's policy (versioned, If-Match), a dry-run evaluation, history.
struct PolicyRoutes: Sendable {
    let policy: PolicyService

    func register(_ routes: Routes) {
        let r = routes.tagged("policies")
        r.add(
            .GET, "/api/policies", PolicyPermission.read,
            "The policy in force: {version, rules, defaults}; ETag is the version (send it back as If-Match)",
            query: [.wsID], reply: .json(Schema.any), get)
        r.add(
            .PUT, "/api/policies", PolicyPermission.manage,
            "Replace the policy (a new version): rules {id, action, effect: allow|deny|require_approval, when?, "
                + "reason?} (the first matching rule wins) and defaults per action family; unknown fields, actions or "
                + "conditions are "
                + "a 400 naming them; 412 when If-Match is not the current version",
            limit: PolicyLimits.maxDocumentBytes, reply: .json(Schema.any), put)
        r.add(
            .POST, "/api/policies/evaluate", PolicyPermission.read,
            "A dry run: what the policy decides for {action, context} → {effect, rule_id, reason}", limit: 64 * 1024,
            reply: .of(PolicyDecision.self), evaluate)
        r.add(
            .GET, "/api/policies/history", PolicyPermission.read,
            "Every version with who made it and when, newest first",
            query: [.wsID] + QueryParam.paging, reply: .page(of: PolicyVersion.self), history)
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let doc = try await policy.document(wsID: try ctx.requireWorkspace().wsID)
        var res = Response.json(doc)
        if case .object(let o) = doc, case .int(let v) = o["version"] ?? .null { res.headers["ETag"] = "\"\(v)\"" }
        return res
    }

    @Sendable func put(_ req: Request, _ ctx: RequestContext, _ body: JSONValue) async throws -> Response {
        var ifMatch: Int? = nil
        if let h = req.headers["If-Match"] {
            guard let v = Int(h.trimmingCharacters(in: CharacterSet(charactersIn: "\" W/"))) else {
                throw APIError.validation("If-Match must be the policy's ETag (its version)", field: "If-Match")
            }
            ifMatch = v
        }
        let access = try ctx.requireWorkspace()
        _ = try await policy.put(
            wsID: access.wsID, body: body, ifMatch: ifMatch, userID: try ctx.requirePrincipal().userID,
            ip: req.remoteAddress)
        let doc = try await policy.document(wsID: access.wsID)
        var res = Response.json(doc)
        if case .object(let o) = doc, case .int(let v) = o["version"] ?? .null { res.headers["ETag"] = "\"\(v)\"" }
        return res
    }

    @Sendable func evaluate(_ req: Request, _ ctx: RequestContext, _ input: EvaluateInput) async throws -> Response {
        guard PolicyActions.isKnown(input.action) else {
            throw APIError.validation("Unknown action '\(input.action)'", field: "action")
        }
        return try .json(
            try await policy.decide(
                wsID: try ctx.requireWorkspace().wsID, userID: try ctx.requirePrincipal().userID, action: input.action,
                context: input.context ?? PolicyContext()))
    }

    @Sendable func history(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            try await policy.history(wsID: try ctx.requireWorkspace().wsID, page: try PageRequest(query: req.query)))
    }
}

/// `/api/approvals/*`: the actions parked by `require_approval`, and their decisions.
struct ApprovalRoutes: Sendable {
    let approvals: ApprovalService

    func register(_ routes: Routes) {
        let r = routes.tagged("approvals")
        r.add(
            .GET, "/api/approvals", PolicyPermission.readApprovals,
            "Approvals of the workspace, newest first (state=pending for those waiting)",
            query: [.wsID, QueryParam("state", "pending, approved, rejected or cancelled")] + QueryParam.paging,
            reply: .json(Schema.page(Schema.any)), list)
        r.add(
            .GET, "/api/approvals/events", PolicyPermission.readApprovals,
            "SSE: approval.required and approval.resolved from now on "
                + "(Last-Event-ID or cursor= resumes after that event)",
            query: [.wsID, QueryParam("cursor", "resume after this event id")], reply: .events(), events)
        r.add(
            .GET, "/api/approvals/:approval_id", PolicyPermission.readApprovals,
            "One approval: {id, action, context, rule_id, requested_by, run_id, state, expires_at, decided_by, "
                + "result {job_id | pty_id | error}}",
            reply: .json(Schema.any), get)
        r.add(
            .POST, "/api/approvals/:approval_id/approve", PolicyPermission.decide,
            "Approve (step-up; not by the requester unless the rule allows self-approval): the waiting run goes on, "
                + "a parked request runs and its job id shows on the approval; 409 when no longer pending",
            limit: 4096, body: .optional, reply: .json(Schema.any), approve)
        r.add(
            .POST, "/api/approvals/:approval_id/reject", PolicyPermission.decide,
            "Reject with {reason}: the run gets a tool result saying so, a parked request never runs", limit: 4096,
            body: .optional, reply: .json(Schema.any), reject)
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            try await approvals.list(
                wsID: try ctx.requireWorkspace().wsID, state: req.query["state"].flatMap { $0.isEmpty ? nil : $0 },
                page: try PageRequest(query: req.query)))
    }

    @Sendable func events(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        // A new follower hears what happens from now on; a resuming one gets what it missed.
        let topic = ApprovalService.topic(try ctx.requireWorkspace().wsID)
        let now = try SSE.resumeCursor(req) == nil ? try await approvals.bus.head(topic: topic) : 0
        return try approvals.bus.sse(topic: topic, request: req, startingAt: now)
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        _ = try ctx.requireWorkspace()
        return .json(try await approvals.get(try ctx.parameter("approval_id")))
    }

    @Sendable func approve(_ req: Request, _ ctx: RequestContext, _ input: DecisionInput) async throws -> Response {
        let p = try ctx.requirePrincipal()
        try p.requireStepUp(now: approvals.clock.now())
        _ = try ctx.requireWorkspace()
        return .json(
            try await approvals.decide(
                try ctx.parameter("approval_id"), approve: true, userID: p.userID, reason: input.reason,
                ip: req.remoteAddress))
    }

    @Sendable func reject(_ req: Request, _ ctx: RequestContext, _ input: DecisionInput) async throws -> Response {
        let p = try ctx.requirePrincipal()
        _ = try ctx.requireWorkspace()
        return .json(
            try await approvals.decide(
                try ctx.parameter("approval_id"), approve: false, userID: p.userID, reason: input.reason,
                ip: req.remoteAddress))
    }
}
