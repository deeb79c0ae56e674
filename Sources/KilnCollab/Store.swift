import Foundation
import KilnCore
import KilnStore

/// The collab domain's SQL: share links (tokens kept only as hashes).
struct CollabStore: Sendable {
    let db: Database

    func insertLink(
        _ tx: Transaction, id: String, wsID: String, type: String, subjectID: String, tokenHash: String,
        passwordHash: String?, userID: String, at now: Date, expires: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO share_links (id, ws_id, subject_type, subject_id, token_hash, password_hash, created_by,
                created_at, expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, id, wsID, type, subjectID, tokenHash, passwordHash, userID, now, expires)
    }

    func links(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM share_links WHERE ws_id = ? ORDER BY created_at DESC, id DESC LIMIT 500", wsID)
        }
    }

    func link(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM share_links WHERE id = ?", id) }
    }

    func link(tokenHash: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM share_links WHERE token_hash = ?", tokenHash) }
    }

    func revoke(_ tx: Transaction, _ id: String, at now: Date) throws -> Bool {
        try tx.run("UPDATE share_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", now, id) > 0
    }

    /// Counts a view; true when it was the first.
    func viewed(_ id: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            let first =
                try tx.run(
                    "UPDATE share_links SET first_viewed_at = ? WHERE id = ? AND first_viewed_at IS NULL", now, id) > 0
            try tx.run("UPDATE share_links SET views = views + 1 WHERE id = ?", id)
            return first
        }
    }

    func workspaceOf(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM share_links WHERE id = ?", id)?.string("ws_id") }
    }
}
