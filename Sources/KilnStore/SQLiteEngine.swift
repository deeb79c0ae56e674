import CSQLite
import Dispatch
import Foundation
import Synchronization

/// SQLite's side of the store: the one writer connection and the readers.
final class SQLiteEngine: @unchecked Sendable {
    private let writer: Connection
    private let readers: Mutex<[Connection]>
    private let readerSlots: DispatchSemaphore

    init(path: String, readers readerCount: Int) throws {
        writer = try Connection(path: path, readOnly: false)
        var pool: [Connection] = []
        for _ in 0..<max(1, readerCount) { pool.append(try Connection(path: path, readOnly: true)) }
        readers = Mutex(pool)
        readerSlots = DispatchSemaphore(value: pool.count)
    }

    /// On the Database's writer queue only.
    func write<T>(_ body: (Transaction) throws -> T) throws -> T {
        try writer.execute("BEGIN IMMEDIATE")
        do {
            let result = try body(Transaction(.sqlite(writer)))
            try writer.execute("COMMIT")
            return result
        } catch {
            try? writer.execute("ROLLBACK")
            throw error
        }
    }

    func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        readerSlots.wait()
        let conn = readers.withLock { $0.removeLast() }
        defer {
            readers.withLock { $0.append(conn) }
            readerSlots.signal()
        }
        try conn.execute("BEGIN")
        defer { try? conn.execute("COMMIT") }
        return try body(Transaction(.sqlite(conn)))
    }

    /// On the Database's writer queue only.
    func backup(to destination: String) throws {
        var dest: OpaquePointer?
        guard sqlite3_open_v2(destination, &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK,
            let dest
        else {
            if let dest { sqlite3_close_v2(dest) }
            throw StoreError(code: SQLITE_CANTOPEN, message: "cannot open backup destination \(destination)", sql: nil)
        }
        defer { sqlite3_close_v2(dest) }
        guard let b = sqlite3_backup_init(dest, "main", writer.db, "main") else {
            throw StoreError(code: sqlite3_errcode(dest), message: String(cString: sqlite3_errmsg(dest)), sql: nil)
        }
        let rc = sqlite3_backup_step(b, -1)
        sqlite3_backup_finish(b)
        guard rc == SQLITE_DONE else { throw StoreError(code: rc, message: "backup failed", sql: nil) }
    }
}
