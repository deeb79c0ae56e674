import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

extension AuthService {
    static let recoveryCodeCount = 10

    /// Sealed and opened with the key the database names in the same transaction as the secret's row
    /// (a rotation re-seals what it finds; another instance may have rotated the key).
    static func seal(_ secret: [UInt8], key: [UInt8], userID: String) throws -> [UInt8] {
        try Crypto.seal(secret, key: key, aad: Array("mfa:\(userID)".utf8))
    }

    static func open(_ box: [UInt8], key: [UInt8], userID: String) throws -> [UInt8] {
        try Crypto.open(box, key: key, aad: Array("mfa:\(userID)".utf8))
    }

    /// A master key rotation: every MFA secret (enabled or pending) re-sealed under the new key, in
    /// the rotation's transaction.
    static func resealMFA(_ tx: Transaction, store: AuthStore, old: [UInt8], new: [UInt8]) throws {
        for row in try store.sealedMFA(tx) {
            guard let id = row.string("id") else { continue }
            let aad = Array("mfa:\(id)".utf8)
            let secret = try row.blob("mfa_secret").map {
                try Crypto.seal(try Crypto.open($0, key: old, aad: aad), key: new, aad: aad)
            }
            let pending = try row.blob("mfa_pending_secret").map {
                try Crypto.seal(try Crypto.open($0, key: old, aad: aad), key: new, aad: aad)
            }
            try store.setSealedMFA(tx, userID: id, secret: secret, pending: pending)
        }
    }

