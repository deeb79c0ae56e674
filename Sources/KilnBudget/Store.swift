import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The budget domain's SQL: the usage ledger (one row per run, updated as it goes) and the caps.
struct BudgetStore: Sendable {
    let db: Database

    func limits(_ wsID: String) async throws -> Limits {
        guard let r = try await db.read({ tx in try tx.first("SELECT * FROM budget_limits WHERE ws_id = ?", wsID) })
        else { return Limits() }
        return Limits(
            daily: r.int("daily_usd_micros"), monthly: r.int("monthly_usd_micros"), perRun: r.int("per_run_usd_micros"))
    }

    func setLimits(_ wsID: String, _ l: Limits, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO budget_limits (ws_id, daily_usd_micros, monthly_usd_micros, per_run_usd_micros, updated_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (ws_id) DO UPDATE SET daily_usd_micros = excluded.daily_usd_micros, monthly_usd_micros = excluded.monthly_usd_micros,
                    per_run_usd_micros = excluded.per_run_usd_micros, updated_at = excluded.updated_at
                """, wsID, l.daily, l.monthly, l.perRun, now)
        }
    }

    /// Spend on `day` and in its month, leaving out `exceptRun`.
    func spent(_ wsID: String, day: String, exceptRun: String) async throws -> (day: Int, month: Int) {
        let month = String(day.prefix(7))
        return try await db.read { tx in
            let d =
                try tx.first(
                    "SELECT COALESCE(SUM(cost_usd_micros), 0) AS s FROM budget_usage WHERE ws_id = ? AND day = ? AND run_id <> ?",
                    wsID, day, exceptRun)?.int("s") ?? 0
            let m =
                try tx.first(
                    """
                    SELECT COALESCE(SUM(cost_usd_micros), 0) AS s FROM budget_usage WHERE ws_id = ? AND substr(day, 1, 7) = ? AND run_id <> ?
                    """, wsID, month, exceptRun)?.int("s") ?? 0
            return (d, m)
        }
    }

    func book(_ u: RunUsage, day: String, cost: Int, ended: Bool, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO budget_usage (run_id, ws_id, user_id, model, day, input_tokens, output_tokens, steps, cost_usd_micros, ended, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id) DO UPDATE SET input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
                    steps = excluded.steps, cost_usd_micros = excluded.cost_usd_micros, ended = excluded.ended, updated_at = excluded.updated_at
                """, u.runID, u.wsID, u.userID, u.model, day, u.inputTokens, u.outputTokens, u.steps, cost, ended, now)
        }
    }

    /// Finished runs of the workspace with `model` (or, with `otherModels`, with any other model),
    /// newest first: (input tokens, output tokens, steps).
    func history(_ wsID: String, model: String, otherModels: Bool) async throws -> [(Int, Int, Int)] {
        let op = otherModels ? "<>" : "="
        return try await db.read { tx in
            try tx.query(
                """
                SELECT input_tokens, output_tokens, steps FROM budget_usage
                WHERE ws_id = ? AND model \(op) ? AND ended = 1 AND steps > 0 ORDER BY updated_at DESC LIMIT 200
                """, wsID, model)
        }.map { ($0.int("input_tokens") ?? 0, $0.int("output_tokens") ?? 0, $0.int("steps") ?? 0) }
    }

    /// The ledger rows of the days `since...until`.
    func ledger(_ wsID: String, since: String, until: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT day, model, user_id, input_tokens, output_tokens, cost_usd_micros FROM budget_usage
                WHERE ws_id = ? AND day >= ? AND day <= ? ORDER BY day
                """, wsID, since, until)
        }
    }

    /// A deleted workspace's limits (its usage stays, as history).
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM budget_limits WHERE ws_id = ?", wsID)
    }
}
