import Foundation
import KilnCrypto
import KilnHTTP

/// Enforces every route's declared permission:
/// authentication (session cookie or `Bearer kf_…`), the second-factor gate for half-open
/// sessions, CSRF and Origin checks for cookie-authenticated state changes, the per-principal
/// token bucket (`X-RateLimit-*` on every authenticated response), API-key scopes, and the role in
/// the request's workspace (a non-member gets 404, not 403, so existence is not revealed).
public struct AccessMiddleware: Middleware {
    let hooks: Hooks
    let catalog: PermissionCatalog
    let buckets: TokenBuckets
    let clock: any Clock
    /// The externally visible origin(s) besides the request's own Host (from --public-url).
    let trustedOrigins: Set<String>

    public init(
        hooks: Hooks, catalog: PermissionCatalog, buckets: TokenBuckets, clock: any Clock, trustedOrigins: Set<String>
    ) {
        self.hooks = hooks
        self.catalog = catalog
        self.buckets = buckets
        self.clock = clock
        self.trustedOrigins = trustedOrigins
    }

    public static let sessionCookie = "kiln_session"

    public func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        guard let permission = context.route?.metadata.permission, context.route?.pattern.hasPrefix("(") == false,
            permission != Permission.anonymous.name
        else {
            return try await next(request, context)
        }
        let principal = try await authenticate(request)
        if permission == Permission.publicAccess.name {
            var ctx = context
            ctx[PrincipalKey.self] = principal
            return try await next(request, ctx)
        }
        guard let principal else {
            throw HTTPError.unauthenticated()
        }
        // Rate limit first, so even refused calls cost a token; headers go on every answer from here.
        let decision = buckets.take(principal.apiKeyID ?? principal.userID, now: clock.now().timeIntervalSince1970)
        var rateHeaders = HTTPHeaders()
        rateHeaders.add("X-RateLimit-Limit", String(decision.limit))
        rateHeaders.add("X-RateLimit-Remaining", String(decision.remaining))
        rateHeaders.add("X-RateLimit-Reset", String(decision.resetSeconds))
        var response: Response
        do {
            guard decision.allowed else { throw APIError.rateLimited(retryAfter: decision.resetSeconds) }
            var ctx = context
            ctx[PrincipalKey.self] = principal
            if let access = try await authorize(request, context, principal, permission) {
                ctx[WorkspaceRoleKey.self] = access
            }
            response = try await next(request, ctx)
        } catch {
            // The error middleware renders it; the rate-limit headers travel with it.
            throw ErrorWithHeaders(error: error, headers: rateHeaders)
        }
        for f in rateHeaders.fields { response.headers.replace(f.name, f.value) }
        return response
    }

    /// The principal for the request's credentials; 401 for credentials that are present but bad.
    func authenticate(_ request: Request) async throws -> Principal? {
        if let auth = request.headers["Authorization"] {
            let parts = auth.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else {
                throw HTTPError.unauthenticated("Authorization must be 'Bearer kf_…'")
            }
            let token = String(parts[1]).trimmingCharacters(in: .whitespaces)
            guard let resolve = hooks.apiKeys, let p = try await resolve(token, request.remoteAddress) else {
                throw HTTPError.unauthenticated("The API key is not valid, expired or was revoked")
            }
            return p
        }
        if let token = request.cookies[AccessMiddleware.sessionCookie], !token.isEmpty, let resolve = hooks.sessions {
            return try await resolve(token, request.remoteAddress, request.headers["User-Agent"] ?? "")
        }
        return nil
    }

    /// Checks everything that depends on the route's permission; returns the workspace access when scoped.
    func authorize(
        _ request: Request, _ context: RequestContext, _ p: Principal, _ permission: String
    ) async throws -> WorkspaceAccess? {
        if p.mfaPending && permission != Permission.session.name {
            throw HTTPError(
                .unauthorized, code: "mfa_required",
                message: "Enter the code from your authenticator app (POST /api/auth/mfa-verify)")
        }
        if p.sessionID != nil && !["GET", "HEAD", "OPTIONS"].contains(request.method.rawValue) {
            try checkOriginAndCSRF(request, p)
        } else if p.sessionID != nil && request.headers.hasToken("Upgrade", "websocket") {
            // Browsers send cookies on cross-site WebSocket handshakes; only our own pages may open one.
            try checkOrigin(request)
        }
        let authorizer = Authorizer(hooks: hooks, catalog: catalog)
        try authorizer.checkPrincipal(p, permission)
        guard permission != Permission.session.name && permission != Permission.authenticated.name,
            let perm = catalog.permission(permission), perm.workspaceScoped
        else { return nil }
        guard let wsID = try await workspaceID(request, context, p) else {
            throw HTTPError.validation("ws_id is required", field: "ws_id")
        }
        let access = try await authorizer.role(p, permission, wsID: wsID)
        try await checkResources(request, context, wsID: wsID)
        return access
    }

    /// Every resource the request names by id (in its path or query) must belong to the admitted
    /// workspace: an id from another workspace answers 404, as an unknown one does, so a member of
    /// one workspace learns nothing of another's. One check here covers every route.
    func checkResources(_ request: Request, _ context: RequestContext, wsID: String) async throws {
        var byName: [String: [ResourceWorkspace]] = [:]
        for (name, lookup) in hooks.resourceWorkspaces { byName[name, default: []].append(lookup) }
        for (name, lookups) in byName {
            guard let id = context.parameters[name] ?? request.query[name], !id.isEmpty else { continue }
            var owners: [String] = []
            for lookup in lookups { if let ws = try await lookup(id) { owners.append(ws) } }
            guard owners.contains(wsID) else {
                throw HTTPError.notFound("No such \(name.replacingOccurrences(of: "_id", with: ""))")
            }
        }
    }

    /// A cookie-authenticated state change must come from our own origin and carry the CSRF token.
    func checkOriginAndCSRF(_ request: Request, _ p: Principal) throws {
        try checkOrigin(request)
        try Self.checkCSRF(request, p)
    }

    /// The session's CSRF token must be in `X-CSRF-Token` (compared in constant time). Also for a
    /// public route that acts for the signed-in caller when there is one (accepting an invitation).
    public static func checkCSRF(_ request: Request, _ p: Principal) throws {
        guard let sent = request.headers["X-CSRF-Token"], let expected = p.csrfToken,
            Crypto.constantTimeEqual(Array(sent.utf8), Array(expected.utf8))
        else {
            throw HTTPError(
                .forbidden, message: "Missing or wrong X-CSRF-Token (GET /api/auth/session gives it)",
                details: ["header": "X-CSRF-Token"])
        }
    }

    func checkOrigin(_ request: Request) throws {
        if let origin = request.headers["Origin"], origin != "null" {
            let scheme = request.isSecure ? "https" : "http"
            let own = request.headers["Host"].map { "\(scheme)://\($0)" }
            guard origin == own || trustedOrigins.contains(origin) else {
                throw HTTPError.forbidden("Cross-origin request refused")
            }
        } else if request.headers["Origin"] == "null" {
            throw HTTPError.forbidden("Cross-origin request refused")
        }
    }

    /// `ws_id` from the path, the query or a small JSON body; else the workspace of a named resource
    /// (`project_id`…); else the caller's default. A resource that does not exist answers 404.
    func workspaceID(_ request: Request, _ context: RequestContext, _ p: Principal) async throws -> String? {
        var body: [String: Any] = [:]
        if case .buffer(let bytes) = request.body, !bytes.isEmpty, bytes.count <= 1 << 20,
            request.mediaType == "application/json",
            let obj = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        {
            body = obj
        }
        func param(_ name: String) -> String? {
            context.parameters[name] ?? request.query[name] ?? body[name] as? String
        }
        if let w = param("ws_id") { return w }
        // Several modules may own ids under one parameter name (`job_id`: rescans and shell jobs).
        var missing: String?
        for (name, lookup) in hooks.resourceWorkspaces {
            guard let id = param(name) else { continue }
            if let ws = try await lookup(id) { return ws }
            missing = missing ?? name
        }
        if let missing { throw HTTPError.notFound("No such \(missing.replacingOccurrences(of: "_id", with: ""))") }
        return try await hooks.defaultWorkspace(userID: p.userID)
    }
}

