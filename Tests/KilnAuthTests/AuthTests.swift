import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnTestSupport

@Suite struct SessionSecurityTests {
    @Test func csrfAndOriginChecks() async throws {
        let t = try TestApp()
        try await using(t) { t in
            _ = try await makeUser(t, "c@example.com")
            let a = Agent(t)
            try await a.login("c@example.com", "a long enough password")
            let body: [String: Any] = ["name": "Renamed"]
            // No token.
            let none = try await a.call("POST", "/api/account/update-profile", json: body, csrf: false)
            #expect(none.status == 403)
            // Wrong token.
            let wrong = try await a.call(
                "POST", "/api/account/update-profile", json: body, headers: ["X-CSRF-Token": "nope"], csrf: false)
            #expect(wrong.status == 403)
            // Right token, foreign origin.
            a.origin = "https://evil.example"
            let foreign = try await a.call("POST", "/api/account/update-profile", json: body)
            #expect(foreign.status == 403)
            // Right token, own origin.
            a.origin = t.base
            let ok = try await a.call("POST", "/api/account/update-profile", json: body)
            #expect(ok.status == 200, "\(ok.text)")
            // GET needs no token; API keys never need one.
            a.origin = nil
            #expect(try await a.call("GET", "/api/account/sessions", csrf: false).status == 200)
            let key = try await a.call(
                "POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["account:write"]])
            let k = Agent(t)
            k.bearer = key.json["key"] as? String
            #expect(try await k.call("POST", "/api/account/update-profile", json: ["name": "Via key"]).status == 200)
        }
    }

    @Test func loginRotatesTheSessionAndRevokesAPlantedOne() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "f@example.com")
            let attacker = Agent(t)
            try await attacker.login("f@example.com", "a long enough password")
            let planted = try #require(attacker.session)
            // The victim's browser carries the planted cookie when it logs in.
            let victim = Agent(t)
            victim.session = planted
            try await victim.login("f@example.com", "a long enough password")
            #expect(victim.session != nil && victim.session != planted)
            #expect(try await attacker.call("GET", "/api/auth/session").status == 401)
            #expect(try await victim.call("GET", "/api/auth/session").status == 200)
        }
    }

    /// Only failures count: 5 wrong passwords from one address lock that address out of the account
    /// (429 with Retry-After, even for the right password), other addresses still sign in; 20 from
    /// anywhere lock the account and mail its owner. Each lasts 15 minutes.
    @Test func lockoutByAddressThenByAccount() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(.inProcess, clock: clock) { $0.moduleValues["--trusted-proxy"] = ["127.0.0.1/32"] }
        try await using(t) { t in
            _ = try await makeUser(t, "l@example.com")
            let a = Agent(t)
            a.forwardedFor = "203.0.113.7"
            var bodies: [String] = []
            for _ in 0..<5 {
                let r = try await a.login("l@example.com", "wrong password!!")
                #expect(r.status == 401)
                bodies.append((r.json["error"] as? [String: Any])?["message"] as? String ?? "")
            }
            let locked = try await a.login("l@example.com", "a long enough password")
            #expect(locked.status == 429 && errorCode(locked) == "rate_limited", "\(locked.text)")
            #expect(Int(locked.headers["retry-after"] ?? "") ?? 0 > 0)
            // Another address is not locked out, and an unknown address answers like a wrong password.
            let b = Agent(t)
            b.forwardedFor = "198.51.100.9"
            #expect(try await b.login("l@example.com", "a long enough password").status == 200)
            let unknown = try await b.login("nobody@example.com", "a long enough password")
            #expect(
                unknown.status == 401 && (unknown.json["error"] as? [String: Any])?["message"] as? String == bodies[0])
            clock.advance(by: 16 * 60)
            #expect(try await a.login("l@example.com", "a long enough password").status == 200)
            // 20 wrong passwords from many addresses lock the account itself, and its owner hears of it.
            for i in 0..<20 {
                let c = Agent(t)
                c.forwardedFor = "192.0.2.\(i + 1)"
                _ = try await c.login("l@example.com", "wrong password!!")
            }
            let d = Agent(t)
            d.forwardedFor = "198.51.100.200"
            let accountLocked = try await d.login("l@example.com", "a long enough password")
            #expect(accountLocked.status == 429, "\(accountLocked.text)")
            let events = try await AuditLog.list(
                t.app.services.db, AuditLog.Filter(action: "account.locked"), page: PageRequest())
            #expect(events.items.count == 1)
            #expect(outboxMails(t).contains { $0.contains("Your Kiln account was locked") })
            clock.advance(by: 16 * 60)
            #expect(try await d.login("l@example.com", "a long enough password").status == 200)
        }
    }

    @Test func loginIsRateLimitedPerIP() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let a = Agent(t)
            var last: HTTPResult? = nil
            for i in 0..<11 { last = try await a.login("x\(i)@example.com", "whatever password") }
            #expect(last?.status == 429)
            #expect(Int(last?.headers["retry-after"] ?? "") ?? 0 > 0)
            #expect(errorCode(last!) == "rate_limited")
        }
    }

    @Test func authenticatedResponsesCarryRateLimitHeaders() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "r@example.com")
            let a = Agent(t)
            try await a.login("r@example.com", "a long enough password")
            let ok = try await a.call("GET", "/api/workspaces")
            #expect(ok.headers["x-ratelimit-limit"] == "600")
            #expect(Int(ok.headers["x-ratelimit-remaining"] ?? "") != nil && ok.headers["x-ratelimit-reset"] != nil)
            let err = try await a.call("GET", "/api/workspaces/ws_doesnotexist0000000000")
            #expect(err.status == 404 && err.headers["x-ratelimit-limit"] == "600")
        }
    }

    @Test func registrationVerificationAndPasswordReset() async throws {
        let t = try TestApp(.inProcess) { $0.set("--registration", "open") }
        try await using(t) { t in
            let a = Agent(t)
            let reg = try await a.call(
                "POST", "/auth/register",
                json: ["email": "new@example.com", "password": "new account password", "name": "New"])
            #expect(reg.status == 201)
            #expect(
                try await a.call(
                    "POST", "/auth/register",
                    json: ["email": "new@example.com", "password": "new account password", "name": "N"]
                ).status == 409)
            #expect(
                try await a.call(
                    "POST", "/auth/register", json: ["email": "bad", "password": "new account password", "name": "N"]
                ).status == 400)
            #expect(try await a.login("new@example.com", "new account password").status == 403)  // not verified yet
            let link = try #require(outboxLinks(t).first { $0.contains("/auth/verify?token=") })
            let verifyPath = String(link[link.range(of: "/auth/verify")!.lowerBound...])
            let html = try await t.request("GET", verifyPath, headers: ["Accept": "text/html"])
            #expect(
                html.status == 200 && html.headers["content-type"]?.hasPrefix("text/html") == true
                    && html.text.contains("Email confirmed"))
            let again = try await t.request("GET", verifyPath)
            #expect(again.status == 400 && errorCode(again) == "validation_failed")
            #expect(try await a.login("new@example.com", "new account password").status == 200)
            // Forgot: the same answer for any address; the link resets once and ends every session.
            let known = try await Agent(t).call("POST", "/auth/forgot", json: ["email": "new@example.com"])
            let unknown = try await Agent(t).call("POST", "/auth/forgot", json: ["email": "ghost@example.com"])
            #expect(known.status == 200 && known.text == unknown.text)
            let reset = try #require(outboxLinks(t).first { $0.contains("reset.html?token=") })
            let token = String(reset.split(separator: "=").last!)
            #expect(
                try await Agent(t).call("POST", "/auth/reset", json: ["token": token, "password": "short"]).status
                    == 400)
            #expect(
                try await Agent(t).call(
                    "POST", "/auth/reset", json: ["token": token, "password": "brand new password"]
                ).status == 200)
            #expect(
                try await Agent(t).call(
                    "POST", "/auth/reset", json: ["token": token, "password": "another new password"]
                ).status == 400)
            #expect(try await a.call("GET", "/api/auth/session").status == 401)
            #expect(try await Agent(t).login("new@example.com", "brand new password").status == 200)
        }
    }
}

