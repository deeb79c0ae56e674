import Foundation
import KilnHTTP

/// An approval given for one action with one context: passed back into the service when the parked
/// action is resumed, so the same policy check lets exactly that action through (and nothing else).
public struct PolicyGrant: Codable, Sendable, Equatable {
    public let approvalId: String
    public let action: String
    public let context: PolicyContext

    public init(approvalID: String, action: String, context: PolicyContext) {
        approvalId = approvalID
        self.action = action
        self.context = context
    }
}

/// `require_approval` met by a caller: what would have run, and the rule that asked. Services that
/// can park their action catch it (`ApprovalGate.parking`); anywhere else it is a 403 that says so.
public struct ApprovalNeeded: HTTPResponseError, Sendable {
    public let action: String
    public let context: PolicyContext
    public let decision: PolicyDecision

    public init(action: String, context: PolicyContext, decision: PolicyDecision) {
        self.action = action
        self.context = context
        self.decision = decision
    }

    public var status: HTTPStatus { .forbidden }
    public var code: String { "policy_denied" }
    public var message: String {
        "The workspace's policy requires an approval for \(action)" + (decision.ruleId.map { " (rule \($0))" } ?? "")
            + ", and this request cannot wait for one"
    }
    public var details: [String: JSONValue] {
        ["rule_id": decision.ruleId.map { .string($0) } ?? .null, "effect": "require_approval"]
    }
}

extension PolicyEngine {
    /// Throws the 403 for `deny` and `ApprovalNeeded` for `require_approval`, unless one of `grants`
    /// approved this very action and context.
    public func check(
        wsID: String, userID: String?, action: String, context: PolicyContext, grants: [PolicyGrant]
    ) async throws {
        let d = try await decide(wsID: wsID, userID: userID, action: action, context: context)
        switch d.effect {
        case .allow: return
        case .deny: throw d.denial
        case .requireApproval:
            if grants.contains(where: { $0.action == action && $0.context == context }) { return }
            throw ApprovalNeeded(action: action, context: context, decision: d)
        }
    }
}

/// What an approval asks for.
public struct ApprovalRequest: Sendable {
    public var wsID: String
    public var action: String
    public var context: PolicyContext
    public var decision: PolicyDecision
    public var requestedBy: String
    /// The agent run that waits for it (nil: a REST caller's parked action).
    public var runID: String?
    public var callID: String?
    /// A parked REST action: the resumer registered under `kind` gets `payload` and the grants back.
    public var resume: Resume?

    public struct Resume: Sendable {
        public let kind: String
        public let payload: JSONValue
        /// Approvals the action already had (one action may need several, e.g. a command and a secret).
        public let grants: [PolicyGrant]
        public init(kind: String, payload: JSONValue, grants: [PolicyGrant]) {
            self.kind = kind
            self.payload = payload
            self.grants = grants
        }
    }

    public init(
        wsID: String, action: String, context: PolicyContext, decision: PolicyDecision, requestedBy: String,
        runID: String? = nil, callID: String? = nil, resume: Resume? = nil
    ) {
        self.wsID = wsID
        self.action = action
        self.context = context
        self.decision = decision
        self.requestedBy = requestedBy
        self.runID = runID
        self.callID = callID
        self.resume = resume
    }
}

/// How an approval ended.
public enum ApprovalOutcome: Sendable, Equatable {
    case approved(by: String)
    case rejected(by: String?, reason: String?)
    /// Nobody decided before `expires_at` (it counts as a rejection).
    case expired
    /// The run that waited ended first, or the server restarted.
    case cancelled

    public var isApproved: Bool { if case .approved = self { true } else { false } }
}

/// A pending approval as its requester first sees it.
public struct ApprovalTicket: Sendable {
    public let id: String
    public let expiresAt: Date
    public init(id: String, expiresAt: Date) {
        self.id = id
        self.expiresAt = expiresAt
    }
}

