import COpenSSL
import Foundation
import Synchronization

/// Limits for one WebSocket connection.
public struct WebSocketSettings: Sendable {
    /// Largest message (after reassembly) and frame; beyond it the connection closes with 1009.
    public var maxMessageSize: Int
    /// Inbound messages buffered for a slow handler before the socket stops being read.
    public var maxQueuedBytes: Int
    public init(maxMessageSize: Int = 16 * 1024 * 1024 + 1024, maxQueuedBytes: Int = 1 << 20) {
        self.maxMessageSize = maxMessageSize
        self.maxQueuedBytes = maxQueuedBytes
    }
}

/// One upgraded WebSocket connection, as its handler sees it: read messages, send messages, close.
public final class WebSocket: Sendable {
    struct Inbound {
        var items: [WebSocketMessage] = []
        var head = 0
        var bytes = 0
        var finished = false
        var waiter: CheckedContinuation<WebSocketMessage?, Never>?
        var pausedProducer = false
    }

    let connection: Connection
    let settings: WebSocketSettings
    let inbound = Mutex(Inbound())
    /// The close code the peer sent, once it has.
    let peerCloseCode = Mutex<UInt16?>(nil)

    init(connection: Connection, settings: WebSocketSettings) {
        self.connection = connection
        self.settings = settings
    }

    // MARK: Handler side

