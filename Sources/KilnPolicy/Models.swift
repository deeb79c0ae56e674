import Foundation
import KilnCore
import KilnHTTP

/// One version of a workspace's policy, as stored and answered.
public struct PolicyVersion: Codable, Sendable, NullEncoding {
    public let version: Int
    public let createdAt: Date
    public let createdBy: String?
}

/// `POST /api/policies/evaluate`.
struct EvaluateInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "action"]
    let wsId: String?
    let action: String
    let context: PolicyContext?
}

/// The limits of a document.
enum PolicyLimits {
    static let maxRules = 1000
    static let maxDocumentBytes = 512 * 1024
    static let ruleKeys: Set<String> = ["id", "action", "effect", "when", "reason", "self_approval"]
    static let whenKeys: Set<String> = [
        "command", "path", "host", "secret", "actor_role", "actor_kind", "cost_usd_micros",
    ]
    static let actorKinds: Set<String> = ["user", "api_key", "agent"]
}

/// `POST /api/approvals/:approval_id/approve|reject`.
struct DecisionInput: Decodable, Sendable {
    let reason: String?
}
