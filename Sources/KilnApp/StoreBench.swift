import Foundation
import KilnCore
import KilnStore

/// `kiln store-bench`: what the store costs, measured in this process (scripts/bench/store.sh puts
/// the figures beside pgbench's and wrk's).
///   - `SELECT 1` round trips on one PostgreSQL connection (the driver alone; pgbench runs the same);
///   - event appends through the event bus (what every agent event costs), one writer, on SQLite in
///     a scratch dir or on the PostgreSQL database given.
public enum StoreBench {
    public static func selectOne(url: String, seconds: Double) throws -> String {
        let config = try PostgresConfig(
            url: url, password: ProcessInfo.processInfo.environment["KILN_DATABASE_PASSWORD"])
        let conn = try PostgresConnection(config: config)
        defer { conn.close() }
        for _ in 0..<200 { _ = try conn.query("SELECT 1", []) }
        var samples: [Double] = []
        samples.reserveCapacity(200_000)
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try conn.query("SELECT 1", [])
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return "select1 " + summary(samples, seconds: seconds)
    }

    public static func eventAppends(url: String?, seconds: Double) async throws -> String {
        let dir = NSTemporaryDirectory() + "kiln-store-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db: Database
        if let url {
            let config = try PostgresConfig(
                url: url, password: ProcessInfo.processInfo.environment["KILN_DATABASE_PASSWORD"])
            db = try Database(postgres: config, connections: 4)
        } else {
            db = try Database(path: dir + "/kiln.db")
        }
        try db.migrate(EventBus.migrations)
        let bus = try EventBus(db: db)
        defer { bus.close() }
        let topic = "bench:\(UUID().uuidString)"
        var samples: [Double] = []
        let end = Date().addingTimeInterval(seconds)
        let data = #"{"type":"message.delta","text":"a token or two of a model's answer"}"#
        while Date() < end {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try await bus.publish(topic: topic, type: "message.delta", data: data)
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return "events \(db.kind.rawValue) " + summary(samples, seconds: seconds)
    }

    static func summary(_ samples: [Double], seconds: Double) -> String {
        let s = samples.sorted()
        func p(_ q: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * q))] }
        let mean = s.isEmpty ? 0 : s.reduce(0, +) / Double(s.count)
        return String(
            format: "%d ops, %.0f/s, mean %.3f ms, p50 %.3f ms, p99 %.3f ms", s.count, Double(s.count) / seconds,
            mean, p(0.5), p(0.99))
    }
}
