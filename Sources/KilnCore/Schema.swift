import Foundation
import KilnHTTP

/// JSON Schema for the OpenAPI document, built in one place: either from the very `Decodable` type a
/// route decodes (`Schema.of(RunInput.self)`, so the document cannot drift from the code), or with
/// this small DSL for bodies a route writes by hand.
public enum Schema {
    public static let string: JSONValue = ["type": "string"]
    public static let integer: JSONValue = ["type": "integer"]
    public static let number: JSONValue = ["type": "number"]
    public static let boolean: JSONValue = ["type": "boolean"]
    public static let dateTime: JSONValue = ["type": "string", "format": "date-time"]
    /// Any JSON value.
    public static let any: JSONValue = .object([:])

    public static func nullable(_ s: JSONValue) -> JSONValue {
        guard case .object(var o) = s else { return s }
        switch o["type"] {
        case .string(let t)?: o["type"] = .array([.string(t), "null"])
        case .array(var ts)? where !ts.contains("null"):
            ts.append("null")
            o["type"] = .array(ts)
        case nil: return s
        default: break
        }
        if case .array(var values)? = o["enum"], !values.contains(.null) {
            values.append(.null)
            o["enum"] = .array(values)
        }
        return .object(o)
    }

    public static func array(_ items: JSONValue) -> JSONValue { ["type": "array", "items": items] }

    public static func enumeration(_ values: [String]) -> JSONValue {
        ["type": "string", "enum": .array(values.map { .string($0) })]
    }

    public static func object(_ properties: [String: JSONValue], required: [String] = []) -> JSONValue {
        var o: [String: JSONValue] = ["type": "object", "properties": .object(properties)]
        if !required.isEmpty { o["required"] = .array(required.sorted().map { .string($0) }) }
        return .object(o)
    }

    /// The list shape every paginated route answers: `{items: [...], next_cursor}`.
    public static func page(_ item: JSONValue) -> JSONValue {
        object(["items": array(item), "next_cursor": nullable(string)], required: ["items", "next_cursor"])
    }

    /// The schema of a `Decodable` type, read by decoding it once with a recording decoder:
    /// non-optional properties are required, optionals nullable, keys in the API's snake_case.
    public static func of<T: Decodable>(_ type: T.Type) -> JSONValue {
        (try? SchemaReader.schema(of: type)) ?? any
    }
}

/// A type that states its own schema (and a sample value the recording decoder can hand back).
public protocol SchemaDescribing {
    static var schema: JSONValue { get }
    static var schemaSample: Self { get }
}

/// A request type whose optional fields the document still lists as required: the caller must send
/// them, though the server can fill in a default (`ws_id`, which the access check defaults).
public protocol SchemaRequiredFields { static var requiredFields: [String] { get } }

/// String enums: their cases become the schema's `enum`.
public protocol SchemaEnum: SchemaDescribing, CaseIterable, RawRepresentable where RawValue == String {}

extension SchemaEnum {
    public static var schema: JSONValue { Schema.enumeration(allCases.map(\.rawValue)) }
    public static var schemaSample: Self { allCases.first! }
}

extension JSONValue: SchemaDescribing {
    public static var schema: JSONValue { Schema.any }
    public static var schemaSample: JSONValue { .null }
}

extension Date: SchemaDescribing {
    public static var schema: JSONValue { Schema.dateTime }
    public static var schemaSample: Date { Date(timeIntervalSince1970: 0) }
}

/// Dictionaries with string keys are objects whose values share one schema.
protocol SchemaDictionary { static var valueSchema: JSONValue { get } }
extension Dictionary: SchemaDictionary where Key == String, Value: Decodable {
    static var valueSchema: JSONValue { Schema.of(Value.self) }
}

/// Walks a type's `init(from:)` with a decoder that answers every request with a placeholder and
/// notes what was asked for.
enum SchemaReader {
    final class Node {
        var schema: JSONValue?
        var properties: [(String, JSONValue, Bool)] = []
        var items: JSONValue?
    }

    struct Unsupported: Error {}

    static func schema<T: Decodable>(of type: T.Type) throws -> JSONValue {
        try value(type).1
    }

    /// A placeholder value of `type` and its schema.
    static func value<T: Decodable>(_ type: T.Type) throws -> (T, JSONValue) {
        if let d = type as? any SchemaDescribing.Type {
            guard let sample = d.schemaSample as? T else { throw Unsupported() }
            return (sample, d.schema)
        }
        if let dict = type as? any SchemaDictionary.Type {
            return (try T(from: Recorder(Node())), ["type": "object", "additionalProperties": dict.valueSchema])
        }
        let node = Node()
        let v = try T(from: Recorder(node))
        if let s = node.schema { return (v, s) }
        if let items = node.items { return (v, Schema.array(items)) }
        var props: [String: JSONValue] = [:]
        var required: [String] = []
        let documented = Set((type as? any SchemaRequiredFields.Type)?.requiredFields ?? [])
        for (name, schema, optional) in node.properties {
            let isRequired = !optional || documented.contains(name)
            props[name] = isRequired ? schema : Schema.nullable(schema)
            if isRequired { required.append(name) }
        }
        return (v, Schema.object(props, required: required))
    }

