import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// The projects domain's options under `kiln serve`.
struct ProjectSettings: Sendable {
    static let roots = "--projects-root"
    static let searchTimeout = "--search-timeout"
    static let options: [Config.Option] = [
        .list(
            roots, env: "KILN_PROJECTS_ROOT",
            help: "a folder projects may be opened from; repeatable (env: colon-separated; default <data-dir>/projects)"
        ),
        .int(
            searchTimeout, env: "KILN_SEARCH_TIMEOUT",
            help: "seconds a project search may take before it is stopped (default 10)",
            range: 1...300),
    ]
}

/// The open trigram indexes and symbol tables, one per project folder, shared by every rescan and
/// search of this application (two applications in one process share nothing).
final class IndexCache: Sendable {
    private let indexes = Mutex<[String: TrigramIndex]>([:])
    private let symbols = Mutex<[String: SymbolTable]>([:])

    func index(_ directory: String) throws -> TrigramIndex {
        try indexes.withLock { m in
            if let i = m[directory] { return i }
            let i = try TrigramIndex(directory: directory)
            m[directory] = i
            return i
        }
    }

    func symbolTable(_ directory: String) -> SymbolTable {
        symbols.withLock { m in
            if let t = m[directory] { return t }
            let t = SymbolTable(file: directory + "/symbols.bin")
            m[directory] = t
            return t
        }
    }

    /// Forgets a table so the next use reads it from disk again (tests of a lost table).
    func forgetSymbolTable(_ directory: String) { _ = symbols.withLock { $0.removeValue(forKey: directory) } }
}

/// Projects: folders and git repositories a workspace opened, their trees and files, and the index
/// behind search, symbols and findings. Other domains reach it as a `ProjectDirectory`.
public struct ProjectService: ProjectDirectory {
    let store: ProjectStore
    let clock: any Clock
    let bus: EventBus
    let jobs: JobRunner
    let cache = IndexCache()
    /// Real paths of the folders projects may live in.
    let roots: [String]
    /// Where the projects' trigram indexes live (`<data-dir>/index/<project>`).
    let indexRoot: String
    let searchTimeout: TimeInterval
    let git: Git
    /// Kiln's data dir: no project may contain it.
    let dataDir: String
    /// Judges each clone's connection (`network.connect`, by host).
    let policy: (any PolicyEngine)?
    /// Where a clone a rule holds for approval waits.
    let approvals: (any ApprovalGate)?

    static let maxFileBytes = 5 * 1024 * 1024

    public init(services s: Services, policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil) {
        self.policy = policy
        self.approvals = approvals
        store = ProjectStore(db: s.db)
        clock = s.clock
        bus = s.bus
        jobs = s.jobs
        indexRoot = s.dataDir + "/index"
        searchTimeout = s.config.double(ProjectSettings.searchTimeout) ?? 10
        let configured =
            s.config.strings(ProjectSettings.roots).isEmpty
            ? [s.dataDir + "/projects"] : s.config.strings(ProjectSettings.roots)
        let roots = configured.compactMap { dir in
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return SafePath.real(dir)
        }
        self.roots = roots
        dataDir = SafePath.real(s.dataDir) ?? s.dataDir
        let gitHome = s.dataDir + "/git-home"
        mkdir(gitHome, 0o700)
        git = Git(sandbox: s.sandbox, outbound: s.outbound, home: gitHome, roots: roots)
    }

    // MARK: Lookups

