import Foundation
import Synchronization
import Testing

@testable import KilnStore

/// The PostgreSQL driver against a real server: the test command starts a throwaway PostgreSQL 15
/// (scripts/lib/postgres.sh: SCRAM only, TLS with a CA of its own) and passes its URL in
/// KILN_TEST_PG_URL. Without it (a bare `swift test`) these are skipped; CI always has it.
enum TestPostgres {
    static let env = ProcessInfo.processInfo.environment
    static var url: String? { env["KILN_TEST_PG_URL"] }
    static var available: Bool { url != nil }
    static func config() throws -> PostgresConfig { try PostgresConfig(url: url!) }
    /// Restarts the server (pg_ctl restart -m fast) and waits until it accepts again.
    static func restart() throws {
        // posix_spawn and waitpid: Foundation's Process waits for ever here once the restarted
        // server (a grandchild) keeps running. The shell first closes every descriptor it inherited
        // beyond 2: the restarted server lives on, and would otherwise keep other tests' sockets
        // (opened without close-on-exec) open, so their peers never saw them close.
        var pid: pid_t = 0
        let command =
            #"for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null; "#
            + "exec " + env["KILN_TEST_PG_RESTART"]! + " > /dev/null 2>&1"
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/bash"), strdup("-c"), strdup(command), nil]
        defer { for a in argv { free(a) } }
        #expect(posix_spawn(&pid, "/bin/bash", nil, nil, argv, environ) == 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(status == 0)
    }
}

@Suite(.serialized, .enabled(if: TestPostgres.available, "needs KILN_TEST_PG_URL (scripts/test.sh starts one)"))
struct PostgresDriverTests {
    @Test func scramOverVerifiedTLS() throws {
        let conn = try PostgresConnection(config: try TestPostgres.config())
        #expect(conn.serverVersion.hasPrefix("15"))
        #expect(conn.tlsDescription?.hasPrefix("TLSv1.") == true)
        // The server saw SCRAM (pg_hba allows nothing else for this role) over TLS.
        let r = try conn.query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", [])
        #expect(r.rows.first?.int("ssl") == 1)
    }

