import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum CollabPermission {
    public static let read = Permission(
        "collab:read", "See the workspace's activity, reviews and share links", minimumRole: .viewer)
    public static let write = Permission(
        "collab:write", "Share, invite, request and give reviews", minimumRole: .member)
}

/// Collab: for now share links (a run shown read-only to anyone with the link).
public struct CollabModule: KilnModule {
    public let name = "collab"
    let service: CollabService

    public init(services: Services, agents: (any AgentRunner)?, receipts: (any ReceiptVerifier)?) {
        service = CollabService(services: services, agents: agents, receipts: receipts)
        let s = service
        services.hooks.workspaceOf(param: "link_id") { id in try await s.workspaceOf(id) }
    }

    public var migrations: [Migration] { CollabMigrations.all }
    public var permissions: [Permission] { [CollabPermission.read, CollabPermission.write] }

    public func register(_ routes: Routes) { CollabRoutes(collab: service).register(routes) }
}
