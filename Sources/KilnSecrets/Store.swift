import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The secrets domain's SQL: one row per secret (its current version and use) and its kept versions
/// (sealed data key and ciphertext).
struct SecretsStore: Sendable {
    let db: Database

    func list(_ wsID: String) async throws -> [Row] {
        try await db.read { tx in try tx.query("SELECT * FROM secrets WHERE ws_id = ? ORDER BY name", wsID) }
    }

    func current(_ tx: Transaction, _ wsID: String, _ name: String) throws -> Row? {
        try tx.first("SELECT * FROM secrets WHERE ws_id = ? AND name = ?", wsID, name)
    }

    func current(_ wsID: String, _ name: String) async throws -> Row? {
        try await db.read { tx in try current(tx, wsID, name) }
    }

    /// The current version's sealed row.
    func sealed(_ tx: Transaction, _ wsID: String, _ name: String, _ version: Int) throws -> Row? {
        try tx.first(
            "SELECT * FROM secret_versions WHERE ws_id = ? AND name = ? AND version = ?", wsID, name, version)
    }

    func sealed(_ wsID: String, _ name: String, _ version: Int) async throws -> Row? {
        try await db.read { tx in try sealed(tx, wsID, name, version) }
    }

    func versions(_ wsID: String, _ name: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT version, created_at, created_by, expires_at FROM secret_versions
                WHERE ws_id = ? AND name = ? ORDER BY version DESC
                """, wsID, name)
        }
    }

    /// The next version number of a secret (1 for a new one).
    func nextVersion(_ tx: Transaction, _ wsID: String, _ name: String) throws -> Int {
        (try tx.first(
            "SELECT COALESCE(MAX(version), 0) AS v FROM secret_versions WHERE ws_id = ? AND name = ?", wsID, name)?.int(
                "v") ?? 0) + 1
    }

    /// Stores a new version, makes it current and keeps only the newest `keep` versions.
    func put(
        _ tx: Transaction, wsID: String, name: String, version: Int, sealed: Envelope.Sealed, userID: String,
        expiresAt: Date?, keep: Int, at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO secret_versions
                (ws_id, name, version, key_id, wrapped_key, ciphertext, created_at, created_by, expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, wsID, name, version, sealed.keyID, sealed.wrappedKey, sealed.ciphertext, now, userID, expiresAt)
        try tx.run(
            """
            INSERT INTO secrets (ws_id, name, version, created_at, updated_at, updated_by, expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (ws_id, name) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at,
                updated_by = excluded.updated_by, expires_at = excluded.expires_at
            """, wsID, name, version, now, now, userID, expiresAt)
        try tx.run(
            "DELETE FROM secret_versions WHERE ws_id = ? AND name = ? AND version <= ?", wsID, name, version - keep)
    }

    func delete(_ tx: Transaction, _ wsID: String, _ name: String) throws -> Bool {
        try tx.run("DELETE FROM secret_versions WHERE ws_id = ? AND name = ?", wsID, name)
        return try tx.run("DELETE FROM secrets WHERE ws_id = ? AND name = ?", wsID, name) > 0
    }

    /// Every kept version's sealed data key (for a master key rotation).
    func allSealed(_ tx: Transaction) throws -> [Row] {
        try tx.query("SELECT ws_id, name, version, wrapped_key FROM secret_versions")
    }

    func reseal(
        _ tx: Transaction, _ wsID: String, _ name: String, _ version: Int, wrapped: [UInt8], keyID: String
    ) throws {
        try tx.run(
            "UPDATE secret_versions SET wrapped_key = ?, key_id = ? WHERE ws_id = ? AND name = ? AND version = ?",
            wrapped,
            keyID, wsID, name, version)
    }

    func markUsed(_ tx: Transaction, _ wsID: String, _ names: [String], at now: Date) throws {
        for n in names { try tx.run("UPDATE secrets SET last_used_at = ? WHERE ws_id = ? AND name = ?", now, wsID, n) }
    }

    /// A deleted workspace's secrets, every version.
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM secret_versions WHERE ws_id = ?", wsID)
        try tx.run("DELETE FROM secrets WHERE ws_id = ?", wsID)
    }
}
