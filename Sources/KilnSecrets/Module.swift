import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum SecretsPermission {
    public static let list = Permission(
        "secrets:list", "See a workspace's secret names, versions and when they were used (never values)",
        minimumRole: .member)
    public static let reveal = Permission(
        "secrets:reveal", "Read a secret's value (with step-up, never with an API key)", minimumRole: .admin)
    public static let write = Permission("secrets:write", "Set and delete a workspace's secrets", minimumRole: .admin)
}

/// Secrets: values a workspace keeps encrypted (envelope encryption under the master key) and hands
/// to jobs, terminals and agent runs by name, never to logs or transcripts.
public struct SecretsModule: KilnModule {
    public let name = "secrets"
    /// What other domains use (`SecretProvider`): values by name, for one use, audited.
    public let service: SecretsService

    public init(
        services: Services, policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        service = SecretsService(services: services, policy: policy, approvals: approvals)
        let store = service.store
        services.hooks.onWorkspaceDeleted { tx, ws in try store.purgeWorkspace(tx, ws) }
    }

    public var migrations: [Migration] { SecretsMigrations.all }
    static let crashFlag = "--test-crash-at"
    #if DEBUG
        /// Debug builds only: SIGKILL at the N-th crash point of a master key rotation (crash tests).
        public static var configOptions: [Config.Option] {
            [
                .int(
                    crashFlag, env: "KILN_TEST_CRASH_AT", help: "debug builds: crash at the N-th rotation step",
                    range: 1...1_000_000)
            ]
        }
    #endif
    public var permissions: [Permission] {
        [SecretsPermission.list, SecretsPermission.reveal, SecretsPermission.write]
    }

    public func register(_ routes: Routes) { SecretsRoutes(secrets: service).register(routes) }
}
