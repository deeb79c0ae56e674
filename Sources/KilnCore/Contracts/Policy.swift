import Foundation
import KilnHTTP

/// What a policy decides for one action.
public enum PolicyEffect: String, Codable, Sendable, CaseIterable {
    case allow, deny
    case requireApproval = "require_approval"
}

/// The facts an action is judged on (each rule condition reads one of them).
public struct PolicyContext: Codable, Sendable, Equatable {
    public var command: String?
    public var path: String?
    public var host: String?
    public var secret: String?
    public var actorRole: String?
    /// `user`, `api_key` or `agent`.
    public var actorKind: String?
    public var costUsdMicros: Int?

    public init(
        command: String? = nil, path: String? = nil, host: String? = nil, secret: String? = nil,
        actorRole: String? = nil, actorKind: String? = nil, costUsdMicros: Int? = nil
    ) {
        self.command = command
        self.path = path
        self.host = host
        self.secret = secret
        self.actorRole = actorRole
        self.actorKind = actorKind
        self.costUsdMicros = costUsdMicros
    }
}

public struct PolicyDecision: Codable, Sendable, Equatable {
    public let effect: PolicyEffect
    /// The rule that decided (nil: the family's default or the built-in allow).
    public let ruleId: String?
    public let reason: String?
    /// For `require_approval`: whether the requester may approve their own request (the rule's
    /// `self_approval`; by default someone else must).
    public let selfApproval: Bool

    public init(effect: PolicyEffect, ruleID: String?, reason: String?, selfApproval: Bool = false) {
        self.effect = effect
        ruleId = ruleID
        self.reason = reason
        self.selfApproval = selfApproval
    }

    /// The refusal a caller gets for `deny`: 403 `policy_denied` naming the rule.
    public var denial: HTTPError {
        HTTPError(
            .forbidden, code: "policy_denied",
            message: "Denied by the workspace's policy" + (ruleId.map { " (rule \($0))" } ?? "")
                + (reason.map { ": \($0)" } ?? ""),
            details: ["rule_id": ruleId.map { .string($0) } ?? .null])
    }
}

/// The one place actions are judged: the services that act ask it before acting (not the routes), so
/// REST, agent and later MCP paths meet the same rules.
public protocol PolicyEngine: Sendable {
    func decide(wsID: String, userID: String?, action: String, context: PolicyContext) async throws -> PolicyDecision
}

extension PolicyEngine {
    /// Throws the 403 for `deny` and `ApprovalNeeded` for `require_approval` (a caller that can park
    /// the action catches it; anywhere else it is a 403 too).
    public func check(wsID: String, userID: String?, action: String, context: PolicyContext) async throws {
        try await check(wsID: wsID, userID: userID, action: action, context: context, grants: [])
    }
}

/// The actions policies know (a rule naming anything else is refused with the name).
public enum PolicyActions {
    public static let agentTools = [
        "list_files", "read_file", "search", "find_symbol", "edit_file", "write_file", "run_command", "run_tests",
        "record_finding", "read_notebook", "run_cell",
    ]
    public static let fixed =
        agentTools.map { "agent.tool." + $0 } + [
            "shell.run", "shell.test", "ssh.run", "ssh.pull", "pty.open", "secrets.use", "secrets.reveal",
            "network.connect", "notebook.run", "webhook.deliver", "workflow.run",
        ]
    /// Families, for defaults: `agent.tool`, `mcp`, `shell`, `ssh`, `pty`, `secrets`, `network`, …
    public static let families = [
        "agent.tool", "mcp", "shell", "ssh", "pty", "secrets", "network", "notebook", "webhook", "workflow",
    ]

    public static func family(of action: String) -> String {
        if action.hasPrefix("agent.tool.") { return "agent.tool" }
        return String(action.split(separator: ".", maxSplits: 1).first ?? "")
    }

    /// A concrete action: a fixed one, or an MCP tool `mcp.<server>.<tool>`.
    public static func isKnown(_ action: String) -> Bool {
        if fixed.contains(action) { return true }
        let parts = action.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0] == "mcp" && !parts[1].isEmpty && !parts[2].isEmpty
    }

    /// A rule's action: a known action, or a pattern with `*` whose fixed start begins some action.
    public static func isValidPattern(_ pattern: String) -> Bool {
        guard let star = pattern.firstIndex(of: "*") else { return isKnown(pattern) }
        let prefix = String(pattern[..<star])
        return prefix.isEmpty || fixed.contains { $0.hasPrefix(prefix) } || "mcp.".hasPrefix(prefix)
            || prefix.hasPrefix("mcp.")
    }
}
