import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnMCP
@testable import KilnTestSupport

/// The registry over HTTP, with another Kiln's `/mcp` as the external server (a real server on a
/// real socket): registration and its checks, sealed tokens, refresh, the catalogue, invoke with
/// schema checks and the policy, permissions, and the outbound guard.
@Suite struct RegistryTests {
    /// A second Kiln with a project, reachable as an MCP server with an API key.
    static func remote() async throws -> (ShellFixture, key: String) {
        let f = try await ShellFixture.make(["hello.txt": "hello from the other side\n"])
        let key = try await f.a.call(
            "POST", "/api/account/api-keys", json: ["name": "remote", "scopes": ["workspace:list", "project:read"]])
        return (f, try #require(key.json["key"] as? String, "\(key.text)"))
    }

    @Test func registerRefreshAndInvokeAnotherKiln() async throws {
        let (other, remoteKey) = try await Self.remote()
        let f = try await ShellFixture.make { c in c.set("--allow-private-network", "127.0.0.1/32") }
        try await using(f) { f in
            try await using(other) { other in
                let a = f.a
                let token = try await a.call(
                    "POST", "/api/mcp/tokens", json: ["ws_id": f.ws, "name": "other", "token": remoteKey])
                #expect(token.status == 201 && !token.text.contains(remoteKey), "\(token.text)")
                let tokenID = try #require(token.json["id"] as? String)
                let listed = try await a.call("GET", "/api/mcp/tokens?ws_id=\(f.ws)")
                #expect(listed.text.contains("other") && !listed.text.contains(remoteKey))
                // The sealed token is bound to its row: a copy under another id does not open.
                let row = try #require(
                    try await f.t.app.services.db.read { tx in
                        try tx.first("SELECT sealed FROM mcp_tokens WHERE id = ?", tokenID)
                    })
                let sealed = try #require(row.blob("sealed"))
                #expect(!String(decoding: sealed, as: UTF8.self).contains(remoteKey))
                #expect(throws: (any Error).self) {
                    try MCPRegistryService.openHeaders(sealed, id: "mct_other", key: f.t.app.services.masterKey.bytes)
                }

                let url = other.t.base + "/mcp"
                let created = try await a.call(
                    "POST", "/api/mcp/servers",
                    json: ["ws_id": f.ws, "name": "other", "transport": "http", "url": url, "token_id": tokenID])
                #expect(created.status == 201, "\(created.text)")
                let id = try #require(created.json["id"] as? String)
                let refreshed = try await a.call("POST", "/api/mcp/servers/\(id)/refresh")
                #expect(
                    refreshed.status == 200 && refreshed.json["protocol_version"] as? String == "2026-07-28",
                    "\(refreshed.text)")
                // The remote key holds project:read only: its read tools, not run_command.
                let catalogue = try await a.call("GET", "/api/mcp?ws_id=\(f.ws)&q=other.")
                let names = (catalogue.json["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
                #expect(names.contains("other.read_file") && !names.contains("other.run_command"), "\(names)")
                let health = try await a.call("GET", "/api/mcp/servers/\(id)/health")
                #expect(health.json["ok"] as? Bool == true, "\(health.text)")

                let read = try await a.call(
                    "POST", "/api/mcp",
                    json: ["ws_id": f.ws, "tool": "other.read_file", "arguments": ["path": "hello.txt"]])
                #expect(read.status == 200 && read.json["is_error"] as? Bool == false, "\(read.text)")
                #expect(read.text.contains("hello from the other side"))
                let bad = try await a.call(
                    "POST", "/api/mcp", json: ["ws_id": f.ws, "tool": "other.read_file", "arguments": ["path": 3]])
                #expect(
                    bad.status == 400
                        && (bad.json["error"] as? [String: Any]).map { "\($0)" }?.contains("arguments.path") == true)
                let missing = try await a.call("POST", "/api/mcp", json: ["ws_id": f.ws, "tool": "other.nope"])
                #expect(missing.status == 404)
                let outside = try await a.call(
                    "POST", "/api/mcp",
                    json: ["ws_id": f.ws, "tool": "other.read_file", "arguments": ["path": "../../etc/passwd"]])
                #expect(outside.status == 200 && outside.json["is_error"] as? Bool == true, "\(outside.text)")

                // The policy judges external tools by name.
                let rules: [[String: Any]] = [
                    ["id": "no-remote-reads", "action": "mcp.other.read_file", "effect": "deny"]
                ]
                #expect(try await a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
                let denied = try await a.call(
                    "POST", "/api/mcp",
                    json: ["ws_id": f.ws, "tool": "other.read_file", "arguments": ["path": "hello.txt"]])
                #expect(denied.status == 403 && denied.text.contains("no-remote-reads"), "\(denied.text)")

                // Changes, the name rule, removal.
                let patched = try await a.call(
                    "PATCH", "/api/mcp/servers/\(id)", json: ["enabled": false, "timeout_s": 5])
                #expect(patched.json["enabled"] as? Bool == false && patched.json["timeout_s"] as? Int == 5)
                #expect(try await a.call("PATCH", "/api/mcp/servers/\(id)", json: ["timeout_s": 0]).status == 400)
                #expect(try await a.call("DELETE", "/api/mcp/tokens/\(tokenID)").status == 204)
                #expect(try await a.call("GET", "/api/mcp/servers/\(id)").json["token_id"] is NSNull)
                #expect(try await a.call("DELETE", "/api/mcp/servers/\(id)").status == 204)
                #expect(try await a.call("GET", "/api/mcp/servers/\(id)").status == 404)
            }
        }
    }

    @Test func anAgentRunCallsARegistryTool() async throws {
        let (other, remoteKey) = try await Self.remote()
        let x = try await AgentFixture.make { c in c.set("--allow-private-network", "127.0.0.1/32") }
        try await using(x) { x in
            try await using(other) { other in
                let f = x.f
                let token = try await f.a.call(
                    "POST", "/api/mcp/tokens", json: ["ws_id": f.ws, "name": "other", "token": remoteKey])
                let server = try await f.a.call(
                    "POST", "/api/mcp/servers",
                    json: [
                        "ws_id": f.ws, "name": "other", "transport": "http", "url": other.t.base + "/mcp",
                        "token_id": try #require(token.json["id"] as? String),
                    ])
                let id = try #require(server.json["id"] as? String)
                #expect(try await f.a.call("POST", "/api/mcp/servers/\(id)/refresh").status == 200)
                // An unknown selection is refused at the start.
                let unknown = try await f.a.call(
                    "POST", "/api/agent/run",
                    json: ["project_id": f.pid, "prompt": "x", "tools": ["other.nope"]],
                    headers: ["Accept": "application/json"])
                #expect(unknown.status == 400 && unknown.text.contains("other.nope"), "\(unknown.text)")

                x.model.script([
                    .openai(
                        ScriptedModel.call("r1", "other__read_file", ["path": "hello.txt"])
                            + ScriptedModel.finish("tool_calls")),
                    .openai([ScriptedModel.text("done")] + ScriptedModel.finish("stop")),
                ])
                let r = try await f.a.call(
                    "POST", "/api/agent/run",
                    json: ["project_id": f.pid, "prompt": "read the remote file", "tools": ["other.*"]],
                    headers: ["Accept": "application/json"])
                let run = try #require(r.json["run_id"] as? String, "\(r.text)")
                let events = try await x.follow(run).text
                #expect(events.contains("\"tool\":\"other.read_file\""), "\(events)")
                #expect(events.contains("hello from the other side"))
                // The model was offered the tool under a name its API accepts.
                let first = x.model.bodies.withLock { $0.first }.map { String(decoding: $0, as: UTF8.self) } ?? ""
                #expect(first.contains("other__read_file"))
                var receipt: [String: Any] = [:]
                for _ in 0..<100 {
                    let rc = try await f.a.call("GET", "/api/receipts/\(run)")
                    if rc.status == 200 {
                        receipt = rc.json
                        break
                    }
                    try await Task.sleep(nanoseconds: 50_000_000)
                }
                let tools = (receipt["tool_calls"] as? [[String: Any]])?.compactMap { $0["tool"] as? String }
                #expect(tools == ["other.read_file"], "\(receipt)")

                // The policy judges it as mcp.<server>.<tool> inside runs too.
                let rules: [[String: Any]] = [["id": "no-remote", "action": "mcp.other.*", "effect": "deny"]]
                #expect(
                    try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
                x.model.script([
                    .openai(
                        ScriptedModel.call("r2", "other__read_file", ["path": "hello.txt"])
                            + ScriptedModel.finish("tool_calls")),
                    .openai([ScriptedModel.text("ok")] + ScriptedModel.finish("stop")),
                ])
                let r2 = try await f.a.call(
                    "POST", "/api/agent/run",
                    json: ["project_id": f.pid, "prompt": "again", "tools": ["other.read_file"]],
                    headers: ["Accept": "application/json"])
                let denied = try await x.follow(try #require(r2.json["run_id"] as? String)).text
                #expect(denied.contains("no-remote") && !denied.contains("hello from the other side"), "\(denied)")
            }
        }
    }

    @Test func badRegistrationsAndTheGuard() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let a = f.a
            func create(_ body: [String: Any]) async throws -> HTTPResult {
                var b = body
                b["ws_id"] = f.ws
                return try await a.call("POST", "/api/mcp/servers", json: b)
            }
            #expect(
                try await create(["name": "Bad Name", "transport": "http", "url": "https://x.example/mcp"]).status
                    == 400)
            #expect(try await create(["name": "x", "transport": "carrier-pigeon"]).status == 400)
            #expect(try await create(["name": "x", "transport": "http"]).status == 400)
            #expect(try await create(["name": "x", "transport": "http", "url": "ftp://x.example"]).status == 400)
            #expect(
                try await create(["name": "x", "transport": "http", "url": "https://u:p@x.example/mcp"]).status == 400)
            #expect(try await create(["name": "x", "transport": "stdio"]).status == 400)
            #expect(
                try await create(["name": "x", "transport": "stdio", "command": "python3", "env_names": ["lower"]])
                    .status
                    == 400)
            #expect(
                try await create([
                    "name": "x", "transport": "http", "url": "https://x.example/mcp", "token_id": "mct_none",
                ])
                .status == 400)
            #expect(
                try await create(["name": "ok", "transport": "http", "url": "http://127.0.0.1:9/mcp"]).status == 201)
            #expect(
                try await create(["name": "ok", "transport": "http", "url": "http://127.0.0.1:9/mcp"]).status == 409)
            // Loopback is refused without --allow-private-network, before anything connects.
            let id = try #require(
                try await a.call("GET", "/api/mcp/servers?ws_id=\(f.ws)").json["items"].flatMap {
                    ($0 as? [[String: Any]])?.first?["id"] as? String
                })
            let refused = try await a.call("POST", "/api/mcp/servers/\(id)/refresh")
            #expect(refused.status == 502 && refused.text.contains("private or reserved"), "\(refused.text)")
            #expect(try await a.call("GET", "/api/mcp/servers/\(id)").json["last_error"] is String)
            let health = try await a.call("GET", "/api/mcp/servers/\(id)/health")
            #expect(health.status == 200 && health.json["ok"] as? Bool == false)
            // Tokens: one of token or headers, header names checked.
            #expect(try await a.call("POST", "/api/mcp/tokens", json: ["ws_id": f.ws, "name": "t"]).status == 400)
            #expect(
                try await a.call(
                    "POST", "/api/mcp/tokens", json: ["ws_id": f.ws, "name": "t", "headers": ["Host": "evil"]]
                ).status == 400)
            #expect(
                try await a.call(
                    "POST", "/api/mcp/tokens", json: ["ws_id": f.ws, "name": "t", "headers": ["X-Api-Key": "k1234567"]]
                ).status == 201)
            #expect(try await a.call("POST", "/api/mcp", json: ["ws_id": f.ws, "tool": "nodot"]).status == 400)
            #expect(
                try await a.call("POST", "/api/mcp", json: ["ws_id": f.ws, "tool": "kiln.read_file", "arguments": [1]])
                    .status == 400)

            // A viewer reads the registry but changes and calls nothing.
            _ = try await makeUser(f.t, "viewer@example.com")
            _ = try await a.call(
                "POST", "/api/workspaces/\(f.ws)/members", json: ["email": "viewer@example.com", "role": "viewer"])
            let v = Agent(f.t)
            try await v.login("viewer@example.com", "a long enough password")
            #expect(try await v.call("GET", "/api/mcp/servers?ws_id=\(f.ws)").status == 200)
            #expect(try await v.call("GET", "/api/mcp?ws_id=\(f.ws)").status == 200)
            #expect(
                try await v.call(
                    "POST", "/api/mcp/servers",
                    json: ["ws_id": f.ws, "name": "v", "transport": "http", "url": "https://x.example/mcp"]
                ).status == 403)
            #expect(
                try await v.call("POST", "/api/mcp", json: ["ws_id": f.ws, "tool": "kiln.list_files"]).status == 403)
            #expect(try await v.call("DELETE", "/api/mcp/servers/\(id)").status == 403)
        }
    }
}