/// The links written to the mail outbox, oldest first.
/// Every mail in the outbox, whole, oldest first.
func outboxMails(_ t: TestApp) -> [String] {
    let dir = t.dataDir + "/outbox"
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    return files.map { (try? String(contentsOfFile: dir + "/" + $0, encoding: .utf8)) ?? "" }
}

func outboxLinks(_ t: TestApp) -> [String] {
    let dir = t.dataDir + "/outbox"
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    return files.flatMap { f -> [String] in
        let text = (try? String(contentsOfFile: dir + "/" + f, encoding: .utf8)) ?? ""
        return text.split(whereSeparator: \.isWhitespace).map(String.init).filter { $0.hasPrefix("http") }
    }
}

@Suite struct MFATests {
    func code(_ secret: String, _ clock: ManualClock, offset: Double = 0) -> String {
        TOTP.code(secret: Base32.decode(secret)!, time: clock.now().timeIntervalSince1970 + offset)
    }

    @Test func enrolLoginStepsUpRecoveryCodesAndDisable() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_800_000_000))
        let t = try TestApp(.inProcess, clock: clock)
        try await using(t) { t in
            _ = try await makeUser(t, "m@example.com")
            let a = Agent(t)
            try await a.login("m@example.com", "a long enough password")
            let setup = try await a.call("POST", "/api/auth/mfa-setup")
            #expect(setup.status == 200)
            let secret = try #require(setup.json["secret"] as? String)
            let recovery = try #require(setup.json["recovery_codes"] as? [String])
            #expect(recovery.count == 10)
            #expect((setup.json["otpauth_url"] as? String)?.hasPrefix("otpauth://totp/Kiln:") == true)
            // Not on until the first good code.
            #expect(try await a.call("POST", "/api/auth/mfa-verify", json: ["code": "000000"]).status == 401)
            let first = try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code(secret, clock)])
            #expect(first.status == 200 && first.json["status"] as? String == "enabled")
            // Logout; login again is half-open until the code.
            #expect(try await a.call("POST", "/auth/logout").status == 200)
            let login = try await a.login("m@example.com", "a long enough password")
            #expect(login.json["mfa_required"] as? Bool == true)
            let blocked = try await a.call("GET", "/api/workspaces")
            #expect(blocked.status == 401 && errorCode(blocked) == "mfa_required")
            #expect(try await a.call("GET", "/api/auth/session").json["mfa_required"] as? Bool == true)
            // The step used for enrolment is spent: the same code is refused.
            let reused = try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code(secret, clock)])
            #expect(reused.status == 401)
            clock.advance(by: 30)
            let ok = try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code(secret, clock)])
            #expect(ok.status == 200 && ok.json["status"] as? String == "login_completed")
            #expect(try await a.call("GET", "/api/workspaces").status == 200)
            #expect(try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code(secret, clock)]).status == 401)
            // Step-up: creating an API key needs a second factor younger than 15 minutes.
            clock.advance(by: 16 * 60)
            let stale = try await a.call(
                "POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["workspace:list"]])
            #expect(stale.status == 401 && errorCode(stale) == "step_up_required")
            #expect(stale.headers["www-authenticate"] == "step-up max_age=900")
            #expect(
                try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code(secret, clock)]).json["status"]
                    as? String == "step_up")
            #expect(
                try await a.call("POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["workspace:list"]])
                    .status == 201)
            // A recovery code works once.
            let b = Agent(t)
            try await b.login("m@example.com", "a long enough password")
            #expect(try await b.call("POST", "/api/auth/mfa-verify", json: ["code": recovery[0]]).status == 200)
            let c = Agent(t)
            try await c.login("m@example.com", "a long enough password")
            #expect(try await c.call("POST", "/api/auth/mfa-verify", json: ["code": recovery[0]]).status == 401)
            // Disable needs the password and a code.
            clock.advance(by: 30)
            #expect(
                try await a.call(
                    "POST", "/api/auth/mfa-disable", json: ["password": "wrong", "code": code(secret, clock)]
                ).status == 400)
            #expect(
                try await a.call(
                    "POST", "/api/auth/mfa-disable",
                    json: ["password": "a long enough password", "code": code(secret, clock)]
                ).status == 200)
            let d = Agent(t)
            #expect(try await d.login("m@example.com", "a long enough password").json["mfa_required"] as? Bool == false)
            // The stored secret is encrypted at rest (never the base32 text).
            let audit = try await AuditLog.list(
                t.app.services.db, AuditLog.Filter(actor: try await workspaceOwnerID(t, "m@example.com")),
                page: PageRequest(limit: 200))
            let actions = Set(audit.items.map(\.action))
            #expect(
                actions.isSuperset(of: [
                    "mfa.enabled", "mfa.disabled", "mfa.recovery_code_used", "login.ok", "api_key.created",
                ]))
        }
    }
}

