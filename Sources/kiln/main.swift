// kiln: the server and its operator commands. The modules contribute their own commands
// (`Application.commands`) and options (`Application.configOptions`).
import Foundation
import KilnApp
import KilnCore
import KilnHTTP
import KilnStore

func out(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }
func err(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

let moduleCommands = Application.commands

let usage = """
    kiln — a self-hosted developer workspace server

    usage: kiln <command> [options]

    commands:
      serve                     run the server (HTTP API, SSE, WebSocket and web UI)
      routes                    print the route table (method, path, permission) and its count
      migrate                   apply pending database migrations and exit
      backup <file>             write an online backup of the database to <file> (SQLite; pg_dump for PostgreSQL)
      export --to URL           copy the SQLite store of the data dir into a new PostgreSQL database
      import --from URL         copy a PostgreSQL store into the data dir's (new) SQLite file
      doctor [--verify-audit]   check SQLite/OpenSSL, the data dir, optional programs (and the audit chain)
    \(moduleCommands.map { c in
        c.usage.count < 26 ? "  " + c.usage.padding(toLength: 26, withPad: " ", startingAt: 0) + c.help
            : "  " + c.usage + "\n" + String(repeating: " ", count: 28) + c.help
    }.joined(separator: "\n"))
      version                   print the version

    Run `kiln <command> --help` for the options of a command.
    """

let serveHelp = """
    usage: kiln serve [options]

    Options (flags > KILN_* environment > defaults):
    \(Config.helpText(Application.configOptions))
    """

@Sendable func parseConfig(_ args: [String]) throws -> (Config, [String]) {
    try Config.load(
        arguments: args, environment: ProcessInfo.processInfo.environment, options: Application.configOptions)
}

func loadConfig(_ args: [String]) -> (Config, [String]) {
    do { return try parseConfig(args) } catch {
        err("kiln: \(error)")
        exit(2)
    }
}

func openApp(_ config: Config, ephemeral: Bool = false) -> Application {
    do { return try Application(config: config, ephemeral: ephemeral) } catch {
        err("kiln: \(error)")
        exit(1)
    }
}

var args = Array(CommandLine.arguments.dropFirst())
let command = args.isEmpty ? "help" : args.removeFirst()
let wantsHelp = args.contains("--help") || args.contains("-h")

switch command {
case "serve":
    if wantsHelp {
        out(serveHelp)
        exit(0)
    }
    let (config, extra) = loadConfig(args)
    guard extra.isEmpty else {
        err("kiln serve: unexpected argument \(extra[0])")
        exit(2)
    }
    ServerLog.setLevel(
        ServerLog.Level(rawValue: ["debug", "info", "warn", "error"].firstIndex(of: config.logLevel) ?? 1) ?? .info)
    let app = openApp(config)
    for m in app.appliedOnStart {
        ServerLog.info(
            "migration applied", ["module": .string(m.module), "version": .int(m.version), "name": .string(m.name)])
    }
    let setupToken = app.ownerSetupToken()
    do {
        try await app.run { port in
            let base = config.baseURL(boundPort: port)
            ServerLog.info(
                "listening", ["url": .string(base), "data_dir": .string(config.dataDir), "tls": .bool(config.isTLS)])
            out("kiln \(KilnVersion.version) listening on \(base)")
            for line in Application.setupNotices(token: setupToken, baseURL: base) { out(line) }
            let sandbox = app.services.sandbox
            if sandbox.isolates {
                ServerLog.info("sandbox", ["mode": .string(sandbox.summary)])
            } else {
                // Loud on purpose: without the sandbox anyone who may run commands can read the data dir.
                ServerLog.warn("sandbox", ["mode": .string(sandbox.summary)])
                out("WARNING: sandbox \(sandbox.summary)")
            }
        }
        exit(0)
    } catch {
        err("kiln: \(error)")
        exit(1)
    }

case "routes":
    if wantsHelp {
        out("usage: kiln routes\n\nPrints every route: method, path, permission; then the count.")
        exit(0)
    }
    let (config, _) = loadConfig(args)
    let app = openApp(config, ephemeral: true)
    let docs = app.routes.docs.sorted { ($0.path, $0.method) < ($1.path, $1.method) }
    let w = docs.map(\.path.count).max() ?? 10
    for d in docs {
        out(
            d.method.padding(toLength: 7, withPad: " ", startingAt: 0) + " "
                + d.path.padding(toLength: w, withPad: " ", startingAt: 0) + "  "
                + d.permission)
    }
    out("\(docs.count) routes")
    try? FileManager.default.removeItem(atPath: app.services.dataDir)

case "migrate":
    if wantsHelp {
        out("usage: kiln migrate [--data-dir DIR]\n\nApplies pending migrations (serve does this on start too).")
        exit(0)
    }
    let (config, _) = loadConfig(args)
    let app = openApp(config)
    if app.appliedOnStart.isEmpty { out("database is up to date") }
    for m in app.appliedOnStart { out("applied \(m.module) \(m.version): \(m.name)") }

case "backup":
    if wantsHelp {
        out(
            "usage: kiln backup <file> [--data-dir DIR]\n\nWrites a consistent copy of the database while the server may be running."
        )
        exit(0)
    }
    let (config, positional) = loadConfig(args)
    guard positional.count == 1 else {
        err("usage: kiln backup <file>")
        exit(2)
    }
    let dest = positional[0]
    if let url = config.databaseURL, let pg = try? PostgresConfig(url: url) {
        // PostgreSQL has its own consistent online dump; Kiln's part is the data dir (its keys).
        err(
            "kiln backup: the store is PostgreSQL; dump it with\n  pg_dump --format=custom --file '\(dest)' "
                + "'\(pg.redacted)'\n(password in PGPASSWORD) and keep a copy of the data dir's "
                + "master.key and receipt.key"
        )
        exit(2)
    }
    if FileManager.default.fileExists(atPath: dest) {
        err("kiln backup: \(dest) exists; choose a new file")
        exit(2)
    }
    let app = openApp(config)
    do {
        try app.services.db.backup(to: dest)
        out("backup written to \(dest)")
    } catch {
        err("kiln backup: \(error)")
        exit(1)
    }

case "export", "import":
    let exporting = command == "export"
    let flag = exporting ? "--to" : "--from"
    if wantsHelp {
        out(
            exporting
                ? "usage: kiln export --to postgres://… [--data-dir DIR]\n\nCopies every table of the data dir's SQLite store into a new, empty PostgreSQL\ndatabase (migrated first), then compares the two table by table. The data dir keeps\nits keys: start kiln with --database-url and the same --data-dir afterwards."
                : "usage: kiln import --from postgres://… [--data-dir DIR]\n\nCopies every table of a PostgreSQL store into a new SQLite file in the data dir\n(which must have none yet), then compares the two table by table."
        )
        exit(0)
    }
    guard let i = args.firstIndex(of: flag), i + 1 < args.count else {
        err("kiln \(command): \(flag) postgres://user@host/db is required")
        exit(2)
    }
    let url = args[i + 1]
    var rest = args
    rest.removeSubrange(i...(i + 1))
    var (config, _) = loadConfig(rest)
    config.databaseURL = nil
    let sqlitePath = config.dataDir + "/kiln.db"
    if !exporting && FileManager.default.fileExists(atPath: sqlitePath) {
        err("kiln import: \(sqlitePath) exists; import into a new data dir (keep its master.key and receipt key)")
        exit(2)
    }
    if exporting && !FileManager.default.fileExists(atPath: sqlitePath) {
        err("kiln export: no SQLite store at \(sqlitePath)")
        exit(2)
    }
    do {
        let pgConfig = try PostgresConfig(
            url: url, password: ProcessInfo.processInfo.environment["KILN_DATABASE_PASSWORD"])
        let schemaApp = openApp(config, ephemeral: true)
        let migrations = schemaApp.allMigrations
        try? FileManager.default.removeItem(atPath: schemaApp.services.dataDir)
        try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        let sqlite = try Database(path: sqlitePath, readers: 1)
        let pg = try Database(postgres: pgConfig, connections: 2)
        try sqlite.migrate(migrations)
        try pg.migrate(migrations)
        let (source, target) = exporting ? (sqlite, pg) : (pg, sqlite)
        let report = try StoreCopy.copy(from: source, to: target)
        for t in report.tables where t.rows > 0 { out("copied \(t.name): \(t.rows) rows") }
        guard report.mismatches.isEmpty else {
            for m in report.mismatches { err("MISMATCH \(m)") }
            exit(1)
        }
        let total = report.tables.reduce(0) { $0 + $1.rows }
        out("\(report.tables.count) tables, \(total) rows copied; every table compared equal")
    } catch {
        err("kiln \(command): \(error)")
        exit(1)
    }

case "store-bench":
    // Used by scripts/bench/store.sh: `kiln store-bench select1 URL SECONDS` or
    // `kiln store-bench events [URL] SECONDS`.
    do {
        switch (args.first, args.count) {
        case ("select1", 3): out(try StoreBench.selectOne(url: args[1], seconds: Double(args[2]) ?? 5))
        case ("events", 2): out(try await StoreBench.eventAppends(url: nil, seconds: Double(args[1]) ?? 5))
        case ("events", 3): out(try await StoreBench.eventAppends(url: args[1], seconds: Double(args[2]) ?? 5))
        default:
            err("usage: kiln store-bench select1 URL SECONDS | events [URL] SECONDS")
            exit(2)
        }
    } catch {
        err("kiln store-bench: \(error)")
        exit(1)
    }

case "doctor":
    if wantsHelp {
        out(
            "usage: kiln doctor [--data-dir DIR] [--verify-audit]\n\nChecks the libraries, the data dir and the optional programs;\n"
                + "--verify-audit recomputes the hash chain of the audit log and reports the first break.")
        exit(0)
    }
    let verifyAudit = args.contains("--verify-audit")
    let (config, _) = loadConfig(args.filter { $0 != "--verify-audit" })
    var report = Doctor.run(config: config)
    if verifyAudit {
        let a = Doctor.verifyAudit(config: config)
        report.lines += a.lines
        report.ok = report.ok && a.ok
    }
    for line in report.lines { out(line) }
    exit(report.ok ? 0 : 1)

case "version", "--version", "-v":
    out("kiln \(KilnVersion.version)")

case "help", "--help", "-h":
    out(usage)

default:
    guard let c = moduleCommands.first(where: { $0.name == command }) else {
        err("kiln: unknown command '\(command)'\n")
        err(usage)
        exit(2)
    }
    let io = CommandIO(out: out, err: err, loadConfig: parseConfig, open: { config in try Application(config: config) })
    exit(await c.run(args, io))
}
