import Foundation
import Glibc
import Synchronization
import Testing
@testable import KilnAccount
@testable import KilnApp
@testable import KilnAuth
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// Makes a verified account with a password, through the service (the setup-link path).
func makeUser(_ t: TestApp, _ email: String, password: String = "a long enough password") async throws -> User {
    let auth = AuthService(services: t.app.services)
    let (_, token) = try await auth.createUser(email: email, name: String(email.split(separator: "@")[0]))
    return try await auth.completeSetup(AuthService.SetupInput(token: token, email: nil, name: nil, password: password))
}

func workspaceOf(_ a: Agent) async throws -> String {
    let r = try await a.call("GET", "/api/workspaces")
    return try #require(((r.json["items"] as? [[String: Any]])?.first)?["id"] as? String)
}

func errorCode(_ r: HTTPResult) -> String? { (r.json["error"] as? [String: Any])?["code"] as? String }

@Suite struct RoutePermissionMatrixTests {
    /// Every registered route refuses: no credentials (401), a key without the scope (403), a viewer
    /// where the role is too low (403), and a member of another workspace (404).
    @Test func everyRouteRefusesTheWrongCaller() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "owner@example.com")
        _ = try await makeUser(t, "viewer@example.com")
        _ = try await makeUser(t, "outsider@example.com")
        let owner = Agent(t.base), viewer = Agent(t.base), outsider = Agent(t.base)
        try await owner.login("owner@example.com", "a long enough password")
        try await viewer.login("viewer@example.com", "a long enough password")
        try await outsider.login("outsider@example.com", "a long enough password")
        let ws = try await workspaceOf(owner)
        let added = try await owner.call("POST", "/api/workspaces/\(ws)/members", json: ["email": "viewer@example.com", "role": "viewer"])
        try #require(added.status == 201, "\(added.text)")
        // A key of the owner whose only scope is one nothing below needs.
        let narrow = try await owner.call("POST", "/api/account/api-keys", json: ["name": "narrow", "scopes": ["workspace:list"]])
        try #require(narrow.status == 201)
        let keyAgent = Agent(t.base)
        keyAgent.bearer = narrow.json["key"] as? String

        let catalog = t.app.services.catalog
        var checked = 0
        for route in t.app.responder.routes {
            guard let perm = route.metadata.permission, perm != Permission.publicAccess else { continue }
            let path = route.pattern.split(separator: "/").map { seg -> String in
                if seg == ":ws_id" { return ws }
                if seg.hasPrefix(":") || seg.hasPrefix("*") { return "ses_0000000000000000000000" }
                return String(seg)
            }.joined(separator: "/")
            let target = "/" + path + "?ws_id=\(ws)"
            let method = route.method.rawValue
            let body: [String: Any]? = ["POST", "PUT", "PATCH"].contains(method) ? ["ws_id": ws] : nil
            let label = "\(method) \(route.pattern)"

            let anonymous = try await Agent(t.base).call(method, target, json: body)
            #expect(anonymous.status == 401, "\(label) without credentials: \(anonymous.status)")

            if perm != Permission.session && perm != Permission.authenticated && perm != "workspace:list" {
                let r = try await keyAgent.call(method, target, json: body)
                #expect(r.status == 403, "\(label) with a key lacking \(perm): \(r.status) \(r.text)")
            }
            if let p = catalog.permission(perm), p.workspaceScoped {
                let o = try await outsider.call(method, target, json: body)
                #expect(o.status == 404, "\(label) by a member of another workspace: \(o.status)")
                if !catalog.grants(.viewer).contains(perm) {
                    let v = try await viewer.call(method, target, json: body)
                    #expect(v.status == 403, "\(label) by a viewer: \(v.status) \(v.text)")
                }
            }
            checked += 1
        }
        #expect(checked >= 20)
    }
}

