import KilnHTTP

/// A permission string `area:verb` with what it allows.
public struct Permission: Sendable, Hashable, Codable {
    public let name: String
    public let description: String
    public init(_ name: String, _ description: String) { self.name = name; self.description = description }

    /// Routes anyone may call.
    public static let publicAccess = "public"
    /// Routes any signed-in principal may call (their own account).
    public static let authenticated = "authenticated"
}

/// Who is calling: a signed-in user (session) or an API key, with the permissions they hold.
public struct Principal: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case session(id: String), apiKey(id: String) }
    public let userID: String
    public let kind: Kind
    public let permissions: Set<String>

    public init(userID: String, kind: Kind, permissions: Set<String>) {
        self.userID = userID; self.kind = kind; self.permissions = permissions
    }

    public func can(_ permission: String) -> Bool {
        permission == Permission.publicAccess || permission == Permission.authenticated || permissions.contains(permission)
    }

    /// Throws 403 naming the missing permission.
    public func require(_ permission: String) throws {
        guard can(permission) else { throw APIError.missingPermission(permission) }
    }

    /// A short label for logs: `usr_…` or `key_…`.
    public var logLabel: String {
        switch kind { case .session: userID; case .apiKey(let id): "\(userID)/\(id)" }
    }
}

public enum PrincipalKey: ContextKey { public typealias Value = Principal }

extension RequestContext {
    /// The authenticated caller, or 401.
    public func requirePrincipal() throws -> Principal {
        guard let p = self[PrincipalKey.self] else { throw APIError.unauthenticated() }
        return p
    }
}
