import Foundation
import KilnHTTP
import KilnStore
import Synchronization

/// A permission `area:verb`: what it allows, where it is checked, and the lowest workspace role that
/// holds it. Each module declares its own as constants and lists them in `permissions`; a route
/// names one of these values, never a string.
public struct Permission: Sendable, Hashable {
    /// `instance`: held by instance admins only, never granted by a workspace role.
    public enum Scope: String, Sendable { case workspace, user, instance, special }
    public let name: String
    public let description: String
    public let scope: Scope
    /// For workspace permissions: granted to this role and every role above it.
    public let minimumRole: Role
    /// Starts processes on the server: also needs an account an instance admin allowed to execute.
    public let execution: Bool

    /// A permission checked against the caller's role in the request's workspace.
    public init(_ name: String, _ description: String, minimumRole: Role = .viewer, execution: Bool = false) {
        self.init(name, description, scope: .workspace, minimumRole: minimumRole, execution: execution)
    }

    init(_ name: String, _ description: String, scope: Scope, minimumRole: Role = .viewer, execution: Bool = false) {
        self.name = name
        self.description = description
        self.scope = scope
        self.minimumRole = minimumRole
        self.execution = execution
    }

    /// A permission about the caller's own account, not checked in a workspace.
    public static func user(_ name: String, _ description: String) -> Permission {
        Permission(name, description, scope: .user)
    }

    /// A permission of the instance's administrators (no workspace role grants it).
    public static func instance(_ name: String, _ description: String) -> Permission {
        Permission(name, description, scope: .instance)
    }

    /// Checked against the caller's role in the request's workspace (`ws_id`), else user-level.
    public var workspaceScoped: Bool { scope == .workspace }
    /// One of the three access levels below, which no module registers.
    public var isSpecial: Bool { scope == .special }

    /// Routes anyone may call.
    public static let publicAccess = Permission("public", "Anyone", scope: .special)
    /// Routes any signed-in principal may call, including a session still waiting for its second factor.
    public static let session = Permission(
        "session", "Any session, even one that still owes its second factor", scope: .special)
    /// Routes any fully signed-in principal may call.
    public static let authenticated = Permission("authenticated", "Any signed-in caller", scope: .special)
    /// Routes anyone may call where no credential is even read (a share link's page: a visitor's
    /// session cookie is neither looked up nor refreshed there).
    public static let anonymous = Permission("anonymous", "Anyone; no credential is read", scope: .special)
}

/// Workspace roles and what each grants.
public enum Role: String, Sendable, Codable, CaseIterable, Comparable, SchemaEnum {
    case viewer, member, admin, owner
    var rank: Int {
        switch self {
        case .viewer: 0
        case .member: 1
        case .admin: 2
        case .owner: 3
        }
    }
    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

/// Every permission, and which roles grant which. Modules add theirs at registration.
public final class PermissionCatalog: Sendable {
    struct State {
        var permissions: [String: Permission] = [:]
        var grants: [Role: Set<String>] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// Registers `permission`, granted to `minimumRole` and every role above it (an instance
    /// permission to no role).
    public func register(_ permission: Permission) {
        state.withLock { s in
            s.permissions[permission.name] = permission
            for r in Role.allCases where r >= permission.minimumRole && permission.scope != .instance {
                s.grants[r, default: []].insert(permission.name)
            }
        }
    }

    public var all: [Permission] { state.withLock { $0.permissions.values.sorted { $0.name < $1.name } } }
    public func permission(_ name: String) -> Permission? { state.withLock { $0.permissions[name] } }
    public func grants(_ role: Role) -> Set<String> { state.withLock { $0.grants[role] ?? [] } }
    public func roles(granting name: String) -> [Role] { Role.allCases.filter { grants($0).contains(name) } }

    /// What a user may hold at most: every user-level permission, what their highest role grants,
    /// and the instance permissions when they are an instance admin.
    public func permissions(forHighestRole role: Role?, isAdmin: Bool = false) -> Set<String> {
        var out = Set(all.filter { $0.scope == .user || (isAdmin && $0.scope == .instance) }.map(\.name))
        if let role { out.formUnion(grants(role)) }
        return out
    }
}

/// Who is calling: a browser session or an API key, with what limits it.
public struct Principal: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case session(id: String), apiKey(id: String) }
    public let userID: String
    public let kind: Kind
    /// API-key scopes (nil for sessions: the user's own permissions apply unnarrowed).
    public let scopes: Set<String>?
    public let mfaEnabled: Bool
    /// When this session last proved its owner (the password at sign-in or step-up, or the second
    /// factor when MFA is on): step-up routes want it within 15 minutes.
    public let mfaVerifiedAt: Date?
    /// A session that passed the password but still owes its TOTP code.
    public let mfaPending: Bool
    public let csrfToken: String?
    /// An instance admin (routes under /api/admin).
    public let isAdmin: Bool
    /// May start processes (shell, terminals, ssh, the agent's commands): an instance admin decides
    /// for accounts that registered themselves.
    public let canExecute: Bool

