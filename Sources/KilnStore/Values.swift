import Foundation

/// A value SQLite stores: NULL, INTEGER, REAL, TEXT or BLOB.
public enum SQLValue: Sendable, Equatable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// Anything that binds to a statement parameter.
public protocol SQLBindable: Sendable { var sqlValue: SQLValue { get } }

extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .integer(self) } }
extension Int32: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .real(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .integer(self ? 1 : 0) } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Substring: SQLBindable { public var sqlValue: SQLValue { .text(String(self)) } }
extension Array: SQLBindable where Element == UInt8 { public var sqlValue: SQLValue { .blob(self) } }
extension Optional: SQLBindable where Wrapped: SQLBindable { public var sqlValue: SQLValue { self?.sqlValue ?? .null } }
/// Dates are stored as integer milliseconds since 1970 (portable, sortable).
extension Date: SQLBindable {
    public var sqlValue: SQLValue { .integer(Int64((timeIntervalSince1970 * 1000).rounded())) }
}

/// One result row; columns by name or position, with typed accessors.
public struct Row: Sendable {
    public let columns: [String]
    public let values: [SQLValue]

    public subscript(_ name: String) -> SQLValue {
        guard let i = columns.firstIndex(of: name) else { return .null }
        return values[i]
    }
    public subscript(_ index: Int) -> SQLValue { values[index] }

    public func int(_ name: String) -> Int? {
        switch self[name] {
        case .integer(let v): Int(v)
        case .real(let d): Int(d)
        case .text(let s): Int(s)
        default: nil
        }
    }
    public func int64(_ name: String) -> Int64? {
        switch self[name] {
        case .integer(let v): v
        case .real(let d): Int64(d)
        default: nil
        }
    }
    public func double(_ name: String) -> Double? {
        switch self[name] {
        case .real(let d): d
        case .integer(let v): Double(v)
        default: nil
        }
    }
    public func string(_ name: String) -> String? {
        switch self[name] {
        case .text(let s): s
        case .integer(let v): String(v)
        case .real(let d): String(d)
        default: nil
        }
    }
    public func bool(_ name: String) -> Bool? { int(name).map { $0 != 0 } }
    public func blob(_ name: String) -> [UInt8]? {
        switch self[name] {
        case .blob(let b): b
        case .text(let s): Array(s.utf8)
        default: nil
        }
    }
    public func date(_ name: String) -> Date? { int64(name).map { Date(timeIntervalSince1970: Double($0) / 1000) } }
}

/// A failure from the database, with SQLite's result code (PostgreSQL's errors carry the nearest
/// SQLite code and their SQLSTATE); the SQL text is kept for server-side logs only.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public let sql: String?
    /// PostgreSQL's error class and condition ("23505"); nil from SQLite.
    public let sqlstate: String?

    public init(code: Int32, message: String, sql: String?, sqlstate: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
        self.sqlstate = sqlstate
    }

    /// UNIQUE, FOREIGN KEY, NOT NULL or CHECK constraint.
    public var isConstraintViolation: Bool { code & 0xFF == 19 }
    public var isUniqueViolation: Bool { code == 2067 || code == 1555 }
    /// Another writer was in the way (SQLite busy/locked; PostgreSQL serialization failure or
    /// deadlock): running the transaction again may succeed.
    public var isBusy: Bool { code & 0xFF == 5 || code & 0xFF == 6 }
    /// The database could not be reached (PostgreSQL connection lost or refused).
    public var isUnavailable: Bool { code == 14 && sqlstate != nil }
    public var description: String {
        (sqlstate == nil ? "SQLite error \(code): " : "PostgreSQL error \(sqlstate!): ") + message
            + (sql.map { " [\($0)]" } ?? "")
    }

    /// A PostgreSQL error as the store reports it: SQLSTATE 23505 reads as SQLite's UNIQUE
    /// constraint (2067), other class-23 states as a constraint (19), 40001/40P01 as busy (5).
    init(_ e: PostgresError, sql: String?) {
        let state = e.sqlstate ?? "08006"
        let code: Int32 =
            switch state {
            case "23505": 2067
            case _ where state.hasPrefix("23"): 19
            // 42P18/42P08: a parameter the server could not type; the statement is typed on the retry.
            case "40001", "40P01", "55P03", "42P18", "42P08": 5
            case _ where e.isConnectionLoss || state.hasPrefix("08"): 14
            default: 1
            }
        self.init(code: code, message: e.description, sql: sql, sqlstate: state)
    }

    static func mapping<T>(_ sql: String?, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as PostgresError { throw StoreError(e, sql: sql) }
    }
}