@Suite struct SessionSecurityTests {
    @Test func csrfAndOriginChecks() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "c@example.com")
        let a = Agent(t.base)
        try await a.login("c@example.com", "a long enough password")
        let body: [String: Any] = ["name": "Renamed"]
        // No token.
        let none = try await a.call("POST", "/api/account/update-profile", json: body, csrf: false)
        #expect(none.status == 403)
        // Wrong token.
        let wrong = try await a.call("POST", "/api/account/update-profile", json: body, headers: ["X-CSRF-Token": "nope"], csrf: false)
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
        let key = try await a.call("POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["account:write"]])
        let k = Agent(t.base)
        k.bearer = key.json["key"] as? String
        #expect(try await k.call("POST", "/api/account/update-profile", json: ["name": "Via key"]).status == 200)
    }

    @Test func loginRotatesTheSessionAndRevokesAPlantedOne() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "f@example.com")
        let attacker = Agent(t.base)
        try await attacker.login("f@example.com", "a long enough password")
        let planted = try #require(attacker.session)
        // The victim's browser carries the planted cookie when it logs in.
        let victim = Agent(t.base)
        victim.session = planted
        try await victim.login("f@example.com", "a long enough password")
        #expect(victim.session != nil && victim.session != planted)
        #expect(try await attacker.call("GET", "/api/auth/session").status == 401)
        #expect(try await victim.call("GET", "/api/auth/session").status == 200)
    }

    @Test func lockoutAfterFiveWrongPasswordsLooksLikeAWrongPassword() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(clock: clock)
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "l@example.com")
        let a = Agent(t.base)
        var bodies: [String] = []
        for _ in 0..<5 {
            let r = try await a.login("l@example.com", "wrong password!!")
            #expect(r.status == 401)
            bodies.append((r.json["error"] as? [String: Any])?["message"] as? String ?? "")
        }
        let locked = try await a.login("l@example.com", "a long enough password")
        #expect(locked.status == 401)
        #expect((locked.json["error"] as? [String: Any])?["message"] as? String == bodies[0])
        // An unknown address gets the very same answer (no account enumeration).
        let unknown = try await a.login("nobody@example.com", "a long enough password")
        #expect(unknown.status == 401 && (unknown.json["error"] as? [String: Any])?["message"] as? String == bodies[0])
        clock.advance(by: 16 * 60)
        let again = try await a.login("l@example.com", "a long enough password")
        #expect(again.status == 200)
        let events = try await AuditLog.list(t.app.services.db, AuditLog.Filter(action: "account.locked"), page: PageRequest())
        #expect(events.items.count == 1)
    }

    @Test func loginIsRateLimitedPerIP() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        let a = Agent(t.base)
        var last: HTTPResult? = nil
        for i in 0..<11 { last = try await a.login("x\(i)@example.com", "whatever password") }
        #expect(last?.status == 429)
        #expect(Int(last?.headers["retry-after"] ?? "") ?? 0 > 0)
        #expect(errorCode(last!) == "rate_limited")
    }

    @Test func authenticatedResponsesCarryRateLimitHeaders() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "r@example.com")
        let a = Agent(t.base)
        try await a.login("r@example.com", "a long enough password")
        let ok = try await a.call("GET", "/api/workspaces")
        #expect(ok.headers["x-ratelimit-limit"] == "600")
        #expect(Int(ok.headers["x-ratelimit-remaining"] ?? "") != nil && ok.headers["x-ratelimit-reset"] != nil)
        let err = try await a.call("GET", "/api/workspaces/ws_doesnotexist0000000000")
        #expect(err.status == 404 && err.headers["x-ratelimit-limit"] == "600")
    }

    @Test func registrationVerificationAndPasswordReset() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        let a = Agent(t.base)
        let reg = try await a.call("POST", "/auth/register", json: ["email": "new@example.com", "password": "new account password", "name": "New"])
        #expect(reg.status == 201)
        #expect(try await a.call("POST", "/auth/register", json: ["email": "new@example.com", "password": "new account password", "name": "N"]).status == 409)
        #expect(try await a.call("POST", "/auth/register", json: ["email": "bad", "password": "new account password", "name": "N"]).status == 400)
        #expect(try await a.login("new@example.com", "new account password").status == 403)  // not verified yet
        let link = try #require(outboxLinks(t).first { $0.contains("/auth/verify?token=") })
        let verifyPath = String(link[link.range(of: "/auth/verify")!.lowerBound...])
        let html = try await http("GET", t.base + verifyPath, headers: ["Accept": "text/html"])
        #expect(html.status == 200 && html.headers["content-type"]?.hasPrefix("text/html") == true && html.text.contains("Email confirmed"))
        let again = try await http("GET", t.base + verifyPath)
        #expect(again.status == 400 && errorCode(again) == "validation_failed")
        #expect(try await a.login("new@example.com", "new account password").status == 200)
        // Forgot: the same answer for any address; the link resets once and ends every session.
        let known = try await Agent(t.base).call("POST", "/auth/forgot", json: ["email": "new@example.com"])
        let unknown = try await Agent(t.base).call("POST", "/auth/forgot", json: ["email": "ghost@example.com"])
        #expect(known.status == 200 && known.text == unknown.text)
        let reset = try #require(outboxLinks(t).first { $0.contains("reset.html?token=") })
        let token = String(reset.split(separator: "=").last!)
        #expect(try await Agent(t.base).call("POST", "/auth/reset", json: ["token": token, "password": "short"]).status == 400)
        #expect(try await Agent(t.base).call("POST", "/auth/reset", json: ["token": token, "password": "brand new password"]).status == 200)
        #expect(try await Agent(t.base).call("POST", "/auth/reset", json: ["token": token, "password": "another new password"]).status == 400)
        #expect(try await a.call("GET", "/api/auth/session").status == 401)
        #expect(try await Agent(t.base).login("new@example.com", "brand new password").status == 200)
    }
}