@Suite struct TimingSafetyTests {
    /// An unknown address costs a full scrypt check with the same parameters as a real account,
    /// and every secret comparison goes through the constant-time compare.
    @Test func unknownAddressesCostARealPasswordCheck() async throws {
        let real = try await Passwords.hash("some password 123")
        let realParams = real.split(separator: "$").prefix(4).joined(separator: "$")
        let dummyParams = AuthService.dummyHash.split(separator: "$").prefix(4).joined(separator: "$")
        #expect(realParams == dummyParams && realParams == "scrypt$15$8$1")
        #expect(await !Passwords.verify("kiln-timing-equaliser-x", against: AuthService.dummyHash))
        // Same length, last character different: refused.
        let a = Array("0123456789abcdef0123456789abcdef".utf8)
        var b = a
        b[b.count - 1] ^= 1
        #expect(!Crypto.constantTimeEqual(a, b) && Crypto.constantTimeEqual(a, a))
    }

    @Test func wrongCSRFTokenOfTheRightLengthIsRefused() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "ts@example.com")
            let a = Agent(t)
            try await a.login("ts@example.com", "a long enough password")
            let right = try #require(a.csrf)
            var wrong = Array(right.utf8)
            wrong[wrong.count - 1] = wrong[wrong.count - 1] == 65 ? 66 : 65
            let r = try await a.call(
                "POST", "/api/account/update-profile", json: ["name": "X"],
                headers: ["X-CSRF-Token": String(decoding: wrong, as: UTF8.self)], csrf: false)
            #expect(r.status == 403)
        }
    }
}

