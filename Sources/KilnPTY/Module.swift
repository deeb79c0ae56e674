import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum PTYPermission {
    public static let open = Permission(
        "pty:open", "Open, list, attach to and end your own terminals (a shell on the server)", minimumRole: .member,
        execution: true)
}

/// Terminals: real pseudo-terminals attached over WebSocket.
public struct PTYModule: KilnModule {
    public let name = "pty"
    let terminals: TerminalService

    public init(
        services: Services, projects: any ProjectDirectory, secrets: (any SecretProvider)? = nil,
        policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        terminals = TerminalService(
            idleSeconds: Double(services.config.int(PTYSettings.idleMinutes) ?? 30) * 60,
            maxPerUser: services.config.int(PTYSettings.maxPerUser) ?? 16, projects: projects,
            sandbox: services.sandbox, store: TerminalStore(db: services.db), instances: services.instances,
            secrets: secrets, policy: policy, approvals: approvals)
        let t = terminals
        services.hooks.workspaceOf(param: "pty_id") { id in try await t.workspaceOf(id) }
        let hooks = services.hooks
        // An approved spawn starts the terminal; its requester attaches to the pty_id on the approval.
        approvals?.onApproved(kind: "pty.open") { a in
            let access = try await a.access(hooks, needs: PTYPermission.open)
            let term = try await t.spawn(
                try a.input(SpawnInput.self), access: access, userID: a.userID, grants: a.grants)
            return ["pty_id": .string(term.id), "ws_path": .string("/api/pty/\(term.id)/stream")]
        }
    }

    public var permissions: [Permission] { [PTYPermission.open] }
    public var migrations: [Migration] { PTYMigrations.all }
    public static var configOptions: [Config.Option] { PTYSettings.options }

    public func register(_ routes: Routes) { PTYRoutes(terminals: terminals).register(routes) }

    public func start(_ jobs: JobRunner) throws {
        let t = terminals
        jobs.every(30, name: "pty-reaper") { await t.reap() }
    }

    /// Every terminal is hung up, and its shell has ended, before this returns.
    public func shutdown() async { await terminals.shutdown() }
}
