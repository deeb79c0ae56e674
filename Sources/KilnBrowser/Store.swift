import Foundation
import KilnCore
import KilnStore

/// The browser domain's SQL: each workspace's allowlist, runs with their results, screenshots (their
/// PNG files live in the data dir).
struct BrowserStore: Sendable {
    let db: Database

    func allowlist(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT pattern, note FROM browser_allowlist WHERE ws_id = ? ORDER BY position", wsID)
        }
    }

    func setAllowlist(_ tx: Transaction, wsID: String, _ entries: [(String, String)]) throws {
        try tx.run("DELETE FROM browser_allowlist WHERE ws_id = ?", wsID)
        for (i, e) in entries.enumerated() {
            try tx.run(
                "INSERT INTO browser_allowlist (ws_id, position, pattern, note) VALUES (?, ?, ?, ?)", wsID, i, e.0, e.1)
        }
    }

    func insertRun(
        id: String, wsID: String, userID: String, kind: String, url: String, instance: String, at now: Date
    ) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO browser_runs (id, ws_id, user_id, kind, url, status, created_at, instance_id)
                VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)
                """, id, wsID, userID, kind, url, now, instance)
        }
    }

    func setRunning(_ id: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE browser_runs SET status = 'running', started_at = ? WHERE id = ?", now, id)
        }
    }

    func finish(_ id: String, status: String, result: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "UPDATE browser_runs SET status = ?, result = ?, ended_at = ? WHERE id = ?", status, result, now, id)
        }
    }

    /// Runs queued or running, with the instance holding each.
    func unfinished() async throws -> [(id: String, instance: String?)] {
        try await db.read { tx in
            try tx.query("SELECT id, instance_id FROM browser_runs WHERE status IN ('queued', 'running')")
        }.compactMap { r in r.string("id").map { ($0, r.string("instance_id")) } }
    }

    /// Ends a run its instance left; true when this call did (another survivor may have been first).
    func finishLost(_ id: String, result: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            try tx.run(
                """
                UPDATE browser_runs SET status = 'lost', result = ?, ended_at = ?
                WHERE id = ? AND status IN ('queued', 'running')
                """, result, now, id)
        } > 0
    }

    func instanceOf(_ id: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT instance_id FROM browser_runs WHERE id = ?", id)?.string("instance_id")
        }
    }

    func run(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM browser_runs WHERE id = ?", id) }
    }

    func runs(wsID: String, before cursor: String?, limit: Int) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT * FROM browser_runs WHERE ws_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?
                """, wsID, cursor, cursor, limit)
        }
    }

    func insertShot(
        id: String, runID: String, name: String, width: Int, height: Int, bytes: Int, at now: Date
    )
        async throws
    {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO browser_shots (id, run_id, name, width, height, bytes, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """, id, runID, name, width, height, bytes, now)
        }
    }

    func shots(_ runID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM browser_shots WHERE run_id = ? ORDER BY created_at, id", runID)
        }
    }

    func shot(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM browser_shots WHERE id = ?", id) }
    }

    /// Runs that ended before `cutoff` and still have screenshots (a page of them).
    func runsWithShotsEndedBefore(_ cutoff: Date, limit: Int) async throws -> [String] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT DISTINCT r.id FROM browser_runs r JOIN browser_shots s ON s.run_id = r.id
                WHERE r.ended_at IS NOT NULL AND r.ended_at < ? ORDER BY r.id LIMIT ?
                """, cutoff, limit
            ).compactMap { $0.string("id") }
        }
    }

    func deleteShots(runID: String) async throws {
        _ = try await db.write { tx in try tx.run("DELETE FROM browser_shots WHERE run_id = ?", runID) }
    }

    func workspaceOfRun(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM browser_runs WHERE id = ?", id)?.string("ws_id") }
    }

    /// A deleted workspace's allowlist (its runs stay, as history).
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM browser_allowlist WHERE ws_id = ?", wsID)
    }
}
