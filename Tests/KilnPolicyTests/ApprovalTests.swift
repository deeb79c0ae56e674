import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnPolicy
@testable import KilnTestSupport

/// `require_approval`: an agent's call parks the run until another member decides (approved: the edit
/// lands; rejected or expired: the file stays), both in the receipt chain; a REST request is answered
/// 202 and runs once approved, with its job id on the approval.
@Suite struct ApprovalTests {
    static var srcRule: [String: Any] {
        [
            "id": "src-needs-review", "action": "agent.tool.edit_file", "effect": "require_approval",
            "when": ["path": "src/**"], "reason": "source changes need a second pair of eyes",
        ]
    }

    /// A second member who may decide (signed in, so stepped up).
    static func approver(_ f: ShellFixture, role: String = "member") async throws -> Agent {
        let email = "approver-\(role)@example.com"
        _ = try await makeUser(f.t, email)
        _ = try await f.a.call("POST", "/api/workspaces/\(f.ws)/members", json: ["email": email, "role": role])
        let b = Agent(f.t)
        try await b.login(email, "a long enough password")
        return b
    }

    /// The first pending approval of the workspace, waiting up to 20 s for it to appear.
    static func pending(_ f: ShellFixture) async throws -> [String: Any] {
        for _ in 0..<400 {
            let r = try await f.a.call("GET", "/api/approvals?ws_id=\(f.ws)&state=pending")
            if let first = (r.json["items"] as? [[String: Any]])?.first { return first }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw HTTPError(.notFound, message: "no approval appeared")
    }

    func startEdit(_ x: AgentFixture) async throws -> String {
        try FileManager.default.createDirectory(atPath: x.f.dir + "/src", withIntermediateDirectories: true)
        try "let answer = 41\n".write(toFile: x.f.dir + "/src/app.swift", atomically: true, encoding: .utf8)
        #expect(
            try await x.f.a.call("PUT", "/api/policies", json: ["ws_id": x.f.ws, "rules": [Self.srcRule]]).status
                == 200)
        x.model.script([
            .openai(
                ScriptedModel.call(
                    "c1", "edit_file",
                    ["path": "src/app.swift", "old_string": "41", "new_string": "42"])
                    + ScriptedModel.finish("tool_calls")),
            .openai([ScriptedModel.text("done")] + ScriptedModel.finish("stop")),
        ])
        let r = try await x.f.a.call(
            "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "fix the answer"],
            headers: ["Accept": "application/json"])
        return try #require(r.json["run_id"] as? String, "\(r.text)")
    }

