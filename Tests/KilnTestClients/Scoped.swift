import Foundation
import Glibc

/// Something a test starts and must stop (and wait for) before it ends.
public protocol Stoppable: Sendable { func stop() async }

/// Runs `body` with `resource`, then stops it and waits, whether the body threw or not.
public func using<R: Stoppable, T>(_ resource: R, _ body: (R) async throws -> T) async throws -> T {
    do {
        let out = try await body(resource)
        await resource.stop()
        return out
    } catch {
        await resource.stop()
        throw error
    }
}
