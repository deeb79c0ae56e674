import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnCollab
@testable import KilnTestSupport

/// Activity built from the bus, notifications and their settings and mail, invitations and reviews,
/// over HTTP against a real server and SQLite file.
@Suite struct CollabTests {
    static let pw = "a long enough password"

    /// A second account, added to the fixture's workspace with `role`, signed in.
    static func member(_ f: ShellFixture, _ email: String, role: String = "member") async throws -> (Agent, String) {
        let u = try await makeUser(f.t, email)
        let added = try await f.a.call("POST", "/api/workspaces/\(f.ws)/members", json: ["email": email, "role": role])
        #expect(added.status == 201 || added.status == 200, "\(added.text)")
        let a = Agent(f.t)
        try await a.login(email, pw)
        return (a, u.id)
    }

    static func items(_ r: HTTPResult) -> [[String: Any]] { r.json["items"] as? [[String: Any]] ?? [] }

    /// Waits until the feed holds an item of `kind` (the feed is written just after the event).
    static func feed(_ f: ShellFixture, until kind: String) async throws -> [[String: Any]] {
        for _ in 0..<200 {
            let r = try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&limit=200")
            let items = items(r)
            if items.contains(where: { $0["kind"] as? String == kind }) { return items }
            try await Task.sleep(nanoseconds: 25_000_000)
        }
        Issue.record("no \(kind) in the feed")
        return []
    }

    @Test func activityIsBuiltFromTheDomainsEvents() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            x.model.script([
                .openai(
                    ScriptedModel.call("w1", "write_file", ["path": "feed.txt", "content": "fed\n"])
                        + ScriptedModel.finish("tool_calls")),
                .openai([ScriptedModel.text("wrote it")] + ScriptedModel.finish("stop")),
            ])
            let (run, _) = try await x.runToEnd("write the feed file")
            _ = try await f.run("echo hello")
            let rescan = try await f.a.call("POST", "/api/project/rescan", json: ["project_id": f.pid])
            #expect(rescan.status == 200 || rescan.status == 202, "\(rescan.text)")
            let (_, bob) = try await Self.member(f, "bob@example.com")
            let rolled = try await f.a.call("POST", "/api/agent/rollback", json: ["run_id": run])
            #expect(rolled.status == 200, "\(rolled.text)")
            let items = try await Self.feed(f, until: "run.rolled_back")
            let kinds = items.reversed().map { $0["kind"] as? String ?? "" }
            for k in [
                "run.started", "file.changed", "run.completed", "job.finished", "member.added", "run.rolled_back",
            ] {
                #expect(kinds.contains(k), "\(k) missing from \(kinds)")
            }
            let started = kinds.firstIndex(of: "run.started") ?? 99
            let completed = kinds.firstIndex(of: "run.completed") ?? -1
            #expect(started < completed, "\(kinds)")
            // Newest first, ids falling; each item typed.
            let ids = items.compactMap { $0["id"] as? Int }
            #expect(ids == ids.sorted(by: >) && ids.count == items.count)
            let done = try #require(items.first { $0["kind"] as? String == "run.completed" })
            #expect((done["subject"] as? [String: Any])?["id"] as? String == run)
            #expect(done["cost_usd"] is Double && done["project_id"] as? String == f.pid)
            let job = try #require(items.first { $0["kind"] as? String == "job.finished" })
            #expect((job["summary"] as? String)?.contains("echo hello") == true, "\(job)")
            let added = try #require(items.first { $0["kind"] as? String == "member.added" })
            #expect((added["subject"] as? [String: Any])?["id"] as? String == bob)

