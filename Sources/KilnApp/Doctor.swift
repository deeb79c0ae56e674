import COpenSSL
import Foundation
import KilnCore
import KilnStore

/// `kiln doctor`: what this machine has and what each optional program enables.
public enum Doctor {
    public struct Report {
        public var lines: [String]
        public var ok: Bool
    }

    public static let optionalPrograms: [(name: String, enables: String, install: String)] = [
        ("git", "cloning repositories, git status in the tree, git-aware ignores", "apt-get install -y git"),
        ("ctags", "symbol lookup for more languages (universal-ctags)", "apt-get install -y universal-ctags"),
        ("ssh", "running commands on SSH hosts", "apt-get install -y openssh-client"),
        ("scp", "copying files from SSH hosts", "apt-get install -y openssh-client"),
        (
            "chromium", "browser runs: smoke checks with screenshots (POST /api/browser/run)",
            "apt-get install -y chromium"
        ),
        ("python3", "notebook cells", "apt-get install -y python3"),
    ]

    /// The PostgreSQL server --database-url names: reachable, its version, TLS, connections and,
    /// where this role may read it, replication lag.
    static func postgres(config: Config) -> ([String], Bool) {
        guard let url = config.databaseURL else { return ([], true) }
        let pg: PostgresConfig
        do {
            pg = try PostgresConfig(url: url, password: ProcessInfo.processInfo.environment["KILN_DATABASE_PASSWORD"])
        } catch { return (["FAIL --database-url: \(error)"], false) }
        let conn: PostgresConnection
        do { conn = try PostgresPool.connect(pg) } catch {
            return (["FAIL PostgreSQL at \(pg.redacted): \(error)"], false)
        }
        defer { conn.close() }
        var lines = ["ok   PostgreSQL \(conn.serverVersion) at \(pg.redacted)"]
        if let tls = conn.tlsDescription {
            lines.append("ok   database connection encrypted: \(tls)")
        } else {
            lines.append("WARN database connection not encrypted (sslmode=\(pg.sslMode.rawValue))")
        }
        let stats = try? conn.query(
            """
            SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS here,
                   current_setting('max_connections')::bigint AS max, pg_is_in_recovery() AS standby
            """, [])
        if let r = stats?.rows.first {
            lines.append(
                "ok   connections: \(r.int("here") ?? 0) open to this database, server allows \(r.int("max") ?? 0); "
                    + "each kiln instance opens up to \(config.databasePool)")
            if r.bool("standby") == true {
                lines.append("FAIL the server is a standby (read-only): point --database-url at the primary")
                return (lines, false)
            }
        }
        if let lag = try? conn.query(
            """
            SELECT application_name AS name, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 AS lag
            FROM pg_stat_replication
            """, [])
        {
            if lag.rows.isEmpty { lines.append("--   replication: no standby connected (or not visible to this role)") }
            for r in lag.rows {
                lines.append("ok   replication to \(r.string("name") ?? "?"): replay lag \(r.double("lag") ?? 0) s")
            }
        }
        return (lines, true)
    }

    /// Recomputes the audit chain of the database in the data dir (or at --database-url).
    public static func verifyAudit(config: Config) -> Report {
        let path = config.dataDir + "/kiln.db"
        guard config.databaseURL != nil || FileManager.default.fileExists(atPath: path) else {
            return Report(lines: ["FAIL no database at \(path)"], ok: false)
        }
        do {
            let db = try config.openDatabase(readers: 1)
            let v = try AuditLog.verify(db)
            if let broken = v.brokenAt {
                return Report(
                    lines: [
                        "FAIL audit chain broken at row \(broken): \(v.reason ?? "hash mismatch") (\(v.rows) rows read)"
                    ], ok: false)
            }
            return Report(lines: ["ok   audit chain verified: \(v.rows) rows, every hash matches"], ok: true)
        } catch {
            return Report(lines: ["FAIL cannot read the audit log: \(error)"], ok: false)
        }
    }

