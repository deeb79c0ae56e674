import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnAgents
@testable import KilnApp
@testable import KilnAuth
@testable import KilnTestSupport

@Suite struct AgentTests {
    @Test func aRunReadsSearchesEditsTestsAndFinishes() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            typealias M = ScriptedModel
            x.model.script([
                .openai(
                    [M.text("Let me look.")] + M.call("c1", "read_file", ["path": "a.txt"])
                        + M.call("c2", "search", ["query": "TODO"], index: 1) + M.finish("tool_calls")),
                .status(429, #"{"error":{"message":"slow down"}}"#),
                .openai(
                    M.call("c3", "edit_file", ["path": "a.txt", "old_string": "alpha", "new_string": "ALPHA"])
                        + M.call("c4", "write_file", ["path": "c.txt", "content": "uno\ndos\n"], index: 1)
                        + M.call("c5", "write_file", ["path": "new/dir/created.txt", "content": "fresh\n"], index: 2)
                        + M.finish("tool_calls")),
                .openai(
                    [M.toolStart(0, id: "c6", name: "edit_file", args: "{\"path\": \"a.txt\", ")]
                        + M.call("c7", "run_tests", [:], index: 1) + M.finish("tool_calls")),
                .cut([M.text("All do")]),
                .openai(
                    [M.text("All done: "), M.text("edited two files.")] + M.finish("stop", input: 300, output: 40)),
            ])
            let before = try Data(contentsOf: URL(fileURLWithPath: x.f.dir + "/a.txt"))
            let beforeC = try Data(contentsOf: URL(fileURLWithPath: x.f.dir + "/c.txt"))
            let r = try await x.f.a.call(
                "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "Capitalise alpha", "max_steps": 10])
            #expect(r.status == 200 && r.headers["content-type"]?.hasPrefix("text/event-stream") == true, "\(r.text)")
            let ev = parseSSE(r.text)
            #expect(ev.compactMap(\.id) == Array(1...ev.count), "gap-free sequence")
            #expect(ev.first?.event == "run.started" && ev.last?.event == "run.completed", "\(ev.map(\.event))")
            #expect(ev.filter { AgentTestsSupport.terminal.contains($0.event) }.count == 1)
            let run = try #require(ev.first?.data["run_id"] as? String)
            #expect(ev.last?.data["summary"] as? String == "All done: edited two files.")
            let calls = ev.filter { $0.event == "tool.call" }
            let results = ev.filter { $0.event == "tool.result" }
            #expect(
                calls.map { $0.data["tool"] as? String } == [
                    "read_file", "search", "edit_file", "write_file", "write_file", "edit_file", "run_tests",
                ])
            #expect(results.map { $0.data["call_id"] as? String } == calls.map { $0.data["call_id"] as? String })
            #expect((calls[0].data["args"] as? [String: Any])?["path"] as? String == "a.txt")
            #expect((results[0].data["output"] as? String)?.contains("1\talpha") == true)
            #expect((results[1].data["output"] as? String)?.contains("notes.md:1") == true)
            #expect(
                results[5].data["ok"] as? Bool == false
                    && (results[5].data["output"] as? String)?.contains("not valid JSON") == true)
            #expect(
                results[6].data["ok"] as? Bool == true
                    && (results[6].data["output"] as? String)?.contains("ok 2 - second") == true)
            let changed = ev.filter { $0.event == "file.changed" }
            #expect(changed.map { $0.data["path"] as? String } == ["a.txt", "c.txt", "new/dir/created.txt"])
            #expect((changed[0].data["diff"] as? String)?.contains("-alpha\n+ALPHA\n") == true)
            #expect(
                (changed[2].data["diff"] as? String)?.hasPrefix(
                    "--- /dev/null\n+++ b/new/dir/created.txt\n@@ -0,0 +1,1 @@\n+fresh\n") == true)
            let usage = ev.filter { $0.event == "usage" }.last?.data
            #expect(usage?["input_tokens"] as? Int == 100 * 3 + 300 && usage?["output_tokens"] as? Int == 20 * 3 + 40)
            #expect(ev.contains { $0.event == "message.delta" && $0.data["text"] as? String == "Let me look." })
            // The model saw the tool results and the retried turn's request.
            let reqs = x.model.requests
            #expect(
                reqs.count == 6
                    && (reqs.last?["messages"] as? [[String: Any]])?.contains { $0["role"] as? String == "tool" }
                        == true
            )
            #expect(try String(contentsOfFile: x.f.dir + "/a.txt", encoding: .utf8) == "ALPHA\nbeta\ngamma\n")

            // follow: from 0, from the middle, after the end, and Last-Event-ID: exactly the stored events.
            let all = parseSSE(try await x.follow(run).text)
            #expect(all.map(\.event) == ev.map(\.event) && all.compactMap(\.id) == ev.compactMap(\.id))
            let mid = ev.count / 2
            let tail = parseSSE(try await x.follow(run, cursor: mid).text)
            #expect(tail.compactMap(\.id) == Array((mid + 1)...ev.count))
            let viaHeader = parseSSE(
                try await x.f.a.call(
                    "GET", "/api/agent/follow?run_id=\(run)", headers: ["Last-Event-ID": String(ev.count - 1)]
                ).text)
            #expect(viaHeader.map(\.event) == ["run.completed"])

            // The run with its whole transcript; history.
            let one = try await x.f.a.call("GET", "/api/agent/runs/\(run)")
            #expect(one.json["status"] as? String == "completed" && one.json["files_changed"] as? Int == 3)
            #expect((one.json["transcript"] as? [[String: Any]])?.first?["content"] as? String == "Capitalise alpha")
            #expect((one.json["tool_calls"] as? [[String: Any]])?.count == 7)
            let hist = try await x.f.a.call("GET", "/api/agent/history?project_id=\(x.f.pid)")
            #expect((hist.json["items"] as? [[String: Any]])?.first?["run_id"] as? String == run)

            // Rollback restores both files byte for byte and deletes the created one.
            let rb = try await x.f.a.call("POST", "/api/agent/rollback", json: ["run_id": run])
            #expect(rb.status == 200, "\(rb.text)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: x.f.dir + "/a.txt")) == before)
            #expect(try Data(contentsOf: URL(fileURLWithPath: x.f.dir + "/c.txt")) == beforeC)
            #expect(!FileManager.default.fileExists(atPath: x.f.dir + "/new/dir/created.txt"))
            let audit = try await x.f.a.call("GET", "/api/audit?ws_id=\(x.f.ws)")
            #expect(audit.text.contains("agent.rollback"))
        }
    }

    @Test func conflictingRollbackIs409UnlessForced() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            typealias M = ScriptedModel
            x.model.script([
                .openai(
                    M.call("c1", "edit_file", ["path": "a.txt", "old_string": "beta", "new_string": "BETA"])
                        + M.finish("tool_calls")),
                .openai([M.text("ok")] + M.finish("stop")),
            ])
            let r = try await x.f.a.call("POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "edit"])
            let run = try #require(parseSSE(r.text).first?.data["run_id"] as? String)
            try "someone else's change\n".write(toFile: x.f.dir + "/a.txt", atomically: true, encoding: .utf8)
            let conflict = try await x.f.a.call("POST", "/api/agent/rollback", json: ["run_id": run])
            #expect(conflict.status == 409 && errorCode(conflict) == "conflict")
            #expect(
                ((conflict.json["error"] as? [String: Any])?["details"] as? [String: Any])?["paths"] as? [String] == [
                    "a.txt"
                ])
            let forced = try await x.f.a.call("POST", "/api/agent/rollback", json: ["run_id": run, "force": true])
            let restored = try String(contentsOfFile: x.f.dir + "/a.txt", encoding: .utf8)
            #expect(forced.status == 200 && restored == "alpha\nbeta\ngamma\n")
            #expect(
                try await x.f.a.call("POST", "/api/agent/rollback", json: ["run_id": "run_0000000000000000000000"])
                    .status == 404)
            #expect(try await x.f.a.call("POST", "/api/agent/rollback", json: ["force": true]).status == 400)
        }
    }

    @Test func cancelMidToolCallEndsTheRunAndItsJob() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            typealias M = ScriptedModel
            x.model.script([
                .openai(M.call("c1", "run_command", ["command": "trap '' TERM; sleep 60"]) + M.finish("tool_calls"))
            ])
            let r = try await x.f.a.call(
                "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "wait"],
                headers: ["Accept": "application/json"])
            #expect(r.status == 202)
            let run = try #require(r.json["run_id"] as? String)
            var jobID: String?
            for _ in 0..<200 {
                let jobs = try await x.f.a.call("GET", "/api/shell/jobs?project_id=\(x.f.pid)&status=running")
                if let j = (jobs.json["items"] as? [[String: Any]])?.first?["id"] as? String {
                    jobID = j
                    break
                }
                try await Task.sleep(for: .milliseconds(25))
            }
            let job = try #require(jobID)
            let c = try await x.f.a.call("POST", "/api/agent/cancel/\(run)")
            #expect(c.status == 200)
            let ev = parseSSE(try await x.follow(run).text)
            #expect(
                ev.last?.event == "run.cancelled"
                    && ev.filter { AgentTestsSupport.terminal.contains($0.event) }.count == 1)
            // Killed (signal 9), not waited for: the command ignores SIGTERM and would sleep a minute.
            let jobState = try await x.f.a.call("GET", "/api/shell/jobs/\(job)")
            #expect(jobState.json["status"] as? String == "cancelled" && jobState.json["signal"] as? Int == 9)
            #expect(try await x.f.a.call("POST", "/api/agent/cancel/\(run)").status == 409)
            let one = try await x.f.a.call("GET", "/api/agent/runs/\(run)")
            #expect(one.json["status"] as? String == "cancelled")
        }
    }

    @Test func everyToolRefusesPathsOutsideTheProject() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            typealias M = ScriptedModel
            var chunks: [String] = []
            var i = 0
            for bad in ["../escape.txt", "/etc/passwd", "out-link/x.txt", "sub/../../x"] {
                for (tool, args) in [
                    ("read_file", ["path": bad]), ("list_files", ["path": bad]),
                    ("edit_file", ["path": bad, "old_string": "a", "new_string": "b"]),
                    ("write_file", ["path": bad, "content": "x"]),
                    ("record_finding", ["path": bad, "line": 1, "claim": "c", "evidence": "e"] as [String: Any]),
                ] {
                    chunks += M.call("b\(i)", tool, args, index: i)
                    i += 1
                }
            }
            x.model.script([.openai(chunks + M.finish("tool_calls")), .openai([M.text("done")] + M.finish("stop"))])
            let r = try await x.f.a.call("POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "escape"])
            let results = parseSSE(r.text).filter { $0.event == "tool.result" }
            #expect(
                results.count == i && results.allSatisfy { $0.data["ok"] as? Bool == false }, "\(results.map(\.data))")
            #expect(
                !FileManager.default.fileExists(atPath: (x.f.dir as NSString).deletingLastPathComponent + "/escape.txt")
            )
            #expect(
                !FileManager.default.fileExists(
                    atPath: (x.f.dir as NSString).deletingLastPathComponent + "/outside/x.txt"))
        }
    }

    @Test func aHundredFollowersEachGetEveryEvent() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            x.model.script([
                .openai((0..<60).map { ScriptedModel.text("w\($0) ") } + ScriptedModel.finish("stop"), delayMs: 15)
            ])
            let r = try await x.f.a.call(
                "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "talk"],
                headers: ["Accept": "application/json"])
            let run = try #require(r.json["run_id"] as? String)
            let counts = try await withThrowingTaskGroup(of: [Int].self) { g in
                for _ in 0..<100 { g.addTask { parseSSE(try await x.follow(run).text).compactMap(\.id) } }
                var all: [[Int]] = []
                for try await c in g { all.append(c) }
                return all
            }
            let stored = parseSSE(try await x.follow(run).text).compactMap(\.id)
            #expect(stored.count > 60)
            #expect(counts.count == 100 && counts.allSatisfy { $0 == stored })
        }
    }

    @Test func anthropicProviderStreamsToolUse() async throws {
        let x = try await AgentFixture.make(anthropic: true)
        try await using(x) { x in
            func j(_ o: Any) -> String { ScriptedModel.jsonText(o) }
            x.model.script([
                .anthropic([
                    (
                        "message_start",
                        j(["type": "message_start", "message": ["usage": ["input_tokens": 50, "output_tokens": 1]]])
                    ),
                    (
                        "content_block_start",
                        j(["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]])
                    ),
                    (
                        "content_block_delta",
                        j([
                            "type": "content_block_delta", "index": 0,
                            "delta": ["type": "text_delta", "text": "Reading."],
                        ])
                    ),
                    (
                        "content_block_start",
                        j([
                            "type": "content_block_start", "index": 1,
                            "content_block": [
                                "type": "tool_use", "id": "toolu_1", "name": "read_file", "input": [:] as [String: Any],
                            ],
                        ])
                    ),
                    (
                        "content_block_delta",
                        j([
                            "type": "content_block_delta", "index": 1,
                            "delta": ["type": "input_json_delta", "partial_json": "{\"path\": \"c."],
                        ])
                    ),
                    (
                        "content_block_delta",
                        j([
                            "type": "content_block_delta", "index": 1,
                            "delta": ["type": "input_json_delta", "partial_json": "txt\"}"],
                        ])
                    ),
                    (
                        "message_delta",
                        j([
                            "type": "message_delta", "delta": ["stop_reason": "tool_use"],
                            "usage": ["output_tokens": 12],
                        ])
                    ),
                    ("message_stop", j(["type": "message_stop"])),
                ]),
                .anthropic([
                    (
                        "message_start",
                        j(["type": "message_start", "message": ["usage": ["input_tokens": 80, "output_tokens": 1]]])
                    ),
                    (
                        "content_block_delta",
                        j([
                            "type": "content_block_delta", "index": 0,
                            "delta": ["type": "text_delta", "text": "It says one, two."],
                        ])
                    ),
                    (
                        "message_delta",
                        j([
                            "type": "message_delta", "delta": ["stop_reason": "end_turn"],
                            "usage": ["output_tokens": 7],
                        ])
                    ),
                    ("message_stop", j(["type": "message_stop"])),
                ]),
            ])
            let r = try await x.f.a.call("POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "read c"])
            let ev = parseSSE(r.text)
            #expect(
                ev.last?.event == "run.completed" && ev.last?.data["summary"] as? String == "It says one, two.",
                "\(ev.map(\.event)) \(r.text.suffix(500))")
            #expect((ev.first { $0.event == "tool.result" }?.data["output"] as? String)?.contains("2\ttwo") == true)
            let usage = ev.filter { $0.event == "usage" }.last?.data
            #expect(usage?["input_tokens"] as? Int == 130 && usage?["output_tokens"] as? Int == 19)
            // The second request carried the tool result as Anthropic expects.
            let second = x.model.requests.last
            let content = ((second?["messages"] as? [[String: Any]])?.last?["content"] as? [[String: Any]])?.first
            #expect(content?["type"] as? String == "tool_result" && content?["tool_use_id"] as? String == "toolu_1")
        }
    }

    @Test func noProviderIs503AndBadInputIs400() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let r = try await f.a.call("POST", "/api/agent/run", json: ["project_id": f.pid, "prompt": "hi"])
            #expect(
                r.status == 503 && errorCode(r) == "unavailable"
                    && (r.json["error"] as? [String: Any])?["message"].map { "\($0)" }?.contains("--llm-base-url")
                        == true
            )
            #expect(
                try await f.a.call("POST", "/api/shell/suggest", json: ["project_id": f.pid, "prompt": "list files"])
                    .status == 503)
            for body: [String: Any] in [
                ["project_id": f.pid], ["project_id": f.pid, "prompt": ""],
                ["project_id": f.pid, "prompt": "x", "max_steps": 0],
            ] {
                #expect(try await f.a.call("POST", "/api/agent/run", json: body).status == 400, "\(body)")
            }
            // Prefs: validated, layered.
            #expect(try await f.a.call("POST", "/api/agent/prefs", json: ["temperature": 3]).status == 400)
            #expect(try await f.a.call("POST", "/api/agent/prefs", json: ["provider": "other"]).status == 400)
            #expect(
                try await f.a.call(
                    "POST", "/api/agent/prefs",
                    json: ["scope": "workspace", "ws_id": f.ws, "model": "ws-model", "max_steps": 7]
                ).status == 200)
            #expect(try await f.a.call("POST", "/api/agent/prefs", json: ["model": "my-model"]).status == 200)
            let p = try await f.a.call("GET", "/api/agent/prefs?ws_id=\(f.ws)")
            let eff = p.json["effective"] as? [String: Any]
            #expect(
                eff?["model"] as? String == "my-model" && eff?["max_steps"] as? Int == 7
                    && eff?["configured"] as? Bool == false)
        }
    }

    @Test func suggestReturnsACommandWithoutRunningIt() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            x.model.script([
                .openai(
                    [ScriptedModel.text(#"{"command": "make test", "explanation": "runs the Makefile's tests"}"#)]
                        + ScriptedModel.finish("stop"))
            ])
            let r = try await x.f.a.call(
                "POST", "/api/shell/suggest", json: ["project_id": x.f.pid, "prompt": "run the tests"])
            #expect(
                r.status == 200 && r.json["command"] as? String == "make test"
                    && (r.json["toolchain"] as? String)?.hasPrefix("make") == true, "\(r.text)")
            let jobs = try await x.f.a.call("GET", "/api/shell/jobs?project_id=\(x.f.pid)")
            #expect((jobs.json["items"] as? [Any])?.isEmpty == true)
        }
    }
}

