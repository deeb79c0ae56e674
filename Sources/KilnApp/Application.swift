import Foundation
import Glibc
import KilnAccount
import KilnAgents
import KilnAuth
import KilnBrowser
import KilnBudget
import KilnCollab
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnMCP
import KilnNotebooks
import KilnPTY
import KilnPolicy
import KilnProjects
import KilnReceipts
import KilnSecrets
import KilnShell
import KilnStore
import KilnWorkspaces
import Synchronization

public enum KilnVersion {
    public static let version = "0.1.0"
}

/// The assembled server: config, store, services, every module built with the other domains'
/// protocols it needs, their routes on one router with the cross-cutting middleware, and the HTTP
/// engine. It starts the modules after their routes are registered and shuts them down in reverse.
public final class Application: ModuleHost, @unchecked Sendable {
    public let services: Services
    public let routes: Routes
    let router: Router
    let metrics = HTTPMetrics()
    let startedAt = Date()
    /// When readiness was last probed, and what it found.
    let readiness = Mutex<(at: Date, checks: [String: JSONValue])?>(nil)
    public private(set) var server: HTTPServer?
    public let modules: [any KilnModule]
    public let allMigrations: [Migration]
    public var permissions: [Permission] { services.catalog.all }
    public private(set) var appliedOnStart: [Migration] = []
    /// The throwaway data dir of an ephemeral application, removed with it.
    let ephemeralDir: String?
    private let lifecycle = NSLock()
    private var started = false
    private var stopped = false

    /// Every domain module type, in the order they are built: their options and commands are known
    /// before any is built. Adding a domain: a line here and one in `buildModules`.
    static let moduleTypes: [any KilnModule.Type] = [
        AuthModule.self, AccountModule.self, WorkspacesModule.self, ProjectsModule.self, ShellModule.self,
        PTYModule.self,
        AgentsModule.self, BudgetModule.self, ReceiptsModule.self, SecretsModule.self, PolicyModule.self,
        MCPModule.self, NotebooksModule.self, CollabModule.self, BrowserModule.self,
    ]

    /// What `kiln serve` understands: the server's own options and every module's.
    public static var configOptions: [Config.Option] {
        Config.coreOptions + [trustedProxyOption, rateLimitOption] + moduleTypes.flatMap { $0.configOptions }
    }

    static let rateLimitFlag = "--rate-limit"
    /// Requests per second each account or API key may make, with a burst of a minute's worth.
    static let rateLimitOption = Config.Option.int(
        rateLimitFlag, env: "KILN_RATE_LIMIT",
        help: "requests per second per account or API key (default 10, bursts of 60 seconds' worth)",
        range: 1...1_000_000)

