import KilnHTTP

/// RFC 8785 JSON Canonicalization Scheme for the values Kiln signs (objects, arrays, strings,
/// integers, booleans, null — no floating point): object keys sorted by their UTF-16 code units,
/// no whitespace, strings escaped exactly as ECMAScript's JSON.stringify does.
public enum CanonicalJSON {
    public struct Unsupported: Error, CustomStringConvertible { public let description: String }

    public static func bytes(_ v: JSONValue) throws -> [UInt8] {
        var out = ""
        try write(v, &out)
        return Array(out.utf8)
    }

    static func write(_ v: JSONValue, _ out: inout String) throws {
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let n): out += String(n)
        case .double: throw Unsupported(description: "floating-point numbers are not used in signed documents")
        case .string(let s): string(s, &out)
        case .array(let a):
            out += "["
            for (i, e) in a.enumerated() {
                if i > 0 { out += "," }
                try write(e, &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, k) in o.keys.sorted(by: { Array($0.utf16).lexicographicallyPrecedes(Array($1.utf16)) }).enumerated()
            {
                if i > 0 { out += "," }
                string(k, &out)
                out += ":"
                try write(o[k]!, &out)
            }
            out += "}"
        }
    }

    static func string(_ s: String, _ out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u.value {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0..<0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}
