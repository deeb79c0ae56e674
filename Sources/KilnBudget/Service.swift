import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Budgets: what agent runs cost before they start (estimates) and after (the ledger), and the
/// workspace's caps. It follows every run as a `RunObserver`: a start over a cap is refused with
/// 402, and a running run that reaches one is stopped.
public struct BudgetService: RunObserver {
    let store: BudgetStore
    let clock: any Clock
    let prices: PriceTable
    let projects: any ProjectDirectory
    let tools: any ToolCatalog

    public init(services: Services, projects: any ProjectDirectory, tools: any ToolCatalog) {
        store = BudgetStore(db: services.db)
        clock = services.clock
        prices = PriceTable.configured(services.config)
        self.projects = projects
        self.tools = tools
    }

    /// The price table, as other domains see it (receipts record each run's cost).
    public var pricing: any Pricing { prices }

    static func day(_ d: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let x = cal.dateComponents([.year, .month, .day], from: d)
        return String(format: "%04d-%02d-%02d", x.year!, x.month!, x.day!)
    }

    /// Spend today and this month (UTC), excluding `exceptRun`.
    func spent(_ ws: String, exceptRun: String? = nil) async throws -> (day: Int, month: Int) {
        try await store.spent(ws, day: Self.day(clock.now()), exceptRun: exceptRun ?? "")
    }

    func exceeded(_ which: String, cap: Int, spent: Int) -> HTTPError {
        HTTPError(
            HTTPStatus(402), code: "budget_exceeded",
            message: "The workspace's \(which.replacingOccurrences(of: "_", with: "-")) budget cap is reached",
            details: ["cap": .string(which), "cap_usd_micros": .int(cap), "spent_usd_micros": .int(spent)])
    }

    // MARK: RunObserver

    /// 402 when the workspace is already at a daily or monthly cap.
    public func runWillStart(wsID: String, userID: String, model: String) async throws {
        let l = try await store.limits(wsID)
        guard l.daily != nil || l.monthly != nil || l.perRun != nil else { return }
        let s = try await spent(wsID)
        if let cap = l.daily, s.day >= cap { throw exceeded("daily", cap: cap, spent: s.day) }
        if let cap = l.monthly, s.month >= cap { throw exceeded("monthly", cap: cap, spent: s.month) }
        if let cap = l.perRun, cap == 0 { throw exceeded("per_run", cap: cap, spent: 0) }
    }

    public func runUsage(_ usage: RunUsage) async throws -> String? { try await book(usage, ended: false) }

    public func runEnded(_ r: RunRecord) async {
        _ = try? await book(
            RunUsage(
                runID: r.runID, wsID: r.wsID, userID: r.userID, model: r.model, inputTokens: r.inputTokens,
                outputTokens: r.outputTokens, steps: r.steps), ended: true)
    }

    /// Books a run's usage so far; returns `budget_exceeded` when a cap is now reached.
    func book(_ u: RunUsage, ended: Bool) async throws -> String? {
        let cost = prices.cost(model: u.model, input: u.inputTokens, output: u.outputTokens)
        let now = clock.now()
        try await store.book(u, day: Self.day(now), cost: cost, ended: ended, at: now)
        guard !ended else { return nil }
        let l = try await store.limits(u.wsID)
        if let cap = l.perRun, cost >= cap { return "budget_exceeded" }
        if l.daily != nil || l.monthly != nil {
            let s = try await spent(u.wsID)
            if let cap = l.daily, s.day >= cap { return "budget_exceeded" }
            if let cap = l.monthly, s.month >= cap { return "budget_exceeded" }
        }
        return nil
    }

    // MARK: Caps

    func limitsDocument(_ ws: String) async throws -> JSONValue {
        let l = try await store.limits(ws)
        let s = try await spent(ws)
        func opt(_ v: Int?) -> JSONValue { v.map { .int($0) } ?? .null }
        return [
            "ws_id": .string(ws), "daily_usd_micros": opt(l.daily), "monthly_usd_micros": opt(l.monthly),
            "per_run_usd_micros": opt(l.perRun),
            "spent_today_usd_micros": .int(s.day), "spent_this_month_usd_micros": .int(s.month),
        ]
    }

    func setLimits(_ ws: String, _ input: LimitsInput) async throws -> JSONValue {
        var l = try await store.limits(ws)
        for (key, change, path) in [
            ("daily_usd_micros", input.dailyUsdMicros, \Limits.daily),
            ("monthly_usd_micros", input.monthlyUsdMicros, \Limits.monthly),
            ("per_run_usd_micros", input.perRunUsdMicros, \Limits.perRun),
        ] {
            if case .value(let n) = change, !(0...1_000_000_000_000_000).contains(n) {
                throw APIError.validation("\(key) must be a non-negative integer (micro-dollars) or null", field: key)
            }
            l[keyPath: path] = change.applied(to: l[keyPath: path])
        }
        try await store.setLimits(ws, l, at: clock.now())
        return try await limitsDocument(ws)
    }

    // MARK: Ledger

    /// Per-day totals by model and by user between two days (`YYYY-MM-DD`, inclusive).
    func ledger(_ ws: String, since: String, until: String) async throws -> JSONValue {
        struct Sum {
            var i = 0, o = 0, c = 0, runs = 0
            mutating func add(_ r: Row) {
                i += r.int("input_tokens") ?? 0
                o += r.int("output_tokens") ?? 0
                c += r.int("cost_usd_micros") ?? 0
                runs += 1
            }
            func json(_ extra: [String: JSONValue] = [:]) -> JSONValue {
                var d: [String: JSONValue] = [
                    "input_tokens": .int(i), "output_tokens": .int(o), "cost_usd_micros": .int(c), "runs": .int(runs),
                ]
                for (k, v) in extra { d[k] = v }
                return .object(d)
            }
        }
        var days: [String: (Sum, [String: Sum], [String: Sum])] = [:]
        var total = Sum()
        for r in try await store.ledger(ws, since: since, until: until) {
            let d = r.string("day") ?? ""
            var e = days[d] ?? (Sum(), [:], [:])
            e.0.add(r)
            e.1[r.string("model") ?? "", default: Sum()].add(r)
            e.2[r.string("user_id") ?? "", default: Sum()].add(r)
            days[d] = e
            total.add(r)
        }
        let items: [JSONValue] = days.keys.sorted().map { d in
            let (s, byModel, byUser) = days[d]!
            return s.json([
                "day": .string(d),
                "by_model": .array(byModel.keys.sorted().map { byModel[$0]!.json(["model": .string($0)]) }),
                "by_user": .array(byUser.keys.sorted().map { byUser[$0]!.json(["user_id": .string($0)]) }),
            ])
        }
        return .object([
            "ws_id": .string(ws), "since": .string(since), "until": .string(until), "days": .array(items),
            "totals": total.json(),
        ])
    }
}