    @Test func wrongPasswordIsRefused() throws {
        var config = try TestPostgres.config()
        config.password = "not-the-password"
        #expect {
            _ = try PostgresConnection(config: config)
        } throws: { e in
            guard case PostgresError.authentication(let m) = e else { return false }
            return m.contains("kiln") && !m.contains("not-the-password")
        }
    }

    @Test func md5RoleLogsIn() throws {
        let config = try PostgresConfig(url: TestPostgres.env["KILN_TEST_PG_MD5_URL"]!)
        let conn = try PostgresConnection(config: config)
        #expect(conn.tlsDescription == nil)
        #expect(try conn.query("SELECT current_user AS u", []).rows.first?.string("u") == "kiln_md5")
    }

    @Test func verifyFullChecksTheHostName() throws {
        var config = try TestPostgres.config()
        // The certificate names localhost and 127.0.0.1; the same server under another name fails.
        config.host = "127.0.0.1"
        _ = try PostgresConnection(config: config)
        config.host = "db.elsewhere.example"
        config.hostAddress = "127.0.0.1"
        #expect {
            _ = try PostgresConnection(config: config)
        } throws: { e in
            guard case PostgresError.connection(let m) = e else { return false }
            return m.contains("certificate")
        }
        // verify-ca checks the chain only; a certificate from another CA fails even that.
        config.sslMode = .verifyCA
        _ = try PostgresConnection(config: config)
        config.sslRootCert = "/etc/ssl/certs/ca-certificates.crt"
        #expect(throws: PostgresError.self) { _ = try PostgresConnection(config: config) }
    }

    @Test func typedParametersAndResults() throws {
        let conn = try PostgresConnection(config: try TestPostgres.config())
        try conn.simpleQuery(
            "DROP TABLE IF EXISTS drv_types; CREATE TABLE drv_types (i BIGINT, d DOUBLE PRECISION, t TEXT, b BYTEA)")
        let blob: [UInt8] = [0, 1, 2, 255, 0x5c, 0x78]
        let inserted = try conn.query(
            "INSERT INTO drv_types VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)",
            [.integer(Int64.max), .real(2.5), .text("Grüße, 'quoted' \\"), .blob(blob), .null, .null, .null, .null])
        #expect(inserted.affected == 2)
        let rows = try conn.query("SELECT * FROM drv_types ORDER BY i NULLS LAST", []).rows
        #expect(rows[0].int64("i") == Int64.max)
        #expect(rows[0].double("d") == 2.5)
        #expect(rows[0].string("t") == "Grüße, 'quoted' \\")
        #expect(rows[0].blob("b") == blob)
        #expect(rows[1]["i"] == .null && rows[1]["b"] == .null)
        // A parameter whose type only its value tells (`$1 IS NULL`) works both ways.
        for v: SQLValue in [.null, .text("x")] {
            let r = try conn.query("SELECT count(*) AS n FROM drv_types WHERE $1 IS NULL OR t = $1", [v])
            #expect(r.rows.first?.int("n") == (v == .null ? 2 : 0))
        }
        let agg = try conn.query("SELECT sum(i / 2) AS s, count(*) AS n, true AS yes FROM drv_types", []).rows[0]
        #expect(agg.int64("s") == Int64.max / 2)
        #expect(agg.int("n") == 2 && agg.int("yes") == 1)
    }

    @Test func preparedStatementsAreReused() throws {
        let conn = try PostgresConnection(config: try TestPostgres.config())
        for i in 0..<50 { _ = try conn.query("SELECT $1::bigint + 1 AS n", [.integer(Int64(i))]) }
        let prepared = try conn.query("SELECT count(*) AS n FROM pg_prepared_statements", [])
        // The SELECT above and this one: one server-side statement each, however often used.
        #expect(prepared.rows.first?.int("n") == 2)
    }

    @Test func uniqueViolationCarriesItsSQLState() throws {
        let conn = try PostgresConnection(config: try TestPostgres.config())
        try conn.simpleQuery("DROP TABLE IF EXISTS drv_unique; CREATE TABLE drv_unique (k TEXT PRIMARY KEY)")
        _ = try conn.query("INSERT INTO drv_unique VALUES ($1)", [.text("a")])
        #expect {
            _ = try conn.query("INSERT INTO drv_unique VALUES ($1)", [.text("a")])
        } throws: { ($0 as? PostgresError)?.sqlstate == "23505" }
        // The connection is usable after the error.
        #expect(try conn.query("SELECT count(*) AS n FROM drv_unique", []).rows.first?.int("n") == 1)
    }

    @Test func slowQueryIsCancelledAtItsTimeout() throws {
        let conn = try PostgresConnection(config: try TestPostgres.config())
        #expect {
            _ = try conn.query("SELECT pg_sleep(30)", [], timeout: 0.3)
        } throws: { ($0 as? PostgresError)?.sqlstate == "57014" }
        #expect(!conn.isBroken)
        #expect(try conn.query("SELECT 7 AS n", []).rows.first?.int("n") == 7)
    }

    @Test func poolSurvivesServerRestartWithoutLosingAcknowledgedWrites() throws {
        let pool = PostgresPool(config: try TestPostgres.config(), maxConnections: 4)
        try pool.withConnection {
            try $0.simpleQuery("DROP TABLE IF EXISTS drv_acks; CREATE TABLE drv_acks (n BIGINT PRIMARY KEY)")
        }
        var acknowledged: [Int64] = []
        for n in Int64(0)..<200 {
            if n == 100 { try TestPostgres.restart() }
            // A write either returns (acknowledged) or throws; after the restart the pool drops the
            // dead connections and opens new ones.
            do {
                try pool.withConnection { _ = try $0.query("INSERT INTO drv_acks VALUES ($1)", [.integer(n)]) }
                acknowledged.append(n)
            } catch let e as PostgresError where e.isConnectionLoss {}
        }
        #expect(acknowledged.count >= 199)
        #expect(pool.stats.dropped >= 1)
        let stored = try pool.withConnection { try $0.query("SELECT n FROM drv_acks ORDER BY n", []) }
        #expect(stored.rows.compactMap { $0.int64("n") } == acknowledged)
    }

    @Test func listenerCatchesUpAfterReconnect() throws {
        let config = try TestPostgres.config()
        let pool = PostgresPool(config: config, maxConnections: 2)
        try pool.withConnection {
            try $0.simpleQuery("DROP TABLE IF EXISTS drv_events; CREATE TABLE drv_events (id BIGINT PRIMARY KEY)")
        }
        // The follower's pattern: NOTIFY says "look", the table says what; after a reconnect it
        // reads the table from the last id it saw, so an event sent while it was away is not lost.
        let seen = Mutex<[Int64]>([])
        @Sendable func catchUp() {
            let last = seen.withLock { $0.last ?? -1 }
            let rows =
                (try? pool.withConnection {
                    try $0.query("SELECT id FROM drv_events WHERE id > $1 ORDER BY id", [.integer(last)])
                })?.rows ?? []
            seen.withLock { s in for r in rows { if let id = r.int64("id"), id > (s.last ?? -1) { s.append(id) } } }
        }
        let listener = PostgresListener(
            config: config, channels: ["drv_events"], onNotify: { _ in catchUp() }, onReconnect: { catchUp() })
        try listener.start()
        defer { listener.stop() }
        func emit(_ id: Int64) throws {
            try pool.withConnection {
                _ = try $0.query("INSERT INTO drv_events VALUES ($1)", [.integer(id)])
                _ = try $0.query("SELECT pg_notify('drv_events', $1)", [.text(String(id))])
            }
        }
        for id in Int64(1)...5 { try emit(id) }
        try waitUntil { seen.withLock { $0.count } == 5 }
        try TestPostgres.restart()
        // Sent while the listener is still reconnecting: no NOTIFY reaches it, the table does.
        for id in Int64(6)...10 {
            try? emit(id)
        }
        try waitUntil { listener.reconnectCount >= 1 && seen.withLock { $0.count } == 10 }
        for id in Int64(11)...12 { try emit(id) }
        try waitUntil { seen.withLock { $0.count } == 12 }
        #expect(seen.withLock { $0 } == Array(1...12))
    }
}

