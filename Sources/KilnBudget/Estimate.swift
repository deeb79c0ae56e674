import Foundation
import KilnCore
import KilnHTTP

/// Cost estimates before a run: from the prompt's size, the project's context, the built-in tools'
/// descriptions, and this workspace's history of finished runs (the same model's first).
extension BudgetService {
    func estimate(_ input: EstimateInput, access: WorkspaceAccess, userID: String) async throws -> JSONValue {
        try Validate.model(input.model)
        try Validate.text(input.prompt, field: "prompt", maxBytes: 32 * 1024, trim: false)
        try Validate.maxSteps(input.maxSteps)
        var context = 0
        if let pid = input.projectId {
            let p = try await projects.resolve(pid, access: access, userID: userID)
            let listing = (try? await projects.list(p, path: "")) ?? []
            context = estimateTokens(listing.map(\.path).joined(separator: "\n"))
        }
        let overhead = estimateTokens(tools.tools.map { $0.description + $0.schema.jsonText }.joined()) + 150
        let promptTokens = estimateTokens(input.prompt) + overhead + context
        let maxSteps = input.maxSteps ?? 20
        let model = input.model
        var history = try await store.history(access.wsID, model: model, otherModels: false)
        if history.count < 3 { history += try await store.history(access.wsID, model: model, otherModels: true) }
        func median(_ xs: [Int]) -> Int {
            let s = xs.sorted()
            return s.isEmpty ? 0 : s[s.count / 2]
        }
        var inTok: (Int, Int, Int)
        var outTok: (Int, Int, Int)
        var steps: Int
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
            let ins = history.map(\.0)
            let outs = history.map(\.1)
            let st = history.map { max(1, $0.2) }
            steps = min(maxSteps, median(st))
            let perIn = median(zip(ins, st).map { $0 / $1 })
            let perOut = median(zip(outs, st).map { $0 / $1 })
            let ei = max(perIn * steps, promptTokens)
            let eo = perOut * steps
            inTok = (min(ins.min()!, ei / 2), ei, max(ins.max()! * 5 / 4, ei * 2))
            outTok = (min(outs.min()!, eo / 2), eo, max(outs.max()! * 5 / 4, eo * 2))
        }
        let price = prices.price(model)
        func cost(_ i: Int, _ o: Int) -> Int { prices.cost(model: model, input: i, output: o) }
        return [
            "model": .string(model), "basis": .string(basis), "history_runs": .int(history.count),
            "prompt_tokens": .int(promptTokens),
            "expected_steps": .int(steps), "max_steps": .int(maxSteps),
            "expected_input_tokens": .int(inTok.1), "expected_output_tokens": .int(outTok.1),
            "input_tokens": ["low": .int(inTok.0), "expected": .int(inTok.1), "high": .int(inTok.2)],
            "output_tokens": ["low": .int(outTok.0), "expected": .int(outTok.1), "high": .int(outTok.2)],
            "cost_usd_micros": [
                "low": .int(cost(inTok.0, outTok.0)), "expected": .int(cost(inTok.1, outTok.1)),
                "high": .int(cost(inTok.2, outTok.2)),
            ],
            "priced": .bool(price != nil),
            "price": price.map {
                ["input_per_mtok_usd_micros": .int($0.input), "output_per_mtok_usd_micros": .int($0.output)]
            } ?? .null,
        ]
    }
}
