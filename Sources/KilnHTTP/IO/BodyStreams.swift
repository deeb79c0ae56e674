import Synchronization

/// A request body delivered in chunks while it arrives (routes with `streamBody`). The
/// connection stops reading the socket while more than `highWater` bytes wait here.
public final class RequestBodyStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]

    struct State {
        var chunks: [[UInt8]] = []
        var head = 0
        var bytes = 0
        var finished = false
        var error: (any Error)?
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
        var pausedProducer = false
    }

    let state = Mutex(State())
    let highWater: Int
    let onDrain: @Sendable () -> Void

    init(highWater: Int = 256 * 1024, onDrain: @escaping @Sendable () -> Void) {
        self.highWater = highWater
        self.onDrain = onDrain
    }

    /// A finished stream holding `bytes` (tests, internal use).
    public convenience init(bytes: [UInt8]) {
        self.init(onDrain: {})
        _ = push(bytes)
        finish()
    }

    /// Loop side: adds a chunk; false when the consumer is behind and reading should pause.
    func push(_ chunk: [UInt8]) -> Bool {
        state.withLock { s -> Bool in
            if let w = s.waiter {
                s.waiter = nil
                w.resume(returning: chunk)
                return true
            }
            s.chunks.append(chunk)
            s.bytes += chunk.count
            if s.bytes > highWater {
                s.pausedProducer = true
                return false
            }
            return true
        }
    }

    /// Loop side: ends the stream, with an error when the body was cut short or refused.
    func finish(error: (any Error)? = nil) {
        let w = state.withLock { s -> CheckedContinuation<[UInt8]?, any Error>? in
            s.finished = true
            s.error = error
            let w = s.waiter
            s.waiter = nil
            return w
        }
        if let w { if let error { w.resume(throwing: error) } else { w.resume(returning: nil) } }
    }

    var isFinished: Bool { state.withLock { $0.finished && $0.head >= $0.chunks.count } }

    public func next() async throws -> [UInt8]? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[UInt8]?, any Error>) in
            var resumeProducer = false
            state.withLock { s in
                if s.head < s.chunks.count {
                    let chunk = s.chunks[s.head]
                    s.head += 1
                    s.bytes -= chunk.count
                    if s.head == s.chunks.count {
                        s.chunks.removeAll(keepingCapacity: true)
                        s.head = 0
                    }
                    if s.pausedProducer && s.bytes <= s.highWaterHalf(highWater) {
                        s.pausedProducer = false
                        resumeProducer = true
                    }
                    c.resume(returning: chunk)
                } else if s.finished {
                    if let e = s.error { c.resume(throwing: e) } else { c.resume(returning: nil) }
                } else {
                    if s.pausedProducer {
                        s.pausedProducer = false
                        resumeProducer = true
                    }
                    s.waiter = c
                }
            }
            if resumeProducer { onDrain() }
        }
    }

    /// Reads the whole body; 413 beyond `limit`.
    public func collect(upTo limit: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try await next() {
            if out.count + chunk.count > limit { throw HTTPError(.payloadTooLarge, message: "Request body too large") }
            out.append(contentsOf: chunk)
        }
        return out
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: RequestBodyStream
        public mutating func next() async throws -> [UInt8]? { try await stream.next() }
    }
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}

extension RequestBodyStream.State {
    func highWaterHalf(_ hw: Int) -> Int { hw / 2 }
}

/// Writes a streamed response body through the connection's loop, waiting on back-pressure.
struct ConnectionBodyWriter: ResponseBodyWriter {
    let connection: Connection
    func write(_ bytes: [UInt8]) async throws {
        if bytes.isEmpty { return }
        try Task.checkCancellation()
        let conn = connection
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            conn.loop.execute {
                conn.streamWrite(bytes) { error in
                    if let error { c.resume(throwing: error) } else { c.resume() }
                }
            }
        }
    }

    func push(_ bytes: [UInt8], limit: Int) -> Bool {
        if bytes.isEmpty { return true }
        let conn = connection
        let n = bytes.count
        // The backlog counts pushed bytes until the connection takes them below its low-water mark.
        let after = conn.pushBacklog.add(n, ordering: .relaxed).newValue
        guard after <= limit, !conn.pushClosed.load(ordering: .relaxed) else {
            conn.pushBacklog.subtract(n, ordering: .relaxed)
            return false
        }
        conn.loop.execute {
            conn.streamWrite(bytes) { _ in conn.pushBacklog.subtract(n, ordering: .relaxed) }
        }
        return true
    }
}