    /// Starts enrolment: a new secret (enabled only after the first good code) and recovery codes.
    public func mfaSetup(userID: String, ip: String) async throws -> MFASetup {
        guard let u = try await user(id: userID) else { throw APIError.notFound("No such account") }
        if u.mfaEnabled {
            throw APIError.conflict("Two-factor authentication is on already; disable it first to enrol a new device")
        }
        let secret = Crypto.randomBytes(20)
        let codes = (0..<AuthService.recoveryCodeCount).map { _ in
            let raw = Base32.encode(Crypto.randomBytes(8)).lowercased()
            return String(raw.prefix(4)) + "-" + String(raw.dropFirst(4).prefix(4)) + "-"
                + String(raw.dropFirst(8).prefix(4))
        }
        let now = clock.now()
        let store = self.store
        let master = masterKey
        try await store.write { tx in
            let sealed = try Self.seal(secret, key: try master.bytes(in: tx), userID: userID)
            try store.startEnrolment(
                tx, userID: userID, sealedSecret: sealed, codeHashes: codes.map { Crypto.sha256Hex(Array($0.utf8)) },
                at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mfa.enrolment_started", actorUserID: userID, resourceType: "user", resourceID: userID,
                    ip: ip), at: now)
        }
        let b32 = Base32.encode(secret)
        // Key URI format: otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER (account percent-encoded).
        let account =
            u.email.addingPercentEncoding(
                withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: ".-_"))) ?? "account"
        let label = "Kiln:" + account
        let url = "otpauth://totp/\(label)?secret=\(b32)&issuer=Kiln&algorithm=SHA1&digits=6&period=30"
        return MFASetup(secret: b32, otpauthUrl: url, recoveryCodes: codes)
    }

    /// Checks a TOTP code (±1 step, each step once) or a single-use recovery code and, by state:
    /// completes a half-open login, turns MFA on after enrolment, or records a fresh step-up.
    public func mfaVerify(principal p: Principal, code raw: String, ip: String) async throws -> MFAOutcome {
        guard let sid = p.sessionID else {
            throw APIError.validation("Second-factor checks need a browser session, not an API key", field: "code")
        }
        let code = raw.trimmingCharacters(in: .whitespaces).lowercased()
        guard !code.isEmpty, code.utf8.count <= 32 else { throw APIError.validation("code is required", field: "code") }
        try await limit("mfa", account: p.userID, ip: ip)
        let now = clock.now()
        let (store, master, uid) = (self.store, masterKey, p.userID)
        guard
            let (r, key) = try await store.read({ tx -> (Row, [UInt8])? in
                guard let r = try store.mfaState(tx, userID: uid) else { return nil }
                return (r, try master.bytes(in: tx))
            })
        else { throw APIError.notFound("No such account") }
        let enabled = r.bool("mfa_enabled") ?? false
        let enrolling = !enabled && r.blob("mfa_pending_secret") != nil
        guard enabled || enrolling else {
            throw APIError.conflict("Two-factor authentication is not set up (POST /api/auth/mfa-setup)")
        }
        guard let box = enabled ? r.blob("mfa_secret") : r.blob("mfa_pending_secret") else {
            throw APIError.conflict("No second factor enrolled")
        }
        let secret = try Self.open(box, key: key, userID: p.userID)
        let lastStep = r.int64("mfa_last_step") ?? 0
        let current = Int64(TOTP.counter(time: now.timeIntervalSince1970))
        var matchedStep: Int64? = nil
        if code.count == 6, code.allSatisfy(\.isNumber) {
            for step in (current - 1)...(current + 1) where step > lastStep {
                if Crypto.constantTimeEqual(
                    Array(TOTP.hotp(secret: secret, counter: UInt64(step)).utf8), Array(code.utf8))
                {
                    matchedStep = step
                }
            }
        }
        let matched = matchedStep
        let userID = p.userID
        let outcome: MFAOutcome = enrolling ? .enabled : (p.mfaPending ? .loginCompleted : .stepUp)
        let ok = try await store.write { tx -> Bool in
            if let step = matched {
                guard try store.useStep(tx, userID: userID, step: step) else { return false }
            } else {
                // Recovery codes work once, and only for an enabled factor.
                guard enabled,
                    try store.useRecoveryCode(tx, userID: userID, hash: Crypto.sha256Hex(Array(code.utf8)), at: now)
                else {
                    return false
                }
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "mfa.recovery_code_used", actorUserID: userID, resourceType: "user", resourceID: userID,
                        ip: ip), at: now)
            }
            if enrolling {
                try store.enableMFA(tx, userID: userID, at: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "mfa.enabled", actorUserID: userID, resourceType: "user", resourceID: userID, ip: ip),
                    at: now)
            }
            try store.markSecondFactor(tx, sessionID: sid, at: now)
            if outcome == .loginCompleted {
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "login.ok", actorUserID: userID, resourceType: "session", resourceID: sid, ip: ip,
                        details: ["second_factor": true]), at: now)
            }
            return true
        }
        guard ok else {
            try await audit(
                AuditEvent(action: "mfa.failed", actorUserID: userID, resourceType: "user", resourceID: userID, ip: ip))
            throw APIError.unauthenticated("Wrong or already used code")
        }
        return outcome
    }

    /// Turns MFA off; needs the password and a current code (or a recovery code).
    public func mfaDisable(principal p: Principal, password: String, code: String, ip: String) async throws {
        try p.requireStepUp(now: clock.now())
        guard try await checkPassword(userID: p.userID, password: password, ip: ip) else {
            throw APIError.validation("The password is wrong", field: "password")
        }
        guard let u = try await user(id: p.userID), u.mfaEnabled else {
            throw APIError.conflict("Two-factor authentication is off already")
        }
        _ = try await mfaVerify(
            principal: Principal(
                userID: p.userID, kind: p.kind, scopes: p.scopes, mfaEnabled: true,
                mfaVerifiedAt: p.mfaVerifiedAt, mfaPending: false, csrfToken: p.csrfToken),
            code: code, ip: ip)
        let now = clock.now()
        let userID = p.userID
        let store = self.store
        try await store.write { tx in
            try store.disableMFA(tx, userID: userID, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mfa.disabled", actorUserID: userID, resourceType: "user", resourceID: userID, ip: ip),
                at: now)
        }
    }
}
