import Foundation
import KilnAuth
import KilnCore
import KilnHTTP
import KilnStore

enum WorkspaceMigrations {
    static let all = [
        Migration(module: "workspaces", version: 1, name: "workspaces and memberships", sql: """
            CREATE TABLE workspaces (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE TABLE memberships (
                ws_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
                user_id TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
                created_at INTEGER NOT NULL,
                PRIMARY KEY (ws_id, user_id)
            );
            CREATE INDEX memberships_by_user ON memberships (user_id);
            """),
    ]
}

public struct Workspace: Codable, Sendable, Equatable {
    public let id: String
    public let name: String
    public let role: Role
    public let createdAt: Date
    public let updatedAt: Date
}

public struct Member: Codable, Sendable, Equatable, NullEncoding {
    public let userId: String
    public let email: String?
    public let name: String?
    public let role: Role
    public let joinedAt: Date

}

public struct WorkspaceService: Sendable {
    let db: Database
    let clock: any Clock
    let auth: AuthService

    static func validName(_ raw: String) throws -> String {
        let n = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !n.isEmpty, n.count <= 100, !n.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        return n
    }

    /// Inside an existing transaction (used by the user-created hook and by `create`).
    static func insert(_ tx: Transaction, name: String, ownerID: String, at now: Date) throws -> String {
        let id = IDs.make("ws")
        try tx.run("INSERT INTO workspaces (id, name, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", id, name, ownerID, now, now)
        try tx.run("INSERT INTO memberships (ws_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)", id, ownerID, now)
        try AuditLog.append(tx, AuditEvent(action: "workspace.created", actorUserID: ownerID, wsID: id, resourceType: "workspace", resourceID: id,
                                           details: ["name": .string(name)]), at: now)
        return id
    }

    public func role(userID: String, wsID: String) async throws -> Role? {
        try await db.read { tx in try tx.first("SELECT role FROM memberships WHERE ws_id = ? AND user_id = ?", wsID, userID) }
            .flatMap { $0.string("role").flatMap(Role.init(rawValue:)) }
    }

    public func highestRole(userID: String) async throws -> Role? {
        try await db.read { tx in try tx.query("SELECT DISTINCT role FROM memberships WHERE user_id = ?", userID) }
            .compactMap { $0.string("role").flatMap(Role.init(rawValue:)) }.max()
    }

    func create(name: String, by p: Principal, ip: String) async throws -> Workspace {
        let name = try Self.validName(name)
        let now = clock.now()
        let id = try await db.write { tx in try Self.insert(tx, name: name, ownerID: p.userID, at: now) }
        return try await get(id, userID: p.userID)
    }

    func get(_ wsID: String, userID: String) async throws -> Workspace {
        guard let r = try await db.read({ tx in
            try tx.first("SELECT w.id, w.name, w.created_at, w.updated_at, m.role FROM workspaces w JOIN memberships m ON m.ws_id = w.id WHERE w.id = ? AND m.user_id = ?", wsID, userID)
        }) else { throw APIError.notFound("Workspace not found") }
        return Self.workspace(r)
    }

