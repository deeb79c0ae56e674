import Foundation
import KilnCore
import KilnStore

/// A resolved project as other domains see it: where it lives and what it is.
public struct ProjectRef: Sendable, Equatable {
    public let id: String
    public let wsID: String
    public let name: String
    /// The real path of the project's folder.
    public let root: String
    public let vcs: String
}

/// The small public service API of the projects domain: shell, agents and receipts resolve projects
/// and use the index through this, never through the projects tables.
public struct ProjectDirectory: Sendable {
    let service: ProjectService
    let bus: EventBus

    public init(services: Services) {
        service = ProjectService(services: services)
        bus = services.bus
    }

    /// The project a request names (or the caller's most recently opened one) inside the admitted workspace.
    public func resolve(_ projectID: String?, access: WorkspaceAccess, userID: String) async throws -> ProjectRef {
        let (p, root) = try await service.resolve(projectID, access: access, userID: userID, withGit: false)
        return ProjectRef(id: p.id, wsID: p.wsId, name: p.name, root: root, vcs: p.vcs)
    }

    /// A project by id, without an access check (for background work that already holds the id).
    public func lookup(_ projectID: String) async throws -> ProjectRef? {
        guard IDs.isValid(projectID, prefix: "prj"), let r = try await service.row(projectID),
              let root = SafePath.real(r.string("path") ?? "") else { return nil }
        return ProjectRef(id: projectID, wsID: r.string("ws_id") ?? "", name: r.string("name") ?? "", root: root, vcs: r.string("vcs") ?? "none")
    }

    public func workspaceOf(_ projectID: String) async throws -> String? { try await service.workspaceOf(projectID) }

    /// Indexes the project first when it never was.
    public func ensureIndexed(_ p: ProjectRef) async throws {
        try await service.ensureIndexed(p.id, root: p.root, vcs: p.vcs, bus: bus)
    }

    /// Re-indexes the project in the foreground (after an agent changed files, say).
    public func reindex(_ p: ProjectRef) async throws {
        _ = try await service.rescan(projectID: p.id, root: p.root, vcs: p.vcs, jobID: IDs.make("job"), bus: bus)
    }

    public func search(_ p: ProjectRef, q: String, regex: Bool = false, caseSensitive: Bool = false, pathGlob: String? = nil) async throws -> [SearchMatch] {
        try await ensureIndexed(p)
        return try await service.search(projectID: p.id, root: p.root, .init(q: q, regex: regex, caseSensitive: caseSensitive, pathGlob: pathGlob)).items
    }

    public func symbols(_ p: ProjectRef, q: String, kind: String? = nil, limit: Int = 50) async throws -> [Symbol] {
        try await ensureIndexed(p)
        return try service.symbols(projectID: p.id, q: q, kind: kind, limit: limit)
    }

    /// One directory level, ignored entries hidden.
    public func list(_ p: ProjectRef, path: String) async throws -> [TreeEntry] {
        let (project, _) = try await service.resolve(p.id, access: WorkspaceAccess(wsID: p.wsID, role: .viewer), userID: "", withGit: false)
        return try await service.tree(p.root, project: project, path: path, all: false)
    }

    /// The project's tracked and untracked, not-ignored files (what the index covers).
    public func files(_ p: ProjectRef) async throws -> [String] { try await service.listFiles(p.root, vcs: p.vcs) }
}
