import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// The origins a browser run may load: `scheme://host[:port]`, the host possibly `*.example.com`
/// (any subdomain, not the bare name) and the port possibly `*`. Without a port only the scheme's
/// default port matches. Every request the page makes is checked against it, and then against the
/// outbound guard: a private or loopback address also needs `--allow-private-network`.
struct Allowlist: Sendable {
    struct Entry: Sendable, Equatable {
        let scheme: String
        let host: String
        /// nil: any port.
        let port: Int?
        let pattern: String
        let note: String

        /// Parses `https://*.example.com`, `http://127.0.0.1:8080`, `http://localhost:*`.
        init?(pattern raw: String, note: String = "") {
            let p = raw.trimmingCharacters(in: .whitespaces)
            guard p.utf8.count <= 300, let sep = p.range(of: "://") else { return nil }
            let scheme = p[..<sep.lowerBound].lowercased()
            guard scheme == "http" || scheme == "https" else { return nil }
            var rest = String(p[sep.upperBound...])
            if rest.hasSuffix("/") { rest.removeLast() }
            guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains("?") else { return nil }
            var host = rest.lowercased()
            var port: Int? = scheme == "https" ? 443 : 80
            if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") {
                let portText = host[host.index(after: colon)...]
                host = String(host[..<colon])
                if portText == "*" {
                    port = nil
                } else {
                    guard let n = Int(portText), (1...65535).contains(n) else { return nil }
                    port = n
                }
            }
            let wildcard = host.hasPrefix("*.")
            let name = wildcard ? String(host.dropFirst(2)) : host
            guard !name.isEmpty, !name.contains("*"),
                name.unicodeScalars.allSatisfy({
                    CharacterSet.alphanumerics.contains($0) || "-._[]:".unicodeScalars.contains($0)
                })
            else { return nil }
            self.scheme = scheme
            self.host = host
            self.port = port
            self.pattern = p
            self.note = note
        }

        func matches(scheme s: String, host h: String, port: Int) -> Bool {
            guard s == scheme, self.port == nil || self.port == port else { return false }
            if host.hasPrefix("*.") { return h.hasSuffix(String(host.dropFirst(1))) }
            return h == host
        }
    }

    let entries: [Entry]

    /// Whether a URL's origin is on the list.
    func allows(_ url: URL) -> Bool {
        guard let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else { return false }
        let port = url.port ?? (scheme == "https" ? 443 : scheme == "http" ? 80 : -1)
        return entries.contains { $0.matches(scheme: scheme, host: host, port: port) }
    }

    static let maxEntries = 100
}

/// Why a request of the page is refused (nil: it may go). Non-network URLs (data:, blob:, about:)
/// go; other schemes, origins off the list and private addresses (without `--allow-private-network`)
/// do not. Host decisions are remembered for the run.
final class RequestGate: Sendable {
    let allowlist: Allowlist
    let guardian: OutboundGuard
    private let decided = Mutex<[String: String?]>([:])

    init(allowlist: Allowlist, guardian: OutboundGuard) {
        self.allowlist = allowlist
        self.guardian = guardian
    }

    /// The allowlist's host names (not wildcards, not address literals) with the first address the
    /// outbound guard admits for each; a name it refuses is left out (its requests are refused anyway).
    func pins() async -> [(host: String, address: IPAddress)] {
        var out: [(host: String, address: IPAddress)] = []
        for e in allowlist.entries where !e.host.hasPrefix("*.") && !e.host.hasPrefix("[") && IPAddress(e.host) == nil {
            guard !out.contains(where: { $0.host == e.host }), let all = try? await guardian.lookup(e.host),
                // An IPv4 address when there is one (a server listening on 127.0.0.1 only is common).
                let a = all.first(where: \.isV4) ?? all.first
            else { continue }
            out.append((e.host, a))
        }
        return out
    }

    func refusal(_ raw: String) async -> String? {
        guard let url = URL(string: raw), let scheme = url.scheme?.lowercased() else { return "not a valid URL" }
        if ["data", "blob", "about"].contains(scheme) { return nil }
        guard scheme == "http" || scheme == "https" else { return "\(scheme): URLs are not loaded" }
        guard allowlist.allows(url) else {
            return "\(scheme)://\(url.host ?? "")\(url.port.map { ":\($0)" } ?? "") is not on the workspace's allowlist"
        }
        let host = (url.host ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if let known = decided.withLock({ $0[host] }) { return known }
        var why: String? = nil
        do { _ = try await guardian.lookup(host) } catch { why = String(describing: error) }
        decided.withLock { $0[host] = .some(why) }
        return why
    }
}
