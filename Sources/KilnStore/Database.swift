import CSQLite
import Dispatch
import Foundation
import Synchronization

/// The store: SQLite in the data dir (the default), or a PostgreSQL server shared by several
/// instances (`init(postgres:)`). The domains see one interface either way: `read` and `write`
/// run a body in a transaction on a connection of the store's own threads, never on the caller's
/// task executor.
///
/// SQLite: one serialised writer (every write in `BEGIN IMMEDIATE`) and a pool of readers (WAL
/// lets them read while the writer writes). PostgreSQL: writes are serialised per instance too
/// and run SERIALIZABLE, so a body sees what SQLite's single writer gives it even with other
/// instances writing; a serialization failure or deadlock is retried (the body runs again);
/// reads run REPEATABLE READ, one consistent snapshot, on the pool's connections.
public final class Database: @unchecked Sendable {
    public enum Kind: String, Sendable { case sqlite, postgres }
    /// The SQLite file, or the PostgreSQL URL without its password.
    public let path: String
    public let kind: Kind
    private let sqlite: SQLiteEngine?
    let postgres: PostgresEngine?
    private let writerQueue = DispatchQueue(label: "kiln.store.writer")
    private let readerQueue = DispatchQueue(label: "kiln.store.readers", attributes: .concurrent)
    public let readerCount: Int
    private let counters = Mutex<(writes: Int, reads: Int, busyReaders: Int)>((0, 0, 0))

    public init(path: String, readers readerCount: Int = 4) throws {
        self.path = path
        kind = .sqlite
        sqlite = try SQLiteEngine(path: path, readers: readerCount)
        postgres = nil
        self.readerCount = max(1, readerCount)
    }

    /// Connects to PostgreSQL (once, so a wrong URL or password fails here) with a pool of up to
    /// `connections`.
    public init(postgres config: PostgresConfig, connections: Int = 16) throws {
        path = config.redacted
        kind = .postgres
        sqlite = nil
        postgres = try PostgresEngine(config: config, connections: connections)
        readerCount = connections
    }

    /// Follows NOTIFY on `channel` on a connection of its own (PostgreSQL only; nil on SQLite, where
    /// one process owns the store).
    public func listen(
        channel: String, onNotify: @escaping @Sendable (PostgresNotification) -> Void,
        onReconnect: @escaping @Sendable () -> Void
    ) throws -> PostgresListener? {
        guard let postgres else { return nil }
        let listener = PostgresListener(
            config: postgres.pool.config, channels: [channel], onNotify: onNotify, onReconnect: onReconnect)
        try StoreError.mapping(nil) { try listener.start() }
        return listener
    }

    /// PostgreSQL's pool (open, busy, opened and dropped connections); nil on SQLite.
    public var postgresPool: PostgresPool.Stats? { postgres?.pool.stats }

    /// Pool figures for /metrics.
    public var poolStats: (readers: Int, busyReaders: Int, writes: Int, reads: Int) {
        counters.withLock { (readerCount, $0.busyReaders, $0.writes, $0.reads) }
    }

    // MARK: Synchronous (start-up, CLI, tests)

    /// Runs `body` in a write transaction; rolls back when it throws.
    public func writeSync<T>(_ body: (Transaction) throws -> T) throws -> T {
        try writerQueue.sync { try writeOnQueue(body) }
    }

    /// Runs `body` inside a read transaction (one consistent snapshot).
    public func readSync<T>(_ body: (Transaction) throws -> T) throws -> T {
        counters.withLock {
            $0.reads += 1
            $0.busyReaders += 1
        }
        defer { counters.withLock { $0.busyReaders -= 1 } }
        if let postgres { return try postgres.read(body) }
        return try sqlite!.read(body)
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
        if let postgres { return try postgres.write(body) }
        return try sqlite!.write(body)
    }

    // MARK: Migrations

    /// Applies the migrations not yet recorded in `schema_migrations`, per module in version
    /// order, each in its own transaction. Refuses a database a newer binary has migrated.
    @discardableResult
    public func migrate(_ migrations: [Migration]) throws -> [Migration] {
        try Migration.validate(migrations)
        if let postgres { return try postgres.migrate(migrations) }
        try writeSync { tx in try tx.execute(Migration.tableSQL) }
        let applied = try appliedVersions()
        try Migration.refuseNewer(applied, known: migrations)
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
        guard try hasMigrationTable() else { return [:] }
        let rows = try readSync { tx in
            try tx.query("SELECT module, MAX(version) AS v FROM schema_migrations GROUP BY module")
        }
        var out: [String: Int] = [:]
        for r in rows { out[r.string("module") ?? ""] = r.int("v") ?? 0 }
        return out
    }

    /// Migrations not yet applied, in order.
    public func pending(_ migrations: [Migration]) throws -> [Migration] {
        guard try hasMigrationTable() else {
            return migrations.sorted { ($0.module, $0.version) < ($1.module, $1.version) }
        }
        let applied = try readSync { tx in try tx.query("SELECT module, version FROM schema_migrations") }
        let done = Set(applied.map { "\($0.string("module") ?? "")#\($0.int("version") ?? 0)" })
        return migrations.filter { !done.contains("\($0.module)#\($0.version)") }
            .sorted { ($0.module, $0.version) < ($1.module, $1.version) }
    }

    private func hasMigrationTable() throws -> Bool {
        let sql =
            kind == .postgres
            ? """
            SELECT 1 AS x FROM information_schema.tables
            WHERE table_schema = current_schema() AND table_name = 'schema_migrations'
            """
            : "SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        return try readSync { tx in try tx.first(sql) != nil }
    }

    // MARK: Backup

    /// Online backup to `destination` with `sqlite3_backup_*` (consistent even while writes
    /// continue). PostgreSQL has pg_dump for that.
    public func backup(to destination: String) throws {
        guard let sqlite else {
            throw StoreError(
                code: SQLITE_MISUSE, message: "the database is PostgreSQL: back it up with pg_dump", sql: nil)
        }
        try writerQueue.sync { try sqlite.backup(to: destination) }
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
    /// The PostgreSQL form where the automatic one (PostgresDialect.schema) does not fit.
    public let postgres: String?
    public init(module: String, version: Int, name: String, sql: String, postgres: String? = nil) {
        self.module = module
        self.version = version
        self.name = name
        self.sql = sql
        self.postgres = postgres
    }

    static let tableSQL = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            module TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL,
            PRIMARY KEY (module, version))
        """

    /// Refuses a database a newer binary has migrated.
    static func refuseNewer(_ applied: [String: Int], known migrations: [Migration]) throws {
        let known = Dictionary(grouping: migrations, by: \.module).mapValues { $0.map(\.version).max() ?? 0 }
        for (module, version) in applied where version > (known[module] ?? 0) {
            throw StoreError(
                code: SQLITE_ERROR,
                message: "the database has \(module) migration \(version), newer than this binary knows; upgrade kiln",
                sql: nil)
        }
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
