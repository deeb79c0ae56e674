import Foundation
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

/// Approvals: an action a rule marked `require_approval` waits here until someone else (or the
/// requester, when the rule allows it) approves or rejects it, or it expires. Agent runs wait on
/// `outcome(of:)`; a REST caller's parked action is resumed by the resumer its service registered.
public final class ApprovalService: ApprovalGate, Sendable {
    let store: ApprovalStore
    let bus: EventBus
    let clock: any Clock
    /// This instance: a run's parked call waits in the process that runs it.
    let instanceID: String
    let hooks: Hooks
    /// How long an approval stays pending (`--approval-ttl`).
    let ttl: TimeInterval
    struct Waiting {
        var waiters: [String: [CheckedContinuation<ApprovalOutcome, Never>]] = [:]
        /// Outcomes decided in this process, for a waiter that arrives just after the decision.
        var decided: [String: ApprovalOutcome] = [:]
    }
    let waiting = Mutex(Waiting())
    let resumers = Mutex<[String: @Sendable (ApprovedAction) async throws -> [String: JSONValue]]>([:])

    static let ttlFlag = "--approval-ttl"
    static let ttlOption = Config.Option.int(
        ttlFlag, env: "KILN_APPROVAL_TTL",
        help: "seconds an approval stays pending before it counts as rejected (default 3600)", range: 1...604_800)

    init(services: Services) {
        store = ApprovalStore(db: services.db)
        bus = services.bus
        clock = services.clock
        instanceID = services.instances.id
        hooks = services.hooks
        ttl = TimeInterval(services.config.int(Self.ttlFlag) ?? 3600)
    }

    /// Where approvers hear of new and decided approvals (`GET /api/approvals/events`).
    static func topic(_ wsID: String) -> String { "approvals:\(wsID)" }

    // MARK: ApprovalGate