    static let trustedProxyFlag = "--trusted-proxy"
    /// `--trusted-proxy CIDR`, repeatable: whose X-Forwarded-For names the client.
    static let trustedProxyOption = Config.Option(
        flag: trustedProxyFlag, env: "KILN_TRUSTED_PROXY",
        help: "a reverse proxy's address range; its X-Forwarded-For names the client (repeatable)", repeatable: true
    ) { c, v in
        for part in v.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard CIDR(part) != nil else {
                throw Config.ConfigError("--trusted-proxy: '\(part)' is not an address range like 10.0.0.0/8")
            }
            c.moduleValues[trustedProxyFlag, default: []].append(part)
        }
    }

    /// The modules' `kiln <command>` subcommands.
    public static var commands: [Command] { moduleTypes.flatMap { $0.commands } }

    /// Builds each domain with what it needs of the others (protocols from KilnCore, implemented by
    /// their owners), in dependency order; the result is in registration order.
    static func buildModules(_ s: Services) -> [any KilnModule] {
        let auth = AuthModule(services: s)
        let account = AccountModule(services: s, accounts: auth.service)
        let workspaces = WorkspacesModule(services: s, users: auth.service)
        let policy = PolicyModule(services: s)
        let projects = ProjectsModule(services: s, policy: policy.service, approvals: policy.approvals)
        let secrets = SecretsModule(services: s, policy: policy.service, approvals: policy.approvals)
        let shell = ShellModule(
            services: s, projects: projects.service, secrets: secrets.service, policy: policy.service,
            approvals: policy.approvals)
        let pty = PTYModule(
            services: s, projects: projects.service, secrets: secrets.service, policy: policy.service,
            approvals: policy.approvals)
        let budget = BudgetModule(services: s, projects: projects.service, tools: AgentToolCatalog())
        let receipts = ReceiptsModule(services: s, projects: projects.service, pricing: budget.service.pricing)
        let agents = AgentsModule(
            services: s, projects: projects.service, jobs: shell.service,
            observers: [budget.service, receipts.service],
            secrets: secrets.service, policy: policy.service, approvals: policy.approvals)
        let mcp = MCPModule(
            services: s, tools: agents.service, projects: projects.service, agents: agents.service,
            receipts: receipts.service, policy: policy.service, secrets: secrets.service)
        agents.service.attach(externalTools: mcp.registry)
        let notebooks = NotebooksModule(services: s, projects: projects.service, policy: policy.service)
        agents.service.attach(notebooks: notebooks.service)
        let collab = CollabModule(
            services: s,
            CollabDependencies(
                agents: agents.service, receipts: receipts.service, members: workspaces.service, users: auth.service,
                accounts: auth.service, projects: projects.service, pricing: budget.service.pricing))
        let browser = BrowserModule(services: s, secrets: secrets.service)
        agents.service.attach(browser: browser.service)
        return [
            auth, account, workspaces, projects, shell, pty, agents, budget, receipts, secrets, policy, mcp, notebooks,
            collab, browser,
        ]
    }

    /// Opens (or creates) the data dir and database, applies migrations, registers every route.
    /// `ephemeral` uses an in-memory database (for `kiln routes` and in-process tests). Refuses to
    /// build when a route names a permission no module registered.
    public init(
        config: Config, clock: any Clock = SystemClock(), ephemeral: Bool = false, extraModules: [any KilnModule] = []
    ) throws {
        let dataDir = ephemeral ? NSTemporaryDirectory() + "kiln-ephemeral-\(UUID().uuidString)" : config.dataDir
        ephemeralDir = ephemeral ? dataDir : nil
        try Application.prepareDataDir(dataDir)
        let db: Database
        if ephemeral {
            db = try Database(path: "file:kiln-ephemeral-\(UUID().uuidString)?mode=memory&cache=shared", readers: 1)
        } else {
            try Application.restrictFiles(dataDir: dataDir)
            db = try config.openDatabase()
            try Application.restrictFiles(dataDir: dataDir)
        }
        let masterKey =
            ephemeral ? MasterKey(Crypto.randomBytes(32), path: nil) : try Application.loadMasterKey(dataDir: dataDir)
        let catalog = PermissionCatalog()
        let templatesDir =
            FileManager.default.fileExists(atPath: "Templates")
            ? FileManager.default.currentDirectoryPath + "/Templates" : nil
        services = Services(
            config: config, db: db, clock: clock, bus: try EventBus(db: db, clock: clock), jobs: JobRunner(),
            dataDir: dataDir, masterKey: masterKey, hooks: Hooks(), catalog: catalog,
            mailer: try config.smtpURL.map { try SMTPMailer(url: $0, from: config.mailFrom) as any Mailer }
                ?? OutboxMailer(directory: dataDir + "/outbox", from: config.mailFrom),
            templates: MailTemplates(directory: templatesDir),
            baseURL: BaseURL(config.baseURL()), sandbox: Sandbox.configured(config, dataDir: dataDir))
        router = Router()
        routes = Routes(router: router, catalog: catalog)
        router.add(
            middleware: ClientAddressMiddleware(
                trusted: config.strings(Application.trustedProxyFlag).compactMap(CIDR.init)))
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: SecurityHeadersMiddleware(strictTransport: config.isTLS || config.secureCookies))
        router.add(middleware: AccessLogMiddleware(metrics: metrics))
        router.add(middleware: ErrorMiddleware())
        var trusted = Set<String>()
        if let u = config.publicURL { trusted.insert(u.hasSuffix("/") ? String(u.dropLast()) : u) }
        router.add(
            middleware: AccessMiddleware(
                hooks: services.hooks, catalog: catalog,
                buckets: TokenBuckets(
                    capacity: 60 * (config.int(Application.rateLimitFlag) ?? 10),
                    refillPerSecond: Double(config.int(Application.rateLimitFlag) ?? 10)),
                clock: clock, trustedOrigins: trusted))
        modules = Application.buildModules(services) + extraModules
        allMigrations =
            CoreModule.migrations + Instances.migrations + SharedWindowLimiter.migrations
            + modules.flatMap(\.migrations)
        for m in modules { for p in m.permissions { catalog.register(p) } }
        appliedOnStart = try db.migrate(allMigrations)
        // An interrupted master key rotation is finished or undone before anything opens a sealed value.
        if let note = try services.masterKey.recover(db) { ServerLog.warn(note, [:]) }
        CoreModule(app: self).register(routes)
        for m in modules { m.register(routes) }
        if !routes.problems.isEmpty {
            throw Config.ConfigError("refusing to start: " + routes.problems.joined(separator: "; "))
        }
        if let files = Application.publicFiles(config) { router.fallback = files.handler }
    }

    deinit { if let ephemeralDir { try? FileManager.default.removeItem(atPath: ephemeralDir) } }

    /// The module of this type (commands and tests reach a domain's service through it).
    public func module<M: KilnModule>(_ type: M.Type) -> M? { modules.lazy.compactMap { $0 as? M }.first }

    static func publicFiles(_ config: Config) -> StaticFiles? {
        // Everything under /w/ is the workspace app, which reads its view from the URL;
        let root = config.publicDir ?? FileManager.default.currentDirectoryPath + "/Public"
        // /invite/<token> is the invitation page, which reads its token from the URL.
        return StaticFiles(root: root, pages: ["w": "workspace.html", "invite": "invite.html"])
    }

    /// Creates the data dir (0700) if needed and checks it is a writable directory.
    static func prepareDataDir(_ dir: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            guard isDir.boolValue else { throw Config.ConfigError("data dir \(dir) exists and is not a directory") }
        } else {
            try FileManager.default.createDirectory(
                atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        guard access(dir, W_OK) == 0 else { throw Config.ConfigError("data dir \(dir) is not writable") }
    }

    /// The files of the data dir that hold secrets or every record, readable by the server's user only:
    /// the database (made 0600 before SQLite first opens it, which its WAL and SHM files then inherit).
    static let privateFiles = ["kiln.db", "kiln.db-wal", "kiln.db-shm", "master.key", "receipt.key"]

    static func restrictFiles(dataDir: String) throws {
        let db = dataDir + "/kiln.db"
        if !FileManager.default.fileExists(atPath: db) {
            let fd = open(db, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) }
        }
        for f in privateFiles where FileManager.default.fileExists(atPath: dataDir + "/" + f) {
            chmod(dataDir + "/" + f, 0o600)
        }
    }

    /// `KILN_MASTER_KEY` (64 hex characters) or `<data-dir>/master.key`, made on first start with mode 0600.
    static func loadMasterKey(dataDir: String) throws -> MasterKey {
        if let env = ProcessInfo.processInfo.environment["KILN_MASTER_KEY"], !env.isEmpty {
            guard let key = Crypto.fromHex(env.trimmingCharacters(in: .whitespacesAndNewlines)), key.count == 32 else {
                throw Config.ConfigError("KILN_MASTER_KEY must be 64 hex characters (32 bytes)")
            }
            return MasterKey(key, path: nil, fromEnvironment: true)
        }
        let path = dataDir + "/master.key"
        // Made once even when several servers start together on an empty data dir: whoever links
        // it first wins, and everyone reads that one.
        try MasterKey.createOnce(path, contents: Array((Crypto.hex(Crypto.randomBytes(32)) + "\n").utf8))
        return MasterKey(try MasterKey.read(path), path: path)
    }

    public var responder: RouterResponder { router.responder() }

    /// Lines `serve` prints after it starts: the one-time owner setup URL while there is no account.
    public func startupNotices(baseURL: String) -> [String] {
        Self.setupNotices(token: ownerSetupToken(), baseURL: baseURL)
    }

    /// A one-time owner setup token while no account exists. `kiln serve` makes it before the server
    /// answers, so the link is printed by the time /healthz says the server is up (made after, on a
    /// slow store a script reading the link once the server answered could find none yet).
    public func ownerSetupToken() -> String? {
        guard let auth = module(AuthModule.self)?.service, (try? auth.userCount()) == 0 else { return nil }
        return try? auth.makeOwnerSetupToken()
    }

    public static func setupNotices(token: String?, baseURL: String) -> [String] {
        guard let token else { return [] }
        return [
            "No accounts yet. Create the owner account (one-time link, valid 24 hours):",
            "  \(baseURL)/setup?token=\(token)",
        ]
    }

    /// Starts each module's background work (once), then registers this instance, which runs the
    /// modules' recovery of work left by a previous process or a lost instance.
    public func startModules(registerInstance: Bool = true) throws {
        let first = lifecycle.withLock { () -> Bool in
            defer { started = true }
            return !started
        }
        guard first else { return }
        for m in modules { try m.start(services.jobs) }
        if registerInstance { startInstance() }
    }

    private func startInstance() {
        let s = services
        s.jobs.run("instance") {
            try await s.instances.start(url: s.config.instanceURL ?? s.baseURL.string, jobs: s.jobs)
        }
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
        try startModules(registerInstance: false)
        let s = try HTTPServer(configuration: sc, responder: router.responder())
        try s.start()
        server = s
        if c.publicURL == nil { services.baseURL.set(c.baseURL(boundPort: s.port)) }
        startInstance()
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

    /// Ends everything in order and waits: the server stops taking requests; the modules end their
    /// jobs, terminals and runs (in reverse order of building), whose last events still reach the
    /// streams following them; then the server ends what streams remain; then the background tasks
    /// stop. Safe to call more than once.
    public func shutdown() async {
        let first = lifecycle.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        server?.stopAccepting()
        for m in modules.reversed() { await m.shutdown() }
        // Their last events reach the streams following them before those end (on PostgreSQL they
        // come back through the listener).
        await services.bus.settle(timeout: 5)
        await server?.shutdown()
        await services.instances.end()
        await services.jobs.shutdown()
        services.bus.close()
    }
}
