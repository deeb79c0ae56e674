import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnBudget
@testable import KilnTestSupport

/// The budget service on its own: the ledger it books from run usage, and the caps it enforces as a
/// `RunObserver` (no HTTP).
@Suite struct BudgetServiceTests {
    func usage(_ run: String, _ ws: String, input: Int, output: Int) -> RunUsage {
        RunUsage(
            runID: run, wsID: ws, userID: "usr_test", model: "gpt-4o", inputTokens: input, outputTokens: output,
            steps: 1)
    }

    @Test func bookingUpdatesOneRowPerRunAndCapsStopRuns() async throws {
        try await withTestApp(.inProcess) { t in
            let budget = try #require(t.app.module(BudgetModule.self)).service
            let ws = "ws_budgetservice"
            // gpt-4o: $2.50 in, $10 out per million tokens → 1M in + 100k out = 3.5 USD = 3,500,000 micro-dollars.
            #expect(try await budget.runUsage(usage("run_a", ws, input: 500_000, output: 50_000)) == nil)
            #expect(try await budget.runUsage(usage("run_a", ws, input: 1_000_000, output: 100_000)) == nil)
            #expect(try await budget.spent(ws).day == 3_500_000)
            _ = try await budget.setLimits(
                ws,
                LimitsInput(
                    wsId: ws, dailyUsdMicros: .value(4_000_000), monthlyUsdMicros: .absent,
                    perRunUsdMicros: .absent))
            try await budget.runWillStart(wsID: ws, userID: "usr_test", model: "gpt-4o")
            #expect(try await budget.runUsage(usage("run_b", ws, input: 200_000, output: 0)) == "budget_exceeded")
            await #expect(throws: HTTPError.self) {
                try await budget.runWillStart(wsID: ws, userID: "usr_test", model: "gpt-4o")
            }
            // Null removes the cap; absent leaves the others.
            let doc = try await budget.setLimits(
                ws,
                LimitsInput(
                    wsId: ws, dailyUsdMicros: .null, monthlyUsdMicros: .absent,
                    perRunUsdMicros: .value(0)))
            #expect(
                doc.jsonText.contains(#""daily_usd_micros":null"#) && doc.jsonText.contains(#""per_run_usd_micros":0"#))
            await #expect(throws: HTTPError.self) {
                try await budget.runWillStart(wsID: ws, userID: "usr_test", model: "gpt-4o")
            }
            await #expect(throws: HTTPError.self) {
                _ = try await budget.setLimits(
                    ws,
                    LimitsInput(
                        wsId: ws, dailyUsdMicros: .value(-1), monthlyUsdMicros: .absent,
                        perRunUsdMicros: .absent))
            }
        }
    }

    @Test func pricesRoundUpAndUnknownModelsAreFree() {
        let table = PriceTable(prices: PriceTable.builtIn)
        #expect(table.cost(model: "gpt-4o-mini", input: 1, output: 0) == 1)
        #expect(table.cost(model: "gpt-4o-2024-08-06", input: 1_000_000, output: 0) == 2_500_000)
        #expect(table.cost(model: "no-such-model", input: 1_000_000, output: 1_000_000) == 0)
    }
}