/// The permission checks of one principal, apart from any request: API-key scopes, instance-admin
/// and execution rights, and the role in a workspace. The access middleware uses it for each route;
/// Kiln's MCP server for each tool call (one request, several workspaces and permissions).
public struct Authorizer: Sendable {
    let hooks: Hooks
    let catalog: PermissionCatalog

    public init(hooks: Hooks, catalog: PermissionCatalog) {
        self.hooks = hooks
        self.catalog = catalog
    }

    /// What does not depend on a workspace: the key's scopes, instance admin, execution.
    public func checkPrincipal(_ p: Principal, _ permission: String) throws {
        guard p.scopeAllows(permission) else {
            throw HTTPError(
                .forbidden, message: "This API key's scopes do not include '\(permission)'",
                details: ["permission": .string(permission)])
        }
        let perm = catalog.permission(permission)
        if perm?.scope == .instance && !p.isAdmin {
            throw HTTPError(
                .forbidden, message: "Only an instance admin may do this", details: ["permission": .string(permission)])
        }
        if perm?.execution == true && !p.canExecute {
            throw HTTPError(
                .forbidden,
                message: "Your account may not run commands on this server until an instance admin allows it",
                details: ["permission": .string(permission), "can_execute": false])
        }
    }

    /// The caller's role in `wsID` must grant `permission` (404 for a workspace they are not in).
    public func role(_ p: Principal, _ permission: String, wsID: String) async throws -> WorkspaceAccess {
        guard IDs.isValid(wsID, prefix: "ws"), let roles = hooks.roles,
            let role = try await roles.role(userID: p.userID, wsID: wsID)
        else {
            throw HTTPError.notFound("Workspace not found")
        }
        guard catalog.grants(role).contains(permission) else {
            throw HTTPError(
                .forbidden, message: "Your role (\(role.rawValue)) in this workspace does not allow '\(permission)'",
                details: ["permission": .string(permission), "role": .string(role.rawValue)])
        }
        return WorkspaceAccess(wsID: wsID, role: role)
    }

    /// Both checks: the access to `wsID` under `permission`.
    public func access(_ p: Principal, _ permission: String, wsID: String) async throws -> WorkspaceAccess {
        try checkPrincipal(p, permission)
        return try await role(p, permission, wsID: wsID)
    }
}
