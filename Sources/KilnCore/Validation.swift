import Foundation
import KilnHTTP

/// Checks for fields several domains accept, so each rule and its message exist once.
public enum Validate {
    /// A mail address as accounts and invitations accept it (trimmed): one `@`, a dotted domain,
    /// nothing a mail header could be split on.
    public static func email(_ raw: String, field: String = "email") throws -> String {
        let e = raw.trimmingCharacters(in: .whitespaces)
        let parts = e.split(separator: "@", omittingEmptySubsequences: false)
        guard e.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
            !parts[1].hasPrefix("."),
            !parts[1].hasSuffix("."),
            !e.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "<" || $0 == ">" || $0 == "," || $0 == ";" }),
            !e.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { throw APIError.validation("\(field) is not a valid address", field: field) }
        return e
    }

    /// A model name: 1 to 200 bytes (nil passes: the default applies).
    public static func model(_ m: String?, field: String = "model") throws {
        if let m, m.isEmpty || m.utf8.count > 200 {
            throw APIError.validation("model must be 1 to 200 characters", field: field)
        }
    }

    /// An agent's model-turn budget: 1 to 100 (nil passes).
    public static func maxSteps(_ n: Int?) throws {
        if let n, !(1...100).contains(n) {
            throw APIError.validation("max_steps must be from 1 to 100", field: "max_steps")
        }
    }

    /// Free text that must say something: not empty (nor only whitespace when `trim`), at most `maxBytes`.
    public static func text(_ s: String, field: String, maxBytes: Int, trim: Bool = true) throws {
        let blank = trim ? s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty : s.isEmpty
        guard !blank, s.utf8.count <= maxBytes else {
            throw APIError.validation("\(field) must be 1 byte to \(maxBytes / 1024) KiB", field: field)
        }
    }

    /// A command line: 1 byte to `maxBytes` of text without NUL.
    public static func command(_ s: String, field: String = "command", maxBytes: Int = 32 * 1024) throws {
        guard !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, s.utf8.count <= maxBytes, !s.utf8.contains(0)
        else {
            throw APIError.validation(
                "\(field) must be 1 byte to \(maxBytes / 1024) KiB of text without NUL", field: field)
        }
    }

    /// A path parameter naming an id with `prefix` (`run`, `job`…): 404 for anything else.
    public static func id(_ id: String, prefix: String, notFound: String) throws {
        guard IDs.isValid(id, prefix: prefix) else { throw APIError.notFound(notFound) }
    }
}

/// A field of a partial update that tells "left out" from "set to null": `PUT` bodies where null
/// clears a value and an absent key keeps it.
public enum Patch<Value: Decodable & Sendable>: Decodable, Sendable {
    case absent
    case null
    case value(Value)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        self = c.decodeNil() ? .null : .value(try c.decode(Value.self))
    }

    /// The value after applying this change to `current`.
    public func applied(to current: Value?) -> Value? {
        switch self {
        case .absent: current
        case .null: nil
        case .value(let v): v
        }
    }
}

extension KeyedDecodingContainer {
    /// A `Patch` field may be absent (synthesized decoders would otherwise require the key).
    public func decode<V>(_ type: Patch<V>.Type, forKey key: Key) throws -> Patch<V> {
        guard contains(key) else { return .absent }
        if try decodeNil(forKey: key) { return .null }
        // decodeIfPresent (not decode): the schema reader then records the field as optional and nullable.
        guard let v = try decodeIfPresent(V.self, forKey: key) else { return .null }
        return .value(v)
    }
}
