import Foundation
import Glibc

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
            guard depth < 16, !visited.contains(file), let data = FileManager.default.contents(atPath: file), data.count <= 1 << 20 else { return }
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
                        let expanded = pattern.hasPrefix("~/") ? (ProcessInfo.processInfo.environment["HOME"] ?? "") + pattern.dropFirst(1)
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
            for alias in b.patterns where !alias.contains("*") && !alias.contains("?") && !alias.hasPrefix("!") && !seen.contains(alias) {
                seen.insert(alias)
                var values: [String: String] = [:]
                for block in blocks where matches(alias, block.patterns) {
                    for (k, v) in block.options where values[k] == nil { values[k] = v }
                }
                out.append(SSHHost(host: alias, hostName: values["hostname"], user: values["user"], port: values["port"].flatMap { Int($0) },
                                   identityFile: values["identityfile"]))
            }
        }
        return out
    }

    static func split(_ line: String) -> (String, String) {
        var key = "", rest = Substring(line)
        if let i = line.firstIndex(where: { $0 == " " || $0 == "\t" || $0 == "=" }) {
            key = String(line[..<i])
            rest = line[i...].drop { $0 == " " || $0 == "\t" || $0 == "=" }
        } else { key = line; rest = "" }
        return (key, String(rest).trimmingCharacters(in: .whitespaces))
    }

    static func tokens(_ value: String) -> [String] {
        var out: [String] = [], cur = "", quoted = false
        for ch in value {
            if ch == "\"" { quoted.toggle(); continue }
            if (ch == " " || ch == "\t") && !quoted { if !cur.isEmpty { out.append(cur); cur = "" }; continue }
            cur.append(ch)
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// ssh's pattern rule: any positive pattern matches and no negated one does.
    static func matches(_ host: String, _ patterns: [String]) -> Bool {
        var hit = false
        for p in patterns {
            if p.hasPrefix("!") { if fnmatch(String(p.dropFirst()), host, 0) == 0 { return false } }
            else if fnmatch(p, host, 0) == 0 { hit = true }
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
