import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// Accounts: setup links, registration, verification, login and sessions, password reset, TOTP
/// MFA, profile and deletion. Other modules use this public API, never the tables.
public final class AuthService: AccountOperations, InvitedAccounts {
    let store: AuthStore
    let clock: any Clock
    let hooks: Hooks
    let mailer: any Mailer
    let templates: MailTemplates
    let baseURL: BaseURL
    let masterKey: MasterKey

    static let setupTokenLifetime: TimeInterval = 24 * 3600
    static let verifyTokenLifetime: TimeInterval = 24 * 3600
    static let resetTokenLifetime: TimeInterval = 3600
    static let sessionLifetime: TimeInterval = 14 * 24 * 3600
    static let sessionIdle: TimeInterval = 24 * 3600
    /// Wrong passwords from one client address that lock it out of the account, and from anywhere
    /// that lock the account; both for `lockDuration`, counted over the same window.
    static let lockAfterFailures = 5
    static let lockAccountAfterFailures = 20
    static let lockDuration: TimeInterval = 15 * 60
    static let deletionDelay: TimeInterval = 30 * 24 * 3600

    /// Per account and per client address: MFA codes, forgot, resend; per address: setup, login,
    /// register, reset (10 per 15 minutes each; counted in the database when instances share it).
    let perAccount: SharedWindowLimiter
    let perIP: SharedWindowLimiter
    let registration: RegistrationPolicy

    public init(
        db: Database, clock: any Clock, hooks: Hooks = Hooks(),
        mailer: any Mailer = OutboxMailer(directory: NSTemporaryDirectory() + "kiln-outbox"),
        templates: MailTemplates = MailTemplates(directory: nil), baseURL: BaseURL = BaseURL("http://127.0.0.1:8080"),
        masterKey: MasterKey = MasterKey(Crypto.randomBytes(32), path: nil),
        registration: RegistrationPolicy = RegistrationPolicy()
    ) {
        self.registration = registration
        perAccount = SharedWindowLimiter(limit: 10, window: 15 * 60, db: db)
        perIP = SharedWindowLimiter(limit: 10, window: 15 * 60, db: db)
        self.store = AuthStore(db: db)
        self.clock = clock
        self.hooks = hooks
        self.mailer = mailer
        self.templates = templates
        self.baseURL = baseURL
        self.masterKey = masterKey
    }

    public convenience init(services s: Services) {
        self.init(
            db: s.db, clock: s.clock, hooks: s.hooks, mailer: s.mailer, templates: s.templates, baseURL: s.baseURL,
            masterKey: s.masterKey, registration: RegistrationPolicy(config: s.config))
    }

    // MARK: Lookups (public API for other modules)

    public func userCount() throws -> Int { try store.userCount() }
    public func user(id: String) async throws -> User? { try await store.user(id: id) }
    public func user(email: String) async throws -> User? { try await store.user(email: email) }

    // MARK: Setup links

    /// A fresh owner setup token (unused owner tokens older than a minute stop working). Only while
    /// there are no users.
    public func makeOwnerSetupToken() throws -> String? {
        let token = "kst_" + IDs.randomBase62(40)
        let now = clock.now()
        let store = self.store
        let made = try store.writeSync { tx -> Bool in
            guard try store.userCount(tx) == 0 else { return false }
            try store.replaceOwnerSetupToken(
                tx, hash: Crypto.sha256Hex(Array(token.utf8)), at: now,
                expires: now.addingTimeInterval(AuthService.setupTokenLifetime))
            return true
        }
        return made ? token : nil
    }