    /// `projectId` → `project_id`, as the API's decoder maps keys.
    static func wireName(_ key: any CodingKey) -> String {
        var out = ""
        for (i, c) in key.stringValue.enumerated() {
            if c.isUppercase {
                if i > 0 { out += "_" }
                out += c.lowercased()
            } else {
                out.append(c)
            }
        }
        return out
    }

    struct Recorder: Decoder {
        let node: Node
        init(_ node: Node) { self.node = node }
        var codingPath: [any CodingKey] { [] }
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
            KeyedDecodingContainer(Keyed<Key>(node: node))
        }
        func unkeyedContainer() throws -> any UnkeyedDecodingContainer { Unkeyed(node: node) }
        func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(node: node) }
    }

    static func primitive<T>(_ type: T.Type) -> (Any, JSONValue)? {
        switch type {
        case is String.Type: ("", Schema.string)
        case is Bool.Type: (false, Schema.boolean)
        case is Double.Type: (0.0, Schema.number)
        case is Float.Type: (Float(0), Schema.number)
        case is Int.Type: (0, Schema.integer)
        case is Int64.Type: (Int64(0), Schema.integer)
        case is Int32.Type: (Int32(0), Schema.integer)
        case is UInt64.Type: (UInt64(0), Schema.integer)
        case is UInt.Type: (UInt(0), Schema.integer)
        default: nil
        }
    }

    static func decodeAny<T: Decodable>(_ type: T.Type) throws -> (T, JSONValue) {
        if let (v, s) = primitive(type), let t = v as? T { return (t, s) }
        return try value(type)
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let node: Node
        var codingPath: [any CodingKey] { [] }
        var allKeys: [Key] { [] }
        func contains(_ key: Key) -> Bool { true }
        func decodeNil(forKey key: Key) throws -> Bool { false }

        func record<T: Decodable>(_ type: T.Type, _ key: Key, optional: Bool) throws -> T {
            let (v, s) = try decodeAny(type)
            node.properties.append((wireName(key), s, optional))
            return v
        }
        func decode<T: Decodable>(_ t: T.Type, forKey k: Key) throws -> T { try record(t, k, optional: false) }
        func decode(_ t: String.Type, forKey k: Key) throws -> String { try record(t, k, optional: false) }
        func decode(_ t: Bool.Type, forKey k: Key) throws -> Bool { try record(t, k, optional: false) }
        func decode(_ t: Int.Type, forKey k: Key) throws -> Int { try record(t, k, optional: false) }
        func decode(_ t: Int64.Type, forKey k: Key) throws -> Int64 { try record(t, k, optional: false) }
        func decode(_ t: Double.Type, forKey k: Key) throws -> Double { try record(t, k, optional: false) }
        func decodeIfPresent<T: Decodable>(_ t: T.Type, forKey k: Key) throws -> T? { try record(t, k, optional: true) }
        func decodeIfPresent(_ t: String.Type, forKey k: Key) throws -> String? { try record(t, k, optional: true) }
        func decodeIfPresent(_ t: Bool.Type, forKey k: Key) throws -> Bool? { try record(t, k, optional: true) }
        func decodeIfPresent(_ t: Int.Type, forKey k: Key) throws -> Int? { try record(t, k, optional: true) }
        func decodeIfPresent(_ t: Int64.Type, forKey k: Key) throws -> Int64? { try record(t, k, optional: true) }
        func decodeIfPresent(_ t: Double.Type, forKey k: Key) throws -> Double? { try record(t, k, optional: true) }
        func nestedContainer<N: CodingKey>(keyedBy type: N.Type, forKey key: Key) throws -> KeyedDecodingContainer<N> {
            throw Unsupported()
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { throw Unsupported() }
        func superDecoder() throws -> any Decoder { throw Unsupported() }
        func superDecoder(forKey key: Key) throws -> any Decoder { throw Unsupported() }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let node: Node
        var codingPath: [any CodingKey] { [] }
        var count: Int? { 1 }
        var isAtEnd: Bool { node.items != nil }
        var currentIndex: Int { node.items == nil ? 0 : 1 }
        mutating func decodeNil() throws -> Bool { false }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let (v, s) = try decodeAny(type)
            node.items = s
            return v
        }
        mutating func nestedContainer<N: CodingKey>(keyedBy type: N.Type) throws -> KeyedDecodingContainer<N> {
            throw Unsupported()
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { throw Unsupported() }
        mutating func superDecoder() throws -> any Decoder { throw Unsupported() }
    }

    struct Single: SingleValueDecodingContainer {
        let node: Node
        var codingPath: [any CodingKey] { [] }
        func decodeNil() -> Bool { false }
        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let (v, s) = try decodeAny(type)
            node.schema = s
            return v
        }
    }
}
