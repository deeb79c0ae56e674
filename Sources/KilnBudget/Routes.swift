import Foundation
import KilnAgents
import KilnCore
import KilnHTTP
import KilnProjects
import KilnStore

/// Budget: what agent runs cost before (estimates) and after (the ledger), and the caps.
public struct BudgetModule: KilnModule {
    public let name = "budget"
    public init() {}
    public var migrations: [Migration] { BudgetMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("budget:read", "See cost estimates, the usage ledger and the caps", minimumRole: .viewer),
            PermissionGrant("budget:manage", "Set the workspace's budget caps", minimumRole: .admin),
        ]
    }

    public func register(_ routes: Routes, _ services: Services) {
        let prices = PriceTable.configured(services.config)
        let budget = BudgetService(db: services.db, clock: services.clock, prices: prices)
        let projects = ProjectDirectory(services: services)
        let db = services.db
        let hooks = AgentHooks.shared(services)
        hooks.beforeStart { ws, _, _ in try await budget.checkStart(ws: ws) }
        hooks.onUsage { u in try await budget.book(u, ended: false) }
        hooks.onEnd { r in
            _ = try? await budget.book(RunUsage(runID: r.runID, wsID: r.wsID, userID: r.userID, model: r.model, inputTokens: r.inputTokens,
                                                outputTokens: r.outputTokens, steps: r.steps), ended: true)
        }
        let str: JSONValue = ["type": "string"]
        let int: JSONValue = ["type": "integer"]
        let nullableInt: JSONValue = ["type": ["integer", "null"], "minimum": 0]

        routes.add(.POST, "/api/budget/estimate", permission: "budget:read",
                   summary: "Expected tokens and a low/expected/high cost for a prompt, from its size, the project's context and this workspace's history of similar runs",
                   tags: ["budget"], requestBody: ["type": "object", "required": ["model", "prompt"],
                                                   "properties": ["ws_id": str, "project_id": str, "model": str, "prompt": str, "max_steps": int]],
                   bodyLimit: 64 * 1024) { req, ctx in
            let access = try ctx.requireWorkspace()
            struct Input: Decodable { let projectId: String?; let model: String; let prompt: String; let maxSteps: Int? }
            let input = try await req.decode(Input.self, limit: 64 * 1024)
            guard !input.model.isEmpty, input.model.utf8.count <= 200 else { throw APIError.validation("model must be 1 to 200 characters", field: "model") }
            guard !input.prompt.isEmpty, input.prompt.utf8.count <= 32 * 1024 else { throw APIError.validation("prompt must be 1 byte to 32 KiB", field: "prompt") }
            if let m = input.maxSteps, !(1...100).contains(m) { throw APIError.validation("max_steps must be from 1 to 100", field: "max_steps") }
            var context = 0
            if let pid = input.projectId {
                let p = try await projects.resolve(pid, access: access, userID: try ctx.requirePrincipal().userID)
                let listing = (try? await projects.list(p, path: "")) ?? []
                context = estimateTokens(listing.map(\.path).joined(separator: "\n"))
            }
            let overhead = estimateTokens(ToolRegistry.all.map { $0.description + $0.schema.jsonText }.joined()) + 150
            let promptTokens = estimateTokens(input.prompt) + overhead + context
            let maxSteps = input.maxSteps ?? 20
            let (ws, model) = (access.wsID, input.model)
            var history = try await db.read { tx in
                try tx.query("SELECT input_tokens, output_tokens, steps FROM budget_usage WHERE ws_id = ? AND model = ? AND ended = 1 AND steps > 0 ORDER BY updated_at DESC LIMIT 200", ws, model)
            }
            if history.count < 3 {
                history += try await db.read { tx in
                    try tx.query("SELECT input_tokens, output_tokens, steps FROM budget_usage WHERE ws_id = ? AND model <> ? AND ended = 1 AND steps > 0 ORDER BY updated_at DESC LIMIT 200", ws, model)
                }
            }
            func median(_ xs: [Int]) -> Int { let s = xs.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
            var inTok: (Int, Int, Int), outTok: (Int, Int, Int), steps: Int
            let basis: String
            if history.isEmpty {
                basis = "heuristic"
                steps = min(maxSteps, 4)
                // Each step resends the conversation, which grows by the tool results (~600 tokens a step).
                let grow = { (n: Int, per: Int) in (0..<n).reduce(0) { $0 + promptTokens + $1 * per } }
                inTok = (promptTokens, grow(steps, 600), grow(maxSteps, 1500))
                outTok = (100, 250 * steps, 800 * maxSteps)
            } else {
                basis = "history"
                let ins = history.map { $0.int("input_tokens") ?? 0 }, outs = history.map { $0.int("output_tokens") ?? 0 }
                let st = history.map { max(1, $0.int("steps") ?? 1) }
                steps = min(maxSteps, median(st))
                let perIn = median(zip(ins, st).map { $0 / $1 }), perOut = median(zip(outs, st).map { $0 / $1 })
                let ei = max(perIn * steps, promptTokens), eo = perOut * steps
                inTok = (min(ins.min()!, ei / 2), ei, max(ins.max()! * 5 / 4, ei * 2))
                outTok = (min(outs.min()!, eo / 2), eo, max(outs.max()! * 5 / 4, eo * 2))
            }
            let price = prices.price(model)
            func cost(_ i: Int, _ o: Int) -> Int { prices.cost(model: model, input: i, output: o) }
            let body: JSONValue = [
                "model": .string(model), "basis": .string(basis), "history_runs": .int(history.count), "prompt_tokens": .int(promptTokens),
                "expected_steps": .int(steps), "max_steps": .int(maxSteps),
                "expected_input_tokens": .int(inTok.1), "expected_output_tokens": .int(outTok.1),
                "input_tokens": ["low": .int(inTok.0), "expected": .int(inTok.1), "high": .int(inTok.2)],
                "output_tokens": ["low": .int(outTok.0), "expected": .int(outTok.1), "high": .int(outTok.2)],
                "cost_usd_micros": ["low": .int(cost(inTok.0, outTok.0)), "expected": .int(cost(inTok.1, outTok.1)), "high": .int(cost(inTok.2, outTok.2))],
                "priced": .bool(price != nil),
                "price": price.map { ["input_per_mtok_usd_micros": .int($0.input), "output_per_mtok_usd_micros": .int($0.output)] } ?? .null,
            ]
            return .json(body)
        }

        routes.add(.GET, "/api/budget/ledger", permission: "budget:read",
                   summary: "Per-day totals (tokens, cost in micro-dollars, runs) by model and by user; runs are booked live and when they end",
                   tags: ["budget"], query: [("ws_id", "the workspace", true), ("since", "first day, YYYY-MM-DD (default 30 days ago)", false),
                                             ("until", "last day, YYYY-MM-DD (default today)", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            func day(_ name: String, _ def: Date) throws -> String {
                guard let v = req.query[name], !v.isEmpty else { return BudgetService.day(def) }
                guard v.count == 10, v.range(of: #"^\d{4}-\d{2}-\d{2}$"#, options: .regularExpression) != nil else {
                    throw APIError.validation("\(name) must be a date YYYY-MM-DD", field: name)
                }
                return v
            }
            let now = services.clock.now()
            let since = try day("since", now.addingTimeInterval(-29 * 86400)), until = try day("until", now)
            guard since <= until else { throw APIError.validation("since must not be after until", field: "since") }
            let ws = access.wsID
            let rows = try await db.read { tx in
                try tx.query("SELECT day, model, user_id, input_tokens, output_tokens, cost_usd_micros FROM budget_usage WHERE ws_id = ? AND day >= ? AND day <= ? ORDER BY day", ws, since, until)
            }
            struct Sum { var i = 0, o = 0, c = 0, runs = 0
                mutating func add(_ r: Row) { i += r.int("input_tokens") ?? 0; o += r.int("output_tokens") ?? 0; c += r.int("cost_usd_micros") ?? 0; runs += 1 }
                func json(_ extra: [String: JSONValue] = [:]) -> JSONValue {
                    var d: [String: JSONValue] = ["input_tokens": .int(i), "output_tokens": .int(o), "cost_usd_micros": .int(c), "runs": .int(runs)]
                    for (k, v) in extra { d[k] = v }
                    return .object(d)
                }
            }
            var days: [String: (Sum, [String: Sum], [String: Sum])] = [:]
            var total = Sum()
            for r in rows {
                let d = r.string("day") ?? ""
                var e = days[d] ?? (Sum(), [:], [:])
                e.0.add(r); e.1[r.string("model") ?? "", default: Sum()].add(r); e.2[r.string("user_id") ?? "", default: Sum()].add(r)
                days[d] = e
                total.add(r)
            }
            let items: [JSONValue] = days.keys.sorted().map { d in
                let (s, byModel, byUser) = days[d]!
                return s.json(["day": .string(d),
                               "by_model": .array(byModel.keys.sorted().map { byModel[$0]!.json(["model": .string($0)]) }),
                               "by_user": .array(byUser.keys.sorted().map { byUser[$0]!.json(["user_id": .string($0)]) })])
            }
            return .json(JSONValue.object(["ws_id": .string(ws), "since": .string(since), "until": .string(until),
                                                      "days": .array(items), "totals": total.json()]))
        }

        @Sendable func limitsJSON(_ ws: String) async throws -> JSONValue {
            let l = try await budget.limits(ws)
            let s = try await budget.spent(ws)
            func opt(_ v: Int?) -> JSONValue { v.map { .int($0) } ?? .null }
            return ["ws_id": .string(ws), "daily_usd_micros": opt(l.daily), "monthly_usd_micros": opt(l.monthly), "per_run_usd_micros": opt(l.perRun),
                    "spent_today_usd_micros": .int(s.day), "spent_this_month_usd_micros": .int(s.month)]
        }

        routes.add(.GET, "/api/budget/limits", permission: "budget:read", summary: "The workspace's caps (null: none) and what was spent today and this month",
                   tags: ["budget"], query: [("ws_id", "the workspace", true)]) { _, ctx in
            .json(try await limitsJSON(try ctx.requireWorkspace().wsID))
        }

        routes.add(.PUT, "/api/budget/limits", permission: "budget:manage",
                   summary: "Set caps in micro-dollars (null removes one): a run that would start over a cap gets 402; a running run that reaches one fails with budget_exceeded",
                   tags: ["budget"], requestBody: ["type": "object", "properties": ["ws_id": str, "daily_usd_micros": nullableInt, "monthly_usd_micros": nullableInt, "per_run_usd_micros": nullableInt]],
                   bodyLimit: 16 * 1024) { req, ctx in
            let access = try ctx.requireWorkspace()
            let raw = try await req.bodyBytes(limit: 16 * 1024)
            guard req.mediaType == "application/json" else { throw HTTPError(.unsupportedMediaType, message: "Send application/json") }
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(raw))) as? [String: Any] else { throw APIError.validation("body must be a JSON object", field: "body") }
            var current = try await budget.limits(access.wsID)
            for (key, path) in [("daily_usd_micros", \Limits.daily), ("monthly_usd_micros", \Limits.monthly), ("per_run_usd_micros", \Limits.perRun)] {
                guard let v = obj[key] else { continue }
                if v is NSNull { current[keyPath: path] = nil; continue }
                guard let n = v as? Int, !(v is Bool), n >= 0, n <= 1_000_000_000_000_000 else {
                    throw APIError.validation("\(key) must be a non-negative integer (micro-dollars) or null", field: key)
                }
                current[keyPath: path] = n
            }
            let (ws, l, now) = (access.wsID, current, services.clock.now())
            _ = try await db.write { tx in
                try tx.run("""
                    INSERT INTO budget_limits (ws_id, daily_usd_micros, monthly_usd_micros, per_run_usd_micros, updated_at) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (ws_id) DO UPDATE SET daily_usd_micros = excluded.daily_usd_micros, monthly_usd_micros = excluded.monthly_usd_micros,
                        per_run_usd_micros = excluded.per_run_usd_micros, updated_at = excluded.updated_at
                    """, ws, l.daily, l.monthly, l.perRun, now)
            }
            return .json(try await limitsJSON(ws))
        }
    }
}
