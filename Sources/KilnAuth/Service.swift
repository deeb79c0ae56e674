import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// An account as the API shows it.
public struct User: Codable, Sendable, Equatable {
    public let id: String
    public let email: String
    public let name: String
    public let emailVerified: Bool
    public let isOwner: Bool
    public let createdAt: Date
}

/// Accounts and one-time setup links (the first owner, and accounts an operator creates).
public struct AuthService: Sendable {
    let db: Database
    let clock: any Clock
    static let setupTokenLifetime: TimeInterval = 24 * 3600

    public init(db: Database, clock: any Clock) { self.db = db; self.clock = clock }

    public func userCount() throws -> Int {
        try db.readSync { try $0.first("SELECT COUNT(*) AS n FROM users")?.int("n") ?? 0 }
    }

    /// A fresh owner setup token (older unused owner tokens stop working). Only while there are no users.
    public func makeOwnerSetupToken() throws -> String? {
        let token = "kst_" + IDs.randomBase62(40)
        let now = clock.now()
        let made = try db.writeSync { tx -> Bool in
            guard (try tx.first("SELECT COUNT(*) AS n FROM users")?.int("n") ?? 0) == 0 else { return false }
            try tx.run("DELETE FROM setup_tokens WHERE purpose = 'owner' AND used_at IS NULL")
            try tx.run("INSERT INTO setup_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES (?, 'owner', NULL, ?, ?)",
                       Crypto.sha256Hex(Array(token.utf8)), now, now.addingTimeInterval(AuthService.setupTokenLifetime))
            return true
        }
        return made ? token : nil
    }

    /// Creates an account without a password and returns a one-time token to set it.
    public func createUser(email: String, name: String) async throws -> (User, String) {
        let email = try AuthService.validEmail(email)
        let name = try AuthService.validName(name)
        let token = "kst_" + IDs.randomBase62(40)
        let now = clock.now()
        let id = IDs.make("usr")
        do {
            try await db.write { tx in
                try tx.run("INSERT INTO users (id, email, name, email_verified, is_owner, created_at, updated_at) VALUES (?, ?, ?, 1, 0, ?, ?)",
                           id, email, name, now, now)
                try tx.run("INSERT INTO setup_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES (?, 'user', ?, ?, ?)",
                           Crypto.sha256Hex(Array(token.utf8)), id, now, now.addingTimeInterval(AuthService.setupTokenLifetime))
            }
        } catch let e as StoreError where e.isUniqueViolation {
            throw APIError.conflict("An account with this email already exists")
        }
        return (User(id: id, email: email, name: name, emailVerified: true, isOwner: false, createdAt: now), token)
    }

    public struct SetupInput: Decodable, Sendable {
        public let token: String
        public let email: String?
        public let name: String?
        public let password: String
    }

    /// Redeems a setup token: creates the owner, or sets the password of an operator-created account.
    public func completeSetup(_ input: SetupInput) async throws -> User {
        if let problem = Passwords.problem(input.password) { throw APIError.validation(problem, field: "password") }
        guard input.token.hasPrefix("kst_"), input.token.utf8.count <= 64 else {
            throw APIError.validation("This setup link is not valid", field: "token")
        }
        let hash = try Passwords.hash(input.password)
        let tokenHash = Crypto.sha256Hex(Array(input.token.utf8))
        let now = clock.now()
        let ownerEmail = try input.email.map(AuthService.validEmail)
        let ownerName = try input.name.map(AuthService.validName)
        return try await db.write { tx -> User in
            guard let t = try tx.first("SELECT purpose, user_id, expires_at, used_at FROM setup_tokens WHERE token_hash = ?", tokenHash),
                  t["used_at"] == .null, let expires = t.date("expires_at"), expires > now
            else { throw APIError.validation("This setup link is not valid, was used already, or expired", field: "token") }
            try tx.run("UPDATE setup_tokens SET used_at = ? WHERE token_hash = ?", now, tokenHash)
            if t.string("purpose") == "owner" {
                guard (try tx.first("SELECT COUNT(*) AS n FROM users")?.int("n") ?? 0) == 0 else {
                    throw APIError.conflict("The owner account exists already")
                }
                guard let email = ownerEmail else { throw APIError.validation("email is required", field: "email") }
                let name = ownerName ?? String(email.split(separator: "@")[0])
                let id = IDs.make("usr")
                try tx.run("INSERT INTO users (id, email, name, password_hash, email_verified, is_owner, created_at, updated_at) VALUES (?, ?, ?, ?, 1, 1, ?, ?)",
                           id, email, name, hash, now, now)
                return User(id: id, email: email, name: name, emailVerified: true, isOwner: true, createdAt: now)
            }
            guard let uid = t.string("user_id"),
                  let row = try tx.first("SELECT id, email, name, is_owner, created_at FROM users WHERE id = ?", uid)
            else { throw APIError.validation("This setup link is not valid", field: "token") }
            try tx.run("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?", hash, now, uid)
            return User(id: uid, email: row.string("email") ?? "", name: row.string("name") ?? "", emailVerified: true,
                        isOwner: row.bool("is_owner") ?? false, createdAt: row.date("created_at") ?? now)
        }
    }

    static func validEmail(_ raw: String) throws -> String {
        let e = raw.trimmingCharacters(in: .whitespaces)
        let parts = e.split(separator: "@", omittingEmptySubsequences: false)
        guard e.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !parts[1].hasPrefix("."),
              !parts[1].hasSuffix("."), !e.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "<" || $0 == ">" })
        else { throw APIError.validation("email is not a valid address", field: "email") }
        return e
    }

    static func validName(_ raw: String) throws -> String {
        let n = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !n.isEmpty, n.count <= 100, !n.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw APIError.validation("name must have 1 to 100 characters", field: "name")
        }
        return n
    }
}
