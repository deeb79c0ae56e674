import Foundation
import KilnHTTP

/// An agent run's usage so far (what budgets book).
public struct RunUsage: Sendable {
    public let runID: String
    public let wsID: String
    public let userID: String
    public let model: String
    public let inputTokens: Int
    public let outputTokens: Int
    public let steps: Int

    public init(
        runID: String, wsID: String, userID: String, model: String, inputTokens: Int, outputTokens: Int, steps: Int
    ) {
        self.runID = runID
        self.wsID = wsID
        self.userID = userID
        self.model = model
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.steps = steps
    }
}

/// A finished run, as receipts record it.
public struct RunRecord: Sendable {
    public struct Call: Sendable {
        public let callID: String
        public let tool: String
        public let argsSHA256: String
        public let ok: Bool
        public init(callID: String, tool: String, argsSHA256: String, ok: Bool) {
            self.callID = callID
            self.tool = tool
            self.argsSHA256 = argsSHA256
            self.ok = ok
        }
    }

    public struct FileChange: Sendable {
        public let path: String
        public let before: String?
        public let after: String?
        public init(path: String, before: String?, after: String?) {
            self.path = path
            self.before = before
            self.after = after
        }
    }

    public struct Finding: Sendable {
        public let path: String
        public let line: Int
        public let claim: String
        public let evidenceSHA256: String
        /// The evidence itself (kept beside the receipt for re-checking, not in the signed body).
        public let evidence: String
        public init(path: String, line: Int, claim: String, evidenceSHA256: String, evidence: String) {
            self.path = path
            self.line = line
            self.claim = claim
            self.evidenceSHA256 = evidenceSHA256
            self.evidence = evidence
        }
    }

    /// A decision on one of the run's tool calls that a rule held for approval.
    public struct Approval: Sendable {
        public let approvalID: String
        public let callID: String
        public let action: String
        /// `approved`, `rejected`, `expired` or `cancelled`.
        public let decision: String
        public let decidedBy: String?
        public let decidedAt: Date
        public init(
            approvalID: String, callID: String, action: String, decision: String, decidedBy: String?, decidedAt: Date
        ) {
            self.approvalID = approvalID
            self.callID = callID
            self.action = action
            self.decision = decision
            self.decidedBy = decidedBy
            self.decidedAt = decidedAt
        }
    }

    public let runID: String
    public let wsID: String
    public let projectID: String
    public let userID: String
    public let model: String
    public let prompt: String
    public let status: String
    public let startedAt: Date
    public let endedAt: Date
    public let inputTokens: Int
    public let outputTokens: Int
    public let steps: Int
    public let calls: [Call]
    public let files: [FileChange]
    public let findings: [Finding]
    public let approvals: [Approval]

    public init(
        runID: String, wsID: String, projectID: String, userID: String, model: String, prompt: String, status: String,
        startedAt: Date, endedAt: Date, inputTokens: Int, outputTokens: Int, steps: Int, calls: [Call],
        files: [FileChange], findings: [Finding], approvals: [Approval] = []
    ) {
        self.approvals = approvals
        self.runID = runID
        self.wsID = wsID
        self.projectID = projectID
        self.userID = userID
        self.model = model
        self.prompt = prompt
        self.status = status
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.steps = steps
        self.calls = calls
        self.files = files
        self.findings = findings
    }
}

/// Follows agent runs (budgets, receipts): the agents domain calls every observer the application
/// handed it, in order.
public protocol RunObserver: Sendable {
    /// Throws to refuse the start (402 when a budget cap is reached).
    func runWillStart(wsID: String, userID: String, model: String) async throws
    /// After each model turn; a returned reason (`budget_exceeded`) stops the run.
    func runUsage(_ usage: RunUsage) async throws -> String?
    func runEnded(_ record: RunRecord) async
}

extension RunObserver {
    public func runWillStart(wsID: String, userID: String, model: String) async throws {}
    public func runUsage(_ usage: RunUsage) async throws -> String? { nil }
    public func runEnded(_ record: RunRecord) async {}
}

/// A tool a model may call: its name, what it does and its JSON Schema.
public struct ToolDescriptor: Sendable {
    public let name: String
    public let description: String
    public let schema: JSONValue
    public init(name: String, description: String, schema: JSONValue) {
        self.name = name
        self.description = description
        self.schema = schema
    }
}

/// The built-in agent tools (implemented by the agents domain; budgets count their size in a prompt).
public protocol ToolCatalog: Sendable {
    var tools: [ToolDescriptor] { get }
}

/// What model use costs (implemented by the budget domain; receipts record it).
public protocol Pricing: Sendable {
    /// Cost in micro-dollars, rounded up; unknown models cost 0.
    func cost(model: String, input: Int, output: Int) -> Int
}

/// About four characters per token: the usual rough rule, used when a provider reports no usage.
public func estimateTokens(_ text: String) -> Int { max(1, (text.utf8.count + 3) / 4) }
