import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// The Chrome DevTools Protocol over `--remote-debugging-pipe`: Kiln writes commands to the browser's
/// fd 3 and reads answers and events from its fd 4, each message JSON ended by a NUL byte. No port is
/// opened, so nothing else on the machine can drive the browser.
final class CDPConnection: Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// An event: the session it belongs to (nil: the browser's), its method and params.
    typealias Event = (session: String?, method: String, params: [String: JSONValue])

    let toBrowser: Int32
    let fromBrowser: Int32
    let events: AsyncStream<Event>
    private let eventInput: AsyncStream<Event>.Continuation
    private let state = Mutex<(next: Int, pending: [Int: CheckedContinuation<JSONValue, any Error>], closed: Bool)>(
        (0, [:], false))
    private let writeLock = Mutex(())
    /// The largest message accepted (a full-page screenshot of a long page is big, but not this big).
    static let maxMessage = 64 << 20

    init(toBrowser: Int32, fromBrowser: Int32) {
        self.toBrowser = toBrowser
        self.fromBrowser = fromBrowser
        (events, eventInput) = AsyncStream<Event>.makeStream(bufferingPolicy: .unbounded)
        let reader = Thread { [self] in self.readLoop() }
        reader.name = "kiln-cdp"
        reader.start()
    }

    /// Sends a command and waits for its answer (the error the browser gave, as `Failure`).
    func send(_ method: String, _ params: [String: JSONValue] = [:], session: String? = nil) async throws -> JSONValue {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<JSONValue, any Error>) in
            let id = state.withLock { s -> Int? in
                guard !s.closed else { return nil }
                s.next += 1
                s.pending[s.next] = c
                return s.next
            }
            guard let id else {
                c.resume(throwing: Failure(description: "the browser is gone"))
                return
            }
            var message: [String: JSONValue] = ["id": .int(id), "method": .string(method), "params": .object(params)]
            if let session { message["sessionId"] = .string(session) }
            var bytes = Array(JSONValue.object(message).jsonText.utf8)
            bytes.append(0)
            let ok = writeLock.withLock { _ in Self.writeAll(toBrowser, bytes) }
            if !ok, let c = state.withLock({ $0.pending.removeValue(forKey: id) }) {
                c.resume(throwing: Failure(description: "the browser is gone"))
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    private func readLoop() {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fromBrowser, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var start = buffer.count
            buffer.append(contentsOf: chunk[0..<n])
            var consumed = 0
            while let end = buffer[start...].firstIndex(of: 0) {
                dispatch(Array(buffer[consumed..<end]))
                consumed = end + 1
                start = consumed
            }
            if consumed > 0 { buffer.removeFirst(consumed) }
            if buffer.count > Self.maxMessage { break }
        }
        close()
    }

    private func dispatch(_ bytes: [UInt8]) {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)), let o = value.objectValue
        else { return }
        if let id = o["id"]?.intValue {
            guard let c = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
            if let error = o["error"]?.objectValue {
                c.resume(throwing: Failure(description: error["message"]?.stringValue ?? "CDP error"))
            } else {
                c.resume(returning: o["result"] ?? .object([:]))
            }
        } else if let method = o["method"]?.stringValue {
            eventInput.yield((o["sessionId"]?.stringValue, method, o["params"]?.objectValue ?? [:]))
        }
    }

    /// Whether the browser went away (every command fails from now on).
    var isClosed: Bool { state.withLock { $0.closed } }

    /// Fails every waiting command and ends the event stream (the browser went away or was killed).
    func close() {
        let pending = state.withLock { s -> [CheckedContinuation<JSONValue, any Error>] in
            s.closed = true
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        for c in pending { c.resume(throwing: Failure(description: "the browser is gone")) }
        eventInput.finish()
    }
}