/// The links written to the mail outbox, oldest first.
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
        let t = try TestApp(clock: clock)
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "m@example.com")
        let a = Agent(t.base)
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
        let stale = try await a.call("POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["workspace:list"]])
        #expect(stale.status == 401 && errorCode(stale) == "step_up_required")
        #expect(stale.headers["www-authenticate"] == "step-up max_age=900")
        #expect(try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code(secret, clock)]).json["status"] as? String == "step_up")
        #expect(try await a.call("POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["workspace:list"]]).status == 201)
        // A recovery code works once.
        let b = Agent(t.base)
        try await b.login("m@example.com", "a long enough password")
        #expect(try await b.call("POST", "/api/auth/mfa-verify", json: ["code": recovery[0]]).status == 200)
        let c = Agent(t.base)
        try await c.login("m@example.com", "a long enough password")
        #expect(try await c.call("POST", "/api/auth/mfa-verify", json: ["code": recovery[0]]).status == 401)
        // Disable needs the password and a code.
        clock.advance(by: 30)
        #expect(try await a.call("POST", "/api/auth/mfa-disable", json: ["password": "wrong", "code": code(secret, clock)]).status == 400)
        #expect(try await a.call("POST", "/api/auth/mfa-disable", json: ["password": "a long enough password", "code": code(secret, clock)]).status == 200)
        let d = Agent(t.base)
        #expect(try await d.login("m@example.com", "a long enough password").json["mfa_required"] as? Bool == false)
        // The stored secret is encrypted at rest (never the base32 text).
        let audit = try await AuditLog.list(t.app.services.db, AuditLog.Filter(actor: try await workspaceOwnerID(t, "m@example.com")), page: PageRequest(limit: 200))
        let actions = Set(audit.items.map(\.action))
        #expect(actions.isSuperset(of: ["mfa.enabled", "mfa.disabled", "mfa.recovery_code_used", "login.ok", "api_key.created"]))
    }
}

func workspaceOwnerID(_ t: TestApp, _ email: String) async throws -> String {
    try #require(try await AuthService(services: t.app.services).user(email: email)?.id)
}

