import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnAuth
@testable import KilnTestSupport

/// Who may join (registration modes, invitations), instance admins, execution rights, step-up.
@Suite struct AdminTests {
    func register(_ a: Agent, _ email: String, invitation: String? = nil) async throws -> HTTPResult {
        var body: [String: Any] = ["email": email, "password": "a long enough password", "name": "New"]
        if let invitation { body["invitation"] = invitation }
        return try await a.call("POST", "/auth/register", json: body)
    }

    @Test func registrationIsClosedByDefault() async throws {
        try await withTestApp(.inProcess) { t in
            let r = try await register(Agent(t), "x@example.com")
            #expect(r.status == 403 && errorCode(r) == "registration_closed", "\(r.text)")
            #expect(outboxMails(t).isEmpty)
        }
        let invite = try TestApp(.inProcess) { $0.set("--registration", "invite") }
        try await using(invite) { t in
            let r = try await register(Agent(t), "x@example.com")
            #expect(r.status == 403 && errorCode(r) == "invitation_required", "\(r.text)")
        }
        let domains = try TestApp(.inProcess) {
            $0.set("--registration", "open")
            $0.moduleValues["--registration-domains"] = ["good.org"]
        }
        try await using(domains) { t in
            let evil = try await register(Agent(t), "x@evil.com")
            let good = try await register(Agent(t), "x@GOOD.org")
            #expect(evil.status == 403 && good.status == 201)
        }
    }

    /// An invitation works in any mode, fixes the email, works once, and the account is ready at once.
    @Test func invitationsMakeReadyAccounts() async throws {
        try await withTestApp(.inProcess) { t in
            _ = try await makeAdmin(t)
            let admin = Agent(t)
            try await admin.login("admin@example.com", "a long enough password")
            let made = try await admin.call(
                "POST", "/api/admin/invitations", json: ["email": "guest@example.com", "ttl_hours": 2])
            #expect(made.status == 201, "\(made.text)")
            let url = try #require(made.json["url"] as? String)
            #expect(url.contains("/register?invitation=kin_"))
            let token = String(url[url.range(of: "invitation=")!.upperBound...])
            #expect(outboxMails(t).contains { $0.contains(url) })
            let listed = try await admin.call("GET", "/api/admin/invitations")
            #expect((listed.json["items"] as? [[String: Any]])?.count == 1 && !listed.text.contains(token))

            let guest = Agent(t)
            let wrongEmail = try await register(guest, "other@example.com", invitation: token)
            #expect(wrongEmail.status == 400 && wrongEmail.text.contains("another email"))
            let ok = try await register(guest, "guest@example.com", invitation: token)
            #expect(ok.status == 201, "\(ok.text)")
            #expect(try await register(guest, "guest@example.com", invitation: token).status == 400)
            #expect(try await guest.login("guest@example.com", "a long enough password").status == 200)
            let session = try await guest.call("GET", "/api/auth/session")
            #expect(session.json["can_execute"] as? Bool == true && session.json["is_admin"] as? Bool == false)

            // Expired and withdrawn invitations do not work.
            let second = try await admin.call("POST", "/api/admin/invitations", json: ["email": "late@example.com"])
            let id = try #require(second.json["id"] as? String)
            #expect(try await admin.call("DELETE", "/api/admin/invitations/\(id)").status == 204)
            #expect(try await admin.call("DELETE", "/api/admin/invitations/\(id)").status == 404)
            let secondToken = String((second.json["url"] as? String ?? "").split(separator: "=").last ?? "")
            #expect(try await register(Agent(t), "late@example.com", invitation: secondToken).status == 400)
            for bad: [String: Any] in [["email": "nope"], ["email": "a@example.com", "ttl_hours": 0], [:]] {
                #expect(try await admin.call("POST", "/api/admin/invitations", json: bad).status == 400, "\(bad)")
            }
        }
    }

