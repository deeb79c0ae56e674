import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// Setting, listing, revealing and using a workspace's secrets. Values exist in plaintext only in
/// memory, on their way to a use or to a reveal.
public final class SecretsService: SecretProvider, Sendable {
    let store: SecretsStore
    let clock: any Clock
    let masterKey: MasterKey
    let hooks: Hooks
    let crash: CrashPoints
    let instances: Instances
    let policy: (any PolicyEngine)?
    /// Where a reveal a rule holds for approval is parked.
    let approvals: (any ApprovalGate)?

    init(services: Services, policy: (any PolicyEngine)? = nil, approvals: (any ApprovalGate)? = nil) {
        self.policy = policy
        self.approvals = approvals
        // An approved reveal is collected by its requester (GET …?approval_id=): its answer cannot wait.
        approvals?.onApproved(kind: "secrets.reveal") { a in
            let name = a.text("name") ?? ""
            return [
                "collect": .string("GET /api/secrets/\(name)?ws_id=\(a.wsID)&approval_id=\(a.approvalID)")
            ]
        }
        store = SecretsStore(db: services.db)
        clock = services.clock
        masterKey = services.masterKey
        instances = services.instances
        hooks = services.hooks
        crash = CrashPoints(services.config.int(SecretsModule.crashFlag))
    }

    static func info(_ r: Row) -> SecretInfo {
        SecretInfo(
            name: r.string("name") ?? "", version: r.int("version") ?? 0, createdAt: r.date("created_at") ?? Date(),
            updatedAt: r.date("updated_at") ?? Date(), updatedBy: r.string("updated_by"),
            expiresAt: r.date("expires_at"),
            lastUsedAt: r.date("last_used_at"))
    }

    func list(wsID: String) async throws -> [SecretInfo] { try await store.list(wsID).map(Self.info) }

    func versions(wsID: String, name: String) async throws -> [SecretVersion] {
        let name = try SecretRules.validName(name)
        guard try await store.current(wsID, name) != nil else { throw APIError.notFound("No secret \(name)") }
        return try await store.versions(wsID, name).map {
            SecretVersion(
                version: $0.int("version") ?? 0, createdAt: $0.date("created_at") ?? Date(),
                createdBy: $0.string("created_by"), expiresAt: $0.date("expires_at"))
        }
    }

