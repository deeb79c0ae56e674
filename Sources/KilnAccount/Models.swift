import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// An API key as its owner sees it; the secret value appears only once, at creation.
public struct APIKey: Codable, Sendable, Equatable, NullEncoding {
    public let id: String
    public let name: String
    /// The first characters of the key, to tell keys apart.
    public let prefix: String
    public let scopes: [String]
    public let createdAt: Date
    public let expiresAt: Date?
    public let lastUsedAt: Date?
    public let lastUsedIp: String?

    init(row r: Row) {
        id = r.string("id") ?? ""
        name = r.string("name") ?? ""
        prefix = r.string("prefix") ?? ""
        scopes = (try? JSONDecoder().decode([String].self, from: Data((r.string("scopes") ?? "[]").utf8))) ?? []
        createdAt = r.date("created_at") ?? Date(timeIntervalSince1970: 0)
        expiresAt = r.date("expires_at")
        lastUsedAt = r.date("last_used_at")
        lastUsedIp = r.string("last_used_ip")
    }
}

/// `POST /api/account/api-keys`.
public struct APIKeyInput: Decodable, Sendable {
    public let name: String
    public let scopes: [String]
    public let expiresInDays: Int?
}

struct PasswordInput: Decodable, Sendable {
    let oldPassword: String
    let newPassword: String
}

struct ProfileBody: Encodable, Sendable {
    let user: User
    let emailVerificationSent: Bool
}
