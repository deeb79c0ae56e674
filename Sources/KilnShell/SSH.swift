import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP

/// One concrete host of an ssh client config.
public struct SSHHost: Codable, Sendable, Equatable {
    public let host: String
    public let hostName: String?
    public let user: String?
    public let port: Int?
    public let identityFile: String?

    enum CodingKeys: String, CodingKey { case host, hostName = "hostname", user, port, identityFile = "identity_file" }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(host, forKey: .host)
        try c.encode(hostName, forKey: .hostName)
        try c.encode(user, forKey: .user)
        try c.encode(port, forKey: .port)
        try c.encode(identityFile, forKey: .identityFile)
    }
}

/// Reads `Host` blocks of an ssh client config (ssh_config(5)): aliases without wildcards or negation,
/// with the first value obtained for HostName, User, Port and IdentityFile (ssh's own rule), following
/// `Include` (globs; relative paths are under ~/.ssh). `Match` blocks are skipped.
public enum SSHConfig {
    public static func defaultPath() -> String {
        (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.ssh/config"
    }

    public static func hosts(path: String) -> [SSHHost] {
        // Options before the first Host apply to every host.
        var blocks: [(patterns: [String], options: [(String, String)])] = [(["*"], [])]
        var current = 0
        var visited = Set<String>()
        let sshDir = (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.ssh"

        func parse(_ file: String, depth: Int) {
            guard depth < 16, !visited.contains(file), let data = FileManager.default.contents(atPath: file),
                data.count <= 1 << 20
            else { return }
            visited.insert(file)
            for raw in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline) {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line.hasPrefix("#") { continue }
                let (key, value) = split(line)
                switch key.lowercased() {
                case "host":
                    blocks.append((tokens(value), []))
                    current = blocks.count - 1
                case "match":
                    // Match criteria are not evaluated: their options apply to no listed host.
                    blocks.append(([], []))
                    current = blocks.count - 1
                case "include":
                    for pattern in tokens(value) {
                        let expanded =
                            pattern.hasPrefix("~/")
                            ? (ProcessInfo.processInfo.environment["HOME"] ?? "") + pattern.dropFirst(1)
                            : pattern.hasPrefix("/") ? pattern : sshDir + "/" + pattern
                        for f in glob(expanded) { parse(f, depth: depth + 1) }
                    }
                default:
                    blocks[current].options.append((key.lowercased(), value))
                }
            }
        }
        parse(path, depth: 0)

        var seen = Set<String>()
        var out: [SSHHost] = []
        for b in blocks {
            for alias in b.patterns
            where !alias.contains("*") && !alias.contains("?") && !alias.hasPrefix("!") && !seen.contains(alias) {
                seen.insert(alias)
                var values: [String: String] = [:]
                for block in blocks where matches(alias, block.patterns) {
                    for (k, v) in block.options where values[k] == nil { values[k] = v }
                }
                out.append(
                    SSHHost(
                        host: alias, hostName: values["hostname"], user: values["user"],
                        port: values["port"].flatMap { Int($0) },
                        identityFile: values["identityfile"]))
            }
        }
        return out
    }

    static func split(_ line: String) -> (String, String) {
        var key = ""
        var rest = Substring(line)
        if let i = line.firstIndex(where: { $0 == " " || $0 == "\t" || $0 == "=" }) {
            key = String(line[..<i])
            rest = line[i...].drop { $0 == " " || $0 == "\t" || $0 == "=" }
        } else {
            key = line
            rest = ""
        }
        return (key, String(rest).trimmingCharacters(in: .whitespaces))
    }

    static func tokens(_ value: String) -> [String] {
        var out: [String] = []
        var cur = ""
        var quoted = false
        for ch in value {
            if ch == "\"" {
                quoted.toggle()
                continue
            }
            if (ch == " " || ch == "\t") && !quoted {
                if !cur.isEmpty {
                    out.append(cur)
                    cur = ""
                }
                continue
            }
            cur.append(ch)
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// ssh's pattern rule: any positive pattern matches and no negated one does.
    static func matches(_ host: String, _ patterns: [String]) -> Bool {
        var hit = false
        for p in patterns {
            if p.hasPrefix("!") {
                if fnmatch(String(p.dropFirst()), host, 0) == 0 { return false }
            } else if fnmatch(p, host, 0) == 0 {
                hit = true
            }
        }
        return hit
    }

    static func glob(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard Glibc.glob(pattern, 0, nil, &g) == 0 else { return [] }
        return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }.sorted()
    }
}

/// `ssh-run` and `ssh-pull`: Kiln's own ssh client to the hosts of the server's ssh config.
extension ShellService {
    var sshOptions: [String] {
        ["-F", sshConfigPath, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15"]
    }

    /// What ssh and scp see: a built environment, with the agent socket only under `--ssh-agent`.
    var toolEnvironment: [String: String] {
        var extra: [String: String] = [:]
        if passSSHAgent, let sock = ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"] {
            extra["SSH_AUTH_SOCK"] = sock
        }
        return Sandbox.toolEnvironment(home: ProcessInfo.processInfo.environment["HOME"] ?? "/", extra: extra)
    }

    func sshHosts() -> [SSHHost] { SSHConfig.hosts(path: sshConfigPath) }

    func sshHost(_ name: String) throws -> SSHHost {
        guard let h = sshHosts().first(where: { $0.host == name }) else {
            throw HTTPError(
                .badRequest, code: "validation_failed",
                message: "'\(name.prefix(100))' is not a host of the server's ssh config (GET /api/shell/ssh-hosts)",
                details: ["field": "host"])
        }
        return h
    }

    func sshRun(
        _ input: SSHRunInput, access: WorkspaceAccess, userID: String, grants: [PolicyGrant] = []
    ) async throws -> String {
        try Validate.command(input.command)
        let host = try sshHost(input.host)
        guard ProcessRunner.which("ssh") != nil else {
            throw APIError.programMissing("ssh", install: "apt-get install openssh-client")
        }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/"
        var spec = JobSpec(
            wsID: access.wsID, projectID: nil, userID: userID, kind: "ssh", command: input.command,
            argv: ["ssh"] + sshOptions + ["--", host.host, input.command], cwd: home, displayCwd: "~",
            timeout: try Self.timeout(input.timeoutS), host: host.host, isKilnTool: true)
        spec.grants = grants
        let parked = spec
        return try await approvals.parking(
            wsID: access.wsID, userID: userID, kind: "ssh.run", payload: ["input": try JSONValue(encoding: input)],
            grants: grants
        ) { try await start(parked) }
    }

    /// Copies a remote file into the project (to a temporary name first, then renamed into place).
    /// The workspace's policy judges it (`ssh.pull`, with the host); a held pull runs on approval and
    /// its result shows on the approval.
    func sshPull(
        _ input: SSHPullInput, access: WorkspaceAccess, userID: String, grants: [PolicyGrant] = []
    ) async throws -> JSONValue {
        let remote = input.remotePath
        guard !remote.isEmpty, remote.utf8.count <= 4096, !remote.hasPrefix("-"),
            !remote.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f })
        else {
            throw APIError.validation(
                "remote_path must be 1 to 4096 printable bytes and not start with '-'", field: "remote_path")
        }
        let host = try sshHost(input.host)
        let project = try await projects.resolve(input.projectId, access: access, userID: userID)
        let dest = try SafePath.resolveForCreate(root: project.root, relative: input.destPath, field: "dest_path")
        var st = stat()
        if stat(dest, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            throw APIError.validation("dest_path is a directory", field: "dest_path")
        }
        guard ProcessRunner.which("scp") != nil else {
            throw APIError.programMissing("scp", install: "apt-get install openssh-client")
        }
        if let policy {
            var fixed = input
            fixed.projectId = project.id
            try await approvals.parking(
                wsID: access.wsID, userID: userID, kind: "ssh.pull", payload: ["input": try JSONValue(encoding: fixed)],
                grants: grants
            ) {
                try await policy.check(
                    wsID: access.wsID, userID: userID, action: "ssh.pull",
                    context: PolicyContext(path: input.destPath, host: host.host), grants: grants)
            }
        }
        let tmp = (dest as NSString).deletingLastPathComponent + "/.kiln-pull-" + IDs.randomBase62(12)
        defer { unlink(tmp) }
        let r = try await ProcessRunner.run(
            "scp", ["-q"] + sshOptions + ["--", "\(host.host):\(remote)", tmp], environment: toolEnvironment,
            timeout: 600)
        guard r.status == 0 else {
            throw HTTPError(
                HTTPStatus(502), code: "unavailable",
                message: "scp failed: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).prefix(500))")
        }
        guard rename(tmp, dest) == 0 else { throw APIError.conflict("Could not place the file at dest_path") }
        let bytes = FileManager.default.contents(atPath: dest) ?? Data()
        return .object([
            "path": .string(String(dest.dropFirst(project.root.count + 1))), "size": .int(bytes.count),
            "host": .string(host.host),
            "sha256": .string(Crypto.hex(Crypto.sha256(Array(bytes)))),
        ])
    }
}
