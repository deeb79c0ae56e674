import Foundation
import KilnStore
import Synchronization

/// Fixed-window counters: at most `limit` hits per key per `window` seconds (login attempts…).
public final class WindowLimiter: Sendable {
    struct Window {
        var start: Double
        var count: Int
    }
    public let limit: Int
    public let window: Double
    private let windows = Mutex<[String: Window]>([:])

    public init(limit: Int, window: Double) {
        self.limit = limit
        self.window = window
    }

    /// Counts a hit; nil when allowed, else the seconds until the window resets.
    public func hit(_ key: String, now: Double) -> Int? {
        windows.withLock { w in
            if w.count > 50_000 { w = w.filter { now - $0.value.start < window } }
            var cur = w[key] ?? Window(start: now, count: 0)
            if now - cur.start >= window { cur = Window(start: now, count: 0) }
            if cur.count >= limit { return max(1, Int((cur.start + window - now).rounded(.up))) }
            cur.count += 1
            w[key] = cur
            return nil
        }
    }

    /// Whether the key is over its limit now, without counting.
    public func isLimited(_ key: String, now: Double) -> Int? {
        windows.withLock { w in
            guard let cur = w[key], now - cur.start < window, cur.count >= limit else { return nil }
            return max(1, Int((cur.start + window - now).rounded(.up)))
        }
    }

    public func reset(_ key: String) { _ = windows.withLock { $0.removeValue(forKey: key) } }
}

/// A token bucket per principal for all authenticated routes; feeds the `X-RateLimit-*` headers.
public final class TokenBuckets: Sendable {
    struct Bucket {
        var tokens: Double
        var updated: Double
    }
    public let capacity: Double
    public let refillPerSecond: Double
    private let buckets = Mutex<[String: Bucket]>([:])

    public init(capacity: Int, refillPerSecond: Double) {
        self.capacity = Double(capacity)
        self.refillPerSecond = refillPerSecond
    }

    public struct Decision: Sendable {
        public let allowed: Bool
        public let limit: Int
        public let remaining: Int
        public let resetSeconds: Int
    }

    public func take(_ key: String, now: Double) -> Decision {
        buckets.withLock { b in
            if b.count > 50_000 { b = b.filter { now - $0.value.updated < 3600 } }
            var cur = b[key] ?? Bucket(tokens: capacity, updated: now)
            cur.tokens = min(capacity, cur.tokens + (now - cur.updated) * refillPerSecond)
            cur.updated = now
            let allowed = cur.tokens >= 1
            if allowed { cur.tokens -= 1 }
            b[key] = cur
            let reset = Int(((capacity - cur.tokens) / refillPerSecond).rounded(.up))
            return Decision(
                allowed: allowed, limit: Int(capacity), remaining: Int(cur.tokens.rounded(.down)),
                resetSeconds: max(allowed ? reset : 1, 0))
        }
    }
}

/// `WindowLimiter` counted in the database when several instances share it (PostgreSQL), so a
/// client spreading its attempts over instances gets no more of them; on SQLite (one process) the
/// in-memory windows do, at no cost.
public final class SharedWindowLimiter: Sendable {
    public static let migrations = [
        Migration(
            module: "core.rate", version: 1, name: "rate windows shared by instances",
            sql: """
                CREATE TABLE rate_windows (
                    key TEXT PRIMARY KEY,
                    started_at INTEGER NOT NULL,
                    count INTEGER NOT NULL
                );
                CREATE INDEX rate_windows_by_start ON rate_windows (started_at);
                """)
    ]

    let local: WindowLimiter
    let db: Database
    public var limit: Int { local.limit }
    public var window: Double { local.window }

    public init(limit: Int, window: Double, db: Database) {
        local = WindowLimiter(limit: limit, window: window)
        self.db = db
    }

    /// Counts a hit; nil when allowed, else the seconds until the window resets.
    public func hit(_ key: String, now: Date) async throws -> Int? {
        guard db.kind == .postgres else { return local.hit(key, now: now.timeIntervalSince1970) }
        let (limit, window) = (self.limit, self.window)
        return try await db.write { tx -> Int? in
            // Now and then, windows long over go (a window's rows live at most twice its length).
            if Int.random(in: 0..<200) == 0 {
                try tx.run("DELETE FROM rate_windows WHERE started_at < ?", now.addingTimeInterval(-2 * window))
            }
            if let row = try tx.first("SELECT started_at, count FROM rate_windows WHERE key = ?", key),
                let start = row.date("started_at"), now.timeIntervalSince(start) < window
            {
                guard (row.int("count") ?? 0) < limit else {
                    return max(1, Int((start.addingTimeInterval(window).timeIntervalSince(now)).rounded(.up)))
                }
                try tx.run("UPDATE rate_windows SET count = count + 1 WHERE key = ?", key)
                return nil
            }
            try tx.run(
                """
                INSERT INTO rate_windows (key, started_at, count) VALUES (?, ?, 1)
                ON CONFLICT (key) DO UPDATE SET started_at = excluded.started_at, count = 1
                """, key, now)
            return nil
        }
    }
}

/// Starts on their way, counted against a limit on things running (jobs per account, terminals per
/// account, agent runs per workspace). A start awaits the store and a spawn between its check and
/// the moment it shows among the running ones; counted only there, requests arriving together would
/// all pass the check. Here the check and a reservation are one step, and the reservation ends
/// (under the same lock) when the started thing is where `running` counts it, or when the start fails.
public final class StartingCounts: Sendable {
    private let starting = Mutex<[String: Int]>([:])

    public init() {}

    /// Reserves a start for `key` when `running()` plus the starts on their way stay below `limit`;
    /// otherwise returns that sum (for the refusal's message). `running` is read under this lock.
    public func reserve(_ key: String, limit: Int, running: () -> Int) -> Int? {
        starting.withLock { s in
            let total = running() + s[key, default: 0]
            guard total < limit else { return total }
            s[key, default: 0] += 1
            return nil
        }
    }

    /// Ends a reservation; `admit` (optional) makes the started thing count as running in the same step.
    public func finish(_ key: String, admit: () -> Void = {}) {
        starting.withLock { s in
            admit()
            let n = s[key, default: 1] - 1
            s[key] = n > 0 ? n : nil
        }
    }
}
