import Foundation

/// Where and how to reach a PostgreSQL server: parsed from
/// `postgres://user:pass@host:5432/db?sslmode=verify-full&sslrootcert=/path/ca.crt`.
/// The password may instead come from the environment (`KILN_DATABASE_PASSWORD`), so it need not
/// sit in a process list or a unit file.
public struct PostgresConfig: Sendable, Equatable {
    public enum SSLMode: String, Sendable, CaseIterable {
        /// Plain TCP.
        case disable
        /// TLS when the server offers it, without checking its certificate (libpq's default).
        case prefer
        /// TLS or nothing, without checking the certificate.
        case require
        /// TLS with the certificate checked against the trusted roots, not its name.
        case verifyCA = "verify-ca"
        /// TLS with the certificate checked against the roots and the host name.
        case verifyFull = "verify-full"
    }

    public var host: String
    /// The address to connect to when it differs from `host` (which TLS still checks), as libpq's
    /// `hostaddr`: a name the certificate carries, reached at an address given here.
    public var hostAddress: String?
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    /// CA certificates (PEM) that verify the server; nil: the system's roots.
    public var sslRootCert: String?
    public var connectTimeout: Double
    public var applicationName: String

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public init(
        host: String, port: Int = 5432, user: String, password: String?, database: String,
        sslMode: SSLMode = .prefer, sslRootCert: String? = nil, connectTimeout: Double = 10,
        applicationName: String = "kiln"
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
        self.sslRootCert = sslRootCert
        self.connectTimeout = connectTimeout
        self.applicationName = applicationName
    }

    /// Parses a `postgres://` or `postgresql://` URL. `password` (from the environment) is used when
    /// the URL carries none.
    public init(url: String, password fallback: String? = nil) throws {
        guard let comps = URLComponents(string: url), let scheme = comps.scheme?.lowercased(),
            scheme == "postgres" || scheme == "postgresql"
        else { throw Invalid(description: "the database URL must look like postgres://user@host:5432/db") }
        guard let host = comps.host, !host.isEmpty else {
            throw Invalid(description: "the database URL names no host")
        }
        guard let user = comps.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw Invalid(description: "the database URL names no user (postgres://USER@host/db)")
        }
        let db = String(comps.path.drop(while: { $0 == "/" }))
        guard !db.isEmpty, !db.contains("/") else {
            throw Invalid(description: "the database URL names no database (postgres://user@host/DB)")
        }
        let password = comps.percentEncodedPassword.flatMap { $0.removingPercentEncoding } ?? fallback
        self.init(host: host, port: comps.port ?? 5432, user: user, password: password, database: db)
        guard (1...65535).contains(port) else { throw Invalid(description: "the database port must be 1–65535") }
        for item in comps.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    let modes = SSLMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw Invalid(description: "sslmode must be one of \(modes)")
                }
                sslMode = mode
            case "sslrootcert": sslRootCert = value
            case "hostaddr": hostAddress = value
            case "connect_timeout":
                guard let t = Double(value), t > 0, t <= 300 else {
                    throw Invalid(description: "connect_timeout must be 1–300 seconds")
                }
                connectTimeout = t
            case "application_name": applicationName = value
            default: throw Invalid(description: "the database URL has an unknown parameter \(item.name)")
            }
        }
    }

    /// The URL without its password, for logs, `kiln doctor` and errors.
    public var redacted: String {
        var s = "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
        s += "?sslmode=\(sslMode.rawValue)"
        return s
    }
}
