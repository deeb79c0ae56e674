import Foundation
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// Opaque identifiers with a type prefix: `usr_3kT9…`. 22 base62 characters (~131 bits of randomness).
public enum IDs {
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    public static func make(_ prefix: String, length: Int = 22) -> String { prefix + "_" + randomBase62(length) }

    /// An id that sorts by creation time (milliseconds, 8 base62 digits, then 16 random ones), for
    /// lists paged newest first by id.
    public static func ordered(_ prefix: String, at now: Date) -> String {
        var ms = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        var digits = [UInt8](repeating: alphabet[0], count: 8)
        for i in stride(from: 7, through: 0, by: -1) {
            digits[i] = alphabet[Int(ms % 62)]
            ms /= 62
        }
        return prefix + "_" + String(decoding: digits, as: UTF8.self) + randomBase62(16)
    }

    /// Uniform base62 from crypto randomness (rejection sampling: no modulo bias).
    public static func randomBase62(_ length: Int) -> String {
        var out = [UInt8]()
        out.reserveCapacity(length)
        while out.count < length {
            for b in Crypto.randomBytes(length * 2) where b < 248 && out.count < length {
                out.append(alphabet[Int(b % 62)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// True when `id` has the prefix and only base62 characters after it.
    public static func isValid(_ id: String, prefix: String) -> Bool {
        guard id.hasPrefix(prefix + "_") else { return false }
        let rest = id.utf8.dropFirst(prefix.utf8.count + 1)
        return !rest.isEmpty && rest.count <= 64 && rest.allSatisfy { alphabet.contains($0) }
    }
}

/// The time source; tests swap in a `ManualClock`.
public protocol Clock: Sendable {
    func now() -> Date
}

public struct SystemClock: Clock {
    public init() {}
    public func now() -> Date { Date() }
}

public final class ManualClock: Clock {
    private let current: Mutex<Date>
    public init(_ start: Date = Date(timeIntervalSince1970: 1_767_225_600)) { current = Mutex(start) }
    public func now() -> Date { current.withLock { $0 } }
    public func advance(by seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
    public func set(_ d: Date) { current.withLock { $0 = d } }
}

/// The shared error type of every domain (the engine's `HTTPError`, rendered as the shared error JSON).
public typealias APIError = HTTPError

extension HTTPError {
    public static func validation(_ message: String, field: String) -> HTTPError { .badRequest(message, field: field) }
    public static func unauthenticated(_ message: String = "Sign in or send an API key") -> HTTPError {
        HTTPError(.unauthorized, message: message)
    }
    public static func conflict(_ message: String) -> HTTPError { HTTPError(.conflict, message: message) }
    public static func missingPermission(_ permission: String) -> HTTPError {
        HTTPError(
            .forbidden, message: "This needs the '\(permission)' permission",
            details: ["permission": .string(permission)])
    }
    /// 503 for a missing optional program, naming it and how to install it.
    public static func programMissing(_ program: String, install: String) -> HTTPError {
        HTTPError(
            .serviceUnavailable, message: "\(program) is not installed on the server; install it with: \(install)",
            details: ["program": .string(program)])
    }
    public static func rateLimited(retryAfter: Int) -> HTTPError {
        HTTPError(
            .tooManyRequests, message: "Too many requests; retry in \(retryAfter) s",
            headers: ["Retry-After": String(retryAfter)])
    }
}

/// Cursor pagination: `?limit=&cursor=` in, `{"items":[…],"next_cursor":…}` out.
public struct PageRequest: Sendable {
    public let limit: Int
    /// The decoded cursor (what the list function put in `Page.next_cursor`), if any.
    public let cursor: String?

    public static let defaultLimit = 50
    public static let maxLimit = 200

    public init(limit: Int = PageRequest.defaultLimit, cursor: String? = nil) {
        self.limit = limit
        self.cursor = cursor
    }

    /// Parses and validates `limit` (1…200) and `cursor` (opaque, from a previous page).
    public init(query: QueryParameters) throws {
        if let l = query["limit"] {
            guard let n = Int(l), (1...PageRequest.maxLimit).contains(n) else {
                throw HTTPError.validation("limit must be an integer from 1 to \(PageRequest.maxLimit)", field: "limit")
            }
            limit = n
        } else {
            limit = PageRequest.defaultLimit
        }
        if let c = query["cursor"], !c.isEmpty {
            guard c.utf8.count <= 512, let raw = Base64URL.decode(c), let s = String(validating: raw, as: UTF8.self)
            else {
                throw HTTPError.validation("cursor is not one this server issued", field: "cursor")
            }
            cursor = s
        } else {
            cursor = nil
        }
    }

    public static func encodeCursor(_ s: String) -> String { Base64URL.encode(Array(s.utf8)) }

    /// What `encodeCursor` encoded (for loops that walk every page of a list themselves).
    public static func decodeCursor(_ c: String) -> String? {
        Base64URL.decode(c).flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// A numeric cursor (an offset or a sequence number), 400 for anything this server did not issue.
    public func numericCursor() throws -> Int {
        guard let c = cursor else { return 0 }
        guard let n = Int(c), n >= 0 else {
            throw HTTPError.validation("cursor is not one this server issued", field: "cursor")
        }
        return n
    }

    /// Narrows a newest-first `query` to the items after the cursor (a time and an id, as
    /// `timeCursorKey` made it), orders it by (`timeColumn`, `idColumn`) newest first and asks for one
    /// more than the page (`Page(fetched:)` keeps `limit` and makes the next cursor).
    public func newestFirst(_ query: inout Query, timeColumn: String, idColumn: String) throws {
        if let c = cursor {
            let parts = c.split(separator: "|", maxSplits: 1)
            guard parts.count == 2, let ms = Int64(parts[0]) else {
                throw HTTPError.validation("cursor is not one this server issued", field: "cursor")
            }
            query.and("(\(timeColumn) < ? OR (\(timeColumn) = ? AND \(idColumn) < ?))", ms, ms, String(parts[1]))
        }
        query.append("ORDER BY \(timeColumn) DESC, \(idColumn) DESC LIMIT ?", limit + 1)
    }

    /// The position of an item at (`time`, `id`) in such a list (`Page(fetched:)` encodes it).
    public static func timeCursorKey(_ time: Date, id: String) -> String {
        "\(Int64((time.timeIntervalSince1970 * 1000).rounded()))|\(id)"
    }
}

extension JSONValue {
    /// An `Encodable` value as the API writes it (snake_case keys, ISO 8601 dates), as a JSON value.
    public init<T: Encodable>(encoding value: T) throws {
        // A plain decoder: the API's own would rewrite snake_case keys back.
        self = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(value)))
    }
}

extension Page where Item == JSONValue {
    /// A page of JSON values as one JSON value: Kiln's own writer renders it, far faster than
    /// Foundation's encoder walking the same values.
    public var json: JSONValue {
        .object(["items": .array(items), "next_cursor": nextCursor.map { .string($0) } ?? .null])
    }
}

public struct Page<Item: Encodable & Sendable>: Encodable, Sendable {
    public let items: [Item]
    public let nextCursor: String?
    public init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }

    /// A list that is never paged (every item at once).
    public init(all items: [Item]) { self.init(items: items, nextCursor: nil) }

    /// From `limit + 1` fetched rows: keeps `limit`, and makes a cursor from the last kept one.
    public init(fetched: [Item], limit: Int, cursorOf: (Item) -> String) {
        if fetched.count > limit {
            items = Array(fetched.prefix(limit))
            nextCursor = PageRequest.encodeCursor(cursorOf(items[items.count - 1]))
        } else {
            items = fetched
            nextCursor = nil
        }
    }

    enum CodingKeys: String, CodingKey { case items, nextCursor = "next_cursor" }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(items, forKey: .items)
        try c.encode(nextCursor, forKey: .nextCursor)
    }
}
