import Foundation
import KilnAgents
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

enum BudgetMigrations {
    static let all = [
        Migration(module: "budget", version: 1, name: "usage ledger and caps", sql: """
            CREATE TABLE budget_usage (
                run_id TEXT PRIMARY KEY,
                ws_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                model TEXT NOT NULL,
                day TEXT NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                steps INTEGER NOT NULL,
                cost_usd_micros INTEGER NOT NULL,
                ended INTEGER NOT NULL DEFAULT 0,
                updated_at INTEGER NOT NULL
            );
            CREATE INDEX budget_usage_by_day ON budget_usage (ws_id, day);
            CREATE TABLE budget_limits (
                ws_id TEXT PRIMARY KEY,
                daily_usd_micros INTEGER,
                monthly_usd_micros INTEGER,
                per_run_usd_micros INTEGER,
                updated_at INTEGER NOT NULL
            );
            """),
    ]
}

/// Prices per million tokens, in micro-dollars (integers throughout).
public struct PriceTable: Sendable {
    public struct Price: Sendable, Equatable { public let input: Int; public let output: Int }
    public let prices: [String: Price]
    public init(prices: [String: Price]) { self.prices = prices }

    /// Published list prices of common models (USD per million tokens × 10⁶).
    public static let builtIn: [String: Price] = [
        "gpt-4o": Price(input: 2_500_000, output: 10_000_000),
        "gpt-4o-mini": Price(input: 150_000, output: 600_000),
        "gpt-4.1": Price(input: 2_000_000, output: 8_000_000),
        "gpt-4.1-mini": Price(input: 400_000, output: 1_600_000),
        "gpt-4.1-nano": Price(input: 100_000, output: 400_000),
        "o3": Price(input: 2_000_000, output: 8_000_000),
        "o4-mini": Price(input: 1_100_000, output: 4_400_000),
        "claude-opus-4-1": Price(input: 15_000_000, output: 75_000_000),
        "claude-sonnet-4-5": Price(input: 3_000_000, output: 15_000_000),
        "claude-sonnet-4": Price(input: 3_000_000, output: 15_000_000),
        "claude-haiku-4-5": Price(input: 1_000_000, output: 5_000_000),
        "claude-3-5-haiku": Price(input: 800_000, output: 4_000_000),
    ]

    private static let loaded = Mutex<[String: PriceTable]>([:])

    /// The server's table: built in, plus `--pricing` (read once; `kiln serve` refuses a file that
    /// does not load, so a failure here falls back to the built-in prices with a log line).
    public static func configured(_ config: Config) -> PriceTable {
        let key = config.pricingFile ?? ""
        if let t = loaded.withLock({ $0[key] }) { return t }
        let table: PriceTable
        do { table = try load(file: config.pricingFile) } catch {
            ServerLog.error("pricing file ignored", ["error": .string(String(describing: error))])
            table = PriceTable(prices: builtIn)
        }
        loaded.withLock { $0[key] = table }
        return table
    }

    /// `--pricing FILE`: `{"models": {"name": {"input_per_mtok_usd_micros": N, "output_per_mtok_usd_micros": N}}}`.
    public static func load(file: String?) throws -> PriceTable {
        var p = builtIn
        if let file {
            guard let data = FileManager.default.contents(atPath: file),
                  let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let models = obj["models"] as? [String: Any] else {
                throw Config.ConfigError("--pricing \(file): expected {\"models\": {\"name\": {\"input_per_mtok_usd_micros\": N, \"output_per_mtok_usd_micros\": N}}}")
            }
            for (name, v) in models {
                guard let e = v as? [String: Any], let i = e["input_per_mtok_usd_micros"] as? Int, let o = e["output_per_mtok_usd_micros"] as? Int, i >= 0, o >= 0 else {
                    throw Config.ConfigError("--pricing \(file): model \(name) needs non-negative integer input_per_mtok_usd_micros and output_per_mtok_usd_micros")
                }
                p[name] = Price(input: i, output: o)
            }
        }
        return PriceTable(prices: p)
    }

    /// The price of `model`: exact, else the longest known prefix (dated model names), else nil.
    public func price(_ model: String) -> Price? {
        if let p = prices[model] { return p }
        return prices.keys.filter { model.hasPrefix($0) }.max { $0.count < $1.count }.flatMap { prices[$0] }
    }