    static func project(_ r: Row, branch: String? = nil, head: String? = nil) -> Project {
        Project(
            id: r.string("id") ?? "", wsId: r.string("ws_id") ?? "", name: r.string("name") ?? "",
            path: r.string("path") ?? "",
            vcs: r.string("vcs") ?? "none", branch: branch, headCommit: head,
            indexStatus: r.string("index_status") ?? "not_indexed",
            createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0))
    }

    func row(_ id: String) async throws -> Row? { try await store.project(id) }

    func workspaceOf(_ projectID: String) async throws -> String? {
        guard IDs.isValid(projectID, prefix: "prj") else { return nil }
        return try await row(projectID)?.string("ws_id")
    }

    /// The caller's most recently opened project (what `project_id` defaults to).
    func mostRecent(userID: String) async throws -> (id: String, wsID: String)? {
        try await store.mostRecent(userID: userID)
    }

    /// The project a request names (or the caller's most recent), inside the admitted workspace.
    func project(
        _ projectID: String?, access: WorkspaceAccess, userID: String, withGit: Bool = true
    ) async throws -> (Project, root: String) {
        let id: String
        if let projectID, !projectID.isEmpty {
            id = projectID
        } else if let recent = try await mostRecent(userID: userID) {
            id = recent.id
        } else {
            throw APIError.validation("project_id is required (you have not opened a project yet)", field: "project_id")
        }
        guard IDs.isValid(id, prefix: "prj"), let r = try await row(id), r.string("ws_id") == access.wsID else {
            throw APIError.notFound("No such project")
        }
        let path = r.string("path") ?? ""
        guard let root = SafePath.real(path) else {
            throw APIError.unavailable("The project's folder \(path) is missing on the server")
        }
        guard withGit else { return (ProjectService.project(r), root) }
        let (branch, head) = await gitHead(root, vcs: r.string("vcs"), projectID: id)
        return (ProjectService.project(r, branch: branch, head: head), root)
    }

    /// The branch and commit checked out (one git call, in the project's sandbox).
    func gitHead(_ root: String, vcs: String?, projectID: String) async -> (String?, String?) {
        guard vcs == "git" else { return (nil, nil) }
        // The commit, then the branch: --abbrev-ref applies to the names after it.
        let args = ["rev-parse", "HEAD", "--abbrev-ref", "HEAD"]
        guard let out = await git.local(args, root: root, owner: projectID, timeout: 10) else { return (nil, nil) }
        let lines = out.stdoutText.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard lines.count == 2 else { return (nil, nil) }
        return (lines[1].isEmpty ? nil : lines[1], lines[0].isEmpty ? nil : lines[0])
    }

    // MARK: Load

    /// Opens a directory under a project root, or clones a repository into the first root.
    /// Returns the project and whether it was newly created.
    func load(
        _ input: LoadInput, access: WorkspaceAccess, userID: String, actorKind: String = "user",
        grants: [PolicyGrant] = []
    ) async throws -> (Project, created: Bool) {
        guard !roots.isEmpty else {
            throw APIError.unavailable("No project root is usable on the server (--projects-root)")
        }
        let dir: String
        var gitURL: String? = nil
        if let url = input.gitUrl {
            guard input.path == nil else {
                throw APIError.validation("give either path or git_url, not both", field: "git_url")
            }
            // The clone connects out: the workspace's policy judges the host (a held clone runs on approval).
            if let policy, let host = URLComponents(string: url)?.host?.lowercased(), !host.isEmpty {
                try await approvals.parking(
                    wsID: access.wsID, userID: userID, kind: "project.clone",
                    payload: ["input": try JSONValue(encoding: input), "actor_kind": .string(actorKind)], grants: grants
                ) {
                    try await policy.check(
                        wsID: access.wsID, userID: userID, action: "network.connect",
                        context: PolicyContext(host: host, actorKind: actorKind), grants: grants)
                }
            }
            dir = try await clone(url, name: input.name)
            gitURL = url
        } else if let path = input.path, !path.isEmpty {
            dir = try locate(path)
        } else {
            throw APIError.validation("path or git_url is required", field: "path")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw APIError.validation("path is not a directory", field: "path")
        }
        // A projects root holds every project; the data dir holds Kiln's keys and database.
        if roots.contains(dir) {
            throw APIError.validation("path is a projects root itself; open a folder inside it", field: "path")
        }
        if SafePath.isInside(dataDir, root: dir) {
            throw APIError.validation("path may not contain Kiln's data dir", field: "path")
        }
        let vcs = FileManager.default.fileExists(atPath: dir + "/.git") ? "git" : "none"
        let rawName = input.name ?? (dir as NSString).lastPathComponent
        let name = String(rawName.trimmingCharacters(in: .whitespacesAndNewlines).prefix(100))
        guard !name.isEmpty, !name.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        let now = clock.now()
        let id = IDs.make("prj")
        let ws = access.wsID
        let (projectID, created) = try await store.open(
            wsID: ws, dir: dir, name: name, vcs: vcs, gitURL: gitURL, userID: userID, newID: id,
            at: now)
        let (p, _) = try await project(projectID, access: access, userID: userID)
        return (p, created)
    }

    /// A server path (absolute, or relative to the first root) that must be inside a root.
    func locate(_ path: String) throws -> String {
        guard !path.utf8.contains(0) else { throw APIError.validation("path may not contain NUL bytes", field: "path") }
        guard path.utf8.count <= 4096 else { throw APIError.validation("path is too long", field: "path") }
        if path.hasPrefix("/") {
            let segs = path.split(separator: "/")
            if segs.contains("..") { throw APIError.validation("path may not contain '..'", field: "path") }
            guard let real = SafePath.real(path) else { throw APIError.notFound("No such directory: \(path)") }
            guard roots.contains(where: { SafePath.isInside(real, root: $0) }) else {
                throw APIError.forbidden("\(path) is outside the project roots")
            }
            return real
        }
        return try SafePath.resolve(root: roots[0], relative: path)
    }

    /// Clones into the first root with Kiln's hardened git (https, ssh, or file:// inside the roots).
    func clone(_ url: String, name: String?) async throws -> String {
        let source = try await git.source(url)
        guard Git.installed else {
            throw APIError.programMissing("git", install: "apt-get install -y git")
        }
        var base = name ?? source.lastComponent
        if base.hasSuffix(".git") { base = String(base.dropLast(4)) }
        let safe = String(
            base.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "-" }.prefix(80))
        guard !safe.isEmpty, safe != ".", safe != ".." else {
            throw APIError.validation("cannot derive a folder name; give name", field: "name")
        }
        let dest = roots[0] + "/" + safe
        if FileManager.default.fileExists(atPath: dest) {
            throw APIError.conflict(
                "\(safe) exists in the project root already; choose another name or load it by path")
        }
        try await git.clone(source, into: dest)
        return SafePath.real(dest) ?? dest
    }

    // MARK: Recent

    func recent(userID: String, wsID: String) async throws -> [Project] {
        try await store.recent(userID: userID, wsID: wsID).map { ProjectService.project($0) }
    }

    func list(wsID: String) async throws -> [Project] {
        try await store.projects(wsID: wsID).map { ProjectService.project($0) }
    }

    /// Quick open over the indexed paths (400 for a query over 256 bytes).
    func paths(projectID: String, q: String, limit: Int) async throws -> [PathMatch] {
        guard q.utf8.count <= PathFinder.maxQuery else {
            throw APIError.validation("q is longer than \(PathFinder.maxQuery) bytes", field: "q")
        }
        return PathFinder.rank(try await store.paths(projectID), query: q, limit: limit)
    }

    // MARK: ProjectDirectory (what other domains use)

    public func indexedPaths(_ project: ProjectRef) async throws -> [String] {
        try await store.paths(project.id).sorted()
    }

    public func projects(wsID: String) async throws -> [ProjectRef] {
        try await list(wsID: wsID).map {
            ProjectRef(id: $0.id, wsID: $0.wsId, name: $0.name, root: $0.path, vcs: $0.vcs)
        }
    }

    public func resolve(_ projectID: String?, access: WorkspaceAccess, userID: String) async throws -> ProjectRef {
        let (p, root) = try await project(projectID, access: access, userID: userID, withGit: false)
        return ProjectRef(id: p.id, wsID: p.wsId, name: p.name, root: root, vcs: p.vcs)
    }

    public func lookup(_ projectID: String) async throws -> ProjectRef? {
        guard IDs.isValid(projectID, prefix: "prj"), let r = try await row(projectID),
            let root = SafePath.real(r.string("path") ?? "")
        else {
            return nil
        }
        return ProjectRef(
            id: projectID, wsID: r.string("ws_id") ?? "", name: r.string("name") ?? "", root: root,
            vcs: r.string("vcs") ?? "none")
    }

    public func reindex(_ p: ProjectRef) async throws {
        _ = try await rescan(projectID: p.id, root: p.root, vcs: p.vcs, jobID: IDs.make("job"))
    }

    public func search(
        _ p: ProjectRef, q: String, regex: Bool, caseSensitive: Bool, pathGlob: String?, limit: Int
    ) async throws -> (matches: [SearchMatch], total: Int) {
        try await ensureIndexed(p.id, root: p.root, vcs: p.vcs)
        // Only the page is read again for its text and context.
        let (items, total) = try await search(
            projectID: p.id, root: p.root, .init(q: q, regex: regex, caseSensitive: caseSensitive, pathGlob: pathGlob),
            limit: limit)
        return (items, total)
    }

    public func symbols(_ p: ProjectRef, q: String, kind: String?, limit: Int) async throws -> [Symbol] {
        try await ensureIndexed(p.id, root: p.root, vcs: p.vcs)
        return try symbols(projectID: p.id, q: q, kind: kind, limit: limit)
    }

    public func list(_ p: ProjectRef, path: String) async throws -> [TreeEntry] {
        let (project, _) = try await project(
            p.id, access: WorkspaceAccess(wsID: p.wsID, role: .viewer), userID: "", withGit: false)
        return try await tree(p.root, project: project, path: path, all: false)
    }
}
