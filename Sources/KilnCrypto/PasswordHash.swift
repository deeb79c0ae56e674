import Foundation

/// Password hashing with scrypt: `scrypt$N$r$p$salt$hash` (base64url), verified in constant time.
/// Account passwords and share-link passwords use it alike.
public enum PasswordHash {
    static let logN = 15, r = 8, p = 1

    /// One scrypt is ~100 ms of CPU and 32 MiB. Request handlers await it on threads of their own, at
    /// most half the cores at a time: on the cooperative pool (as wide as the cores) a burst of logins
    /// would hold every thread the server's other handlers need, and memory grows with the burst.
    static let hashing: OperationQueue = {
        let q = OperationQueue()
        q.name = "kiln.password-hash"
        q.maxConcurrentOperationCount = max(1, ProcessInfo.processInfo.activeProcessorCount / 2)
        return q
    }()

    static func onHashingThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in hashing.addOperation { c.resume(returning: body()) } }
    }

    /// `make` off the cooperative pool.
    public static func hashed(_ password: String) async throws -> String {
        try await onHashingThread { Result { try make(password) } }.get()
    }

    /// `verify` off the cooperative pool.
    public static func matches(_ password: String, against stored: String) async -> Bool {
        await onHashingThread { verify(password, against: stored) }
    }

    public static func make(_ password: String) throws -> String {
        let salt = Crypto.randomBytes(16)
        let dk = try Crypto.scrypt(
            password: Array(password.utf8), salt: salt, n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p), length: 32)
        return "scrypt$\(logN)$\(r)$\(p)$\(Base64URL.encode(salt))$\(Base64URL.encode(dk))"
    }

    public static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$").map(String.init)
        guard parts.count == 6, parts[0] == "scrypt", let logN = Int(parts[1]), (10...20).contains(logN),
            let r = Int(parts[2]), (1...32).contains(r), let p = Int(parts[3]), (1...16).contains(p),
            let salt = Base64URL.decode(parts[4]), let expected = Base64URL.decode(parts[5]), !expected.isEmpty,
            let dk = try? Crypto.scrypt(
                password: Array(password.utf8), salt: salt, n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p),
                length: expected.count)
        else { return false }
        return Crypto.constantTimeEqual(dk, expected)
    }
}
