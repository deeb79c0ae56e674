import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The auth domain's SQL: accounts, setup and email tokens, sessions, MFA secrets and recovery codes.
/// Methods taking a `Transaction` run inside the caller's transaction (with its audit rows).
struct AuthStore: Sendable {
    let db: Database

    /// Users with a sealed MFA secret, enabled or pending (a master key rotation re-seals them).
    func sealedMFA(_ tx: Transaction) throws -> [Row] {
        try tx.query(
            "SELECT id, mfa_secret, mfa_pending_secret FROM users WHERE mfa_secret IS NOT NULL OR mfa_pending_secret IS NOT NULL"
        )
    }

    func setSealedMFA(_ tx: Transaction, userID: String, secret: [UInt8]?, pending: [UInt8]?) throws {
        try tx.run("UPDATE users SET mfa_secret = ?, mfa_pending_secret = ? WHERE id = ?", secret, pending, userID)
    }

    static let userColumns =
        "id, email, name, email_verified, is_owner, is_admin, can_execute, disabled_at, mfa_enabled, avatar_url, "
        + "delete_after, created_at"

    func read<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await db.read(body)
    }
    @discardableResult
    func write<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await db.write(body)
    }

    // MARK: Accounts

    func userCount(_ tx: Transaction) throws -> Int { try tx.first("SELECT COUNT(*) AS n FROM users")?.int("n") ?? 0 }

    func userCount() throws -> Int { try db.readSync { try userCount($0) } }

    /// A write on the caller's thread (startup, before the event loops run).
    func writeSync<T>(_ body: (Transaction) throws -> T) throws -> T { try db.writeSync(body) }

    func user(id: String) async throws -> User? {
        try await db.read { tx in
            try tx.first("SELECT \(AuthStore.userColumns) FROM users WHERE id = ?", id).map(User.init(row:))
        }
    }

    func user(email: String) async throws -> User? {
        try await db.read { tx in
            try tx.first("SELECT \(AuthStore.userColumns) FROM users WHERE email = ?", email).map(User.init(row:))
        }
    }

    /// `via`: owner_setup, admin, invitation or registration (which alone starts without execution).
    func insertUser(
        _ tx: Transaction, id: String, email: String, name: String, passwordHash: String?, verified: Bool, owner: Bool,
        via: String, at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO users (id, email, name, password_hash, email_verified, is_owner, is_admin, can_execute,
                               registered_via, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, id, email, name, passwordHash, verified, owner, owner, via != "registration", via, now, now)
    }

    func passwordHash(userID: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT password_hash FROM users WHERE id = ?", userID)?.string("password_hash")
        }
    }

    /// What a login needs to know about the address (nil: no account).
    func loginRow(email: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first(
                """
                SELECT id, email, name, password_hash, email_verified, locked_until, mfa_enabled, disabled_at,
                       created_at
                FROM users WHERE email = ?
                """, email)
        }
    }

    /// Wrong passwords for the account from `ip` since `since`, and when the last of them was.
    func failures(userID: String, ip: String, since: Date) async throws -> (count: Int, last: Date?) {
        try await db.read { tx in
            let r = try tx.first(
                """
                SELECT COUNT(*) AS n, MAX(failed_at) AS last FROM login_failures
                WHERE user_id = ? AND ip = ? AND failed_at > ?
                """,
                userID, ip, since)
            return (r?.int("n") ?? 0, r?.date("last"))
        }
    }

    /// Counts a wrong password from `ip`; returns the failures since `since` from anywhere.
    func recordFailure(_ tx: Transaction, userID: String, ip: String, at now: Date, since: Date) throws -> Int {
        try tx.run("DELETE FROM login_failures WHERE user_id = ? AND failed_at <= ?", userID, since)
        try tx.run("INSERT INTO login_failures (user_id, ip, failed_at) VALUES (?, ?, ?)", userID, ip, now)
        return try tx.first("SELECT COUNT(*) AS n FROM login_failures WHERE user_id = ?", userID)?.int("n") ?? 0
    }

    func lockAccount(_ tx: Transaction, userID: String, until: Date) throws {
        try tx.run("UPDATE users SET locked_until = ? WHERE id = ?", until, userID)
        try tx.run("DELETE FROM login_failures WHERE user_id = ?", userID)
    }

    /// A good password from `ip` forgets that address's failures (others' stay: they may be an attack).
    func clearFailures(_ tx: Transaction, userID: String, ip: String) throws {
        try tx.run("DELETE FROM login_failures WHERE user_id = ? AND ip = ?", userID, ip)
    }

    func clearFailedLogins(_ tx: Transaction, userID: String) throws {
        try tx.run("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", userID)
        try tx.run("DELETE FROM login_failures WHERE user_id = ?", userID)
    }

    func setPassword(_ tx: Transaction, userID: String, hash: String, at now: Date, clearLockout: Bool = false) throws {
        if clearLockout {
            try tx.run(
                "UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL, updated_at = ? WHERE id = ?",
                hash, now, userID)
            try tx.run("DELETE FROM login_failures WHERE user_id = ?", userID)
        } else {
            try tx.run("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?", hash, now, userID)
        }
    }

    func setName(_ tx: Transaction, userID: String, name: String, at now: Date) throws {
        try tx.run("UPDATE users SET name = ?, updated_at = ? WHERE id = ?", name, now, userID)
    }

    func setAvatar(_ tx: Transaction, userID: String, url: String?, at now: Date) throws {
        try tx.run("UPDATE users SET avatar_url = ?, updated_at = ? WHERE id = ?", url, now, userID)
    }

    func setPendingEmail(_ tx: Transaction, userID: String, email: String, at now: Date) throws {
        try tx.run("UPDATE users SET pending_email = ?, updated_at = ? WHERE id = ?", email, now, userID)
    }

    func confirmEmail(_ tx: Transaction, userID: String, email: String, at now: Date) throws {
        try tx.run(
            "UPDATE users SET email = ?, email_verified = 1, pending_email = NULL, updated_at = ? WHERE id = ?", email,
            now, userID)
    }

    func setDeleteAfter(_ tx: Transaction, userID: String, _ when: Date?, at now: Date) throws {
        try tx.run("UPDATE users SET delete_after = ?, updated_at = ? WHERE id = ?", when, now, userID)
    }

    func accountsDue(at now: Date) async throws -> [String] {
        try await db.read { tx in
            try tx.query("SELECT id FROM users WHERE delete_after IS NOT NULL AND delete_after <= ?", now).compactMap {
                $0.string("id")
            }
        }
    }

    func deleteUser(_ tx: Transaction, userID: String) throws { try tx.run("DELETE FROM users WHERE id = ?", userID) }

    // MARK: Setup tokens

    /// Unused owner tokens older than a minute stop working; younger ones were made by other
    /// instances starting beside this one on the same database, whose printed links stay good.
    func replaceOwnerSetupToken(_ tx: Transaction, hash: String, at now: Date, expires: Date) throws {
        try tx.run(
            "DELETE FROM setup_tokens WHERE purpose = 'owner' AND used_at IS NULL AND created_at < ?",
            now.addingTimeInterval(-60))
        try tx.run(
            "INSERT INTO setup_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES (?, 'owner', NULL, ?, ?)",
            hash, now, expires)
    }

    func insertUserSetupToken(_ tx: Transaction, hash: String, userID: String, at now: Date, expires: Date) throws {
        try tx.run(
            "INSERT INTO setup_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES (?, 'user', ?, ?, ?)",
            hash, userID, now, expires)
    }

    func setupToken(_ tx: Transaction, hash: String) throws -> Row? {
        try tx.first("SELECT purpose, user_id, expires_at, used_at FROM setup_tokens WHERE token_hash = ?", hash)
    }

    func useSetupToken(_ tx: Transaction, hash: String, at now: Date) throws {
        try tx.run("UPDATE setup_tokens SET used_at = ? WHERE token_hash = ?", now, hash)
    }

    // MARK: Email tokens (verification and reset)

    func insertEmailToken(
        _ tx: Transaction, hash: String, userID: String, purpose: String, email: String, at now: Date,
        expires: Date
    ) throws {
        try tx.run(
            "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            hash, userID, purpose, email, now, expires)
    }

    func emailToken(_ tx: Transaction, hash: String, purpose: String) throws -> Row? {
        try tx.first(
            "SELECT user_id, email, expires_at, used_at FROM email_tokens WHERE token_hash = ? AND purpose = ?", hash,
            purpose)
    }

    func useEmailToken(_ tx: Transaction, hash: String, at now: Date) throws {
        try tx.run("UPDATE email_tokens SET used_at = ? WHERE token_hash = ?", now, hash)
    }

    // MARK: Sessions

    func insertSession(
        _ tx: Transaction, id: String, tokenHash: String, userID: String, csrf: String, at now: Date, expires: Date,
        ip: String, userAgent: String, mfaPending: Bool
    ) throws {
        // A password-only session has just proved its password (step-up holds for 15 minutes); one with
        // MFA on proves itself with the code.
        try tx.run(
            """
            INSERT INTO sessions (id, token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, ip,
                                  user_agent,
                                  mfa_pending, mfa_verified_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, id, tokenHash, userID, csrf, now, now, expires, ip, userAgent, mfaPending, mfaPending ? nil : now)
    }

    func sessionByToken(hash: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first(
                """
                SELECT s.id, s.user_id, s.csrf_token, s.last_seen_at, s.expires_at, s.mfa_pending, s.mfa_verified_at, s.revoked_at,
                       u.mfa_enabled, u.is_admin, u.can_execute, u.disabled_at
                FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?
                """, hash)
        }
    }

    func touchSession(id: String, at now: Date, ip: String, userAgent: String) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "UPDATE sessions SET last_seen_at = ?, ip = ?, user_agent = ? WHERE id = ?", now, ip, userAgent, id)
        }
    }

    func activeSessions(userID: String, at now: Date) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT id, created_at, last_seen_at, expires_at, ip, user_agent FROM sessions
                WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY last_seen_at DESC LIMIT 200
                """, userID, now)
        }
    }

    func revokeSession(_ tx: Transaction, id: String, at now: Date) throws {
        try tx.run("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", now, id)
    }

    func revokeSessionByToken(_ tx: Transaction, hash: String, at now: Date) throws {
        try tx.run("UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL", now, hash)
    }

    /// Revokes one of the user's own sessions; false when there is no such live session.
    func revokeOwnSession(_ tx: Transaction, id: String, userID: String, at now: Date) throws -> Bool {
        try tx.run(
            "UPDATE sessions SET revoked_at = ? WHERE id = ? AND user_id = ? AND revoked_at IS NULL", now, id, userID)
            == 1
    }

    /// Ends every live session of the user but `except`.
    func revokeSessions(_ tx: Transaction, userID: String, except: String? = nil, at now: Date) throws {
        if let except {
            try tx.run(
                "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT ?", now,
                userID, except)
        } else {
            try tx.run("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", now, userID)
        }
    }

    /// The session proved its owner again (password or second factor): step-up routes open for 15 minutes.
    func markSteppedUp(_ tx: Transaction, sessionID: String, at now: Date) throws {
        try tx.run("UPDATE sessions SET mfa_verified_at = ? WHERE id = ? AND mfa_pending = 0", now, sessionID)
    }

    func markSecondFactor(_ tx: Transaction, sessionID: String, at now: Date) throws {
        try tx.run("UPDATE sessions SET mfa_pending = 0, mfa_verified_at = ? WHERE id = ?", now, sessionID)
    }

    // MARK: MFA

    func startEnrolment(
        _ tx: Transaction, userID: String, sealedSecret: [UInt8], codeHashes: [String], at now: Date
    ) throws {
        try tx.run("UPDATE users SET mfa_pending_secret = ?, updated_at = ? WHERE id = ?", sealedSecret, now, userID)
        try tx.run("DELETE FROM recovery_codes WHERE user_id = ?", userID)
        for h in codeHashes { try tx.run("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)", userID, h) }
    }

    func mfaState(_ tx: Transaction, userID: String) throws -> Row? {
        try tx.first(
            "SELECT mfa_enabled, mfa_secret, mfa_pending_secret, mfa_last_step FROM users WHERE id = ?", userID)
    }

    /// Records a used TOTP step, only when it is newer than the last (so two racing requests cannot both use one).
    func useStep(_ tx: Transaction, userID: String, step: Int64) throws -> Bool {
        try tx.run("UPDATE users SET mfa_last_step = ? WHERE id = ? AND mfa_last_step < ?", step, userID, step) == 1
    }

    /// Uses an unused recovery code; false when there is none with this hash.
    func useRecoveryCode(_ tx: Transaction, userID: String, hash: String, at now: Date) throws -> Bool {
        try tx.run(
            "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL", now,
            userID, hash) == 1
    }

    func enableMFA(_ tx: Transaction, userID: String, at now: Date) throws {
        try tx.run(
            """
            UPDATE users SET mfa_enabled = 1, mfa_secret = mfa_pending_secret, mfa_pending_secret = NULL, updated_at = ? WHERE id = ?
            """, now, userID)
    }

    func disableMFA(_ tx: Transaction, userID: String, at now: Date) throws {
        try tx.run(
            "UPDATE users SET mfa_enabled = 0, mfa_secret = NULL, mfa_pending_secret = NULL, updated_at = ? WHERE id = ?",
            now, userID)
        try tx.run("DELETE FROM recovery_codes WHERE user_id = ?", userID)
    }
    // MARK: Instance administration

    /// Accounts by creation, filtered by `q` in the email or name (admin listing).
    func listUsers(q: String?, after cursor: String?, limit: Int) async throws -> [User] {
        try await db.read { tx in
            var sql = "SELECT \(AuthStore.userColumns) FROM users WHERE 1 = 1"
            var args: [any SQLBindable] = []
            if let q, !q.isEmpty {
                sql += " AND (instr(lower(email), lower(?)) > 0 OR instr(lower(name), lower(?)) > 0)"
                args += [q, q]
            }
            if let cursor {
                sql += " AND id > ?"
                args.append(cursor)
            }
            sql += " ORDER BY id LIMIT ?"
            args.append(limit)
            return try tx.query(sql, arguments: args).map(User.init(row:))
        }
    }

    func adminCount(_ tx: Transaction) throws -> Int {
        try tx.first("SELECT COUNT(*) AS n FROM users WHERE is_admin = 1 AND disabled_at IS NULL")?.int("n") ?? 0
    }

    func isAdmin(_ tx: Transaction, userID: String) throws -> Bool {
        try tx.first("SELECT is_admin FROM users WHERE id = ? AND disabled_at IS NULL", userID)?.bool("is_admin")
            ?? false
    }

    func exists(_ tx: Transaction, userID: String) throws -> Bool {
        try tx.first("SELECT 1 AS x FROM users WHERE id = ?", userID) != nil
    }

    func setDisabled(_ tx: Transaction, userID: String, _ at: Date?, now: Date) throws {
        try tx.run("UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ?", at, now, userID)
    }

    func setAdmin(_ tx: Transaction, userID: String, _ on: Bool, at now: Date) throws {
        try tx.run("UPDATE users SET is_admin = ?, updated_at = ? WHERE id = ?", on, now, userID)
    }

    func setCanExecute(_ tx: Transaction, userID: String, _ on: Bool, at now: Date) throws {
        try tx.run("UPDATE users SET can_execute = ?, updated_at = ? WHERE id = ?", on, now, userID)
    }

    func canExecute(userID: String) async throws -> Bool {
        try await db.read { tx in
            try tx.first("SELECT can_execute FROM users WHERE id = ? AND disabled_at IS NULL", userID)?.bool(
                "can_execute") ?? false
        }
    }

    /// An unverified account older than `before` (its address may be registered again).
    func expiredUnverified(_ tx: Transaction, email: String, before: Date) throws -> String? {
        try tx.first(
            """
            SELECT id FROM users WHERE email = ? AND email_verified = 0 AND created_at < ? AND password_hash IS NOT NULL
            """,
            email, before)?.string("id")
    }

    func expiredUnverified(before: Date) async throws -> [String] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT id FROM users WHERE email_verified = 0 AND created_at < ? AND registered_via = 'registration'
                LIMIT 500
                """, before
            ).compactMap { $0.string("id") }
        }
    }

    // MARK: Invitations

    func insertInvitation(
        _ tx: Transaction, id: String, hash: String, email: String, by: String, at now: Date, expires: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO invitations (id, token_hash, email, created_by, created_at, expires_at)
            VALUES (?, ?, ?, ?, ?, ?)
            """,
            id, hash, email, by, now, expires)
    }

    func invitations() async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT id, email, created_by, created_at, expires_at, used_at, used_by FROM invitations
                ORDER BY created_at DESC LIMIT 500
                """)
        }
    }

    func deleteInvitation(_ tx: Transaction, id: String) throws -> Bool {
        try tx.run("DELETE FROM invitations WHERE id = ?", id) == 1
    }

    func invitation(_ tx: Transaction, hash: String) throws -> Row? {
        try tx.first("SELECT id, email, expires_at, used_at FROM invitations WHERE token_hash = ?", hash)
    }

    func useInvitation(_ tx: Transaction, id: String, by userID: String, at now: Date) throws -> Bool {
        try tx.run("UPDATE invitations SET used_at = ?, used_by = ? WHERE id = ? AND used_at IS NULL", now, userID, id)
            == 1
    }

    /// The live verification tokens of an address end when a new one is mailed.
    func unverifiedAccount(email: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first(
                """
                SELECT id, email, name, created_at FROM users
                WHERE email = ? AND email_verified = 0 AND disabled_at IS NULL
                """,
                email)
        }
    }
}

extension User {
    init(row r: Row) {
        self.init(
            id: r.string("id") ?? "", email: r.string("email") ?? "", name: r.string("name") ?? "",
            emailVerified: r.bool("email_verified") ?? false, isOwner: r.bool("is_owner") ?? false,
            isAdmin: r.bool("is_admin") ?? false, canExecute: r.bool("can_execute") ?? true,
            disabledAt: r.date("disabled_at"), mfaEnabled: r.bool("mfa_enabled") ?? false,
            avatarUrl: r.string("avatar_url"),
            deleteAfter: r.date("delete_after"),
            createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0))
    }
}
