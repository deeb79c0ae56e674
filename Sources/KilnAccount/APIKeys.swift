import Foundation
import KilnCore
import KilnCrypto
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

public struct APIKeyService: Sendable {
    let db: Database
    let clock: any Clock
    let catalog: PermissionCatalog
    let hooks: Hooks

    static let columns = "id, name, prefix, scopes, created_at, expires_at, last_used_at, last_used_ip"

    public init(db: Database, clock: any Clock, catalog: PermissionCatalog, hooks: Hooks) {
        self.db = db; self.clock = clock; self.catalog = catalog; self.hooks = hooks
    }

    public struct CreateInput: Decodable, Sendable {
        public let name: String
        public let scopes: [String]
        public let expiresInDays: Int?
    }

    /// Makes a key `kf_` + 40 base62 characters; only its SHA-256 is stored.
    public func create(userID: String, _ input: CreateInput, ip: String) async throws -> (APIKey, String) {
        let name = input.name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 100 else { throw APIError.validation("name must have 1 to 100 characters", field: "name") }
        guard !input.scopes.isEmpty, input.scopes.count <= 100 else { throw APIError.validation("scopes must list 1 to 100 permissions", field: "scopes") }
        for s in input.scopes where catalog.permission(s) == nil {
            throw APIError.validation("unknown permission '\(s.prefix(80))' (GET /api/permissions lists them)", field: "scopes")
        }
        // A key can never hold more than its owner: user-level permissions plus the owner's highest role.
        let held = catalog.permissions(forHighestRole: try await hooks.roles?.highestRole(userID: userID))
        for s in input.scopes where !held.contains(s) {
            throw APIError.validation("you do not hold '\(s)' in any workspace, so a key cannot have it", field: "scopes")
        }
        if let d = input.expiresInDays, !(1...3650).contains(d) {
            throw APIError.validation("expires_in_days must be from 1 to 3650", field: "expires_in_days")
        }
        let token = "kf_" + IDs.randomBase62(40)
        let id = IDs.make("key")
        let now = clock.now()
        let expires = input.expiresInDays.map { now.addingTimeInterval(Double($0) * 86400) }
        let scopes = Array(Set(input.scopes)).sorted()
        let scopesJSON = String(decoding: try JSONEncoder().encode(scopes), as: UTF8.self)
        try await db.write { tx in
            try tx.run("INSERT INTO api_keys (id, user_id, name, token_hash, prefix, scopes, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       id, userID, name, Crypto.sha256Hex(Array(token.utf8)), String(token.prefix(7)), scopesJSON, now, expires)
            try AuditLog.append(tx, AuditEvent(action: "api_key.created", actorUserID: userID, resourceType: "api_key", resourceID: id, ip: ip,
                                               details: ["name": .string(name), "scopes": .array(scopes.map { .string($0) })]), at: now)
        }
        let key = try await db.read { tx in try tx.first("SELECT \(APIKeyService.columns) FROM api_keys WHERE id = ?", id).map(APIKey.init(row:)) }
        return (key!, token)
    }

    public func list(userID: String, page: PageRequest) async throws -> Page<APIKey> {
        let after = page.cursor ?? ""
        let rows = try await db.read { tx in
            try tx.query("SELECT \(APIKeyService.columns) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL AND id > ? ORDER BY id LIMIT ?",
                         userID, after, page.limit + 1)
        }
        return Page(fetched: rows.map(APIKey.init(row:)), limit: page.limit, cursorOf: \.id)
    }

    public func revoke(userID: String, id: String, ip: String) async throws {
        let now = clock.now()
        try await db.write { tx in
            let n = try tx.run("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL", now, id, userID)
            guard n == 1 else { throw APIError.notFound("No such API key") }
            try AuditLog.append(tx, AuditEvent(action: "api_key.revoked", actorUserID: userID, resourceType: "api_key", resourceID: id, ip: ip), at: now)
        }
    }

    /// The principal for a key (nil: malformed, unknown, revoked or expired). Records last use at most once a minute.
    public func resolve(token: String, ip: String) async throws -> Principal? {
        guard token.hasPrefix("kf_"), token.utf8.count == 43, token.utf8.dropFirst(3).allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) })
        else { return nil }
        let hash = Crypto.sha256Hex(Array(token.utf8))
        let now = clock.now()
        guard let r = try await db.read({ tx in
            try tx.first("SELECT id, user_id, token_hash, scopes, expires_at, last_used_at, last_used_ip, revoked_at FROM api_keys WHERE token_hash = ?", hash)
        }), let stored = r.string("token_hash"), Crypto.constantTimeEqual(Array(stored.utf8), Array(hash.utf8)),
              r["revoked_at"] == .null, let id = r.string("id"), let uid = r.string("user_id") else { return nil }
        if let exp = r.date("expires_at"), exp <= now { return nil }
        // Last use is recorded when the IP changes or a minute has passed (not a write per request).
        if r.string("last_used_ip") != ip || now.timeIntervalSince(r.date("last_used_at") ?? .distantPast) > 60 {
            _ = try? await db.write { tx in try tx.run("UPDATE api_keys SET last_used_at = ?, last_used_ip = ? WHERE id = ?", now, ip, id) }
        }
        let scopes = (try? JSONDecoder().decode([String].self, from: Data((r.string("scopes") ?? "[]").utf8))) ?? []
        return Principal(userID: uid, kind: .apiKey(id: id), scopes: Set(scopes))
    }

    public func deleteAll(_ tx: Transaction, userID: String) throws {
        try tx.run("DELETE FROM api_keys WHERE user_id = ?", userID)
    }
}
