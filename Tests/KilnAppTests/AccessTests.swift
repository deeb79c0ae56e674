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

@Suite struct RoutePermissionMatrixTests {
    /// Every registered route refuses: no credentials (401), a key without the scope (403), a viewer
    /// where the role is too low (403), and a member of another workspace (404).
    @Test func everyRouteRefusesTheWrongCaller() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "owner@example.com")
            _ = try await makeUser(t, "viewer@example.com")
            _ = try await makeUser(t, "outsider@example.com")
            let owner = Agent(t)
            let viewer = Agent(t)
            let outsider = Agent(t)
            try await owner.login("owner@example.com", "a long enough password")
            try await viewer.login("viewer@example.com", "a long enough password")
            try await outsider.login("outsider@example.com", "a long enough password")
            let ws = try await workspaceOf(owner)
            let added = try await owner.call(
                "POST", "/api/workspaces/\(ws)/members", json: ["email": "viewer@example.com", "role": "viewer"])
            try #require(added.status == 201, "\(added.text)")
            // A key of the owner whose only scope is one nothing below needs.
            let narrow = try await owner.call(
                "POST", "/api/account/api-keys", json: ["name": "narrow", "scopes": ["workspace:list"]])
            try #require(narrow.status == 201)
            let keyAgent = Agent(t)
            keyAgent.bearer = narrow.json["key"] as? String

            let catalog = t.app.services.catalog
            var checked = 0
            for route in t.app.responder.routes {
                // Public and anonymous routes (a share link's page) take no credentials to refuse.
                guard let perm = route.metadata.permission, perm != Permission.publicAccess.name,
                    perm != Permission.anonymous.name
                else { continue }
                let path = route.pattern.split(separator: "/").map { seg -> String in
                    if seg == ":ws_id" { return ws }
                    if seg.hasPrefix(":") || seg.hasPrefix("*") { return "ses_0000000000000000000000" }
                    return String(seg)
                }.joined(separator: "/")
                let target = "/" + path + "?ws_id=\(ws)"
                let method = route.method.rawValue
                let body: [String: Any]? = ["POST", "PUT", "PATCH"].contains(method) ? ["ws_id": ws] : nil
                let label = "\(method) \(route.pattern)"

                let anonymous = try await Agent(t).call(method, target, json: body)
                #expect(anonymous.status == 401, "\(label) without credentials: \(anonymous.status)")

                if perm != Permission.session.name && perm != Permission.authenticated.name && perm != "workspace:list"
                {
                    let r = try await keyAgent.call(method, target, json: body)
                    #expect(r.status == 403, "\(label) with a key lacking \(perm): \(r.status) \(r.text)")
                }
                // Instance administration: a workspace owner who is not an instance admin gets 403.
                if catalog.permission(perm)?.scope == .instance {
                    let r = try await owner.call(method, target, json: body)
                    #expect(r.status == 403, "\(label) by a workspace owner who is no instance admin: \(r.status)")
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

    /// API keys cannot step up: every step-up route refuses even a key holding every scope it needs
    /// (403 step_up_required), and a session that has not confirmed itself lately gets 401 with
    /// WWW-Authenticate.
    @Test func stepUpRoutesRefuseKeysAndStaleSessions() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(.inProcess, clock: clock)
        try await using(t) { t in
            let admin = try await makeAdmin(t)
            let other = try await makeUser(t, "other@example.com")
            let a = Agent(t)
            try await a.login("admin@example.com", "a long enough password")
            let ws = try await workspaceOf(a)
            #expect(
                try await a.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": other.email, "role": "viewer"]
                )
                .status == 201)
            let all = Set(t.app.services.catalog.all.map(\.name)).subtracting(["public", "session", "authenticated"])
            let key = try await a.call("POST", "/api/account/api-keys", json: ["name": "all", "scopes": Array(all)])
            #expect(key.status == 201, "\(key.text)")
            let keyed = Agent(t)
            keyed.bearer = try #require(key.json["key"] as? String)
            let stepUp: [(String, String, [String: Any])] = [
                ("POST", "/api/account/api-keys", ["name": "k", "scopes": ["account:read"]]),
                ("POST", "/api/auth/mfa-disable", ["password": "a long enough password", "code": "000000"]),
                ("POST", "/api/account/request-delete", [:]),
                ("DELETE", "/api/workspaces/\(ws)", [:]),
                ("PATCH", "/api/workspaces/\(ws)/members/\(other.id)", ["role": "admin"]),
                ("POST", "/api/shell/ssh-run", ["ws_id": ws, "host": "h", "command": "true"]),
                ("POST", "/api/shell/ssh-pull", ["ws_id": ws, "host": "h", "remote_path": "/x", "dest_path": "x"]),
                ("POST", "/api/admin/users", ["email": "n@example.com"]),
                ("POST", "/api/admin/users/\(other.id)/disable", [:]),
                ("POST", "/api/admin/users/\(other.id)/allow-exec", [:]),
                ("POST", "/api/admin/invitations", ["email": "n@example.com"]),
                ("DELETE", "/api/admin/invitations/inv_0000000000000000000000", [:]),
            ]
            for (m, p, body) in stepUp {
                let r = try await keyed.call(m, p, json: m == "DELETE" ? nil : body)
                #expect(r.status == 403 && errorCode(r) == "step_up_required", "key: \(m) \(p): \(r.status) \(r.text)")
            }
            clock.advance(by: 16 * 60)
            for (m, p, body) in stepUp where p != "/api/auth/mfa-disable" {
                let r = try await a.call(m, p, json: m == "DELETE" ? nil : body)
                #expect(
                    r.status == 401 && errorCode(r) == "step_up_required"
                        && r.headers["www-authenticate"] == "step-up max_age=900",
                    "stale session: \(m) \(p): \(r.status) \(r.text)")
            }
            _ = admin
        }
    }
}

@Suite struct AuditChainTests {
    @Test func tamperingIsReportedByDoctor() async throws {
        let t = try TestApp(.inProcess)
        _ = try await makeUser(t, "a1@example.com")
        _ = try await makeUser(t, "a2@example.com")
        let a = Agent(t)
        try await a.login("a1@example.com", "a long enough password")
        await t.stop()
        let (ok, out, _) = await runProgram(TestApp.kilnBinary, ["doctor", "--verify-audit"] + t.storeArguments)
        #expect(ok == 0 && out.contains("audit chain verified"), "\(out)")
        let v = try AuditLog.verify(t.app.services.db)
        #expect(v.brokenAt == nil && v.rows >= 5)
        _ = try t.app.services.db.writeSync { try $0.run("UPDATE audit_log SET action = 'login.failed' WHERE seq = 3") }
        let (code, out2, _) = await runProgram(
            TestApp.kilnBinary, ["doctor", "--verify-audit"] + t.storeArguments)
        #expect(code != 0)
        #expect(out2.contains("audit chain broken at row 3"), "\(out2)")
    }
}
