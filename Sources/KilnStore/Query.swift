import Foundation

/// A SELECT built from optional filters: each condition is added only when its value is there,
/// with its arguments beside it, so lists with filters are written once, not spelt out per store.
public struct Query: Sendable {
    public private(set) var sql: String
    public private(set) var arguments: [any SQLBindable]

    /// `base` is the statement up to its WHERE clause (`SELECT … FROM t WHERE ws_id = ?`).
    public init(_ base: String, _ arguments: any SQLBindable...) {
        sql = base
        self.arguments = arguments
    }

    /// `AND condition` with its arguments.
    public mutating func and(_ condition: String, _ values: any SQLBindable...) {
        sql += " AND " + condition
        arguments += values
    }

    /// `AND condition` when `value` is given (nil: no filter).
    public mutating func and(_ condition: String, ifGiven value: (any SQLBindable)?) {
        guard let value else { return }
        and(condition, value)
    }

    /// Appends the rest of the statement (ORDER BY, LIMIT) and its arguments.
    public mutating func append(_ tail: String, _ values: any SQLBindable...) {
        sql += " " + tail
        arguments += values
    }

    public func rows(_ tx: Transaction) throws -> [Row] { try tx.query(sql, arguments: arguments) }
}
