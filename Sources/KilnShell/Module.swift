import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum ShellPermission {
    public static let run = Permission(
        "shell:run", "Run commands and tests in a workspace's projects, cancel jobs", minimumRole: .member,
        execution: true)
    public static let read = Permission(
        "shell:read", "See jobs, their output and recent commands", minimumRole: .viewer)
    public static let ssh = Permission(
        "ssh:run", "Run commands on and copy files from the server's configured ssh hosts", minimumRole: .admin,
        execution: true)
}

/// Shell: commands and test runs inside a project, streamed and kept as jobs; ssh to configured hosts.
public struct ShellModule: KilnModule {
    public let name = "shell"
    /// The job runner; agents get it as a `JobLauncher`.
    public let service: ShellService

    public init(
        services: Services, projects: any ProjectDirectory, secrets: (any SecretProvider)? = nil,
        policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        service = ShellService(
            services: services, projects: projects, secrets: secrets, policy: policy, approvals: approvals)
        service.registerResumers()
        let shell = service
        services.hooks.workspaceOf(param: "job_id") { id in try await shell.workspaceOf(id) }
        services.instances.onRecover("shell") { alive in try await shell.recover(alive: alive) }
    }

    public var migrations: [Migration] { ShellMigrations.all }
    public var permissions: [Permission] { [ShellPermission.run, ShellPermission.read, ShellPermission.ssh] }
    public static var configOptions: [Config.Option] { ShellSettings.options }

    public func register(_ routes: Routes) { ShellRoutes(shell: service).register(routes) }

    /// Every running job is killed, and its exit recorded and published, before this returns.
    public func shutdown() async { await service.stopAll() }
}
