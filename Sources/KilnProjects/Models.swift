import Foundation
import KilnCore
import KilnHTTP
import KilnStore

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

/// What a rescan found: likely secrets (masked), conflict markers, to-do and fix-me notes, large files.
public struct Finding: Codable, Sendable {
    public let path: String
    public let line: Int
    public let rule: String
    public let severity: String
    public let message: String
    /// The line with any secret value masked.
    public let excerpt: String
}

public struct RescanStats: Codable, Sendable {
    public var filesSeen = 0
    public var indexed = 0
    /// Of the files indexed, those whose content another file of this rescan already has (kept as copies).
    public var copies = 0
    public var skipped = 0
    public var unchanged = 0
    public var removed = 0
    public var bytes = 0
    public var symbols = 0
    public var findings = 0
}

/// A file as `GET /api/project/file` answers it.
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

/// `POST /api/project/load`.
public struct LoadInput: Codable, Sendable, SchemaRequiredFields {
    public static let requiredFields = ["ws_id"]
    public let wsId: String?
    public let path: String?
    public let gitUrl: String?
    public let name: String?
}

/// `POST /api/project/rescan`.
struct RescanInput: Decodable, Sendable { let projectId: String? }

/// `GET /api/project/search`: one page of matches and how many there are in all.
struct SearchPage: Encodable, Sendable {
    let items: [SearchMatch]
    let nextCursor: String?
    let total: Int
}
