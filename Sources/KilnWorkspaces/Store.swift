import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The workspaces domain's SQL: workspaces and memberships.
struct WorkspaceStore: Sendable {
    let db: Database

    @discardableResult
    func write<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await db.write(body)
    }

    func insert(_ tx: Transaction, id: String, name: String, ownerID: String, at now: Date) throws {
        try tx.run(
            "INSERT INTO workspaces (id, name, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", id, name,
            ownerID, now, now)
        try tx.run(
            "INSERT INTO memberships (ws_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)", id, ownerID, now)
    }

    func role(userID: String, wsID: String) async throws -> Role? {
        try await db.read { tx in
            try tx.first("SELECT role FROM memberships WHERE ws_id = ? AND user_id = ?", wsID, userID)
        }
        .flatMap { $0.string("role").flatMap(Role.init(rawValue:)) }
    }

    func roles(userID: String) async throws -> [Role] {
        try await db.read { tx in try tx.query("SELECT DISTINCT role FROM memberships WHERE user_id = ?", userID) }
            .compactMap { $0.string("role").flatMap(Role.init(rawValue:)) }
    }

    /// The user's first workspace (by when they joined).
    func firstWorkspace(userID: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT ws_id FROM memberships WHERE user_id = ? ORDER BY created_at, ws_id LIMIT 1", userID)?
                .string("ws_id")
        }
    }

    func workspace(_ wsID: String, userID: String) async throws -> Workspace? {
        try await db.read { tx in
            try tx.first(
                """
                SELECT w.id, w.name, w.created_at, w.updated_at, m.role FROM workspaces w JOIN memberships m ON m.ws_id = w.id
                WHERE w.id = ? AND m.user_id = ?
                """, wsID, userID
            ).map(Self.workspace)
        }
    }

    func workspaces(userID: String, after: String, limit: Int) async throws -> [Workspace] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT w.id, w.name, w.created_at, w.updated_at, m.role FROM memberships m JOIN workspaces w ON w.id = m.ws_id
                WHERE m.user_id = ? AND w.id > ? ORDER BY w.id LIMIT ?
                """, userID, after, limit
            ).map(Self.workspace)
        }
    }

    static func workspace(_ r: Row) -> Workspace {
        Workspace(
            id: r.string("id") ?? "", name: r.string("name") ?? "",
            role: Role(rawValue: r.string("role") ?? "") ?? .viewer,
            createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0),
            updatedAt: r.date("updated_at") ?? Date(timeIntervalSince1970: 0))
    }

    func rename(_ tx: Transaction, _ wsID: String, name: String, at now: Date) throws {
        try tx.run("UPDATE workspaces SET name = ?, updated_at = ? WHERE id = ?", name, now, wsID)
    }

    func delete(_ tx: Transaction, _ wsID: String) throws { try tx.run("DELETE FROM workspaces WHERE id = ?", wsID) }

    /// Memberships after `afterUser`, at most `limit`: (user id, role, joined).
    func memberships(_ wsID: String, after afterUser: String, limit: Int) async throws -> [(String, Role, Date)] {
        try await db.read { tx in
            try tx.query(
                "SELECT user_id, role, created_at FROM memberships WHERE ws_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
                wsID, afterUser, limit)
        }.map { r in
            (
                r.string("user_id") ?? "", Role(rawValue: r.string("role") ?? "") ?? .viewer,
                r.date("created_at") ?? Date(timeIntervalSince1970: 0)
            )
        }
    }

    func name(_ wsID: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT name FROM workspaces WHERE id = ?", wsID)?.string("name") }
    }

    func addMember(_ tx: Transaction, _ wsID: String, userID: String, role: Role, at now: Date) throws {
        try tx.run(
            "INSERT INTO memberships (ws_id, user_id, role, created_at) VALUES (?, ?, ?, ?)", wsID, userID,
            role.rawValue, now)
    }

    func ownerCount(_ tx: Transaction, _ wsID: String) throws -> Int {
        try tx.first("SELECT COUNT(*) AS n FROM memberships WHERE ws_id = ? AND role = 'owner'", wsID)?.int("n") ?? 0
    }

    func setRole(_ tx: Transaction, _ wsID: String, userID: String, role: Role) throws {
        try tx.run("UPDATE memberships SET role = ? WHERE ws_id = ? AND user_id = ?", role.rawValue, wsID, userID)
    }

    func removeMember(_ tx: Transaction, _ wsID: String, userID: String) throws {
        try tx.run("DELETE FROM memberships WHERE ws_id = ? AND user_id = ?", wsID, userID)
    }

    /// A purged account leaves its workspaces; workspaces left without an owner go with it.
    func purge(_ tx: Transaction, userID: String) throws {
        let owned = try tx.query("SELECT ws_id FROM memberships WHERE user_id = ? AND role = 'owner'", userID)
            .compactMap { $0.string("ws_id") }
        try tx.run("DELETE FROM memberships WHERE user_id = ?", userID)
        for ws in owned where try ownerCount(tx, ws) == 0 { try delete(tx, ws) }
    }
}
