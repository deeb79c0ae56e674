/// HTTP header fields: ordered, multi-valued, with case-insensitive names.
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral {
    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var fields: [Field]

    public init() { fields = [] }
    public init(_ pairs: [(String, String)]) { fields = pairs.map { Field(name: $0.0, value: $0.1) } }
    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { Field(name: $0.0, value: $0.1) }
    }

    public var count: Int { fields.count }
    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    /// The first value of `name`, or nil.
    public subscript(name: String) -> String? {
        get {
            for f in fields where asciiCaseInsensitiveEqual(f.name, name) { return f.value }
            return nil
        }
        set {
            remove(name)
            if let v = newValue { fields.append(Field(name: name, value: v)) }
        }
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.compactMap { asciiCaseInsensitiveEqual($0.name, name) ? $0.value : nil }
    }

    /// Every comma-separated element of every `name` field, trimmed (for list-valued headers).
    public func listValues(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",").map { trimOWS(Substring($0)) } }.filter { !$0.isEmpty }
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    /// True when the list-valued header `name` has `token` (case-insensitive).
    public func hasToken(_ name: String, _ token: String) -> Bool {
        listValues(name).contains { asciiCaseInsensitiveEqual($0, token) }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append(Field(name: name, value: value)) }
    public mutating func replace(_ name: String, _ value: String) { self[name] = value }
    public mutating func remove(_ name: String) { fields.removeAll { asciiCaseInsensitiveEqual($0.name, name) } }
}

@inline(__always) func lowerASCII(_ b: UInt8) -> UInt8 { (b >= 65 && b <= 90) ? b | 0x20 : b }

/// ASCII case-insensitive comparison of two strings (header names, tokens).
public func asciiCaseInsensitiveEqual(_ a: String, _ b: String) -> Bool {
    var a = a
    var b = b
    return a.withUTF8 { pa in
        b.withUTF8 { pb in
            guard pa.count == pb.count else { return false }
            for i in 0..<pa.count where lowerASCII(pa[i]) != lowerASCII(pb[i]) { return false }
            return true
        }
    }
}

func trimOWS(_ s: Substring) -> String {
    var u = s.utf8[...]
    while let f = u.first, f == 32 || f == 9 { u = u.dropFirst() }
    while let l = u.last, l == 32 || l == 9 { u = u.dropLast() }
    return String(Substring(u))
}