    public func open(_ r: ApprovalRequest) async throws -> ApprovalTicket {
        let id = IDs.make("apv")
        let now = clock.now()
        let expires = now.addingTimeInterval(ttl)
        let context = String(decoding: try JSONCoding.encode(r.context), as: UTF8.self)
        let payload = r.resume.map { $0.payload.jsonText }
        let grants = try r.resume.map { String(decoding: try JSONCoding.encode($0.grants), as: UTF8.self) }
        let instance = instanceID
        try await store.db.write { [store] tx in
            try store.insert(
                tx, id: id, r, context: context, resumePayload: payload, resumeGrants: grants, instance: instance,
                at: now, expires: expires)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "approval.requested", actorUserID: r.requestedBy, wsID: r.wsID, resourceType: "approval",
                    resourceID: id,
                    details: [
                        "action": .string(r.action), "rule_id": r.decision.ruleId.map { .string($0) } ?? .null,
                        "run_id": r.runID.map { .string($0) } ?? .null,
                    ]), at: now)
        }
        if let row = try await store.get(id), let shown = try? Self.approval(row) {
            _ = try? await bus.publish(
                topic: Self.topic(r.wsID), type: "approval.required", data: shown.jsonText,
                scope: EventScope(wsID: r.wsID, actorID: r.requestedBy))
        }
        return ApprovalTicket(id: id, expiresAt: expires)
    }

    public func outcome(of id: String) async -> ApprovalOutcome {
        if let row = try? await store.get(id), let done = Self.outcome(row) { return done }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<ApprovalOutcome, Never>) in
                let now = waiting.withLock { w -> ApprovalOutcome? in
                    if let o = w.decided[id] { return o }
                    if Task.isCancelled { return .cancelled }
                    w.waiters[id, default: []].append(c)
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            // The run ended while it waited: the approval is withdrawn (nobody may approve it later).
            Task { try? await self.end(id, state: "cancelled", outcome: .cancelled, by: nil, reason: "the run ended") }
        }
    }

    public func onApproved(
        kind: String, _ resume: @escaping @Sendable (ApprovedAction) async throws -> [String: JSONValue]
    ) {
        resumers.withLock { $0[kind] = resume }
    }

    public func redeem(
        _ id: String, userID: String, action: String, context: PolicyContext
    ) async throws -> PolicyGrant {
        guard IDs.isValid(id, prefix: "apv"), let row = try await store.get(id) else {
            throw APIError.validation("No such approval", field: "approval_id")
        }
        let asked = try JSONCoding.decode(PolicyContext.self, from: Array((row.string("context") ?? "{}").utf8))
        guard asked == context,
            try await store.redeem(id, userID: userID, action: action, at: clock.now())
        else {
            throw HTTPError(
                .conflict,
                message: "This approval is not an approved \(action) of yours that is still to be collected "
                    + "(its state: \(row.string("state") ?? "unknown"))",
                details: ["field": "approval_id", "state": .string(row.string("state") ?? "")])
        }
        return PolicyGrant(approvalID: id, action: action, context: context)
    }

    /// The outcome a stored row already has (nil while pending).
    static func outcome(_ row: Row) -> ApprovalOutcome? {
        switch row.string("state") {
        case "approved": .approved(by: row.string("decided_by") ?? "")
        case "rejected":
            row.string("decision_reason") == "expired" && row.string("decided_by") == nil
                ? .expired : .rejected(by: row.string("decided_by"), reason: row.string("decision_reason"))
        case "cancelled": .cancelled
        default: nil
        }
    }

    // MARK: Deciding

    /// Approves or rejects a pending approval. Approval needs someone other than the requester unless
    /// the rule allowed self-approval; a parked REST action then runs as its requester.
    func decide(
        _ id: String, approve: Bool, userID: String, reason: String?, ip: String
    ) async throws -> JSONValue {
        if let reason, reason.utf8.count > 1000 { throw APIError.validation("reason is too long", field: "reason") }
        guard let row = try await store.get(id) else { throw APIError.notFound("No such approval") }
        let now = clock.now()
        guard row.string("state") == "pending" else {
            throw HTTPError(
                .conflict, message: "This approval is already \(row.string("state") ?? "decided")",
                details: ["state": .string(row.string("state") ?? "")])
        }
        if let exp = row.date("expires_at"), exp <= now {
            try await end(id, state: "rejected", outcome: .expired, by: nil, reason: "expired")
            throw HTTPError(.conflict, message: "This approval expired", details: ["state": "rejected"])
        }
        if approve, row.string("requested_by") == userID, row.bool("self_approval") != true {
            throw HTTPError(
                .forbidden,
                message: "You asked for this action; another member must approve it (the rule does not allow "
                    + "self-approval)")
        }
        let outcome: ApprovalOutcome = approve ? .approved(by: userID) : .rejected(by: userID, reason: reason)
        // Two approvers at once: one wins the update; the other is told, and the action runs once.
        guard
            try await end(
                id, state: approve ? "approved" : "rejected", outcome: outcome, by: userID, reason: reason, ip: ip)
        else {
            let state = try await store.get(id)?.string("state") ?? "decided"
            throw HTTPError(.conflict, message: "This approval is already \(state)", details: ["state": .string(state)])
        }
        if approve, let kind = row.string("resume_kind") { await resume(row, kind: kind) }
        return try await get(id)
    }

    /// Ends a pending approval (decision, expiry, withdrawal): stored and audited, its waiters woken,
    /// approvers told. Nothing happens (false) when it had ended already.
    @discardableResult
    func end(
        _ id: String, state: String, outcome: ApprovalOutcome, by userID: String?, reason: String?, ip: String? = nil
    ) async throws -> Bool {
        let now = clock.now()
        let row = try await store.db.write { [store] tx -> Row? in
            guard try store.decide(tx, id, state: state, by: userID, reason: reason, at: now),
                let row = try store.get(tx, id)
            else { return nil }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "approval.\(state)", actorUserID: userID, wsID: row.string("ws_id"),
                    resourceType: "approval", resourceID: id, ip: ip,
                    details: [
                        "action": .string(row.string("action") ?? ""), "reason": reason.map { .string($0) } ?? .null,
                        "run_id": row.string("run_id").map { .string($0) } ?? .null,
                    ]), at: now)
            return row
        }
        guard let row else { return false }
        let waiters = waiting.withLock { w -> [CheckedContinuation<ApprovalOutcome, Never>] in
            w.decided[id] = outcome
            if w.decided.count > 10_000 { w.decided.removeAll() }
            return w.waiters.removeValue(forKey: id) ?? []
        }
        for c in waiters { c.resume(returning: outcome) }
        if let shown = try? Self.approval(row) {
            let wsID = row.string("ws_id") ?? ""
            _ = try? await bus.publish(
                topic: Self.topic(wsID), type: "approval.resolved", data: shown.jsonText,
                scope: EventScope(wsID: wsID, actorID: row.string("decided_by")))
        }
        return true
    }

    /// Waiters whose approval another instance decided (it woke only its own): found in the table.
    /// Runs every second where instances share the database.
    func wakeDecidedElsewhere() async {
        let ids = waiting.withLock { Array($0.waiters.keys) }
        for id in ids {
            guard let row = try? await store.get(id), let outcome = Self.outcome(row) else { continue }
            let waiters = waiting.withLock { w -> [CheckedContinuation<ApprovalOutcome, Never>] in
                w.decided[id] = outcome
                return w.waiters.removeValue(forKey: id) ?? []
            }
            for c in waiters { c.resume(returning: outcome) }
        }
    }

    /// Runs an approved parked action as its requester; its ids (or its error) are kept on the approval.
    func resume(_ row: Row, kind: String) async {
        let id = row.string("id") ?? ""
        var result: [String: JSONValue]
        do {
            guard let resumer = resumers.withLock({ $0[kind] }) else {
                throw APIError.unavailable("Nothing on this server resumes \(kind)")
            }
            let context = try JSONCoding.decode(PolicyContext.self, from: Array((row.string("context") ?? "{}").utf8))
            var grants =
                (try? JSONCoding.decode([PolicyGrant].self, from: Array((row.string("resume_grants") ?? "[]").utf8)))
                ?? []
            grants.append(PolicyGrant(approvalID: id, action: row.string("action") ?? "", context: context))
            let payload = try JSONDecoder().decode(
                JSONValue.self, from: Data((row.string("resume_payload") ?? "{}").utf8))
            result = try await resumer(
                ApprovedAction(
                    approvalID: id, wsID: row.string("ws_id") ?? "", userID: row.string("requested_by") ?? "",
                    payload: payload, grants: grants))
        } catch let pending as ApprovalPending {
            // The action needs a further approval (a secret it uses, say): the chain continues there.
            result = ["approval_id": .string(pending.ticket.id)]
        } catch let e as any HTTPResponseError {
            result = ["error": ["code": .string(e.code), "message": .string(e.message)]]
        } catch {
            result = ["error": ["code": "internal", "message": "The approved action could not be started"]]
        }
        try? await store.setResult(id, JSONValue.object(result).jsonText)
    }

    /// Pending approvals past their time count as rejected.
    func expireDue() async throws {
        for row in try await store.due(at: clock.now()) {
            try await end(row.string("id") ?? "", state: "rejected", outcome: .expired, by: nil, reason: "expired")
        }
    }

    /// A run's parked call waits in its server's process: when that server stopped (a restart, a
    /// lost instance), the run's pending approvals are withdrawn.
    func recover(alive: Set<String>) async throws {
        for row in try await store.pendingForRuns() where !alive.contains(row.string("instance_id") ?? "") {
            try await end(
                row.string("id") ?? "", state: "cancelled", outcome: .cancelled, by: nil,
                reason: "the server restarted; the run ended")
        }
    }

    // MARK: Reading

    func get(_ id: String) async throws -> JSONValue {
        guard IDs.isValid(id, prefix: "apv"), let row = try await store.get(id) else {
            throw APIError.notFound("No such approval")
        }
        return try Self.approval(row, now: clock.now())
    }

    func list(wsID: String, state: String?, page: PageRequest) async throws -> Page<JSONValue> {
        if let state, !["pending", "approved", "rejected", "cancelled"].contains(state) {
            throw APIError.validation("state must be pending, approved, rejected or cancelled", field: "state")
        }
        let rows = try await store.list(wsID, state: state, page: page)
        let now = clock.now()
        let items = try rows.map { try Self.approval($0, now: now) }
        var next: String? = nil
        if rows.count > page.limit {
            let last = rows[page.limit - 1]
            next = PageRequest.encodeCursor(
                PageRequest.timeCursorKey(last.date("created_at") ?? Date(), id: last.string("id") ?? ""))
        }
        return Page(items: Array(items.prefix(page.limit)), nextCursor: next)
    }

    func workspaceOf(_ id: String) async throws -> String? {
        guard IDs.isValid(id, prefix: "apv") else { return nil }
        return try await store.workspaceOf(id)
    }

    /// An approval as served. A pending one past its time shows as `rejected` (expired) already,
    /// whether or not the sweeper has come by.
    static func approval(_ r: Row, now: Date? = nil) throws -> JSONValue {
        func date(_ k: String) -> JSONValue { r.date(k).map { .string(HTTPDate.iso8601($0)) } ?? .null }
        func text(_ k: String) -> JSONValue { r.string(k).map { .string($0) } ?? .null }
        func json(_ k: String) -> JSONValue {
            r.string(k).flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) } ?? .null
        }
        var o: [String: JSONValue] = [
            "id": text("id"), "approval_id": text("id"), "ws_id": text("ws_id"), "action": text("action"),
            "context": json("context"), "rule_id": text("rule_id"), "reason": text("reason"),
            "self_approval": .bool(r.bool("self_approval") ?? false), "requested_by": text("requested_by"),
            "run_id": text("run_id"), "call_id": text("call_id"), "state": text("state"),
            "created_at": date("created_at"), "expires_at": date("expires_at"), "decided_by": text("decided_by"),
            "decided_at": date("decided_at"), "decision_reason": text("decision_reason"), "result": json("result"),
            "expired": .bool(r.string("decision_reason") == "expired" && r.string("decided_by") == nil),
            "redeemed_at": date("redeemed_at"),
        ]
        if let now, r.string("state") == "pending", let exp = r.date("expires_at"), exp <= now {
            o["state"] = "rejected"
            o["decision_reason"] = "expired"
            o["expired"] = true
        }
        if case .object(let res) = o["result"] ?? .null {
            for k in ["job_id", "pty_id", "project_id"] where res[k] != nil { o[k] = res[k] }
            // A parked agent-run start: the run it started once approved (a tool call's approval names
            // the run waiting on it instead).
            if o["run_id"] == .null, let started = res["run_id"] { o["run_id"] = started }
        }
        return .object(o)
    }
}
