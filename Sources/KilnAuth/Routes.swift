import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Identity: first-run setup, registration and verification, login and sessions, password reset, MFA.
public struct AuthModule: KilnModule {
    public let name = "auth"
    public init() {}
    public var migrations: [Migration] { AuthMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("account:read", "Read your own account: profile, sessions, API keys, your audit events, the data export", workspaceScoped: false),
            PermissionGrant("account:write", "Change your own account: profile, password, two-factor, sessions, API keys, deletion", workspaceScoped: false),
        ]
    }

    static func obj(_ props: [String: JSONValue], required: [String]) -> JSONValue {
        ["type": "object", "required": .array(required.map { .string($0) }), "properties": .object(props)]
    }
    static let str: JSONValue = ["type": "string"]

    public func register(_ routes: Routes, _ services: Services) {
        let auth = AuthService(services: services)
        services.hooks.provideSessions { token, ip, ua in try await auth.resolveSession(token: token, ip: ip, userAgent: ua) }
        services.jobs.every(3600, name: "purge deleted accounts") { try await auth.purgeDueAccounts() }
        let secureCookies = services.config.secureCookies
        let small = 16 * 1024

        @Sendable func cookie(_ token: String, maxAge: Int, _ req: Request) -> SetCookie {
            SetCookie(name: AccessMiddleware.sessionCookie, value: token, maxAge: maxAge, path: "/", secure: secureCookies || req.isSecure,
                      httpOnly: true, sameSite: .lax)
        }

        routes.add(.POST, "/auth/setup", permission: Permission.publicAccess,
                   summary: "Redeem a one-time setup link: create the owner account, or set the password of a new account", tags: ["auth"],
                   requestBody: Self.obj(["token": Self.str, "email": Self.str, "name": Self.str, "password": Self.str], required: ["token", "password"]),
                   successStatus: 201, bodyLimit: small) { req, _ in
            let user = try await auth.completeSetup(try await req.decode(AuthService.SetupInput.self, limit: small))
            return try .json(["user": user], status: .created)
        }

        routes.add(.POST, "/auth/register", permission: Permission.publicAccess,
                   summary: "Create an account (unverified until the emailed link is opened)", tags: ["auth"],
                   requestBody: Self.obj(["email": Self.str, "password": Self.str, "name": Self.str], required: ["email", "password", "name"]),
                   successStatus: 201, bodyLimit: small) { req, _ in
            let user = try await auth.register(try await req.decode(AuthService.RegisterInput.self, limit: small), ip: req.remoteAddress)
            return try .json(["user": user], status: .created)
        }

        routes.add(.GET, "/auth/verify", permission: Permission.publicAccess,
                   summary: "Confirm an email address from the mailed link (HTML for browsers, JSON for API clients)", tags: ["auth"],
                   query: [("token", "the token from the link", true)]) { req, ctx in
            let wantsHTML = (req.headers["Accept"] ?? "").contains("text/html")
            do {
                guard let token = req.query["token"], !token.isEmpty else { throw APIError.validation("token is required", field: "token") }
                let user = try await auth.verifyEmail(token: token)
                if wantsHTML { return .text(VerifyPage.html(ok: true, message: "Your email address \(user.email) is confirmed."), contentType: "text/html; charset=utf-8") }
                return try .json(["verified": JSONValue.bool(true), "email": .string(user.email)])
            } catch let e as HTTPError where wantsHTML {
                var r = Response.text(VerifyPage.html(ok: false, message: e.message), status: e.status, contentType: "text/html; charset=utf-8")
                r.headers["X-Request-Id"] = ctx.requestID
                return r
            }
        }

        struct LoginInput: Decodable { let email: String; let password: String }
        routes.add(.POST, "/auth/login", permission: Permission.publicAccess,
                   summary: "Sign in with email and password; sets the kiln_session cookie (half-open until the TOTP code when MFA is on)",
                   tags: ["auth"], requestBody: Self.obj(["email": Self.str, "password": Self.str], required: ["email", "password"]),
                   bodyLimit: small) { req, _ in
            let input = try await req.decode(LoginInput.self, limit: small)
            let r = try await auth.login(email: input.email, password: input.password, ip: req.remoteAddress,
                                         userAgent: req.headers["User-Agent"] ?? "", previousToken: req.cookies[AccessMiddleware.sessionCookie])
            struct Body: Encodable { let user: User; let csrfToken: String; let mfaRequired: Bool; let expiresAt: Date }
            var res = try Response.json(Body(user: r.user, csrfToken: r.csrfToken, mfaRequired: r.mfaRequired, expiresAt: r.expiresAt))
            res.setCookie(cookie(r.sessionToken, maxAge: Int(AuthService.sessionLifetime), req))
            res.headers["Cache-Control"] = "no-store"
            return res
        }

        struct EmailInput: Decodable { let email: String }
        routes.add(.POST, "/auth/forgot", permission: Permission.publicAccess,
                   summary: "Mail a password reset link (the same answer whether or not the address has an account)", tags: ["auth"],
                   requestBody: Self.obj(["email": Self.str], required: ["email"]), bodyLimit: small) { req, _ in
            let input = try await req.decode(EmailInput.self, limit: small)
            try await auth.forgot(email: input.email, ip: req.remoteAddress)
            return .json(raw: Array(#"{"status":"ok","message":"If this address has an account, a reset link is on its way."}"#.utf8))
        }

        struct ResetInput: Decodable { let token: String; let password: String }
        routes.add(.POST, "/auth/reset", permission: Permission.publicAccess,
                   summary: "Choose a new password from a reset link (single use, one hour); ends every session", tags: ["auth"],
                   requestBody: Self.obj(["token": Self.str, "password": Self.str], required: ["token", "password"]), bodyLimit: small) { req, _ in
            let input = try await req.decode(ResetInput.self, limit: small)
            try await auth.reset(token: input.token, password: input.password, ip: req.remoteAddress)
            return .json(raw: Array(#"{"status":"ok"}"#.utf8))
        }

        routes.add(.POST, "/auth/logout", permission: Permission.session, summary: "End this session", tags: ["auth"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            if let sid = p.sessionID { try await auth.logout(sessionID: sid, userID: p.userID, ip: req.remoteAddress) }
            var res = Response.json(raw: Array(#"{"status":"ok"}"#.utf8))
            res.setCookie(cookie("", maxAge: 0, req))
            return res
        }

        routes.add(.POST, "/api/auth/mfa-setup", permission: "account:write",
                   summary: "Start TOTP enrolment: secret, otpauth URL, recovery codes (on after the first good mfa-verify)", tags: ["auth"]) { req, ctx in
            let p = try ctx.requirePrincipal()
            let setup = try await auth.mfaSetup(userID: p.userID, ip: req.remoteAddress)
            var body: [String: JSONValue] = [
                "secret": .string(setup.secret), "otpauth_url": .string(setup.otpauthUrl),
                "recovery_codes": .array(setup.recoveryCodes.map { .string($0) }), "qr_svg": .null,
            ]
            if let qrencode = ProcessRunner.which("qrencode"),
               let out = try? await ProcessRunner.run(qrencode, ["-t", "SVG", "-o", "-", setup.otpauthUrl], timeout: 10), out.status == 0 {
                body["qr_svg"] = .string(String(decoding: out.stdout, as: UTF8.self))
            }
            var res = Response.json(JSONValue.object(body))
            res.headers["Cache-Control"] = "no-store"
            return res
        }

        struct CodeInput: Decodable { let code: String }
        routes.add(.POST, "/api/auth/mfa-verify", permission: Permission.session,
                   summary: "Prove the second factor (TOTP code within ±1 step, or a single-use recovery code): completes login, finishes enrolment, or refreshes step-up",
                   tags: ["auth"], requestBody: Self.obj(["code": Self.str], required: ["code"]), bodyLimit: small) { req, ctx in
            let p = try ctx.requirePrincipal()
            let input = try await req.decode(CodeInput.self, limit: small)
            let outcome = try await auth.mfaVerify(principal: p, code: input.code, ip: req.remoteAddress)
            return .json(JSONValue.object(["status": .string(outcome.rawValue), "mfa_required": false]))
        }

        struct DisableInput: Decodable { let password: String; let code: String }
        routes.add(.POST, "/api/auth/mfa-disable", permission: "account:write",
                   summary: "Turn two-factor authentication off (password and a current code)", tags: ["auth"],
                   requestBody: Self.obj(["password": Self.str, "code": Self.str], required: ["password", "code"]), bodyLimit: small) { req, ctx in
            let p = try ctx.requirePrincipal()
            let input = try await req.decode(DisableInput.self, limit: small)
            try await auth.mfaDisable(principal: p, password: input.password, code: input.code, ip: req.remoteAddress)
            return .json(raw: Array(#"{"status":"ok","mfa_enabled":false}"#.utf8))
        }

        routes.add(.GET, "/api/auth/session", permission: Permission.session,
                   summary: "Who am I: the user, the CSRF token for this session, and whether the second factor is still owed", tags: ["auth"]) { _, ctx in
            let p = try ctx.requirePrincipal()
            guard let user = try await auth.user(id: p.userID) else { throw APIError.unauthenticated() }
            let userJSON = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(user)))
            func opt(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
            var res = Response.json(JSONValue.object([
                "user": userJSON, "csrf_token": opt(p.csrfToken), "mfa_required": .bool(p.mfaPending),
                "session_id": opt(p.sessionID), "api_key_id": opt(p.apiKeyID),
            ]))
            res.headers["Cache-Control"] = "no-store"
            return res
        }
    }
}

/// The small page browsers get from the verification link.
enum VerifyPage {
    static func html(ok: Bool, message: String) -> String {
        let safe = message.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Kiln: email \(ok ? "confirmed" : "not confirmed")</title><link rel="stylesheet" href="/app.css"></head>
            <body><header><a class="logo" href="/">▲ Kiln</a></header><main>
            <h1 id="verify-result">\(ok ? "Email confirmed" : "Link not valid")</h1><p>\(safe)</p>
            <p><a href="/login.html">Sign in</a></p></main></body></html>
            """
    }
}
