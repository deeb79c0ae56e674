import Foundation

/// Replaces secret values in output with `[secret:NAME]`: the value itself, its base64 (standard and
/// URL-safe, padding aside) and its URL-encoded forms. Used on everything a job, terminal or agent
/// produces before it is stored, streamed, or sent to a model.
public struct Redactor: Sendable {
    struct Pattern: Sendable {
        let bytes: [UInt8]
        let label: [UInt8]
    }
    let patterns: [Pattern]
    /// Patterns by their first byte, longest first (a value wins over a shorter form it contains).
    let byFirst: [UInt8: [Pattern]]

    public init(_ secrets: [SecretValue]) {
        var seen = Set<[UInt8]>()
        var list: [Pattern] = []
        for s in secrets where !s.value.isEmpty {
            let label = Array("[secret:\(s.name)]".utf8)
            for form in Self.forms(s.value) where !form.isEmpty && seen.insert(form).inserted {
                list.append(Pattern(bytes: form, label: label))
            }
        }
        list.sort { $0.bytes.count > $1.bytes.count }
        patterns = list
        byFirst = Dictionary(grouping: list, by: { $0.bytes[0] })
    }

    public var isEmpty: Bool { patterns.isEmpty }

    static func forms(_ value: String) -> [[UInt8]] {
        let raw = Array(value.utf8)
        let b64 = Data(raw).base64EncodedString().trimmingCharacters(in: CharacterSet(charactersIn: "="))
        let b64url = b64.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        let unreserved = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8))
        var upper = ""
        var lower = ""
        for b in raw {
            if unreserved.contains(b) {
                upper.append(Character(UnicodeScalar(b)))
                lower.append(Character(UnicodeScalar(b)))
            } else {
                upper += String(format: "%%%02X", b)
                lower += String(format: "%%%02x", b)
            }
        }
        // A space is also written as + in form encoding.
        let form = upper.replacingOccurrences(of: "%20", with: "+")
        return [raw, Array(b64.utf8), Array(b64url.utf8), Array(upper.utf8), Array(lower.utf8), Array(form.utf8)]
    }

    public func redact(_ text: String) -> String {
        isEmpty ? text : String(decoding: redact(Array(text.utf8)), as: UTF8.self)
    }

    public func redact(_ bytes: [UInt8]) -> [UInt8] {
        if isEmpty { return bytes }
        var s = StreamRedactor(self)
        return s.feed(bytes) + s.finish()
    }

    /// The full match at `i`, if any.
    func match(_ b: [UInt8], at i: Int) -> Pattern? {
        guard let candidates = byFirst[b[i]] else { return nil }
        for p in candidates where b.count - i >= p.bytes.count {
            if b[i..<(i + p.bytes.count)].elementsEqual(p.bytes) { return p }
        }
        return nil
    }

    /// Whether the bytes from `i` to the end are the start of some pattern (it may complete later).
    func partial(_ b: [UInt8], at i: Int) -> Bool {
        guard let candidates = byFirst[b[i]] else { return false }
        let rest = b.count - i
        return candidates.contains { p in p.bytes.count > rest && p.bytes[0..<rest].elementsEqual(b[i...]) }
    }
}

/// Redaction over a stream that arrives in pieces: a piece that ends with the beginning of a secret
/// holds those bytes back until the next piece shows whether the secret completes.
public struct StreamRedactor: Sendable {
    let redactor: Redactor
    var held: [UInt8] = []

    public init(_ redactor: Redactor) { self.redactor = redactor }

    public mutating func feed(_ chunk: [UInt8]) -> [UInt8] {
        if redactor.isEmpty { return chunk }
        let b = held + chunk
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            if let p = redactor.match(b, at: i) {
                out += p.label
                i += p.bytes.count
            } else if redactor.partial(b, at: i) {
                break
            } else {
                out.append(b[i])
                i += 1
            }
        }
        held = Array(b[i...])
        return out
    }

    /// What is still held back once the stream has ended (an unfinished prefix is not a secret).
    public mutating func finish() -> [UInt8] {
        defer { held = [] }
        return held
    }
}
