import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum MCPPermission {
    public static let read = Permission(
        "mcp:read", "See the workspace's MCP servers and its tool catalogue", minimumRole: .viewer)
    public static let manage = Permission(
        "mcp:manage", "Register, change and remove MCP servers and their credentials", minimumRole: .admin)
    public static let invoke = Permission(
        "mcp:invoke", "Call tools of the workspace's catalogue", minimumRole: .member, execution: true)
}

/// MCP: Kiln as an MCP server (`/mcp`) over the workspace's built-in tools, and the workspace's
/// tool registry of external MCP servers (`/api/mcp`) whose tools people and agents may call.
public struct MCPModule: KilnModule {
    public let name = "mcp"
    let server: MCPServerService
    /// The registry; agent runs reach its tools through it.
    public let registry: MCPRegistryService
    let trustedOrigins: Set<String>

    public init(
        services: Services, tools: any ToolRunner, projects: any ProjectDirectory, agents: (any AgentRunner)?,
        receipts: (any ReceiptVerifier)?, policy: (any PolicyEngine)? = nil, secrets: (any SecretProvider)? = nil
    ) {
        let toolbox = KilnToolbox(
            runner: tools, agents: agents, receipts: receipts, projects: projects,
            authorizer: Authorizer(hooks: services.hooks, catalog: services.catalog), hooks: services.hooks)
        server = MCPServerService(toolbox: toolbox, clock: services.clock)
        registry = MCPRegistryService(services: services, toolbox: toolbox, policy: policy, secrets: secrets)
        let r = registry
        services.hooks.onWorkspaceDeleted { [store = registry.store] tx, ws in try store.purgeWorkspace(tx, ws) }
        services.hooks.workspaceOf(param: "server_id") { id in
            IDs.isValid(id, prefix: "mcs") ? try await r.store.workspaceOfServer(id) : nil
        }
        services.hooks.workspaceOf(param: "token_id") { id in
            IDs.isValid(id, prefix: "mct") ? try await r.store.workspaceOfToken(id) : nil
        }
        let store = registry.store
        services.hooks.onMasterKeyRotation { tx, old, new in
            try MCPRegistryService.reseal(tx, store: store, old: old, new: new)
        }
        var trusted = Set<String>()
        if let u = services.config.publicURL { trusted.insert(u.hasSuffix("/") ? String(u.dropLast()) : u) }
        trustedOrigins = trusted
    }

    public var permissions: [Permission] { [MCPPermission.read, MCPPermission.manage, MCPPermission.invoke] }
    public var migrations: [Migration] { MCPMigrations.all }

    public func register(_ routes: Routes) {
        MCPRoutes(server: server, trustedOrigins: trustedOrigins).register(routes)
        RegistryRoutes(registry: registry).register(routes)
    }

    /// Every stdio server's process is ended.
    public func shutdown() async { registry.client.stopAll() }
}
