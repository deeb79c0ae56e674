import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnAccount
@testable import KilnApp
@testable import KilnAuth
@testable import KilnTestSupport

@Suite struct APIKeyTests {
    @Test func keyLifecycleScopesExpiryRevocationAndNoLeaks() async throws {
        let clock = ManualClock(Date())
        let lines = LogLines()
        ServerLog.setSink { line in lines.append(line) }
        defer { ServerLog.setSink(nil) }
        let t = try TestApp(.inProcess, clock: clock)
        try await using(t) { t in
            _ = try await makeUser(t, "k@example.com")
            let a = Agent(t)
            try await a.login("k@example.com", "a long enough password")
            #expect(
                try await a.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["no:such"]]).status
                    == 400)
            #expect(try await a.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": []]).status == 400)
            // A viewer everywhere cannot mint a key that writes members.
            let ws0 = try await workspaceOf(a)
            let me = try await workspaceOwnerID(t, "k@example.com")
            _ = try await makeUser(t, "k2@example.com")
            let other = Agent(t)
            try await other.login("k2@example.com", "a long enough password")
            _ = try await a.call(
                "POST", "/api/workspaces/\(ws0)/members", json: ["email": "k2@example.com", "role": "viewer"])
            let mine = try await other.call("GET", "/api/workspaces")
            let ownWS = try #require(
                (mine.json["items"] as? [[String: Any]])?.first { $0["role"] as? String == "owner" }?["id"] as? String)
            #expect(try await other.call("DELETE", "/api/workspaces/\(ownWS)").status == 204)
            let tooMuch = try await other.call(
                "POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["members:write"]])
            #expect(tooMuch.status == 400 && tooMuch.text.contains("members:write"))
            #expect(
                try await other.call("POST", "/api/account/api-keys", json: ["name": "x", "scopes": ["members:read"]])
                    .status == 201)
            _ = me
            let created = try await a.call(
                "POST", "/api/account/api-keys",
                json: ["name": "ci", "scopes": ["workspace:list", "workspace:read"], "expires_in_days": 1])
            #expect(created.status == 201)
            let key = try #require(created.json["key"] as? String)
            #expect(key.hasPrefix("kf_") && key.count == 43)
            let id = try #require((created.json["api_key"] as? [String: Any])?["id"] as? String)
            let k = Agent(t)
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
            let second = try await a.call(
                "POST", "/api/account/api-keys", json: ["name": "two", "scopes": ["workspace:list"]])
            let k2 = Agent(t)
            k2.bearer = second.json["key"] as? String
            #expect(try await k2.call("GET", "/api/workspaces").status == 200)
            let id2 = try #require((second.json["api_key"] as? [String: Any])?["id"] as? String)
            #expect(try await a.call("DELETE", "/api/account/api-keys/\(id2)").status == 204)
            #expect(try await k2.call("GET", "/api/workspaces").status == 401)
            #expect(try await a.call("DELETE", "/api/account/api-keys/\(id)").status == 204)
            #expect(try await a.call("DELETE", "/api/account/api-keys/\(id)").status == 404)
            // Malformed keys are refused the same way.
            let bad = Agent(t)
            bad.bearer = "kf_short"
            #expect(try await bad.call("GET", "/api/workspaces").status == 401)
            // No key value in any log line.
            let all = lines.all.joined(separator: "\n")
            #expect(!all.contains(key) && !all.contains(k2.bearer!))
            #expect(!all.isEmpty)
        }
    }
}

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ s: String) { lines.withLock { $0.append(s) } }
    var all: [String] { lines.withLock { $0 } }
}

@Suite struct AccountTests {
    @Test func exportHasTheDataAndNoSecretMaterial() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "e@example.com", password: "export password 1")
            let a = Agent(t)
            try await a.login("e@example.com", "export password 1")
            let setup = try await a.call("POST", "/api/auth/mfa-setup")
            let secret = try #require(setup.json["secret"] as? String)
            let key = try await a.call(
                "POST", "/api/account/api-keys", json: ["name": "export-key", "scopes": ["account:read"]])
            let keyValue = try #require(key.json["key"] as? String)
            let export = try await a.call("GET", "/api/account/export-data")
            #expect(export.status == 200)
            let text = export.text
            #expect(
                text.contains("e@example.com") && text.contains("export-key") && text.contains("e's workspace")
                    && text.contains("login.ok"))
            for secretMaterial in [
                keyValue, secret, "scrypt$", a.session!, "export password 1", "token_hash", "password_hash",
                "mfa_secret",
            ] {
                #expect(!text.contains(secretMaterial), "export contains \(secretMaterial.prefix(12))…")
            }
        }
    }

    @Test func deletionIsScheduledCancellableAndPurges() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(.inProcess, clock: clock)
        try await using(t) { t in
            let u = try await makeUser(t, "d@example.com")
            let a = Agent(t)
            try await a.login("d@example.com", "a long enough password")
            let req = try await a.call("POST", "/api/account/request-delete")
            #expect(req.status == 200 && req.json["delete_after"] is String)
            let again = try await a.login("d@example.com", "a long enough password")
            #expect((again.json["user"] as? [String: Any])?["delete_after"] is String)
            #expect(try await a.call("POST", "/api/account/cancel-delete").status == 200)
            _ = try await a.call("POST", "/api/account/request-delete")
            let auth = try #require(t.app.module(AuthModule.self)).service
            #expect(try await auth.purgeDueAccounts() == 0)
            clock.advance(by: 31 * 86400)
            #expect(try await auth.purgeDueAccounts() == 1)
            #expect(try await auth.user(id: u.id) == nil)
            let left = try t.app.services.db.readSync {
                try $0.first("SELECT COUNT(*) AS n FROM memberships WHERE user_id = ?", u.id)?.int("n")
            }
            #expect(left == 0)
        }
    }

    @Test func sessionsListRevokeAndPasswordChange() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "s@example.com")
            let a = Agent(t)
            let b = Agent(t)
            try await a.login("s@example.com", "a long enough password")
            try await b.login("s@example.com", "a long enough password")
            let list = try await a.call("GET", "/api/account/sessions")
            let items = try #require(list.json["items"] as? [[String: Any]])
            #expect(items.count == 2 && items.filter { $0["current"] as? Bool == true }.count == 1)
            let other = try #require(items.first { $0["current"] as? Bool == false }?["id"] as? String)
            #expect(try await a.call("POST", "/api/account/sessions/\(other)/revoke").status == 200)
            #expect(try await b.call("GET", "/api/auth/session").status == 401)
            try await b.login("s@example.com", "a long enough password")
            #expect(
                try await a.call(
                    "POST", "/api/account/change-password",
                    json: ["old_password": "nope nope nope", "new_password": "a newer long password"]
                ).status == 400)
            #expect(
                try await a.call(
                    "POST", "/api/account/change-password",
                    json: ["old_password": "a long enough password", "new_password": "a newer long password"]
                ).status == 200)
            #expect(try await a.call("GET", "/api/auth/session").status == 200)
            #expect(try await b.call("GET", "/api/auth/session").status == 401)
        }
    }
}
