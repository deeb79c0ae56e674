import Foundation
import KilnHTTP
import Synchronization

/// Background work: periodic jobs (purges, cleanups) and one-off tasks, all cancelled and awaited
/// on shutdown. Failures are logged, never crash the server.
public final class JobRunner: Sendable {
    private let tasks = Mutex<[String: Task<Void, Never>]>([:])
    private let counter = Atomic<Int>(0)

    public init() {}

    /// Runs `body` every `interval` seconds (first run after one interval) until shutdown.
    public func every(_ interval: Double, name: String, _ body: @escaping @Sendable () async throws -> Void) {
        let t = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                if Task.isCancelled { break }
                do { try await body() } catch {
                    ServerLog.error(
                        "background job failed", ["job": .string(name), "error": .string(String(describing: error))])
                }
            }
        }
        tasks.withLock { $0["every:\(name)"] = t }
    }

    /// Starts a one-off task tracked until it ends.
    public func run(_ name: String, _ body: @escaping @Sendable () async throws -> Void) {
        let key = "once:\(name):\(counter.add(1, ordering: .relaxed).newValue)"
        let t = Task { [weak self] in
            do { try await body() } catch {
                ServerLog.error(
                    "background task failed", ["job": .string(name), "error": .string(String(describing: error))])
            }
            _ = self?.tasks.withLock { $0.removeValue(forKey: key) }
        }
        tasks.withLock { $0[key] = t }
    }

    public var activeCount: Int { tasks.withLock { $0.count } }

    /// Cancels everything and waits for it to finish.
    public func shutdown() async {
        let all = tasks.withLock { t -> [Task<Void, Never>] in
            let v = Array(t.values)
            t.removeAll()
            return v
        }
        for t in all { t.cancel() }
        for t in all { await t.value }
    }
}