@Suite struct SetupTests {
    @Test func ownerSetupLinkCreatesTheOwnerOnce() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let notices = t.app.startupNotices(baseURL: t.base)
            let link = try #require(notices.last?.trimmingCharacters(in: .whitespaces))
            #expect(link.hasPrefix(t.base + "/setup?token=kst_"))
            let token = String(link.split(separator: "=").last!)
            let weak = try await t.request(
                "POST", "/auth/setup", headers: ["Content-Type": "application/json"],
                body: json(["token": token, "email": "o@example.com", "password": "short"]))
            #expect(weak.status == 400)
            #expect(
                ((weak.json["error"] as? [String: Any])?["details"] as? [String: Any])?["field"] as? String
                    == "password")
            let ok = try await t.request(
                "POST", "/auth/setup", headers: ["Content-Type": "application/json"],
                body: json(["token": token, "email": "o@example.com", "password": "a long enough password"]))
            #expect(ok.status == 201)
            #expect((ok.json["user"] as? [String: Any])?["is_owner"] as? Bool == true)
            let again = try await t.request(
                "POST", "/auth/setup", headers: ["Content-Type": "application/json"],
                body: json(["token": token, "email": "x@example.com", "password": "a long enough password"]))
            #expect(again.status == 400)
            // With an owner, no more setup notices.
            #expect(t.app.startupNotices(baseURL: t.base).isEmpty)
            let stored = try t.app.services.db.readSync {
                try $0.first("SELECT password_hash FROM users WHERE email = ?", "o@example.com")
            }
            let hash = try #require(stored?.string("password_hash"))
            #expect(hash.hasPrefix("scrypt$") && !hash.contains("a long enough password"))
            #expect(await Passwords.verify("a long enough password", against: hash))
            #expect(await !Passwords.verify("a long enough passwore", against: hash))
        }
    }

    @Test func adminCreatedUserSetsPasswordThroughTheLink() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let auth = try #require(t.app.module(AuthModule.self)).service
            let (_, token) = try await auth.createUser(email: "dev@example.com", name: "Dev")
            let r = try await t.request(
                "POST", "/auth/setup", headers: ["Content-Type": "application/json"],
                body: json(["token": token, "password": "another long password"]))
            #expect(r.status == 201)
            #expect((r.json["user"] as? [String: Any])?["email"] as? String == "dev@example.com")
            await #expect(throws: HTTPError.self) {
                _ = try await auth.createUser(email: "DEV@example.com", name: "Dup")
            }
            await #expect(throws: HTTPError.self) { _ = try await auth.createUser(email: "not-an-email", name: "X") }
        }
    }
}