    /// The master key's id (a fingerprint, never the key), whether the database was sealed with it,
    /// and a rotation left unfinished.
    static func masterKey(config: Config) -> ([String], Bool) {
        let dataDir = config.dataDir
        let path = dataDir + "/master.key"
        if let env = ProcessInfo.processInfo.environment["KILN_MASTER_KEY"], !env.isEmpty {
            return (["ok   master key from KILN_MASTER_KEY"], true)
        }
        guard FileManager.default.fileExists(atPath: path) else { return ([], true) }
        guard let key = try? MasterKey.read(path) else { return (["FAIL \(path) is damaged"], false) }
        var lines = ["ok   master key id \(MasterKey.fingerprint(key))"]
        var ok = true
        if FileManager.default.fileExists(atPath: path + ".next") {
            lines.append(
                "WARN master.key.next exists: a rotation was interrupted; the next start finishes or undoes it")
        }
        if config.databaseURL != nil || FileManager.default.fileExists(atPath: dataDir + "/kiln.db"),
            let db = try? config.openDatabase(readers: 1),
            let recorded = try? MasterKey.recorded(db), recorded != MasterKey.fingerprint(key)
        {
            lines.append("FAIL the database was sealed with master key \(recorded), not this one")
            ok = false
        }
        return (lines, ok)
    }

    public static func run(config: Config) -> Report {
        var lines: [String] = []
        var ok = true
        lines.append("kiln \(KilnVersion.version)")
        lines.append("ok   SQLite \(Database.sqliteVersion)")
        if config.databaseURL != nil {
            let (dbLines, dbOK) = postgres(config: config)
            lines += dbLines
            ok = ok && dbOK
        }
        lines.append("ok   " + String(cString: OpenSSL_version(OPENSSL_VERSION)))
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: config.dataDir, isDirectory: &isDir) {
            if isDir.boolValue && FileManager.default.isWritableFile(atPath: config.dataDir) {
                lines.append("ok   data dir \(config.dataDir) is writable")
            } else {
                lines.append("FAIL data dir \(config.dataDir) is not a writable directory")
                ok = false
            }
        } else {
            lines.append("ok   data dir \(config.dataDir) will be created on first start")
        }
        let (modeLines, modesOK) = fileModes(dataDir: config.dataDir)
        lines += modeLines
        ok = ok && modesOK
        let (keyLines, keysOK) = masterKey(config: config)
        lines += keyLines
        ok = ok && keysOK
        let sandbox = Sandbox.configured(config, dataDir: config.dataDir)
        if sandbox.isolates {
            lines.append("ok   sandbox: \(sandbox.summary)")
        } else if sandbox.mode == .off {
            lines.append("--   sandbox: \(sandbox.summary)")
        } else {
            lines.append("WARN sandbox: \(sandbox.summary)")
            if sandbox.mode == .bwrap { ok = false }
        }
        for p in optionalPrograms {
            if let path = ProcessRunner.which(p.name) {
                lines.append("ok   \(p.name) (\(path)): \(p.enables)")
            } else {
                lines.append("--   \(p.name) not found: \(p.enables) unavailable (\(p.install))")
            }
        }
        return Report(lines: lines, ok: ok)
    }

    /// The data dir (0700) and the files holding secrets or every record (0600), outbox mails
    /// included: readable by the server's user only.
    static func fileModes(dataDir: String) -> ([String], Bool) {
        var lines: [String] = []
        var ok = true
        func mode(_ path: String) -> mode_t? {
            var st = stat()
            return stat(path, &st) == 0 ? st.st_mode & 0o777 : nil
        }
        if let m = mode(dataDir) {
            if m & 0o077 == 0 {
                lines.append("ok   data dir mode \(String(m, radix: 8))")
            } else {
                lines.append("FAIL data dir mode \(String(m, radix: 8)): others can read it; chmod 700 \(dataDir)")
                ok = false
            }
        }
        let outbox = ((try? FileManager.default.contentsOfDirectory(atPath: dataDir + "/outbox")) ?? []).map {
            "outbox/" + $0
        }
        var checked = 0
        for f in Application.privateFiles + outbox {
            guard let m = mode(dataDir + "/" + f) else { continue }
            checked += 1
            if m & 0o077 != 0 {
                lines.append("FAIL \(f) mode \(String(m, radix: 8)): chmod 600 \(dataDir)/\(f)")
                ok = false
            }
        }
        if ok && checked > 0 { lines.append("ok   \(checked) private files (database, keys, outbox) are mode 600") }
        return (lines, ok)
    }
}
