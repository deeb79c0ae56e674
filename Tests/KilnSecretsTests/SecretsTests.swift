import Foundation
import KilnCore
import KilnHTTP
import KilnStore
import Testing

@testable import KilnApp
@testable import KilnSecrets
@testable import KilnTestSupport

/// Secrets over HTTP: set, list, versions, reveal (step-up, no API key, no-store, audited), expiry
/// and size rules, delete; the envelope's associated data; use by name.
@Suite struct SecretsTests {
    @Test func setListRevealVersionsDelete() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(clock: clock)
        try await using(t) { t in
            _ = try await makeUser(t, "s@example.com")
            let a = Agent(t)
            try await a.login("s@example.com", "a long enough password")
            let ws = try await workspaceOf(a)

            let created = try await a.call(
                "POST", "/api/secrets/DEPLOY_TOKEN", json: ["ws_id": ws, "value": "tok-1-abcdef"])
            #expect(created.status == 201, "\(created.text)")
            #expect(created.json["version"] as? Int == 1 && created.json["value"] == nil)
            for i in 2...7 {
                let r = try await a.call(
                    "POST", "/api/secrets/DEPLOY_TOKEN", json: ["ws_id": ws, "value": "tok-\(i)-abcdef"])
                #expect(r.status == 200 && r.json["version"] as? Int == i)
            }
            let list = try await a.call("GET", "/api/secrets?ws_id=\(ws)")
            let items = try #require(list.json["items"] as? [[String: Any]])
            #expect(
                items.count == 1 && items[0]["name"] as? String == "DEPLOY_TOKEN" && items[0]["version"] as? Int == 7)
            #expect(!list.text.contains("tok-"))
            let versions = try await a.call("GET", "/api/secrets/DEPLOY_TOKEN/versions?ws_id=\(ws)")
            #expect(
                (versions.json["items"] as? [[String: Any]])?.compactMap { $0["version"] as? Int } == [7, 6, 5, 4, 3])

            // Reveal: the login counts as step-up for a password account; no-store; audited with the reason.
            let shown = try await a.call("GET", "/api/secrets/DEPLOY_TOKEN?ws_id=\(ws)&reason=rotating%20the%20deploy")
            #expect(shown.status == 200 && shown.json["value"] as? String == "tok-7-abcdef")
            #expect(shown.headers["cache-control"] == "no-store")
            let audit = try await a.call("GET", "/api/audit?ws_id=\(ws)&action=secret.revealed")
            #expect(audit.text.contains("rotating the deploy") && !audit.text.contains("tok-7"))

            // Bad input.
            #expect(try await a.call("POST", "/api/secrets/lower", json: ["ws_id": ws, "value": "x"]).status == 400)
            #expect(try await a.call("POST", "/api/secrets/1ABC", json: ["ws_id": ws, "value": "x"]).status == 400)
            #expect(try await a.call("POST", "/api/secrets/EMPTY", json: ["ws_id": ws, "value": ""]).status == 400)
            let big = String(repeating: "x", count: 64 * 1024 + 1)
            #expect(try await a.call("POST", "/api/secrets/BIG", json: ["ws_id": ws, "value": big]).status == 400)
            #expect(
                try await a.call(
                    "POST", "/api/secrets/OLD",
                    json: ["ws_id": ws, "value": "abcdefgh", "expires_at": "2000-01-01T00:00:00Z"]
                ).status == 400)
            #expect(try await a.call("GET", "/api/secrets/NOPE?ws_id=\(ws)").status == 404)

            // An API key may list but never reveal.
            let key = try await a.call(
                "POST", "/api/account/api-keys", json: ["name": "k", "scopes": ["secrets:list", "secrets:reveal"]])
            let k = Agent(t)
            k.bearer = try #require(key.json["key"] as? String)
            #expect(try await k.call("GET", "/api/secrets?ws_id=\(ws)").status == 200)
            let refused = try await k.call("GET", "/api/secrets/DEPLOY_TOKEN?ws_id=\(ws)")
            #expect(refused.status == 403 && errorCode(refused) == "step_up_required")

            // A stale session must step up again (401 with the challenge).
            clock.advance(by: 16 * 60)
            let stale = try await a.call("GET", "/api/secrets/DEPLOY_TOKEN?ws_id=\(ws)")
            #expect(stale.status == 401 && errorCode(stale) == "step_up_required")
            #expect(stale.headers["www-authenticate"] == "step-up max_age=900")
            #expect(
                try await a.call("POST", "/api/auth/step-up", json: ["password": "a long enough password"]).status
                    == 200)
            #expect(try await a.call("GET", "/api/secrets/DEPLOY_TOKEN?ws_id=\(ws)").status == 200)

            #expect(try await a.call("DELETE", "/api/secrets/DEPLOY_TOKEN?ws_id=\(ws)").status == 204)
            #expect(try await a.call("DELETE", "/api/secrets/DEPLOY_TOKEN?ws_id=\(ws)").status == 404)
            #expect((try await a.call("GET", "/api/secrets?ws_id=\(ws)").json["items"] as? [Any])?.isEmpty == true)
        }
    }

    /// Members list names; only admins and owners set or reveal; other workspaces see nothing.
    @Test func rolesAndWorkspaces() async throws {
        let t = try TestApp()
        try await using(t) { t in
            _ = try await makeUser(t, "owner@example.com")
            _ = try await makeUser(t, "member@example.com")
            let o = Agent(t)
            try await o.login("owner@example.com", "a long enough password")
            let ws = try await workspaceOf(o)
            #expect(
                try await o.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": "member@example.com", "role": "member"]
                )
                .status == 201)
            _ = try await o.call("POST", "/api/secrets/API_TOKEN", json: ["ws_id": ws, "value": "secret-value"])
            let m = Agent(t)
            try await m.login("member@example.com", "a long enough password")
            #expect(try await m.call("GET", "/api/secrets?ws_id=\(ws)").status == 200)
            #expect(try await m.call("GET", "/api/secrets/API_TOKEN?ws_id=\(ws)").status == 403)
            #expect(
                try await m.call("POST", "/api/secrets/API_TOKEN", json: ["ws_id": ws, "value": "mine-now!"]).status
                    == 403)
            #expect(try await m.call("DELETE", "/api/secrets/API_TOKEN?ws_id=\(ws)").status == 403)
            let mine = try #require(try await m.call("GET", "/api/workspaces").json["items"] as? [[String: Any]])
            let own = try #require(mine.compactMap { $0["id"] as? String }.first { $0 != ws })
            #expect(try await m.call("GET", "/api/secrets/API_TOKEN?ws_id=\(own)").status == 404)
        }
    }

    /// A sealed value opens only in its own row: another workspace, name or version fails.
    @Test func envelopeBindsTheRow() throws {
        let master = [UInt8](repeating: 7, count: 32)
        let s = try Envelope.seal(Array("hunter22".utf8), master: master, wsID: "ws_a", name: "A", version: 1)
        #expect(try Envelope.open(s, master: master, wsID: "ws_a", name: "A", version: 1) == Array("hunter22".utf8))
        #expect(throws: (any Error).self) { try Envelope.open(s, master: master, wsID: "ws_b", name: "A", version: 1) }
        #expect(throws: (any Error).self) { try Envelope.open(s, master: master, wsID: "ws_a", name: "B", version: 1) }
        #expect(throws: (any Error).self) { try Envelope.open(s, master: master, wsID: "ws_a", name: "A", version: 2) }
        let other = [UInt8](repeating: 8, count: 32)
        #expect(throws: (any Error).self) { try Envelope.open(s, master: other, wsID: "ws_a", name: "A", version: 1) }
        #expect(
            MasterKey.fingerprint(master) != MasterKey.fingerprint(other) && MasterKey.fingerprint(master).count == 16)
    }

    /// A ciphertext copied into another secret's row (in the database) does not decrypt there.
    @Test func aCopiedCiphertextDoesNotDecrypt() async throws {
        let t = try TestApp()
        try await using(t) { t in
            _ = try await makeUser(t, "c@example.com")
            let a = Agent(t)
            try await a.login("c@example.com", "a long enough password")
            let ws = try await workspaceOf(a)
            _ = try await a.call("POST", "/api/secrets/FIRST_ONE", json: ["ws_id": ws, "value": "first-value"])
            _ = try await a.call("POST", "/api/secrets/SECOND_ONE", json: ["ws_id": ws, "value": "second-value"])
            _ = try await t.app.services.db.write { tx in
                try tx.run(
                    """
                    UPDATE secret_versions
                    SET wrapped_key = (SELECT wrapped_key FROM secret_versions WHERE name = 'FIRST_ONE'),
                        ciphertext = (SELECT ciphertext FROM secret_versions WHERE name = 'FIRST_ONE')
                    WHERE name = 'SECOND_ONE'
                    """)
            }
            let r = try await a.call("GET", "/api/secrets/SECOND_ONE?ws_id=\(ws)")
            #expect(r.status == 409 && !r.text.contains("first-value"), "\(r.text)")
            #expect(
                try await a.call("GET", "/api/secrets/FIRST_ONE?ws_id=\(ws)").json["value"] as? String == "first-value")
        }
    }

    @Test func useChecksNamesExpiryAndLength() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(clock: clock)
        try await using(t) { t in
            _ = try await makeUser(t, "u@example.com")
            let a = Agent(t)
            try await a.login("u@example.com", "a long enough password")
            let ws = try await workspaceOf(a)
            let me = try #require(
                (try await a.call("GET", "/api/auth/session").json["user"] as? [String: Any])?["id"] as? String)
            let soon = HTTPDate.iso8601(clock.now().addingTimeInterval(3600))
            _ = try await a.call(
                "POST", "/api/secrets/LONG_ENOUGH", json: ["ws_id": ws, "value": "abcdefgh", "expires_at": soon])
            _ = try await a.call("POST", "/api/secrets/SHORT", json: ["ws_id": ws, "value": "abc"])
            let svc = try #require(t.app.module(SecretsModule.self)).service
            let got = try await svc.use(["LONG_ENOUGH"], wsID: ws, userID: me, purpose: "test")
            #expect(got == [SecretValue(name: "LONG_ENOUGH", value: "abcdefgh")])
            let listed = try await a.call("GET", "/api/secrets?ws_id=\(ws)")
            #expect(
                (listed.json["items"] as? [[String: Any]])?.first { $0["name"] as? String == "LONG_ENOUGH" }?[
                    "last_used_at"]
                    is String)
            await #expect(throws: HTTPError.self) {
                try await svc.use(["SHORT"], wsID: ws, userID: me, purpose: "test")
            }
            await #expect(throws: HTTPError.self) {
                try await svc.use(["MISSING"], wsID: ws, userID: me, purpose: "test")
            }
            clock.advance(by: 7200)
            await #expect(throws: HTTPError.self) {
                try await svc.use(["LONG_ENOUGH"], wsID: ws, userID: me, purpose: "test")
            }
        }
    }
}
