import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

enum ProjectMigrations {
    static var all: [Migration] { base + [index, ownIndex, symbolTable] }
    static let base = [
        Migration(module: "projects", version: 1, name: "projects and recent opens", sql: """
            CREATE TABLE projects (
                id TEXT PRIMARY KEY,
                ws_id TEXT NOT NULL,
                name TEXT NOT NULL,
                path TEXT NOT NULL,
                vcs TEXT NOT NULL,
                git_url TEXT,
                created_by TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                index_status TEXT NOT NULL DEFAULT 'not_indexed',
                indexed_at INTEGER,
                UNIQUE (ws_id, path)
            );
            CREATE TABLE project_opens (
                user_id TEXT NOT NULL,
                project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
                ws_id TEXT NOT NULL,
                opened_at INTEGER NOT NULL,
                PRIMARY KEY (user_id, project_id)
            );
            CREATE INDEX project_opens_recent ON project_opens (user_id, opened_at);
            """),
    ]
}

/// A project as the API shows it.
public struct Project: Codable, Sendable, NullEncoding {
    public let id: String
    public let wsId: String
    public let name: String
    public let path: String
    public let vcs: String
    public let branch: String?
    public let headCommit: String?
    public let indexStatus: String
    public let createdAt: Date

}

/// One entry of a directory listing.
public struct TreeEntry: Codable, Sendable, NullEncoding {
    public let name: String
    public let path: String
    public let type: String
    public let size: Int
    public let mtime: Date
    public let gitStatus: String?
    public let ignored: Bool

}

public struct ProjectService: Sendable {
    let db: Database
    let clock: any Clock
    /// Real paths of the folders projects may live in.
    let roots: [String]
    /// Where the projects' trigram indexes live (`<data-dir>/index/<project>`).
    let indexRoot: String
    let searchTimeout: TimeInterval

    static let maxFileBytes = 5 * 1024 * 1024

    init(services s: Services) {
        db = s.db
        clock = s.clock
        indexRoot = s.dataDir + "/index"
        searchTimeout = s.config.searchTimeoutSeconds
        let configured = s.config.projectsRoots.isEmpty ? [s.dataDir + "/projects"] : s.config.projectsRoots
        roots = configured.compactMap { dir in
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return SafePath.real(dir)
        }
    }

    // MARK: Lookups