    /// Creates an account without a password and returns a one-time token to set it.
    public func createUser(
        email: String, name: String, by actor: String? = nil, ip: String? = nil
    ) async throws -> (
        User, String
    ) {
        let email = try AuthService.validEmail(email)
        let name = try AuthService.validName(name)
        let token = "kst_" + IDs.randomBase62(40)
        let now = clock.now()
        let id = IDs.make("usr")
        let (hooks, store) = (self.hooks, self.store)
        do {
            try await store.write { tx in
                try store.insertUser(
                    tx, id: id, email: email, name: name, passwordHash: nil, verified: true, owner: false, via: "admin",
                    at: now)
                try store.insertUserSetupToken(
                    tx, hash: Crypto.sha256Hex(Array(token.utf8)), userID: id, at: now,
                    expires: now.addingTimeInterval(AuthService.setupTokenLifetime))
                try hooks.userCreated(tx, userID: id, name: name, at: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "account.created", actorUserID: actor ?? id, resourceType: "user", resourceID: id,
                        ip: ip, details: ["via": "admin"]), at: now)
            }
        } catch let e as StoreError where e.isUniqueViolation {
            throw APIError.conflict("An account with this email already exists")
        }
        return (try await user(id: id)!, token)
    }

    /// Redeems a setup token: creates the owner, or sets the password of an operator-created account.
    public func completeSetup(_ input: SetupInput, ip: String = "") async throws -> User {
        if !ip.isEmpty { try await limit("setup", ip: ip) }
        if let problem = Passwords.problem(input.password) { throw APIError.validation(problem, field: "password") }
        guard input.token.hasPrefix("kst_"), input.token.utf8.count <= 64 else {
            throw APIError.validation("This setup link is not valid", field: "token")
        }
        let tokenHash = Crypto.sha256Hex(Array(input.token.utf8))
        let now = clock.now()
        // The token is checked before the (deliberately slow) password hash, so guessing tokens costs
        // the server nothing; the write below checks it again.
        let live = try await store.read { tx -> Bool in
            guard let t = try self.store.setupToken(tx, hash: tokenHash), t["used_at"] == .null,
                let expires = t.date("expires_at")
            else { return false }
            return expires > now
        }
        guard live else {
            throw APIError.validation("This setup link is not valid, was used already, or expired", field: "token")
        }
        let hash = try await Passwords.hash(input.password)
        let ownerEmail = try input.email.map(AuthService.validEmail)
        let ownerName = try input.name.map(AuthService.validName)
        let (hooks, store) = (self.hooks, self.store)
        let id = try await store.write { tx -> String in
            guard let t = try store.setupToken(tx, hash: tokenHash), t["used_at"] == .null,
                let expires = t.date("expires_at"), expires > now
            else {
                throw APIError.validation("This setup link is not valid, was used already, or expired", field: "token")
            }
            try store.useSetupToken(tx, hash: tokenHash, at: now)
            if t.string("purpose") == "owner" {
                guard try store.userCount(tx) == 0 else { throw APIError.conflict("The owner account exists already") }
                guard let email = ownerEmail else { throw APIError.validation("email is required", field: "email") }
                let name = ownerName ?? String(email.split(separator: "@")[0])
                let id = IDs.make("usr")
                try store.insertUser(
                    tx, id: id, email: email, name: name, passwordHash: hash, verified: true, owner: true,
                    via: "owner_setup", at: now)
                try hooks.userCreated(tx, userID: id, name: name, at: now)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "account.created", actorUserID: id, resourceType: "user", resourceID: id,
                        details: ["via": "owner_setup"]), at: now)
                return id
            }
            guard let uid = t.string("user_id") else {
                throw APIError.validation("This setup link is not valid", field: "token")
            }
            try store.setPassword(tx, userID: uid, hash: hash, at: now)
            try AuditLog.append(
                tx, AuditEvent(action: "password.set", actorUserID: uid, resourceType: "user", resourceID: uid), at: now
            )
            return uid
        }
        return try await user(id: id)!
    }

    // MARK: Registration and verification

    /// Creates an account (and its workspace). With an invitation (any mode) the account is verified
    /// at once and may run commands; under `open` it is unverified until the mailed link is opened and
    /// runs nothing until an instance admin allows it; under `closed` and `invite` nothing else may register.
    public func register(_ input: RegisterInput, ip: String) async throws -> User {
        try await limit("register", ip: ip)
        let email = try AuthService.validEmail(input.email)
        let name = try AuthService.validName(input.name)
        let invitationHash = try input.invitation.map { token -> String in
            guard token.hasPrefix("kin_"), token.utf8.count <= 64 else {
                throw APIError.validation(
                    "This invitation is not valid, was used already, or expired", field: "invitation")
            }
            return Crypto.sha256Hex(Array(token.utf8))
        }
        if invitationHash == nil {
            try registration.admits(email: email)
        }
        if let problem = Passwords.problem(input.password) { throw APIError.validation(problem, field: "password") }
        let now = clock.now()
        if let invitationHash {
            // Checked before hashing the password, and again in the write.
            let ok = try await store.read { tx in try self.store.invitation(tx, hash: invitationHash) }
            try Self.checkInvitation(ok, email: email, now: now)
        }
        let hash = try await Passwords.hash(input.password)
        let id = IDs.make("usr")
        let token = "kvt_" + IDs.randomBase62(43)
        let invited = invitationHash != nil
        let store = self.store
        do {
            try await store.write { tx in
                var invitationID: String? = nil
                if let invitationHash {
                    let inv = try store.invitation(tx, hash: invitationHash)
                    try Self.checkInvitation(inv, email: email, now: now)
                    invitationID = inv?.string("id")
                }
                try self.insertRegistered(
                    tx, id: id, email: email, name: name, passwordHash: hash, verified: invited,
                    via: invited ? "invitation" : "registration", at: now)
                if let invitationID {
                    guard try store.useInvitation(tx, id: invitationID, by: id, at: now) else {
                        throw APIError.validation(
                            "This invitation is not valid, was used already, or expired", field: "invitation")
                    }
                } else {
                    try store.insertEmailToken(
                        tx, hash: Crypto.sha256Hex(Array(token.utf8)), userID: id, purpose: "verify", email: email,
                        at: now, expires: now.addingTimeInterval(AuthService.verifyTokenLifetime))
                }
                try self.registered(
                    tx, id: id, name: name, via: invited ? "invitation" : "registration", ip: ip, at: now)
            }
        } catch let e as StoreError where e.isUniqueViolation {
            throw APIError.conflict("An account with this email already exists")
        }
        if !invited { try await sendVerification(to: email, name: name, token: token) }
        return try await user(id: id)!
    }

    /// An account made through a workspace invitation (collab): verified at once, since its owner
    /// opened the link mailed to the address; `--registration` does not apply (an admin invited it).
    public func registerInvited(
        email raw: String, name rawName: String, password: String, ip: String
    ) async throws
        -> User
    {
        try await limit("register", ip: ip)
        let email = try AuthService.validEmail(raw)
        let name = try AuthService.validName(rawName)
        if let problem = Passwords.problem(password) { throw APIError.validation(problem, field: "password") }
        let hash = try await Passwords.hash(password)
        let id = IDs.make("usr")
        let now = clock.now()
        let store = self.store
        do {
            try await store.write { tx in
                try self.insertRegistered(
                    tx, id: id, email: email, name: name, passwordHash: hash, verified: true,
                    via: "workspace_invitation",
                    at: now)
                try self.registered(tx, id: id, name: name, via: "workspace_invitation", ip: ip, at: now)
            }
        } catch let e as StoreError where e.isUniqueViolation {
            throw APIError.conflict("An account with this email already exists; sign in to accept the invitation")
        }
        guard let user = try await user(id: id) else { throw APIError.notFound("No such account") }
        return user
    }

    /// Inside a registration's write: frees an address whose registration was never confirmed within a
    /// day (it may register again), then inserts the account.
    func insertRegistered(
        _ tx: Transaction, id: String, email: String, name: String, passwordHash: String, verified: Bool, via: String,
        at now: Date
    ) throws {
        if let stale = try store.expiredUnverified(
            tx, email: email, before: now.addingTimeInterval(-AuthService.verifyTokenLifetime))
        {
            try hooks.userPurged(tx, userID: stale)
            try store.deleteUser(tx, userID: stale)
        }
        try store.insertUser(
            tx, id: id, email: email, name: name, passwordHash: passwordHash, verified: verified, owner: false,
            via: via,
            at: now)
    }

    /// The other domains' part of a new account (its own workspace…) and the audit event, in its write.
    func registered(_ tx: Transaction, id: String, name: String, via: String, ip: String, at now: Date) throws {
        try hooks.userCreated(tx, userID: id, name: name, at: now)
        try AuditLog.append(
            tx,
            AuditEvent(
                action: "account.registered", actorUserID: id, resourceType: "user", resourceID: id, ip: ip,
                details: ["via": .string(via)]), at: now)
    }

    static func checkInvitation(_ row: Row?, email: String, now: Date) throws {
        guard let row, row["used_at"] == .null, let exp = row.date("expires_at"), exp > now else {
            throw APIError.validation("This invitation is not valid, was used already, or expired", field: "invitation")
        }
        guard (row.string("email") ?? "").lowercased() == email.lowercased() else {
            throw APIError.validation("This invitation is for another email address", field: "email")
        }
    }

    /// Mails a new verification link to an unconfirmed address; the same answer for any address.
    public func resendVerification(email raw: String, ip: String) async throws {
        let email = raw.trimmingCharacters(in: .whitespaces)
        guard !email.isEmpty, email.utf8.count <= 254 else {
            throw APIError.validation("email is required", field: "email")
        }
        try await limit("resend", account: email, ip: ip)
        let now = clock.now()
        guard let row = try await store.unverifiedAccount(email: email), let uid = row.string("id"),
            let created = row.date("created_at"), now.timeIntervalSince(created) < AuthService.verifyTokenLifetime,
            let address = row.string("email")
        else { return }
        let token = "kvt_" + IDs.randomBase62(43)
        let store = self.store
        try await store.write { tx in
            try store.insertEmailToken(
                tx, hash: Crypto.sha256Hex(Array(token.utf8)), userID: uid, purpose: "verify", email: address,
                at: now, expires: created.addingTimeInterval(AuthService.verifyTokenLifetime))
        }
        try await sendVerification(to: address, name: row.string("name") ?? "", token: token)
    }

    /// Removes registrations nobody confirmed within a day (their address may register again).
    @discardableResult
    public func purgeExpiredRegistrations() async throws -> Int {
        let now = clock.now()
        let stale = try await store.expiredUnverified(before: now.addingTimeInterval(-AuthService.verifyTokenLifetime))
        let (hooks, store) = (self.hooks, self.store)
        for uid in stale {
            try await store.write { tx in
                try hooks.userPurged(tx, userID: uid)
                try store.deleteUser(tx, userID: uid)
                try AuditLog.append(
                    tx,
                    AuditEvent(
                        action: "account.expired", resourceType: "user", resourceID: uid,
                        details: ["reason": "email never confirmed"]), at: now)
            }
        }
        return stale.count
    }

    func sendVerification(to email: String, name: String, token: String) async throws {
        let link = "\(baseURL.string)/auth/verify?token=\(token)"
        let body = templates.render(
            "verify-email",
            fallback:
                "Hello {{name}},\n\nConfirm your email address for Kiln:\n\n{{link}}\n\nThe link is valid for 24 hours.\n",
            ["name": name, "link": link])
        await deliver(MailMessage(to: email, subject: "Confirm your email address", body: body, link: link))
    }

    /// Sends, logging a failure instead of failing the request (the account change already happened).
    func deliver(_ m: MailMessage) async {
        do { try await mailer.send(m) } catch {
            ServerLog.error(
                "mail not sent",
                ["to": .string(m.to), "subject": .string(m.subject), "error": .string(String(describing: error))])
        }
    }

    /// Marks the address behind a verification token as verified (a changed email takes effect here).
    public func verifyEmail(token: String) async throws -> User {
        let tokenHash = Crypto.sha256Hex(Array(token.utf8))
        let now = clock.now()
        let store = self.store
        let id = try await store.write { tx -> String in
            guard token.hasPrefix("kvt_"), token.utf8.count <= 64,
                let t = try store.emailToken(tx, hash: tokenHash, purpose: "verify"),
                t["used_at"] == .null, let exp = t.date("expires_at"), exp > now, let uid = t.string("user_id"),
                let email = t.string("email")
            else {
                throw APIError.validation(
                    "This verification link is not valid, was used already, or expired", field: "token")
            }
            try store.useEmailToken(tx, hash: tokenHash, at: now)
            do {
                try store.confirmEmail(tx, userID: uid, email: email, at: now)
            } catch let e as StoreError where e.isUniqueViolation {
                throw APIError.conflict("Another account uses this email address now")
            }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "email.verified", actorUserID: uid, resourceType: "user", resourceID: uid,
                    details: ["email": .string(email)]), at: now)
            return uid
        }
        return try await user(id: id)!
    }

    // MARK: Rate limits

    /// Each flow (login, mfa, forgot, reset, register) has its own budget per IP and per account.
    func limit(_ action: String, account: String? = nil, ip: String) async throws {
        let now = clock.now()
        if let wait = try await perIP.hit("\(action):ip:\(ip)", now: now) {
            throw APIError.rateLimited(retryAfter: wait)
        }
        if let account, let wait = try await perAccount.hit("\(action):acct:\(account.lowercased())", now: now) {
            throw APIError.rateLimited(retryAfter: wait)
        }
    }

    // MARK: Validation

    static func validEmail(_ raw: String) throws -> String { try Validate.email(raw) }

    static func validName(_ raw: String) throws -> String {
        let n = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !n.isEmpty, n.count <= 100, !n.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        return n
    }
}
