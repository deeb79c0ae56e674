import Foundation
import Glibc
import KilnCore
import KilnHTTP

/// Kiln's own git. Every call runs with an empty private HOME, no system or global config, no
/// prompts, hooks and fsmonitor off, and only https, ssh and (inside the project roots) file
/// transports. A clone is Kiln's tool and runs outside the sandbox, to an address the outbound
/// guard checked; git in a project folder (status, ls-files, rev-parse) reads that folder's own
/// `.git/config`, which the project's users can write (a `core.fsmonitor` or filter there names a
/// program git runs), so it runs in the sandbox like their own commands.
struct Git: Sendable {
    let sandbox: Sandbox
    let outbound: OutboundGuard
    /// An empty folder for HOME (`<data-dir>/git-home`).
    let home: String
    /// Real paths of the project roots (file:// clones must come from inside them).
    let roots: [String]

    static var installed: Bool { ProcessRunner.which("git") != nil }

    /// Settings on every call: no hooks, no fsmonitor, no credential helpers or prompts, no
    /// redirects, and transports off unless allowed below.
    static let hardening = [
        "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "credential.helper=",
        "-c", "core.askPass=", "-c", "http.followRedirects=false", "-c", "protocol.allow=never",
    ]

    static let variables = [
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false", "GIT_OPTIONAL_LOCKS": "0",
    ]

    var environment: [String: String] { Sandbox.toolEnvironment(home: home, extra: Self.variables) }

    // MARK: In a project folder

    /// Runs `git <args>` in the project folder `root` in the sandbox of `owner` (the project's id):
    /// nil when git is missing, the sandbox is unusable, or git fails.
    func local(_ args: [String], root: String, owner: String, timeout: Double) async -> ProcessRunner.Output? {
        guard Self.installed else { return nil }
        let argv = ["git"] + Self.hardening + ["-C", root] + args
        guard
            let launch = try? sandbox.launch(
                argv, workspace: owner, project: root, cwd: root, environment: Self.variables),
            let out = try? await ProcessRunner.run(launch, timeout: timeout), out.status == 0
        else { return nil }
        return out
    }

    // MARK: Cloning

    /// A repository address a user may clone: https or ssh to a host the outbound guard allows
    /// (pinned to the address it checked), or file:// inside the project roots. Credentials in the
    /// address are refused: they would be stored, audited and shown to every member.
    struct Source: Sendable {
        enum Transport: String, Sendable { case https, ssh, file }
        let transport: Transport
        /// What git is given (for ssh: the checked address in place of the name).
        let url: String
        /// Extra `-c` settings (https: the name pinned to the checked address).
        let settings: [String]
        /// ssh: the host name for known_hosts, when the URL now carries its address.
        let hostKeyAlias: String?
        /// The name the folder is called after.
        let lastComponent: String
    }

