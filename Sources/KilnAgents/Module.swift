import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum AgentPermission {
    public static let run = Permission(
        "agent:run", "Start, cancel and roll back agent runs; ask for shell command suggestions", minimumRole: .member)
    public static let read = Permission(
        "agent:read", "Follow agent runs and read their history and transcripts", minimumRole: .viewer)
    public static let prefs = Permission(
        "agent:prefs", "Read and set your agent preferences (admins: the workspace default)", minimumRole: .viewer)
}

/// Agent runs: a tool-using model loop over a project, streamed, followable, cancellable, reversible.
public struct AgentsModule: KilnModule {
    public let name = "agents"
    public let service: AgentService

    /// `observers` are told of every run's start, usage and end (budgets, receipts).
    public init(
        services: Services, projects: any ProjectDirectory, jobs: any JobLauncher, observers: [any RunObserver],
        secrets: (any SecretProvider)? = nil, policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        service = AgentService(
            services: services, projects: projects, jobs: jobs, observers: observers, secrets: secrets, policy: policy,
            approvals: approvals)
        service.registerResumers()
        let agents = service
        services.hooks.workspaceOf(param: "run_id") { id in try await agents.workspaceOf(id) }
        services.hooks.onWorkspaceDeleted { tx, ws in try agents.store.purgeWorkspace(tx, ws) }
        services.instances.onRecover("agents") { alive in try await agents.recover(alive: alive) }
    }

    public var migrations: [Migration] { AgentMigrations.all }
    public var permissions: [Permission] { [AgentPermission.run, AgentPermission.read, AgentPermission.prefs] }
    public static var configOptions: [Config.Option] { ProviderSettings.options + [AgentEngine.maxRunsOption] }

    public func register(_ routes: Routes) { AgentRoutes(agents: service).register(routes) }

    /// Every run in flight is cancelled, and has published its end, before this returns.
    public func shutdown() async { await service.engine.stopAll() }
}
