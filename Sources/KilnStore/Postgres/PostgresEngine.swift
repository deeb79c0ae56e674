import Foundation

/// PostgreSQL's side of the store: transactions on the pool's connections, and migrations under
/// an advisory lock so instances starting together migrate once.
final class PostgresEngine: Sendable {
    let pool: PostgresPool
    /// Serialization failures and deadlocks are retried this often before the error goes out.
    static let maxAttempts = 10
    /// pg_advisory_lock key for migrations ("kiln" in ASCII).
    static let migrationLock: Int64 = 0x6B69_6C6E

    init(config: PostgresConfig, connections: Int) throws {
        pool = PostgresPool(config: config, maxConnections: connections)
        // Fail at start-up, with the reason, when the server cannot be reached or refuses us.
        try StoreError.mapping(nil) { try pool.withConnection { _ in } }
    }

    func write<T>(_ body: (Transaction) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL SERIALIZABLE", body)
    }

    func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    /// Runs `body` between `begin` and COMMIT, again when the server reports a serialization
    /// failure or deadlock (the other transaction won; this one saw nothing of its own effects
    /// committed), and again on a fresh connection when the connection was found lost at BEGIN
    /// (nothing was sent). A connection lost later fails the call: whether COMMIT got through is
    /// unknown, so it is not acknowledged.
    private func transaction<T>(_ begin: String, _ body: (Transaction) throws -> T) throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            var begun = false
            do {
                return try pool.withConnection { conn in
                    try StoreError.mapping(begin) { _ = try conn.simpleQuery(begin) }
                    begun = true
                    let result = try body(Transaction(.postgres(conn)))
                    try StoreError.mapping("COMMIT") { _ = try conn.simpleQuery("COMMIT") }
                    return result
                }
            } catch let e as StoreError
                where attempt < PostgresEngine.maxAttempts && (e.isBusy || (!begun && e.isUnavailable))
            {
                // Back off a little, more each time, with jitter so two retrying instances part.
                Thread.sleep(forTimeInterval: Double.random(in: 0.001...0.004) * Double(attempt))
            } catch let e as PostgresError {
                throw StoreError(e, sql: nil)
            }
        }
    }

    /// Applies what is pending, holding the advisory lock on one connection throughout: a second
    /// instance waits, then finds nothing left to do.
    func migrate(_ migrations: [Migration]) throws -> [Migration] {
        try StoreError.mapping(nil) {
            try pool.withConnection { conn in
                _ = try conn.query("SELECT pg_advisory_lock($1)", [.integer(PostgresEngine.migrationLock)])
                defer { _ = try? conn.query("SELECT pg_advisory_unlock($1)", [.integer(PostgresEngine.migrationLock)]) }
                // citext: the columns SQLite compares with NOCASE (e-mail addresses).
                try conn.simpleQuery("CREATE EXTENSION IF NOT EXISTS citext")
                try conn.simpleQuery(PostgresDialect.schema(Migration.tableSQL))
                var applied: [String: Int] = [:]
                var done = Set<String>()
                for r in try conn.query("SELECT module, version FROM schema_migrations", []).rows {
                    let module = r.string("module") ?? ""
                    let version = r.int("version") ?? 0
                    applied[module] = max(applied[module] ?? 0, version)
                    done.insert("\(module)#\(version)")
                }
                try Migration.refuseNewer(applied, known: migrations)
                let pending = migrations.filter { !done.contains("\($0.module)#\($0.version)") }
                    .sorted { ($0.module, $0.version) < ($1.module, $1.version) }
                for m in pending {
                    try conn.simpleQuery("BEGIN")
                    do {
                        let sql = m.postgres ?? PostgresDialect.schema(m.sql)
                        if !sql.isEmpty { try conn.simpleQuery(sql) }
                        _ = try conn.query(
                            "INSERT INTO schema_migrations (module, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                            [.text(m.module), .integer(Int64(m.version)), .text(m.name), Date().sqlValue])
                        try conn.simpleQuery("COMMIT")
                    } catch {
                        _ = try? conn.simpleQuery("ROLLBACK")
                        throw error
                    }
                }
                return pending
            }
        }
    }
}