enum AgentTestsSupport {
    static let terminal: Set<String> = ["run.completed", "run.failed", "run.cancelled"]
}

@Suite struct UnifiedDiffTests {
    /// Random edits of a random file: `patch` (an outside tool) applies every diff we make exactly.
    @Test(.enabled(if: ProcessRunner.which("patch") != nil)) func patchAppliesOurDiffs() async throws {
        var rng = SystemRandomNumberGenerator()
        let dir = NSTemporaryDirectory() + "kiln-diff-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for round in 0..<40 {
            var lines = (0..<Int.random(in: 0...40, using: &rng)).map { _ in
                "line \(Int.random(in: 0...12, using: &rng))"
            }
            let old = lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                switch Int.random(in: 0...2, using: &rng) {
                case 0 where !lines.isEmpty: lines.remove(at: Int.random(in: 0..<lines.count, using: &rng))
                case 1: lines.insert("new \(round)", at: Int.random(in: 0...lines.count, using: &rng))
                default: if !lines.isEmpty { lines[Int.random(in: 0..<lines.count, using: &rng)] = "changed \(round)" }
                }
            }
            let new = lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n"
            if new == old {
                #expect(!UnifiedDiff.make(old: old, new: new, path: "f.txt").contains("@@"))
                continue
            }
            try old.write(toFile: dir + "/f.txt", atomically: true, encoding: .utf8)
            try UnifiedDiff.make(old: old, new: new, path: "f.txt").write(
                toFile: dir + "/d.patch", atomically: true, encoding: .utf8)
            let r = try await ProcessRunner.run("patch", ["-s", "-p1", "-i", dir + "/d.patch"], cwd: dir)
            #expect(
                r.status == 0,
                "\(r.stderr)\n--- old:\n\(old)--- patch:\n\((try? String(contentsOfFile: dir + "/d.patch", encoding: .utf8)) ?? "")"
            )
            #expect(try String(contentsOfFile: dir + "/f.txt", encoding: .utf8) == new, "round \(round)")
        }
    }
}
