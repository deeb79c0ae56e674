import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum PolicyPermission {
    public static let read = Permission(
        "policy:read", "See the workspace's policy and its history", minimumRole: .member)
    public static let manage = Permission(
        "policy:manage", "Change the workspace's policy (what agents and jobs may do)", minimumRole: .admin)
    public static let readApprovals = Permission(
        "approvals:read", "See the workspace's approvals (actions waiting for a decision, and past ones)",
        minimumRole: .viewer)
    public static let decide = Permission(
        "approvals:decide", "Approve or reject actions the policy parked for an approval", minimumRole: .member)
}

/// Policies: per workspace, an ordered list of rules deciding allow, deny or require approval for
/// each action an agent, a job, a terminal or a secret use is about to take.
public struct PolicyModule: KilnModule {
    public let name = "policy"
    /// The `PolicyEngine` the acting services ask.
    public let service: PolicyService
    /// The `ApprovalGate` they park actions at.
    public let approvals: ApprovalService

    public init(services: Services) {
        service = PolicyService(services: services)
        approvals = ApprovalService(services: services)
        let a = approvals
        services.hooks.onWorkspaceDeleted { [store = service.store] tx, ws in try store.purgeWorkspace(tx, ws) }
        services.hooks.workspaceOf(param: "approval_id") { id in try await a.workspaceOf(id) }
        services.instances.onRecover("approvals") { alive in try await a.recover(alive: alive) }
    }

    public var migrations: [Migration] { PolicyMigrations.all }
    public var permissions: [Permission] {
        [PolicyPermission.read, PolicyPermission.manage, PolicyPermission.readApprovals, PolicyPermission.decide]
    }
    public static var configOptions: [Config.Option] { [ApprovalService.ttlOption] }

    public func register(_ routes: Routes) {
        PolicyRoutes(policy: service).register(routes)
        ApprovalRoutes(approvals: approvals).register(routes)
    }

    public func start(_ jobs: JobRunner) throws {
        let a = approvals
        jobs.every(2, name: "expire approvals") { try await a.expireDue() }
        if a.store.db.kind == .postgres {
            jobs.every(1, name: "approvals decided on other instances") { await a.wakeDecidedElsewhere() }
        }
    }

    public static var commands: [Command] {
        [
            Command(
                name: "policy", usage: "policy bench [--rules N]",
                help: "time policy decisions (for scripts/bench/policy.sh)",
                run: PolicyBench.run)
        ]
    }
}
