import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// What collab needs of the other domains (protocols from KilnCore, implemented by their owners).
public struct CollabDependencies: Sendable {
    public var agents: (any AgentRunner)?
    public var receipts: (any ReceiptVerifier)?
    public var members: (any WorkspaceMembers)?
    public var users: (any UserDirectory)?
    public var accounts: (any InvitedAccounts)?
    public var projects: (any ProjectDirectory)?
    public var pricing: (any Pricing)?
    public init(
        agents: (any AgentRunner)? = nil, receipts: (any ReceiptVerifier)? = nil,
        members: (any WorkspaceMembers)? = nil,
        users: (any UserDirectory)? = nil, accounts: (any InvitedAccounts)? = nil,
        projects: (any ProjectDirectory)? = nil, pricing: (any Pricing)? = nil
    ) {
        self.agents = agents
        self.receipts = receipts
        self.members = members
        self.users = users
        self.accounts = accounts
        self.projects = projects
        self.pricing = pricing
    }
}

/// Collab: the activity feed (built from the bus, see `CollabFeed`), notifications, invitations,
/// reviews and share links. A share link shows one subject read-only to anyone who has it, no
/// account needed; its token (256 bits) is stored only as a hash; it expires (≤ 720 hours), can
/// carry a password, is revoked at once, and counts its views.
public final class CollabService: Sendable {
    let store: CollabStore
    let clock: any Clock
    let bus: EventBus
    let hooks: Hooks
    let mailer: any Mailer
    let agents: (any AgentRunner)?
    let receipts: (any ReceiptVerifier)?
    let members: (any WorkspaceMembers)?
    let users: (any UserDirectory)?
    let accounts: (any InvitedAccounts)?
    let projects: (any ProjectDirectory)?
    let pricing: (any Pricing)?
    let baseURL: BaseURL
    /// Wrong passwords per link in the current ten minutes.
    let wrongPasswords = Mutex<[String: (count: Int, since: Date)]>([:])
    /// Names and mail handles by user id, kept a minute (they label feed items and resolve
    /// @mentions, which would otherwise read every member's account for each comment).
    let people = Mutex<[String: (name: String, handle: String, at: Date)]>([:])

    init(services: Services, _ d: CollabDependencies) {
        store = CollabStore(db: services.db)
        clock = services.clock
        bus = services.bus
        hooks = services.hooks
        mailer = services.mailer
        agents = d.agents
        receipts = d.receipts
        members = d.members
        users = d.users
        accounts = d.accounts
        projects = d.projects
        pricing = d.pricing
        baseURL = services.baseURL
    }

    /// A user's display name and the part of their address before the `@` (their id when unknown).
    func person(_ userID: String) async throws -> (name: String, handle: String) {
        let now = clock.now()
        if let p = people.withLock({ $0[userID] }), now.timeIntervalSince(p.at) < 60 { return (p.name, p.handle) }
        let u = try await users?.user(id: userID)
        let p = (name: u?.name ?? userID, handle: String((u?.email ?? "").prefix { $0 != "@" }), at: now)
        people.withLock {
            if $0.count > 5000 { $0.removeAll() }
            $0[userID] = p
        }
        return (p.name, p.handle)
    }

    /// A user's display name (their id when unknown).
    func name(_ userID: String) async throws -> String {
        if userID.isEmpty { return "someone" }
        return try await person(userID).name
    }

    func projectName(_ projectID: String?) async throws -> String {
        guard let projectID else { return "a project" }
        return try await projects?.lookup(projectID)?.name ?? projectID
    }

    /// Publishes a collab event on the workspace topic (the feed and notifications read it there).
    func publish(_ type: String, wsID: String, actor: String?, _ data: [String: JSONValue]) async {
        _ = try? await bus.publish(
            topic: EventBus.workspaceTopic(wsID), type: type, data: JSONValue.object(data).jsonText,
            scope: EventScope(wsID: wsID, actorID: actor))
    }