    static func project(_ r: Row, branch: String? = nil, head: String? = nil) -> Project {
        Project(id: r.string("id") ?? "", wsId: r.string("ws_id") ?? "", name: r.string("name") ?? "", path: r.string("path") ?? "",
                vcs: r.string("vcs") ?? "none", branch: branch, headCommit: head, indexStatus: r.string("index_status") ?? "not_indexed",
                createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0))
    }

    func row(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM projects WHERE id = ?", id) }
    }

    func workspaceOf(_ projectID: String) async throws -> String? {
        guard IDs.isValid(projectID, prefix: "prj") else { return nil }
        return try await row(projectID)?.string("ws_id")
    }

    /// The caller's most recently opened project (what `project_id` defaults to).
    func mostRecent(userID: String) async throws -> (id: String, wsID: String)? {
        try await db.read { tx in
            try tx.first("SELECT project_id, ws_id FROM project_opens WHERE user_id = ? ORDER BY opened_at DESC LIMIT 1", userID)
        }.flatMap { r in r.string("project_id").map { ($0, r.string("ws_id") ?? "") } }
    }

    /// The project a request names (or the caller's most recent), inside the admitted workspace.
    func resolve(_ projectID: String?, access: WorkspaceAccess, userID: String, withGit: Bool = true) async throws -> (Project, root: String) {
        let id: String
        if let projectID, !projectID.isEmpty { id = projectID }
        else if let recent = try await mostRecent(userID: userID) { id = recent.id }
        else { throw APIError.validation("project_id is required (you have not opened a project yet)", field: "project_id") }
        guard IDs.isValid(id, prefix: "prj"), let r = try await row(id), r.string("ws_id") == access.wsID else {
            throw APIError.notFound("No such project")
        }
        let path = r.string("path") ?? ""
        guard let root = SafePath.real(path) else { throw APIError.unavailable("The project's folder \(path) is missing on the server") }
        guard withGit else { return (ProjectService.project(r), root) }
        let (branch, head) = await gitHead(root, vcs: r.string("vcs"))
        return (ProjectService.project(r, branch: branch, head: head), root)
    }

    func gitHead(_ root: String, vcs: String?) async -> (String?, String?) {
        guard vcs == "git", ProcessRunner.which("git") != nil else { return (nil, nil) }
        let b = try? await ProcessRunner.run("git", ["-C", root, "rev-parse", "--abbrev-ref", "HEAD"], timeout: 10)
        let h = try? await ProcessRunner.run("git", ["-C", root, "rev-parse", "HEAD"], timeout: 10)
        func clean(_ o: ProcessRunner.Output?) -> String? {
            guard let o, o.status == 0 else { return nil }
            let s = o.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
            return s.isEmpty ? nil : s
        }
        return (clean(b), clean(h))
    }

    // MARK: Load

    public struct LoadInput: Decodable, Sendable {
        public let wsId: String?
        public let path: String?
        public let gitUrl: String?
        public let name: String?
    }

    /// Opens a directory under a project root, or clones a repository into the first root.
    /// Returns the project and whether it was newly created.
    func load(_ input: LoadInput, access: WorkspaceAccess, userID: String) async throws -> (Project, created: Bool) {
        guard !roots.isEmpty else { throw APIError.unavailable("No project root is usable on the server (--projects-root)") }
        let dir: String
        var gitURL: String? = nil
        if let url = input.gitUrl {
            guard input.path == nil else { throw APIError.validation("give either path or git_url, not both", field: "git_url") }
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
        let vcs = FileManager.default.fileExists(atPath: dir + "/.git") ? "git" : "none"
        let rawName = input.name ?? (dir as NSString).lastPathComponent
        let name = String(rawName.trimmingCharacters(in: .whitespacesAndNewlines).prefix(100))
        guard !name.isEmpty, !name.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        let now = clock.now()
        let id = IDs.make("prj")
        let ws = access.wsID
        let url = gitURL
        let (projectID, created) = try await db.write { tx -> (String, Bool) in
            if let existing = try tx.first("SELECT id FROM projects WHERE ws_id = ? AND path = ?", ws, dir)?.string("id") {
                try tx.run("INSERT INTO project_opens (user_id, project_id, ws_id, opened_at) VALUES (?, ?, ?, ?) ON CONFLICT (user_id, project_id) DO UPDATE SET opened_at = excluded.opened_at",
                           userID, existing, ws, now)
                return (existing, false)
            }
            try tx.run("INSERT INTO projects (id, ws_id, name, path, vcs, git_url, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       id, ws, name, dir, vcs, url, userID, now)
            try tx.run("INSERT INTO project_opens (user_id, project_id, ws_id, opened_at) VALUES (?, ?, ?, ?)", userID, id, ws, now)
            try AuditLog.append(tx, AuditEvent(action: "project.loaded", actorUserID: userID, wsID: ws, resourceType: "project", resourceID: id,
                                               details: ["path": .string(dir), "git_url": url.map { .string($0) } ?? .null]), at: now)
            return (id, true)
        }
        let (p, _) = try await resolve(projectID, access: access, userID: userID)
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

    /// Clones into the first root with the system git (file://, https:// and ssh:// only).
    func clone(_ url: String, name: String?) async throws -> String {
        guard url.utf8.count <= 2048, !url.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            throw APIError.validation("git_url is not a valid URL", field: "git_url")
        }
        let lower = url.lowercased()
        guard lower.hasPrefix("file://") || lower.hasPrefix("https://") || lower.hasPrefix("ssh://") else {
            throw APIError.validation("git_url must use file://, https:// or ssh://", field: "git_url")
        }
        guard ProcessRunner.which("git") != nil else { throw APIError.programMissing("git", install: "apt-get install -y git") }
        var base = name ?? String(url.split(separator: "/").last ?? "repo")
        if base.hasSuffix(".git") { base = String(base.dropLast(4)) }
        let safe = String(base.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "-" }.prefix(80))
        guard !safe.isEmpty, safe != ".", safe != ".." else { throw APIError.validation("cannot derive a folder name; give name", field: "name") }
        let dest = roots[0] + "/" + safe
        if FileManager.default.fileExists(atPath: dest) {
            throw APIError.conflict("\(safe) exists in the project root already; choose another name or load it by path")
        }
        let env = ["GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes",
                   "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": NSTemporaryDirectory()]
        let out = try await ProcessRunner.run("git", ["clone", "--quiet", "--", url, dest], environment: env, timeout: 900)
        guard out.status == 0 else {
            try? FileManager.default.removeItem(atPath: dest)
            let reason = out.stderr.split(separator: "\n").last.map(String.init) ?? "git clone failed"
            throw APIError(.badRequest, code: "validation_failed", message: "git clone failed: \(reason.prefix(300))", details: ["field": "git_url"])
        }
        return SafePath.real(dest) ?? dest
    }

    // MARK: Tree

    /// One directory level: git's view of ignores (and status) in a git repository when git is
    /// installed, the built-in matcher otherwise; `all` shows ignored entries too.
    func tree(_ root: String, project: Project, path: String, all: Bool) async throws -> [TreeEntry] {
        let dir = try SafePath.resolve(root: root, relative: path)
        let rel = dir == root ? "" : String(dir.dropFirst(root.count + 1))
        let listing = try Self.listDirectory(dir, root: root, rel: rel, path: path)
        let names = listing.keys
        let useGit = project.vcs == "git" && ProcessRunner.which("git") != nil
        var visible: Set<String>? = nil
        var status: [String: String] = [:]
        var matcher = GitIgnore()
        if useGit {
            let spec = rel.isEmpty ? "." : rel
            let ls = try await ProcessRunner.run("git", ["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", spec], timeout: 60)
            visible = Set(ls.stdout.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.compactMap { full in
                let tail = rel.isEmpty ? Substring(full) : (full.hasPrefix(rel + "/") ? full.dropFirst(rel.count + 1) : nil)
                return tail.flatMap { $0.split(separator: "/", maxSplits: 1).first.map(String.init) }
            })
            let st = try await ProcessRunner.run("git", ["-C", root, "status", "--porcelain=v1", "-z", "--", spec], timeout: 60)
            for item in st.stdout.split(separator: 0) {
                let s = String(decoding: item, as: UTF8.self)
                guard s.count > 3 else { continue }
                let code = String(s.prefix(2)).trimmingCharacters(in: .whitespaces)
                let file = String(s.dropFirst(3))
                let tail = rel.isEmpty ? Substring(file) : (file.hasPrefix(rel + "/") ? file.dropFirst(rel.count + 1) : nil)
                if let first = tail.flatMap({ $0.split(separator: "/", maxSplits: 1).first.map(String.init) }) {
                    status[first] = status[first] == nil || status[first] == code ? code : "M"
                }
            }
        } else {
            matcher = loadIgnores(root: root, rel: rel)
        }
        var out: [TreeEntry] = []
        for name in names.sorted() {
            guard let st = listing[name] else { continue }
            let kind: String
            switch st.st_mode & S_IFMT {
            case S_IFDIR: kind = "dir"
            case S_IFLNK: kind = "symlink"
            case S_IFREG: kind = "file"
            default: continue
            }
            let childRel = rel.isEmpty ? name : rel + "/" + name
            let ignored: Bool
            if let visible { ignored = !visible.contains(name) && status[name] == nil }
            else { ignored = matcher.isIgnored(childRel, isDirectory: kind == "dir") }
            if ignored && !all { continue }
            out.append(TreeEntry(name: name, path: childRel, type: kind, size: Int(st.st_size),
                                 mtime: Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9),
                                 gitStatus: useGit ? status[name] : nil, ignored: ignored))
        }
        return out.sorted { ($0.type == "dir" ? 0 : 1, $0.name) < ($1.type == "dir" ? 0 : 1, $1.name) }
    }

    /// The entries of the folder `dir` (`rel` in the project, resolved from the client's `path`) with
    /// their lstat, `.git` left out. Opened beneath the root through no symlink where openat2 exists,
    /// so a folder swapped for a link since it was resolved is refused. Names that are not UTF-8 are
    /// left out, as the walk leaves them out of the index: no path could name them back.
    static func listDirectory(_ dir: String, root: String, rel: String, path: String) throws -> [String: stat] {
        let rootFD = SafePath.openRoot(root)
        let fd = rootFD >= 0 ? SafePath.openBeneath(rootFD, rel, flags: O_RDONLY | O_DIRECTORY)
            : open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        let failure = errno
        if rootFD >= 0 { close(rootFD) }
        guard fd >= 0 else {
            switch failure {
            case ENOTDIR: throw APIError.validation("path is not a directory", field: "path")
            case ELOOP, EXDEV: throw APIError.forbidden("\(path) leads outside the project (symlink)")
            default: throw APIError.notFound("No such directory: \(path)")
            }
        }
        guard let d = fdopendir(fd) else { close(fd); throw APIError.notFound("No such directory: \(path)") }
        defer { closedir(d) }
        var out: [String: stat] = [:]
        var st = stat()
        while let e = readdir(d) {
            let raw = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            guard let name = String(validating: raw, as: UTF8.self), name != ".", name != "..", name != ".git" else { continue }
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            out[name] = st
        }
        return out
    }

    /// The .gitignore files from the root down to `rel`.
    func loadIgnores(root: String, rel: String) -> GitIgnore {
        var g = GitIgnore()
        var base = ""
        var dirs = [""]
        for part in rel.split(separator: "/") { base = base.isEmpty ? String(part) : base + "/" + part; dirs.append(base) }
        for d in dirs {
            let file = root + (d.isEmpty ? "" : "/" + d) + "/.gitignore"
            if let text = try? String(contentsOfFile: file, encoding: .utf8) { g.add(text, base: d) }
        }
        return g
    }

    // MARK: File

    struct FileContent {
        let path: String
        let size: Int
        let etag: String
        let binary: Bool
        let bytes: [UInt8]?
        let startLine: Int?
        let endLine: Int?
        let totalLines: Int?
    }

    func file(_ root: String, path: String, startLine: Int?, endLine: Int?, raw: Bool) throws -> FileContent {
        guard !path.isEmpty else { throw APIError.validation("path is required", field: "path") }
        let real = try SafePath.resolve(root: root, relative: path)
        var st = stat()
        guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw APIError.validation("path is not a file", field: "path") }
        let fd = try Self.openResolved(real, root: root, path: path, expecting: st)
        defer { close(fd) }
        let size = Int(st.st_size)
        let etag = "\"\(String(size, radix: 16))-\(String(Int(st.st_mtim.tv_sec), radix: 16))\(String(Int(st.st_mtim.tv_nsec), radix: 16))\""
        let ranged = startLine != nil || endLine != nil
        if (size > ProjectService.maxFileBytes && !ranged && !raw) || (raw && size > ProjectService.maxReadBytes) {
            let limit = raw ? ProjectService.maxReadBytes : ProjectService.maxFileBytes
            throw APIError(.payloadTooLarge, message: "The file is \(size) bytes; ask for a range with start_line/end_line",
                           details: ["size": .int(size), "limit": .int(limit)])
        }
        let probe = Self.readUpTo(fd, 8192)
        // Binary: a NUL byte, or bytes that are not UTF-8, in the first 8 KiB.
        let binary = probe.contains(0) || !isUTF8Prefix(probe, truncated: probe.count == 8192 && size > 8192)
        if binary && !raw { return FileContent(path: path, size: size, etag: etag, binary: true, bytes: nil, startLine: nil, endLine: nil, totalLines: nil) }
        guard ranged && !raw else {
            // The whole file, as large as it was when the request came (it may have grown since).
            let bytes = probe + (probe.count < 8192 ? [] : Self.readUpTo(fd, max(0, size - probe.count)))
            return FileContent(path: path, size: size, etag: etag, binary: binary, bytes: bytes, startLine: nil, endLine: nil, totalLines: nil)
        }
        return try Self.lines(fd, first: probe, path: path, size: size, etag: etag, startLine: startLine, endLine: endLine)
    }

    /// Files read whole (raw) or sliced are held in memory up to this size.
    static let maxReadBytes = 64 * 1024 * 1024

    /// Lines `startLine...endLine` (1-based, clamped to the file) of the file open at `fd`, read in
    /// pieces from where `first` (its first bytes, read already) ends: only the slice is kept.
    static func lines(_ fd: Int32, first: [UInt8], path: String, size: Int, etag: String, startLine: Int?, endLine: Int?) throws -> FileContent {
        let s = max(1, startLine ?? 1), wantEnd = endLine ?? Int.max
        var line = 1, newlines = 0, last: UInt8? = nil
        var slice: [UInt8] = []
        var chunk = first
        while !chunk.isEmpty {
            chunk.withUnsafeBytes { buf in
                var at = 0
                while at < buf.count {
                    let rest = buf.count - at
                    let found = memchr(buf.baseAddress! + at, 10, rest).map { buf.baseAddress!.distance(to: UnsafeRawPointer($0)) }
                    let end = found ?? buf.count
                    if line >= s && line <= wantEnd {
                        slice.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[at..<end]))
                        if found != nil { slice.append(10) }
                    }
                    if found != nil { line += 1; newlines += 1 }
                    at = end + 1
                }
            }
            guard slice.count <= maxReadBytes else {
                throw APIError(.payloadTooLarge, message: "The lines asked for are more than \(maxReadBytes) bytes; ask for fewer",
                               details: ["limit": .int(maxReadBytes)])
            }
            last = chunk.last ?? last
            chunk = readUpTo(fd, 1 << 20)
        }
        // Lines end in a newline; a last line without one counts too (an empty file is one empty line).
        let total = last == 10 ? newlines : newlines + 1
        if last != 10 && total >= s && total <= wantEnd { slice.append(10) }
        let e = min(total, endLine ?? total)
        guard s <= max(e, 1) else { throw APIError.validation("start_line must not be after end_line", field: "start_line") }
        return FileContent(path: path, size: size, etag: etag, binary: false, bytes: s <= e ? slice : [], startLine: s, endLine: e, totalLines: total)
    }

    /// Opens `real` (a real path inside `root`, as `SafePath.resolve` gave it, and `expected` its stat)
    /// for reading: beneath the root through no symlink where openat2 exists, so a folder swapped for
    /// a link since the path was resolved cannot lead out, and only while it is still that file.
    static func openResolved(_ real: String, root: String, path: String, expecting expected: stat) throws -> Int32 {
        var fd: Int32 = -1
        let rootFD = real.count > root.count + 1 ? SafePath.openRoot(root) : -1
        if rootFD >= 0 {
            fd = SafePath.openBeneath(rootFD, String(real.dropFirst(root.count + 1)), flags: O_RDONLY | O_NONBLOCK | O_NOCTTY)
            let failure = errno
            close(rootFD)
            if fd < 0 && (failure == ELOOP || failure == EXDEV) { throw APIError.forbidden("\(path) leads outside the project (symlink)") }
        } else {
            fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        }
        guard fd >= 0 else { throw APIError.notFound("Cannot read \(path)") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_dev == expected.st_dev, st.st_ino == expected.st_ino else {
            close(fd)
            throw APIError.conflict("\(path) changed while it was read; try again")
        }
        return fd
    }

    /// Up to `count` bytes from `fd` (fewer at its end).
    static func readUpTo(_ fd: Int32, _ count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: count) { buf, n in
            n = 0
            while n < count {
                let r = Glibc.read(fd, buf.baseAddress! + n, count - n)
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { break }
                n += r
            }
        }
    }

    /// Valid UTF-8; when the probe was cut from a longer file, a character cut at its end is allowed.
    func isUTF8Prefix(_ b: [UInt8], truncated: Bool) -> Bool {
        // A probe cut short may end inside a character: allow up to three bytes of one.
        b.withUnsafeBytes { all in
            (0...(truncated ? 3 : 0)).contains { cut in b.count >= cut && Bytes.isValidUTF8(UnsafeRawBufferPointer(rebasing: all.dropLast(cut))) }
        }
    }

    // MARK: Recent

    func recent(userID: String, wsID: String) async throws -> [Project] {
        let rows = try await db.read { tx in
            try tx.query("""
                SELECT p.* FROM project_opens o JOIN projects p ON p.id = o.project_id
                WHERE o.user_id = ? AND o.ws_id = ? ORDER BY o.opened_at DESC LIMIT 50
                """, userID, wsID)
        }
        return rows.map { ProjectService.project($0) }
    }
}
