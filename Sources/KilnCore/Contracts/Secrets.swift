import Foundation

/// A secret handed to one use (a job, a terminal, an agent run): its name and value. Kept in memory
/// only as long as that use runs.
public struct SecretValue: Sendable, Equatable {
    public let name: String
    public let value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// What the secrets domain offers the ones that run things: values by name, checked (known, not
/// expired, long enough to redact), audited and marked as used. 400 names the secret at fault.
public protocol SecretProvider: Sendable {
    /// `grants`: approvals the use was given (for `secrets.use` rules that require one).
    func use(
        _ names: [String], wsID: String, userID: String, purpose: String, grants: [PolicyGrant]
    ) async throws -> [SecretValue]
}

extension SecretProvider {
    public func use(_ names: [String], wsID: String, userID: String, purpose: String) async throws -> [SecretValue] {
        try await use(names, wsID: wsID, userID: userID, purpose: purpose, grants: [])
    }
}