            // Filters and paging.
            let onlyRuns = Self.items(try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&kind=run"))
            #expect(!onlyRuns.isEmpty && onlyRuns.allSatisfy { ($0["kind"] as? String)?.hasPrefix("run.") == true })
            // The filter is text, not a pattern: `%` and `_` match themselves only.
            for pattern in ["%25", "r_n", "_", "%5C"] {
                let none = Self.items(try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&kind=\(pattern)"))
                #expect(none.isEmpty, "kind=\(pattern) matched \(none.count) items")
            }
            let byProject = Self.items(
                try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&project_id=\(f.pid)"))
            #expect(!byProject.isEmpty && byProject.allSatisfy { $0["project_id"] as? String == f.pid })
            let page1 = try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&limit=2")
            let cursor = try #require(page1.json["next_cursor"] as? String)
            let page2 = Self.items(
                try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&limit=2&cursor=\(cursor)"))
            #expect(page2.first?["id"] as? Int == ids[2])
            #expect(try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&limit=0").status == 400)
            let long = String(repeating: "k", count: 101)
            #expect(try await f.a.call("GET", "/api/collab/activity?ws_id=\(f.ws)&kind=\(long)").status == 400)

        }
    }

    @Test func invitationsAreSingleUseExpireAndCheckTheAddress() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            func invite(_ email: String, _ role: String = "member") async throws -> HTTPResult {
                try await f.a.call("POST", "/api/collab/invite", json: ["ws_id": f.ws, "email": email, "role": role])
            }
            func token(for email: String) throws -> String {
                let dir = f.t.dataDir + "/outbox"
                for name in try FileManager.default.contentsOfDirectory(atPath: dir).sorted().reversed() {
                    let text = try String(contentsOfFile: dir + "/" + name, encoding: .utf8)
                    guard text.contains("To: \(email)"), let r = text.range(of: "/invite/kwi_") else { continue }
                    return String(
                        text[text.index(r.lowerBound, offsetBy: 8)...].prefix {
                            $0.isLetter || $0.isNumber || $0 == "_"
                        })
                }
                throw APIError.notFound("no mail to \(email)")
            }
            // An existing account signs in and accepts; its address must be the invited one.
            _ = try await makeUser(f.t, "carol@example.com")
            let made = try await invite("carol@example.com")
            #expect(made.status == 201 && made.json["state"] as? String == "pending", "\(made.text)")
            #expect(!made.text.contains("kwi_"))
            let carolToken = try token(for: "carol@example.com")
            let stored = try await f.t.app.services.db.read { tx in
                try tx.query("SELECT token_hash FROM ws_invitations").compactMap { $0.string("token_hash") }
            }
            #expect(!stored.contains(carolToken))
            let mallory = try await makeUser(f.t, "mallory@example.com")
            _ = mallory
            let m = Agent(f.t)
            try await m.login("mallory@example.com", Self.pw)
            #expect(try await m.call("POST", "/api/collab/invitations/\(carolToken)/accept").status == 403)
            // A signed-in browser must send its CSRF token.
            let carol = Agent(f.t)
            try await carol.login("carol@example.com", Self.pw)
            #expect(
                try await carol.call("POST", "/api/collab/invitations/\(carolToken)/accept", csrf: false).status == 403)
            let ok = try await carol.call("POST", "/api/collab/invitations/\(carolToken)/accept")
            #expect(ok.status == 200 && ok.json["ws_id"] as? String == f.ws, "\(ok.text)")
            #expect(try await carol.call("GET", "/api/collab/activity?ws_id=\(f.ws)").status == 200)
            #expect(try await carol.call("POST", "/api/collab/invitations/\(carolToken)/accept").status == 410)
            #expect(try await invite("carol@example.com").status == 409)

            // Registration through an invitation even though registration is closed.
            _ = try await invite("dan@example.com", "viewer")
            let danToken = try token(for: "dan@example.com")
            let anon = Agent(f.t)
            #expect(try await anon.call("POST", "/api/collab/invitations/\(danToken)/accept").status == 400)
            #expect(
                try await anon.call(
                    "POST", "/api/collab/invitations/\(danToken)/accept", json: ["name": "Dan", "password": "short"]
                ).status == 400)
            let reg = try await anon.call(
                "POST", "/api/collab/invitations/\(danToken)/accept", json: ["name": "Dan", "password": Self.pw])
            #expect(reg.status == 201 && reg.json["role"] as? String == "viewer", "\(reg.text)")
            let dan = Agent(f.t)
            #expect(try await dan.login("dan@example.com", Self.pw).status == 200)
            // A viewer may not invite.
            #expect(
                try await dan.call(
                    "POST", "/api/collab/invite", json: ["ws_id": f.ws, "email": "x@example.com", "role": "viewer"]
                ).status == 403)

            // Expired, revoked, replaced.
            _ = try await invite("erin@example.com")
            let erinToken = try token(for: "erin@example.com")
            _ = try await f.t.app.services.db.write { tx in
                try tx.run("UPDATE ws_invitations SET expires_at = 0 WHERE email = 'erin@example.com'")
            }
            #expect(
                try await anon.call(
                    "POST", "/api/collab/invitations/\(erinToken)/accept", json: ["name": "E", "password": Self.pw]
                ).status == 410)
            let frank = try await invite("frank@example.com")
            let frankID = try #require(frank.json["id"] as? String)
            let frankToken = try token(for: "frank@example.com")
            #expect(try await f.a.call("DELETE", "/api/collab/invitations/\(frankID)?ws_id=\(f.ws)").status == 204)
            #expect(
                try await anon.call(
                    "POST", "/api/collab/invitations/\(frankToken)/accept", json: ["name": "F", "password": Self.pw]
                ).status == 404)
            let list = Self.items(try await f.a.call("GET", "/api/collab/invitations?ws_id=\(f.ws)"))
            let states = Dictionary(list.map { ($0["email"] as? String ?? "", $0["state"] as? String ?? "") }) { a, _ in
                a
            }
            #expect(states["carol@example.com"] == "accepted" && states["erin@example.com"] == "expired")
            #expect(states["frank@example.com"] == "revoked" && states["dan@example.com"] == "accepted")

            // Bad input; only owners invite owners.
            #expect(try await invite("not an address").status == 400)
            #expect(
                try await f.a.call(
                    "POST", "/api/collab/invite", json: ["ws_id": f.ws, "email": "g@example.com", "role": "boss"]
                )
                .status == 400)
            let (admin, _) = try await Self.member(f, "admin@example.com", role: "viewer")
            _ = try await f.t.app.services.db.write { tx in
                try tx.run(
                    "UPDATE memberships SET role = 'admin' WHERE ws_id = ? AND user_id = (SELECT id FROM users WHERE email = 'admin@example.com')",
                    f.ws)
            }
            #expect(
                try await admin.call(
                    "POST", "/api/collab/invite", json: ["ws_id": f.ws, "email": "o@example.com", "role": "owner"]
                )
                .status == 403)
            #expect(
                try await admin.call(
                    "POST", "/api/collab/invite", json: ["ws_id": f.ws, "email": "o@example.com", "role": "member"]
                )
                .status == 201)

            // At most 50 invitations (mails) a workspace an hour.
            for _ in 0..<50 { _ = try await invite("many-\(UUID().uuidString.prefix(8))@example.com") }
            let over = try await invite("one-more@example.com")
            #expect(over.status == 429 && over.json["error"] != nil, "\(over.text)")
        }
    }

    @Test func reviewsCommentsMentionsAndVerdicts() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            x.model.script([.openai([ScriptedModel.text("nothing to do")] + ScriptedModel.finish("stop"))])
            let (run, _) = try await x.runToEnd("look around")
            let (rita, ritaID) = try await Self.member(f, "rita@example.com")
            let (_, viewerID) = try await Self.member(f, "vera@example.com", role: "viewer")
            let owner = try #require(
                (try await f.a.call("GET", "/api/auth/session").json["user"] as? [String: Any])?["id"] as? String)
            func request(_ body: [String: Any]) async throws -> HTTPResult {
                var b = body
                b["ws_id"] = f.ws
                return try await f.a.call("POST", "/api/collab/request-review", json: b)
            }
            let subject: [String: Any] = ["type": "run", "id": run]
            #expect(try await request(["subject": subject, "reviewers": [] as [String]]).status == 400)
            #expect(try await request(["subject": subject, "reviewers": [owner]]).status == 400)
            #expect(try await request(["subject": subject, "reviewers": [viewerID]]).status == 400)
            #expect(try await request(["subject": subject, "reviewers": ["usr_nobody"]]).status == 400)
            #expect(
                try await request(["subject": ["type": "run", "id": "run_nope"], "reviewers": [ritaID]]).status == 404)
            #expect(try await request(["subject": ["type": "tweet", "id": "x"], "reviewers": [ritaID]]).status == 400)
            #expect(
                try await request(["subject": ["type": "file", "id": f.pid], "reviewers": [ritaID]]).status == 400)
            #expect(
                try await request([
                    "subject": ["type": "file", "id": f.pid, "path": "a.txt", "lines": [3, 1]], "reviewers": [ritaID],
                ]).status == 400)
            let file = try await request([
                "subject": ["type": "file", "id": f.pid, "path": "a.txt", "lines": [1, 2]], "reviewers": [ritaID],
            ])
            #expect(file.status == 201, "\(file.text)")

            let made = try await request(["subject": subject, "reviewers": [ritaID], "note": "please"])
            #expect(made.status == 201 && made.json["state"] as? String == "open", "\(made.text)")
            let id = try #require(made.json["id"] as? String)
            let shown = try await rita.call("GET", "/api/collab/reviews/\(id)")
            #expect(shown.json["run"] is [String: Any] && shown.json["receipt"] is [String: Any], "\(shown.text)")

            // Comments: mentions by name, by the part before @ and not of strangers.
            let c = try await rita.call(
                "POST", "/api/collab/reviews/\(id)/comments", json: ["body": "@sh and @nobody, see line 2", "line": 2])
            #expect(c.status == 201 && (c.json["mentions"] as? [String]) == [owner], "\(c.text)")
            #expect(
                try await rita.call("POST", "/api/collab/reviews/\(id)/comments", json: ["body": "  "]).status == 400)
            #expect(
                try await rita.call("POST", "/api/collab/reviews/\(id)/comments", json: ["body": "x", "line": 0]).status
                    == 400)
            let v = Agent(f.t)
            try await v.login("vera@example.com", Self.pw)
            #expect(try await v.call("POST", "/api/collab/reviews/\(id)/comments", json: ["body": "hi"]).status == 403)
            #expect(try await v.call("GET", "/api/collab/reviews/\(id)").status == 200)

            // Verdicts: only the asked reviewers; the state follows.
            #expect(
                try await f.a.call("POST", "/api/collab/reviews/\(id)/verdict", json: ["verdict": "approve"]).status
                    == 403)
            #expect(
                try await rita.call("POST", "/api/collab/reviews/\(id)/verdict", json: ["verdict": "maybe"]).status
                    == 400)
            let changes = try await rita.call(
                "POST", "/api/collab/reviews/\(id)/verdict", json: ["verdict": "request_changes"])
            #expect(changes.json["state"] as? String == "changes_requested", "\(changes.text)")
            let approved = try await rita.call(
                "POST", "/api/collab/reviews/\(id)/verdict", json: ["verdict": "approve"])
            #expect(approved.json["state"] as? String == "approved")
            let open = Self.items(try await f.a.call("GET", "/api/collab/reviews?ws_id=\(f.ws)&state=open"))
            #expect(open.count == 1 && open.first?["id"] as? String != id)
            #expect(try await f.a.call("GET", "/api/collab/reviews?ws_id=\(f.ws)&state=done").status == 400)
            #expect(try await f.a.call("GET", "/api/collab/reviews/rev_nope").status == 404)

            // The owner was told: a mention and two verdicts, newest first.
            var kinds: [String] = []
            for _ in 0..<100 {
                kinds = Self.items(try await f.a.call("GET", "/api/collab/notifications")).compactMap {
                    $0["kind"] as? String
                }
                if kinds.filter({ $0 == "review_verdict" }).count == 2 { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            #expect(kinds.filter { $0 == "review_verdict" }.count == 2 && kinds.contains("mention"), "\(kinds)")
            let ritaKinds = Self.items(try await rita.call("GET", "/api/collab/notifications")).compactMap {
                $0["kind"] as? String
            }
            #expect(ritaKinds.filter { $0 == "review_requested" }.count == 2, "\(ritaKinds)")
        }
    }

    @Test func settingsSilenceOrMailInBatches() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            x.model.script([
                .openai([ScriptedModel.text("one")] + ScriptedModel.finish("stop")),
                .openai([ScriptedModel.text("two")] + ScriptedModel.finish("stop")),
            ])
            let (run, _) = try await x.runToEnd("first")
            let (rita, ritaID) = try await Self.member(f, "rita@example.com")
            let defaults = try await rita.call("GET", "/api/collab/notification-settings")
            #expect((defaults.json["settings"] as? [String: String])?["review_requested"] == "in_app")
            #expect(
                try await rita.call("PUT", "/api/collab/notification-settings", json: ["settings": ["nope": "email"]])
                    .status == 400)
            #expect(
                try await rita.call(
                    "PUT", "/api/collab/notification-settings", json: ["settings": ["mention": "loud"]]
                ).status == 400)
            let set = try await rita.call(
                "PUT", "/api/collab/notification-settings",
                json: ["settings": ["review_requested": "email", "mention": "off"]])
            #expect((set.json["settings"] as? [String: String])?["review_requested"] == "email", "\(set.text)")

            func outbox() throws -> [String] {
                try FileManager.default.contentsOfDirectory(atPath: f.t.dataDir + "/outbox").compactMap {
                    let t = try String(contentsOfFile: f.t.dataDir + "/outbox/" + $0, encoding: .utf8)
                    return t.contains("To: rita@example.com") ? t : nil
                }
            }
            func ask() async throws {
                let r = try await f.a.call(
                    "POST", "/api/collab/request-review",
                    json: ["ws_id": f.ws, "subject": ["type": "run", "id": run], "reviewers": [ritaID]])
                #expect(r.status == 201, "\(r.text)")
            }
            // Rita was told she was added; the rest are review requests.
            func unread() async throws -> Int {
                try await rita.call("GET", "/api/collab/notifications?unread=1").json["unread_count"] as? Int ?? -1
            }
            #expect(try await unread() == 1)
            try await ask()
            for _ in 0..<100 where try outbox().isEmpty { try await Task.sleep(nanoseconds: 20_000_000) }
            #expect(try outbox().count == 1)
            // Two more within ten minutes: in the app at once, by mail later, together.
            try await ask()
            try await ask()
            for _ in 0..<100 where try await unread() < 4 { try await Task.sleep(nanoseconds: 20_000_000) }
            #expect(try await unread() == 4)
            let collab = try #require(f.t.app.module(CollabModule.self)).service
            try await collab.mailDue()
            #expect(try outbox().count == 1)
            _ = try await f.t.app.services.db.write { tx in
                try tx.run("UPDATE notification_settings SET mailed_at = 0 WHERE kind = 'review_requested'")
            }
            try await collab.mailDue()
            let mails = try outbox()
            #expect(mails.count == 2 && mails.contains { $0.contains("These 2 things happened") }, "\(mails)")

            // Off: a mention is not stored at all.
            _ = try await f.a.call(
                "POST", "/api/collab/request-review",
                json: ["ws_id": f.ws, "subject": ["type": "run", "id": run], "reviewers": [ritaID]])
            let reviews = Self.items(try await f.a.call("GET", "/api/collab/reviews?ws_id=\(f.ws)"))
            let rid = try #require(reviews.first?["id"] as? String)
            _ = try await f.a.call("POST", "/api/collab/reviews/\(rid)/comments", json: ["body": "@rita hello"])
            try await Task.sleep(nanoseconds: 200_000_000)
            let kinds = Self.items(try await rita.call("GET", "/api/collab/notifications")).compactMap {
                $0["kind"] as? String
            }
            #expect(!kinds.contains("mention") && kinds.filter { $0 == "review_requested" }.count == 4, "\(kinds)")
            #expect(kinds.contains("invited"))
            let all = try await rita.call("POST", "/api/collab/notifications/read-all")
            #expect(all.json["unread_count"] as? Int == 0)
            #expect(try await rita.call("POST", "/api/collab/notifications/ntf_nope/read").status == 404)
            #expect(try await rita.call("GET", "/api/collab/notifications?unread=maybe").status == 400)
        }
    }

    @Test func heldActionsAreToldToTheirDecidersAndTheRequester() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let (rita, _) = try await Self.member(f, "rita@example.com")
            let rule: [String: Any] = [
                "id": "hold", "action": "shell.run", "effect": "require_approval", "when": ["command": "^held"],
            ]
            #expect(try await f.a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": [rule]]).status == 200)
            let held = try await f.a.call("POST", "/api/shell/run", json: ["project_id": f.pid, "command": "held"])
            let approval = try #require(held.json["approval_id"] as? String, "\(held.text)")
            func kinds(_ a: Agent) async throws -> [String] {
                Self.items(try await a.call("GET", "/api/collab/notifications")).compactMap { $0["kind"] as? String }
            }
            for _ in 0..<100 where try await !kinds(rita).contains("approval_requested") {
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            #expect(try await kinds(rita).contains("approval_requested"))
            #expect(try await !kinds(f.a).contains("approval_requested"), "the requester is not asked")
            #expect(try await rita.call("POST", "/api/approvals/\(approval)/approve", json: [:]).status == 200)
            for _ in 0..<100 where try await !kinds(f.a).contains("approval_decided") {
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            let told = Self.items(try await f.a.call("GET", "/api/collab/notifications")).first {
                $0["kind"] as? String == "approval_decided"
            }
            #expect((told?["title"] as? String)?.contains("approved") == true, "\(String(describing: told))")
            let feed = try await Self.feed(f, until: "approval.approved")
            #expect(feed.contains { $0["kind"] as? String == "approval.requested" })
        }
    }

    @Test func aFileAndAReceiptChainShared() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            let f = x.f
            x.model.script([.openai([ScriptedModel.text("done")] + ScriptedModel.finish("stop"))])
            let (run, _) = try await x.runToEnd("a receipted run")
            let file = try await f.a.call(
                "POST", "/api/collab/share-link",
                json: ["ws_id": f.ws, "subject": ["type": "file", "id": f.pid, "path": "a.txt"]])
            #expect(file.status == 201, "\(file.text)")
            let path = try #require(file.json["path"] as? String)
            // The link shows the file as it was when shared.
            try "changed later\n".write(toFile: f.dir + "/a.txt", atomically: true, encoding: .utf8)
            let anon = Agent(f.t)
            let shown = try await anon.call("GET", path + ".json")
            let content = (shown.json["file"] as? [String: Any])?["content"] as? String
            #expect(content == "alpha\nbeta\ngamma\n", "\(shown.text)")
            #expect(!shown.text.contains(f.pid) && !shown.text.contains(f.ws))
            let html = try await anon.call("GET", path)
            #expect(html.status == 200 && html.text.contains("gamma"))
            for bad in ["../outside.txt", "out-link/x", "missing.txt", ""] {
                let r = try await f.a.call(
                    "POST", "/api/collab/share-link",
                    json: ["ws_id": f.ws, "subject": ["type": "file", "id": f.pid, "path": bad]])
                #expect([400, 403, 404].contains(r.status), "\(bad): \(r.status) \(r.text)")
            }
            let chain = try await f.a.call(
                "POST", "/api/collab/share-link",
                json: ["ws_id": f.ws, "subject": ["type": "receipt_chain", "id": run]])
            #expect(chain.status == 201, "\(chain.text)")
            let c = try await anon.call("GET", (chain.json["path"] as? String ?? "") + ".json")
            #expect((c.json["chain"] as? [String: Any])?["ok"] as? Bool == true, "\(c.text)")
            #expect(!c.text.contains(f.ws) && !c.text.contains(f.pid))

            // A deleted workspace's links show nothing.
            #expect(try await f.a.call("DELETE", "/api/workspaces/\(f.ws)").status == 204)
            #expect(try await anon.call("GET", path + ".json").status == 404)
        }
    }
}
