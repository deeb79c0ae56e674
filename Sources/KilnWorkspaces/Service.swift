import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Workspaces, their members and roles. The access check asks it for a caller's role.
/// Membership changes are published on the workspace topic (`member.joined`, `member.left`,
/// `member.removed`, `member.role_changed`) for the activity feed and notifications.
public struct WorkspaceService: WorkspaceMembers {
    let store: WorkspaceStore
    let clock: any Clock
    let users: any UserDirectory
    let bus: EventBus
    let hooks: Hooks

    public init(services: Services, users: any UserDirectory) {
        hooks = services.hooks
        store = WorkspaceStore(db: services.db)
        clock = services.clock
        self.users = users
        bus = services.bus
    }

    /// `{user_id, role, from?}` on `ws:<id>`, scoped to the actor.
    func publishMember(
        _ type: String, wsID: String, userID: String, role: Role?, from: Role? = nil, actor: String
    ) async {
        var data: [String: JSONValue] = ["user_id": .string(userID)]
        if let role { data["role"] = .string(role.rawValue) }
        if let from { data["from"] = .string(from.rawValue) }
        _ = try? await bus.publish(
            topic: EventBus.workspaceTopic(wsID), type: type, data: JSONValue.object(data).jsonText,
            scope: EventScope(wsID: wsID, actorID: actor))
    }

    public func memberRoles(wsID: String) async throws -> [(userID: String, role: Role)] {
        try await store.memberships(wsID, after: "", limit: 10_000).map { ($0.0, $0.1) }
    }

    public func workspaceName(_ wsID: String) async throws -> String? { try await store.name(wsID) }

