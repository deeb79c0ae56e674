import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnPTY
@testable import KilnTestSupport

/// A secret handed to a job, a terminal or an agent run is in the process's environment, and its
/// value (raw, base64, URL-encoded) is in none of the output kept, streamed or sent to the model.
@Suite struct SecretRedactionTests {
    static let value = "kiln-s3cr3t/v+lue 42"
    static let forms = [
        value, Data(value.utf8).base64EncodedString().trimmingCharacters(in: ["="]), "kiln-s3cr3t%2Fv%2Blue%2042",
    ]

    func leaks(_ text: String) -> [String] { Self.forms.filter { text.contains($0) } }

    @Test func aJobsOutputNeverHoldsTheValue() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            _ = try await f.a.call("POST", "/api/secrets/DEPLOY_TOKEN", json: ["ws_id": f.ws, "value": Self.value])
            let script = """
                printf 'raw=%s\\n' "$DEPLOY_TOKEN"
                printf '%s' "$DEPLOY_TOKEN" | base64
                python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["DEPLOY_TOKEN"], safe=""))'
                printf '%s' "$DEPLOY_TOKEN" >&2
                printf 'len=%s\\n' "${#DEPLOY_TOKEN}"
                """
            let ev = try await f.run(script, extra: ["secrets": ["DEPLOY_TOKEN"]])
            let out = output(ev, "stdout") + output(ev, "stderr")
            #expect(leaks(out).isEmpty, "\(out)")
            #expect(out.contains("raw=[secret:DEPLOY_TOKEN]") && out.contains("len=\(Self.value.utf8.count)"), "\(out)")
            let job = try #require(ev.first?.data["job_id"] as? String)
            let stored = try await f.a.call("GET", "/api/shell/jobs/\(job)")
            let replay = try await f.a.call("GET", "/api/shell/jobs/\(job)/events")
            #expect(leaks(stored.text + replay.text).isEmpty)
            #expect(stored.text.contains("[secret:DEPLOY_TOKEN]"))
            // Unknown, and without the name nothing is injected.
            #expect(
                try await f.a.call(
                    "POST", "/api/shell/run", json: ["project_id": f.pid, "command": "true", "secrets": ["NOPE"]]
                ).status == 400)
            let plain = output(try await f.run("printf '[%s]' \"$DEPLOY_TOKEN\""), "stdout")
            #expect(plain == "[]")
        }
    }

    @Test func anAgentRunsToolResultsAndProviderRequestsNeverHoldTheValue() async throws {
        let x = try await AgentFixture.make()
        try await using(x) { x in
            _ = try await x.f.a.call("POST", "/api/secrets/API_KEY", json: ["ws_id": x.f.ws, "value": Self.value])
            try "config: \(Self.value)\n".write(toFile: x.f.dir + "/config.txt", atomically: true, encoding: .utf8)
            x.model.script([
                .openai(
                    ScriptedModel.call(
                        "c1", "run_command", ["command": "echo \"$API_KEY\"; printf %s \"$API_KEY\" | base64"])
                        + ScriptedModel.call("c2", "read_file", ["path": "config.txt"], index: 1)
                        + ScriptedModel.finish("tool_calls")),
                .openai([ScriptedModel.text("done")] + ScriptedModel.finish("stop")),
            ])
            let r = try await x.f.a.call(
                "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "go", "secrets": ["API_KEY"]],
                headers: ["Accept": "application/json"])
            let run = try #require(r.json["run_id"] as? String, "\(r.text)")
            let events = try await x.follow(run).text
            #expect(events.contains("[secret:API_KEY]") && leaks(events).isEmpty, "\(events)")
            let detail = try await x.f.a.call("GET", "/api/agent/runs/\(run)")
            #expect(leaks(detail.text).isEmpty)
            let sent = x.model.bodies.withLock { $0 }.map { String(decoding: $0, as: UTF8.self) }.joined()
            #expect(sent.contains("[secret:API_KEY]") && leaks(sent).isEmpty, "\(sent)")
        }
    }

    @Test func aTerminalsReplayNeverHoldsTheValue() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            _ = try await f.a.call("POST", "/api/secrets/TERM_TOKEN", json: ["ws_id": f.ws, "value": Self.value])
            let spawned = try await f.a.call(
                "POST", "/api/pty/spawn",
                json: ["project_id": f.pid, "cols": 120, "rows": 30, "secrets": ["TERM_TOKEN"]])
            #expect(spawned.status == 201, "\(spawned.text)")
            let id = try #require(spawned.json["id"] as? String)
            let module = try #require(f.t.app.module(PTYModule.self))
            let t = try #require(module.terminals.get(id))
            t.input(Array("echo \"[$TERM_TOKEN]\"; echo done-$((6*7))\r".utf8))
            var screen = ""
            for _ in 0..<100 {
                screen = String(decoding: t.state.withLock { $0.ring.bytes }, as: UTF8.self)
                if screen.contains("done-42") { break }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
            #expect(screen.contains("[[secret:TERM_TOKEN]]") && leaks(screen).isEmpty, "\(screen)")
            _ = try await f.a.call("DELETE", "/api/pty/\(id)")
        }
    }
}
