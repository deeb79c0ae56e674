import Foundation
import KilnStore

/// Terminals live in the process that started them; this table says which instance holds each,
/// so another instance sharing the database can send a client there (421) instead of a 404.
struct TerminalStore: Sendable {
    let db: Database

    func record(id: String, wsID: String, userID: String, instance: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "INSERT INTO pty_terminals (id, ws_id, user_id, instance_id, created_at) VALUES (?, ?, ?, ?, ?)", id,
                wsID, userID, instance, now)
        }
    }

    func ended(_ id: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE pty_terminals SET ended_at = ? WHERE id = ? AND ended_at IS NULL", now, id)
        }
    }

    /// A terminal not yet ended: its workspace, owner and instance.
    func open(_ id: String) async throws -> (wsID: String, userID: String, instance: String)? {
        try await db.read { tx in
            try tx.first("SELECT ws_id, user_id, instance_id FROM pty_terminals WHERE id = ? AND ended_at IS NULL", id)
        }.flatMap { r in
            guard let ws = r.string("ws_id"), let user = r.string("user_id"), let inst = r.string("instance_id") else {
                return nil
            }
            return (ws, user, inst)
        }
    }
}