@Suite struct APIKeyTests {
    @Test func keyLifecycleScopesExpiryRevocationAndNoLeaks() async throws {
        let clock = ManualClock(Date())
        let lines = LogLines()
        ServerLog.setSink { line in lines.append(line) }
        defer { ServerLog.setSink(nil) }
        let t = try TestApp(clock: clock)
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "k@example.com")
        let a = Agent(t.base)
        try await a.login("k@example.com", "a long enough password")
        #expect(try await a.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["no:such"]]).status == 400)
        #expect(try await a.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": []]).status == 400)
        // A viewer everywhere cannot mint a key that writes members.
        let ws0 = try await workspaceOf(a)
        let me = try await workspaceOwnerID(t, "k@example.com")
        _ = try await makeUser(t, "k2@example.com")
        let other = Agent(t.base)
        try await other.login("k2@example.com", "a long enough password")
        _ = try await a.call("POST", "/api/workspaces/\(ws0)/members", json: ["email": "k2@example.com", "role": "viewer"])
        let mine = try await other.call("GET", "/api/workspaces")
        let ownWS = try #require((mine.json["items"] as? [[String: Any]])?.first { $0["role"] as? String == "owner" }?["id"] as? String)
        #expect(try await other.call("DELETE", "/api/workspaces/\(ownWS)").status == 204)
        let tooMuch = try await other.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["members:write"]])
        #expect(tooMuch.status == 400 && tooMuch.text.contains("members:write"))
        #expect(try await other.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["members:read"]]).status == 201)
        _ = me
        let created = try await a.call("POST", "/api/account/api-keys", json: ["name": "ci", "scopes": ["workspace:list", "workspace:read"], "expires_in_days": 1])
        #expect(created.status == 201)
        let key = try #require(created.json["key"] as? String)
        #expect(key.hasPrefix("kf_") && key.count == 43)
        let id = try #require((created.json["api_key"] as? [String: Any])?["id"] as? String)
        let k = Agent(t.base)
        k.bearer = key
        let list = try await k.call("GET", "/api/workspaces")
        #expect(list.status == 200)
        let ws = try await workspaceOf(k)
        #expect(try await k.call("GET", "/api/workspaces/\(ws)").status == 200)
        // Out of scope.
        #expect(try await k.call("GET", "/api/workspaces/\(ws)/members").status == 403)
        // Listing shows last use, never the value.
        let keys = try await a.call("GET", "/api/account/api-keys")
        #expect(!keys.text.contains(key) && keys.text.contains("last_used_at"))
        // Expired.
        clock.advance(by: 86400 + 1)
        #expect(try await k.call("GET", "/api/workspaces").status == 401)
        // Revoked (signing in again: a day without use also ended the session).
        #expect(try await a.call("GET", "/api/auth/session").status == 401)
        try await a.login("k@example.com", "a long enough password")
        let second = try await a.call("POST", "/api/account/api-keys", json: ["name": "two", "scopes": ["workspace:list"]])
        let k2 = Agent(t.base)
        k2.bearer = second.json["key"] as? String
        #expect(try await k2.call("GET", "/api/workspaces").status == 200)
        let id2 = try #require((second.json["api_key"] as? [String: Any])?["id"] as? String)
        #expect(try await a.call("DELETE", "/api/account/api-keys/\(id2)").status == 204)
        #expect(try await k2.call("GET", "/api/workspaces").status == 401)
        #expect(try await a.call("DELETE", "/api/account/api-keys/\(id)").status == 204)
        #expect(try await a.call("DELETE", "/api/account/api-keys/\(id)").status == 404)
        // Malformed keys are refused the same way.
        let bad = Agent(t.base)
        bad.bearer = "kf_short"
        #expect(try await bad.call("GET", "/api/workspaces").status == 401)
        // No key value in any log line.
        let all = lines.all.joined(separator: "\n")
        #expect(!all.contains(key) && !all.contains(k2.bearer!))
        #expect(!all.isEmpty)
    }
}

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ s: String) { lines.withLock { $0.append(s) } }
    var all: [String] { lines.withLock { $0 } }
}

