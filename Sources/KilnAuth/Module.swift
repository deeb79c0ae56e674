import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Identity: first-run setup, registration and verification, login and sessions, password reset, MFA.
public struct AuthModule: KilnModule {
    public let name = "auth"
    /// Accounts and sessions; the application hands it to the domains that need accounts.
    public let service: AuthService
    let secureCookies: Bool
    let instances: Instances

    public init(services: Services) {
        service = AuthService(services: services)
        instances = services.instances
        secureCookies = services.config.secureCookies
        let auth = service
        services.hooks.provideSessions { token, ip, ua in
            try await auth.resolveSession(token: token, ip: ip, userAgent: ua)
        }
        services.hooks.provideExecutionPolicy { uid in try await auth.mayExecute(userID: uid) }
        let store = auth.store
        services.hooks.onMasterKeyRotation { tx, old, new in
            try AuthService.resealMFA(tx, store: store, old: old, new: new)
        }
    }

    public var migrations: [Migration] { AuthMigrations.all }
    public var permissions: [Permission] { [.accountRead, .accountWrite, .instanceAdmin] }
    public static var configOptions: [Config.Option] { AuthSettings.options }

    public func register(_ routes: Routes) {
        AuthRoutes(auth: service, secureCookies: secureCookies).register(routes)
        AdminRoutes(auth: service).register(routes)
    }

    public func start(_ jobs: JobRunner) throws {
        let auth = service
        instances.everyOnce(jobs, 3600, name: "purge deleted accounts") { try await auth.purgeDueAccounts() }
        instances.everyOnce(jobs, 3600, name: "expire unconfirmed registrations") {
            try await auth.purgeExpiredRegistrations()
        }
    }

    public static var commands: [Command] {
        [
            Command(
                name: "admin", usage: "admin create-user --email E [--name N]",
                help: "create an account and print a one-time setup link", run: adminCommand)
        ]
    }

    /// `kiln admin create-user`: the account and a one-time link to set its password.
    @Sendable static func adminCommand(_ args: [String], _ io: CommandIO) async -> Int32 {
        let usage = "usage: kiln admin create-user --email EMAIL [--name NAME] [--data-dir DIR]"
        guard args.first == "create-user" else {
            io.out(usage)
            return args.first == nil || args.first == "help" || args.first == "--help" ? 0 : 2
        }
        let rest = Array(args.dropFirst())
        if rest.contains("--help") {
            io.out(usage + "\n\nCreates an account and prints a one-time link to set its password.")
            return 0
        }
        var email: String?
        var name: String?
        var pass: [String] = []
        var i = 0
        while i < rest.count {
            switch rest[i] {
            case "--email":
                i += 1
                email = i < rest.count ? rest[i] : nil
            case "--name":
                i += 1
                name = i < rest.count ? rest[i] : nil
            default: pass.append(rest[i])
            }
            i += 1
        }
        guard let email else {
            io.err("kiln admin create-user: --email is required")
            return 2
        }
        do {
            let (config, _) = try io.loadConfig(pass)
            let host = try io.open(config)
            guard let auth = host.module(AuthModule.self)?.service else {
                io.err("kiln admin create-user: no auth module")
                return 1
            }
            let (_, token) = try await auth.createUser(
                email: email, name: name ?? email.split(separator: "@").first.map(String.init) ?? email)
            io.out("created \(email)")
            io.out("one-time setup link (valid 24 hours): \(config.baseURL())/setup?token=\(token)")
            return 0
        } catch {
            io.err("kiln admin create-user: \(error)")
            return 1
        }
    }
}
