import Foundation
import Glibc
import KilnAccount
import KilnAgents
import KilnAuth
import KilnBudget
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnProjects
import KilnPTY
import KilnReceipts
import KilnShell
import KilnStore
import KilnWorkspaces

public enum KilnVersion {
    public static let version = "0.1.0"
}

/// The assembled server: config, store, services, every module's routes on one router with the
/// cross-cutting middleware, and the HTTP engine.
public final class Application: @unchecked Sendable {
    public let services: Services
    public let routes: Routes
    let router: Router
    let metrics = HTTPMetrics()
    let startedAt = Date()
    public private(set) var server: HTTPServer?
    public private(set) var modules: [any KilnModule] = []
    public private(set) var allMigrations: [Migration] = []
    public var permissions: [Permission] { services.catalog.all }
    public private(set) var appliedOnStart: [Migration] = []

    /// The domain modules, in registration order. Adding a domain: one line here.
    static func domainModules() -> [any KilnModule] {
        [AuthModule(), AccountModule(), WorkspacesModule(), ProjectsModule(), ShellModule(), PTYModule(), AgentsModule(), BudgetModule(), ReceiptsModule()]
    }

    /// Opens (or creates) the data dir and database, applies migrations, registers every route.
    /// `ephemeral` uses an in-memory database (for `kiln routes`).
    public init(config: Config, clock: any Clock = SystemClock(), ephemeral: Bool = false, extraModules: [any KilnModule] = []) throws {
        let dataDir = ephemeral ? NSTemporaryDirectory() : config.dataDir
        if !ephemeral { try Application.prepareDataDir(dataDir) }
        let db: Database
        if ephemeral {
            db = try Database(path: "file:kiln-ephemeral-\(UUID().uuidString)?mode=memory&cache=shared", readers: 1)
        } else {
            db = try Database(path: dataDir + "/kiln.db")
        }
        let masterKey = ephemeral ? Crypto.randomBytes(32) : try Application.loadMasterKey(dataDir: dataDir)
        let hooks = Hooks()
        let catalog = PermissionCatalog()
        let templatesDir = FileManager.default.fileExists(atPath: "Templates") ? FileManager.default.currentDirectoryPath + "/Templates" : nil
        services = Services(config: config, db: db, clock: clock, bus: EventBus(db: db, clock: clock), jobs: JobRunner(),
                            dataDir: dataDir, masterKey: masterKey, hooks: hooks, catalog: catalog,
                            mailer: try config.smtpURL.map { try SMTPMailer(url: $0, from: config.mailFrom) as any Mailer }
                                ?? OutboxMailer(directory: dataDir + "/outbox", from: config.mailFrom),
                            templates: MailTemplates(directory: templatesDir),
                            baseURL: BaseURL(config.baseURL()))
        router = Router()
        routes = Routes(router: router)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: AccessLogMiddleware(metrics: metrics))
        var trusted = Set<String>()
        if let u = config.publicURL { trusted.insert(u.hasSuffix("/") ? String(u.dropLast()) : u) }
        router.add(middleware: AccessMiddleware(hooks: hooks, catalog: catalog, buckets: TokenBuckets(capacity: 600, refillPerSecond: 10),
                                                clock: clock, trustedOrigins: trusted))
        modules = [CoreModule(app: self)] + Application.domainModules() + extraModules
        allMigrations = modules.flatMap(\.migrations)
        for m in modules { for g in m.permissions { catalog.register(g.permission, minimumRole: g.minimumRole) } }
        appliedOnStart = try db.migrate(allMigrations)
        for m in modules { m.register(routes, services) }
        if let files = Application.publicFiles(config) { router.fallback = files.handler }
    }

    static func publicFiles(_ config: Config) -> StaticFiles? {
        if let dir = config.publicDir { return StaticFiles(root: dir) }
        return StaticFiles(root: FileManager.default.currentDirectoryPath + "/Public")
    }

    /// Creates the data dir (0700) if needed and checks it is a writable directory.
    static func prepareDataDir(_ dir: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            guard isDir.boolValue else { throw Config.ConfigError("data dir \(dir) exists and is not a directory") }
        } else {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        guard access(dir, W_OK) == 0 else { throw Config.ConfigError("data dir \(dir) is not writable") }
    }

    /// `KILN_MASTER_KEY` (64 hex characters) or `<data-dir>/master.key`, made on first start with mode 0600.
    static func loadMasterKey(dataDir: String) throws -> [UInt8] {
        if let env = ProcessInfo.processInfo.environment["KILN_MASTER_KEY"], !env.isEmpty {
            guard let key = Crypto.fromHex(env.trimmingCharacters(in: .whitespacesAndNewlines)), key.count == 32 else {
                throw Config.ConfigError("KILN_MASTER_KEY must be 64 hex characters (32 bytes)")
            }
            return key
        }
        let path = dataDir + "/master.key"
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            guard let key = Crypto.fromHex(text.trimmingCharacters(in: .whitespacesAndNewlines)), key.count == 32 else {
                throw Config.ConfigError("\(path) is damaged: expected 64 hex characters")
            }
            return key
        }
        let key = Crypto.randomBytes(32)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Config.ConfigError("cannot create \(path)") }
        let hex = Array((Crypto.hex(key) + "\n").utf8)
        let written = hex.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        close(fd)
        guard written == hex.count else { throw Config.ConfigError("cannot write \(path)") }
        return key
    }

    public var responder: RouterResponder { router.responder() }

    /// Lines `serve` prints after it starts: the one-time owner setup URL while there is no account.
    public func startupNotices(baseURL: String) -> [String] {
        let auth = AuthService(services: services)
        guard (try? auth.userCount()) == 0, let token = try? auth.makeOwnerSetupToken() else { return [] }
        return ["No accounts yet. Create the owner account (one-time link, valid 24 hours):", "  \(baseURL)/setup?token=\(token)"]
    }

    /// `kiln admin create-user`: the account and a one-time link to set its password.
    public func adminCreateUser(email: String, name: String, baseURL: String? = nil) async throws -> String {
        let (_, token) = try await AuthService(services: services).createUser(email: email, name: name)
        return "\(baseURL ?? services.config.baseURL())/setup?token=\(token)"
    }

    /// Binds and starts serving; returns the bound port.
    @discardableResult
    public func start() throws -> Int {
        let c = services.config
        var sc = ServerConfiguration()
        sc.host = c.host
        sc.port = c.port
        sc.maxBodySize = c.maxBodyBytes
        if c.eventLoops > 0 { sc.eventLoops = c.eventLoops }
        sc.tlsCertificatePath = c.tlsCert
        sc.tlsKeyPath = c.tlsKey
        let s = try HTTPServer(configuration: sc, responder: router.responder())
        try s.start()
        server = s
        if c.publicURL == nil { services.baseURL.set(c.baseURL(boundPort: s.port)) }
        return s.port
    }

    /// Serves until SIGTERM/SIGINT, then shuts down gracefully.
    public func run(onReady: @Sendable (Int) -> Void = { _ in }) async throws {
        let port = try start()
        onReady(port)
        await Signals.wait([SIGTERM, SIGINT])
        ServerLog.info("shutting down", [:])
        await shutdown()
    }

    public func shutdown() async {
        await server?.shutdown()
        await services.jobs.shutdown()
    }
}
