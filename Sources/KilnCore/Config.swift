import Foundation
import KilnStore

/// Server configuration. Precedence: command-line flags > `KILN_*` environment > defaults.
public struct Config: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDir = "./.kiln"
    public var publicDir: String? = nil
    public var tlsCert: String? = nil
    public var tlsKey: String? = nil
    public var logLevel = "info"
    public var secureCookies = false
    public var maxBodyBytes = 10 * 1024 * 1024
    public var eventLoops = 0
    /// /readyz fails below this much free space in the data dir.
    public var minFreeDiskMB = 100
    /// The externally visible base URL (for setup links); derived from host and port when empty.
    public var publicURL: String? = nil
    /// SMTP relay for mail; without it mail goes to `<data-dir>/outbox/`.
    public var smtpURL: String? = nil
    public var mailFrom = "Kiln <kiln@localhost>"
    /// PostgreSQL shared by several instances; without it SQLite in the data dir.
    public var databaseURL: String? = nil
    public var databasePool = 16
    /// The URL other instances name when they send a client here (421); default: the base URL.
    public var instanceURL: String? = nil
    /// Seconds without a heartbeat after which an instance's running work is marked lost.
    public var instanceTimeout: Double = 15
    /// The modules' own options, by flag, as given (a repeatable option keeps every value). Each module
    /// declares its options and reads its section through `string`, `int`, `double` and `strings`.
    public var moduleValues: [String: [String]] = [:]

    public init() {}

    public struct Option: Sendable {
        public let flag: String
        public let env: String
        public let help: String
        public let takesValue: Bool
        /// Given several times (or colon-separated in the environment), every value counts.
        public let repeatable: Bool
        let apply: @Sendable (inout Config, String) throws -> Void

        public init(
            flag: String, env: String, help: String, takesValue: Bool = true, repeatable: Bool = false,
            apply: @escaping @Sendable (inout Config, String) throws -> Void
        ) {
            self.flag = flag
            self.env = env
            self.help = help
            self.takesValue = takesValue
            self.repeatable = repeatable
            self.apply = apply
        }

        /// A module option kept as text (empty: unset).
        public static func text(_ flag: String, env: String, help: String) -> Option {
            Option(flag: flag, env: env, help: help) { c, v in c.set(flag, v.isEmpty ? nil : v) }
        }

        /// A module option that must be an integer in `range`.
        public static func int(_ flag: String, env: String, help: String, range: ClosedRange<Int>) -> Option {
            Option(flag: flag, env: env, help: help) { c, v in c.set(flag, String(try Config.int(flag, v, range))) }
        }

        /// A module option with a fixed set of values (empty: unset).
        public static func choice(_ flag: String, env: String, help: String, _ values: [String]) -> Option {
            Option(flag: flag, env: env, help: help) { c, v in
                guard v.isEmpty || values.contains(v) else {
                    throw ConfigError("\(flag) must be \(values.joined(separator: " or "))")
                }
                c.set(flag, v.isEmpty ? nil : v)
            }
        }

        /// A repeatable module option (colon-separated in the environment).
        public static func list(_ flag: String, env: String, help: String) -> Option {
            Option(flag: flag, env: env, help: help, repeatable: true) { c, v in
                c.moduleValues[flag, default: []] += v.split(separator: ":").map(String.init).filter { !$0.isEmpty }
            }
        }
    }

    /// A module option's value (the last one given), nil when unset.
    public func string(_ flag: String) -> String? { moduleValues[flag]?.last }
    /// Every value of a repeatable module option.
    public func strings(_ flag: String) -> [String] { moduleValues[flag] ?? [] }
    public func int(_ flag: String) -> Int? { string(flag).flatMap { Int($0) } }
    public func double(_ flag: String) -> Double? { string(flag).flatMap { Double($0) } }
    /// Sets (or with nil clears) a module option, as a flag would.
    public mutating func set(_ flag: String, _ value: String?) { moduleValues[flag] = value.map { [$0] } }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    static func int(_ name: String, _ v: String, _ range: ClosedRange<Int>) throws -> Int {
        guard let n = Int(v), range.contains(n) else {
            throw ConfigError("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(v)'")
        }
        return n
    }

    static func bool(_ name: String, _ v: String) throws -> Bool {
        switch v.lowercased() {
        case "1", "true", "yes", "on", "": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigError("\(name) must be true or false, got '\(v)'")
        }
    }

    /// The options of the server itself (modules add theirs: `KilnModule.configOptions`).
    public static let coreOptions: [Option] =
        [
            Option(
                flag: "--host", env: "KILN_HOST", help: "address to listen on (default 127.0.0.1; :: for all IPv6+IPv4)"
            ) { c, v in
                c.host = v
            },
            Option(flag: "--port", env: "KILN_PORT", help: "port to listen on (default 8080; 0 picks a free one)") {
                c, v in
                c.port = try int("--port", v, 0...65535)
            },
            Option(
                flag: "--data-dir", env: "KILN_DATA_DIR",
                help: "where kiln.db, master.key and logs live (default ./.kiln)"
            ) { c, v in
                c.dataDir = v
            },
            Option(flag: "--public-dir", env: "KILN_PUBLIC_DIR", help: "the web UI folder (default ./Public)") { c, v in
                c.publicDir = v
            },
            Option(flag: "--tls-cert", env: "KILN_TLS_CERT", help: "PEM certificate chain; serves HTTPS with --tls-key")
            {
                c, v in
                c.tlsCert = v
            },
            Option(flag: "--tls-key", env: "KILN_TLS_KEY", help: "PEM private key") { c, v in c.tlsKey = v },
            Option(flag: "--log-level", env: "KILN_LOG_LEVEL", help: "debug, info, warn or error (default info)") {
                c, v in
                guard ["debug", "info", "warn", "error"].contains(v) else {
                    throw ConfigError("--log-level must be debug, info, warn or error")
                }
                c.logLevel = v
            },
            Option(
                flag: "--secure-cookies", env: "KILN_SECURE_COOKIES", help: "mark cookies Secure (behind a TLS proxy)",
                takesValue: false
            ) { c, v in c.secureCookies = try bool("--secure-cookies", v) },
            Option(
                flag: "--max-body", env: "KILN_MAX_BODY", help: "default request body limit in bytes (default 10485760)"
            ) { c, v in
                c.maxBodyBytes = try int("--max-body", v, 1024...(1 << 34))
            },
            Option(flag: "--event-loops", env: "KILN_EVENT_LOOPS", help: "I/O threads (default: one per core)") {
                c, v in
                c.eventLoops = try int("--event-loops", v, 0...256)
            },
            Option(
                flag: "--min-free-disk-mb", env: "KILN_MIN_FREE_DISK_MB",
                help: "readiness fails below this free space (default 100)"
            ) { c, v in
                c.minFreeDiskMB = try int("--min-free-disk-mb", v, 0...(1 << 30))
            },
            Option(
                flag: "--smtp-url", env: "KILN_SMTP_URL",
                help:
                    "send mail via smtp://user:pass@host:587 (STARTTLS) or smtps://host:465; default: files in <data-dir>/outbox"
            ) { c, v in
                c.smtpURL = v.isEmpty ? nil : v
            },
            Option(
                flag: "--database-url", env: "KILN_DATABASE_URL",
                help:
                    "PostgreSQL instead of SQLite: postgres://user@host:5432/db?sslmode=verify-full "
                    + "(password in the URL or KILN_DATABASE_PASSWORD)"
            ) { c, v in
                if v.isEmpty { return c.databaseURL = nil }
                do { _ = try PostgresConfig(url: v) } catch { throw ConfigError("--database-url: \(error)") }
                c.databaseURL = v
            },
            Option(
                flag: "--database-pool", env: "KILN_DATABASE_POOL",
                help: "PostgreSQL connections per instance (default 16)"
            ) { c, v in
                c.databasePool = try int("--database-pool", v, 1...500)
            },
            Option(
                flag: "--instance-url", env: "KILN_INSTANCE_URL",
                help: "this instance's own URL, for clients sent here by another instance (default: the base URL)"
            ) { c, v in
                c.instanceURL = v.isEmpty ? nil : v
            },
            Option(
                flag: "--instance-timeout", env: "KILN_INSTANCE_TIMEOUT",
                help: "seconds without a heartbeat before an instance's running work is marked lost (default 15)"
            ) { c, v in
                c.instanceTimeout = Double(try int("--instance-timeout", v, 3...3600))
            },
            Option(
                flag: "--mail-from", env: "KILN_MAIL_FROM",
                help: "sender of Kiln's mail (default Kiln <kiln@localhost>)"
            ) { c, v in
                c.mailFrom = v
            },
            Option(
                flag: "--public-url", env: "KILN_PUBLIC_URL",
                help: "external base URL used in links (default http://HOST:PORT)"
            ) { c, v in
                c.publicURL = v
            },
            OutboundGuard.option,
        ] + Sandbox.options

    /// Builds the config from the environment, then flags on top, for `options` (the core's and the
    /// modules'). Unknown flags are errors. Returns the arguments that were not options (positional).
    public static func load(
        arguments: [String], environment: [String: String], options: [Option]
    ) throws -> (Config, [String]) {
        var c = Config()
        for o in options { if let v = environment[o.env] { try o.apply(&c, v) } }
        // Repeatable flags replace what the environment gave, rather than adding to it.
        for o in options where o.repeatable && arguments.contains(where: { $0 == o.flag || $0.hasPrefix(o.flag + "=") })
        {
            c.moduleValues[o.flag] = nil
        }
        var positional: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            i += 1
            guard a.hasPrefix("--") else {
                positional.append(a)
                continue
            }
            let parts = a.split(separator: "=", maxSplits: 1).map(String.init)
            guard let o = options.first(where: { $0.flag == parts[0] }) else {
                throw ConfigError("unknown option \(parts[0]) (see --help)")
            }
            if !o.takesValue {
                try o.apply(&c, parts.count == 2 ? parts[1] : "true")
            } else if parts.count == 2 {
                try o.apply(&c, parts[1])
            } else {
                guard i < arguments.count else { throw ConfigError("\(o.flag) needs a value") }
                try o.apply(&c, arguments[i])
                i += 1
            }
        }
        if (c.tlsCert == nil) != (c.tlsKey == nil) { throw ConfigError("--tls-cert and --tls-key go together") }
        return (c, positional)
    }

    public var isTLS: Bool { tlsCert != nil }

    /// The base URL clients use.
    public func baseURL(boundPort: Int? = nil) -> String {
        if let publicURL { return publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL }
        let h =
            host == "0.0.0.0" || host == "::" || host.isEmpty ? "127.0.0.1" : (host.contains(":") ? "[\(host)]" : host)
        return "\(isTLS ? "https" : "http")://\(h):\(boundPort ?? port)"
    }

    public static func helpText(_ options: [Option]) -> String {
        options.map { o in
            let flag = o.takesValue ? "\(o.flag) VALUE" : o.flag
            // A flag too long for the column gets its help on the next line, never glued to it.
            let lead =
                flag.count < 26
                ? flag.padding(toLength: 26, withPad: " ", startingAt: 0)
                : flag + "\n" + String(repeating: " ", count: 28)
            return "  " + lead + o.help + "  [\(o.env)]"
        }.joined(separator: "\n")
    }
}

extension Config {
    /// The store this configuration names: PostgreSQL at --database-url (its password from the URL
    /// or KILN_DATABASE_PASSWORD), else SQLite at <data-dir>/kiln.db.
    public func openDatabase(
        readers: Int = 4, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        throws -> Database
    {
        if let databaseURL {
            let pg = try PostgresConfig(url: databaseURL, password: environment["KILN_DATABASE_PASSWORD"])
            return try Database(postgres: pg, connections: databasePool)
        }
        return try Database(path: dataDir + "/kiln.db", readers: readers)
    }
}
