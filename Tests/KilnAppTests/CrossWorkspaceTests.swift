import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnTestSupport

/// Every resource belongs to one workspace: each route with an id in its path, given a real id from
/// another workspace, answers 404 to a member of a different workspace (with its own ws_id, and
/// with none), exactly as for an id that does not exist.
@Suite struct CrossWorkspaceTests {
    @Test func everyIdTakingRouteRefusesAnotherWorkspacesResource() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let t = x.f.t
            x.model.script([.openai([ScriptedModel.text("done")] + ScriptedModel.finish("stop"))])
            let (run, _) = try await x.runToEnd()
            let job = try await x.f.start("sleep 600")
            let rescan = try await x.f.a.call("POST", "/api/project/rescan", json: ["project_id": x.f.pid])
            let rescanJob = try #require(rescan.json["job_id"] as? String, "\(rescan.text)")
            let pty = try await x.f.a.call("POST", "/api/pty/spawn", json: ["ws_id": x.f.ws, "project_id": x.f.pid])
            let ptyID = try #require(pty.json["id"] as? String, "\(pty.text)")
            let rule: [String: Any] = [
                "id": "hold", "action": "shell.run", "effect": "require_approval", "when": ["command": "^held"],
            ]
            _ = try await x.f.a.call("PUT", "/api/policies", json: ["ws_id": x.f.ws, "rules": [rule]])
            let held = try await x.f.a.call("POST", "/api/shell/run", json: ["project_id": x.f.pid, "command": "held"])
            let approval = try #require(held.json["approval_id"] as? String, "\(held.text)")
            let token = try await x.f.a.call(
                "POST", "/api/mcp/tokens", json: ["ws_id": x.f.ws, "name": "t", "token": "not-a-real-token"])
            let tokenID = try #require(token.json["id"] as? String, "\(token.text)")
            let server = try await x.f.a.call(
                "POST", "/api/mcp/servers",
                json: ["ws_id": x.f.ws, "name": "s", "transport": "http", "url": "https://mcp.example/mcp"])
            let serverID = try #require(server.json["id"] as? String, "\(server.text)")
            let notebook = try await x.f.a.call(
                "POST", "/api/notebook", json: ["project_id": x.f.pid, "path": "cross.ipynb"])
            let nbID = try #require(notebook.json["id"] as? String, "\(notebook.text)")
            let cell = try await x.f.a.call("POST", "/api/notebook/\(nbID)/cells", json: ["cell_type": "code"])
            let cellID = try #require(cell.json["id"] as? String, "\(cell.text)")
            let link = try await x.f.a.call(
                "POST", "/api/collab/share-link", json: ["ws_id": x.f.ws, "subject": ["type": "run", "id": run]])
            let linkID = try #require(link.json["id"] as? String, "\(link.text)")
            let invite = try await x.f.a.call(
                "POST", "/api/collab/invite", json: ["ws_id": x.f.ws, "email": "invitee@example.com", "role": "viewer"])
            let invitationID = try #require(invite.json["id"] as? String, "\(invite.text)")
            let reviewerID = try await makeUser(t, "reviewer@example.com").id
            _ = try await x.f.a.call(
                "POST", "/api/workspaces/\(x.f.ws)/members", json: ["email": "reviewer@example.com", "role": "member"])
            let review = try await x.f.a.call(
                "POST", "/api/collab/request-review",
                json: ["ws_id": x.f.ws, "subject": ["type": "run", "id": run], "reviewers": [reviewerID]])
            let reviewID = try #require(review.json["id"] as? String, "\(review.text)")
            // A browser run and its screenshot (rows as a finished run leaves them; no Chromium needed here).
            let (brun, shot) = ("brun_0000000000crossws", "shot_0000000000crossws")
            _ = try await t.app.services.db.write { tx in
                try tx.run(
                    """
                    INSERT INTO browser_runs (id, ws_id, user_id, kind, url, status, created_at)
                    VALUES (?, ?, 'usr_x', 'smoke', 'https://example.com/', 'passed', 0)
                    """, brun, x.f.ws)
                try tx.run(
                    """
                    INSERT INTO browser_shots (id, run_id, name, width, height, bytes, created_at)
                    VALUES (?, ?, 'page', 1, 1, 1, 0)
                    """, shot, brun)
            }
            let ownerID = try #require(
                (try await x.f.a.call("GET", "/api/auth/session").json["user"] as? [String: Any])?["id"] as? String)

            _ = try await makeUser(t, "outsider@example.com")
            let outsider = Agent(t)
            try await outsider.login("outsider@example.com", "a long enough password")
            let theirs = try await workspaceOf(outsider)
            let ids: [String: [String]] = [
                "run_id": [run], "job_id": [job, rescanJob], "pty_id": [ptyID], "ws_id": [x.f.ws], "user_id": [ownerID],
                "approval_id": [approval], "server_id": [serverID], "token_id": [tokenID],
                "nb_id": [nbID], "cell_id": [cellID], "link_id": [linkID],
                "review_id": [reviewID], "invitation": [invitationID], "browser_run_id": [brun], "shot_id": [shot],
            ]

            let catalog = t.app.services.catalog
            var checked = 0
            for route in t.app.responder.routes {
                guard let perm = route.metadata.permission.flatMap(catalog.permission), perm.workspaceScoped else {
                    continue
                }
                let params = route.pattern.split(separator: "/").filter { $0.hasPrefix(":") }.map {
                    String($0.dropFirst())
                }
                // A secret's name is not an id: it is a key within the request's own workspace (the same
                // name elsewhere is another secret), so those routes are covered by SecretsTests.
                guard !params.isEmpty, params != ["name"] else { continue }
                guard params.allSatisfy({ ids[$0] != nil }) else {
                    Issue.record("\(route.pattern): an id parameter this test does not know; add a resource for it")
                    continue
                }
                // Every combination of the known ids (job_id: a shell job and a rescan).
                var paths = [route.pattern]
                for p in params {
                    paths = paths.flatMap { path in ids[p]!.map { path.replacingOccurrences(of: ":" + p, with: $0) } }
                }
                let method = route.method.rawValue
                for path in paths {
                    for wsID in [theirs, nil] as [String?] {
                        let target = path + (wsID.map { "?ws_id=\($0)" } ?? "")
                        var body: [String: Any]? = nil
                        if ["POST", "PUT", "PATCH"].contains(method) {
                            body = ["role": "viewer", "name": "x"]
                            if let wsID { body?["ws_id"] = wsID }
                        }
                        let r = try await outsider.call(method, target, json: body)
                        #expect(
                            r.status == 404, "\(method) \(target) by another workspace's member: \(r.status) \(r.text)")
                    }
                    checked += 1
                }
            }
            #expect(checked >= 16, "only \(checked) routes checked")
            // The ids are real: their owner reaches them.
            #expect(try await x.f.a.call("GET", "/api/agent/runs/\(run)").status == 200)
            #expect(try await x.f.a.call("GET", "/api/shell/jobs/\(job)").status == 200)
            #expect(try await x.f.a.call("GET", "/api/receipts/\(run)").status == 200)
            #expect(try await x.f.a.call("GET", "/api/approvals/\(approval)").json["state"] as? String == "pending")
            #expect(try await x.f.a.call("GET", "/api/mcp/servers/\(serverID)").status == 200)
            #expect(try await x.f.a.call("GET", "/api/notebook/\(nbID)").status == 200)
            #expect(try await x.f.a.call("GET", "/api/collab/reviews/\(reviewID)").status == 200)
            #expect(try await x.f.a.call("GET", "/api/browser/runs/\(brun)").status == 200)
            #expect(try await x.f.a.call("POST", "/api/shell/cancel/\(job)").status == 200)
            #expect(try await x.f.a.call("DELETE", "/api/pty/\(ptyID)").status == 200)
        }
    }
}