@Suite struct WorkspaceTests {
    @Test func membersRolesAndTheLastOwner() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "o@example.com")
        let bob = try await makeUser(t, "bob@example.com")
        let o = Agent(t.base), b = Agent(t.base)
        try await o.login("o@example.com", "a long enough password")
        try await b.login("bob@example.com", "a long enough password")
        let created = try await o.call("POST", "/api/workspaces", json: ["name": "Team"])
        #expect(created.status == 201 && created.json["role"] as? String == "owner")
        let ws = try #require(created.json["id"] as? String)
        #expect(try await o.call("POST", "/api/workspaces/\(ws)/members", json: ["email": "bob@example.com", "role": "admin"]).status == 201)
        #expect(try await o.call("POST", "/api/workspaces/\(ws)/members", json: ["email": "bob@example.com", "role": "admin"]).status == 409)
        #expect(try await o.call("POST", "/api/workspaces/\(ws)/members", json: ["email": "nobody@example.com", "role": "admin"]).status == 404)
        #expect(try await o.call("POST", "/api/workspaces/\(ws)/members", json: ["email": "bob@example.com", "role": "king"]).status == 400)
        // An admin may rename but not delete, and may not make owners.
        #expect(try await b.call("PATCH", "/api/workspaces/\(ws)", json: ["name": "Team 2"]).status == 200)
        #expect(try await b.call("DELETE", "/api/workspaces/\(ws)").status == 403)
        let me = try await workspaceOwnerID(t, "o@example.com")
        #expect(try await b.call("PATCH", "/api/workspaces/\(ws)/members/\(me)", json: ["role": "viewer"]).status == 403)
        // The last owner stays.
        #expect(try await o.call("PATCH", "/api/workspaces/\(ws)/members/\(me)", json: ["role": "admin"]).status == 409)
        #expect(try await o.call("PATCH", "/api/workspaces/\(ws)/members/\(bob.id)", json: ["role": "owner"]).status == 200)
        #expect(try await o.call("PATCH", "/api/workspaces/\(ws)/members/\(me)", json: ["role": "admin"]).status == 200)
        let members = try await b.call("GET", "/api/workspaces/\(ws)/members")
        #expect((members.json["items"] as? [[String: Any]])?.count == 2)
        let audit = try await b.call("GET", "/api/audit?ws_id=\(ws)&action=member.role_changed")
        #expect((audit.json["items"] as? [[String: Any]])?.count == 2)
        #expect(try await b.call("GET", "/api/audit?ws_id=\(ws)&since=yesterday").status == 400)
        #expect(try await b.call("DELETE", "/api/workspaces/\(ws)").status == 204)
        #expect(try await b.call("GET", "/api/workspaces/\(ws)").status == 404)
    }
}

@Suite struct AccountTests {
    @Test func exportHasTheDataAndNoSecretMaterial() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "e@example.com", password: "export password 1")
        let a = Agent(t.base)
        try await a.login("e@example.com", "export password 1")
        let setup = try await a.call("POST", "/api/auth/mfa-setup")
        let secret = try #require(setup.json["secret"] as? String)
        let key = try await a.call("POST", "/api/account/api-keys", json: ["name": "export-key", "scopes": ["account:read"]])
        let keyValue = try #require(key.json["key"] as? String)
        let export = try await a.call("GET", "/api/account/export-data")
        #expect(export.status == 200)
        let text = export.text
        #expect(text.contains("e@example.com") && text.contains("export-key") && text.contains("e's workspace") && text.contains("login.ok"))
        for secretMaterial in [keyValue, secret, "scrypt$", a.session!, "export password 1", "token_hash", "password_hash", "mfa_secret"] {
            #expect(!text.contains(secretMaterial), "export contains \(secretMaterial.prefix(12))…")
        }
    }

    @Test func deletionIsScheduledCancellableAndPurges() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(clock: clock)
        defer { Task { await t.stop() } }
        let u = try await makeUser(t, "d@example.com")
        let a = Agent(t.base)
        try await a.login("d@example.com", "a long enough password")
        let req = try await a.call("POST", "/api/account/request-delete")
        #expect(req.status == 200 && req.json["delete_after"] is String)
        let again = try await a.login("d@example.com", "a long enough password")
        #expect((again.json["user"] as? [String: Any])?["delete_after"] is String)
        #expect(try await a.call("POST", "/api/account/cancel-delete").status == 200)
        _ = try await a.call("POST", "/api/account/request-delete")
        let auth = AuthService(services: t.app.services)
        #expect(try await auth.purgeDueAccounts() == 0)
        clock.advance(by: 31 * 86400)
        #expect(try await auth.purgeDueAccounts() == 1)
        #expect(try await auth.user(id: u.id) == nil)
        let left = try t.app.services.db.readSync { try $0.first("SELECT COUNT(*) AS n FROM memberships WHERE user_id = ?", u.id)?.int("n") }
        #expect(left == 0)
    }

    @Test func sessionsListRevokeAndPasswordChange() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "s@example.com")
        let a = Agent(t.base), b = Agent(t.base)
        try await a.login("s@example.com", "a long enough password")
        try await b.login("s@example.com", "a long enough password")
        let list = try await a.call("GET", "/api/account/sessions")
        let items = try #require(list.json["items"] as? [[String: Any]])
        #expect(items.count == 2 && items.filter { $0["current"] as? Bool == true }.count == 1)
        let other = try #require(items.first { $0["current"] as? Bool == false }?["id"] as? String)
        #expect(try await a.call("POST", "/api/account/sessions/\(other)/revoke").status == 200)
        #expect(try await b.call("GET", "/api/auth/session").status == 401)
        try await b.login("s@example.com", "a long enough password")
        #expect(try await a.call("POST", "/api/account/change-password", json: ["old_password": "nope nope nope", "new_password": "a newer long password"]).status == 400)
        #expect(try await a.call("POST", "/api/account/change-password", json: ["old_password": "a long enough password", "new_password": "a newer long password"]).status == 200)
        #expect(try await a.call("GET", "/api/auth/session").status == 200)
        #expect(try await b.call("GET", "/api/auth/session").status == 401)
    }
}