/// What a resumer is handed when a parked REST action is approved.
public struct ApprovedAction: Sendable {
    public let approvalID: String
    public let wsID: String
    /// Who asked (the action runs as them, with their current role).
    public let userID: String
    public let payload: JSONValue
    /// The grants to pass back into the service: the earlier ones and this approval's.
    public let grants: [PolicyGrant]
    public init(approvalID: String, wsID: String, userID: String, payload: JSONValue, grants: [PolicyGrant]) {
        self.approvalID = approvalID
        self.wsID = wsID
        self.userID = userID
        self.payload = payload
        self.grants = grants
    }
}

extension ApprovedAction {
    /// The requester's access as it is now: the action runs with the role they hold when it is
    /// approved, and not at all when that role no longer grants `permission`.
    public func access(_ hooks: Hooks, needs permission: Permission) async throws -> WorkspaceAccess {
        guard let role = try await hooks.roles?.role(userID: userID, wsID: wsID), role >= permission.minimumRole else {
            throw HTTPError(
                .forbidden,
                message: "The requester no longer holds \(permission.name) in this workspace; the action did not run")
        }
        return WorkspaceAccess(wsID: wsID, role: role)
    }

    /// The payload decoded as the request body it was.
    public func input<T: Decodable>(_ type: T.Type, _ key: String = "input") throws -> T {
        guard case .object(let o) = payload, let v = o[key] else {
            throw APIError.validation("missing \(key)", field: key)
        }
        return try JSONCoding.decode(type, from: Array(v.jsonText.utf8))
    }

    /// A text field of the payload.
    public func text(_ key: String) -> String? {
        if case .object(let o) = payload, case .string(let s) = o[key] ?? .null { return s }
        return nil
    }
}

/// Approvals, as the services that act see them (implemented by the policy domain).
public protocol ApprovalGate: Sendable {
    /// Stores a pending approval and tells the approvers.
    func open(_ request: ApprovalRequest) async throws -> ApprovalTicket
    /// Waits until the approval is decided, expires or is withdrawn (a cancelled task withdraws it).
    func outcome(of id: String) async -> ApprovalOutcome
    /// Registers what happens when a parked action of `kind` is approved; returns the ids it made
    /// (`{"job_id": …}`), shown on the approval.
    func onApproved(kind: String, _ resume: @escaping @Sendable (ApprovedAction) async throws -> [String: JSONValue])
    /// An approved action its requester collects themselves (a reveal, whose answer cannot be sent
    /// later): the grant for `action` on `context`, once, to the requester only; 409 when it is not
    /// approved, already used, or for something else.
    func redeem(_ id: String, userID: String, action: String, context: PolicyContext) async throws -> PolicyGrant
}

/// A REST action parked for an approval: answered 202 `{approval_id, state, expires_at, …}`.
public struct ApprovalPending: EarlyResponse, Sendable {
    public let ticket: ApprovalTicket
    public let needed: ApprovalNeeded

    public var response: Response {
        .json(
            JSONValue.object([
                "approval_id": .string(ticket.id), "state": "pending", "action": .string(needed.action),
                "rule_id": needed.decision.ruleId.map { .string($0) } ?? .null,
                "reason": needed.decision.reason.map { .string($0) } ?? .null,
                "expires_at": .string(HTTPDate.iso8601(ticket.expiresAt)),
                "approval_url": .string("/api/approvals/\(ticket.id)"),
            ]), status: .accepted)
    }
}

extension Optional where Wrapped == any ApprovalGate {
    /// Runs `body`; when it meets `require_approval`, parks the action (`kind` + `payload` are what
    /// the registered resumer gets back) and throws `ApprovalPending` (202). Without a gate the
    /// refusal stands.
    public func parking<T: Sendable>(
        wsID: String, userID: String, kind: String, payload: JSONValue, grants: [PolicyGrant],
        _ body: () async throws -> T
    ) async throws -> T {
        do {
            return try await body()
        } catch let need as ApprovalNeeded {
            guard let gate = self else { throw need }
            let ticket = try await gate.open(
                ApprovalRequest(
                    wsID: wsID, action: need.action, context: need.context, decision: need.decision,
                    requestedBy: userID,
                    resume: .init(kind: kind, payload: payload, grants: grants)))
            throw ApprovalPending(ticket: ticket, needed: need)
        }
    }
}
