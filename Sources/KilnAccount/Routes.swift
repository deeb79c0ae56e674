import Foundation
import KilnAuth
import KilnCore
import KilnHTTP
import KilnStore

/// Your own account: sessions, password, profile, deletion, data export, audit trail and API keys.
public struct AccountModule: KilnModule {
    public let name = "account"
    public init() {}
    public var migrations: [Migration] { AccountMigrations.all }

    static let str: JSONValue = ["type": "string"]
    static func obj(_ props: [String: JSONValue], required: [String] = []) -> JSONValue {
        ["type": "object", "required": .array(required.map { .string($0) }), "properties": .object(props)]
    }

    public func register(_ routes: Routes, _ services: Services) {
        let auth = AuthService(services: services)
        let keys = APIKeyService(db: services.db, clock: services.clock, catalog: services.catalog, hooks: services.hooks)
        let clock = services.clock
        let db = services.db
        let hooks = services.hooks
        hooks.provideAPIKeys { token, ip in try await keys.resolve(token: token, ip: ip) }
        hooks.onUserPurged { tx, uid in try keys.deleteAll(tx, userID: uid) }
        let small = 16 * 1024
        let paging: [(name: String, description: String, required: Bool)] = [("limit", "1 to 200 (default 50)", false), ("cursor", "next_cursor of the previous page", false)]

        routes.add(.GET, "/api/account/sessions", permission: "account:read", summary: "Your active sessions (the current one marked)", tags: ["account"]) { _, ctx in
            let p = try ctx.requirePrincipal()
            let list = try await auth.sessions(userID: p.userID, current: p.sessionID)
            return try .json(Page(items: list, nextCursor: nil))
        }

        routes.add(.POST, "/api/account/sessions/:sid/revoke", permission: "account:write", summary: "End one of your sessions", tags: ["account"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            let sid = try ctx.parameter("sid")
            guard IDs.isValid(sid, prefix: "ses") else { throw APIError.notFound("No such session") }
            try await auth.revokeSession(userID: p.userID, sessionID: sid, actorIP: req.remoteAddress)
            return .json(raw: Array(#"{"status":"ok"}"#.utf8))
        }

        struct PasswordInput: Decodable { let oldPassword: String; let newPassword: String }
        routes.add(.POST, "/api/account/change-password", permission: "account:write",
                   summary: "Change your password (the old one is needed); ends your other sessions", tags: ["account"],
                   requestBody: Self.obj(["old_password": Self.str, "new_password": Self.str], required: ["old_password", "new_password"]),
                   bodyLimit: small) { req, ctx in
            let p = try ctx.requirePrincipal()
            let input = try await req.decode(PasswordInput.self, limit: small)
            try await auth.changePassword(userID: p.userID, currentSession: p.sessionID, old: input.oldPassword, new: input.newPassword, ip: req.remoteAddress)
            return .json(raw: Array(#"{"status":"ok"}"#.utf8))
        }

        routes.add(.POST, "/api/account/update-profile", permission: "account:write",
                   summary: "Change your name, avatar URL or email (a new email is confirmed by mail before it applies)", tags: ["account"],
                   requestBody: Self.obj(["name": Self.str, "email": Self.str, "avatar_url": Self.str]), bodyLimit: small) { req, ctx in
            let p = try ctx.requirePrincipal()
            let input = try await req.decode(AuthService.ProfileInput.self, limit: small)
            let (user, pending) = try await auth.updateProfile(userID: p.userID, input, ip: req.remoteAddress)
            struct Body: Encodable { let user: User; let emailVerificationSent: Bool }
            return try .json(Body(user: user, emailVerificationSent: pending))
        }

        routes.add(.POST, "/api/account/request-delete", permission: "account:write",
                   summary: "Delete your account and its data in 30 days unless cancelled", tags: ["account"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            let when = try await auth.requestDelete(userID: p.userID, ip: req.remoteAddress)
            return .json(JSONValue.object(["status": "scheduled", "delete_after": .string(HTTPDate.iso8601(when))]))
        }

        routes.add(.POST, "/api/account/cancel-delete", permission: "account:write", summary: "Keep your account: cancel a requested deletion", tags: ["account"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            try await auth.cancelDelete(userID: p.userID, ip: req.remoteAddress)
            return .json(raw: Array(#"{"status":"ok","delete_after":null}"#.utf8))
        }

        routes.add(.GET, "/api/account/export-data", permission: "account:read",
                   summary: "Everything Kiln holds about you as one JSON document (no passwords, tokens or secret values)", tags: ["account"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            var doc: [String: JSONValue] = ["exported_at": .string(HTTPDate.iso8601(clock.now())), "format": "kiln-account-export/1"]
            doc["account"] = try await auth.exportSection(userID: p.userID)
            let keyPage = try await keys.list(userID: p.userID, page: PageRequest(limit: 200))
            doc["api_keys"] = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(keyPage.items)))
            var events: [AuditEntry] = []
            var cursor: String? = nil
            repeat {
                let page = try await AuditLog.list(db, AuditLog.Filter(actor: p.userID), page: PageRequest(limit: 200, cursor: cursor))
                events += page.items
                cursor = page.nextCursor.flatMap { Base64URLCursor.decode($0) }
            } while cursor != nil && events.count < 100_000
            doc["audit_events"] = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(events)))
            for (name, section) in hooks.exportSections { doc[name] = try await section(p.userID) }
            try await auth.audit(AuditEvent(action: "account.exported", actorUserID: p.userID, actorKeyID: p.apiKeyID, resourceType: "user",
                                            resourceID: p.userID, ip: req.remoteAddress))
            var res = Response.json(JSONValue.object(doc))
            res.headers["Content-Disposition"] = "attachment; filename=\"kiln-account-export.json\""
            res.headers["Cache-Control"] = "no-store"
            return res
        }

        routes.add(.GET, "/api/account/audit-list", permission: "account:read", summary: "Your own audit events, newest first", tags: ["account"],
                   query: paging) { req, ctx in
            let p = try ctx.requirePrincipal()
            return try .json(try await AuditLog.list(db, AuditLog.Filter(actor: p.userID), page: try PageRequest(query: req.query)))
        }

        routes.add(.GET, "/api/account/api-keys", permission: "account:read", summary: "Your API keys (never their values)", tags: ["account"],
                   query: paging) { req, ctx in
            let p = try ctx.requirePrincipal()
            return try .json(try await keys.list(userID: p.userID, page: try PageRequest(query: req.query)))
        }

        routes.add(.POST, "/api/account/api-keys", permission: "account:write",
                   summary: "Create an API key (kf_…, shown once) with scopes and an optional expiry; needs a fresh second factor when MFA is on",
                   tags: ["account"],
                   requestBody: Self.obj(["name": Self.str, "scopes": ["type": "array", "items": Self.str], "expires_in_days": ["type": "integer"]],
                                         required: ["name", "scopes"]),
                   successStatus: 201, bodyLimit: small) { req, ctx in
            let p = try ctx.requirePrincipal()
            try p.requireStepUp(now: clock.now())
            let input = try await req.decode(APIKeyService.CreateInput.self, limit: small)
            let (key, token) = try await keys.create(userID: p.userID, input, ip: req.remoteAddress)
            // The key's fields at the top level plus the one-time `key`; `api_key` repeats them for clients that nest.
            guard case .object(var body) = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(key))) else {
                throw APIError(.internalServerError)
            }
            body["api_key"] = .object(body)
            body["key"] = .string(token)
            var res = Response.json(JSONValue.object(body), status: .created)
            res.headers["Cache-Control"] = "no-store"
            return res
        }

        routes.add(.DELETE, "/api/account/api-keys/:id", permission: "account:write", summary: "Revoke an API key", tags: ["account"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            let id = try ctx.parameter("id")
            guard IDs.isValid(id, prefix: "key") else { throw APIError.notFound("No such API key") }
            try await keys.revoke(userID: p.userID, id: id, ip: req.remoteAddress)
            return .noContent()
        }
    }
}

/// Decodes the opaque cursors PageRequest issues (for internal paging loops).
enum Base64URLCursor {
    static func decode(_ c: String) -> String? {
        (try? PageRequest(query: QueryParameters([("cursor", c)])))?.cursor
    }
}