    func receiptApprovals(_ x: AgentFixture, _ run: String) async throws -> [[String: Any]] {
        for _ in 0..<100 {
            let r = try await x.f.a.call("GET", "/api/receipts/\(run)")
            if r.status == 200 { return r.json["approvals"] as? [[String: Any]] ?? [] }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        return []
    }

    @Test func approvedEditWaitsThenLandsAndIsReceipted() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let b = try await Self.approver(x.f)
            let run = try await startEdit(x)
            let apv = try await Self.pending(x.f)
            let id = try #require(apv["id"] as? String)
            #expect(apv["action"] as? String == "agent.tool.edit_file" && apv["run_id"] as? String == run)
            #expect(apv["rule_id"] as? String == "src-needs-review")
            #expect((apv["context"] as? [String: Any])?["path"] as? String == "src/app.swift", "\(apv)")
            // The run waits: its status says so, and nothing was written.
            let waiting = try await x.f.a.call("GET", "/api/agent/runs/\(run)")
            #expect(waiting.json["status"] as? String == "waiting_approval", "\(waiting.text)")
            #expect(try String(contentsOfFile: x.f.dir + "/src/app.swift", encoding: .utf8) == "let answer = 41\n")
            // Not by the requester (the rule does not allow self-approval); a viewer may not decide.
            let own = try await x.f.a.call("POST", "/api/approvals/\(id)/approve", json: [:])
            #expect(own.status == 403, "\(own.text)")
            let viewer = try await Self.approver(x.f, role: "viewer")
            #expect(try await viewer.call("GET", "/api/approvals/\(id)").status == 200)
            #expect(try await viewer.call("POST", "/api/approvals/\(id)/approve", json: [:]).status == 403)

            let ok = try await b.call("POST", "/api/approvals/\(id)/approve", json: ["reason": "looks right"])
            #expect(ok.status == 200 && ok.json["state"] as? String == "approved", "\(ok.text)")
            #expect(try await b.call("POST", "/api/approvals/\(id)/approve", json: [:]).status == 409)
            let events = try await x.follow(run).text
            #expect(events.contains("event: approval.required") && events.contains("event: approval.resolved"))
            #expect(events.contains("event: run.completed"), "\(events)")
            #expect(try String(contentsOfFile: x.f.dir + "/src/app.swift", encoding: .utf8) == "let answer = 42\n")
            let receipted = try await receiptApprovals(x, run)
            #expect(
                receipted.first?["decision"] as? String == "approved"
                    && receipted.first?["approval_id"] as? String == id)
            #expect(try await x.f.a.call("POST", "/api/receipts/\(run)/verify").json["ok"] as? Bool == true)
        }
    }

    @Test func rejectedEditLeavesTheFileAndTellsTheModel() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let b = try await Self.approver(x.f)
            let run = try await startEdit(x)
            let id = try #require(try await Self.pending(x.f)["id"] as? String)
            let no = try await b.call("POST", "/api/approvals/\(id)/reject", json: ["reason": "not like this"])
            #expect(no.status == 200 && no.json["state"] as? String == "rejected", "\(no.text)")
            let events = try await x.follow(run).text
            #expect(events.contains("rejected") && events.contains("not like this"), "\(events)")
            #expect(events.contains("event: run.completed"))
            #expect(try String(contentsOfFile: x.f.dir + "/src/app.swift", encoding: .utf8) == "let answer = 41\n")
            // The model was told in the tool result.
            let last = x.model.bodies.withLock { $0.last }.map { String(decoding: $0, as: UTF8.self) } ?? ""
            #expect(last.contains("rejected"), "\(last)")
            let receipted = try await receiptApprovals(x, run)
            #expect(receipted.first?["decision"] as? String == "rejected")
            #expect(try await x.chainRows().count == 1)
        }
    }

    @Test func anExpiredApprovalRejects() async throws {
        let x = try await AgentFixture.make { c in c.set("--approval-ttl", "1") }
        try await using(x) { x in
            let run = try await startEdit(x)
            let id = try #require(try await Self.pending(x.f)["id"] as? String)
            let events = try await x.follow(run).text
            #expect(events.contains("\"decision\":\"expired\""), "\(events)")
            #expect(try String(contentsOfFile: x.f.dir + "/src/app.swift", encoding: .utf8) == "let answer = 41\n")
            let apv = try await x.f.a.call("GET", "/api/approvals/\(id)")
            #expect(apv.json["state"] as? String == "rejected" && apv.json["expired"] as? Bool == true, "\(apv.text)")
            let b = try await Self.approver(x.f)
            #expect(try await b.call("POST", "/api/approvals/\(id)/approve", json: [:]).status == 409)
            #expect(try await receiptApprovals(x, run).first?["decision"] as? String == "expired")
        }
    }

    @Test func cancellingAWaitingRunWithdrawsItsApproval() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let run = try await startEdit(x)
            let id = try #require(try await Self.pending(x.f)["id"] as? String)
            #expect(try await x.f.a.call("POST", "/api/agent/cancel/\(run)").status == 200)
            #expect(try await x.follow(run).text.contains("event: run.cancelled"))
            var state: String? = nil
            for _ in 0..<100 {
                state = try await x.f.a.call("GET", "/api/approvals/\(id)").json["state"] as? String
                if state != "pending" { break }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
            #expect(state == "cancelled")
        }
    }

    @Test func aRESTCommandIsParkedAndRunsOnceApproved() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let rules: [[String: Any]] = [
                ["id": "deploys", "action": "shell.run", "effect": "require_approval", "when": ["command": "^deploy"]],
                [
                    "id": "own-ok", "action": "shell.test", "effect": "require_approval", "self_approval": true,
                ],
            ]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            let b = try await Self.approver(f)
            let parked = try await f.a.call(
                "POST", "/api/shell/run", json: ["project_id": f.pid, "command": "deploy() { echo shipped; }; deploy"])
            #expect(parked.status == 202, "\(parked.text)")
            let id = try #require(parked.json["approval_id"] as? String)
            #expect(parked.json["rule_id"] as? String == "deploys" && parked.json["state"] as? String == "pending")
            #expect(
                (try await f.a.call("GET", "/api/shell/jobs?project_id=\(f.pid)").json["items"] as? [Any])?.isEmpty
                    == true)
            // Other commands are not held.
            #expect(output(try await f.run("echo free"), "stdout") == "free\n")

            let ok = try await b.call("POST", "/api/approvals/\(id)/approve", json: [:])
            #expect(ok.status == 200, "\(ok.text)")
            let job = try #require(ok.json["job_id"] as? String, "\(ok.text)")
            let events = try await f.a.call("GET", "/api/shell/jobs/\(job)/events").text
            #expect(events.contains("shipped"), "\(events)")
            let shown = try await f.a.call("GET", "/api/shell/jobs/\(job)")
            #expect(shown.json["user_id"] as? String != nil)

            // Rejected: nothing runs.
            let second = try await f.a.call("POST", "/api/shell/run", json: ["project_id": f.pid, "command": "deploy"])
            let id2 = try #require(second.json["approval_id"] as? String)
            #expect(try await b.call("POST", "/api/approvals/\(id2)/reject", json: ["reason": "freeze"]).status == 200)
            let after = try await f.a.call("GET", "/api/approvals/\(id2)")
            #expect(after.json["job_id"] == nil && after.json["decision_reason"] as? String == "freeze")

            // A rule with self_approval lets the requester approve their own.
            try "test:\n\t@echo ok\n".write(toFile: f.dir + "/Makefile", atomically: true, encoding: .utf8)
            let t = try await f.a.call("POST", "/api/shell/test", json: ["project_id": f.pid])
            let id3 = try #require(t.json["approval_id"] as? String, "\(t.text)")
            let mine = try await f.a.call("POST", "/api/approvals/\(id3)/approve", json: [:])
            #expect(mine.status == 200 && mine.json["job_id"] is String, "\(mine.text)")

            // Listing, filtering and bad input.
            let all = try await f.a.call("GET", "/api/approvals?ws_id=\(f.ws)")
            #expect((all.json["items"] as? [[String: Any]])?.count == 3)
            let approved = try await f.a.call("GET", "/api/approvals?ws_id=\(f.ws)&state=approved&limit=1")
            #expect((approved.json["items"] as? [Any])?.count == 1 && approved.json["next_cursor"] is String)
            #expect(try await f.a.call("GET", "/api/approvals?ws_id=\(f.ws)&state=maybe").status == 400)
            #expect(try await f.a.call("GET", "/api/approvals/apv_nope").status == 404)
            #expect(try await f.a.call("GET", "/api/approvals/not-an-id").status == 404)
            let long = String(repeating: "x", count: 2000)
            #expect(
                try await b.call("POST", "/api/approvals/\(id2)/reject", json: ["reason": long]).status == 400)
        }
    }

    /// An agent run that would use a secret a rule holds is parked as a whole (202), and starts as its
    /// requester once approved, with the secret in its commands' environment.
    @Test func anAgentRunUsingAHeldSecretStartsOnceApproved() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            let rule: [String: Any] = [
                "id": "prod-keys", "action": "secrets.use", "effect": "require_approval", "when": ["secret": "PROD_*"],
            ]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": [rule]]).status == 200)
            #expect(
                try await f.a.call("POST", "/api/secrets/PROD_TOKEN", json: ["ws_id": f.ws, "value": "prod-token-123"])
                    .status == 201)
            let b = try await Self.approver(f, role: "admin")
            x.model.script([
                .openai(
                    ScriptedModel.call("c1", "run_command", ["command": "printf %s \"$PROD_TOKEN\" | wc -c"])
                        + ScriptedModel.finish("tool_calls")),
                .openai([ScriptedModel.text("done")] + ScriptedModel.finish("stop")),
            ])
            let parked = try await f.a.call(
                "POST", "/api/agent/run", json: ["project_id": f.pid, "prompt": "deploy", "secrets": ["PROD_TOKEN"]],
                headers: ["Accept": "application/json"])
            #expect(parked.status == 202 && parked.json["run_id"] == nil, "\(parked.text)")
            let id = try #require(parked.json["approval_id"] as? String, "\(parked.text)")
            #expect(parked.json["rule_id"] as? String == "prod-keys")
            let runs = try await f.a.call("GET", "/api/agent/history?project_id=\(f.pid)")
            #expect((runs.json["items"] as? [Any])?.isEmpty == true, "no run before the decision: \(runs.text)")

            let ok = try await b.call("POST", "/api/approvals/\(id)/approve", json: [:])
            let seen = try await f.a.call("GET", "/api/approvals/\(id)").text
            let run = try #require(ok.json["run_id"] as? String, "\(ok.text) \(seen)")
            let done = try await x.follow(run).text
            #expect(done.contains("run.completed"), "\(done)")
            #expect(done.contains("14"), "the command saw the 14-byte secret: \(done)")
            #expect(!done.contains("prod-token-123"))
            let shown = try await f.a.call("GET", "/api/agent/runs/\(run)")
            #expect(shown.json["user_id"] as? String != nil && shown.json["status"] as? String == "completed")

            // Rejected: no run.
            let again = try await f.a.call(
                "POST", "/api/agent/run", json: ["project_id": f.pid, "prompt": "again", "secrets": ["PROD_TOKEN"]])
            let id2 = try #require(again.json["approval_id"] as? String, "\(again.text)")
            #expect(
                try await b.call("POST", "/api/approvals/\(id2)/reject", json: ["reason": "not today"]).status == 200)
            let rejected = try await f.a.call("GET", "/api/approvals/\(id2)")
            #expect(rejected.json["state"] as? String == "rejected" && !(rejected.json["run_id"] is String))
            let after = try await f.a.call("GET", "/api/agent/history?project_id=\(f.pid)")
            #expect((after.json["items"] as? [Any])?.count == 1, "only the approved run: \(after.text)")
        }
    }

    @Test func aRevealAndATerminalWaitForApprovalToo() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let rules: [[String: Any]] = [
                ["id": "peek", "action": "secrets.reveal", "effect": "require_approval", "when": ["secret": "PROD_*"]],
                ["id": "shell", "action": "pty.open", "effect": "require_approval"],
            ]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            let b = try await Self.approver(f, role: "admin")
            _ = try await f.a.call("POST", "/api/secrets/PROD_DB", json: ["ws_id": f.ws, "value": "prod-password-1"])
            _ = try await f.a.call("POST", "/api/secrets/PROD_API", json: ["ws_id": f.ws, "value": "prod-password-2"])
            let parked = try await f.a.call("GET", "/api/secrets/PROD_DB?ws_id=\(f.ws)")
            #expect(parked.status == 202 && !parked.text.contains("prod-password"), "\(parked.text)")
            let id = try #require(parked.json["approval_id"] as? String)
            let early = try await f.a.call("GET", "/api/secrets/PROD_DB?ws_id=\(f.ws)&approval_id=\(id)")
            #expect(early.status == 409, "\(early.text)")
            #expect(try await b.call("POST", "/api/approvals/\(id)/approve", json: [:]).status == 200)
            // Only the requester collects it, only for that secret, and only once.
            #expect(try await b.call("GET", "/api/secrets/PROD_DB?ws_id=\(f.ws)&approval_id=\(id)").status == 409)
            #expect(try await f.a.call("GET", "/api/secrets/PROD_API?ws_id=\(f.ws)&approval_id=\(id)").status == 409)
            let shown = try await f.a.call("GET", "/api/secrets/PROD_DB?ws_id=\(f.ws)&approval_id=\(id)")
            #expect(shown.status == 200 && shown.json["value"] as? String == "prod-password-1", "\(shown.text)")
            #expect(try await f.a.call("GET", "/api/secrets/PROD_DB?ws_id=\(f.ws)&approval_id=\(id)").status == 409)
            #expect(try await f.a.call("GET", "/api/approvals/\(id)").json["redeemed_at"] is String)

            let spawn = try await f.a.call("POST", "/api/pty/spawn", json: ["project_id": f.pid])
            #expect(spawn.status == 202, "\(spawn.text)")
            let pid = try #require(spawn.json["approval_id"] as? String)
            let ok = try await b.call("POST", "/api/approvals/\(pid)/approve", json: [:])
            let pty = try #require(ok.json["pty_id"] as? String, "\(ok.text)")
            let mine = try await f.a.call("GET", "/api/pty?ws_id=\(f.ws)")
            #expect(mine.text.contains(pty), "\(mine.text)")
            #expect(try await f.a.call("DELETE", "/api/pty/\(pty)").status == 200)
        }
    }

    @Test func twoApproversAtOnceStartTheActionOnce() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let rules: [[String: Any]] = [["id": "all", "action": "shell.run", "effect": "require_approval"]]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            let b = try await Self.approver(f)
            let c = try await Self.approver(f, role: "admin")
            let id = try #require(
                try await f.a.call("POST", "/api/shell/run", json: ["project_id": f.pid, "command": "echo once"]).json[
                    "approval_id"] as? String)
            async let first = b.call("POST", "/api/approvals/\(id)/approve", json: [:])
            async let second = c.call("POST", "/api/approvals/\(id)/approve", json: [:])
            let statuses = [try await first.status, try await second.status].sorted()
            #expect(statuses == [200, 409], "\(statuses)")
            let jobs = try await f.a.call("GET", "/api/shell/jobs?project_id=\(f.pid)")
            #expect((jobs.json["items"] as? [Any])?.count == 1, "\(jobs.text)")
        }
    }

    @Test func aCloneIsJudgedByItsHost() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let rules: [[String: Any]] = [
                ["id": "no-evil", "action": "network.connect", "effect": "deny", "when": ["host": "*.evil.example"]],
                ["id": "ask-first", "action": "network.connect", "effect": "require_approval"],
            ]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            let denied = try await f.a.call(
                "POST", "/api/project/load", json: ["ws_id": f.ws, "git_url": "https://git.evil.example/x/y.git"])
            #expect(denied.status == 403 && denied.text.contains("no-evil"), "\(denied.text)")
            let held = try await f.a.call(
                "POST", "/api/project/load", json: ["ws_id": f.ws, "git_url": "https://git.example.invalid/x/y.git"])
            #expect(held.status == 202 && held.json["action"] as? String == "network.connect", "\(held.text)")
            let id = try #require(held.json["approval_id"] as? String)
            #expect(
                (try await f.a.call("GET", "/api/approvals/\(id)").json["context"] as? [String: Any])?["host"]
                    as? String
                    == "git.example.invalid")
            // Approved, the clone is tried as its requester; this host does not resolve, so the
            // approval carries the clone's error instead of a project.
            let b = try await Self.approver(f)
            let ok = try await b.call("POST", "/api/approvals/\(id)/approve", json: [:])
            #expect(ok.status == 200 && ok.json["project_id"] == nil, "\(ok.text)")
            #expect(((ok.json["result"] as? [String: Any])?["error"] as? [String: Any])?["code"] != nil, "\(ok.text)")
        }
    }

    @Test func approvingNeedsAFreshSecondFactorAndNoAPIKey() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let rules: [[String: Any]] = [["id": "all", "action": "shell.run", "effect": "require_approval"]]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            let b = try await Self.approver(f)
            let id = try #require(
                try await f.a.call("POST", "/api/shell/run", json: ["project_id": f.pid, "command": "true"]).json[
                    "approval_id"] as? String)
            let key = try await b.call(
                "POST", "/api/account/api-keys",
                json: ["name": "ci", "scopes": ["approvals:decide", "approvals:read"]])
            let token = try #require(key.json["key"] as? String, "\(key.text)")
            let k = Agent(f.t)
            k.bearer = token
            let viaKey = try await k.call("POST", "/api/approvals/\(id)/approve", json: [:])
            #expect(viaKey.status == 403 && errorCode(viaKey) == "step_up_required", "\(viaKey.text)")
            #expect(try await f.a.call("GET", "/api/approvals/\(id)").json["state"] as? String == "pending")
        }
    }
}
