import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// An invitation as admins see it (never its token).
public struct Invitation: Codable, Sendable, Equatable {
    public let id: String
    public let email: String
    public let createdBy: String?
    public let createdAt: Date
    public let expiresAt: Date
    public let usedAt: Date?
    public let usedBy: String?
}

/// Instance administration: accounts, admins, who may run commands, invitations. Every change is
/// audited with the admin who made it; the last active admin always stays.
extension AuthService {
    static let invitationDefaultHours = 72
    static let invitationMaxHours = 24 * 30

    public func listUsers(q: String?, page: PageRequest) async throws -> Page<User> {
        if let q, q.utf8.count > 254 { throw APIError.validation("q is too long", field: "q") }
        let rows = try await store.listUsers(q: q, after: page.cursor, limit: page.limit + 1)
        return Page(fetched: rows, limit: page.limit, cursorOf: \.id)
    }

    /// An admin-made account: no password yet, a one-time setup link (24 hours) to choose it.
    public func adminCreateUser(
        email: String, name: String?, by admin: String, ip: String
    ) async throws -> (
        User, String
    ) {
        let email = try AuthService.validEmail(email)
        let (user, token) = try await createUser(
            email: email, name: name ?? String(email.split(separator: "@")[0]), by: admin, ip: ip)
        return (user, "\(baseURL.string)/setup?token=\(token)")
    }

    public enum AdminChange: String, Sendable {
        case disable, enable
        case grantAdmin = "grant-admin"
        case revokeAdmin = "revoke-admin"
        case allowExec = "allow-exec"
        case denyExec = "deny-exec"
    }

    /// Applies one admin change to `userID` (404 for no such account, 409 when it would leave no admin).
    public func adminChange(_ change: AdminChange, userID: String, by admin: String, ip: String) async throws -> User {
        guard IDs.isValid(userID, prefix: "usr") else { throw APIError.notFound("No such account") }
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            guard try store.exists(tx, userID: userID) else { throw APIError.notFound("No such account") }
            let wasAdmin = try store.isAdmin(tx, userID: userID)
            switch change {
            case .disable:
                guard userID != admin else { throw APIError.conflict("You cannot disable your own account") }
                if try wasAdmin && store.adminCount(tx) <= 1 {
                    throw APIError.conflict("This is the last admin; make another admin first")
                }
                try store.setDisabled(tx, userID: userID, now, now: now)
                try store.revokeSessions(tx, userID: userID, at: now)
            case .enable: try store.setDisabled(tx, userID: userID, nil, now: now)
            case .grantAdmin: try store.setAdmin(tx, userID: userID, true, at: now)
            case .revokeAdmin:
                if try wasAdmin && store.adminCount(tx) <= 1 {
                    throw APIError.conflict("This is the last admin; make another admin first")
                }
                try store.setAdmin(tx, userID: userID, false, at: now)
            case .allowExec: try store.setCanExecute(tx, userID: userID, true, at: now)
            case .denyExec: try store.setCanExecute(tx, userID: userID, false, at: now)
            }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "admin.\(change.rawValue)", actorUserID: admin, resourceType: "user", resourceID: userID,
                    ip: ip), at: now)
        }
        guard let user = try await user(id: userID) else { throw APIError.notFound("No such account") }
        return user
    }

    /// Whether the account may start processes (active and allowed).
    public func mayExecute(userID: String) async throws -> Bool { try await store.canExecute(userID: userID) }

    // MARK: Invitations

    /// A single-use invitation for `email`, valid `ttlHours` (default 72, at most 720); returns it and its link.
    public func invite(email: String, ttlHours: Int?, by admin: String, ip: String) async throws -> (Invitation, String)
    {
        let email = try AuthService.validEmail(email)
        let hours = ttlHours ?? AuthService.invitationDefaultHours
        guard (1...AuthService.invitationMaxHours).contains(hours) else {
            throw APIError.validation(
                "ttl_hours must be from 1 to \(AuthService.invitationMaxHours)", field: "ttl_hours")
        }
        if let existing = try await user(email: email), existing.emailVerified {
            throw APIError.conflict("An account with this email already exists")
        }
        let token = "kin_" + IDs.randomBase62(40)
        let id = IDs.make("inv")
        let now = clock.now()
        let expires = now.addingTimeInterval(Double(hours) * 3600)
        let store = self.store
        try await store.write { tx in
            try store.insertInvitation(
                tx, id: id, hash: Crypto.sha256Hex(Array(token.utf8)), email: email, by: admin, at: now,
                expires: expires)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "invitation.created", actorUserID: admin, resourceType: "invitation", resourceID: id,
                    ip: ip, details: ["email": .string(email), "ttl_hours": .int(hours)]), at: now)
        }
        let link = "\(baseURL.string)/register?invitation=\(token)"
        let body = templates.render(
            "invitation",
            fallback:
                "Hello,\n\nYou are invited to Kiln. Create your account here:\n\n{{link}}\n\nThe link works once, for {{hours}} hours, for {{email}}.\n",
            ["link": link, "hours": String(hours), "email": email])
        await deliver(MailMessage(to: email, subject: "You are invited to Kiln", body: body, link: link))
        let invitation = Invitation(
            id: id, email: email, createdBy: admin, createdAt: now, expiresAt: expires, usedAt: nil, usedBy: nil)
        return (invitation, link)
    }

    public func invitations() async throws -> [Invitation] {
        try await store.invitations().map { r in
            Invitation(
                id: r.string("id") ?? "", email: r.string("email") ?? "", createdBy: r.string("created_by"),
                createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0),
                expiresAt: r.date("expires_at") ?? Date(timeIntervalSince1970: 0), usedAt: r.date("used_at"),
                usedBy: r.string("used_by"))
        }
    }

    public func deleteInvitation(id: String, by admin: String, ip: String) async throws {
        guard IDs.isValid(id, prefix: "inv") else { throw APIError.notFound("No such invitation") }
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            guard try store.deleteInvitation(tx, id: id) else { throw APIError.notFound("No such invitation") }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "invitation.deleted", actorUserID: admin, resourceType: "invitation", resourceID: id,
                    ip: ip), at: now)
        }
    }
}
