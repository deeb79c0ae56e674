import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The account domain's SQL: API keys (stored only as SHA-256 hashes).
struct AccountStore: Sendable {
    let db: Database

    static let columns = "id, name, prefix, scopes, created_at, expires_at, last_used_at, last_used_ip"

    @discardableResult
    func write<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await db.write(body)
    }

    func insertKey(
        _ tx: Transaction, id: String, userID: String, name: String, tokenHash: String, prefix: String, scopes: String,
        at now: Date, expires: Date?
    ) throws {
        try tx.run(
            """
            INSERT INTO api_keys (id, user_id, name, token_hash, prefix, scopes, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, id, userID, name, tokenHash, prefix, scopes, now, expires)
    }

    func key(id: String) async throws -> APIKey? {
        try await db.read { tx in
            try tx.first("SELECT \(AccountStore.columns) FROM api_keys WHERE id = ?", id).map(APIKey.init(row:))
        }
    }

    /// The user's live keys after `afterID`, at most `limit`.
    func keys(userID: String, after afterID: String, limit: Int) async throws -> [APIKey] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT \(AccountStore.columns) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL AND id > ? ORDER BY id LIMIT ?
                """, userID, afterID, limit
            ).map(APIKey.init(row:))
        }
    }

    /// False when the user has no such live key.
    func revoke(_ tx: Transaction, id: String, userID: String, at now: Date) throws -> Bool {
        try tx.run(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL", now, id, userID)
            == 1
    }

    /// Revokes every live key of the user; how many.
    func revokeAll(_ tx: Transaction, userID: String, at now: Date) throws -> Int {
        try tx.run("UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", now, userID)
    }

    func keyByHash(_ hash: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first(
                """
                SELECT id, user_id, token_hash, scopes, expires_at, last_used_at, last_used_ip, revoked_at FROM api_keys WHERE token_hash = ?
                """, hash)
        }
    }

    func recordUse(id: String, at now: Date, ip: String) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE api_keys SET last_used_at = ?, last_used_ip = ? WHERE id = ?", now, ip, id)
        }
    }

    func deleteAll(_ tx: Transaction, userID: String) throws {
        try tx.run("DELETE FROM api_keys WHERE user_id = ?", userID)
    }
}
