import Foundation
import KilnHTTP

/// A resolved project as other domains see it: where it lives and what it is.
public struct ProjectRef: Sendable, Equatable {
    public let id: String
    public let wsID: String
    public let name: String
    /// The real path of the project's folder.
    public let root: String
    public let vcs: String

    public init(id: String, wsID: String, name: String, root: String, vcs: String) {
        self.id = id
        self.wsID = wsID
        self.name = name
        self.root = root
        self.vcs = vcs
    }
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

    public init(name: String, path: String, type: String, size: Int, mtime: Date, gitStatus: String?, ignored: Bool) {
        self.name = name
        self.path = path
        self.type = type
        self.size = size
        self.mtime = mtime
        self.gitStatus = gitStatus
        self.ignored = ignored
    }
}

/// One line a search found, with context.
public struct SearchMatch: Codable, Sendable {
    public let path: String
    public let line: Int
    /// 1-based, in characters.
    public let column: Int
    public let text: String
    public let before: [String]
    public let after: [String]
    /// Ranked first: the match is a whole word, or the line defines a symbol of that name.
    public let exactWord: Bool
    public let definition: Bool

    public init(
        path: String, line: Int, column: Int, text: String, before: [String], after: [String], exactWord: Bool,
        definition: Bool
    ) {
        self.path = path
        self.line = line
        self.column = column
        self.text = text
        self.before = before
        self.after = after
        self.exactWord = exactWord
        self.definition = definition
    }
}

/// A symbol definition found in a file.
public struct Symbol: Codable, Sendable, Equatable, NullEncoding {
    public let name: String
    public let kind: String
    public let path: String
    public let line: Int
    public let scope: String?
    public let language: String

    public init(name: String, kind: String, path: String, line: Int, scope: String?, language: String) {
        self.name = name
        self.kind = kind
        self.path = path
        self.line = line
        self.scope = scope
        self.language = language
    }
}

/// What the other domains may do with projects (implemented by the projects domain): resolve the
/// project a request names inside the admitted workspace, and read, search and re-index it.
public protocol ProjectDirectory: Sendable {
    /// The project a request names (or the caller's most recently opened one) inside the admitted workspace.
    func resolve(_ projectID: String?, access: WorkspaceAccess, userID: String) async throws -> ProjectRef
    /// A project by id, without an access check (for work that already holds the id).
    func lookup(_ projectID: String) async throws -> ProjectRef?
    /// Re-indexes the project in the foreground (after an agent changed files, say).
    func reindex(_ project: ProjectRef) async throws
    /// Full-text search (the project is indexed first when it never was): the first `limit` matches
    /// (best first) and how many there are.
    func search(
        _ project: ProjectRef, q: String, regex: Bool, caseSensitive: Bool, pathGlob: String?, limit: Int
    ) async throws -> (matches: [SearchMatch], total: Int)
    func symbols(_ project: ProjectRef, q: String, kind: String?, limit: Int) async throws -> [Symbol]
    /// One directory level, ignored entries hidden.
    func list(_ project: ProjectRef, path: String) async throws -> [TreeEntry]
    /// The workspace's projects, by name.
    func projects(wsID: String) async throws -> [ProjectRef]
    /// The project's indexed file paths, sorted (empty until its first rescan).
    func indexedPaths(_ project: ProjectRef) async throws -> [String]
}
