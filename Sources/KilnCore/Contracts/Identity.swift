import Foundation
import KilnHTTP

/// An account as the API shows it. Owned by the auth domain; the other domains see accounts
/// through `UserDirectory` and `AccountOperations`, never through its tables.
public struct User: Codable, Sendable, Equatable, NullEncoding {
    public let id: String
    public let email: String
    public let name: String
    public let emailVerified: Bool
    public let isOwner: Bool
    /// An instance admin (manages accounts and invitations under /api/admin).
    public let isAdmin: Bool
    /// May start processes on the server (shell, terminals, ssh, the agent's commands).
    public let canExecute: Bool
    /// When an instance admin disabled the account (nil: active).
    public let disabledAt: Date?
    public let mfaEnabled: Bool
    public let avatarUrl: String?
    /// When a requested deletion happens (nil: none pending).
    public let deleteAfter: Date?
    public let createdAt: Date

    public init(
        id: String, email: String, name: String, emailVerified: Bool, isOwner: Bool, isAdmin: Bool = false,
        canExecute: Bool = true, disabledAt: Date? = nil, mfaEnabled: Bool, avatarUrl: String?, deleteAfter: Date?,
        createdAt: Date
    ) {
        self.id = id
        self.email = email
        self.name = name
        self.emailVerified = emailVerified
        self.isOwner = isOwner
        self.isAdmin = isAdmin
        self.canExecute = canExecute
        self.disabledAt = disabledAt
        self.mfaEnabled = mfaEnabled
        self.avatarUrl = avatarUrl
        self.deleteAfter = deleteAfter
        self.createdAt = createdAt
    }
}

/// A session as its owner sees it (no token).
public struct SessionInfo: Codable, Sendable, Equatable {
    public let id: String
    public let createdAt: Date
    public let lastSeenAt: Date
    public let expiresAt: Date
    public let ip: String
    public let userAgent: String
    public let current: Bool

    public init(
        id: String, createdAt: Date, lastSeenAt: Date, expiresAt: Date, ip: String, userAgent: String, current: Bool
    ) {
        self.id = id
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
        self.expiresAt = expiresAt
        self.ip = ip
        self.userAgent = userAgent
        self.current = current
    }
}

/// Looks accounts up (implemented by the auth domain).
public protocol UserDirectory: Sendable {
    func user(id: String) async throws -> User?
    func user(email: String) async throws -> User?
}

extension UserDirectory {
    /// Whether the account is active (exists and is not disabled).
    public func isActive(_ userID: String) async throws -> Bool {
        guard let u = try await user(id: userID) else { return false }
        return u.disabledAt == nil
    }
}

/// What changes to a profile a user asked for (each field optional).
public struct ProfileChange: Decodable, Sendable {
    public let name: String?
    public let email: String?
    public let avatarUrl: String?
    public init(name: String?, email: String?, avatarUrl: String?) {
        self.name = name
        self.email = email
        self.avatarUrl = avatarUrl
    }
}

/// The account operations a signed-in user performs on their own account (implemented by the auth
/// domain, which owns accounts and sessions; the account domain serves them).
public protocol AccountOperations: UserDirectory {
    func sessions(userID: String, current: String?) async throws -> [SessionInfo]
    func revokeSession(userID: String, sessionID: String, actorIP: String) async throws
    func changePassword(userID: String, currentSession: String?, old: String, new: String, ip: String) async throws
    /// Returns the account and whether a new email waits for its confirmation.
    func updateProfile(userID: String, _ change: ProfileChange, ip: String) async throws -> (User, emailPending: Bool)
    func requestDelete(userID: String, ip: String) async throws -> Date
    func cancelDelete(userID: String, ip: String) async throws
    /// The auth domain's part of the account export (no password hash, no MFA secret, no tokens).
    func exportSection(userID: String) async throws -> JSONValue
}

extension Permission {
    /// The instance's administration (accounts, invitations, execution rights); no workspace role grants it.
    public static let instanceAdmin = Permission.instance(
        "instance:admin", "Administer the instance: accounts, invitations, admins and who may run commands")
    /// A user's own account, used by the auth domain (which registers them) and the account domain.
    public static let accountRead = Permission.user(
        "account:read", "Read your own account: profile, sessions, API keys, your audit events, the data export")
    public static let accountWrite = Permission.user(
        "account:write", "Change your own account: profile, password, two-factor, sessions, API keys, deletion")
}