    static func workspace(_ r: Row) -> Workspace {
        Workspace(id: r.string("id") ?? "", name: r.string("name") ?? "", role: Role(rawValue: r.string("role") ?? "") ?? .viewer,
                  createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0), updatedAt: r.date("updated_at") ?? Date(timeIntervalSince1970: 0))
    }

    func list(userID: String, page: PageRequest) async throws -> Page<Workspace> {
        let after = page.cursor ?? ""
        let rows = try await db.read { tx in
            try tx.query("""
                SELECT w.id, w.name, w.created_at, w.updated_at, m.role FROM memberships m JOIN workspaces w ON w.id = m.ws_id
                WHERE m.user_id = ? AND w.id > ? ORDER BY w.id LIMIT ?
                """, userID, after, page.limit + 1)
        }
        return Page(fetched: rows.map(Self.workspace), limit: page.limit, cursorOf: \.id)
    }

    func rename(_ wsID: String, name: String, by p: Principal, ip: String) async throws -> Workspace {
        let name = try Self.validName(name)
        let now = clock.now()
        try await db.write { tx in
            try tx.run("UPDATE workspaces SET name = ?, updated_at = ? WHERE id = ?", name, now, wsID)
            try AuditLog.append(tx, AuditEvent(action: "workspace.renamed", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                                               resourceType: "workspace", resourceID: wsID, ip: ip, details: ["name": .string(name)]), at: now)
        }
        return try await get(wsID, userID: p.userID)
    }

    func delete(_ wsID: String, by p: Principal, ip: String) async throws {
        let now = clock.now()
        try await db.write { tx in
            try tx.run("DELETE FROM workspaces WHERE id = ?", wsID)
            try AuditLog.append(tx, AuditEvent(action: "workspace.deleted", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                                               resourceType: "workspace", resourceID: wsID, ip: ip), at: now)
        }
    }

    func members(_ wsID: String, page: PageRequest) async throws -> Page<Member> {
        let after = page.cursor ?? ""
        let rows = try await db.read { tx in
            try tx.query("SELECT user_id, role, created_at FROM memberships WHERE ws_id = ? AND user_id > ? ORDER BY user_id LIMIT ?", wsID, after, page.limit + 1)
        }
        var out: [Member] = []
        for r in rows {
            let uid = r.string("user_id") ?? ""
            let u = try await auth.user(id: uid)
            out.append(Member(userId: uid, email: u?.email, name: u?.name, role: Role(rawValue: r.string("role") ?? "") ?? .viewer,
                              joinedAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0)))
        }
        return Page(fetched: out, limit: page.limit, cursorOf: \.userId)
    }

    /// Only owners hand out or take away the owner role, and a workspace keeps at least one owner.
    func checkRoleChange(actor: Role, from old: Role?, to new: Role?) throws {
        if (old == .owner || new == .owner) && actor != .owner {
            throw APIError(.forbidden, message: "Only an owner can grant or change the owner role")
        }
    }

    func addMember(_ wsID: String, email: String?, userID: String?, role: Role, by p: Principal, actorRole: Role, ip: String) async throws -> Member {
        try checkRoleChange(actor: actorRole, from: nil, to: role)
        let target: User?
        if let userID { target = IDs.isValid(userID, prefix: "usr") ? try await auth.user(id: userID) : nil }
        else if let email { target = try await auth.user(email: email) }
        else { throw APIError.validation("email or user_id is required", field: "email") }
        guard let target else { throw APIError.notFound("No account with that email or id") }
        let now = clock.now()
        do {
            try await db.write { tx in
                try tx.run("INSERT INTO memberships (ws_id, user_id, role, created_at) VALUES (?, ?, ?, ?)", wsID, target.id, role.rawValue, now)
                try AuditLog.append(tx, AuditEvent(action: "member.added", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                                                   resourceType: "user", resourceID: target.id, ip: ip, details: ["role": .string(role.rawValue)]), at: now)
            }
        } catch let e as StoreError where e.isConstraintViolation {
            throw APIError.conflict("That account is a member already")
        }
        return Member(userId: target.id, email: target.email, name: target.name, role: role, joinedAt: now)
    }

    func changeRole(_ wsID: String, userID: String, to role: Role, by p: Principal, actorRole: Role, ip: String) async throws -> Member {
        let now = clock.now()
        let old = try await self.role(userID: userID, wsID: wsID)
        guard let old else { throw APIError.notFound("No such member") }
        try checkRoleChange(actor: actorRole, from: old, to: role)
        try await db.write { tx in
            if old == .owner && role != .owner {
                let owners = try tx.first("SELECT COUNT(*) AS n FROM memberships WHERE ws_id = ? AND role = 'owner'", wsID)?.int("n") ?? 0
                guard owners > 1 else { throw APIError.conflict("A workspace needs at least one owner") }
            }
            try tx.run("UPDATE memberships SET role = ? WHERE ws_id = ? AND user_id = ?", role.rawValue, wsID, userID)
            try AuditLog.append(tx, AuditEvent(action: "member.role_changed", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                                               resourceType: "user", resourceID: userID, ip: ip,
                                               details: ["from": .string(old.rawValue), "to": .string(role.rawValue)]), at: now)
        }
        let u = try await auth.user(id: userID)
        return Member(userId: userID, email: u?.email, name: u?.name, role: role, joinedAt: now)
    }

    func removeMember(_ wsID: String, userID: String, by p: Principal, actorRole: Role, ip: String) async throws {
        let now = clock.now()
        guard let old = try await role(userID: userID, wsID: wsID) else { throw APIError.notFound("No such member") }
        try checkRoleChange(actor: actorRole, from: old, to: nil)
        try await db.write { tx in
            if old == .owner {
                let owners = try tx.first("SELECT COUNT(*) AS n FROM memberships WHERE ws_id = ? AND role = 'owner'", wsID)?.int("n") ?? 0
                guard owners > 1 else { throw APIError.conflict("A workspace needs at least one owner") }
            }
            try tx.run("DELETE FROM memberships WHERE ws_id = ? AND user_id = ?", wsID, userID)
            try AuditLog.append(tx, AuditEvent(action: "member.removed", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                                               resourceType: "user", resourceID: userID, ip: ip, details: ["role": .string(old.rawValue)]), at: now)
        }
    }

    /// A purged account leaves its workspaces; workspaces left without an owner go with it.
    static func purge(_ tx: Transaction, userID: String) throws {
        let owned = try tx.query("SELECT ws_id FROM memberships WHERE user_id = ? AND role = 'owner'", userID).compactMap { $0.string("ws_id") }
        try tx.run("DELETE FROM memberships WHERE user_id = ?", userID)
        for ws in owned {
            let owners = try tx.first("SELECT COUNT(*) AS n FROM memberships WHERE ws_id = ? AND role = 'owner'", ws)?.int("n") ?? 0
            if owners == 0 { try tx.run("DELETE FROM workspaces WHERE id = ?", ws) }
        }
    }
}
