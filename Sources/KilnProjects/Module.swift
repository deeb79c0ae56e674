import Foundation
import KilnCore
import KilnHTTP
import KilnStore

public enum ProjectPermission {
    public static let read = Permission(
        "project:read", "Browse, read, search and find symbols in a workspace's projects", minimumRole: .viewer)
    public static let write = Permission(
        "project:write", "Open (load or clone) projects and start re-indexing", minimumRole: .member)
}

/// Projects: directories or git repositories on the server that a workspace has opened.
public struct ProjectsModule: KilnModule {
    public let name = "projects"
    /// The projects service; other domains get it as a `ProjectDirectory`.
    public let service: ProjectService

    public init(
        services: Services, policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil
    ) {
        service = ProjectService(services: services, policy: policy, approvals: approvals)
        let projects = service
        let hooks = services.hooks
        approvals?.onApproved(kind: "project.clone") { a in
            let access = try await a.access(hooks, needs: ProjectPermission.write)
            let (p, _) = try await projects.load(
                try a.input(LoadInput.self), access: access, userID: a.userID,
                actorKind: a.text("actor_kind") ?? "user", grants: a.grants)
            return ["project_id": .string(p.id)]
        }
        services.hooks.workspaceOf(param: "project_id") { id in try await projects.workspaceOf(id) }
        services.hooks.workspaceOf(param: "job_id") { id in try await projects.workspaceOfRescan(id) }
        services.hooks.provideDefaultWorkspace { uid in try await projects.mostRecent(userID: uid)?.wsID }
    }

    public var migrations: [Migration] { ProjectMigrations.all }
    public var permissions: [Permission] { [ProjectPermission.read, ProjectPermission.write] }
    public static var configOptions: [Config.Option] { ProjectSettings.options }

    public func register(_ routes: Routes) { ProjectRoutes(projects: service).register(routes) }
}
