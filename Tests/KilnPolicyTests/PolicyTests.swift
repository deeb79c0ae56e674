import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnPolicy
@testable import KilnTestSupport

/// Rule matching (first match, each condition, defaults), the routes, and enforcement where the
/// services act: shell jobs, terminals, secret use, and the agent's tools.
@Suite struct PolicyTests {
    static func compile(_ rules: [[String: Any]], defaults: [String: String] = [:]) throws -> CompiledPolicy {
        let data = try JSONSerialization.data(withJSONObject: ["rules": rules, "defaults": defaults])
        return try PolicyService.compile(try JSONDecoder().decode(JSONValue.self, from: data)).0
    }

    @Test func firstMatchingRuleWinsThenDefaultsThenAllow() throws {
        let p = try Self.compile(
            [
                [
                    "id": "no-rm", "action": "shell.run", "effect": "deny", "when": ["command": #"rm\s+-rf"#],
                    "reason": "no",
                ],
                [
                    "id": "src-edits", "action": "agent.tool.edit_file", "effect": "require_approval",
                    "when": ["path": "src/**"],
                ],
                ["id": "viewers", "action": "shell.*", "effect": "deny", "when": ["actor_role": ["viewer"]]],
                ["id": "keys", "action": "*", "effect": "deny", "when": ["actor_kind": "api_key"]],
                ["id": "prod", "action": "secrets.use", "effect": "deny", "when": ["secret": "PROD_*"]],
                ["id": "internal", "action": "network.connect", "effect": "allow", "when": ["host": "*.example.com"]],
                [
                    "id": "pricey", "action": "agent.tool.run_tests", "effect": "require_approval",
                    "when": ["cost_usd_micros": 500],
                ],
                ["id": "any-shell", "action": "shell.run", "effect": "allow"],
            ], defaults: ["network": "deny", "pty": "deny"])
        let cases: [(String, PolicyContext, PolicyEffect, String?)] = [
            ("shell.run", PolicyContext(command: "rm -rf /"), .deny, "no-rm"),
            ("shell.run", PolicyContext(command: "ls"), .allow, "any-shell"),
            ("agent.tool.edit_file", PolicyContext(path: "src/a/b.swift"), .requireApproval, "src-edits"),
            ("agent.tool.edit_file", PolicyContext(path: "docs/a.md"), .allow, nil),
            ("agent.tool.edit_file", PolicyContext(), .allow, nil),  // a condition on a missing fact fails
            ("shell.test", PolicyContext(actorRole: "viewer"), .deny, "viewers"),
            ("shell.test", PolicyContext(actorRole: "member"), .allow, nil),
            ("pty.open", PolicyContext(actorKind: "api_key"), .deny, "keys"),
            ("pty.open", PolicyContext(actorKind: "user"), .deny, nil),  // the family's default
            ("secrets.use", PolicyContext(secret: "PROD_DB"), .deny, "prod"),
            ("secrets.use", PolicyContext(secret: "DEV_DB"), .allow, nil),
            ("network.connect", PolicyContext(host: "git.example.com"), .allow, "internal"),
            ("network.connect", PolicyContext(host: "evil.test"), .deny, nil),
            ("agent.tool.run_tests", PolicyContext(costUsdMicros: 501), .requireApproval, "pricey"),
            ("agent.tool.run_tests", PolicyContext(costUsdMicros: 500), .allow, nil),
            ("mcp.github.create_issue", PolicyContext(), .allow, nil),
        ]
        for (action, ctx, effect, rule) in cases {
            let d = p.decide(action, ctx)
            #expect(d.effect == effect && d.ruleId == rule, "\(action) \(ctx) → \(d)")
        }
    }

    @Test(arguments: [
        (#"{"rules": [], "extra": 1}"#, "extra"),
        (#"{"rules": [{"id": "a", "action": "shell.run", "effect": "allow", "colour": "red"}]}"#, "colour"),
        (#"{"rules": [{"id": "a", "action": "shell.runn", "effect": "allow"}]}"#, "shell.runn"),
        (#"{"rules": [{"id": "a", "action": "shell.run", "effect": "maybe"}]}"#, "effect"),
        (#"{"rules": [{"id": "a", "action": "shell.run", "effect": "deny", "when": {"weekday": "mon"}}]}"#, "weekday"),
        (#"{"rules": [{"id": "a", "action": "shell.run", "effect": "deny", "when": {"command": "("}}]}"#, "regular"),
        (
            #"{"rules": [{"id": "a", "action": "shell.run", "effect": "deny"}, {"id": "a", "action": "pty.open", "effect": "deny"}]}"#,
            "twice"
        ),
        (#"{"defaults": {"email": "deny"}}"#, "email"),
        (
            #"{"rules": [{"id": "a", "action": "shell.run", "effect": "deny", "when": {"actor_kind": "robot"}}]}"#,
            "actor_kind"
        ),
    ])
    func badDocumentsNameWhatIsWrong(_ doc: String, _ named: String) throws {
        let v = try JSONDecoder().decode(JSONValue.self, from: Data(doc.utf8))
        do {
            _ = try PolicyService.compile(v)
            Issue.record("accepted: \(doc)")
        } catch let e as HTTPError {
            #expect(e.status == .badRequest && e.message.contains(named), "\(e.message)")
        }
    }

    @Test func routesVersionsAndPermissions() async throws {
        let t = try TestApp()
        try await using(t) { t in
            _ = try await makeUser(t, "o@example.com")
            _ = try await makeUser(t, "m@example.com")
            let o = Agent(t)
            try await o.login("o@example.com", "a long enough password")
            let ws = try await workspaceOf(o)
            _ = try await o.call(
                "POST", "/api/workspaces/\(ws)/members", json: ["email": "m@example.com", "role": "member"])
            let empty = try await o.call("GET", "/api/policies?ws_id=\(ws)")
            #expect(empty.status == 200 && empty.json["version"] as? Int == 0 && empty.headers["etag"] == "\"0\"")
            let rules: [[String: Any]] = [
                ["id": "no-rm", "action": "shell.run", "effect": "deny", "when": ["command": "rm -rf"]]
            ]
            let put = try await o.call(
                "PUT", "/api/policies", json: ["ws_id": ws, "rules": rules], headers: ["If-Match": "\"0\""])
            #expect(put.status == 200 && put.json["version"] as? Int == 1, "\(put.text)")
            let stale = try await o.call(
                "PUT", "/api/policies", json: ["ws_id": ws, "rules": []], headers: ["If-Match": "\"0\""])
            #expect(stale.status == 412)
            let bad = try await o.call(
                "PUT", "/api/policies",
                json: ["ws_id": ws, "rules": [["id": "x", "action": "nope", "effect": "deny"]]])
            #expect(bad.status == 400 && bad.text.contains("nope"))
            let eval = try await o.call(
                "POST", "/api/policies/evaluate",
                json: ["ws_id": ws, "action": "shell.run", "context": ["command": "rm -rf /tmp/x"]])
            #expect(
                eval.json["effect"] as? String == "deny" && eval.json["rule_id"] as? String == "no-rm", "\(eval.text)")
            #expect(
                try await o.call("POST", "/api/policies/evaluate", json: ["ws_id": ws, "action": "bogus"]).status == 400
            )
            let history = try await o.call("GET", "/api/policies/history?ws_id=\(ws)")
            #expect((history.json["items"] as? [[String: Any]])?.compactMap { $0["version"] as? Int } == [1])
            // A member reads but does not change it.
            let m = Agent(t)
            try await m.login("m@example.com", "a long enough password")
            #expect(try await m.call("GET", "/api/policies?ws_id=\(ws)").status == 200)
            #expect(try await m.call("PUT", "/api/policies", json: ["ws_id": ws, "rules": []]).status == 403)
        }
    }

    @Test func denyStopsTheSameActionsEverywhere() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            let rules: [[String: Any]] = [
                [
                    "id": "no-rm", "action": "shell.run", "effect": "deny", "when": ["command": #"rm\s+-rf"#],
                    "reason": "never",
                ],
                [
                    "id": "agent-no-rm", "action": "agent.tool.run_command", "effect": "deny",
                    "when": ["command": #"rm\s+-rf"#],
                ],
                ["id": "no-terminals", "action": "pty.open", "effect": "deny"],
                ["id": "no-prod", "action": "secrets.use", "effect": "deny", "when": ["secret": "PROD_*"]],
                ["id": "no-peeking", "action": "secrets.reveal", "effect": "deny", "when": ["secret": "PROD_*"]],
            ]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            try "keep\n".write(toFile: f.dir + "/keep.txt", atomically: true, encoding: .utf8)

            let denied = try await f.a.call(
                "POST", "/api/shell/run", json: ["project_id": f.pid, "command": "rm -rf keep.txt"])
            #expect(
                denied.status == 403 && errorCode(denied) == "policy_denied" && denied.text.contains("no-rm"),
                "\(denied.text)")
            #expect(FileManager.default.fileExists(atPath: f.dir + "/keep.txt"))
            #expect(output(try await f.run("echo allowed"), "stdout") == "allowed\n")
            let pty = try await f.a.call("POST", "/api/pty/spawn", json: ["project_id": f.pid])
            #expect(pty.status == 403 && pty.text.contains("no-terminals"))
            _ = try await f.a.call("POST", "/api/secrets/PROD_DB", json: ["ws_id": f.ws, "value": "prod-password"])
            let use = try await f.a.call(
                "POST", "/api/shell/run", json: ["project_id": f.pid, "command": "true", "secrets": ["PROD_DB"]])
            #expect(use.status == 403 && use.text.contains("no-prod"), "\(use.text)")
            let peek = try await f.a.call("GET", "/api/secrets/PROD_DB?ws_id=\(f.ws)")
            #expect(peek.status == 403 && peek.text.contains("no-peeking") && !peek.text.contains("prod-password"))

            // The agent's call is stopped with a tool result naming the rule; the file stays.
            x.model.script([
                .openai(
                    ScriptedModel.call("c1", "run_command", ["command": "rm -rf keep.txt"])
                        + ScriptedModel.finish("tool_calls")),
                .openai([ScriptedModel.text("ok")] + ScriptedModel.finish("stop")),
            ])
            let (run, _) = try await x.runToEnd()
            let events = try await x.follow(run).text
            #expect(events.contains("agent-no-rm") && events.contains("policy"), "\(events)")
            #expect(FileManager.default.fileExists(atPath: f.dir + "/keep.txt"))
        }
    }
}
