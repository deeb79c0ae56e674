import Foundation
import KilnCore
import Testing

@testable import KilnApp
@testable import KilnTestSupport

/// Running jobs per account, open terminals per account and agent runs per workspace are limited
/// (each configurable), and each refusal is a 429 that says what to do.
@Suite struct LimitsTests {
    /// Two jobs, one terminal and one agent run at a time.
    static func limited() async throws -> AgentFixture {
        try await AgentFixture.make { c in
            c.set("--max-jobs-per-user", "2")
            c.set("--max-terminals-per-user", "1")
            c.set("--max-agent-runs-per-workspace", "1")
        }
    }

    @Test func jobsTerminalsAndRunsAreLimited() async throws {
        let x = try await Self.limited()
        try await using(x) { x in
            let f = x.f
            let first = try await f.start("sleep 30")
            let second = try await f.start("sleep 30")
            let third = try await f.a.call(
                "POST", "/api/shell/run", json: ["project_id": f.pid, "command": "true"],
                headers: ["Accept": "application/json"])
            #expect(third.status == 429 && errorCode(third) == "rate_limited", "\(third.text)")
            #expect(third.text.contains("limit is 2"))
            _ = try await f.a.call("POST", "/api/shell/cancel/\(first)")
            _ = try await f.a.call("POST", "/api/shell/cancel/\(second)")
            #expect(try await f.start("true").hasPrefix("job_"))

            let pty = try await f.a.call("POST", "/api/pty/spawn", json: ["ws_id": f.ws])
            #expect(pty.status == 201, "\(pty.text)")
            let another = try await f.a.call("POST", "/api/pty/spawn", json: ["ws_id": f.ws])
            #expect(another.status == 429 && another.text.contains("limit is 1"), "\(another.text)")
            _ = try await f.a.call("DELETE", "/api/pty/\(pty.json["id"] as? String ?? "")")

            // A slow model keeps the first run going while the second is refused.
            x.model.script([
                .openai((0..<40).map { ScriptedModel.text("w\($0) ") } + ScriptedModel.finish("stop"), delayMs: 50)
            ])
            let run = try await f.a.call(
                "POST", "/api/agent/run", json: ["project_id": f.pid, "prompt": "go"],
                headers: ["Accept": "application/json"])
            #expect(run.status == 202 || run.status == 200, "\(run.text)")
            let busy = try await f.a.call(
                "POST", "/api/agent/run", json: ["project_id": f.pid, "prompt": "again"],
                headers: ["Accept": "application/json"])
            #expect(busy.status == 429 && busy.text.contains("limit is 1"), "\(busy.text)")
            if let id = run.json["run_id"] as? String { _ = try await f.a.call("POST", "/api/agent/cancel/\(id)") }
        }
    }

    /// Requests arriving together cannot all pass the check before any of them counts: the check and
    /// the count are one step (each start awaits the store and a spawn between the two).
    @Test func concurrentStartsCannotPassTheLimits() async throws {
        let x = try await Self.limited()
        try await using(x) { x in
            let f = x.f
            // `body` builds each request's JSON ([String: Any] is not Sendable).
            func together(
                _ n: Int, _ path: String, _ body: @escaping @Sendable () -> [String: Any]
            ) async throws -> [HTTPResult] {
                try await withThrowingTaskGroup(of: HTTPResult.self) { g in
                    for _ in 0..<n {
                        g.addTask {
                            try await f.a.call("POST", path, json: body(), headers: ["Accept": "application/json"])
                        }
                    }
                    return try await g.reduce(into: []) { $0.append($1) }
                }
            }
            let jobs = try await together(8, "/api/shell/run") { ["project_id": f.pid, "command": "sleep 600"] }
            #expect(jobs.filter { $0.status == 202 }.count == 2, "\(jobs.map(\.status))")
            #expect(jobs.filter { $0.status == 429 }.count == 6, "\(jobs.map(\.status))")
            for j in jobs {
                if let id = j.json["job_id"] as? String { _ = try await f.a.call("POST", "/api/shell/cancel/\(id)") }
            }

            let ptys = try await together(6, "/api/pty/spawn") { ["ws_id": f.ws] }
            #expect(ptys.filter { $0.status == 201 }.count == 1, "\(ptys.map(\.status))")
            #expect(ptys.filter { $0.status == 429 }.count == 5, "\(ptys.map(\.status))")
            for t in ptys { if let id = t.json["id"] as? String { _ = try await f.a.call("DELETE", "/api/pty/\(id)") } }

            x.model.script(
                (0..<6).map { _ in
                    .openai((0..<40).map { ScriptedModel.text("w\($0) ") } + ScriptedModel.finish("stop"), delayMs: 50)
                })
            let runs = try await together(6, "/api/agent/run") { ["project_id": f.pid, "prompt": "go"] }
            #expect(runs.filter { $0.status == 202 }.count == 1, "\(runs.map(\.status))")
            #expect(runs.filter { $0.status == 429 }.count == 5, "\(runs.map(\.status))")
            for r in runs {
                if let id = r.json["run_id"] as? String { _ = try await f.a.call("POST", "/api/agent/cancel/\(id)") }
            }
        }
    }
}
