import Foundation

/// Cookie parsing (`Cookie` request header).
public enum Cookies {
    public static func parse(_ headerValues: [String]) -> [String: String] {
        var out: [String: String] = [:]
        for line in headerValues {
            for pair in line.split(separator: ";") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = trimOWS(kv[0])
                guard !name.isEmpty, kv.count == 2 else { continue }
                var value = trimOWS(kv[1])
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                    value = String(value.dropFirst().dropLast())
                }
                if out[name] == nil { out[name] = value }
            }
        }
        return out
    }
}

/// A `Set-Cookie` header value with every attribute of RFC 6265bis.
public struct SetCookie: Sendable, Equatable {
    public enum SameSite: String, Sendable { case strict = "Strict", lax = "Lax", none = "None" }

    public var name: String
    public var value: String
    public var expires: Date?
    public var maxAge: Int?
    public var domain: String?
    public var path: String?
    public var secure: Bool
    public var httpOnly: Bool
    public var sameSite: SameSite?
    public var partitioned: Bool

    public init(
        name: String, value: String, expires: Date? = nil, maxAge: Int? = nil, domain: String? = nil,
        path: String? = "/", secure: Bool = false, httpOnly: Bool = true, sameSite: SameSite? = .lax,
        partitioned: Bool = false
    ) {
        self.name = name
        self.value = value
        self.expires = expires
        self.maxAge = maxAge
        self.domain = domain
        self.path = path
        self.secure = secure
        self.httpOnly = httpOnly
        self.sameSite = sameSite
        self.partitioned = partitioned
    }

    /// True when name is a token and value uses only cookie-octets (no CTLs, space, `"`, `,`, `;`, `\`).
    public var isValid: Bool {
        !name.isEmpty && name.utf8.allSatisfy(isTokenChar)
            && value.utf8.allSatisfy {
                $0 == 0x21 || (0x23...0x2B).contains($0) || (0x2D...0x3A).contains($0) || (0x3C...0x5B).contains($0)
                    || (0x5D...0x7E).contains($0)
            }
            && [domain, path].allSatisfy {
                $0.map { !$0.utf8.contains { $0 < 0x20 || $0 == 0x3B || $0 == 0x7F } } ?? true
            }
    }

    public var headerValue: String {
        var s = "\(name)=\(value)"
        if let expires { s += "; Expires=\(HTTPDate.format(expires))" }
        if let maxAge { s += "; Max-Age=\(maxAge)" }
        if let domain { s += "; Domain=\(domain)" }
        if let path { s += "; Path=\(path)" }
        if secure || sameSite == SameSite.none || partitioned { s += "; Secure" }
        if httpOnly { s += "; HttpOnly" }
        if let sameSite { s += "; SameSite=\(sameSite.rawValue)" }
        if partitioned { s += "; Partitioned" }
        return s
    }
}
