import Foundation
import KilnCore
import KilnHTTP

/// `kiln policy bench`: what judging one action costs, on a document of N rules, measured call by
/// call in this process (scripts/bench/policy.sh runs it on a release build).
enum PolicyBench {
    static let help = """
        usage: kiln policy bench [--rules 200] [--calls 100000] [--data-dir DIR]

        Stores a policy of --rules rules (regexes on commands, globs on paths, secrets and hosts, roles and
        actor kinds; the matching rule last for most actions) and times --calls decisions: the evaluation of
        the cached policy alone, and a decision as a service makes it (with the caller's role read from the
        database), i.e. what every agent tool call, job and terminal pays. Prints p50/p90/p99 in microseconds.
        """

    static func document(rules n: Int) -> JSONValue {
        var rules: [JSONValue] = []
        let actions = PolicyActions.fixed
        for i in 0..<max(0, n - 1) {
            let action = actions[i % actions.count]
            var when: [String: JSONValue] = [:]
            switch i % 5 {
            case 0: when["command"] = .string(#"(rm|dd|mkfs)\s+-\w*\#(i)"#)
            case 1: when["path"] = .string("generated/\(i)/**")
            case 2: when["secret"] = .string("PROD_\(i)_*")
            case 3: when["actor_role"] = .array(["viewer"])
            default: when["host"] = .string("*.internal-\(i).example")
            }
            rules.append(
                .object(["id": .string("r\(i)"), "action": .string(action), "effect": "deny", "when": .object(when)]))
        }
        rules.append(.object(["id": "last", "action": "*", "effect": "allow"]))
        return .object(["rules": .array(rules), "defaults": .object(["network": "deny"])])
    }

    static func percentiles(_ xs: [Double]) -> String {
        let s = xs.sorted()
        func p(_ q: Double) -> Double { s[min(s.count - 1, Int(Double(s.count) * q))] }
        return String(format: "p50 %.2f µs, p90 %.2f µs, p99 %.2f µs", p(0.5), p(0.9), p(0.99))
    }

    @Sendable static func run(_ args: [String], _ io: CommandIO) async -> Int32 {
        guard args.first == "bench", !args.contains("--help") else {
            io.out(help)
            return args.contains("--help") ? 0 : 2
        }
        var rest = Array(args.dropFirst())
        func take(_ flag: String, _ def: Int) -> Int {
            guard let i = rest.firstIndex(of: flag), i + 1 < rest.count, let v = Int(rest[i + 1]) else { return def }
            rest.removeSubrange(i...(i + 1))
            return v
        }
        let n = take("--rules", 200)
        let calls = take("--calls", 100_000)
        do {
            let (config, _) = try io.loadConfig(rest)
            let host = try io.open(config)
            guard let policy = host.module(PolicyModule.self)?.service else { return 1 }
            let ws = IDs.make("ws")
            _ = try await policy.put(
                wsID: ws, body: document(rules: n), ifMatch: nil, userID: "usr_bench", ip: "127.0.0.1")
            let compiled = try await policy.compiled(ws)
            let probes: [(String, PolicyContext)] = [
                ("shell.run", PolicyContext(command: "make test", actorRole: "member", actorKind: "user")),
                (
                    "agent.tool.read_file",
                    PolicyContext(path: "Sources/App/main.swift", actorRole: "member", actorKind: "agent")
                ),
                (
                    "agent.tool.run_command",
                    PolicyContext(command: "swift build", actorRole: "member", actorKind: "agent")
                ),
                ("secrets.use", PolicyContext(secret: "DEPLOY_TOKEN", actorRole: "admin", actorKind: "user")),
                ("network.connect", PolicyContext(host: "github.com", actorRole: "member", actorKind: "user")),
            ]
            var evalTimes: [Double] = []
            var decideTimes: [Double] = []
            evalTimes.reserveCapacity(calls)
            var allowed = 0
            for i in 0..<calls {
                let (action, ctx) = probes[i % probes.count]
                let t0 = kilnMonotonicNanos()
                let d = compiled.decide(action, ctx)
                evalTimes.append(Double(kilnMonotonicNanos() - t0) / 1000)
                if d.effect == .allow { allowed += 1 }
            }
            for i in 0..<min(calls, 20_000) {
                var (action, ctx) = probes[i % probes.count]
                ctx.actorRole = nil  // read from the database, as a service's decision does
                let t0 = kilnMonotonicNanos()
                _ = try await policy.decide(wsID: ws, userID: "usr_bench", action: action, context: ctx)
                decideTimes.append(Double(kilnMonotonicNanos() - t0) / 1000)
            }
            io.out("policy of \(n) rules; \(calls) evaluations (\(allowed) allowed)")
            io.out("evaluate (compiled, cached): " + percentiles(evalTimes))
            io.out("decision as a service makes it (cache + role read): " + percentiles(decideTimes))
            return 0
        } catch {
            io.err("kiln policy bench: \(error)")
            return 1
        }
    }
}
