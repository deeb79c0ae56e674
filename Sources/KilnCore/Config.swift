import Foundation

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
    /// Folders projects may be opened from (default `<data-dir>/projects`).
    public var projectsRoots: [String] = []
    /// SMTP relay for mail; without it mail goes to `<data-dir>/outbox/`.
    public var smtpURL: String? = nil
    public var mailFrom = "Kiln <kiln@localhost>"
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    public var shellGraceSeconds: Double = 3
    /// A project search (a pathological regular expression, say) stops with a 400 after this long.
    public var searchTimeoutSeconds: Double = 10
    /// The ssh client config whose hosts `ssh-run` may reach (default ~/.ssh/config).
    public var sshConfig: String? = nil
    /// A terminal with no viewer for this long is ended.
    public var ptyIdleMinutes: Double = 30
    /// The most terminals one user may hold open.
    public var ptyMaxPerUser = 250
    /// The model provider: an OpenAI-compatible or Anthropic base URL, its key and default model.
    public var llmBaseURL: String? = nil
    public var llmAPIKey: String? = nil
    public var llmModel: String? = nil
    /// `openai` (chat completions) or `anthropic` (messages); guessed from the URL when unset.
    public var llmProvider: String? = nil
    /// Seconds to wait for a provider's answer to start and between its stream chunks.
    public var llmTimeoutSeconds: Double = 120
    /// A JSON price table overriding the built-in one.
    public var pricingFile: String? = nil

    public init() {}

    public struct Option: Sendable {
        public let flag: String
        public let env: String
        public let help: String
        public let takesValue: Bool
        let apply: @Sendable (inout Config, String) throws -> Void
    }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    static func int(_ name: String, _ v: String, _ range: ClosedRange<Int>) throws -> Int {
        guard let n = Int(v), range.contains(n) else { throw ConfigError("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(v)'") }
        return n
    }

    static func bool(_ name: String, _ v: String) throws -> Bool {
        switch v.lowercased() {
        case "1", "true", "yes", "on", "": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigError("\(name) must be true or false, got '\(v)'")
        }
    }

    /// Every option `serve` understands.
    public static let options: [Option] = [
        Option(flag: "--host", env: "KILN_HOST", help: "address to listen on (default 127.0.0.1; :: for all IPv6+IPv4)", takesValue: true) { c, v in c.host = v },
        Option(flag: "--port", env: "KILN_PORT", help: "port to listen on (default 8080; 0 picks a free one)", takesValue: true) { c, v in c.port = try int("--port", v, 0...65535) },
        Option(flag: "--data-dir", env: "KILN_DATA_DIR", help: "where kiln.db, master.key and logs live (default ./.kiln)", takesValue: true) { c, v in c.dataDir = v },
        Option(flag: "--public-dir", env: "KILN_PUBLIC_DIR", help: "the web UI folder (default ./Public)", takesValue: true) { c, v in c.publicDir = v },
        Option(flag: "--tls-cert", env: "KILN_TLS_CERT", help: "PEM certificate chain; serves HTTPS with --tls-key", takesValue: true) { c, v in c.tlsCert = v },
        Option(flag: "--tls-key", env: "KILN_TLS_KEY", help: "PEM private key", takesValue: true) { c, v in c.tlsKey = v },
        Option(flag: "--log-level", env: "KILN_LOG_LEVEL", help: "debug, info, warn or error (default info)", takesValue: true) { c, v in
            guard ["debug", "info", "warn", "error"].contains(v) else { throw ConfigError("--log-level must be debug, info, warn or error") }
            c.logLevel = v
        },
        Option(flag: "--secure-cookies", env: "KILN_SECURE_COOKIES", help: "mark cookies Secure (behind a TLS proxy)", takesValue: false) { c, v in c.secureCookies = try bool("--secure-cookies", v) },
        Option(flag: "--max-body", env: "KILN_MAX_BODY", help: "default request body limit in bytes (default 10485760)", takesValue: true) { c, v in c.maxBodyBytes = try int("--max-body", v, 1024...(1 << 34)) },
        Option(flag: "--event-loops", env: "KILN_EVENT_LOOPS", help: "I/O threads (default: one per core)", takesValue: true) { c, v in c.eventLoops = try int("--event-loops", v, 0...256) },
        Option(flag: "--min-free-disk-mb", env: "KILN_MIN_FREE_DISK_MB", help: "readiness fails below this free space (default 100)", takesValue: true) { c, v in c.minFreeDiskMB = try int("--min-free-disk-mb", v, 0...(1 << 30)) },
        Option(flag: "--projects-root", env: "KILN_PROJECTS_ROOT", help: "a folder projects may be opened from; repeatable (env: colon-separated; default <data-dir>/projects)", takesValue: true) { c, v in
            c.projectsRoots += v.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        },
        Option(flag: "--smtp-url", env: "KILN_SMTP_URL", help: "send mail via smtp://user:pass@host:587 (STARTTLS) or smtps://host:465; default: files in <data-dir>/outbox", takesValue: true) { c, v in c.smtpURL = v.isEmpty ? nil : v },
        Option(flag: "--mail-from", env: "KILN_MAIL_FROM", help: "sender of Kiln's mail (default Kiln <kiln@localhost>)", takesValue: true) { c, v in c.mailFrom = v },
        Option(flag: "--public-url", env: "KILN_PUBLIC_URL", help: "external base URL used in links (default http://HOST:PORT)", takesValue: true) { c, v in c.publicURL = v },
        Option(flag: "--search-timeout", env: "KILN_SEARCH_TIMEOUT", help: "seconds a project search may take before it is stopped (default 10)", takesValue: true) { c, v in c.searchTimeoutSeconds = Double(try int("--search-timeout", v, 1...300)) },
        Option(flag: "--shell-grace", env: "KILN_SHELL_GRACE", help: "seconds between SIGTERM and SIGKILL for cancelled jobs (default 3)", takesValue: true) { c, v in c.shellGraceSeconds = Double(try int("--shell-grace", v, 0...600)) },
        Option(flag: "--ssh-config", env: "KILN_SSH_CONFIG", help: "ssh client config listing the hosts ssh-run may reach (default ~/.ssh/config)", takesValue: true) { c, v in c.sshConfig = v.isEmpty ? nil : v },
        Option(flag: "--pty-idle-minutes", env: "KILN_PTY_IDLE_MINUTES", help: "end a terminal nobody has viewed for this long (default 30)", takesValue: true) { c, v in c.ptyIdleMinutes = Double(try int("--pty-idle-minutes", v, 1...100_000)) },
        Option(flag: "--llm-base-url", env: "KILN_LLM_BASE_URL", help: "model provider base URL, e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible) or https://api.anthropic.com", takesValue: true) { c, v in c.llmBaseURL = v.isEmpty ? nil : v },
        Option(flag: "--llm-api-key", env: "KILN_LLM_API_KEY", help: "the provider's API key (prefer the environment variable)", takesValue: true) { c, v in c.llmAPIKey = v.isEmpty ? nil : v },
        Option(flag: "--llm-model", env: "KILN_LLM_MODEL", help: "the default model name", takesValue: true) { c, v in c.llmModel = v.isEmpty ? nil : v },
        Option(flag: "--llm-provider", env: "KILN_LLM_PROVIDER", help: "openai or anthropic (default: guessed from the URL)", takesValue: true) { c, v in
            guard ["openai", "anthropic", ""].contains(v) else { throw ConfigError("--llm-provider must be openai or anthropic") }
            c.llmProvider = v.isEmpty ? nil : v
        },
        Option(flag: "--llm-timeout", env: "KILN_LLM_TIMEOUT", help: "seconds to wait for provider output (default 120)", takesValue: true) { c, v in c.llmTimeoutSeconds = Double(try int("--llm-timeout", v, 1...3600)) },
        Option(flag: "--pricing", env: "KILN_PRICING", help: "JSON file of model prices (per million tokens) overriding the built-in table", takesValue: true) { c, v in c.pricingFile = v.isEmpty ? nil : v },
    ]

    /// Builds the config from the environment, then flags on top. Unknown flags are errors.
    /// Returns the arguments that were not options (positional).
    public static func load(arguments: [String], environment: [String: String]) throws -> (Config, [String]) {
        var c = Config()
        for o in options { if let v = environment[o.env] { try o.apply(&c, v) } }
        var positional: [String] = []
        // Repeatable flags replace what the environment gave, rather than adding to it.
        if arguments.contains(where: { $0 == "--projects-root" || $0.hasPrefix("--projects-root=") }) { c.projectsRoots = [] }
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a.hasPrefix("--") {
                let parts = a.split(separator: "=", maxSplits: 1).map(String.init)
                guard let o = options.first(where: { $0.flag == parts[0] }) else { throw ConfigError("unknown option \(parts[0]) (see --help)") }
                if o.takesValue {
                    let value: String
                    if parts.count == 2 { value = parts[1] }
                    else { i += 1; guard i < arguments.count else { throw ConfigError("\(o.flag) needs a value") }; value = arguments[i] }
                    try o.apply(&c, value)
                } else {
                    try o.apply(&c, parts.count == 2 ? parts[1] : "true")
                }
            } else {
                positional.append(a)
            }
            i += 1
        }
        if (c.tlsCert == nil) != (c.tlsKey == nil) { throw ConfigError("--tls-cert and --tls-key go together") }
        return (c, positional)
    }

    public var isTLS: Bool { tlsCert != nil }

    /// The base URL clients use.
    public func baseURL(boundPort: Int? = nil) -> String {
        if let publicURL { return publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL }
        let h = host == "0.0.0.0" || host == "::" || host.isEmpty ? "127.0.0.1" : (host.contains(":") ? "[\(host)]" : host)
        return "\(isTLS ? "https" : "http")://\(h):\(boundPort ?? port)"
    }

    public static var helpText: String {
        options.map { o in
            let flag = o.takesValue ? "\(o.flag) VALUE" : o.flag
            return "  " + flag.padding(toLength: 26, withPad: " ", startingAt: 0) + o.help + "  [\(o.env)]"
        }.joined(separator: "\n")
    }
}
