import Foundation
import KilnCore
import KilnHTTP

/// `/auth/*` and `/api/auth/*`: setup, registration, verification, login, logout, reset, MFA, whoami.
struct AuthRoutes: Sendable {
    let auth: AuthService
    let secureCookies: Bool

    static let small = 16 * 1024

    func register(_ routes: Routes) {
        let r = routes.tagged("auth")
        r.add(
            .POST, "/auth/setup", .publicAccess,
            "Redeem a one-time setup link: create the owner account, or set the password of a new account",
            limit: Self.small, reply: .json(Schema.object(["user": Schema.of(User.self)]), status: .created), setup)
        r.add(
            .POST, "/auth/register", .publicAccess, "Create an account (unverified until the emailed link is opened)",
            limit: Self.small, reply: .json(Schema.object(["user": Schema.of(User.self)]), status: .created),
            registerAccount)
        r.add(
            .GET, "/auth/verify", .publicAccess,
            "Confirm an email address from the mailed link (HTML for browsers, JSON for API clients)",
            query: [QueryParam("token", "the token from the link", required: true)], verify)
        r.add(
            .POST, "/auth/login", .publicAccess,
            "Sign in with email and password; sets the kiln_session cookie (half-open until the TOTP code when MFA is on)",
            limit: Self.small, login)
        r.add(
            .POST, "/auth/forgot", .publicAccess,
            "Mail a password reset link (the same answer whether or not the address has an account)", limit: Self.small,
            forgot)
        r.add(
            .POST, "/auth/reset", .publicAccess,
            "Choose a new password from a reset link (single use, one hour); ends every session",
            limit: Self.small, reset)
        r.add(
            .POST, "/auth/resend-verification", .publicAccess,
            "Mail a new verification link to an unconfirmed address (the same answer for any address)",
            limit: Self.small, resendVerification)
        r.add(.POST, "/auth/logout", .session, "End this session", logout)
        r.add(
            .POST, "/api/auth/step-up", .authenticated,
            "Confirm it is you again (password, or the TOTP/recovery code when MFA is on): sensitive routes are open "
                + "for 15 minutes after",
            limit: Self.small, stepUp)
        r.add(
            .POST, "/api/auth/mfa-setup", .accountWrite,
            "Start TOTP enrolment: secret, otpauth URL, recovery codes (on after the first good mfa-verify)", mfaSetup)
        r.add(
            .POST, "/api/auth/mfa-verify", .session,
            "Prove the second factor (TOTP code within ±1 step, or a single-use recovery code): completes login, finishes enrolment, "
                + "or refreshes step-up",
            limit: Self.small, mfaVerify)
        r.add(
            .POST, "/api/auth/mfa-disable", .accountWrite,
            "Turn two-factor authentication off (password and a current code)",
            limit: Self.small, mfaDisable)
        r.add(
            .GET, "/api/auth/session", .session,
            "Who am I: the user, the CSRF token for this session, and whether the second factor is still owed", session)
    }

    func cookie(_ token: String, maxAge: Int, _ req: Request) -> SetCookie {
        SetCookie(
            name: AccessMiddleware.sessionCookie, value: token, maxAge: maxAge, path: "/",
            secure: secureCookies || req.isSecure,
            httpOnly: true, sameSite: .lax)
    }

    @Sendable func setup(_ req: Request, _ ctx: RequestContext, _ input: SetupInput) async throws -> Response {
        try .json(["user": try await auth.completeSetup(input, ip: req.remoteAddress)], status: .created)
    }

    @Sendable func registerAccount(
        _ req: Request, _ ctx: RequestContext, _ input: RegisterInput
    ) async throws -> Response {
        try .json(["user": try await auth.register(input, ip: req.remoteAddress)], status: .created)
    }

    @Sendable func verify(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let wantsHTML = (req.headers["Accept"] ?? "").contains("text/html")
        do {
            guard let token = req.query["token"], !token.isEmpty else {
                throw APIError.validation("token is required", field: "token")
            }
            let user = try await auth.verifyEmail(token: token)
            if wantsHTML {
                return .text(
                    VerifyPage.html(ok: true, message: "Your email address \(user.email) is confirmed."),
                    contentType: "text/html; charset=utf-8")
            }
            return try .json(["verified": JSONValue.bool(true), "email": .string(user.email)])
        } catch let e as HTTPError where wantsHTML {
            var r = Response.text(
                VerifyPage.html(ok: false, message: e.message), status: e.status,
                contentType: "text/html; charset=utf-8")
            r.headers["X-Request-Id"] = ctx.requestID
            return r
        }
    }

