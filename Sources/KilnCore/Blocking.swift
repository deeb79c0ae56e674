import Foundation
import Synchronization

/// Blocking work a request handler awaits (a DNS lookup, a scan of a project's files) on threads of
/// its own. The cooperative pool is only as wide as the cores, so a handler blocking it holds back
/// every other request; these threads are capped, and work beyond the cap waits its turn.
public enum Blocking {
    static let cap = 64

    private struct State {
        var running = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private static let state = Mutex(State())  // architecture: process-wide (one thread cap per process)

    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        await acquire()
        return try await withCheckedThrowingContinuation { c in
            Thread {
                let result = Result { try body() }
                release()
                c.resume(with: result)
            }.start()
        }
    }

    private static func acquire() async {
        let admitted = state.withLock { s -> Bool in
            guard s.running < cap else { return false }
            s.running += 1
            return true
        }
        if admitted { return }
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Bool in
                // A slot may have come free between the two locks.
                if s.running < cap {
                    s.running += 1
                    return true
                }
                s.waiting.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Hands the slot to the first waiter (it stays counted), or gives it back.
    private static func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.running -= 1
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}