    /// Which workspace a request's id parameter belongs to, through the owning domain's lookup.
    func workspace(of param: String, _ id: String) async throws -> String? {
        for (name, lookup) in hooks.resourceWorkspaces where name == param {
            if let ws = try await lookup(id) { return ws }
        }
        return nil
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

    static let shareSubjects: Set<String> = ["run", "file", "receipt_chain"]

    func create(_ i: ShareInput, wsID: String, userID: String, ip: String) async throws -> JSONValue {
        guard Self.shareSubjects.contains(i.subject.type) else {
            throw APIError.validation("subject.type must be run, file or receipt_chain", field: "subject.type")
        }
        let hours = i.expiresInHours ?? ShareLimits.defaultHours
        guard (1...ShareLimits.maxHours).contains(hours) else {
            throw APIError.validation(
                "expires_in_hours must be from 1 to \(ShareLimits.maxHours)", field: "expires_in_hours")
        }
        if let p = i.password, p.isEmpty || p.count > ShareLimits.maxPassword {
            throw APIError.validation("password must have 1 to 256 characters", field: "password")
        }
        var file: (path: String, snapshot: String)? = nil
        switch i.subject.type {
        case "file":
            file = try await fileSnapshot(projectID: i.subject.id, path: i.subject.path, wsID: wsID)
        case "receipt_chain":
            guard let agents, try await agents.workspaceOf(runID: i.subject.id) == wsID,
                try await receipts?.receipt(runID: i.subject.id, wsID: wsID) != nil
            else { throw APIError.notFound("No receipt of that run in this workspace") }
        default:
            guard let agents, try await agents.workspaceOf(runID: i.subject.id) == wsID else {
                throw APIError.notFound("No such run in this workspace")
            }
        }
        let token = Base64URL.encode(Crypto.randomBytes(32))
        let id = IDs.make("shl")
        let now = clock.now()
        let expires = now.addingTimeInterval(Double(hours) * 3600)
        let passwordHash: String? =
            if let password = i.password { try await PasswordHash.hashed(password) } else { nil }
        let (path, snapshot) = (file?.path, file?.snapshot)
        try await store.db.write { [store] tx in
            try store.insertLink(
                tx, id: id, wsID: wsID, type: i.subject.type, subjectID: i.subject.id, tokenHash: Self.hash(token),
                passwordHash: passwordHash, userID: userID, at: now, expires: expires, path: path, snapshot: snapshot)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "share_link.created", actorUserID: userID, wsID: wsID, resourceType: "share_link",
                    resourceID: id, ip: ip,
                    details: ["subject_type": .string(i.subject.type), "subject_id": .string(i.subject.id)]), at: now)
        }
        await publish(
            "share_link.created", wsID: wsID, actor: userID,
            ["link_id": .string(id), "subject_type": .string(i.subject.type)])
        return [
            "id": .string(id), "url": .string(baseURL.string + "/s/" + token), "path": .string("/s/" + token),
            "expires_at": .string(HTTPDate.iso8601(expires)),
        ]
    }

    /// A file as it is now, copied into the link (a link shows the file at that moment, not later edits).
    func fileSnapshot(projectID: String, path: String?, wsID: String) async throws -> (String, String) {
        guard let path, !path.isEmpty, path.utf8.count <= 1024 else {
            throw APIError.validation("subject.path (the file inside the project) is required", field: "subject.path")
        }
        guard let projects, IDs.isValid(projectID, prefix: "prj"), let project = try await projects.lookup(projectID),
            project.wsID == wsID
        else { throw APIError.notFound("No such project in this workspace") }
        let read: [UInt8]?
        do {
            read = try SafePath.readBeneath(root: project.root, relative: path, max: ShareLimits.maxFileBytes)
        } catch let e as HTTPError where e.status == .payloadTooLarge {
            throw APIError.validation("A shared file may have at most 1 MiB", field: "subject.path")
        }
        guard let bytes = read else { throw APIError.notFound("No such file in the project") }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw APIError.validation("Only text files can be shared", field: "subject.path")
        }
        let snap: JSONValue = [
            "path": .string(path), "content": .string(text), "sha256": .string(Crypto.hex(Crypto.sha256(bytes))),
            "bytes": .int(bytes.count), "shared_at": .string(HTTPDate.iso8601(clock.now())),
        ]
        return (path, snap.jsonText)
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
        let type = try await store.link(id)?.string("subject_type") ?? "run"
        await publish(
            "share_link.revoked", wsID: wsID, actor: userID, ["link_id": .string(id), "subject_type": .string(type)])
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
                await PasswordHash.matches(password, against: stored)
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
        // A deleted workspace's links show nothing, whatever of it other domains still keep.
        if let members, try await members.workspaceName(wsID) == nil {
            throw APIError.notFound("This link does not exist or was revoked")
        }
        let type = r.string("subject_type") ?? "run"
        let subjectID = r.string("subject_id") ?? ""
        var shown: [String: JSONValue] = ["expires_at": .string(HTTPDate.iso8601(expires))]
        switch type {
        case "file":
            // The project's id stays private: the subject names the file only.
            shown["subject"] = ["type": "file", "path": .string(r.string("subject_path") ?? "")]
            shown["file"] = try r.string("snapshot").map { try JSONValue(parsing: $0) } ?? .null
        case "receipt_chain":
            guard let receipts, let receipt = try await receipts.receipt(runID: subjectID, wsID: wsID),
                let chain = try await receipts.verifyChain(runID: subjectID, wsID: wsID)
            else { throw APIError.notFound("What this link showed is gone") }
            shown["subject"] = ["type": "receipt_chain", "id": .string(subjectID)]
            shown["receipt"] = Self.private(receipt)
            shown["chain"] = chain
        default:
            guard let agents, let run = try await agents.shareable(subjectID, wsID: wsID) else {
                throw APIError.notFound("What this link showed is gone")
            }
            shown["subject"] = ["type": "run", "id": .string(subjectID)]
            shown["run"] = run
            shown["receipt"] = Self.private(try await receipts?.receipt(runID: subjectID, wsID: wsID) ?? .null)
        }
        if (try? await store.viewed(id, at: now)) == true {
            await publish(
                "share_link.opened", wsID: wsID, actor: nil,
                [
                    "link_id": .string(id), "subject_type": .string(type),
                    "created_by": .string(r.string("created_by") ?? ""),
                ])
        }
        return .object(shown)
    }

    /// A receipt without the ids of the workspace, project and account it names.
    static func `private`(_ receipt: JSONValue) -> JSONValue {
        guard case .object(var r) = receipt else { return receipt }
        for k in ["ws_id", "project_id", "user"] { r[k] = nil }
        return .object(r)
    }
}
