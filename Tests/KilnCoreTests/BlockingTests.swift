import Foundation
import Synchronization
import Testing

@testable import KilnCore

/// Blocking work on threads of its own: results and errors come back to the awaiting task, and no
/// more run at once than the cap, the rest waiting their turn rather than failing.
@Suite struct BlockingTests {
    struct Boom: Error {}

    final class Gauge: Sendable {
        let counts = Mutex((now: 0, most: 0))
        func enter() {
            counts.withLock {
                $0.now += 1
                $0.most = max($0.most, $0.now)
            }
        }
        func leave() { counts.withLock { $0.now -= 1 } }
        var most: Int { counts.withLock { $0.most } }
    }

    @Test func resultsErrorsAndTheCap() async throws {
        let gauge = Gauge()
        let n = Blocking.cap + 36
        let got = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for i in 0..<n {
                group.addTask {
                    let value = try await Blocking.run { () -> Int in
                        gauge.enter()
                        usleep(50_000)  // blocks its thread, as a DNS lookup would
                        gauge.leave()
                        return i * i
                    }
                    return (i, value)
                }
            }
            return try await group.reduce(into: [Int: Int]()) { $0[$1.0] = $1.1 }
        }
        #expect(got.count == n && got.allSatisfy { $0.value == $0.key * $0.key })
        #expect(gauge.most <= Blocking.cap)
        #expect(gauge.most > 1, "they do run side by side")
        await #expect(throws: Boom.self) { try await Blocking.run { () -> Int in throw Boom() } }
    }
}
