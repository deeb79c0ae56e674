import Foundation
import KilnCore
import KilnHTTP

/// Prices per million tokens, in micro-dollars (integers throughout).
public struct PriceTable: Pricing {
    public struct Price: Sendable, Equatable {
        public let input: Int
        public let output: Int
    }
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

    static let flag = "--pricing"
    /// `--pricing FILE`: checked when the configuration loads, since a table that does not load would
    /// silently make runs free.
    static let option = Config.Option(
        flag: flag, env: "KILN_PRICING",
        help: "JSON file of model prices (per million tokens) overriding the built-in table"
    ) { c, v in
        if !v.isEmpty { _ = try load(file: v) }
        c.set(flag, v.isEmpty ? nil : v)
    }

    /// The server's table: built in, plus `--pricing` (checked when the configuration loaded; should the
    /// file go bad since, the built-in prices apply, with a log line).
    public static func configured(_ config: Config) -> PriceTable {
        do { return try load(file: config.string(flag)) } catch {
            ServerLog.error("pricing file ignored", ["error": .string(String(describing: error))])
            return PriceTable(prices: builtIn)
        }
    }

    /// `--pricing FILE`: `{"models": {"name": {"input_per_mtok_usd_micros": N, "output_per_mtok_usd_micros": N}}}`.
    public static func load(file: String?) throws -> PriceTable {
        var p = builtIn
        if let file {
            guard let data = FileManager.default.contents(atPath: file),
                let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                let models = obj["models"] as? [String: Any]
            else {
                throw Config.ConfigError(
                    "--pricing \(file): expected {\"models\": {\"name\": {\"input_per_mtok_usd_micros\": N, \"output_per_mtok_usd_micros\": N}}}"
                )
            }
            for (name, v) in models {
                guard let e = v as? [String: Any], let i = e["input_per_mtok_usd_micros"] as? Int,
                    let o = e["output_per_mtok_usd_micros"] as? Int, i >= 0, o >= 0
                else {
                    throw Config.ConfigError(
                        "--pricing \(file): model \(name) needs non-negative integer input_per_mtok_usd_micros and output_per_mtok_usd_micros"
                    )
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
