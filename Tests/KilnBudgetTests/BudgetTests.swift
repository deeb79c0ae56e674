import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnBudget
@testable import KilnTestSupport

@Suite struct BudgetTests {
    typealias M = ScriptedModel

    @Test func ledgerEqualsTheSumOfRunsAndEstimatesBracketThem() async throws {
        let x = try await AgentFixture.priced()
        try await using(x) { x in
            let usage = [(1200, 80), (900, 40), (2500, 300), (1000, 50)]
            for (i, o) in usage {
                x.model.script([
                    .openai(M.call("r", "read_file", ["path": "a.txt"]) + M.finish("tool_calls", input: i, output: o)),
                    .openai([M.text("ok")] + M.finish("stop", input: i + 100, output: o)),
                ])
                _ = try await x.runToEnd("read a.txt")
            }
            let hist = try await x.f.a.call("GET", "/api/agent/history?ws_id=\(x.f.ws)")
            let runs = hist.json["items"] as? [[String: Any]] ?? []
            let inSum = runs.reduce(0) { $0 + ($1["input_tokens"] as? Int ?? 0) }
            let outSum = runs.reduce(0) { $0 + ($1["output_tokens"] as? Int ?? 0) }
            #expect(inSum == usage.reduce(0) { $0 + 2 * $1.0 + 100 } && outSum == usage.reduce(0) { $0 + 2 * $1.1 })
            let ledger = try await x.f.a.call("GET", "/api/budget/ledger?ws_id=\(x.f.ws)")
            let totals = ledger.json["totals"] as? [String: Any]
            #expect(
                totals?["input_tokens"] as? Int == inSum && totals?["output_tokens"] as? Int == outSum
                    && totals?["runs"] as? Int == 4, "\(ledger.text)")
            let perRunCost = runs.reduce(0) { acc, r in
                acc + ((r["input_tokens"] as! Int) * 2_000_000 + (r["output_tokens"] as! Int) * 8_000_000 + 999_999)
                    / 1_000_000
            }
            #expect(totals?["cost_usd_micros"] as? Int == perRunCost)
            let day = (ledger.json["days"] as? [[String: Any]])?.first
            #expect((day?["by_model"] as? [[String: Any]])?.first?["model"] as? String == "test-model")
            #expect((day?["by_user"] as? [[String: Any]])?.count == 1)
            #expect(try await x.f.a.call("GET", "/api/budget/ledger?ws_id=\(x.f.ws)&since=yesterday").status == 400)

            // The estimate for the same kind of run brackets what those runs used.
            let est = try await x.f.a.call(
                "POST", "/api/budget/estimate",
                json: ["ws_id": x.f.ws, "project_id": x.f.pid, "model": "test-model", "prompt": "read a.txt"])
            #expect(est.status == 200 && est.json["basis"] as? String == "history", "\(est.text)")
            let lo = (est.json["input_tokens"] as? [String: Any])?["low"] as? Int ?? .max
            let hi = (est.json["input_tokens"] as? [String: Any])?["high"] as? Int ?? 0
            for r in runs {
                let t = r["input_tokens"] as? Int ?? -1
                #expect(lo <= t && t <= hi, "\(t) not in \(lo)…\(hi)")
            }
            let cost = est.json["cost_usd_micros"] as? [String: Any]
            #expect(
                (cost?["low"] as? Int ?? .max) <= (cost?["expected"] as? Int ?? 0)
                    && (cost?["expected"] as? Int ?? .max) <= (cost?["high"] as? Int ?? 0))
            #expect(
                try await x.f.a.call(
                    "POST", "/api/budget/estimate", json: ["ws_id": x.f.ws, "model": "", "prompt": "x"]
                ).status == 400)
        }
    }

    @Test func capsStopARunMidwayAndRefuseNewOnes() async throws {
        let x = try await AgentFixture.priced()
        try await using(x) { x in
            // Each turn: 10,000 input tokens = 20,000 micro-dollars. A 30,000 per-run cap stops the second turn.
            let put = try await x.f.a.call(
                "PUT", "/api/budget/limits", json: ["ws_id": x.f.ws, "per_run_usd_micros": 30_000])
            #expect(put.status == 200 && put.json["per_run_usd_micros"] as? Int == 30_000, "\(put.text)")
            x.model.script(
                (0..<3).map { i in
                    .openai(
                        M.call("c\(i)", "read_file", ["path": "a.txt"])
                            + M.finish("tool_calls", input: 10_000, output: 0))
                })
            let (run, last) = try await x.runToEnd("loop")
            #expect(
                last?.event == "run.failed" && last?.data["reason"] as? String == "budget_exceeded",
                "\(String(describing: last?.data))")
            let one = try await x.f.a.call("GET", "/api/agent/runs/\(run)")
            #expect(one.json["steps"] as? Int == 2 && one.json["input_tokens"] as? Int == 20_000)
            // A daily cap already reached refuses the next run with 402.
            _ = try await x.f.a.call(
                "PUT", "/api/budget/limits",
                json: ["ws_id": x.f.ws, "per_run_usd_micros": NSNull(), "daily_usd_micros": 40_000])
            let refused = try await x.f.a.call(
                "POST", "/api/agent/run", json: ["project_id": x.f.pid, "prompt": "again"])
            #expect(refused.status == 402 && errorCode(refused) == "budget_exceeded", "\(refused.text)")
            let limits = try await x.f.a.call("GET", "/api/budget/limits?ws_id=\(x.f.ws)")
            #expect(
                limits.json["spent_today_usd_micros"] as? Int == 40_000 && limits.json["per_run_usd_micros"] is NSNull,
                "\(limits.text)")
            for bad: [String: Any] in [
                ["ws_id": x.f.ws, "daily_usd_micros": -1], ["ws_id": x.f.ws, "daily_usd_micros": "10"],
                ["ws_id": x.f.ws, "monthly_usd_micros": 1.5],
            ] {
                #expect(try await x.f.a.call("PUT", "/api/budget/limits", json: bad).status == 400, "\(bad)")
            }
        }
    }
}