/// What needs no server: URLs, the SCRAM arithmetic, and how SQL is spelt for PostgreSQL.
@Suite struct PostgresProtocolTests {
    @Test func statementsAreSpeltForPostgres() {
        #expect(
            PostgresDialect.statement("SELECT '?', \"a?\" FROM t WHERE x = ? AND y IS NOT ? -- why?\n AND z = ?")
                == "SELECT '?', \"a?\" FROM t WHERE x = $1 AND y IS DISTINCT FROM $2 -- why?\n AND z = $3")
        #expect(
            PostgresDialect.statement("INSERT OR IGNORE INTO t (a, binary) VALUES (?, ?)")
                == "INSERT INTO t (a, \"binary\") VALUES ($1, $2) ON CONFLICT DO NOTHING")
        #expect(
            PostgresDialect.statement("SELECT 1 WHERE (? IS NULL OR instr(lower(name), ?) > 0)")
                == "SELECT 1 WHERE (CAST($1 AS TEXT) IS NULL OR strpos(lower(name), $2) > 0)")
        let schema = PostgresDialect.schema(
            """
            CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL, b BLOB, r REAL,
                email TEXT NOT NULL UNIQUE COLLATE NOCASE) WITHOUT ROWID;
            CREATE VIRTUAL TABLE f USING fts5(x);
            DROP TABLE old;
            """)
        #expect(schema.contains("n BIGINT NOT NULL, b BYTEA, r DOUBLE PRECISION"))
        #expect(schema.contains("email CITEXT NOT NULL UNIQUE)"))
        #expect(
            !schema.contains("WITHOUT ROWID") && !schema.contains("fts5") && schema.contains("DROP TABLE IF EXISTS old")
        )
        #expect(PostgresDialect.splitStatements("a; 'b;c'; d").count == 3)
    }

    @Test func badURLsAreExplained() throws {
        for (url, needle) in [
            ("mysql://u@h/db", "postgres://"), ("postgres://h/db", "user"), ("postgres://u@h", "database"),
            ("postgres://u@h/db?sslmode=sometimes", "sslmode"), ("postgres://u@h/db?foo=1", "foo"),
        ] {
            #expect {
                _ = try PostgresConfig(url: url)
            } throws: { "\($0)".contains(needle) }
        }
        let c = try? PostgresConfig(url: "postgres://a%40b:p%2Fw@db.example:6543/kiln", password: "env")
        #expect(c?.user == "a@b" && c?.password == "p/w" && c?.port == 6543)
        #expect(c?.redacted.contains("p/w") == false)
        #expect(try PostgresConfig(url: "postgres://a@h/kiln", password: "env").password == "env")
    }

    @Test func scramMatchesRFC7677() throws {
        var client = SCRAMClient(password: "pencil", user: "user", clientNonce: "rOprNGfwEbeRWgbNEkqO")
        #expect(client.clientFirst == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        let final = try client.clientFinal(
            serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        #expect(
            final
                == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        )
        try client.verify(serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        #expect(throws: PostgresError.self) { try client.verify(serverFinal: "v=AAAA") }
    }
}

func waitUntil(_ seconds: Double = 20, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        guard Date() < deadline else {
            Issue.record("condition not met within \(seconds) s")
            return
        }
        Thread.sleep(forTimeInterval: 0.02)
    }
}
