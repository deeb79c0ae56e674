import CSQLite
import Dispatch
import Foundation
import Synchronization

/// The SQLite store: one serialised writer (every write in `BEGIN IMMEDIATE`) and a pool of
/// readers (WAL lets them read while the writer writes). Blocking SQLite calls run on the store's
/// own threads, never on the caller's task executor.
public final class Database: @unchecked Sendable {
    public let path: String
    private let writer: Connection
    private let writerQueue = DispatchQueue(label: "kiln.store.writer")
    private let readers: Mutex<[Connection]>
    private let readerSlots: DispatchSemaphore
    private let readerQueue = DispatchQueue(label: "kiln.store.readers", attributes: .concurrent)
    public let readerCount: Int
    private let counters = Mutex<(writes: Int, reads: Int, busyReaders: Int)>((0, 0, 0))

    public init(path: String, readers readerCount: Int = 4) throws {
        self.path = path
        writer = try Connection(path: path, readOnly: false)
        var pool: [Connection] = []
        for _ in 0..<max(1, readerCount) { pool.append(try Connection(path: path, readOnly: true)) }
        readers = Mutex(pool)
        readerSlots = DispatchSemaphore(value: pool.count)
        self.readerCount = pool.count
    }

    /// Pool figures for /metrics.
    public var poolStats: (readers: Int, busyReaders: Int, writes: Int, reads: Int) {
        counters.withLock { (readerCount, $0.busyReaders, $0.writes, $0.reads) }
    }

    // MARK: Synchronous (start-up, CLI, tests)

    /// Runs `body` in a write transaction (`BEGIN IMMEDIATE`); rolls back when it throws.
    public func writeSync<T>(_ body: (Transaction) throws -> T) throws -> T {
        try writerQueue.sync { try writeOnQueue(body) }
    }

    /// Runs `body` on a reader inside a read transaction (one consistent snapshot).
    public func readSync<T>(_ body: (Transaction) throws -> T) throws -> T {
        readerSlots.wait()
        let conn = readers.withLock { $0.removeLast() }
        counters.withLock {
            $0.reads += 1
            $0.busyReaders += 1
        }
        defer {
            readers.withLock { $0.append(conn) }
            counters.withLock { $0.busyReaders -= 1 }
            readerSlots.signal()
        }
        try conn.execute("BEGIN")
        defer { try? conn.execute("COMMIT") }
        return try body(Transaction(connection: conn))
    }

    // MARK: Async (handlers)

    public func write<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            writerQueue.async {
                c.resume(with: Result { try self.writeOnQueue(body) })
            }
        }
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            readerQueue.async { c.resume(with: Result { try self.readSync(body) }) }
        }
    }

    /// Runs on `writerQueue` only.
    private func writeOnQueue<T>(_ body: (Transaction) throws -> T) throws -> T {
        counters.withLock { $0.writes += 1 }
        try writer.execute("BEGIN IMMEDIATE")
        do {
            let result = try body(Transaction(connection: writer))
            try writer.execute("COMMIT")
            return result
        } catch {
            try? writer.execute("ROLLBACK")
            throw error
        }
    }

    // MARK: Migrations

    /// Applies the migrations not yet recorded in `schema_migrations`, per module in version
    /// order, each in its own transaction. Refuses a database a newer binary has migrated.
    @discardableResult
    public func migrate(_ migrations: [Migration]) throws -> [Migration] {
        try writeSync { tx in
            try tx.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    module TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL,
                    PRIMARY KEY (module, version))
                """)
        }
        try Migration.validate(migrations)
        let applied = try appliedVersions()
        let known = Dictionary(grouping: migrations, by: \.module).mapValues { $0.map(\.version).max() ?? 0 }
        for (module, version) in applied where version > (known[module] ?? 0) {
            throw StoreError(
                code: SQLITE_ERROR,
                message: "the database has \(module) migration \(version), newer than this binary knows; upgrade kiln",
                sql: nil)
        }
        let pending = try self.pending(migrations)
        for m in pending {
            try writeSync { tx in
                try tx.execute(m.sql)
                try tx.run(
                    "INSERT INTO schema_migrations (module, version, name, applied_at) VALUES (?, ?, ?, ?)",
                    m.module, m.version, m.name, Date())
            }
        }
        return pending
    }

    /// The highest applied version per module.
    public func appliedVersions() throws -> [String: Int] {
        let rows = try writeSync { tx in
            try tx.query("SELECT module, MAX(version) AS v FROM schema_migrations GROUP BY module")
        }
        var out: [String: Int] = [:]
        for r in rows { out[r.string("module") ?? ""] = r.int("v") ?? 0 }
        return out
    }

    /// Migrations not yet applied, in order.
    public func pending(_ migrations: [Migration]) throws -> [Migration] {
        let exists = try readSync { tx in
            try tx.first("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'") != nil
        }
        guard exists else { return migrations.sorted { ($0.module, $0.version) < ($1.module, $1.version) } }
        let applied = try readSync { tx in try tx.query("SELECT module, version FROM schema_migrations") }
        let done = Set(applied.map { "\($0.string("module") ?? "")#\($0.int("version") ?? 0)" })
        return migrations.filter { !done.contains("\($0.module)#\($0.version)") }
            .sorted { ($0.module, $0.version) < ($1.module, $1.version) }
    }

    // MARK: Backup

    /// Online backup to `destination` with `sqlite3_backup_*` (consistent even while writes continue).
    public func backup(to destination: String) throws {
        var dest: OpaquePointer?
        guard sqlite3_open_v2(destination, &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK,
            let dest
        else {
            if let dest { sqlite3_close_v2(dest) }
            throw StoreError(code: SQLITE_CANTOPEN, message: "cannot open backup destination \(destination)", sql: nil)
        }
        defer { sqlite3_close_v2(dest) }
        try writerQueue.sync {
            guard let b = sqlite3_backup_init(dest, "main", writer.db, "main") else {
                throw StoreError(code: sqlite3_errcode(dest), message: String(cString: sqlite3_errmsg(dest)), sql: nil)
            }
            let rc = sqlite3_backup_step(b, -1)
            sqlite3_backup_finish(b)
            guard rc == SQLITE_DONE else { throw StoreError(code: rc, message: "backup failed", sql: nil) }
        }
    }

    /// SQLite's library version.
    public static var sqliteVersion: String { String(cString: sqlite3_libversion()) }
}

/// One schema change of one module. Versions start at 1 and increase by one.
public struct Migration: Sendable, Equatable {
    public let module: String
    public let version: Int
    public let name: String
    public let sql: String
    public init(module: String, version: Int, name: String, sql: String) {
        self.module = module
        self.version = version
        self.name = name
        self.sql = sql
    }

    static func validate(_ ms: [Migration]) throws {
        for (module, list) in Dictionary(grouping: ms, by: \.module) {
            let versions = list.map(\.version).sorted()
            guard versions == Array(1...max(1, versions.count)) || versions.isEmpty else {
                throw StoreError(
                    code: SQLITE_ERROR, message: "migrations of \(module) must be numbered 1, 2, 3… without gaps",
                    sql: nil)
            }
        }
    }
}