    func source(_ text: String) async throws -> Source {
        func bad(_ message: String) -> HTTPError { APIError.validation(message, field: "git_url") }
        guard text.utf8.count <= 2048, !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f })
        else {
            throw bad("git_url must be a URL of at most 2048 characters without spaces or control characters")
        }
        guard let parts = URLComponents(string: text), let scheme = parts.scheme?.lowercased() else {
            throw bad("git_url is not a valid URL")
        }
        guard let transport = Source.Transport(rawValue: scheme) else {
            throw bad("git_url must use https://, ssh:// or file://")
        }
        guard parts.password == nil, transport == .ssh || parts.user == nil else {
            throw bad(
                "git_url may not carry credentials; Kiln clones public https repositories, "
                    + "or over ssh with the server's keys"
            )
        }
        guard parts.query == nil, parts.fragment == nil else { throw bad("git_url may not have a query or fragment") }
        let path = parts.percentEncodedPath
        let last = path.split(separator: "/").last.map(String.init) ?? "repo"
        switch transport {
        case .file:
            guard parts.host == nil || parts.host == "" || parts.host == "localhost" else {
                throw bad("a file:// git_url names a folder on this server (file:///path)")
            }
            let decoded = parts.path
            guard decoded.hasPrefix("/"), !decoded.split(separator: "/").contains(".."),
                let real = SafePath.real(decoded), roots.contains(where: { SafePath.isInside(real, root: $0) })
            else {
                throw bad("a file:// git_url must name a repository inside the project roots")
            }
            return Source(
                transport: .file, url: "file://" + real, settings: ["-c", "protocol.file.allow=always"],
                hostKeyAlias: nil, lastComponent: last)
        case .https, .ssh:
            guard let host = parts.host, !host.isEmpty, host.utf8.count <= 253,
                host.utf8.allSatisfy({ isalnum(Int32($0)) != 0 || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") })
                    || IPAddress(host) != nil
            else { throw bad("git_url has no valid host") }
            let address: IPAddress
            do {
                address = try await outbound.lookup(host).first!
            } catch let refused as OutboundGuard.Refused {
                throw bad("git_url cannot be reached: \(refused.description)")
            }
            let literal = address.isV4 ? address.description : "[\(address.description)]"
            if transport == .https {
                let port = parts.port ?? 443
                return Source(
                    transport: .https, url: text,
                    settings: [
                        "-c", "protocol.https.allow=always", "-c", "http.curloptResolve=\(host):\(port):\(literal)",
                    ], hostKeyAlias: nil, lastComponent: last)
            }
            guard parts.user.map({ $0.utf8.allSatisfy { isalnum(Int32($0)) != 0 || "._-".utf8.contains($0) } }) ?? true
            else { throw bad("git_url's user name may hold letters, digits, '.', '_' and '-'") }
            let url =
                "ssh://" + (parts.user.map { $0 + "@" } ?? "") + literal + (parts.port.map { ":\($0)" } ?? "") + path
            return Source(
                transport: .ssh, url: url, settings: ["-c", "protocol.ssh.allow=always"], hostKeyAlias: host,
                lastComponent: last)
        }
    }

    /// Why a clone failed, by class (git's own text is not shown: it can carry the server's paths
    /// and what a remote chose to print).
    static func failure(_ out: ProcessRunner.Output) -> String {
        if out.status == 124 { return "the clone timed out" }
        let e = out.stderr.lowercased()
        let classes: [([String], String)] = [
            (
                ["not found", "does not appear to be a git repository", "does not exist"],
                "the repository was not found"
            ),
            (
                ["authentication failed", "could not read username", "terminal prompts disabled", "permission denied"],
                "the remote asked for credentials Kiln does not have"
            ),
            (["host key verification failed"], "the ssh host's key is not in the server's known_hosts"),
            (["redirect"], "the remote answered with a redirect, which Kiln does not follow"),
            (["not allowed", "unsupported protocol"], "that transport is not allowed"),
            (["ssl", "certificate", "tls"], "the remote's TLS certificate was not accepted"),
            (
                [
                    "could not resolve", "connection refused", "timed out", "unable to access",
                    "network is unreachable",
                    "could not connect", "connection reset",
                ], "could not reach the remote"
            ),
        ]
        for (needles, message) in classes where needles.contains(where: { e.contains($0) }) { return message }
        return "git clone failed (exit \(out.status))"
    }

    /// Clones `source` into `dest` (which must not exist); removes what it left on failure.
    func clone(_ source: Source, into dest: String) async throws {
        var env = environment
        var ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=15"
        if let alias = source.hostKeyAlias { ssh += " -o HostKeyAlias=\(alias)" }
        env["GIT_SSH_COMMAND"] = ssh
        let args =
            Self.hardening + source.settings + ["clone", "--quiet", "--no-recurse-submodules", "--", source.url, dest]
        let out = try await ProcessRunner.run("git", args, environment: env, timeout: 900)
        guard out.status == 0 else {
            try? FileManager.default.removeItem(atPath: dest)
            throw HTTPError(
                .badRequest, code: "validation_failed", message: "git clone failed: \(Self.failure(out))",
                details: ["field": "git_url"])
        }
    }
}
