// kiln: the server and its operator commands.
import Foundation
import KilnApp
import KilnCore
import KilnHTTP
import KilnBudget
import KilnReceipts
import KilnStore

func out(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }
func err(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

let usage = """
    kiln — a self-hosted developer workspace server

    usage: kiln <command> [options]

    commands:
      serve                     run the server (HTTP API, SSE, WebSocket and web UI)
      routes                    print the route table (method, path, permission) and its count
      migrate                   apply pending database migrations and exit
      backup <file>             write an online backup of the database to <file>
      admin create-user --email E [--name N]
                                create an account and print a one-time setup link
      doctor [--verify-audit]   check SQLite/OpenSSL, the data dir, optional programs (and the audit chain)
      receipts verify --ws ID   verify a workspace's receipt chain offline (hashes, links, signatures)
      version                   print the version

    Run `kiln <command> --help` for the options of a command.
    """

let serveHelp = """
    usage: kiln serve [options]

    Options (flags > KILN_* environment > defaults):
    \(Config.helpText)
    """

func loadConfig(_ args: [String]) -> (Config, [String]) {
    do { return try Config.load(arguments: args, environment: ProcessInfo.processInfo.environment) }
    catch { err("kiln: \(error)"); exit(2) }
}

func openApp(_ config: Config, ephemeral: Bool = false) -> Application {
    do { return try Application(config: config, ephemeral: ephemeral) }
    catch { err("kiln: \(error)"); exit(1) }
}

var args = Array(CommandLine.arguments.dropFirst())
let command = args.isEmpty ? "help" : args.removeFirst()
let wantsHelp = args.contains("--help") || args.contains("-h")

switch command {
case "serve":
    if wantsHelp { out(serveHelp); exit(0) }
    let (config, extra) = loadConfig(args)
    guard extra.isEmpty else { err("kiln serve: unexpected argument \(extra[0])"); exit(2) }
    // A price table that does not load would silently make runs free, so it stops the start.
    if let f = config.pricingFile {
        do { _ = try PriceTable.load(file: f) } catch { err("kiln serve: \(error)"); exit(2) }
    }
    ServerLog.setLevel(ServerLog.Level(rawValue: ["debug", "info", "warn", "error"].firstIndex(of: config.logLevel) ?? 1) ?? .info)
    let app = openApp(config)
    for m in app.appliedOnStart { ServerLog.info("migration applied", ["module": .string(m.module), "version": .int(m.version), "name": .string(m.name)]) }
    do {
        try await app.run { port in
            let base = config.baseURL(boundPort: port)
            ServerLog.info("listening", ["url": .string(base), "data_dir": .string(config.dataDir), "tls": .bool(config.isTLS)])
            out("kiln \(KilnVersion.version) listening on \(base)")
            for line in app.startupNotices(baseURL: base) { out(line) }
        }
        exit(0)
    } catch {
        err("kiln: \(error)")
        exit(1)
    }

case "routes":
    if wantsHelp { out("usage: kiln routes\n\nPrints every route: method, path, permission; then the count."); exit(0) }
    let (config, _) = loadConfig(args)
    let app = openApp(config, ephemeral: true)
    let docs = app.routes.docs.sorted { ($0.path, $0.method) < ($1.path, $1.method) }
    let w = docs.map(\.path.count).max() ?? 10
    for d in docs { out(d.method.padding(toLength: 7, withPad: " ", startingAt: 0) + " " + d.path.padding(toLength: w, withPad: " ", startingAt: 0) + "  " + d.permission) }
    out("\(docs.count) routes")

case "migrate":
    if wantsHelp { out("usage: kiln migrate [--data-dir DIR]\n\nApplies pending migrations (serve does this on start too)."); exit(0) }
    let (config, _) = loadConfig(args)
    let app = openApp(config)
    if app.appliedOnStart.isEmpty { out("database is up to date") }
    for m in app.appliedOnStart { out("applied \(m.module) \(m.version): \(m.name)") }

case "backup":
    if wantsHelp { out("usage: kiln backup <file> [--data-dir DIR]\n\nWrites a consistent copy of the database while the server may be running."); exit(0) }
    let (config, positional) = loadConfig(args)
    guard positional.count == 1 else { err("usage: kiln backup <file>"); exit(2) }
    let dest = positional[0]
    if FileManager.default.fileExists(atPath: dest) { err("kiln backup: \(dest) exists; choose a new file"); exit(2) }
    let app = openApp(config)
    do {
        try app.services.db.backup(to: dest)
        out("backup written to \(dest)")
    } catch { err("kiln backup: \(error)"); exit(1) }

case "admin":
    let (sub, rest) = args.isEmpty ? ("help", []) : (args[0], Array(args.dropFirst()))
    if sub == "create-user" {
        if rest.contains("--help") { out("usage: kiln admin create-user --email EMAIL [--name NAME] [--data-dir DIR]\n\nCreates an account and prints a one-time link to set its password."); exit(0) }
        var email: String?, name: String?
        var pass: [String] = []
        var i = 0
        while i < rest.count {
            switch rest[i] {
            case "--email": i += 1; email = i < rest.count ? rest[i] : nil
            case "--name": i += 1; name = i < rest.count ? rest[i] : nil
            default: pass.append(rest[i])
            }
            i += 1
        }
        guard let email else { err("kiln admin create-user: --email is required"); exit(2) }
        let (config, _) = loadConfig(pass)
        let app = openApp(config)
        do {
            let link = try await app.adminCreateUser(email: email, name: name ?? email.split(separator: "@").first.map(String.init) ?? email)
            out("created \(email)")
            out("one-time setup link (valid 24 hours): \(link)")
        } catch { err("kiln admin create-user: \(error)"); exit(1) }
    } else {
        out("usage: kiln admin create-user --email EMAIL [--name NAME]")
        exit(sub == "help" || sub == "--help" ? 0 : 2)
    }

case "doctor":
    if wantsHelp { out("usage: kiln doctor [--data-dir DIR] [--verify-audit]\n\nChecks the libraries, the data dir and the optional programs;\n--verify-audit recomputes the hash chain of the audit log and reports the first break."); exit(0) }
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

case "receipts":
    guard args.first == "verify", !wantsHelp else {
        out("usage: kiln receipts verify --ws WS_ID [--data-dir DIR]\n\nRecomputes every receipt hash, prev_hash link and Ed25519 signature of the workspace's chain\nfrom the database and receipt.key in the data dir; prints {ok, checked, first_break?} and exits 1 on a break.")
        exit(wantsHelp ? 0 : 2)
    }
    var rest = Array(args.dropFirst())
    var ws: String? = nil
    if let i = rest.firstIndex(of: "--ws"), i + 1 < rest.count { ws = rest[i + 1]; rest.removeSubrange(i...(i + 1)) }
    guard let ws else { err("kiln receipts verify: --ws WS_ID is required"); exit(2) }
    let (config, _) = loadConfig(rest)
    do {
        let v = try ReceiptsCLI.verify(dataDir: config.dataDir, wsID: ws)
        out(v.json.jsonText)
        exit(v.ok ? 0 : 1)
    } catch { err("kiln receipts verify: \(error)"); exit(1) }

case "version", "--version", "-v":
    out("kiln \(KilnVersion.version)")

case "help", "--help", "-h":
    out(usage)

default:
    err("kiln: unknown command '\(command)'\n")
    err(usage)
    exit(2)
}
