import Foundation
import KilnHTTP

/// Checks a JSON value against a JSON Schema (the keywords tool schemas use: type, enum, const,
/// properties, required, additionalProperties, items, lengths, bounds, pattern, allOf/anyOf/oneOf).
/// Unknown keywords (format, $ref, …) are not checked. The first problem is named by its path.
enum SchemaCheck {
    struct Problem: Sendable, Equatable {
        let path: String
        let message: String
    }

    static func problem(_ v: JSONValue, against schema: JSONValue, at path: String = "$") -> Problem? {
        check(v, schema, path, depth: 0)
    }

    static func typeName(_ v: JSONValue) -> String {
        switch v {
        case .null: "null"
        case .bool: "boolean"
        case .int: "integer"
        case .double(let d): d == d.rounded() && abs(d) < 9e15 ? "integer" : "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    static func isType(_ v: JSONValue, _ t: String) -> Bool {
        let actual = typeName(v)
        return t == actual || (t == "number" && actual == "integer")
    }

    static func number(_ v: JSONValue) -> Double? {
        switch v {
        case .int(let n): Double(n)
        case .double(let d): d
        default: nil
        }
    }

    static func check(_ v: JSONValue, _ schema: JSONValue, _ path: String, depth: Int) -> Problem? {
        guard depth < 64 else { return Problem(path: path, message: "nested too deeply") }
        if case .bool(let b) = schema { return b ? nil : Problem(path: path, message: "no value is allowed here") }
        guard case .object(let s) = schema else { return nil }
        switch s["type"] {
        case .string(let t)?:
            if !isType(v, t) { return Problem(path: path, message: "must be \(t), not \(typeName(v))") }
        case .array(let ts)?:
            let names = ts.compactMap { if case .string(let t) = $0 { t } else { nil } }
            if !names.contains(where: { isType(v, $0) }) {
                return Problem(path: path, message: "must be \(names.joined(separator: " or ")), not \(typeName(v))")
            }
        default: break
        }
        if case .array(let options)? = s["enum"], !options.contains(v) {
            return Problem(path: path, message: "must be one of \(JSONValue.array(options).jsonText.prefix(200))")
        }
        if let c = s["const"], c != v { return Problem(path: path, message: "must be \(c.jsonText.prefix(200))") }
        switch v {
        case .string(let str):
            let n = str.count
            if case .int(let m)? = s["minLength"], n < m { return Problem(path: path, message: "is shorter than \(m)") }
            if case .int(let m)? = s["maxLength"], n > m { return Problem(path: path, message: "is longer than \(m)") }
            if case .string(let pattern)? = s["pattern"], pattern.utf8.count <= 1024,
                let re = try? NSRegularExpression(pattern: pattern),
                re.firstMatch(in: str, range: NSRange(str.startIndex..., in: str)) == nil
            {
                return Problem(path: path, message: "does not match \(pattern)")
            }
        case .int, .double:
            let x = number(v) ?? 0
            if let m = s["minimum"].flatMap(number), x < m { return Problem(path: path, message: "is below \(m)") }
            if let m = s["maximum"].flatMap(number), x > m { return Problem(path: path, message: "is above \(m)") }
            if let m = s["exclusiveMinimum"].flatMap(number), x <= m {
                return Problem(path: path, message: "must be above \(m)")
            }
            if let m = s["exclusiveMaximum"].flatMap(number), x >= m {
                return Problem(path: path, message: "must be below \(m)")
            }
        case .array(let items):
            if case .int(let m)? = s["minItems"], items.count < m {
                return Problem(path: path, message: "has fewer than \(m) items")
            }
            if case .int(let m)? = s["maxItems"], items.count > m {
                return Problem(path: path, message: "has more than \(m) items")
            }
            if let itemSchema = s["items"] {
                for (i, item) in items.enumerated() {
                    if let p = check(item, itemSchema, "\(path)[\(i)]", depth: depth + 1) { return p }
                }
            }
        case .object(let o):
            if case .array(let req)? = s["required"] {
                for case .string(let k) in req where o[k] == nil {
                    return Problem(path: "\(path).\(k)", message: "is required")
                }
            }
            let props = s["properties"]?.objectValue ?? [:]
            for k in o.keys.sorted() {
                let value = o[k]!
                if let ps = props[k] {
                    if let p = check(value, ps, "\(path).\(k)", depth: depth + 1) { return p }
                } else if let extra = s["additionalProperties"] {
                    if case .bool(false) = extra {
                        return Problem(path: "\(path).\(k)", message: "is not an allowed property")
                    }
                    if let p = check(value, extra, "\(path).\(k)", depth: depth + 1) { return p }
                }
            }
        default: break
        }
        if case .array(let all)? = s["allOf"] {
            for sub in all { if let p = check(v, sub, path, depth: depth + 1) { return p } }
        }
        if case .array(let any)? = s["anyOf"], !any.contains(where: { check(v, $0, path, depth: depth + 1) == nil }) {
            return Problem(path: path, message: "matches none of the allowed shapes")
        }
        if case .array(let one)? = s["oneOf"] {
            let n = one.filter { check(v, $0, path, depth: depth + 1) == nil }.count
            if n != 1 { return Problem(path: path, message: "must match exactly one allowed shape (matches \(n))") }
        }
        return nil
    }
}
