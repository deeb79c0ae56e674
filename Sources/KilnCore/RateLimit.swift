import Foundation
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