    public init(
        userID: String, kind: Kind, scopes: Set<String>? = nil, mfaEnabled: Bool = false, mfaVerifiedAt: Date? = nil,
        mfaPending: Bool = false, csrfToken: String? = nil, isAdmin: Bool = false, canExecute: Bool = true
    ) {
        self.userID = userID
        self.kind = kind
        self.scopes = scopes
        self.mfaEnabled = mfaEnabled
        self.mfaVerifiedAt = mfaVerifiedAt
        self.mfaPending = mfaPending
        self.csrfToken = csrfToken
        self.isAdmin = isAdmin
        self.canExecute = canExecute
    }

    public var sessionID: String? { if case .session(let id) = kind { id } else { nil } }
    public var apiKeyID: String? { if case .apiKey(let id) = kind { id } else { nil } }

    /// Whether API-key scopes allow `permission` (sessions are not narrowed).
    public func scopeAllows(_ permission: String) -> Bool {
        guard let scopes else { return true }
        return [
            Permission.publicAccess.name, Permission.session.name, Permission.authenticated.name,
            Permission.anonymous.name,
        ].contains(permission)
            || scopes.contains(permission)
    }

    /// Sensitive actions need the account's owner proved within 15 minutes: the second factor when
    /// MFA is on, else the password (`POST /api/auth/step-up`). An API key cannot prove either (403).
    public func requireStepUp(now: Date, maxAge: TimeInterval = Principal.stepUpMaxAge) throws {
        guard sessionID != nil else {
            throw HTTPError(
                .forbidden, code: "step_up_required",
                message: "This needs a signed-in session that confirms it again; an API key cannot")
        }
        if let at = mfaVerifiedAt, now.timeIntervalSince(at) <= maxAge, at <= now.addingTimeInterval(60) { return }
        throw HTTPError(
            .unauthorized, code: "step_up_required",
            message: mfaEnabled
                ? "Confirm with your second factor (POST /api/auth/step-up with code) and try again"
                : "Confirm with your password (POST /api/auth/step-up with password) and try again",
            headers: ["WWW-Authenticate": "step-up max_age=\(Int(maxAge))"])
    }

    public static let stepUpMaxAge: TimeInterval = 900

    /// A short label for logs: `usr_…` or `usr_…/key_…`.
    public var logLabel: String {
        switch kind {
        case .session: userID
        case .apiKey(let id): "\(userID)/\(id)"
        }
    }
}

public enum PrincipalKey: ContextKey { public typealias Value = Principal }
/// The caller's role in the request's workspace, when the route is workspace-scoped.
public enum WorkspaceRoleKey: ContextKey { public typealias Value = WorkspaceAccess }

public struct WorkspaceAccess: Sendable, Equatable {
    public let wsID: String
    public let role: Role
    public init(wsID: String, role: Role) {
        self.wsID = wsID
        self.role = role
    }
}

extension RequestContext {
    /// The authenticated caller, or 401.
    public func requirePrincipal() throws -> Principal {
        guard let p = self[PrincipalKey.self] else { throw APIError.unauthenticated() }
        return p
    }

    /// The workspace the access check admitted the caller to.
    public func requireWorkspace() throws -> WorkspaceAccess {
        guard let w = self[WorkspaceRoleKey.self] else {
            throw APIError.validation("ws_id is required", field: "ws_id")
        }
        return w
    }
}

/// Turns a session cookie into a principal (nil: unknown, expired or revoked).
public typealias SessionResolver =
    @Sendable (_ token: String, _ ip: String, _ userAgent: String) async throws -> Principal?
/// Turns an API key into a principal (nil: unknown, expired or revoked).
public typealias APIKeyResolver = @Sendable (_ token: String, _ ip: String) async throws -> Principal?

/// Looks up a user's role in a workspace (nil: not a member, or no such workspace).
public protocol WorkspaceRoleResolver: Sendable {
    func role(userID: String, wsID: String) async throws -> Role?
    /// The highest role the user holds in any workspace (nil: none).
    func highestRole(userID: String) async throws -> Role?
}

/// The workspace of a resource id (nil: no such resource).
public typealias ResourceWorkspace = @Sendable (_ id: String) async throws -> String?
/// The workspace a user's request defaults to when it names none.
public typealias DefaultWorkspace = @Sendable (_ userID: String) async throws -> String?

/// Cross-module lifecycle hooks, so domains never touch each other's tables.
public final class Hooks: Sendable {
    public typealias UserCreated = @Sendable (Transaction, _ userID: String, _ name: String, _ at: Date) throws -> Void
    public typealias UserPurged = @Sendable (Transaction, _ userID: String) throws -> Void
    /// A workspace deleted: a domain removes what it kept for it (credentials, settings, links), in
    /// the deletion's transaction.
    public typealias WorkspaceDeleted = @Sendable (Transaction, _ wsID: String) throws -> Void
    public typealias ExportSection = @Sendable (_ userID: String) async throws -> JSONValue
    /// A password reset: every credential of the account ends in the same transaction.
    public typealias CredentialsReset = @Sendable (Transaction, _ userID: String, _ at: Date) throws -> Void
    /// Whether an account may start processes (nil policy: everyone may).
    public typealias ExecutionPolicy = @Sendable (_ userID: String) async throws -> Bool
    /// A master key rotation: re-seal what this domain sealed with `old` under `new`, in `tx`.
    public typealias MasterKeyRotation = @Sendable (Transaction, _ old: [UInt8], _ new: [UInt8]) throws -> Void