    /// Cost in micro-dollars, rounded up (so caps never under-count); unknown models cost 0.
    public func cost(model: String, input: Int, output: Int) -> Int {
        guard let p = price(model) else { return 0 }
        let total = input * p.input + output * p.output
        return (total + 999_999) / 1_000_000
    }
}

struct Limits: Sendable {
    var daily: Int?
    var monthly: Int?
    var perRun: Int?
}

/// The ledger and the caps.
struct BudgetService: Sendable {
    let db: Database
    let clock: any Clock
    let prices: PriceTable

    static func day(_ d: Date) -> String {
        let c = Calendar(identifier: .gregorian)
        var cal = c; cal.timeZone = TimeZone(identifier: "UTC")!
        let x = cal.dateComponents([.year, .month, .day], from: d)
        return String(format: "%04d-%02d-%02d", x.year!, x.month!, x.day!)
    }

    func limits(_ ws: String) async throws -> Limits {
        guard let r = try await db.read({ tx in try tx.first("SELECT * FROM budget_limits WHERE ws_id = ?", ws) }) else { return Limits() }
        return Limits(daily: r.int("daily_usd_micros"), monthly: r.int("monthly_usd_micros"), perRun: r.int("per_run_usd_micros"))
    }

    /// Spend today and this month (UTC), excluding `exceptRun`.
    func spent(_ ws: String, exceptRun: String? = nil) async throws -> (day: Int, month: Int) {
        let today = BudgetService.day(clock.now())
        let month = String(today.prefix(7))
        let except = exceptRun ?? ""
        return try await db.read { tx in
            let d = try tx.first("SELECT COALESCE(SUM(cost_usd_micros), 0) AS s FROM budget_usage WHERE ws_id = ? AND day = ? AND run_id <> ?", ws, today, except)?.int("s") ?? 0
            let m = try tx.first("SELECT COALESCE(SUM(cost_usd_micros), 0) AS s FROM budget_usage WHERE ws_id = ? AND substr(day, 1, 7) = ? AND run_id <> ?", ws, month, except)?.int("s") ?? 0
            return (d, m)
        }
    }

    /// 402 when the workspace is already at a daily or monthly cap.
    func checkStart(ws: String) async throws {
        let l = try await limits(ws)
        guard l.daily != nil || l.monthly != nil || l.perRun != nil else { return }
        let s = try await spent(ws)
        if let cap = l.daily, s.day >= cap { throw exceeded("daily", cap: cap, spent: s.day) }
        if let cap = l.monthly, s.month >= cap { throw exceeded("monthly", cap: cap, spent: s.month) }
        if let cap = l.perRun, cap == 0 { throw exceeded("per_run", cap: cap, spent: 0) }
    }

    func exceeded(_ which: String, cap: Int, spent: Int) -> HTTPError {
        HTTPError(HTTPStatus(402), code: "budget_exceeded", message: "The workspace's \(which.replacingOccurrences(of: "_", with: "-")) budget cap is reached",
                  details: ["cap": .string(which), "cap_usd_micros": .int(cap), "spent_usd_micros": .int(spent)])
    }

    /// Books a run's usage so far; returns `budget_exceeded` when a cap is now reached.
    func book(_ u: RunUsage, ended: Bool) async throws -> String? {
        let cost = prices.cost(model: u.model, input: u.inputTokens, output: u.outputTokens)
        let now = clock.now()
        let day = BudgetService.day(now)
        _ = try await db.write { tx in
            try tx.run("""
                INSERT INTO budget_usage (run_id, ws_id, user_id, model, day, input_tokens, output_tokens, steps, cost_usd_micros, ended, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id) DO UPDATE SET input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
                    steps = excluded.steps, cost_usd_micros = excluded.cost_usd_micros, ended = excluded.ended, updated_at = excluded.updated_at
                """, u.runID, u.wsID, u.userID, u.model, day, u.inputTokens, u.outputTokens, u.steps, cost, ended, now)
        }
        guard !ended else { return nil }
        let l = try await limits(u.wsID)
        if let cap = l.perRun, cost >= cap { return "budget_exceeded" }
        if l.daily != nil || l.monthly != nil {
            let s = try await spent(u.wsID)
            if let cap = l.daily, s.day >= cap { return "budget_exceeded" }
            if let cap = l.monthly, s.month >= cap { return "budget_exceeded" }
        }
        return nil
    }
}
