import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// Invitations into a workspace: mailed as a link `/invite/<token>`, single use, seven days, the
/// token (256 bits) stored only as a hash. A signed-in user whose verified address is the invited
/// one joins; someone without an account registers through it, whatever `--registration` says.
extension CollabService {
    static func invitationJSON(_ r: Row, now: Date) -> JSONValue {
        func date(_ k: String) -> JSONValue { r.date(k).map { .string(HTTPDate.iso8601($0)) } ?? .null }
        let state =
            r.date("accepted_at") != nil
            ? "accepted"
            : r.date("revoked_at") != nil ? "revoked" : (r.date("expires_at") ?? now) <= now ? "expired" : "pending"
        return [
            "id": .string(r.string("id") ?? ""), "ws_id": .string(r.string("ws_id") ?? ""),
            "email": .string(r.string("email") ?? ""), "role": .string(r.string("role") ?? ""),
            "invited_by": .string(r.string("invited_by") ?? ""), "created_at": date("created_at"),
            "expires_at": date("expires_at"), "accepted_at": date("accepted_at"),
            "accepted_by": r.string("accepted_by").map { .string($0) } ?? .null, "revoked_at": date("revoked_at"),
            "state": .string(state),
        ]
    }

    func invite(_ i: InviteInput, access: WorkspaceAccess, by p: Principal, ip: String) async throws -> JSONValue {
        let email = try Validate.email(i.email)
        if i.role == .owner && access.role != .owner {
            throw APIError(.forbidden, message: "Only an owner can invite an owner")
        }
        let now = clock.now()
        if i.role >= .admin { try p.requireStepUp(now: now) }
        let made = try await store.invitationsMade(wsID: access.wsID, since: now.addingTimeInterval(-3600))
        guard made < InviteLimits.perHour else {
            throw HTTPError(
                .tooManyRequests, code: "rate_limited",
                message:
                    "This workspace sent \(made) invitations in the last hour (the limit is \(InviteLimits.perHour))")
        }
        let existing = try await users?.user(email: email)
        if let existing, try await members?.role(userID: existing.id, wsID: access.wsID) != nil {
            throw APIError.conflict("That address belongs to a member already")
        }
        let token = "kwi_" + IDs.randomBase62(43)
        let id = IDs.make("wsi")
        let expires = now.addingTimeInterval(InviteLimits.lifetime)
        try await store.db.write { [store] tx in
            try store.insertInvitation(
                tx, id: id, wsID: access.wsID, email: email, role: i.role.rawValue, tokenHash: Self.hash(token),
                by: p.userID, at: now, expires: expires)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "invitation.created", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: access.wsID,
                    resourceType: "ws_invitation", resourceID: id, ip: ip,
                    details: ["email": .string(email), "role": .string(i.role.rawValue)]), at: now)
        }
        let ws = try await members?.workspaceName(access.wsID) ?? "a workspace"
        let inviter = try await name(p.userID)
        let link = baseURL.string + "/invite/" + token
        let body = """
            Hello,

            \(inviter) invited you to the workspace "\(ws)" on Kiln as \(i.role.rawValue).
            Accept here (you can create your account on that page if you have none):

            \(link)

            The link works once, for seven days, for \(email).

            """
        do {
            try await mailer.send(
                MailMessage(to: email, subject: "You are invited to \(ws) on Kiln", body: body, link: link))
        } catch {
            ServerLog.warn(
                "invitation mail failed", ["invitation": .string(id), "error": .string(String(describing: error))])
        }
        var data: [String: JSONValue] = [
            "invitation_id": .string(id), "email": .string(email), "role": .string(i.role.rawValue),
        ]
        if let existing { data["user_id"] = .string(existing.id) }
        await publish("invitation.created", wsID: access.wsID, actor: p.userID, data)
        guard let row = try await store.invitation(id: id) else { throw APIError.notFound("No such invitation") }
        return Self.invitationJSON(row, now: now)
    }

    func invitations(wsID: String) async throws -> [JSONValue] {
        let now = clock.now()
        return try await store.invitations(wsID: wsID).map { Self.invitationJSON($0, now: now) }
    }

    func revokeInvitation(_ id: String, wsID: String, by p: Principal, ip: String) async throws {
        guard IDs.isValid(id, prefix: "wsi"), try await store.invitationWorkspace(id) == wsID else {
            throw APIError.notFound("No such invitation")
        }
        let now = clock.now()
        try await store.db.write { [store] tx in
            guard try store.revokeInvitation(tx, id, at: now) else {
                throw APIError.conflict("The invitation was accepted or revoked already")
            }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "invitation.revoked", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "ws_invitation", resourceID: id, ip: ip), at: now)
        }
    }

    func invitationWorkspace(_ id: String) async throws -> String? {
        guard IDs.isValid(id, prefix: "wsi") else { return nil }
        return try await store.invitationWorkspace(id)
    }

    /// Accepts an invitation: the signed-in caller joins (their verified address must be the invited
    /// one); without a session, `{name, password}` registers the invited address and joins.
    /// 404 unknown or revoked, 410 used or expired.
    func accept(token: String, principal: Principal?, _ input: AcceptInput, ip: String) async throws -> JSONValue {
        guard token.hasPrefix("kwi_"), token.utf8.count <= 64,
            let inv = try await store.invitation(tokenHash: Self.hash(token)),
            inv.date("revoked_at") == nil
        else { throw APIError.notFound("This invitation does not exist or was withdrawn") }
        let now = clock.now()
        guard inv.date("accepted_at") == nil else {
            throw HTTPError(HTTPStatus(410), code: "gone", message: "This invitation was used already")
        }
        guard let expires = inv.date("expires_at"), expires > now else {
            throw HTTPError(HTTPStatus(410), code: "gone", message: "This invitation expired")
        }
        let id = inv.string("id") ?? ""
        let wsID = inv.string("ws_id") ?? ""
        let email = inv.string("email") ?? ""
        let role = Role(rawValue: inv.string("role") ?? "") ?? .member
        let invitedBy = inv.string("invited_by") ?? ""
        guard let members, let accounts else { throw APIError.unavailable("Invitations are not available") }
        guard try await members.workspaceName(wsID) != nil else {
            throw APIError.notFound("The workspace of this invitation was deleted")
        }
        if let principal {
            guard let user = try await users?.user(id: principal.userID), user.emailVerified,
                user.email.lowercased() == email.lowercased()
            else {
                throw APIError(
                    .forbidden, message: "This invitation is for another address (sign in with the invited account)")
            }
            if try await members.role(userID: user.id, wsID: wsID) != nil {
                throw APIError.conflict("You are a member of this workspace already")
            }
        } else {
            guard input.name != nil, input.password != nil else {
                throw APIError.validation(
                    "Sign in to accept, or send name and password to create your account", field: "password")
            }
            if try await users?.user(email: email) != nil {
                throw APIError.conflict("An account with this address exists; sign in to accept the invitation")
            }
        }
        // Claimed first, so two acceptances at once cannot both join; given back when joining fails.
        guard try await store.claimInvitation(id, at: now) else {
            throw HTTPError(HTTPStatus(410), code: "gone", message: "This invitation was used already or expired")
        }
        let user: User
        do {
            if let principal, let u = try await users?.user(id: principal.userID) {
                user = u
            } else {
                user = try await accounts.registerInvited(
                    email: email, name: input.name ?? "", password: input.password ?? "", ip: ip)
            }
            try await members.join(wsID: wsID, userID: user.id, role: role, invitedBy: invitedBy, ip: ip)
        } catch {
            try? await store.unclaimInvitation(id)
            throw error
        }
        try await store.db.write { [store] tx in
            try store.setInvitationAccepted(tx, id, by: user.id)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "invitation.accepted", actorUserID: user.id, wsID: wsID, resourceType: "ws_invitation",
                    resourceID: id, ip: ip), at: now)
        }
        return [
            "ws_id": .string(wsID), "role": .string(role.rawValue), "user_id": .string(user.id),
            "email": .string(user.email), "registered": .bool(principal == nil),
        ]
    }
}
