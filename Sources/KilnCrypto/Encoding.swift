/// Base32 (RFC 4648, upper case, no padding on output; padding and case ignored on input).
public enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    public static func encode(_ bytes: [UInt8], padding: Bool = false) -> String {
        var out = [UInt8]()
        var buffer = 0
        var bits = 0
        for b in bytes {
            buffer = (buffer << 8) | Int(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[(buffer >> (bits - 5)) & 31])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 31]) }
        if padding { while out.count % 8 != 0 { out.append(UInt8(ascii: "=")) } }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var out = [UInt8]()
        var buffer = 0
        var bits = 0
        for c in s.utf8 where c != UInt8(ascii: "=") && c != UInt8(ascii: " ") {
            let u = (c >= 97 && c <= 122) ? c - 32 : c
            guard let v = alphabet.firstIndex(of: u) else { return nil }
            buffer = (buffer << 5) | v
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> (bits - 8)) & 0xFF))
                bits -= 8
            }
            buffer &= (1 << bits) - 1
        }
        return out
    }
}

/// base64url without padding (RFC 4648 §5).
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var i = 0
        while i + 3 <= bytes.count {
            let n = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            out += [table[n >> 18 & 63], table[n >> 12 & 63], table[n >> 6 & 63], table[n & 63]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = Int(bytes[i]) << 16
            out += [table[n >> 18 & 63], table[n >> 12 & 63]]
        } else if rest == 2 {
            let n = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8
            out += [table[n >> 18 & 63], table[n >> 12 & 63], table[n >> 6 & 63]]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ s: String) -> [UInt8]? {
        var vals = [UInt8]()
        for c in s.utf8 {
            switch c {
            case 65...90: vals.append(c - 65)
            case 97...122: vals.append(c - 71)
            case 48...57: vals.append(c + 4)
            case 45, 43: vals.append(62)
            case 95, 47: vals.append(63)
            case 61: continue
            default: return nil
            }
        }
        if vals.count % 4 == 1 { return nil }
        var out = [UInt8]()
        var i = 0
        while i < vals.count {
            let chunk = vals[i..<min(i + 4, vals.count)]
            var n = 0
            for (j, v) in chunk.enumerated() { n |= Int(v) << (18 - 6 * j) }
            out.append(UInt8(n >> 16 & 0xFF))
            if chunk.count > 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if chunk.count > 3 { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }
}

/// Time-based one-time passwords (RFC 6238 over RFC 4226), SHA-1, 6 digits, 30 s by default.
public enum TOTP {
    public static func code(secret: [UInt8], time: Double, step: Int = 30, digits: Int = 6, t0: Int = 0) -> String {
        hotp(secret: secret, counter: UInt64((Int(time.rounded(.down)) - t0) / step), digits: digits)
    }

    public static func counter(time: Double, step: Int = 30) -> UInt64 { UInt64(Int(time.rounded(.down)) / step) }

    public static func hotp(secret: [UInt8], counter: UInt64, digits: Int = 6) -> String {
        var msg = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { msg[7 - i] = UInt8((counter >> (8 * UInt64(i))) & 0xFF) }
        let h = Crypto.hmacSHA1(key: secret, data: msg)
        let offset = Int(h[19] & 0x0F)
        let bin =
            (Int(h[offset]) & 0x7F) << 24 | Int(h[offset + 1]) << 16 | Int(h[offset + 2]) << 8 | Int(h[offset + 3])
        var mod = 1
        for _ in 0..<digits { mod *= 10 }
        let s = String(bin % mod)
        return String(repeating: "0", count: digits - s.count) + s
    }
}
