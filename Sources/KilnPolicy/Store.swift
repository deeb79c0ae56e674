import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The policy domain's SQL: every version of each workspace's document (the newest is in force).
struct PolicyStore: Sendable {
    let db: Database

    func latest(_ wsID: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first("SELECT * FROM policy_versions WHERE ws_id = ? ORDER BY version DESC LIMIT 1", wsID)
        }
    }

    func latest(_ tx: Transaction, _ wsID: String) throws -> Row? {
        try tx.first("SELECT * FROM policy_versions WHERE ws_id = ? ORDER BY version DESC LIMIT 1", wsID)
    }

    func insert(_ tx: Transaction, wsID: String, version: Int, document: String, userID: String, at now: Date) throws {
        try tx.run(
            "INSERT INTO policy_versions (ws_id, version, document, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
            wsID, version, document, now, userID)
    }

    func history(_ wsID: String, before: Int?, limit: Int) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT ws_id, version, created_at, created_by FROM policy_versions
                WHERE ws_id = ? AND version < ? ORDER BY version DESC LIMIT ?
                """, wsID, before ?? Int.max, limit)
        }
    }
}