    public func join(wsID: String, userID: String, role: Role, invitedBy: String, ip: String) async throws {
        let now = clock.now()
        let store = self.store
        do {
            try await store.write { tx in
                try store.addMember(tx, wsID, userID: userID, role: role, at: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "member.joined", actorUserID: userID, wsID: wsID, resourceType: "user",
                        resourceID: userID, ip: ip,
                        details: ["role": .string(role.rawValue), "invited_by": .string(invitedBy)]), at: now)
            }
        } catch let e as StoreError where e.isConstraintViolation {
            throw APIError.conflict("You are a member of this workspace already")
        }
        await publishMember("member.joined", wsID: wsID, userID: userID, role: role, actor: userID)
    }

    static func validName(_ raw: String) throws -> String {
        let n = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !n.isEmpty, n.count <= 100, !n.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        return n
    }

    /// Inside an existing transaction (used by the user-created hook and by `create`).
    func insert(_ tx: Transaction, name: String, ownerID: String, at now: Date) throws -> String {
        let id = IDs.make("ws")
        try store.insert(tx, id: id, name: name, ownerID: ownerID, at: now)
        try AuditLog.append(
            tx,
            AuditEvent(
                action: "workspace.created", actorUserID: ownerID, wsID: id, resourceType: "workspace", resourceID: id,
                details: ["name": .string(name)]), at: now)
        return id
    }

    public func role(userID: String, wsID: String) async throws -> Role? {
        try await store.role(userID: userID, wsID: wsID)
    }
    public func highestRole(userID: String) async throws -> Role? { try await store.roles(userID: userID).max() }
    func firstWorkspace(userID: String) async throws -> String? { try await store.firstWorkspace(userID: userID) }

    func create(name: String, by p: Principal, ip: String) async throws -> Workspace {
        let name = try Self.validName(name)
        let now = clock.now()
        let service = self
        let id = try await store.write { tx in try service.insert(tx, name: name, ownerID: p.userID, at: now) }
        return try await get(id, userID: p.userID)
    }

    func get(_ wsID: String, userID: String) async throws -> Workspace {
        guard let w = try await store.workspace(wsID, userID: userID) else {
            throw APIError.notFound("Workspace not found")
        }
        return w
    }

    func list(userID: String, page: PageRequest) async throws -> Page<Workspace> {
        Page(
            fetched: try await store.workspaces(userID: userID, after: page.cursor ?? "", limit: page.limit + 1),
            limit: page.limit,
            cursorOf: \.id)
    }

    func rename(_ wsID: String, name: String, by p: Principal, ip: String) async throws -> Workspace {
        let name = try Self.validName(name)
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            try store.rename(tx, wsID, name: name, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "workspace.renamed", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "workspace", resourceID: wsID, ip: ip, details: ["name": .string(name)]), at: now)
        }
        return try await get(wsID, userID: p.userID)
    }

    func delete(_ wsID: String, by p: Principal, ip: String) async throws {
        let now = clock.now()
        try p.requireStepUp(now: now)
        let (store, hooks) = (self.store, self.hooks)
        try await store.write { tx in
            // What the domains kept for it goes in the same transaction (its secrets, credentials…).
            try hooks.workspaceDeleted(tx, wsID: wsID)
            try store.delete(tx, wsID)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "workspace.deleted", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "workspace", resourceID: wsID, ip: ip), at: now)
        }
    }

    func members(_ wsID: String, page: PageRequest) async throws -> Page<Member> {
        var out: [Member] = []
        for (uid, role, joined) in try await store.memberships(wsID, after: page.cursor ?? "", limit: page.limit + 1) {
            let u = try await users.user(id: uid)
            out.append(Member(userId: uid, email: u?.email, name: u?.name, role: role, joinedAt: joined))
        }
        return Page(fetched: out, limit: page.limit, cursorOf: \.userId)
    }

    /// Only owners hand out or take away the owner role, and a workspace keeps at least one owner.
    func checkRoleChange(actor: Role, from old: Role?, to new: Role?) throws {
        if (old == .owner || new == .owner) && actor != .owner {
            throw APIError(.forbidden, message: "Only an owner can grant or change the owner role")
        }
    }

    func addMember(
        _ wsID: String, email: String?, userID: String?, role: Role, by p: Principal, actorRole: Role, ip: String
    ) async throws -> Member {
        try checkRoleChange(actor: actorRole, from: nil, to: role)
        if role >= .admin { try p.requireStepUp(now: clock.now()) }
        let target: User?
        if let userID {
            target = IDs.isValid(userID, prefix: "usr") ? try await users.user(id: userID) : nil
        } else if let email {
            target = try await users.user(email: email)
        } else {
            throw APIError.validation("email or user_id is required", field: "email")
        }
        guard let target else { throw APIError.notFound("No account with that email or id") }
        let now = clock.now()
        let store = self.store
        do {
            try await store.write { tx in
                try store.addMember(tx, wsID, userID: target.id, role: role, at: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "member.added", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                        resourceType: "user", resourceID: target.id, ip: ip, details: ["role": .string(role.rawValue)]),
                    at: now)
            }
        } catch let e as StoreError where e.isConstraintViolation {
            throw APIError.conflict("That account is a member already")
        }
        await publishMember("member.added", wsID: wsID, userID: target.id, role: role, actor: p.userID)
        return Member(userId: target.id, email: target.email, name: target.name, role: role, joinedAt: now)
    }

    func changeRole(
        _ wsID: String, userID: String, to role: Role, by p: Principal, actorRole: Role, ip: String
    ) async throws -> Member {
        let now = clock.now()
        guard let old = try await self.role(userID: userID, wsID: wsID) else {
            throw APIError.notFound("No such member")
        }
        if role >= .admin && role != old { try p.requireStepUp(now: now) }
        try checkRoleChange(actor: actorRole, from: old, to: role)
        let store = self.store
        try await store.write { tx in
            if old == .owner && role != .owner, try store.ownerCount(tx, wsID) <= 1 {
                throw APIError.conflict("A workspace needs at least one owner")
            }
            try store.setRole(tx, wsID, userID: userID, role: role)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "member.role_changed", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "user", resourceID: userID, ip: ip,
                    details: ["from": .string(old.rawValue), "to": .string(role.rawValue)]), at: now)
        }
        if role != old {
            await publishMember(
                "member.role_changed", wsID: wsID, userID: userID, role: role, from: old, actor: p.userID)
        }
        let u = try await users.user(id: userID)
        return Member(userId: userID, email: u?.email, name: u?.name, role: role, joinedAt: now)
    }

    /// Removes a member (admins and owners), or the caller leaves (any member but the last owner).
    func removeMember(_ wsID: String, userID: String, by p: Principal, actorRole: Role, ip: String) async throws {
        let now = clock.now()
        guard let old = try await role(userID: userID, wsID: wsID) else { throw APIError.notFound("No such member") }
        let leaving = userID == p.userID
        if !leaving {
            guard actorRole >= WorkspacePermission.membersWrite.minimumRole else {
                throw HTTPError(
                    .forbidden,
                    message: "Your role (\(actorRole.rawValue)) may only remove yourself from this workspace",
                    details: [
                        "permission": .string(WorkspacePermission.membersWrite.name),
                        "role": .string(actorRole.rawValue),
                    ])
            }
            try checkRoleChange(actor: actorRole, from: old, to: nil)
        }
        let store = self.store
        try await store.write { tx in
            if old == .owner, try store.ownerCount(tx, wsID) <= 1 {
                throw APIError.conflict("A workspace needs at least one owner")
            }
            try store.removeMember(tx, wsID, userID: userID)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: leaving ? "member.left" : "member.removed", actorUserID: p.userID, actorKeyID: p.apiKeyID,
                    wsID: wsID,
                    resourceType: "user", resourceID: userID, ip: ip, details: ["role": .string(old.rawValue)]), at: now
            )
        }
        await publishMember(
            leaving ? "member.left" : "member.removed", wsID: wsID, userID: userID, role: old, actor: p.userID)
    }

    func purge(_ tx: Transaction, userID: String) throws { try store.purge(tx, userID: userID) }

    func auditTrail(_ filter: AuditLog.Filter, page: PageRequest) async throws -> Page<AuditEntry> {
        try await AuditLog.list(store.db, filter, page: page)
    }
}
