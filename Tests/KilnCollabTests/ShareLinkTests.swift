import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnCollab
@testable import KilnTestSupport

/// Share links over HTTP: a run shared read-only to a client with no session, its JSON form, the
/// headers, revoke (404), expiry (410), passwords (401), nothing else of the workspace shown, bad
/// input and permissions.
@Suite struct ShareLinkTests {
    /// A finished run that wrote a file.
    static func run(_ x: AgentFixture) async throws -> String {
        x.model.script([
            .openai(
                ScriptedModel.call("w1", "write_file", ["path": "shared.txt", "content": "shared content line\n"])
                    + ScriptedModel.finish("tool_calls")),
            .openai([ScriptedModel.text("wrote it")] + ScriptedModel.finish("stop")),
        ])
        let (run, _) = try await x.runToEnd("write the shared file")
        return run
    }

    @Test func aRunSharedReadOnly() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            let run = try await Self.run(x)
            let made = try await f.a.call(
                "POST", "/api/collab/share-link", json: ["ws_id": f.ws, "subject": ["type": "run", "id": run]])
            #expect(made.status == 201, "\(made.text)")
            let path = try #require(made.json["path"] as? String)
            #expect((made.json["url"] as? String)?.hasSuffix(path) == true)
            let token = String(path.dropFirst(3))
            #expect(token.count >= 43)
            let stored = try await f.t.app.services.db.read { tx in
                try tx.query("SELECT token_hash FROM share_links").compactMap { $0.string("token_hash") }
            }
            #expect(stored.count == 1 && stored[0] != token && !stored[0].contains(token))

            // No session at all, and a session cookie is not even read.
            let anon = Agent(f.t)
            let page = try await anon.call("GET", path)
            #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true, "\(page.text)")
            #expect(page.text.contains("write the shared file") && page.text.contains("shared content line"))
            #expect(page.headers["referrer-policy"] == "no-referrer" && page.headers["x-robots-tag"] == "noindex")
            #expect(page.headers["set-cookie"] == nil && page.headers["cache-control"] == "no-store")
            // Nothing else of the workspace: no workspace, project or account ids.
            for secret in [f.ws, f.pid] { #expect(!page.text.contains(secret), "\(secret) shown") }
            let withCookie = try await f.a.call("GET", path)
            #expect(withCookie.status == 200 && withCookie.headers["set-cookie"] == nil)
            let json = try await anon.call("GET", path + ".json")
            let shown = try #require(json.json["run"] as? [String: Any], "\(json.text)")
            #expect(shown["prompt"] as? String == "write the shared file")
            #expect((shown["diffs"] as? [[String: Any]])?.first?["path"] as? String == "shared.txt")
            #expect((json.json["receipt"] as? [String: Any])?["hash"] is String)
            for secret in [f.ws, f.pid] { #expect(!json.text.contains(secret), "\(secret) in JSON") }

            let list = try await f.a.call("GET", "/api/collab/share-links?ws_id=\(f.ws)")
            let item = try #require((list.json["items"] as? [[String: Any]])?.first)
            #expect(item["views"] as? Int == 3 && item["state"] as? String == "active", "\(list.text)")
            #expect(!list.text.contains(token))

            // Revoked: 404 at once.
            let id = try #require(made.json["id"] as? String)
            #expect(try await f.a.call("DELETE", "/api/collab/share-links/\(id)").status == 204)
            #expect(try await anon.call("GET", path).status == 404)
            #expect(try await anon.call("GET", "/s/not-a-token").status == 404)
        }
    }

    @Test func passwordsExpiryAndBadInput() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            let run = try await Self.run(x)
            func share(_ extra: [String: Any]) async throws -> HTTPResult {
                var body: [String: Any] = ["ws_id": f.ws, "subject": ["type": "run", "id": run]]
                for (k, v) in extra { body[k] = v }
                return try await f.a.call("POST", "/api/collab/share-link", json: body)
            }
            let locked = try await share(["password": "open sesame", "expires_in_hours": 1])
            let path = try #require(locked.json["path"] as? String)
            let anon = Agent(f.t)
            #expect(try await anon.call("GET", path).status == 401)
            #expect(try await anon.call("GET", path + "?password=wrong").status == 401)
            #expect(try await anon.call("GET", path + "?password=open%20sesame").status == 200)
            // Expired: 410.
            _ = try await f.t.app.services.db.write { tx in
                try tx.run("UPDATE share_links SET expires_at = 0")
            }
            #expect(try await anon.call("GET", path + "?password=open%20sesame").status == 410)

            #expect(try await share(["expires_in_hours": 0]).status == 400)
            #expect(try await share(["expires_in_hours": 721]).status == 400)
            #expect(
                try await f.a.call(
                    "POST", "/api/collab/share-link", json: ["ws_id": f.ws, "subject": ["type": "file", "id": "x"]]
                ).status == 400)
            #expect(
                try await f.a.call(
                    "POST", "/api/collab/share-link",
                    json: ["ws_id": f.ws, "subject": ["type": "run", "id": "run_nope"]]
                ).status == 404)

            // A viewer cannot share.
            _ = try await makeUser(f.t, "viewer@example.com")
            _ = try await f.a.call(
                "POST", "/api/workspaces/\(f.ws)/members", json: ["email": "viewer@example.com", "role": "viewer"])
            let v = Agent(f.t)
            try await v.login("viewer@example.com", "a long enough password")
            #expect(
                try await v.call(
                    "POST", "/api/collab/share-link", json: ["ws_id": f.ws, "subject": ["type": "run", "id": run]]
                ).status == 403)
            #expect(try await v.call("GET", "/api/collab/share-links?ws_id=\(f.ws)").status == 200)
        }
    }
}
