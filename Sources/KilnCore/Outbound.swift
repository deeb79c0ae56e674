import Foundation
import Glibc
import KilnHTTP

/// An IPv4 or IPv6 address as 4 or 16 bytes.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]
    public var isV4: Bool { bytes.count == 4 }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// An address literal in any spelling a resolver accepts: IPv4 dotted, decimal, octal, hex and
    /// short forms (`127.1`, `2130706433`, `0177.0.0.1`, `0x7f.1`), IPv6, bracketed IPv6, IPv4-mapped.
    public init?(_ text: String) {
        var s = text
        if s.hasPrefix("[") && s.hasSuffix("]") { s = String(s.dropFirst().dropLast()) }
        if let zone = s.firstIndex(of: "%") { s = String(s[..<zone]) }  // fe80::1%eth0
        guard !s.isEmpty, s.utf8.count <= 64 else { return nil }
        if s.contains(":") {
            var a6 = in6_addr()
            guard inet_pton(AF_INET6, s, &a6) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &a6) { Array($0) }
        } else {
            // inet_aton takes every historical IPv4 spelling, as the C library's resolver does.
            guard
                s.utf8.allSatisfy({
                    isxdigit(Int32($0)) != 0 || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "x")
                        || $0 == UInt8(ascii: "X")
                })
            else { return nil }
            var a4 = in_addr()
            guard inet_aton(s, &a4) != 0 else { return nil }
            bytes = withUnsafeBytes(of: &a4.s_addr) { Array($0) }
        }
    }

    /// The IPv4 address an IPv6 one carries (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
    /// NAT64 `64:ff9b::/96`, 6to4 `2002:AABB:CCDD::/16`), if any.
    public var embeddedV4: IPAddress? {
        guard bytes.count == 16 else { return nil }
        let b = bytes
        if b[0..<10].allSatisfy({ $0 == 0 }) && ((b[10] == 0xff && b[11] == 0xff) || (b[10] == 0 && b[11] == 0)) {
            return IPAddress(bytes: Array(b[12..<16]))
        }
        if b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4..<12].allSatisfy({ $0 == 0 }) {
            return IPAddress(bytes: Array(b[12..<16]))
        }
        if b[0] == 0x20 && b[1] == 0x02 { return IPAddress(bytes: Array(b[2..<6])) }
        return nil
    }

    public var description: String {
        if isV4 { return bytes.map(String.init).joined(separator: ".") }
        var a6 = in6_addr()
        withUnsafeMutableBytes(of: &a6) { $0.copyBytes(from: bytes) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &a6, &buf, socklen_t(buf.count))
        return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An address range `a.b.c.d/n` or `x::/n`.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let base: IPAddress
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let base = IPAddress(parts[0]) else { return nil }
        let max = base.bytes.count * 8
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...max).contains(p) else { return nil }
            prefix = p
        } else {
            prefix = max
        }
        self.base = base
    }

    public func contains(_ a: IPAddress) -> Bool {
        guard a.bytes.count == base.bytes.count else { return false }
        var left = prefix
        for i in 0..<a.bytes.count where left > 0 {
            let bits = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if a.bytes[i] & mask != base.bytes[i] & mask { return false }
            left -= bits
        }
        return true
    }

    public var description: String { "\(base)/\(prefix)" }
}

/// Decides whether Kiln may connect to a host for a user (git clones, MCP servers, webhooks, browser
/// runs): names are resolved once, every address they resolve to must be public, and the caller then
/// connects to the address that was checked (a second lookup could answer differently). Loopback,
/// private, link-local (cloud metadata among them), unique-local, shared, multicast and reserved
/// ranges are refused unless the operator lists them (`--allow-private-network CIDR`).
public struct OutboundGuard: Sendable {
    public let allowed: [CIDR]

    public init(allowed: [CIDR] = []) { self.allowed = allowed }

    public static let flag = "--allow-private-network"

    /// `--allow-private-network CIDR`, repeatable (comma-separated in the environment).
    public static let option = Config.Option(
        flag: flag, env: "KILN_ALLOW_PRIVATE_NETWORK",
        help: "a private address range Kiln may connect to for users (e.g. 127.0.0.1/32, 10.0.0.0/8); repeatable",
        repeatable: true
    ) { c, v in
        for part in v.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard CIDR(part) != nil else {
                throw Config.ConfigError("\(flag): '\(part)' is not an address range like 10.0.0.0/8")
            }
            c.moduleValues[flag, default: []].append(part)
        }
    }

    public init(config: Config) { self.init(allowed: config.strings(Self.flag).compactMap(CIDR.init)) }

    /// Ranges no user-directed connection may reach by default (RFC 6890 special-purpose registries).
    static let refused: [CIDR] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
        "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "2001:db8::/32", "100::/64",
        "fd00:ec2::254/128",
    ].compactMap(CIDR.init)

    /// Why `address` may not be reached (nil: it may).
    public func refusal(_ address: IPAddress) -> String? {
        if allowed.contains(where: { $0.contains(address) }) { return nil }
        if let v4 = address.embeddedV4 { return refusal(v4) }
        if let r = Self.refused.first(where: { $0.contains(address) }) {
            return "\(address) is a private or reserved address (\(r)); an administrator can allow it with \(Self.flag)"
        }
        return nil
    }

    public struct Refused: Error, CustomStringConvertible {
        public let description: String
    }

    /// `resolve` off the cooperative pool (`Blocking`): a lookup can wait seconds on a slow or silent
    /// DNS server.
    public func lookup(_ host: String) async throws -> [IPAddress] {
        if IPAddress(host) != nil { return try resolve(host) }
        let guardian = self
        return try await Blocking.run { try guardian.resolve(host) }
    }

    /// The addresses `host` resolves to, every one of them allowed (an address literal in any
    /// spelling is checked as it is). Throws `Refused` for a forbidden or unknown host.
    public func resolve(_ host: String) throws -> [IPAddress] {
        if let literal = IPAddress(host) {
            if let why = refusal(literal) { throw Refused(description: why) }
            return [literal]
        }
        guard !host.isEmpty, host.utf8.count <= 253 else { throw Refused(description: "the host name is not valid") }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &res) == 0, let first = res else {
            throw Refused(description: "\(host) could not be resolved")
        }
        defer { freeaddrinfo(first) }
        var out: [IPAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let a = p {
            if let sa = a.pointee.ai_addr {
                if a.pointee.ai_family == AF_INET {
                    let v = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                    if let ip = withUnsafeBytes(of: v, { IPAddress(bytes: Array($0)) }), !out.contains(ip) {
                        out.append(ip)
                    }
                } else if a.pointee.ai_family == AF_INET6 {
                    let v = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                    if let ip = withUnsafeBytes(of: v, { IPAddress(bytes: Array($0)) }), !out.contains(ip) {
                        out.append(ip)
                    }
                }
            }
            p = a.pointee.ai_next
        }
        guard !out.isEmpty else { throw Refused(description: "\(host) has no address") }
        // Every address counts: a name answering one public and one private address could be made to
        // lead to the private one.
        for ip in out { if let why = refusal(ip) { throw Refused(description: "\(host) resolves to \(why)") } }
        return out
    }
}
