import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// Collab, first part: share links. A link shows one subject (a run: its transcript, diffs and
/// receipt) read-only to anyone who has it, no account needed; its token (256 bits) is stored only as
/// a hash; it expires (≤ 720 hours), can carry a password, is revoked at once, and counts its views.
public final class CollabService: Sendable {
    let store: CollabStore
    let clock: any Clock
    let agents: (any AgentRunner)?
    let receipts: (any ReceiptVerifier)?
    let baseURL: BaseURL
    /// Wrong passwords per link in the current ten minutes.
    let wrongPasswords = Mutex<[String: (count: Int, since: Date)]>([:])

    init(services: Services, agents: (any AgentRunner)?, receipts: (any ReceiptVerifier)?) {
        store = CollabStore(db: services.db)
        clock = services.clock
        self.agents = agents
        self.receipts = receipts
        baseURL = services.baseURL
    }

    static func hash(_ token: String) -> String { Crypto.hex(Crypto.sha256(Array(token.utf8))) }

    static func shown(_ r: Row, now: Date) -> JSONValue {
        func date(_ k: String) -> JSONValue { r.date(k).map { .string(HTTPDate.iso8601($0)) } ?? .null }
        let expired = (r.date("expires_at") ?? now) <= now
        return [
            "id": .string(r.string("id") ?? ""), "ws_id": .string(r.string("ws_id") ?? ""),
            "subject": ["type": .string(r.string("subject_type") ?? ""), "id": .string(r.string("subject_id") ?? "")],
            "created_by": .string(r.string("created_by") ?? ""), "created_at": date("created_at"),
            "expires_at": date("expires_at"), "revoked_at": date("revoked_at"),
            "state": .string(r.date("revoked_at") != nil ? "revoked" : expired ? "expired" : "active"),
            "password": .bool(r.string("password_hash") != nil), "views": .int(r.int("views") ?? 0),
            "first_viewed_at": date("first_viewed_at"),
        ]
    }

    func create(_ i: ShareInput, wsID: String, userID: String, ip: String) async throws -> JSONValue {
        guard i.subject.type == "run" else {
            throw APIError.validation(
                "subject.type must be run (files and receipt chains are to come)", field: "subject.type")
        }
        let hours = i.expiresInHours ?? ShareLimits.defaultHours
        guard (1...ShareLimits.maxHours).contains(hours) else {
            throw APIError.validation(
                "expires_in_hours must be from 1 to \(ShareLimits.maxHours)", field: "expires_in_hours")
        }
        if let p = i.password, p.isEmpty || p.count > ShareLimits.maxPassword {
            throw APIError.validation("password must have 1 to 256 characters", field: "password")
        }
        guard let agents, try await agents.workspaceOf(runID: i.subject.id) == wsID else {
            throw APIError.notFound("No such run in this workspace")
        }
        let token = Base64URL.encode(Crypto.randomBytes(32))
        let id = IDs.make("shl")
        let now = clock.now()
        let expires = now.addingTimeInterval(Double(hours) * 3600)
        let passwordHash = try i.password.map { try PasswordHash.make($0) }
        try await store.db.write { [store] tx in
            try store.insertLink(
                tx, id: id, wsID: wsID, type: i.subject.type, subjectID: i.subject.id, tokenHash: Self.hash(token),
                passwordHash: passwordHash, userID: userID, at: now, expires: expires)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "share_link.created", actorUserID: userID, wsID: wsID, resourceType: "share_link",
                    resourceID: id, ip: ip,
                    details: ["subject_type": .string(i.subject.type), "subject_id": .string(i.subject.id)]), at: now)
        }
        return [
            "id": .string(id), "url": .string(baseURL.string + "/s/" + token), "path": .string("/s/" + token),
            "expires_at": .string(HTTPDate.iso8601(expires)),
        ]
    }

    func list(wsID: String) async throws -> [JSONValue] {
        let now = clock.now()
        return try await store.links(wsID: wsID).map { Self.shown($0, now: now) }
    }

    func revoke(_ id: String, wsID: String, userID: String, ip: String) async throws {
        guard IDs.isValid(id, prefix: "shl"), try await store.workspaceOf(id) == wsID else {
            throw APIError.notFound("No such share link")
        }
        let now = clock.now()
        try await store.db.write { [store] tx in
            _ = try store.revoke(tx, id, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "share_link.revoked", actorUserID: userID, wsID: wsID, resourceType: "share_link",
                    resourceID: id, ip: ip), at: now)
        }
    }

    func workspaceOf(_ id: String) async throws -> String? {
        guard IDs.isValid(id, prefix: "shl") else { return nil }
        return try await store.workspaceOf(id)
    }

    /// What a link shows: 404 for an unknown or revoked token, 410 once expired, 401 without the
    /// right password. Only the subject: a run's prompt, transcript, diffs and receipt.
    func open(token: String, password: String?) async throws -> JSONValue {
        guard token.utf8.count <= 64,
            token.unicodeScalars.allSatisfy({
                $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "_")
            }),
            let r = try await store.link(tokenHash: Self.hash(token)), r.date("revoked_at") == nil
        else { throw APIError.notFound("This link does not exist or was revoked") }
        let now = clock.now()
        guard let expires = r.date("expires_at"), expires > now else {
            throw HTTPError(HTTPStatus(410), code: "gone", message: "This link expired")
        }
        let id = r.string("id") ?? ""
        if let stored = r.string("password_hash") {
            let blocked = wrongPasswords.withLock { w -> Bool in
                if let e = w[id], now.timeIntervalSince(e.since) > 600 { w[id] = nil }
                return (w[id]?.count ?? 0) >= ShareLimits.passwordTries
            }
            guard !blocked, let password, password.count <= ShareLimits.maxPassword,
                PasswordHash.verify(password, against: stored)
            else {
                if password != nil {
                    wrongPasswords.withLock { w in
                        let e = w[id] ?? (0, now)
                        w[id] = (e.count + 1, e.since)
                    }
                }
                throw HTTPError(
                    .unauthorized, code: "unauthenticated",
                    message: blocked ? "Too many wrong passwords; try again later" : "This link needs its password")
            }
        }
        let wsID = r.string("ws_id") ?? ""
        let runID = r.string("subject_id") ?? ""
        guard let agents, let run = try await agents.shareable(runID, wsID: wsID) else {
            throw APIError.notFound("What this link showed is gone")
        }
        _ = try? await store.viewed(id, at: now)
        // The receipt without the ids of the workspace, project and account it names.
        var receipt = try await receipts?.receipt(runID: runID, wsID: wsID) ?? .null
        if case .object(var r) = receipt {
            for k in ["ws_id", "project_id", "user"] { r[k] = nil }
            receipt = .object(r)
        }
        return [
            "subject": ["type": "run", "id": .string(runID)], "run": run, "receipt": receipt,
            "expires_at": .string(HTTPDate.iso8601(expires)),
        ]
    }
}