    /// The next message, or nil once the connection closed.
    public func receive() async -> WebSocketMessage? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<WebSocketMessage?, Never>) in
                var resume = false
                inbound.withLock { s in
                    if s.head < s.items.count {
                        let m = s.items[s.head]
                        s.head += 1
                        s.bytes -= WebSocket.size(m)
                        if s.head == s.items.count {
                            s.items.removeAll(keepingCapacity: true)
                            s.head = 0
                        }
                        if s.pausedProducer && s.bytes <= settings.maxQueuedBytes / 2 {
                            s.pausedProducer = false
                            resume = true
                        }
                        c.resume(returning: m)
                    } else if s.finished {
                        c.resume(returning: nil)
                    } else {
                        if s.pausedProducer {
                            s.pausedProducer = false
                            resume = true
                        }
                        s.waiter = c
                    }
                }
                if resume {
                    let conn = connection
                    conn.loop.execute { conn.wsResumeReading() }
                }
            }
        } onCancel: {
            let w = inbound.withLock { s -> CheckedContinuation<WebSocketMessage?, Never>? in
                let w = s.waiter
                s.waiter = nil
                return w
            }
            w?.resume(returning: nil)
        }
    }

    /// Messages until the connection closes.
    public var messages: Messages { Messages(socket: self) }

    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = WebSocketMessage
        let socket: WebSocket
        public struct AsyncIterator: AsyncIteratorProtocol {
            let socket: WebSocket
            public mutating func next() async -> WebSocketMessage? { await socket.receive() }
        }
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(socket: socket) }
    }

    public func send(_ message: WebSocketMessage) async throws {
        switch message {
        case .text(let s):
            var s = s
            try await sendFrame(s.withUTF8 { encodeWebSocketFrame(opcode: .text, payload: UnsafeRawBufferPointer($0)) })
        case .binary(let b):
            try await sendFrame(encodeWebSocketFrame(opcode: .binary, payload: b))
        }
    }

    public func send(text: String) async throws { try await send(.text(text)) }
    public func send(binary: [UInt8]) async throws { try await send(.binary(binary)) }

    public func ping(_ payload: [UInt8] = []) async throws {
        try await sendFrame(encodeWebSocketFrame(opcode: .ping, payload: Array(payload.prefix(125))))
    }

    /// Queues a binary message without waiting, for producers that are not tasks (a terminal's reader
    /// thread): no task is woken per message, and messages go out in the order pushed. False when the
    /// connection has closed, or when more than `limit` bytes pushed earlier are still unsent; the
    /// caller decides whether to wait (`pushBacklog`) or give up.
    public func push(binary bytes: UnsafeRawBufferPointer, limit: Int) -> Bool {
        pushFrame(encodeWebSocketFrame(opcode: .binary, payload: bytes), limit: limit)
    }

    /// A text message, queued like `push(binary:limit:)`.
    public func push(text: String, limit: Int) -> Bool {
        var s = text
        return pushFrame(
            s.withUTF8 { encodeWebSocketFrame(opcode: .text, payload: UnsafeRawBufferPointer($0)) }, limit: limit)
    }

    /// Bytes pushed that the connection has not yet written down to its low-water mark.
    public var pushBacklog: Int { connection.pushBacklog.load(ordering: .relaxed) }

    /// True once the connection has closed (pushes are refused from then on).
    public var isClosed: Bool { connection.pushClosed.load(ordering: .relaxed) }

    private func pushFrame(_ frame: [UInt8], limit: Int) -> Bool {
        let conn = connection
        let n = frame.count
        let after = conn.pushBacklog.add(n, ordering: .relaxed).newValue
        guard after <= limit, !conn.pushClosed.load(ordering: .relaxed) else {
            conn.pushBacklog.subtract(n, ordering: .relaxed)
            return false
        }
        conn.loop.execute { conn.wsWrite(frame) { _ in conn.pushBacklog.subtract(n, ordering: .relaxed) } }
        return true
    }

    /// Starts the close handshake; the connection closes when the peer answers (or after 5 s).
    public func close(code: UInt16 = WebSocketCloseCode.normal, reason: String = "") {
        let conn = connection
        conn.loop.execute { conn.wsInitiateClose(code: code, reason: reason) }
    }

    /// The close code the peer sent, if it closed.
    public var closeCode: UInt16? { peerCloseCode.withLock { $0 } }

    func sendFrame(_ frame: [UInt8]) async throws {
        let conn = connection
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            conn.loop.execute {
                conn.wsWrite(frame) { error in
                    if let error { c.resume(throwing: error) } else { c.resume() }
                }
            }
        }
    }

    // MARK: Loop side

    static func size(_ m: WebSocketMessage) -> Int {
        switch m {
        case .text(let s): s.utf8.count
        case .binary(let b): b.count
        }
    }

    /// Queues a message for the handler; false when the queue is full and reading should pause.
    func enqueue(_ m: WebSocketMessage) -> Bool {
        inbound.withLock { s -> Bool in
            if let w = s.waiter {
                s.waiter = nil
                w.resume(returning: m)
                return true
            }
            s.items.append(m)
            s.bytes += WebSocket.size(m)
            if s.bytes > settings.maxQueuedBytes {
                s.pausedProducer = true
                return false
            }
            return true
        }
    }

    func finishInbound() {
        let w = inbound.withLock { s -> CheckedContinuation<WebSocketMessage?, Never>? in
            s.finished = true
            let w = s.waiter
            s.waiter = nil
            return w
        }
        w?.resume(returning: nil)
    }

    // MARK: Handshake

    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Validates the upgrade request (RFC 6455 §4.2.1) and answers 101 handing the connection to `handler`.
    /// `Origin` is in `request.headers` for the caller to check before calling this.
    public static func upgrade(
        _ request: Request, settings: WebSocketSettings = WebSocketSettings(),
        handler: @escaping @Sendable (WebSocket) async throws -> Void
    ) throws -> Response {
        guard request.method == .GET, request.version == .http1_1 else {
            throw HTTPError.badRequest("WebSocket upgrade needs GET over HTTP/1.1")
        }
        guard request.headers.hasToken("Upgrade", "websocket"), request.headers.hasToken("Connection", "upgrade") else {
            throw HTTPError(
                HTTPStatus(426), code: "validation_failed", message: "This endpoint requires a WebSocket upgrade",
                headers: ["Upgrade": "websocket", "Connection": "Upgrade"])
        }
        guard request.headers.values("Sec-WebSocket-Version") == ["13"] else {
            throw HTTPError(
                HTTPStatus(426), code: "validation_failed", message: "Sec-WebSocket-Version must be 13",
                headers: ["Sec-WebSocket-Version": "13"])
        }
        let keys = request.headers.values("Sec-WebSocket-Key")
        guard keys.count == 1, let raw = Data(base64Encoded: keys[0]), raw.count == 16 else {
            throw HTTPError.badRequest("Invalid Sec-WebSocket-Key", field: "Sec-WebSocket-Key")
        }
        let accept = Data(sha1(Array((keys[0] + guid).utf8))).base64EncodedString()
        return Response(
            status: .switchingProtocols,
            headers: ["Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept],
            body: .webSocket(settings, handler))
    }

    static func sha1(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 20)
        var len: UInt32 = 0
        _ = bytes.withUnsafeBytes { b in
            out.withUnsafeMutableBufferPointer { o in
                EVP_Digest(b.baseAddress, b.count, o.baseAddress, &len, EVP_sha1(), nil)
            }
        }
        return out
    }
}
