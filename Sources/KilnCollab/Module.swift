import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum CollabPermission {
    public static let read = Permission(
        "collab:read", "See the workspace's activity, reviews and share links", minimumRole: .viewer)
    public static let write = Permission(
        "collab:write", "Share, request and give reviews, comment", minimumRole: .member)
}

/// Collab: the workspace's activity feed (built from the bus), notifications, invitations, reviews
/// and share links.
public struct CollabModule: KilnModule {
    public let name = "collab"
    let service: CollabService
    let feed: CollabFeed
    let instances: Instances

    public init(services: Services, _ dependencies: CollabDependencies) {
        service = CollabService(services: services, dependencies)
        instances = services.instances
        feed = CollabFeed(collab: service, bus: services.bus)
        let s = service
        services.hooks.workspaceOf(param: "link_id") { id in try await s.workspaceOf(id) }
        services.hooks.workspaceOf(param: "review_id") { id in try await s.reviewWorkspace(id) }
        services.hooks.workspaceOf(param: "invitation") { id in try await s.invitationWorkspace(id) }
        services.hooks.onUserPurged { tx, uid in try s.store.purgeUser(tx, userID: uid) }
        services.hooks.onWorkspaceDeleted { tx, ws in try s.store.purgeWorkspace(tx, ws) }
    }

    public var migrations: [Migration] { CollabMigrations.all }
    public var permissions: [Permission] { [CollabPermission.read, CollabPermission.write] }

    public func register(_ routes: Routes) { CollabRoutes(collab: service).register(routes) }

    public func start(_ jobs: JobRunner) throws {
        let feed = self.feed
        jobs.run("collab feed") { await feed.run() }
        let s = service
        instances.everyOnce(jobs, 60, name: "notification mail") { try await s.mailDue() }
        instances.everyOnce(jobs, 3600, name: "old notifications") {
            _ = try await s.store.purgeNotifications(before: s.clock.now().addingTimeInterval(-NotificationKind.kept))
        }
    }

    public func shutdown() async { feed.stop() }
}
