import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// Your own account: API keys (made, listed, revoked, resolved on every keyed request), your audit
/// trail and the data export. Sessions, password and profile belong to the auth domain and arrive
/// through `AccountOperations`.
public struct AccountService: Sendable {
    let store: AccountStore
    let db: Database
    let clock: any Clock
    let catalog: PermissionCatalog
    let hooks: Hooks
    let accounts: any AccountOperations

    public init(services: Services, accounts: any AccountOperations) {
        store = AccountStore(db: services.db)
        db = services.db
        clock = services.clock
        catalog = services.catalog
        hooks = services.hooks
        self.accounts = accounts
    }

    // MARK: API keys

    /// Makes a key `kf_` + 40 base62 characters; only its SHA-256 is stored.
    public func createKey(userID: String, _ input: APIKeyInput, ip: String) async throws -> (APIKey, String) {
        let name = input.name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 100 else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        guard !input.scopes.isEmpty, input.scopes.count <= 100 else {
            throw APIError.validation("scopes must list 1 to 100 permissions", field: "scopes")
        }
        for s in input.scopes where catalog.permission(s) == nil {
            throw APIError.validation(
                "unknown permission '\(s.prefix(80))' (GET /api/permissions lists them)", field: "scopes")
        }
        // A key can never hold more than its owner: user-level permissions, the owner's highest role,
        // and the instance permissions of an admin.
        let isAdmin = try await accounts.user(id: userID)?.isAdmin ?? false
        let held = catalog.permissions(
            forHighestRole: try await hooks.roles?.highestRole(userID: userID), isAdmin: isAdmin)
        for s in input.scopes where !held.contains(s) {
            throw APIError.validation(
                "you do not hold '\(s)' in any workspace, so a key cannot have it", field: "scopes")
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
        let store = self.store
        try await store.write { tx in
            try store.insertKey(
                tx, id: id, userID: userID, name: name, tokenHash: Crypto.sha256Hex(Array(token.utf8)),
                prefix: String(token.prefix(7)), scopes: scopesJSON, at: now, expires: expires)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "api_key.created", actorUserID: userID, resourceType: "api_key", resourceID: id, ip: ip,
                    details: ["name": .string(name), "scopes": .array(scopes.map { .string($0) })]), at: now)
        }
        guard let key = try await store.key(id: id) else { throw APIError(.internalServerError) }
        return (key, token)
    }

    public func keys(userID: String, page: PageRequest) async throws -> Page<APIKey> {
        let rows = try await store.keys(userID: userID, after: page.cursor ?? "", limit: page.limit + 1)
        return Page(fetched: rows, limit: page.limit, cursorOf: \.id)
    }

    public func revokeKey(userID: String, id: String, ip: String) async throws {
        guard IDs.isValid(id, prefix: "key") else { throw APIError.notFound("No such API key") }
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            guard try store.revoke(tx, id: id, userID: userID, at: now) else {
                throw APIError.notFound("No such API key")
            }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "api_key.revoked", actorUserID: userID, resourceType: "api_key", resourceID: id, ip: ip),
                at: now)
        }
    }

    /// The principal for a key (nil: malformed, unknown, revoked or expired). Records last use at most once a minute.
    public func resolve(token: String, ip: String) async throws -> Principal? {
        guard token.hasPrefix("kf_"), token.utf8.count == 43, token.utf8.dropFirst(3).allSatisfy(Self.isBase62) else {
            return nil
        }
        let hash = Crypto.sha256Hex(Array(token.utf8))
        let now = clock.now()
        guard let r = try await store.keyByHash(hash), let stored = r.string("token_hash"),
            Crypto.constantTimeEqual(Array(stored.utf8), Array(hash.utf8)),
            r["revoked_at"] == .null, let id = r.string("id"), let uid = r.string("user_id")
        else { return nil }
        if let exp = r.date("expires_at"), exp <= now { return nil }
        // Last use is recorded when the IP changes or a minute has passed (not a write per request).
        if r.string("last_used_ip") != ip || now.timeIntervalSince(r.date("last_used_at") ?? .distantPast) > 60 {
            try? await store.recordUse(id: id, at: now, ip: ip)
        }
        let scopes = (try? JSONDecoder().decode([String].self, from: Data((r.string("scopes") ?? "[]").utf8))) ?? []
        // A disabled account's keys stop working; an admin's and an executing account's rights follow
        // the account as it is now.
        guard let owner = try await accounts.user(id: uid), owner.disabledAt == nil else { return nil }
        return Principal(
            userID: uid, kind: .apiKey(id: id), scopes: Set(scopes), mfaEnabled: owner.mfaEnabled,
            isAdmin: owner.isAdmin, canExecute: owner.canExecute)
    }

    static func isBase62(_ b: UInt8) -> Bool { (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) }

    func deleteAll(_ tx: Transaction, userID: String) throws { try store.deleteAll(tx, userID: userID) }

    /// Every live key of the account ends (a password reset: whoever knew the old password may have made keys).
    func revokeAll(_ tx: Transaction, userID: String, at now: Date) throws {
        let n = try store.revokeAll(tx, userID: userID, at: now)
        if n > 0 {
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "api_key.revoked_all", actorUserID: userID, resourceType: "user", resourceID: userID,
                    details: ["count": .int(n), "reason": "password_reset"]), at: now)
        }
    }

    // MARK: Audit trail and export

    public func auditEvents(userID: String, page: PageRequest) async throws -> Page<AuditEntry> {
        try await AuditLog.list(db, AuditLog.Filter(actor: userID), page: page)
    }

    /// Everything Kiln holds about the user as one document; the export itself is audited.
    public func export(_ p: Principal, ip: String) async throws -> JSONValue {
        var doc: [String: JSONValue] = [
            "exported_at": .string(HTTPDate.iso8601(clock.now())), "format": "kiln-account-export/1",
        ]
        doc["account"] = try await accounts.exportSection(userID: p.userID)
        doc["api_keys"] = try JSONValue(encoding: try await keys(userID: p.userID, page: PageRequest(limit: 200)).items)
        var events: [AuditEntry] = []
        var cursor: String? = nil
        repeat {
            let page = try await AuditLog.list(
                db, AuditLog.Filter(actor: p.userID), page: PageRequest(limit: 200, cursor: cursor))
            events += page.items
            cursor = page.nextCursor.flatMap(PageRequest.decodeCursor)
        } while cursor != nil && events.count < 100_000
        doc["audit_events"] = try JSONValue(encoding: events)
        for (name, section) in hooks.exportSections { doc[name] = try await section(p.userID) }
        let now = clock.now()
        try await store.write { tx in
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "account.exported", actorUserID: p.userID, actorKeyID: p.apiKeyID, resourceType: "user",
                    resourceID: p.userID, ip: ip), at: now)
        }
        return .object(doc)
    }
}
