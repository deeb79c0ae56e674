import Dispatch
import Foundation
import Synchronization

/// Connections to one server, opened on demand up to `maxConnections` and reused. A connection is
/// checked before it is handed out (no round trip: a server going away leaves something unread on
/// it) and dropped when broken; a new one is opened in its place, retrying for `connectTimeout`
/// while the server is starting up again.
public final class PostgresPool: Sendable {
    public let config: PostgresConfig
    public let maxConnections: Int
    private let idle = Mutex<[PostgresConnection]>([])
    private let slots: DispatchSemaphore
    private let counters = Mutex<Stats>(Stats())

    public struct Stats: Sendable {
        public var open = 0
        public var busy = 0
        public var opened = 0
        /// Connections dropped because they were found broken (server restart, network).
        public var dropped = 0
    }

    public init(config: PostgresConfig, maxConnections: Int = 8) {
        self.config = config
        self.maxConnections = max(1, maxConnections)
        slots = DispatchSemaphore(value: self.maxConnections)
    }

    deinit {
        for c in idle.withLock({ $0 }) { c.close() }
    }

    public var stats: Stats { counters.withLock { $0 } }

    /// Runs `body` with a connection of the pool. A connection left inside a transaction (the body
    /// threw between BEGIN and COMMIT) is rolled back before it is reused.
    @discardableResult
    public func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        guard slots.wait(timeout: .now() + 30) == .success else {
            throw PostgresError.connection("all \(maxConnections) database connections stayed busy for 30 s")
        }
        defer { slots.signal() }
        let conn = try checkOut()
        counters.withLock { $0.busy += 1 }
        defer {
            counters.withLock { $0.busy -= 1 }
            checkIn(conn)
        }
        return try body(conn)
    }

    private func checkOut() throws -> PostgresConnection {
        while let c = idle.withLock({ $0.popLast() }) {
            if c.looksHealthy { return c }
            c.close()
            counters.withLock {
                $0.open -= 1
                $0.dropped += 1
            }
        }
        let conn = try PostgresPool.connect(config)
        counters.withLock {
            $0.open += 1
            $0.opened += 1
        }
        return conn
    }

    private func checkIn(_ conn: PostgresConnection) {
        if !conn.isBroken && conn.transactionStatus != UInt8(ascii: "I") {
            _ = try? conn.simpleQuery("ROLLBACK", timeout: 5)
        }
        if conn.isBroken || conn.transactionStatus != UInt8(ascii: "I") {
            conn.close()
            counters.withLock {
                $0.open -= 1
                $0.dropped += 1
            }
            return
        }
        idle.withLock { $0.append(conn) }
    }

    /// Opens a connection, retrying a server that is not accepting yet (starting, restarting,
    /// "the database system is starting up") until `connectTimeout` has passed. A refused login or
    /// a bad certificate is not retried.
    public static func connect(_ config: PostgresConfig) throws -> PostgresConnection {
        let deadline = Date().addingTimeInterval(config.connectTimeout)
        var delay = 0.05
        while true {
            do {
                return try PostgresConnection(config: config)
            } catch let e as PostgresError {
                let retryable: Bool
                switch e {
                case .connection(let m): retryable = !m.contains("certificate") && !m.contains("TLS")
                case .server(let s): retryable = s.sqlstate == "57P03"
                default: retryable = false
                }
                guard retryable, Date().addingTimeInterval(delay) < deadline else { throw e }
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 1)
            }
        }
    }
}

/// A connection of its own that LISTENs on channels and hands each NOTIFY to `onNotify`, on a
/// thread of its own. When the connection is lost it reconnects (with back-off), LISTENs again
/// and calls `onReconnect`: notifications sent meanwhile are gone, so the owner catches up from
/// its table there.
public final class PostgresListener: Sendable {
    private let config: PostgresConfig
    private let channels: [String]
    private let onNotify: @Sendable (PostgresNotification) -> Void
    private let onReconnect: @Sendable () -> Void
    private let stopped = Atomic<Bool>(false)
    private let reconnects = Atomic<Int>(0)

    public init(
        config: PostgresConfig, channels: [String], onNotify: @escaping @Sendable (PostgresNotification) -> Void,
        onReconnect: @escaping @Sendable () -> Void
    ) {
        self.config = config
        self.channels = channels
        self.onNotify = onNotify
        self.onReconnect = onReconnect
    }

    /// How many times the connection was made again after a loss.
    public var reconnectCount: Int { reconnects.load(ordering: .relaxed) }

    /// Connects and LISTENs once (so a caller knows notifications flow from here on), then
    /// follows on a thread until `stop()`.
    public func start() throws {
        let first = try listen()
        let thread = Thread { [self] in run(first) }
        thread.name = "kiln.pg.listen"
        thread.start()
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }

    private func listen() throws -> PostgresConnection {
        let conn = try PostgresPool.connect(config)
        for c in channels { try conn.simpleQuery("LISTEN " + PostgresListener.quoted(c)) }
        return conn
    }

    private func run(_ first: PostgresConnection) {
        var conn: PostgresConnection? = first
        var delay = 0.1
        while !stopped.load(ordering: .relaxed) {
            guard let c = conn else {
                Thread.sleep(forTimeInterval: delay)
                if let c = try? listen() {
                    conn = c
                    delay = 0.1
                    reconnects.add(1, ordering: .relaxed)
                    onReconnect()
                } else {
                    delay = min(delay * 2, 2)
                }
                continue
            }
            do {
                for n in try c.notifications(timeout: 0.25) { onNotify(n) }
            } catch {
                c.close()
                conn = nil
            }
        }
        conn?.close()
    }

    /// A channel name as a quoted identifier.
    static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
}
