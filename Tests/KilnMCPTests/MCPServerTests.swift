import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnMCP
@testable import KilnTestSupport

/// Kiln's MCP server over HTTP: both protocol revisions, their envelopes and headers, the JSON-RPC
/// error codes, API-key scopes narrowing the tools, and the tools acting on a real project.
@Suite struct MCPServerTests {
    static var meta: [String: Any] {
        [
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": [String: Any](),
        ]
    }

    /// A member's API key with `scopes` (all of a member's permissions by default).
    static func keyed(_ f: ShellFixture, scopes: [String]? = nil) async throws -> Agent {
        let all = [
            "workspace:list", "project:read", "project:write", "shell:run", "shell:read", "agent:run", "agent:read",
            "receipts:read",
        ]
        let body: [String: Any] = ["name": "mcp", "scopes": scopes ?? all]
        let key = try await f.a.call("POST", "/api/account/api-keys", json: body)
        let k = Agent(f.t)
        k.bearer = try #require(key.json["key"] as? String, "\(key.text)")
        return k
    }

    /// A stateless-revision request with matching headers.
    static func modern(
        _ k: Agent, _ method: String, _ params: [String: Any] = [:], id: Int = 1, headers: [String: String] = [:]
    ) async throws -> HTTPResult {
        var p = params
        p["_meta"] = meta
        var h = ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, "Accept": "application/json"]
        if method == "tools/call", let name = params["name"] as? String { h["Mcp-Name"] = name }
        for (k, v) in headers { h[k] = v }
        return try await k.call(
            "POST", "/mcp", json: ["jsonrpc": "2.0", "id": id, "method": method, "params": p], headers: h)
    }

    static func result(_ r: HTTPResult) -> [String: Any] { r.json["result"] as? [String: Any] ?? [:] }
    static func error(_ r: HTTPResult) -> [String: Any] { r.json["error"] as? [String: Any] ?? [:] }

    @Test func theStatelessRevision() async throws {
        let f = try await ShellFixture.make(["src/app.py": "def answer():\n    return 41\n"])
        try await using(f) { f in
            let k = try await Self.keyed(f)
            let d = try await Self.modern(k, "server/discover")
            #expect(d.status == 200, "\(d.text)")
            #expect((Self.result(d)["supportedVersions"] as? [String])?.contains("2026-07-28") == true)
            #expect(Self.result(d)["resultType"] as? String == "complete")

            let list = try await Self.modern(k, "tools/list")
            let names = (Self.result(list)["tools"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
            #expect(
                Set(["list_projects", "search", "read_file", "edit_file", "run_command", "get_run", "verify_receipts"])
                    .isSubset(of: Set(names)), "\(names)")
            #expect(Self.result(list)["ttlMs"] as? Int == 0 && Self.result(list)["cacheScope"] as? String == "private")

            let read = try await Self.modern(
                k, "tools/call", ["name": "read_file", "arguments": ["path": "src/app.py", "project_id": f.pid]])
            let r = Self.result(read)
            #expect(r["isError"] as? Bool == false, "\(read.text)")
            #expect(
                (r["structuredContent"] as? [String: Any])?["output"] as? String
                    == "1\tdef answer():\n2\t    return 41\n3\t\n")

            let edit = try await Self.modern(
                k, "tools/call",
                ["name": "edit_file", "arguments": ["path": "src/app.py", "old_string": "41", "new_string": "42"]])
            #expect(Self.result(edit)["isError"] as? Bool == false, "\(edit.text)")
            #expect(try String(contentsOfFile: f.dir + "/src/app.py", encoding: .utf8).contains("return 42"))

            let outside = try await Self.modern(
                k, "tools/call", ["name": "read_file", "arguments": ["path": "../../etc/passwd"]])
            #expect(outside.status == 200 && Self.result(outside)["isError"] as? Bool == true, "\(outside.text)")
            #expect(Self.result(outside)["structuredContent"] == nil)

            // Arguments are checked against the tool's schema, naming the path.
            let bad = try await Self.modern(k, "tools/call", ["name": "read_file", "arguments": ["path": 7]])
            #expect(bad.status == 400 && Self.error(bad)["code"] as? Int == -32602, "\(bad.text)")
            #expect(((Self.error(bad)["data"] as? [String: Any])?["path"] as? String) == "$.path")

            // The envelope, the headers and the version.
            let noMeta = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": [:]],
                headers: ["MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"])
            #expect(noMeta.status == 400 && Self.error(noMeta)["code"] as? Int == -32602, "\(noMeta.text)")
            let mismatch = try await Self.modern(k, "tools/list", headers: ["Mcp-Method": "tools/call"])
            #expect(mismatch.status == 400 && Self.error(mismatch)["code"] as? Int == -32020)
            let name = try await Self.modern(
                k, "tools/call", ["name": "read_file", "arguments": ["path": "x"]], headers: ["Mcp-Name": "search"])
            #expect(name.status == 400 && Self.error(name)["code"] as? Int == -32020)
            var future = Self.meta
            future["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
            let unsupported = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": ["_meta": future]],
                headers: ["MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"])
            #expect(
                unsupported.status == 400 && Self.error(unsupported)["code"] as? Int == -32022, "\(unsupported.text)")
            #expect(
                ((Self.error(unsupported)["data"] as? [String: Any])?["supported"] as? [String])?.contains("2026-07-28")
                    == true)
            let unknown = try await Self.modern(k, "prompts/list")
            #expect(unknown.status == 404 && Self.error(unknown)["code"] as? Int == -32601)
            let note = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "method": "notifications/cancelled", "params": [:]],
                headers: ["MCP-Protocol-Version": "2026-07-28"])
            #expect(note.status == 202 && note.text.isEmpty)
        }
    }

    @Test func badJSONRPCGetsItsCode() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let k = try await Self.keyed(f)
            let h = ["Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28"]
            let parse = try await k.call("POST", "/mcp", body: Array("{nope".utf8), headers: h)
            #expect(parse.status == 400 && Self.error(parse)["code"] as? Int == -32700, "\(parse.text)")
            #expect(parse.text.contains("\"id\":null"))
            let batch = try await k.call(
                "POST", "/mcp", body: Array(#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.utf8), headers: h)
            #expect(batch.status == 400 && Self.error(batch)["code"] as? Int == -32600)
            let noVersion = try await k.call("POST", "/mcp", body: Array(#"{"id":1,"method":"ping"}"#.utf8), headers: h)
            #expect(Self.error(noVersion)["code"] as? Int == -32600)
            let badID = try await k.call(
                "POST", "/mcp", body: Array(#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#.utf8), headers: h)
            #expect(Self.error(badID)["code"] as? Int == -32600)
            let text = try await k.call("POST", "/mcp", body: Array("{}".utf8), headers: ["Content-Type": "text/plain"])
            #expect(text.status == 415)
            #expect(try await k.call("GET", "/mcp").status == 405)
            // A browser session is not an API key; another origin may not call.
            #expect(
                try await f.a.call("POST", "/mcp", json: ["jsonrpc": "2.0", "id": 1, "method": "ping"]).status == 401)
            let foreign = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 1, "method": "initialize"],
                headers: ["Origin": "https://evil.example"])
            #expect(foreign.status == 403)
            #expect(
                try await Agent(f.t).call("POST", "/mcp", json: ["jsonrpc": "2.0", "id": 1, "method": "ping"]).status
                    == 401)
        }
    }

    @Test func theHandshakeRevisionWithSessions() async throws {
        let f = try await ShellFixture.make(["notes.md": "kiln\n"])
        try await using(f) { f in
            let k = try await Self.keyed(f)
            let initialize: [String: Any] = [
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": [
                    "protocolVersion": "2025-11-25", "capabilities": [String: Any](),
                    "clientInfo": ["name": "test", "version": "1"],
                ],
            ]
            let i = try await k.call("POST", "/mcp", json: initialize)
            #expect(i.status == 200 && Self.result(i)["protocolVersion"] as? String == "2025-11-25", "\(i.text)")
            let sid = try #require(i.headers["mcp-session-id"])
            let h = ["Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"]
            #expect(
                try await k.call(
                    "POST", "/mcp", json: ["jsonrpc": "2.0", "method": "notifications/initialized"], headers: h
                ).status == 202)
            let list = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 2, "method": "tools/list"], headers: h)
            #expect((Self.result(list)["tools"] as? [Any])?.isEmpty == false, "\(list.text)")
            #expect(Self.result(list)["resultType"] == nil)
            let ping = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 3, "method": "ping"], headers: h)
            #expect(ping.status == 200 && Self.result(ping).isEmpty)
            // Resources: the project's files.
            _ = try await f.a.call(
                "POST", "/api/project/rescan", json: ["project_id": f.pid], headers: ["Accept": "application/json"])
            var uris: [String] = []
            for _ in 0..<100 where uris.isEmpty {
                let rl = try await k.call(
                    "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 4, "method": "resources/list"], headers: h)
                uris = (Self.result(rl)["resources"] as? [[String: Any]])?.compactMap { $0["uri"] as? String } ?? []
                if uris.isEmpty { try await Task.sleep(nanoseconds: 100_000_000) }
            }
            let notes = try #require(uris.first { $0.hasSuffix("/notes.md") }, "\(uris)")
            let rr = try await k.call(
                "POST", "/mcp",
                json: ["jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": ["uri": notes]],
                headers: h)
            #expect(
                (Self.result(rr)["contents"] as? [[String: Any]])?.first?["text"] as? String == "kiln\n", "\(rr.text)")
            // Sessions: missing, someone else's, ended.
            let missing = try await k.call("POST", "/mcp", json: ["jsonrpc": "2.0", "id": 6, "method": "tools/list"])
            #expect(missing.status == 400)
            let other = try await Self.keyed(f)
            #expect(
                try await other.call(
                    "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 7, "method": "tools/list"], headers: h
                ).status == 404)
            #expect(try await k.call("DELETE", "/mcp", headers: h).status == 204)
            let gone = try await k.call(
                "POST", "/mcp", json: ["jsonrpc": "2.0", "id": 8, "method": "tools/list"], headers: h)
            #expect(gone.status == 404 && Self.error(gone)["code"] as? Int == -32001)
        }
    }

    @Test func aKeysScopesNarrowTheTools() async throws {
        let f = try await ShellFixture.make(["a.txt": "x\n"])
        try await using(f) { f in
            let k = try await Self.keyed(f, scopes: ["project:read", "workspace:list"])
            let names =
                (Self.result(try await Self.modern(k, "tools/list"))["tools"] as? [[String: Any]])?.compactMap {
                    $0["name"] as? String
                } ?? []
            #expect(names.contains("read_file") && !names.contains("run_command") && !names.contains("edit_file"))
            let call = try await Self.modern(k, "tools/call", ["name": "run_command", "arguments": ["command": "id"]])
            #expect(call.status == 400 && Self.error(call)["code"] as? Int == -32602, "\(call.text)")
            let projects = try await Self.modern(k, "tools/call", ["name": "list_projects", "arguments": [:]])
            let listed = (Self.result(projects)["structuredContent"] as? [String: Any])?["projects"] as? [[String: Any]]
            #expect(listed?.first?["id"] as? String == f.pid, "\(projects.text)")
        }
    }
}
