import Foundation
import KilnCore
import KilnCrypto

/// Envelope encryption: each secret version has its own data key (AES-256-GCM), and the data key is
/// sealed by the master key. Both seals carry the workspace, name and version as associated data,
/// so a ciphertext or wrapped key copied to another row does not open there.
enum Envelope {
    struct Sealed: Sendable {
        let keyID: String
        let wrappedKey: [UInt8]
        let ciphertext: [UInt8]
    }

    static func aad(_ wsID: String, _ name: String, _ version: Int, _ part: String) -> [UInt8] {
        Array("kiln-secret/\(part)/\(wsID)/\(name)/\(version)".utf8)
    }

    /// The same data key sealed under a new master key (rotation); the value's ciphertext stays.
    static func rewrap(
        _ wrapped: [UInt8], old: [UInt8], new: [UInt8], wsID: String, name: String, version: Int
    ) throws -> [UInt8] {
        let dataKey = try Crypto.open(wrapped, key: old, aad: aad(wsID, name, version, "key"))
        return try Crypto.seal(dataKey, key: new, aad: aad(wsID, name, version, "key"))
    }

    static func seal(_ value: [UInt8], master: [UInt8], wsID: String, name: String, version: Int) throws -> Sealed {
        let dataKey = Crypto.randomBytes(32)
        let ct = try Crypto.seal(value, key: dataKey, aad: aad(wsID, name, version, "value"))
        let wrapped = try Crypto.seal(dataKey, key: master, aad: aad(wsID, name, version, "key"))
        return Sealed(keyID: MasterKey.fingerprint(master), wrappedKey: wrapped, ciphertext: ct)
    }

    static func open(_ s: Sealed, master: [UInt8], wsID: String, name: String, version: Int) throws -> [UInt8] {
        let dataKey = try Crypto.open(s.wrappedKey, key: master, aad: aad(wsID, name, version, "key"))
        return try Crypto.open(s.ciphertext, key: dataKey, aad: aad(wsID, name, version, "value"))
    }
}
