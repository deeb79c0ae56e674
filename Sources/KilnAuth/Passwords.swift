import KilnCrypto

/// Account passwords: the rules, and scrypt hashing (`PasswordHash`).
public enum Passwords {
    public static let minLength = 10
    public static let maxLength = 256
    public static func hash(_ password: String) async throws -> String { try await PasswordHash.hashed(password) }

    public static func verify(_ password: String, against stored: String) async -> Bool {
        await PasswordHash.matches(password, against: stored)
    }

    /// nil when acceptable, else why not.
    public static func problem(_ password: String) -> String? {
        let n = password.count
        if n < minLength { return "password must have at least \(minLength) characters" }
        if n > maxLength { return "password must have at most \(maxLength) characters" }
        return nil
    }
}
