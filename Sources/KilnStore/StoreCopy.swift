import Foundation
import KilnCrypto

/// Moving a whole store between SQLite and PostgreSQL (`kiln export`, `kiln import`): the target is
/// migrated to the same schema first, then every table is copied in foreign-key order, in pages,
/// and compared with the source table by table (row count and an order-independent digest of the
/// rows' values).
public enum StoreCopy {
    public struct Report: Sendable {
        public var tables: [(name: String, rows: Int)] = []
        public var mismatches: [String] = []
    }

    /// The store's tables (not the migrations' bookkeeping, not SQLite's own).
    public static func tables(_ db: Database) throws -> [String] {
        let sql =
            db.kind == .postgres
            ? """
            SELECT table_name AS name FROM information_schema.tables
            WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
            """
            : "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        return try db.readSync { tx in try tx.query(sql) }.compactMap { $0.string("name") }
            .filter { $0 != "schema_migrations" }.sorted()
    }

    /// Tables ordered so each comes after the tables it references (read from the SQLite side,
    /// whose schema both share).
    static func ordered(_ tables: [String], sqlite: Database) throws -> [String] {
        var refs: [String: Set<String>] = [:]
        for t in tables {
            let rows = try sqlite.readSync { tx in
                try tx.query("SELECT \"table\" AS parent FROM pragma_foreign_key_list(?)", t)
            }
            refs[t] = Set(rows.compactMap { $0.string("parent") }).subtracting([t])
        }
        var out: [String] = []
        var placed = Set<String>()
        while out.count < tables.count {
            let ready = tables.filter { !placed.contains($0) && (refs[$0] ?? []).isSubset(of: placed) }
            let next = ready.isEmpty ? tables.filter { !placed.contains($0) } : ready
            for t in next {
                out.append(t)
                placed.insert(t)
            }
        }
        return out
    }

    /// Copies every table of `source` into `target` (migrated, its tables empty) and compares.
    public static func copy(
        from source: Database, to target: Database, progress: (String, Int) -> Void = { _, _ in }
    )
        throws -> Report
    {
        let sourceTables = try tables(source)
        let targetTables = Set(try tables(target))
        let missing = sourceTables.filter { !targetTables.contains($0) }
        guard missing.isEmpty else {
            throw StoreError(
                code: 1, message: "the target lacks tables \(missing.joined(separator: ", ")): migrate it first",
                sql: nil)
        }
        for t in sourceTables {
            let n = try target.readSync { tx in try tx.first("SELECT COUNT(*) AS n FROM \(quoted(t))")?.int("n") ?? 0 }
            guard n == 0 else {
                throw StoreError(
                    code: 1, message: "the target is not empty (\(t) has \(n) rows); copy into a new database", sql: nil
                )
            }
        }
        let order = try ordered(sourceTables, sqlite: source.kind == .sqlite ? source : target)
        var report = Report()
        for t in order {
            let columns = try columnNames(t, in: source)
            let list = columns.map(quoted).joined(separator: ", ")
            let marks = Array(repeating: "?", count: columns.count).joined(separator: ", ")
            let insert = "INSERT INTO \(quoted(t)) (\(list)) VALUES (\(marks))"
            var copied = 0
            var offset = 0
            while true {
                let page = try source.readSync { tx in
                    try tx.query("SELECT \(list) FROM \(quoted(t)) ORDER BY \(list) LIMIT 2000 OFFSET \(offset)")
                }
                if page.isEmpty { break }
                try target.writeSync { tx in
                    for r in page { try tx.run(insert, arguments: r.values) }
                }
                copied += page.count
                offset += page.count
                progress(t, copied)
                if page.count < 2000 { break }
            }
            report.tables.append((t, copied))
        }
        for t in order {
            let a = try digest(t, in: source)
            let b = try digest(t, in: target)
            if a != b { report.mismatches.append("\(t): \(a.rows) rows → \(b.rows) rows, digests differ") }
        }
        return report
    }

    private static func columnNames(_ table: String, in db: Database) throws -> [String] {
        let sql =
            db.kind == .postgres
            ? """
            SELECT column_name AS name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position
            """
            : "SELECT name FROM pragma_table_info(?) ORDER BY cid"
        return try db.readSync { tx in try tx.query(sql, table) }.compactMap { $0.string("name") }
    }

    /// Row count and a digest independent of row order and of how each engine spells a value.
    public static func digest(_ table: String, in db: Database) throws -> (rows: Int, digest: String) {
        let columns = try columnNames(table, in: db)
        var hashes: [String] = []
        var offset = 0
        let list = columns.map(quoted).joined(separator: ", ")
        while true {
            let page = try db.readSync { tx in
                try tx.query("SELECT \(list) FROM \(quoted(table)) ORDER BY \(list) LIMIT 5000 OFFSET \(offset)")
            }
            for r in page {
                var bytes: [UInt8] = []
                for v in r.values {
                    switch v {
                    case .null: bytes += [0]
                    case .integer(let n): bytes += [1] + Array(String(n).utf8)
                    case .real(let d):
                        let whole = d == d.rounded() && abs(d) < 9e15
                        bytes += whole ? [1] + Array(String(Int64(d)).utf8) : [2] + Array("\(d)".utf8)
                    case .text(let s): bytes += [3] + Array(s.utf8)
                    case .blob(let b): bytes += [4] + b
                    }
                    bytes += [0xFF]
                }
                hashes.append(Crypto.sha256Hex(bytes))
            }
            offset += page.count
            if page.count < 5000 { break }
        }
        return (hashes.count, Crypto.sha256Hex(Array(hashes.sorted().joined().utf8)))
    }

    static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
}