    @Sendable func login(_ req: Request, _ ctx: RequestContext, _ input: LoginInput) async throws -> Response {
        let r = try await auth.login(
            email: input.email, password: input.password, ip: req.remoteAddress,
            userAgent: req.headers["User-Agent"] ?? "", previousToken: req.cookies[AccessMiddleware.sessionCookie])
        var res = try Response.json(
            LoginBody(user: r.user, csrfToken: r.csrfToken, mfaRequired: r.mfaRequired, expiresAt: r.expiresAt))
        res.setCookie(cookie(r.sessionToken, maxAge: Int(AuthService.sessionLifetime), req))
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    @Sendable func forgot(_ req: Request, _ ctx: RequestContext, _ input: EmailInput) async throws -> Response {
        try await auth.forgot(email: input.email, ip: req.remoteAddress)
        return .json(
            JSONValue.object(["status": "ok", "message": "If this address has an account, a reset link is on its way."])
        )
    }

    @Sendable func reset(_ req: Request, _ ctx: RequestContext, _ input: ResetInput) async throws -> Response {
        try await auth.reset(token: input.token, password: input.password, ip: req.remoteAddress)
        return .json(JSONValue.object(["status": "ok"]))
    }

    @Sendable func resendVerification(
        _ req: Request, _ ctx: RequestContext, _ input: EmailInput
    ) async throws -> Response {
        try await auth.resendVerification(email: input.email, ip: req.remoteAddress)
        return .json(
            JSONValue.object([
                "status": "ok",
                "message": "If this address waits for its confirmation, a new link is on its way.",
            ]))
    }

    @Sendable func stepUp(_ req: Request, _ ctx: RequestContext, _ input: StepUpInput) async throws -> Response {
        let until = try await auth.stepUp(
            principal: try ctx.requirePrincipal(), password: input.password, code: input.code, ip: req.remoteAddress)
        return .json(JSONValue.object(["status": "ok", "stepped_up_until": .string(HTTPDate.iso8601(until))]))
    }

    @Sendable func logout(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        if let sid = p.sessionID { try await auth.logout(sessionID: sid, userID: p.userID, ip: req.remoteAddress) }
        var res = Response.json(JSONValue.object(["status": "ok"]))
        res.setCookie(cookie("", maxAge: 0, req))
        return res
    }

    @Sendable func mfaSetup(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let setup = try await auth.mfaSetup(userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        var body: [String: JSONValue] = [
            "secret": .string(setup.secret), "otpauth_url": .string(setup.otpauthUrl),
            "recovery_codes": .array(setup.recoveryCodes.map { .string($0) }), "qr_svg": .null,
        ]
        if let qrencode = ProcessRunner.which("qrencode"),
            let out = try? await ProcessRunner.run(qrencode, ["-t", "SVG", "-o", "-", setup.otpauthUrl], timeout: 10),
            out.status == 0
        {
            body["qr_svg"] = .string(String(decoding: out.stdout, as: UTF8.self))
        }
        var res = Response.json(JSONValue.object(body))
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    @Sendable func mfaVerify(_ req: Request, _ ctx: RequestContext, _ input: CodeInput) async throws -> Response {
        let outcome = try await auth.mfaVerify(
            principal: try ctx.requirePrincipal(), code: input.code, ip: req.remoteAddress)
        return .json(JSONValue.object(["status": .string(outcome.rawValue), "mfa_required": false]))
    }

    @Sendable func mfaDisable(_ req: Request, _ ctx: RequestContext, _ input: MFADisableInput) async throws -> Response
    {
        try await auth.mfaDisable(
            principal: try ctx.requirePrincipal(), password: input.password, code: input.code, ip: req.remoteAddress)
        return .json(JSONValue.object(["status": "ok", "mfa_enabled": false]))
    }

    @Sendable func session(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        guard let user = try await auth.user(id: p.userID) else { throw APIError.unauthenticated() }
        let steppedUntil = p.sessionID == nil ? nil : p.mfaVerifiedAt?.addingTimeInterval(Principal.stepUpMaxAge)
        var res = try Response.json(
            SessionBody(
                user: user, csrfToken: p.csrfToken, mfaRequired: p.mfaPending, sessionId: p.sessionID,
                apiKeyId: p.apiKeyID, canExecute: user.canExecute && user.disabledAt == nil, isAdmin: user.isAdmin,
                steppedUpUntil: steppedUntil.flatMap { $0 > Date() ? $0 : nil }))
        res.headers["Cache-Control"] = "no-store"
        return res
    }
}

/// The small page browsers get from the verification link.
enum VerifyPage {
    static func html(ok: Bool, message: String) -> String {
        let safe = HTMLText.escape(message)
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
