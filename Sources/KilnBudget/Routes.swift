import Foundation
import KilnCore
import KilnHTTP

/// `/api/budget/*`: estimates, the ledger and the caps.
struct BudgetRoutes: Sendable {
    let budget: BudgetService

    func register(_ routes: Routes) {
        let r = routes.tagged("budget")
        let read = BudgetPermission.read
        r.add(
            .POST, "/api/budget/estimate", read,
            "Expected tokens and a low/expected/high cost for a prompt, from its size, the project's context and this workspace's "
                + "history of similar runs",
            limit: 64 * 1024, estimate)
        r.add(
            .GET, "/api/budget/ledger", read,
            "Per-day totals (tokens, cost in micro-dollars, runs) by model and by user; runs are booked live and when they end",
            query: [
                .wsID, QueryParam("since", "first day, YYYY-MM-DD (default 30 days ago)"),
                QueryParam("until", "last day, YYYY-MM-DD (default today)"),
            ],
            ledger)
        r.add(
            .GET, "/api/budget/limits", read,
            "The workspace's caps (null: none) and what was spent today and this month", query: [.wsID], limits)
        r.add(
            .PUT, "/api/budget/limits", BudgetPermission.manage,
            "Set caps in micro-dollars (null removes one): a run that would start over a cap gets 402; a running run that reaches one "
                + "fails with budget_exceeded",
            limit: 16 * 1024, setLimits)
    }

    @Sendable func estimate(_ req: Request, _ ctx: RequestContext, _ input: EstimateInput) async throws -> Response {
        .json(
            try await budget.estimate(
                input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func ledger(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let access = try ctx.requireWorkspace()
        func day(_ name: String, _ def: Date) throws -> String {
            guard let v = req.query[name], !v.isEmpty else { return BudgetService.day(def) }
            guard v.count == 10, v.range(of: #"^\d{4}-\d{2}-\d{2}$"#, options: .regularExpression) != nil else {
                throw APIError.validation("\(name) must be a date YYYY-MM-DD", field: name)
            }
            return v
        }
        let now = budget.clock.now()
        let since = try day("since", now.addingTimeInterval(-29 * 86400))
        let until = try day("until", now)
        guard since <= until else { throw APIError.validation("since must not be after until", field: "since") }
        return .json(try await budget.ledger(access.wsID, since: since, until: until))
    }

    @Sendable func limits(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await budget.limitsDocument(try ctx.requireWorkspace().wsID))
    }

    @Sendable func setLimits(_ req: Request, _ ctx: RequestContext, _ input: LimitsInput) async throws -> Response {
        .json(try await budget.setLimits(try ctx.requireWorkspace().wsID, input))
    }
}
