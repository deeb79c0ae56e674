import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum WorkspacePermission {
    public static let create = Permission.user("workspace:create", "Create workspaces")
    public static let list = Permission.user("workspace:list", "List the workspaces you belong to")
    public static let read = Permission("workspace:read", "See a workspace", minimumRole: .viewer)
    public static let write = Permission("workspace:write", "Rename a workspace", minimumRole: .admin)
    public static let delete = Permission(
        "workspace:delete", "Delete a workspace and everything in it", minimumRole: .owner)
    public static let membersRead = Permission.membersRead
    public static let membersWrite = Permission.membersWrite
    public static let auditRead = Permission("audit:read", "Read a workspace's audit trail", minimumRole: .admin)
}

/// Workspaces, their members and roles, and the workspace audit trail.
public struct WorkspacesModule: KilnModule {
    public let name = "workspaces"
    public let service: WorkspaceService

    /// `users`: account lookups (the auth domain).
    public init(services: Services, users: any UserDirectory) {
        service = WorkspaceService(services: services, users: users)
        let ws = service
        let hooks = services.hooks
        hooks.provideRoles(ws)
        // Every new account gets a workspace of its own.
        hooks.onUserCreated { tx, uid, name, at in
            _ = try ws.insert(tx, name: "\(name)'s workspace", ownerID: uid, at: at)
        }
        hooks.onUserPurged { tx, uid in try ws.purge(tx, userID: uid) }
        // A request naming no workspace and no project falls back to the caller's first workspace.
        hooks.provideDefaultWorkspace(fallback: true) { uid in try await ws.firstWorkspace(userID: uid) }
        hooks.exportSection("workspaces") { uid in
            try JSONValue(encoding: try await ws.list(userID: uid, page: PageRequest(limit: 200)).items)
        }
    }

    public var migrations: [Migration] { WorkspaceMigrations.all }

    public var permissions: [Permission] {
        typealias P = WorkspacePermission
        return [P.create, P.list, P.read, P.write, P.delete, P.membersRead, P.membersWrite, P.auditRead]
    }

    public func register(_ routes: Routes) { WorkspaceRoutes(workspaces: service).register(routes) }
}
