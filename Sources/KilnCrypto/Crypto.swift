import COpenSSL
import Foundation

/// Cryptographic primitives as thin, checked wrappers over OpenSSL's EVP API.
public enum Crypto {
    public enum Failure: Error, Equatable { case openssl(String), invalidInput(String), authenticationFailed }

    /// Cryptographically secure random bytes.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return out }
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(ok == 1, "RAND_bytes failed: the process cannot make secure random numbers")
        return out
    }

    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        _ = data.withUnsafeBytes { d in
            out.withUnsafeMutableBufferPointer {
                EVP_Digest(d.baseAddress, d.count, $0.baseAddress, &len, EVP_sha256(), nil)
            }
        }
        return out
    }

    public static func sha256(_ s: String) -> [UInt8] { sha256(Array(s.utf8)) }
    public static func sha256Hex(_ data: [UInt8]) -> String { hex(sha256(data)) }

    /// SHA-256 of bytes in place (no copy into an array first), as lower-case hex.
    public static func sha256Hex(_ data: UnsafeRawBufferPointer) -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        _ = out.withUnsafeMutableBufferPointer {
            EVP_Digest(data.baseAddress, data.count, $0.baseAddress, &len, EVP_sha256(), nil)
        }
        return hex(out)
    }

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] { hmac("SHA256", 32, key: key, data: data) }
    public static func hmacSHA1(key: [UInt8], data: [UInt8]) -> [UInt8] { hmac("SHA1", 20, key: key, data: data) }

    private static func hmac(_ digest: String, _ length: Int, key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        let ok = key.withUnsafeBufferPointer { k in
            data.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    kiln_hmac(digest, k.baseAddress, k.count, d.baseAddress, d.count, o.baseAddress, length)
                }
            }
        }
        precondition(ok == 1, "HMAC-\(digest) failed")
        return out
    }

    /// AES-256-GCM sealed box: nonce (12) ‖ ciphertext ‖ tag (16).
    public static func seal(
        _ plaintext: [UInt8], key: [UInt8], aad: [UInt8] = [], nonce: [UInt8]? = nil
    ) throws -> [UInt8] {
        guard key.count == 32 else { throw Failure.invalidInput("AES-256 key must be 32 bytes") }
        let iv = nonce ?? randomBytes(12)
        var out = [UInt8](repeating: 0, count: plaintext.count)
        var tag = [UInt8](repeating: 0, count: 16)
        let ok = aesGCM(encrypt: true, key: key, iv: iv, aad: aad, input: plaintext, output: &out, tag: &tag)
        guard ok else { throw Failure.openssl("AES-GCM encryption failed") }
        return iv + out + tag
    }

    /// Opens a sealed box; throws `authenticationFailed` when it was tampered with or the key is wrong.
    public static func open(_ box: [UInt8], key: [UInt8], aad: [UInt8] = []) throws -> [UInt8] {
        guard key.count == 32 else { throw Failure.invalidInput("AES-256 key must be 32 bytes") }
        guard box.count >= 28 else { throw Failure.authenticationFailed }
        let iv = Array(box[0..<12])
        let ct = Array(box[12..<(box.count - 16)])
        var tag = Array(box[(box.count - 16)...])
        var out = [UInt8](repeating: 0, count: ct.count)
        guard aesGCM(encrypt: false, key: key, iv: iv, aad: aad, input: ct, output: &out, tag: &tag) else {
            throw Failure.authenticationFailed
        }
        return out
    }

    /// Raw AES-256-GCM with an explicit IV (for known-answer tests).
    public static func aesGCM(
        encrypt: Bool, key: [UInt8], iv: [UInt8], aad: [UInt8], input: [UInt8],
        output: inout [UInt8], tag: inout [UInt8]
    ) -> Bool {
        output = [UInt8](repeating: 0, count: input.count)
        if tag.count != 16 { tag = [UInt8](repeating: 0, count: 16) }
        var o = output
        var t = tag
        let ok = key.withUnsafeBufferPointer { k in
            iv.withUnsafeBufferPointer { v in
                aad.withUnsafeBufferPointer { a in
                    input.withUnsafeBufferPointer { i in
                        o.withUnsafeMutableBufferPointer { ob in
                            t.withUnsafeMutableBufferPointer { tb in
                                kiln_aes256gcm(
                                    encrypt ? 1 : 0, k.baseAddress, v.baseAddress, v.count, a.baseAddress, a.count,
                                    i.baseAddress, i.count, ob.baseAddress, tb.baseAddress)
                            }
                        }
                    }
                }
            }
        }
        output = o
        tag = t
        return ok == 1
    }

    /// scrypt (RFC 7914).
    public static func scrypt(
        password: [UInt8], salt: [UInt8], n: UInt64, r: UInt64, p pp: UInt64, length: Int
    ) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        let maxmem: UInt64 = 128 * r * n * pp + 16 * 1024 * 1024
        let pw = password.map { CChar(bitPattern: $0) } + [0]
        let saltBytes = salt.isEmpty ? [UInt8(0)] : salt
        let ok = pw.withUnsafeBufferPointer { p in
            saltBytes.withUnsafeBufferPointer { sb in
                out.withUnsafeMutableBufferPointer { o in
                    EVP_PBE_scrypt(
                        p.baseAddress, password.count, sb.baseAddress, salt.count, n, r, pp, maxmem, o.baseAddress,
                        length)
                }
            }
        }
        guard ok == 1 else { throw Failure.openssl("scrypt failed (parameters out of range?)") }
        return out
    }

    /// PBKDF2 with HMAC-SHA-256 (RFC 8018), as SCRAM-SHA-256 salts a password (RFC 7677).
    public static func pbkdf2SHA256(password: [UInt8], salt: [UInt8], iterations: Int, length: Int = 32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        let pw = password.map { CChar(bitPattern: $0) }
        let ok = pw.withUnsafeBufferPointer { p in
            salt.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { o in
                    PKCS5_PBKDF2_HMAC(
                        p.baseAddress, Int32(pw.count), s.baseAddress, Int32(salt.count), Int32(iterations),
                        EVP_sha256(), Int32(length), o.baseAddress)
                }
            }
        }
        precondition(ok == 1, "PBKDF2 failed")
        return out
    }

    /// MD5 as lower-case hex: only for protocols that still name it (PostgreSQL's old md5 password
    /// exchange), never for anything Kiln itself protects.
    public static func md5Hex(_ data: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 16)
        var len: UInt32 = 0
        _ = data.withUnsafeBytes { d in
            out.withUnsafeMutableBufferPointer {
                EVP_Digest(d.baseAddress, d.count, $0.baseAddress, &len, EVP_md5(), nil)
            }
        }
        return hex(out)
    }

    /// Compares in time independent of where the inputs differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 }
        }
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func fromHex(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        func v(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var i = 0
        while i < u.count {
            guard let h = v(u[i]), let l = v(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }
}

/// Ed25519 signatures (RFC 8032).
public struct Ed25519Key: Sendable {
    public let seed: [UInt8]
    public let publicKey: [UInt8]

    public init(seed: [UInt8]) throws {
        guard seed.count == 32 else { throw Crypto.Failure.invalidInput("Ed25519 seed must be 32 bytes") }
        var pub = [UInt8](repeating: 0, count: 32)
        let ok = seed.withUnsafeBufferPointer { s in
            pub.withUnsafeMutableBufferPointer { kiln_ed25519_public(s.baseAddress, $0.baseAddress) }
        }
        guard ok == 1 else { throw Crypto.Failure.openssl("Ed25519 key derivation failed") }
        self.seed = seed
        self.publicKey = pub
    }

    public static func generate() throws -> Ed25519Key { try Ed25519Key(seed: Crypto.randomBytes(32)) }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        var sig = [UInt8](repeating: 0, count: 64)
        let ok = seed.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { m in
                sig.withUnsafeMutableBufferPointer { o in
                    kiln_ed25519_sign(
                        s.baseAddress, m.baseAddress ?? UnsafePointer(bitPattern: 1), m.count, o.baseAddress)
                }
            }
        }
        precondition(ok == 1, "Ed25519 signing failed")
        return sig
    }

    public static func verify(publicKey: [UInt8], message: [UInt8], signature: [UInt8]) -> Bool {
        guard publicKey.count == 32, signature.count == 64 else { return false }
        return publicKey.withUnsafeBufferPointer { p in
            message.withUnsafeBufferPointer { m in
                signature.withUnsafeBufferPointer { s in
                    kiln_ed25519_verify(
                        p.baseAddress, m.baseAddress ?? UnsafePointer(bitPattern: 1), m.count, s.baseAddress)
                }
            }
        } == 1
    }
}
