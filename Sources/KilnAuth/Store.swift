import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The auth domain's SQL: accounts, setup and email tokens, sessions, MFA secrets and recovery codes.
/// Methods taking a `Transaction` run inside the caller's transaction (with its audit rows).
struct AuthStore: Sendable {
    let db: Database

    static let userColumns =
        "id, email, name, email_verified, is_owner, mfa_enabled, avatar_url, delete_after, created_at"

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

    func insertUser(
        _ tx: Transaction, id: String, email: String, name: String, passwordHash: String?, verified: Bool, owner: Bool,
        at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO users (id, email, name, password_hash, email_verified, is_owner, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, id, email, name, passwordHash, verified, owner, now, now)
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
                "SELECT id, password_hash, email_verified, locked_until, mfa_enabled FROM users WHERE email = ?", email)
        }
    }

    /// Counts a wrong password; true when it locked the account until `lockUntil`.
    func recordFailedLogin(_ tx: Transaction, userID: String, lockAfter: Int, lockUntil: Date) throws -> Bool {
        let failures =
            (try tx.first("SELECT failed_logins FROM users WHERE id = ?", userID)?.int("failed_logins") ?? 0) + 1
        if failures >= lockAfter {
            try tx.run("UPDATE users SET failed_logins = 0, locked_until = ? WHERE id = ?", lockUntil, userID)
            return true
        }
        try tx.run("UPDATE users SET failed_logins = ? WHERE id = ?", failures, userID)
        return false
    }

    func clearFailedLogins(_ tx: Transaction, userID: String) throws {
        try tx.run("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", userID)
    }

    func setPassword(_ tx: Transaction, userID: String, hash: String, at now: Date, clearLockout: Bool = false) throws {
        if clearLockout {
            try tx.run(
                "UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL, updated_at = ? WHERE id = ?",
                hash, now, userID)
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

    func replaceOwnerSetupToken(_ tx: Transaction, hash: String, at now: Date, expires: Date) throws {
        try tx.run("DELETE FROM setup_tokens WHERE purpose = 'owner' AND used_at IS NULL")
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
        try tx.run(
            """
            INSERT INTO sessions (id, token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, ip, user_agent, mfa_pending)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, id, tokenHash, userID, csrf, now, now, expires, ip, userAgent, mfaPending)
    }

    func sessionByToken(hash: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first(
                """
                SELECT s.id, s.user_id, s.csrf_token, s.last_seen_at, s.expires_at, s.mfa_pending, s.mfa_verified_at, s.revoked_at,
                       u.mfa_enabled
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

    func mfaState(userID: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first(
                "SELECT mfa_enabled, mfa_secret, mfa_pending_secret, mfa_last_step FROM users WHERE id = ?", userID)
        }
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
}

extension User {
    init(row r: Row) {
        self.init(
            id: r.string("id") ?? "", email: r.string("email") ?? "", name: r.string("name") ?? "",
            emailVerified: r.bool("email_verified") ?? false, isOwner: r.bool("is_owner") ?? false,
            mfaEnabled: r.bool("mfa_enabled") ?? false, avatarUrl: r.string("avatar_url"),
            deleteAfter: r.date("delete_after"),
            createdAt: r.date("created_at") ?? Date(timeIntervalSince1970: 0))
    }
}