    /// Self-registered accounts (open mode) run nothing until an admin allows it.
    @Test func openRegistrationStartsWithoutExecution() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(.inProcess, clock: clock) { $0.set("--registration", "open") }
        try await using(t) { t in
            let me = try await makeAdmin(t)
            let admin = Agent(t)
            try await admin.login("admin@example.com", "a long enough password")
            let a = Agent(t)
            let reg = try await register(a, "self@example.com")
            #expect(reg.status == 201)
            let uid = try #require((reg.json["user"] as? [String: Any])?["id"] as? String)
            // Unconfirmed for a day: the address may register again, the old account is gone.
            clock.advance(by: 25 * 3600)
            #expect(try await register(Agent(t), "self@example.com").status == 201)
            try await admin.login("admin@example.com", "a long enough password")  // its session went idle
            let users = try await admin.call("GET", "/api/admin/users?q=self@")
            let items = try #require(users.json["items"] as? [[String: Any]])
            #expect(items.count == 1 && items[0]["id"] as? String != uid)
            let fresh = try #require(items[0]["id"] as? String)
            #expect(items[0]["can_execute"] as? Bool == false && items[0]["is_admin"] as? Bool == false)
            let link = try #require(outboxLinks(t).last { $0.contains("/auth/verify?token=") })
            _ = try await a.call("GET", String(link[link.range(of: "/auth/verify")!.lowerBound...]))
            #expect(try await a.login("self@example.com", "a long enough password").status == 200)
            #expect(try await a.call("GET", "/api/auth/session").json["can_execute"] as? Bool == false)
            let ws = try await workspaceOf(a)
            for (method, path, body) in [
                ("POST", "/api/shell/run", ["ws_id": ws, "command": "id"] as [String: Any]),
                ("POST", "/api/pty/spawn", ["ws_id": ws]),
            ] {
                let r = try await a.call(method, path, json: body)
                #expect(r.status == 403 && r.text.contains("instance admin"), "\(path): \(r.text)")
            }
            // The admin allows it (after a fresh step-up), and it holds at once.
            clock.advance(by: 16 * 60)
            let stale = try await admin.call("POST", "/api/admin/users/\(fresh)/allow-exec")
            #expect(stale.status == 401 && errorCode(stale) == "step_up_required")
            #expect(stale.headers["www-authenticate"] == "step-up max_age=900")
            let wrong = try await admin.call("POST", "/api/auth/step-up", json: ["password": "not my password"])
            #expect(wrong.status == 401)
            #expect(
                try await admin.call("POST", "/api/auth/step-up", json: ["password": "a long enough password"]).status
                    == 200)
            let allowed = try await admin.call("POST", "/api/admin/users/\(fresh)/allow-exec")
            #expect(allowed.status == 200 && allowed.json["can_execute"] as? Bool == true, "\(allowed.text)")
            #expect(try await a.call("GET", "/api/auth/session").json["can_execute"] as? Bool == true)
            #expect(try await admin.call("POST", "/api/admin/users/\(fresh)/deny-exec").status == 200)
            #expect(try await a.call("GET", "/api/auth/session").json["can_execute"] as? Bool == false)
            #expect(try await admin.call("POST", "/api/admin/users/usr_nobody00000000000000/allow-exec").status == 404)
            _ = me
        }
    }

    @Test func adminsManageAccountsAndTheLastAdminStays() async throws {
        try await withTestApp(.inProcess) { t in
            let me = try await makeAdmin(t)
            let other = try await makeUser(t, "other@example.com")
            let admin = Agent(t)
            try await admin.login("admin@example.com", "a long enough password")
            let user = Agent(t)
            try await user.login("other@example.com", "a long enough password")

            // Not an admin: every admin route is 403, whatever the workspace role.
            for (m, p) in [
                ("GET", "/api/admin/users"), ("POST", "/api/admin/users"), ("GET", "/api/admin/invitations"),
                ("POST", "/api/admin/users/\(me.id)/disable"),
            ] {
                #expect(try await user.call(m, p, json: m == "POST" ? [:] : nil).status == 403, "\(m) \(p)")
            }
            let created = try await admin.call("POST", "/api/admin/users", json: ["email": "made@example.com"])
            #expect(
                created.status == 201 && (created.json["setup_url"] as? String)?.contains("/setup?token=kst_") == true)
            #expect(try await admin.call("POST", "/api/admin/users", json: ["email": "made@example.com"]).status == 409)
            let page = try await admin.call("GET", "/api/admin/users?limit=2")
            #expect((page.json["items"] as? [Any])?.count == 2 && page.json["next_cursor"] is String)

            // The last admin stays; a second admin can be made, then the first may go.
            #expect(try await admin.call("POST", "/api/admin/users/\(me.id)/revoke-admin").status == 409)
            #expect(try await admin.call("POST", "/api/admin/users/\(me.id)/disable").status == 409)
            #expect(try await admin.call("POST", "/api/admin/users/\(other.id)/grant-admin").status == 200)
            #expect(try await user.call("GET", "/api/admin/users").status == 200)
            #expect(try await admin.call("POST", "/api/admin/users/\(other.id)/revoke-admin").status == 200)

            // Disabling ends the sessions and refuses the keys; enabling lets them sign in again.
            let key = try await user.call(
                "POST", "/api/account/api-keys", json: ["name": "ci", "scopes": ["workspace:list"]])
            let token = try #require(key.json["key"] as? String)
            let keyed = Agent(t)
            keyed.bearer = token
            #expect(try await keyed.call("GET", "/api/workspaces").status == 200)
            #expect(try await admin.call("POST", "/api/admin/users/\(other.id)/disable").status == 200)
            #expect(try await user.call("GET", "/api/auth/session").status == 401)
            #expect(try await keyed.call("GET", "/api/workspaces").status == 401)
            #expect(try await Agent(t).login("other@example.com", "a long enough password").status == 403)
            #expect(try await admin.call("POST", "/api/admin/users/\(other.id)/enable").status == 200)
            #expect(try await keyed.call("GET", "/api/workspaces").status == 200)
        }
    }

    /// API keys never pass step-up and cannot mint keys; a password reset revokes every key.
    @Test func keysStepUpAndPasswordReset() async throws {
        try await withTestApp(.inProcess) { t in
            _ = try await makeAdmin(t)
            let admin = Agent(t)
            try await admin.login("admin@example.com", "a long enough password")
            let key = try await admin.call(
                "POST", "/api/account/api-keys",
                json: ["name": "admin key", "scopes": ["instance:admin", "account:write", "workspace:delete"]])
            #expect(key.status == 201, "\(key.text)")
            let keyed = Agent(t)
            keyed.bearer = try #require(key.json["key"] as? String)
            #expect(try await keyed.call("GET", "/api/admin/users").status == 200)
            for (m, p, body) in [
                ("POST", "/api/admin/users", ["email": "k@example.com"] as [String: Any]),
                ("POST", "/api/admin/invitations", ["email": "k@example.com"]),
                ("POST", "/api/auth/step-up", ["password": "a long enough password"]),
                ("POST", "/api/account/request-delete", [:]),
            ] {
                let r = try await keyed.call(m, p, json: body)
                #expect(r.status == 403 && errorCode(r) == "step_up_required", "\(p): \(r.text)")
            }
            let mint = try await keyed.call(
                "POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["account:read"]])
            #expect(mint.status == 403, "\(mint.text)")
            let ws = try await workspaceOf(admin)
            let del = try await keyed.call("DELETE", "/api/workspaces/\(ws)")
            #expect(del.status == 403 && errorCode(del) == "step_up_required")

            // A password reset ends every session and every key, and the mail says so.
            _ = try await Agent(t).call("POST", "/auth/forgot", json: ["email": "admin@example.com"])
            let link = try #require(outboxLinks(t).last { $0.contains("reset.html?token=") })
            let token = String(link[link.range(of: "token=")!.upperBound...])
            #expect(outboxMails(t).last?.contains("revokes every API key") == true)
            let reset = try await Agent(t).call(
                "POST", "/auth/reset", json: ["token": token, "password": "a brand new password"])
            #expect(reset.status == 200)
            #expect(try await keyed.call("GET", "/api/admin/users").status == 401)
            #expect(try await admin.call("GET", "/api/auth/session").status == 401)
            #expect(outboxMails(t).last?.contains("every API key of your account was revoked") == true)
        }
    }

    @Test func resendVerificationAnswersAlike() async throws {
        let t = try TestApp(.inProcess) { $0.set("--registration", "open") }
        try await using(t) { t in
            #expect(try await register(Agent(t), "wait@example.com").status == 201)
            let before = outboxMails(t).count
            let known = try await Agent(t).call(
                "POST", "/auth/resend-verification", json: ["email": "wait@example.com"])
            let unknown = try await Agent(t).call(
                "POST", "/auth/resend-verification", json: ["email": "no@example.com"])
            #expect(known.status == 200 && unknown.status == 200 && known.text == unknown.text)
            #expect(outboxMails(t).count == before + 1)
            #expect(try await Agent(t).call("POST", "/auth/resend-verification", json: ["email": ""]).status == 400)
        }
    }

    /// A member may leave; the last owner may not; leaving someone else out needs admin.
    @Test func membersMayLeave() async throws {
        try await withTestApp(.inProcess) { t in
            _ = try await makeUser(t, "own@example.com")
            let member = try await makeUser(t, "mem@example.com")
            let owner = Agent(t)
            try await owner.login("own@example.com", "a long enough password")
            let ws = try await workspaceOf(owner)
            let owned = try await owner.call("GET", "/api/workspaces/\(ws)")
            let ownerID = try #require(
                ((try await owner.call("GET", "/api/auth/session")).json["user"] as? [String: Any])?["id"] as? String)
            _ = owned
            #expect(
                try await owner.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": "mem@example.com", "role": "viewer"]
                )
                .status == 201)
            let m = Agent(t)
            try await m.login("mem@example.com", "a long enough password")
            #expect(try await m.call("DELETE", "/api/workspaces/\(ws)/members/\(ownerID)").status == 403)
            #expect(try await m.call("DELETE", "/api/workspaces/\(ws)/members/\(member.id)").status == 204)
            #expect(try await m.call("GET", "/api/workspaces/\(ws)").status == 404)
            let last = try await owner.call("DELETE", "/api/workspaces/\(ws)/members/\(ownerID)")
            #expect(last.status == 409, "\(last.text)")
        }
    }
}