    /// Sets a new version; returns it and whether the secret is new.
    func set(
        wsID: String, name: String, value: String, expiresAt: String?, userID: String, ip: String
    ) async throws -> (SecretInfo, created: Bool) {
        let name = try SecretRules.validName(name)
        guard !value.isEmpty, value.utf8.count <= SecretRules.maxValue else {
            throw APIError.validation("value must be 1 byte to 64 KiB", field: "value")
        }
        let now = clock.now()
        var expiry: Date? = nil
        if let expiresAt {
            guard let d = HTTPDate.parseISO8601(expiresAt), d > now else {
                throw APIError.validation("expires_at must be a time in the future (ISO 8601)", field: "expires_at")
            }
            expiry = d
        }
        let master = masterKey
        let bytes = Array(value.utf8)
        return try await store.db.write { [store, expiry] tx in
            let existed = try store.current(tx, wsID, name) != nil
            let version = try store.nextVersion(tx, wsID, name)
            // The key is read inside the (serialised) write: a rotation cannot slip in between.
            let sealed = try Envelope.seal(
                bytes, master: try master.bytes(in: tx), wsID: wsID, name: name, version: version)
            try store.put(
                tx, wsID: wsID, name: name, version: version, sealed: sealed, userID: userID, expiresAt: expiry,
                keep: SecretRules.keptVersions, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: existed ? "secret.updated" : "secret.created", actorUserID: userID, wsID: wsID,
                    resourceType: "secret", resourceID: name, ip: ip, details: ["version": .int(version)]), at: now)
            return (Self.info(try store.current(tx, wsID, name)!), !existed)
        }
    }

    /// The value, for a person who stepped up; audited with the reason they gave.
    /// A reveal a rule holds for approval is parked (202); once approved, its requester collects it
    /// once with `approvalID`.
    func reveal(
        wsID: String, name: String, reason: String?, userID: String, ip: String, approvalID: String? = nil
    ) async throws -> (
        SecretInfo, String
    ) {
        let name = try SecretRules.validName(name)
        if let reason, reason.utf8.count > 500 { throw APIError.validation("reason is too long", field: "reason") }
        if let policy {
            var grants: [PolicyGrant] = []
            if let approvalID, let approvals {
                grants.append(
                    try await approvals.redeem(
                        approvalID, userID: userID, action: "secrets.reveal", context: PolicyContext(secret: name)))
            }
            try await approvals.parking(
                wsID: wsID, userID: userID, kind: "secrets.reveal", payload: ["name": .string(name)], grants: grants
            ) {
                try await policy.check(
                    wsID: wsID, userID: userID, action: "secrets.reveal", context: PolicyContext(secret: name),
                    grants: grants)
            }
        }
        let now = clock.now()
        let master = masterKey
        return try await store.db.write { [store] tx in
            guard let cur = try store.current(tx, wsID, name) else { throw APIError.notFound("No secret \(name)") }
            let value = try Self.open(tx, store, try master.bytes(in: tx), wsID, name, cur.int("version") ?? 0)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "secret.revealed", actorUserID: userID, wsID: wsID, resourceType: "secret",
                    resourceID: name, ip: ip, details: ["reason": reason.map { .string($0) } ?? .null]), at: now)
            return (Self.info(cur), value)
        }
    }

    func delete(wsID: String, name: String, userID: String, ip: String) async throws {
        let name = try SecretRules.validName(name)
        let now = clock.now()
        try await store.db.write { [store] tx in
            guard try store.delete(tx, wsID, name) else { throw APIError.notFound("No secret \(name)") }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "secret.deleted", actorUserID: userID, wsID: wsID, resourceType: "secret",
                    resourceID: name, ip: ip), at: now)
        }
    }

    static func open(
        _ tx: Transaction, _ store: SecretsStore, _ master: [UInt8], _ wsID: String, _ name: String, _ version: Int
    ) throws -> String {
        guard let row = try store.sealed(tx, wsID, name, version), let wrapped = row.blob("wrapped_key"),
            let ct = row.blob("ciphertext")
        else { throw APIError.conflict("Secret \(name) has no stored value") }
        let sealed = Envelope.Sealed(keyID: row.string("key_id") ?? "", wrappedKey: wrapped, ciphertext: ct)
        guard let bytes = try? Envelope.open(sealed, master: master, wsID: wsID, name: name, version: version) else {
            throw APIError.conflict("Secret \(name) cannot be decrypted with this server's master key")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: Master key rotation

    /// A new master key: every data key (and every other domain's sealed value, through the hooks)
    /// re-sealed in one transaction; see `MasterKey` for what a crash at any point leaves.
    func rotateMaster(userID: String, ip: String) async throws -> (keyID: String, resealed: Int) {
        guard let next = masterKey.nextPath, !masterKey.fromEnvironment else {
            throw APIError.conflict(
                "This server's master key comes from KILN_MASTER_KEY (or lives only in memory); "
                    + "rotate it where it is kept"
            )
        }
        guard masterKey.beginRotation() else { throw APIError.conflict("A master key rotation is already running") }
        defer { masterKey.endRotation() }
        // One rotation in the cluster at a time: instances sharing the data dir share master.key.next.
        // (A SQLite file has one server; the lock above is enough there.)
        guard store.db.kind == .postgres else { return try await rotate(next: next, userID: userID, ip: ip) }
        guard try await instances.lease(Self.rotationLease, for: 600) else {
            throw APIError.conflict("A master key rotation is running on another instance")
        }
        do {
            let result = try await rotate(next: next, userID: userID, ip: ip)
            try? await instances.release(Self.rotationLease)
            return result
        } catch {
            try? await instances.release(Self.rotationLease)
            throw error
        }
    }

    static let rotationLease = "master_key_rotation"

    private func rotate(next: String, userID: String, ip: String) async throws -> (keyID: String, resealed: Int) {
        let held = masterKey.bytes
        let new = Crypto.randomBytes(32)
        crash.pass("before writing master.key.next")
        try MasterKey.write(new, to: next, replace: true)
        crash.pass("after writing master.key.next")
        let now = clock.now()
        let (master, hooks, crash) = (masterKey, hooks, crash)
        let count: Int
        do {
            count = try await store.db.write { [store] tx in
                // The key the database names (another instance may have rotated it since this one read it).
                let old = try master.named(in: tx)
                var n = 0
                for row in try store.allSealed(tx) {
                    let (ws, name, version) = (
                        row.string("ws_id") ?? "", row.string("name") ?? "", row.int("version") ?? 0
                    )
                    guard let wrapped = row.blob("wrapped_key") else { continue }
                    let rewrapped = try Envelope.rewrap(
                        wrapped, old: old, new: new, wsID: ws, name: name, version: version)
                    try store.reseal(tx, ws, name, version, wrapped: rewrapped, keyID: MasterKey.fingerprint(new))
                    n += 1
                    crash.pass("after re-sealing data key \(n)")
                }
                try hooks.rotateMasterKey(tx, old: old, new: new)
                crash.pass("after the other domains re-sealed")
                try MasterKey.record(tx, keyID: MasterKey.fingerprint(new), rotatedAt: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "master_key.rotated", actorUserID: userID, resourceType: "master_key",
                        resourceID: MasterKey.fingerprint(new), ip: ip, details: ["resealed": .int(n)]), at: now)
                crash.pass("before commit")
                // In memory inside the writer: every later write seals with the new key.
                master.replace(new)
                return n
            }
        } catch {
            master.replace(held)
            unlink(next)
            // What the database names (the held key may have been stale).
            _ = try? await store.db.read { tx in try master.named(in: tx) }
            throw error
        }
        crash.pass("after commit")
        try masterKey.commitNext()
        crash.pass("after renaming master.key.next")
        return (MasterKey.fingerprint(new), count)
    }

    // MARK: SecretProvider

    public func use(
        _ names: [String], wsID: String, userID: String, purpose: String, grants: [PolicyGrant]
    ) async throws -> [SecretValue] {
        guard !names.isEmpty else { return [] }
        guard names.count <= 32 else { throw APIError.validation("At most 32 secrets per use", field: "secrets") }
        let unique = Array(Set(try names.map { try SecretRules.validName($0) })).sorted()
        if let policy {
            for name in unique {
                try await policy.check(
                    wsID: wsID, userID: userID, action: "secrets.use", context: PolicyContext(secret: name),
                    grants: grants)
            }
        }
        let now = clock.now()
        let master = masterKey
        return try await store.db.write { [store] tx in
            var out: [SecretValue] = []
            for name in unique {
                guard let cur = try store.current(tx, wsID, name) else {
                    throw APIError.validation("No secret \(name) in this workspace", field: "secrets")
                }
                if let exp = cur.date("expires_at"), exp <= now {
                    throw APIError.validation("Secret \(name) expired", field: "secrets")
                }
                let value = try Self.open(tx, store, try master.bytes(in: tx), wsID, name, cur.int("version") ?? 0)
                guard value.utf8.count >= SecretRules.minInjectable else {
                    throw APIError.validation(
                        "Secret \(name) is shorter than \(SecretRules.minInjectable) bytes, too short to be redacted "
                            + "from output reliably; it cannot be injected", field: "secrets")
                }
                out.append(SecretValue(name: name, value: value))
            }
            try store.markUsed(tx, wsID, unique, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "secret.used", actorUserID: userID, wsID: wsID, resourceType: "secret",
                    resourceID: unique.joined(separator: ","), details: ["purpose": .string(purpose)]), at: now)
            return out
        }
    }
}
