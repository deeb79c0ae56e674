import Foundation
import KilnHTTP
import KilnStore
import Synchronization

/// A domain module: its tables, permissions, routes, configuration section, CLI commands and
/// lifecycle. The application builds each module with the services and the other domains'
/// protocols it needs, registers its routes, starts it, and shuts it down in reverse order.
public protocol KilnModule: Sendable {
    var name: String { get }
    var migrations: [Migration] { get }
    /// The permissions this module's routes use (each module declares its own as constants).
    var permissions: [Permission] { get }
    /// Its options under `kiln serve` (read by `Config.load` before any module is built).
    static var configOptions: [Config.Option] { get }
    /// Its `kiln <command>` subcommands.
    static var commands: [Command] { get }
    func register(_ routes: Routes)
    /// Background work and recovery after a restart; called once the routes are registered.
    func start(_ jobs: JobRunner) throws
    /// Ends what the module runs (jobs, terminals, runs) and waits for it.
    func shutdown() async
}

extension KilnModule {
    public var migrations: [Migration] { [] }
    public var permissions: [Permission] { [] }
    public static var configOptions: [Config.Option] { [] }
    public static var commands: [Command] { [] }
    public func start(_ jobs: JobRunner) throws {}
    public func shutdown() async {}
}

/// A `kiln <name> …` subcommand a module contributes.
public struct Command: Sendable {
    public let name: String
    /// One line for `kiln help` (`name args  what it does`).
    public let usage: String
    public let help: String
    /// Runs with the arguments after the command name; returns the exit status.
    public let run: @Sendable (_ arguments: [String], _ io: CommandIO) async -> Int32

    public init(
        name: String, usage: String, help: String, run: @escaping @Sendable ([String], CommandIO) async -> Int32
    ) {
        self.name = name
        self.usage = usage
        self.help = help
        self.run = run
    }
}

/// What a command needs of the executable: output, configuration, and the assembled application.
public struct CommandIO: Sendable {
    public let out: @Sendable (String) -> Void
    public let err: @Sendable (String) -> Void
    /// Parses `kiln serve`'s options out of `arguments`; returns the config and the positional rest.
    public let loadConfig: @Sendable (_ arguments: [String]) throws -> (Config, [String])
    /// Opens the data dir and database (migrated) with every module built, without serving.
    public let open: @Sendable (Config) throws -> any ModuleHost

    public init(
        out: @escaping @Sendable (String) -> Void, err: @escaping @Sendable (String) -> Void,
        loadConfig: @escaping @Sendable ([String]) throws -> (Config, [String]),
        open: @escaping @Sendable (Config) throws -> any ModuleHost
    ) {
        self.out = out
        self.err = err
        self.loadConfig = loadConfig
        self.open = open
    }
}

/// The assembled application as commands see it.
public protocol ModuleHost: Sendable {
    var services: Services { get }
    /// The module of this type the application built.
    func module<M: KilnModule>(_ type: M.Type) -> M?
}

/// What every module may use.
public struct Services: Sendable {
    public let config: Config
    public let db: Database
    public let clock: any Clock
    public let bus: EventBus
    /// Background tasks, cancelled and awaited on shutdown.
    public let jobs: JobRunner
    public let dataDir: String
    /// The key that seals per-secret data keys and MFA secrets (never logged; rotatable).
    public let masterKey: MasterKey
    public let hooks: Hooks
    public let catalog: PermissionCatalog
    public let mailer: any Mailer
    public let templates: MailTemplates
    /// The externally visible base URL for links in mails (set once the port is known).
    public let baseURL: BaseURL
    /// How user processes are started (`Sandbox.launch`).
    public let sandbox: Sandbox
    /// This process among the instances sharing the store (whose work is whose; leases).
    public let instances: Instances
    /// Which hosts Kiln may connect to for users.
    public var outbound: OutboundGuard { OutboundGuard(config: config) }

    public init(
        config: Config, db: Database, clock: any Clock, bus: EventBus, jobs: JobRunner, dataDir: String,
        masterKey: MasterKey,
        hooks: Hooks, catalog: PermissionCatalog, mailer: any Mailer, templates: MailTemplates, baseURL: BaseURL,
        sandbox: Sandbox, instances: Instances? = nil
    ) {
        self.sandbox = sandbox
        self.instances = instances ?? Instances(db: db, clock: clock, timeout: config.instanceTimeout)
        self.config = config
        self.db = db
        self.clock = clock
        self.bus = bus
        self.jobs = jobs
        self.dataDir = dataDir
        self.masterKey = masterKey
        self.hooks = hooks
        self.catalog = catalog
        self.mailer = mailer
        self.templates = templates
        self.baseURL = baseURL
    }
}

/// The base URL links point to; known only after the server has bound its port.
public final class BaseURL: Sendable {
    private let value: Mutex<String>
    public init(_ v: String) { value = Mutex(v) }
    public var string: String { value.withLock { $0 } }
    public func set(_ v: String) { value.withLock { $0 = v } }
}
