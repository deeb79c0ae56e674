import CSQLite
import Foundation

let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection with its prepared-statement cache. Not thread-safe: the Database hands
/// each connection to one thread at a time.
final class Connection: @unchecked Sendable {
    let db: OpaquePointer
    private var cache: [String: OpaquePointer] = [:]
    static let maxCachedStatements = 256

    init(path: String, readOnly: Bool) throws {
        var handle: OpaquePointer?
        let flags =
            (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_NOMUTEX
            | SQLITE_OPEN_URI
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let handle { sqlite3_close_v2(handle) }
            throw StoreError(code: rc, message: msg, sql: nil)
        }
        db = handle
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, 5000)
        try execute("PRAGMA foreign_keys = ON")
        if !readOnly {
            try execute("PRAGMA journal_mode = WAL")
            try execute("PRAGMA synchronous = FULL")
            // The one writer gets a larger page cache (up to 32 MiB, used only as needed): big
            // transactions (a project's symbols) otherwise spill and re-read index pages constantly.
            try execute("PRAGMA cache_size = -32768")
        }
    }

    deinit {
        for (_, s) in cache { sqlite3_finalize(s) }
        sqlite3_close_v2(db)
    }

    func error(_ rc: Int32, _ sql: String?) -> StoreError {
        StoreError(code: sqlite3_extended_errcode(db), message: String(cString: sqlite3_errmsg(db)), sql: sql)
    }

    /// Runs one or more statements without parameters (DDL, pragmas).
    func execute(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "error"
            sqlite3_free(err)
            throw StoreError(code: sqlite3_extended_errcode(db), message: msg, sql: sql)
        }
    }

    private func prepare(_ sql: String) throws -> OpaquePointer {
        if let s = cache[sql] { return s }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql) }
        if cache.count >= Connection.maxCachedStatements {
            for (_, s) in cache { sqlite3_finalize(s) }
            cache.removeAll()
        }
        cache[sql] = stmt
        return stmt
    }

    private func bind(_ stmt: OpaquePointer, _ args: [SQLValue], _ sql: String) throws {
        let expected = Int(sqlite3_bind_parameter_count(stmt))
        guard expected == args.count else {
            throw StoreError(
                code: SQLITE_RANGE, message: "statement has \(expected) parameters, \(args.count) given", sql: sql)
        }
        for (i, v) in args.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch v {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .integer(let n): rc = sqlite3_bind_int64(stmt, idx, n)
            case .real(let d): rc = sqlite3_bind_double(stmt, idx, d)
            case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, SQLITE_TRANSIENT)
            case .blob(let b):
                rc = b.withUnsafeBytes {
                    sqlite3_bind_blob(
                        stmt, idx, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(b.count), SQLITE_TRANSIENT)
                }
            }
            guard rc == SQLITE_OK else { throw error(rc, sql) }
        }
    }

    func query(_ sql: String, _ args: [SQLValue]) throws -> [Row] {
        let stmt = try prepare(sql)
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        try bind(stmt, args, sql)
        let n = Int(sqlite3_column_count(stmt))
        let names = (0..<n).map { String(cString: sqlite3_column_name(stmt, Int32($0))) }
        var rows: [Row] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            var values: [SQLValue] = []
            values.reserveCapacity(n)
            for c in 0..<Int32(n) {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: values.append(.integer(sqlite3_column_int64(stmt, c)))
                case SQLITE_FLOAT: values.append(.real(sqlite3_column_double(stmt, c)))
                case SQLITE_TEXT: values.append(.text(String(cString: sqlite3_column_text(stmt, c))))
                case SQLITE_BLOB:
                    let len = Int(sqlite3_column_bytes(stmt, c))
                    if len == 0 {
                        values.append(.blob([]))
                    } else {
                        values.append(
                            .blob(Array(UnsafeRawBufferPointer(start: sqlite3_column_blob(stmt, c), count: len))))
                    }
                default: values.append(.null)
                }
            }
            rows.append(Row(columns: names, values: values))
        }
        return rows
    }

    @discardableResult
    func run(_ sql: String, _ args: [SQLValue]) throws -> Int {
        let stmt = try prepare(sql)
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        try bind(stmt, args, sql)
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            if rc == SQLITE_ROW { continue }
            throw error(rc, sql)
        }
        return Int(sqlite3_changes(db))
    }

    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(db) }
}

/// What a transaction body sees: queries and statements on one connection inside BEGIN…COMMIT,
/// SQLite's or PostgreSQL's (whose SQL is rewritten where the two spell it differently).
public struct Transaction {
    enum Link {
        case sqlite(Connection)
        case postgres(PostgresConnection)
    }
    let link: Link

    init(_ link: Link) { self.link = link }

    public var isPostgres: Bool { if case .postgres = link { true } else { false } }

    public func query(_ sql: String, _ args: any SQLBindable...) throws -> [Row] {
        try query(sql, arguments: args)
    }
    public func query(_ sql: String, arguments: [any SQLBindable]) throws -> [Row] {
        switch link {
        case .sqlite(let c): return try c.query(sql, arguments.map(\.sqlValue))
        case .postgres(let c):
            return try StoreError.mapping(sql) {
                try c.query(PostgresDialect.statement(sql), arguments.map(\.sqlValue)).rows
            }
        }
    }
    public func first(_ sql: String, _ args: any SQLBindable...) throws -> Row? {
        try query(sql, arguments: args).first
    }
    /// Runs a statement; returns the number of rows it changed.
    @discardableResult
    public func run(_ sql: String, _ args: any SQLBindable...) throws -> Int {
        try run(sql, arguments: args)
    }
    @discardableResult
    public func run(_ sql: String, arguments: [any SQLBindable]) throws -> Int {
        switch link {
        case .sqlite(let c): return try c.run(sql, arguments.map(\.sqlValue))
        case .postgres(let c):
            return try StoreError.mapping(sql) {
                try c.query(PostgresDialect.statement(sql), arguments.map(\.sqlValue)).affected
            }
        }
    }
    /// Statements without parameters (schema changes: rewritten for PostgreSQL).
    public func execute(_ sql: String) throws {
        switch link {
        case .sqlite(let c): try c.execute(sql)
        case .postgres(let c):
            let schema = PostgresDialect.schema(sql)
            guard !schema.isEmpty else { return }
            try StoreError.mapping(sql) { _ = try c.simpleQuery(schema) }
        }
    }
    public var lastInsertRowID: Int64 {
        switch link {
        case .sqlite(let c): return c.lastInsertRowID
        case .postgres(let c): return (try? c.query("SELECT lastval() AS id", []).rows.first?.int64("id")) ?? 0
        }
    }
}
