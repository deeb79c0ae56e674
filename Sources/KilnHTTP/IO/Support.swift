import CShims
import Foundation
import Synchronization

/// Request ids: `req_` + a per-process random prefix + a counter (unique, cheap, not secret).
public enum RequestID {
    private static let counter = Atomic<UInt64>(0)  // architecture: process-wide (ids are unique per process)
    private static let prefix: String = {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        var rng = SystemRandomNumberGenerator()
        return String((0..<8).map { _ in alphabet[Int(rng.next() % 36)] })
    }()

    public static func make() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        return "req_" + prefix + String(n, radix: 36)
    }

    /// Accepts a client-sent id only when it is short and made of safe characters.
    public static func isWellFormed(_ s: String) -> Bool {
        let u = s.utf8
        return u.count >= 8 && u.count <= 128
            && u.allSatisfy {
                ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95
                    || $0 == 46
            }
    }
}

/// One JSON line per event on stderr; the app may redirect it.
public enum ServerLog {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info, warn, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var name: String { ["debug", "info", "warn", "error"][rawValue] }
    }

    // architecture: process-wide (one log per process: its level and where it goes)
    private static let threshold = Atomic<Int>(Level.info.rawValue)
    private static let sink = Mutex<(@Sendable (String) -> Void)?>(nil)  // architecture: process-wide

    public static func setLevel(_ l: Level) { threshold.store(l.rawValue, ordering: .relaxed) }
    /// Routes log lines elsewhere (tests capture them); nil restores stderr.
    public static func setSink(_ s: (@Sendable (String) -> Void)?) { sink.withLock { $0 = s } }
    public static func isEnabled(_ l: Level) -> Bool { l.rawValue >= threshold.load(ordering: .relaxed) }

    public static func log(_ level: Level, _ message: String, _ fields: [String: JSONValue]) {
        guard isEnabled(level) else { return }
        var obj = fields
        obj["time"] = .string(HTTPDate.iso8601(Date()))
        obj["level"] = .string(level.name)
        obj["msg"] = .string(message)
        let line = JSONValue.object(obj).jsonText
        if let s = sink.withLock({ $0 }) {
            s(line)
            return
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    public static func debug(_ m: String, _ f: [String: JSONValue] = [:]) { log(.debug, m, f) }
    public static func info(_ m: String, _ f: [String: JSONValue] = [:]) { log(.info, m, f) }
    public static func warn(_ m: String, _ f: [String: JSONValue] = [:]) { log(.warn, m, f) }
    public static func error(_ m: String, _ f: [String: JSONValue] = [:]) { log(.error, m, f) }
}

/// Live engine figures for /metrics.
public final class ServerStats: Sendable {
    public let openConnections = Atomic<Int>(0)
    public let webSocketConnections = Atomic<Int>(0)
    public let streamingResponses = Atomic<Int>(0)
    public let inFlightRequests = Atomic<Int>(0)
    public let acceptedConnections = Atomic<Int>(0)
    public let rejectedConnections = Atomic<Int>(0)
    public let protocolErrors = Atomic<Int>(0)
    public init() {}
}

@inline(__always) func monotonicNanos() -> UInt64 { kiln_monotonic_ns() }

/// Monotonic nanoseconds (the clock request start times use).
public func kilnMonotonicNanos() -> UInt64 { kiln_monotonic_ns() }

/// This process's resident set size in bytes.
public func kiln_rss_bytes_public() -> Int { Int(kiln_rss_bytes()) }
