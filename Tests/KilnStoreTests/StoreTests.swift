import Foundation
import Testing

@testable import KilnStore

func tempDB() throws -> (Database, String) {
    let dir = NSTemporaryDirectory() + "kiln-store-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return (try Database(path: dir + "/kiln.db", readers: 2), dir)
}

@Suite struct StoreTests {
    let v1 = Migration(
        module: "notes", version: 1, name: "create notes",
        sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL UNIQUE, body BLOB, created_at INTEGER)")
    let v2 = Migration(
        module: "notes", version: 2, name: "add pinned",
        sql:
            "ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0; CREATE INDEX notes_pinned ON notes(pinned)"
    )

    @Test func pragmasAreSet() throws {
        let (db, _) = try tempDB()
        let mode = try db.writeSync { try $0.first("PRAGMA journal_mode")?.string("journal_mode") }
        #expect(mode == "wal")
        #expect(try db.writeSync { try $0.first("PRAGMA foreign_keys")?.int("foreign_keys") } == 1)
        #expect(try db.writeSync { try $0.first("PRAGMA synchronous")?.int("synchronous") } == 2)
    }

    @Test func typedBindingsAndRows() throws {
        let (db, _) = try tempDB()
        try db.migrate([v1])
        let now = Date(timeIntervalSince1970: 1_700_000_000.123)
        try db.writeSync { tx in
            try tx.run(
                "INSERT INTO notes (title, body, created_at) VALUES (?, ?, ?)", "héllo", [UInt8]([0, 1, 255]), now)
            try tx.run(
                "INSERT INTO notes (title, body, created_at) VALUES (?, ?, ?)", "second", Optional<[UInt8]>.none, now)
        }
        let rows = try db.readSync { try $0.query("SELECT * FROM notes ORDER BY id") }
        #expect(rows.count == 2)
        #expect(rows[0].string("title") == "héllo")
        #expect(rows[0].blob("body") == [0, 1, 255])
        #expect(rows[0].date("created_at")?.timeIntervalSince1970 == 1_700_000_000.123)
        #expect(rows[1]["body"] == .null)
        #expect(rows[1].int("id") == 2)
    }

    @Test func failedTransactionRollsBackEverything() async throws {
        let (db, _) = try tempDB()
        try db.migrate([v1])
        do {
            try await db.write { tx in
                try tx.run("INSERT INTO notes (title) VALUES (?)", "a")
                try tx.run("INSERT INTO notes (title) VALUES (?)", "a")  // UNIQUE violation
            }
            Issue.record("expected a constraint error")
        } catch let e as StoreError {
            #expect(e.isUniqueViolation)
        }
        #expect(try await db.read { try $0.query("SELECT COUNT(*) AS n FROM notes")[0].int("n") } == 0)
    }

    @Test func concurrentWritesAreSerialisedAndReadsSeeCommittedData() async throws {
        let (db, _) = try tempDB()
        try db.migrate([v1])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask { _ = try await db.write { try $0.run("INSERT INTO notes (title) VALUES (?)", "n\(i)") } }
                if i % 10 == 0 {
                    group.addTask { _ = try await db.read { try $0.query("SELECT COUNT(*) AS n FROM notes") } }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await db.read { try $0.first("SELECT COUNT(*) AS n FROM notes")?.int("n") } == 200)
    }

    @Test func migrationsUpgradeAnOldSchemaAndKeepItsData() throws {
        let (db, dir) = try tempDB()
        // The old binary knew only v1 and wrote data.
        #expect(try db.migrate([v1]).count == 1)
        try db.writeSync { tx in
            for i in 0..<50 {
                try tx.run(
                    "INSERT INTO notes (title, body) VALUES (?, ?)", "t\(i)", [UInt8](repeating: UInt8(i), count: 10))
            }
        }
        // The new binary upgrades.
        let reopened = try Database(path: dir + "/kiln.db")
        #expect(try reopened.pending([v1, v2]) == [v2])
        #expect(try reopened.migrate([v1, v2]) == [v2])
        #expect(try reopened.migrate([v1, v2]).isEmpty)
        let rows = try reopened.readSync { try $0.query("SELECT title, body, pinned FROM notes ORDER BY id") }
        #expect(rows.count == 50)
        #expect(
            rows[49].string("title") == "t49" && rows[49].blob("body") == [UInt8](repeating: 49, count: 10)
                && rows[49].int("pinned") == 0)
        #expect(try reopened.appliedVersions() == ["notes": 2])
        // A binary that knows less refuses to run on the newer database.
        #expect(throws: StoreError.self) { try Database(path: dir + "/kiln.db").migrate([v1]) }
    }

    @Test func failedMigrationLeavesNoTrace() throws {
        let (db, _) = try tempDB()
        try db.migrate([v1])
        let broken = Migration(
            module: "notes", version: 2, name: "broken",
            sql: "ALTER TABLE notes ADD COLUMN x INTEGER; SELECT nope FROM nowhere")
        #expect(throws: StoreError.self) { try db.migrate([v1, broken]) }
        #expect(try db.appliedVersions() == ["notes": 1])
        let cols = try db.readSync { try $0.query("PRAGMA table_info(notes)") }.compactMap { $0.string("name") }
        #expect(!cols.contains("x"))
    }

    @Test func gapsInMigrationNumbersAreRefused() throws {
        let (db, _) = try tempDB()
        #expect(throws: StoreError.self) {
            try db.migrate([Migration(module: "m", version: 2, name: "x", sql: "SELECT 1")])
        }
    }

    @Test func onlineBackupIsAConsistentCopy() throws {
        let (db, dir) = try tempDB()
        try db.migrate([v1])
        try db.writeSync { tx in for i in 0..<100 { try tx.run("INSERT INTO notes (title) VALUES (?)", "b\(i)") } }
        try db.backup(to: dir + "/backup.db")
        let copy = try Database(path: dir + "/backup.db")
        #expect(try copy.readSync { try $0.first("SELECT COUNT(*) AS n FROM notes")?.int("n") } == 100)
        #expect(try copy.appliedVersions() == ["notes": 1])
    }

    @Test func foreignKeysAreEnforced() throws {
        let (db, _) = try tempDB()
        try db.migrate([
            Migration(
                module: "fk", version: 1, name: "x",
                sql: """
                    CREATE TABLE parent (id INTEGER PRIMARY KEY);
                    CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id));
                    """)
        ])
        #expect(throws: StoreError.self) {
            try db.writeSync { try $0.run("INSERT INTO child (parent_id) VALUES (?)", 99) }
        }
    }

    @Test func parameterCountMismatchIsAnError() throws {
        let (db, _) = try tempDB()
        #expect(throws: StoreError.self) { try db.readSync { try $0.query("SELECT ? AS a", 1, 2) } }
    }
}
