import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum PolicyPermission {
    public static let read = Permission(
        "policy:read", "See the workspace's policy and its history", minimumRole: .member)
    public static let manage = Permission(
        "policy:manage", "Change the workspace's policy (what agents and jobs may do)", minimumRole: .admin)
}

/// Policies: per workspace, an ordered list of rules deciding allow, deny or require approval for
/// each action an agent, a job, a terminal or a secret use is about to take.
public struct PolicyModule: KilnModule {
    public let name = "policy"
    /// The `PolicyEngine` the acting services ask.
    public let service: PolicyService

    public init(services: Services) { service = PolicyService(services: services) }

    public var migrations: [Migration] { PolicyMigrations.all }
    public var permissions: [Permission] { [PolicyPermission.read, PolicyPermission.manage] }

    public func register(_ routes: Routes) { PolicyRoutes(policy: service).register(routes) }

    public static var commands: [Command] {
        [
            Command(
                name: "policy", usage: "policy bench [--rules N]",
                help: "time policy decisions (for scripts/bench/policy.sh)",
                run: PolicyBench.run)
        ]
    }
}
