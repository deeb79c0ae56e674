import Foundation
import KilnCore
import KilnHTTP

public enum MCPPermission {
    public static let read = Permission(
        "mcp:read", "See the workspace's MCP servers and its tool catalogue", minimumRole: .viewer)
    public static let manage = Permission(
        "mcp:manage", "Register, change and remove MCP servers and their credentials", minimumRole: .admin)
    public static let invoke = Permission(
        "mcp:invoke", "Call tools of the workspace's catalogue", minimumRole: .member, execution: true)
}

/// MCP: Kiln as an MCP server (`/mcp`) over the workspace's built-in tools, and (to come) a
/// registry of external MCP servers whose tools agents and people may call.
public struct MCPModule: KilnModule {
    public let name = "mcp"
    let server: MCPServerService
    let trustedOrigins: Set<String>

    public init(
        services: Services, tools: any ToolRunner, projects: any ProjectDirectory, agents: (any AgentRunner)?,
        receipts: (any ReceiptVerifier)?
    ) {
        let toolbox = KilnToolbox(
            runner: tools, agents: agents, receipts: receipts, projects: projects,
            authorizer: Authorizer(hooks: services.hooks, catalog: services.catalog), hooks: services.hooks)
        server = MCPServerService(toolbox: toolbox, clock: services.clock)
        var trusted = Set<String>()
        if let u = services.config.publicURL { trusted.insert(u.hasSuffix("/") ? String(u.dropLast()) : u) }
        trustedOrigins = trusted
    }

    public var permissions: [Permission] { [MCPPermission.read, MCPPermission.manage, MCPPermission.invoke] }

    public func register(_ routes: Routes) {
        MCPRoutes(server: server, trustedOrigins: trustedOrigins).register(routes)
    }
}