@Suite struct AuditChainTests {
    @Test func tamperingIsReportedByDoctor() async throws {
        let t = try TestApp()
        _ = try await makeUser(t, "a1@example.com")
        _ = try await makeUser(t, "a2@example.com")
        let a = Agent(t.base)
        try await a.login("a1@example.com", "a long enough password")
        await t.stop()
        let (ok, out, _) = await runProgram(TestApp.kilnBinary, ["doctor", "--verify-audit", "--data-dir", t.dataDir])
        #expect(ok == 0 && out.contains("audit chain verified"), "\(out)")
        let v = try AuditLog.verify(t.app.services.db)
        #expect(v.brokenAt == nil && v.rows >= 5)
        _ = try t.app.services.db.writeSync { try $0.run("UPDATE audit_log SET action = 'login.failed' WHERE seq = 3") }
        let (code, out2, _) = await runProgram(TestApp.kilnBinary, ["doctor", "--verify-audit", "--data-dir", t.dataDir])
        #expect(code != 0)
        #expect(out2.contains("audit chain broken at row 3"), "\(out2)")
    }
}

@Suite struct TimingSafetyTests {
    /// An unknown address costs a full scrypt check with the same parameters as a real account,
    /// and every secret comparison goes through the constant-time compare.
    @Test func unknownAddressesCostARealPasswordCheck() throws {
        let real = try Passwords.hash("some password 123")
        let realParams = real.split(separator: "$").prefix(4).joined(separator: "$")
        let dummyParams = AuthService.dummyHash.split(separator: "$").prefix(4).joined(separator: "$")
        #expect(realParams == dummyParams && realParams == "scrypt$15$8$1")
        #expect(!Passwords.verify("kiln-timing-equaliser-x", against: AuthService.dummyHash))
        // Same length, last character different: refused.
        let a = Array("0123456789abcdef0123456789abcdef".utf8)
        var b = a; b[b.count - 1] ^= 1
        #expect(!Crypto.constantTimeEqual(a, b) && Crypto.constantTimeEqual(a, a))
    }

    @Test func wrongCSRFTokenOfTheRightLengthIsRefused() async throws {
        let t = try TestApp()
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "ts@example.com")
        let a = Agent(t.base)
        try await a.login("ts@example.com", "a long enough password")
        let right = try #require(a.csrf)
        var wrong = Array(right.utf8); wrong[wrong.count - 1] = wrong[wrong.count - 1] == 65 ? 66 : 65
        let r = try await a.call("POST", "/api/account/update-profile", json: ["name": "X"], headers: ["X-CSRF-Token": String(decoding: wrong, as: UTF8.self)], csrf: false)
        #expect(r.status == 403)
    }
}