    struct State {
        var userCreated: [UserCreated] = []
        var userPurged: [UserPurged] = []
        var workspaceDeleted: [WorkspaceDeleted] = []
        var credentialsReset: [CredentialsReset] = []
        var masterKeyRotations: [MasterKeyRotation] = []
        var executionPolicy: ExecutionPolicy?
        var exports: [(String, ExportSection)] = []
        var resourceWorkspaces: [(param: String, lookup: ResourceWorkspace)] = []
        var defaultWorkspaces: [DefaultWorkspace] = []
        var fallbackWorkspaces: [DefaultWorkspace] = []
        var sessions: SessionResolver?
        var apiKeys: APIKeyResolver?
        var roles: (any WorkspaceRoleResolver)?
    }
    private let state = Mutex(State())
    public init() {}

    public func onUserCreated(_ f: @escaping UserCreated) { state.withLock { $0.userCreated.append(f) } }
    public func onUserPurged(_ f: @escaping UserPurged) { state.withLock { $0.userPurged.append(f) } }
    public func onWorkspaceDeleted(_ f: @escaping WorkspaceDeleted) {
        state.withLock { $0.workspaceDeleted.append(f) }
    }
    public func onCredentialsReset(_ f: @escaping CredentialsReset) {
        state.withLock { $0.credentialsReset.append(f) }
    }
    public func credentialsReset(_ tx: Transaction, userID: String, at: Date) throws {
        for f in state.withLock({ $0.credentialsReset }) { try f(tx, userID, at) }
    }
    public func onMasterKeyRotation(_ f: @escaping MasterKeyRotation) {
        state.withLock { $0.masterKeyRotations.append(f) }
    }
    public func rotateMasterKey(_ tx: Transaction, old: [UInt8], new: [UInt8]) throws {
        for f in state.withLock({ $0.masterKeyRotations }) { try f(tx, old, new) }
    }
    public func provideExecutionPolicy(_ f: @escaping ExecutionPolicy) { state.withLock { $0.executionPolicy = f } }
    /// Whether `userID` may start processes on the server (shell jobs, terminals, the agent's commands).
    public func mayExecute(userID: String) async throws -> Bool {
        guard let f = state.withLock({ $0.executionPolicy }) else { return true }
        return try await f(userID)
    }
    /// A section of the account export (`GET /api/account/export-data`).
    public func exportSection(_ name: String, _ f: @escaping ExportSection) {
        state.withLock { $0.exports.append((name, f)) }
    }
    public func provideSessions(_ r: @escaping SessionResolver) { state.withLock { $0.sessions = r } }
    /// How to find the workspace of a resource named by a request parameter (`project_id` → its `ws_id`).
    public func workspaceOf(param: String, _ f: @escaping ResourceWorkspace) {
        state.withLock { $0.resourceWorkspaces.append((param, f)) }
    }
    /// The workspace a request means when it names none; providers are asked in registration order
    /// (the caller's most recent project's, then the caller's first workspace).
    public func provideDefaultWorkspace(fallback: Bool = false, _ f: @escaping DefaultWorkspace) {
        state.withLock { if fallback { $0.fallbackWorkspaces.append(f) } else { $0.defaultWorkspaces.append(f) } }
    }
    public var resourceWorkspaces: [(param: String, lookup: ResourceWorkspace)] {
        state.withLock { $0.resourceWorkspaces }
    }
    /// The first answer of the default-workspace providers.
    public func defaultWorkspace(userID: String) async throws -> String? {
        for f in state.withLock({ $0.defaultWorkspaces + $0.fallbackWorkspaces }) {
            if let ws = try await f(userID) { return ws }
        }
        return nil
    }
    public func provideAPIKeys(_ r: @escaping APIKeyResolver) { state.withLock { $0.apiKeys = r } }
    public func provideRoles(_ r: any WorkspaceRoleResolver) { state.withLock { $0.roles = r } }

    public func userCreated(_ tx: Transaction, userID: String, name: String, at: Date) throws {
        for f in state.withLock({ $0.userCreated }) { try f(tx, userID, name, at) }
    }
    public func userPurged(_ tx: Transaction, userID: String) throws {
        for f in state.withLock({ $0.userPurged }) { try f(tx, userID) }
    }
    public func workspaceDeleted(_ tx: Transaction, wsID: String) throws {
        for f in state.withLock({ $0.workspaceDeleted }) { try f(tx, wsID) }
    }
    public var exportSections: [(String, ExportSection)] { state.withLock { $0.exports } }
    public var sessions: SessionResolver? { state.withLock { $0.sessions } }
    public var apiKeys: APIKeyResolver? { state.withLock { $0.apiKeys } }
    public var roles: (any WorkspaceRoleResolver)? { state.withLock { $0.roles } }
}
