import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

extension AuthService {
    /// A hash that takes as long to check as a real one, for addresses without an account.
    static let dummyHash: String = (try? PasswordHash.make("kiln-timing-equaliser")) ?? ""

    /// Password login. Only failures count toward a lockout (`checkPassword(row:…)`); the answer
    /// never tells an unknown address and a wrong password apart. Always makes a new session (and
    /// revokes `previousToken`, so a planted session id is never promoted).
    public func login(
        email rawEmail: String, password: String, ip: String, userAgent: String, previousToken: String?
    ) async throws -> LoginResult {
        let email = rawEmail.trimmingCharacters(in: .whitespaces)
        guard !email.isEmpty, email.utf8.count <= 254, password.utf8.count <= 1024 else {
            throw APIError.validation("email and password are required", field: "email")
        }
        try await limit("login", ip: ip)
        let now = clock.now()
        let store = self.store
        let wrong = APIError.unauthenticated("Wrong email or password")
        guard let row = try await store.loginRow(email: email), let uid = row.string("id") else {
            _ = await Passwords.verify(password, against: AuthService.dummyHash)
            throw wrong
        }
        guard try await checkPassword(row: row, password: password, ip: ip) else { throw wrong }
        guard row["disabled_at"] == .null else {
            throw APIError.forbidden("This account is disabled; ask an administrator")
        }
        guard row.bool("email_verified") == true else {
            throw APIError.forbidden("Confirm your email address first: open the link in the verification mail")
        }
        let mfa = row.bool("mfa_enabled") ?? false
        let token = "kss_" + IDs.randomBase62(43)
        let sid = IDs.make("ses")
        let csrf = IDs.randomBase62(32)
        let expires = now.addingTimeInterval(AuthService.sessionLifetime)
        let previousHash = previousToken.map { Crypto.sha256Hex(Array($0.utf8)) }
        try await store.write { tx in
            if let previousHash { try store.revokeSessionByToken(tx, hash: previousHash, at: now) }
            try store.insertSession(
                tx, id: sid, tokenHash: Crypto.sha256Hex(Array(token.utf8)), userID: uid, csrf: csrf, at: now,
                expires: expires, ip: ip, userAgent: String(userAgent.prefix(512)), mfaPending: mfa)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: mfa ? "login.password_ok" : "login.ok", actorUserID: uid, resourceType: "session",
                    resourceID: sid, ip: ip), at: now)
        }
        return LoginResult(
            user: try await user(id: uid)!, sessionToken: token, sessionID: sid, csrfToken: csrf, mfaRequired: mfa,
            expiresAt: expires)
    }

    /// Checks a password with the lockout rules every password check shares (login, step-up,
    /// change-password, mfa-disable): 5 wrong from one client address lock that address out of the
    /// account, 20 from anywhere lock the account and mail its owner, each for 15 minutes (429 with
    /// Retry-After while it lasts). A right password clears that address's count.
    func checkPassword(row: Row, password: String, ip: String) async throws -> Bool {
        guard let uid = row.string("id") else { return false }
        let now = clock.now()
        let window = now.addingTimeInterval(-AuthService.lockDuration)
        if let locked = row.date("locked_until"), locked > now {
            try await audit(
                AuditEvent(
                    action: "login.failed", actorUserID: uid, resourceType: "user", resourceID: uid, ip: ip,
                    details: ["reason": "account_locked"]))
            throw Self.locked(until: locked, now: now, what: "This account is locked after too many wrong passwords")
        }
        let (fromIP, last) = try await store.failures(userID: uid, ip: ip, since: window)
        if fromIP >= AuthService.lockAfterFailures, let last {
            throw Self.locked(
                until: last.addingTimeInterval(AuthService.lockDuration), now: now,
                what: "Too many wrong passwords from your address for this account")
        }
        let stored = row.string("password_hash")
        let ok = await Passwords.verify(password, against: stored ?? AuthService.dummyHash) && stored != nil
        let store = self.store
        if ok {
            try await store.write { tx in try store.clearFailures(tx, userID: uid, ip: ip) }
            return true
        }
        let lockedNow = try await store.write { tx -> Bool in
            let total = try store.recordFailure(tx, userID: uid, ip: ip, at: now, since: window)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "login.failed", actorUserID: uid, resourceType: "user", resourceID: uid, ip: ip,
                    details: ["reason": "password"]), at: now)
            guard total >= AuthService.lockAccountAfterFailures else { return false }
            try store.lockAccount(tx, userID: uid, until: now.addingTimeInterval(AuthService.lockDuration))
            try AuditLog.append(
                tx,
                AuditEvent(action: "account.locked", actorUserID: uid, resourceType: "user", resourceID: uid, ip: ip),
                at: now)
            return true
        }
        if lockedNow, let email = row.string("email") {
            let body = templates.render(
                "account-locked",
                fallback:
                    "Hello {{name}},\n\n"
                    + "Someone entered a wrong password for your Kiln account {{count}} times within 15 minutes, so "
                    + "the account is locked for 15 minutes.\n\n"
                    + "If this was not you, someone may be guessing your password: choose a long unique one, and turn "
                    + "on two-factor authentication.\n",
                ["name": row.string("name") ?? "", "count": String(AuthService.lockAccountAfterFailures)])
            await deliver(MailMessage(to: email, subject: "Your Kiln account was locked", body: body, link: nil))
        }
        return false
    }

    static func locked(until: Date, now: Date, what: String) -> HTTPError {
        let wait = max(1, Int(until.timeIntervalSince(now).rounded(.up)))
        return HTTPError(
            .tooManyRequests, code: "rate_limited", message: "\(what); try again in \(wait) s",
            headers: ["Retry-After": String(wait)])
    }

    /// The account's password, counted like a login (for step-up, change-password and mfa-disable).
    func checkPassword(userID: String, password: String, ip: String) async throws -> Bool {
        guard let email = try await user(id: userID)?.email, let row = try await store.loginRow(email: email) else {
            return false
        }
        return try await checkPassword(row: row, password: password, ip: ip)
    }

    /// `POST /api/auth/step-up`: the session proves its owner again (the second factor when MFA is
    /// on, else the password), which opens step-up routes for 15 minutes.
    public func stepUp(principal p: Principal, password: String?, code: String?, ip: String) async throws -> Date {
        guard let sid = p.sessionID else {
            throw HTTPError(
                .forbidden, code: "step_up_required",
                message: "An API key cannot confirm itself; use a signed-in session")
        }
        let now = clock.now()
        if p.mfaEnabled {
            guard let code, !code.isEmpty else {
                throw APIError.validation("Two-factor authentication is on: confirm with code", field: "code")
            }
            _ = try await mfaVerify(principal: p, code: code, ip: ip)
        } else {
            guard let password, !password.isEmpty, password.utf8.count <= 1024 else {
                throw APIError.validation("password is required", field: "password")
            }
            guard try await checkPassword(userID: p.userID, password: password, ip: ip) else {
                throw APIError.unauthenticated("Wrong password")
            }
            let store = self.store
            let userID = p.userID
            try await store.write { tx in
                try store.markSteppedUp(tx, sessionID: sid, at: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "step_up", actorUserID: userID, resourceType: "session", resourceID: sid, ip: ip),
                    at: now)
            }
        }
        return now.addingTimeInterval(Principal.stepUpMaxAge)
    }

    /// The principal behind a session cookie (nil: unknown, revoked, expired or idle too long).
    public func resolveSession(token: String, ip: String, userAgent: String) async throws -> Principal? {
        guard token.hasPrefix("kss_"), token.utf8.count <= 64 else { return nil }
        let hash = Crypto.sha256Hex(Array(token.utf8))
        let now = clock.now()
        guard let r = try await store.sessionByToken(hash: hash) else { return nil }
        guard r["revoked_at"] == .null, let exp = r.date("expires_at"), exp > now, let seen = r.date("last_seen_at"),
            now.timeIntervalSince(seen) < AuthService.sessionIdle, let sid = r.string("id"),
            let uid = r.string("user_id")
        else { return nil }
        if now.timeIntervalSince(seen) > 60 {
            try? await store.touchSession(id: sid, at: now, ip: ip, userAgent: String(userAgent.prefix(512)))
        }
        // A disabled account's sessions end at once.
        guard r["disabled_at"] == .null else { return nil }
        return Principal(
            userID: uid, kind: .session(id: sid), scopes: nil, mfaEnabled: r.bool("mfa_enabled") ?? false,
            mfaVerifiedAt: r.date("mfa_verified_at"), mfaPending: r.bool("mfa_pending") ?? false,
            csrfToken: r.string("csrf_token"), isAdmin: r.bool("is_admin") ?? false,
            canExecute: r.bool("can_execute") ?? false)
    }

    public func logout(sessionID: String, userID: String, ip: String) async throws {
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            try store.revokeSession(tx, id: sessionID, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "logout", actorUserID: userID, resourceType: "session", resourceID: sessionID, ip: ip),
                at: now)
        }
    }

    public func sessions(userID: String, current: String?) async throws -> [SessionInfo] {
        let now = clock.now()
        return try await store.activeSessions(userID: userID, at: now).filter {
            now.timeIntervalSince($0.date("last_seen_at") ?? now) < AuthService.sessionIdle
        }.map { r in
            SessionInfo(
                id: r.string("id") ?? "", createdAt: r.date("created_at") ?? now,
                lastSeenAt: r.date("last_seen_at") ?? now,
                expiresAt: r.date("expires_at") ?? now, ip: r.string("ip") ?? "",
                userAgent: r.string("user_agent") ?? "",
                current: r.string("id") == current)
        }
    }

    /// Revokes one of the user's own sessions (404 for anything else).
    public func revokeSession(userID: String, sessionID: String, actorIP: String) async throws {
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            guard try store.revokeOwnSession(tx, id: sessionID, userID: userID, at: now) else {
                throw APIError.notFound("No such session")
            }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "session.revoked", actorUserID: userID, resourceType: "session", resourceID: sessionID,
                    ip: actorIP), at: now)
        }
    }

    // MARK: Passwords

    /// Same answer whether or not the address has an account.
    public func forgot(email raw: String, ip: String) async throws {
        let email = raw.trimmingCharacters(in: .whitespaces)
        guard !email.isEmpty, email.utf8.count <= 254 else {
            throw APIError.validation("email is required", field: "email")
        }
        // A malformed address (control characters…) is refused as such: no account can have it.
        _ = try AuthService.validEmail(email)
        try await limit("forgot", account: email, ip: ip)
        guard let u = try await user(email: email) else { return }
        let token = "krt_" + IDs.randomBase62(43)
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            try store.insertEmailToken(
                tx, hash: Crypto.sha256Hex(Array(token.utf8)), userID: u.id, purpose: "reset", email: u.email,
                at: now, expires: now.addingTimeInterval(AuthService.resetTokenLifetime))
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "password.reset_requested", actorUserID: u.id, resourceType: "user", resourceID: u.id,
                    ip: ip), at: now)
        }
        let link = "\(baseURL.string)/reset.html?token=\(token)"
        let body = templates.render(
            "reset-password",
            fallback:
                "Hello {{name}},\n\n"
                + "Someone asked to reset your Kiln password. If it was you, choose a new one here:\n\n"
                + "{{link}}\n\n"
                + "The link works once and for one hour. A new password signs out every session and revokes every "
                + "API key of the account. If it was not you, ignore this message.\n",
            ["name": u.name, "link": link])
        await deliver(MailMessage(to: u.email, subject: "Reset your Kiln password", body: body, link: link))
    }

    /// Sets a new password from a reset link (single use, one hour) and ends every session.
    public func reset(token: String, password: String, ip: String) async throws {
        if let problem = Passwords.problem(password) { throw APIError.validation(problem, field: "password") }
        try await limit("reset", ip: ip)
        let hash = try await Passwords.hash(password)
        let tokenHash = Crypto.sha256Hex(Array(token.utf8))
        let now = clock.now()
        let store = self.store
        let uid = try await store.write { tx -> String in
            guard token.hasPrefix("krt_"), token.utf8.count <= 64,
                let t = try store.emailToken(tx, hash: tokenHash, purpose: "reset"),
                t["used_at"] == .null, let exp = t.date("expires_at"), exp > now, let uid = t.string("user_id")
            else {
                throw APIError.validation("This reset link is not valid, was used already, or expired", field: "token")
            }
            try store.useEmailToken(tx, hash: tokenHash, at: now)
            try store.setPassword(tx, userID: uid, hash: hash, at: now, clearLockout: true)
            try store.revokeSessions(tx, userID: uid, at: now)
            // Whoever had the old password may have made keys with it: they end too.
            try self.hooks.credentialsReset(tx, userID: uid, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "password.reset", actorUserID: uid, resourceType: "user", resourceID: uid, ip: ip,
                    details: ["sessions_ended": true, "api_keys_revoked": true]),
                at: now)
            return uid
        }
        if let u = try await user(id: uid) {
            let body = templates.render(
                "password-was-reset",
                fallback:
                    "Hello {{name}},\n\n"
                    + "Your Kiln password was reset. Every session of your account was signed out and every API key "
                    + "of your account was revoked: sign in again and make new keys where you need them.\n\n"
                    + "If this was not you, reset your password again now and tell your administrator.\n",
                ["name": u.name])
            await deliver(MailMessage(to: u.email, subject: "Your Kiln password was reset", body: body, link: nil))
        }
    }

    /// Changes the password (the old one must match) and ends every other session.
    public func changePassword(
        userID: String, currentSession: String?, old: String, new: String, ip: String
    ) async throws {
        if let problem = Passwords.problem(new) { throw APIError.validation(problem, field: "new_password") }
        guard try await checkPassword(userID: userID, password: old, ip: ip) else {
            throw APIError.validation("The current password is wrong", field: "old_password")
        }
        let hash = try await Passwords.hash(new)
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            try store.setPassword(tx, userID: userID, hash: hash, at: now)
            try store.revokeSessions(tx, userID: userID, except: currentSession, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "password.changed", actorUserID: userID, resourceType: "user", resourceID: userID, ip: ip),
                at: now)
        }
    }

    // MARK: Profile and deletion

    /// Name and avatar change at once; a new email is re-verified before it replaces the old one.
    public func updateProfile(
        userID: String, _ input: ProfileChange, ip: String
    ) async throws -> (User, emailPending: Bool) {
        let name = try input.name.map(AuthService.validName)
        let email = try input.email.map(AuthService.validEmail)
        if let a = input.avatarUrl, !a.isEmpty {
            guard a.utf8.count <= 2048, let u = URL(string: a), u.scheme == "https" || u.scheme == "http", u.host != nil
            else {
                throw APIError.validation("avatar_url must be an http(s) URL", field: "avatar_url")
            }
        }
        guard let current = try await user(id: userID) else { throw APIError.notFound("No such account") }
        let now = clock.now()
        let newEmail = email.flatMap { $0.lowercased() == current.email.lowercased() ? nil : $0 }
        if let newEmail, try await user(email: newEmail) != nil {
            throw APIError.conflict("Another account uses this email address")
        }
        let token = "kvt_" + IDs.randomBase62(43)
        let store = self.store
        try await store.write { tx in
            if let name { try store.setName(tx, userID: userID, name: name, at: now) }
            if let a = input.avatarUrl { try store.setAvatar(tx, userID: userID, url: a.isEmpty ? nil : a, at: now) }
            if let newEmail {
                try store.setPendingEmail(tx, userID: userID, email: newEmail, at: now)
                try store.insertEmailToken(
                    tx, hash: Crypto.sha256Hex(Array(token.utf8)), userID: userID, purpose: "verify", email: newEmail,
                    at: now, expires: now.addingTimeInterval(AuthService.verifyTokenLifetime))
            }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "profile.updated", actorUserID: userID, resourceType: "user", resourceID: userID, ip: ip,
                    details: ["email_change_requested": .bool(newEmail != nil)]), at: now)
        }
        if let newEmail { try await sendVerification(to: newEmail, name: name ?? current.name, token: token) }
        return (try await user(id: userID)!, newEmail != nil)
    }

    public func requestDelete(userID: String, ip: String) async throws -> Date {
        let now = clock.now()
        let when = now.addingTimeInterval(AuthService.deletionDelay)
        let store = self.store
        try await store.write { tx in
            try store.setDeleteAfter(tx, userID: userID, when, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "account.delete_requested", actorUserID: userID, resourceType: "user", resourceID: userID,
                    ip: ip,
                    details: ["delete_after": .string(HTTPDate.iso8601(when))]), at: now)
        }
        return when
    }

    public func cancelDelete(userID: String, ip: String) async throws {
        let now = clock.now()
        let store = self.store
        try await store.write { tx in
            try store.setDeleteAfter(tx, userID: userID, nil, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "account.delete_cancelled", actorUserID: userID, resourceType: "user", resourceID: userID,
                    ip: ip), at: now)
        }
    }

    /// Deletes the accounts whose deletion date has passed, with everything other modules hold for them.
    @discardableResult
    public func purgeDueAccounts() async throws -> Int {
        let now = clock.now()
        let due = try await store.accountsDue(at: now)
        let (hooks, store) = (self.hooks, self.store)
        for uid in due {
            try await store.write { tx in
                try hooks.userPurged(tx, userID: uid)
                try store.deleteUser(tx, userID: uid)
                try AuditLog.append(
                    tx, AuditEvent(action: "account.purged", resourceType: "user", resourceID: uid), at: now)
            }
        }
        return due.count
    }

    public func audit(_ e: AuditEvent) async throws {
        let now = clock.now()
        try await store.write { tx in _ = try AuditLog.append(tx, e, at: now) }
    }

    /// What the account export holds from this module (no password hash, no MFA secret, no tokens).
    public func exportSection(userID: String) async throws -> JSONValue {
        guard let u = try await user(id: userID) else { return .null }
        let sessions = try await self.sessions(userID: userID, current: nil)
        let user = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(u)))
        let list = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(sessions)))
        return ["user": user, "sessions": list]
    }
}
