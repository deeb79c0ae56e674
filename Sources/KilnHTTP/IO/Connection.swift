import COpenSSL
import CShims
import Foundation
import Synchronization

/// One client connection. Lives on its event loop and is only touched there (other threads
/// reach it through `loop.execute`). It parses requests, runs one handler at a time (pipelined
/// requests wait in order), writes responses with back-pressure, and switches to WebSocket
/// framing after an upgrade.
final class Connection: @unchecked Sendable {
    let fd: Int32
    unowned let loop: EventLoop
    let remoteAddress: String
    var ssl: OpaquePointer?
    var handshaking = false

    // Inbound bytes not yet consumed: inbound[inStart...].
    var inbound: [UInt8] = []
    var inStart = 0
    /// The socket may hold unread bytes (edge-triggered epoll: read until EAGAIN).
    var readable = false
    var closed = false
    /// `closed` for threads outside the loop (bytes pushed to a stream are dropped once it is set).
    let pushClosed = Atomic<Bool>(false)
    /// Bytes pushed from other threads (fan-out) that the loop has not yet taken below its low-water mark.
    let pushBacklog = Atomic<Int>(0)
    var peerClosed = false
    var lingering = false
    var lingerDeadline: UInt64 = 0

    // Outbound bytes not yet written: outbound[outIndex...].
    var outbound: [UInt8] = []
    var outIndex = 0
    var closeAfterFlush = false
    var waiters: [((any Error)?) -> Void] = []

    // The request being handled.
    var inFlight = false
    var keepAlive = true
    var responseMethod = HTTPMethod.GET
    var responseVersion = HTTPVersion.http1_1
    var task: Task<Void, Never>?
    var bodyReader: BodyReader?
    var bodyStream: RequestBodyStream?
    var streaming = false
    var chunkedStream = false
    var servedRequests = 0
    var processing = false

    // Timers (monotonic ns).
    let acceptedAt: UInt64
    var headStartedAt: UInt64 = 0
    /// When the body being read began (its total deadline counts from here).
    var bodyStartedAt: UInt64 = 0
    var lastActivity: UInt64

    // WebSocket mode.
    var webSocket: WebSocket?
    var wsDecoder = WebSocketFrameDecoder(maxFrameSize: 0)
    var wsMachine = WebSocketStateMachine(maxMessageSize: 0)
    var wsCloseSent = false
    var wsCloseDeadline: UInt64 = 0
    var wsPaused = false
    /// A protocol failure waiting for the handler to finish the messages queued before it.
    var wsPendingFailure: (code: UInt16, reason: String)?
    /// Fail-fast UTF-8 check of a text frame still arriving: bytes checked so far and the validator.
    var wsPartialChecked = 0
    var wsPartialValidator = UTF8Validator()

    var server: HTTPServer { loop.server }
    var config: ServerConfiguration { loop.server.configuration }

    struct BodyReader {
        var head: RequestHead
        var parts: RequestTarget.Parts
        var route: RouteInfo?
        var params: [String: String]
        var limit: Int
        var remaining: Int
        var chunked: ChunkedDecoder?
        var body: [UInt8] = []
        var streamed: Bool
    }

    init(fd: Int32, loop: EventLoop, remoteAddress: String, tls: TLSContext?) {
        self.fd = fd
        self.loop = loop
        self.remoteAddress = remoteAddress
        let now = monotonicNanos()
        acceptedAt = now
        lastActivity = now
        if let tls {
            ssl = SSL_new(tls.ctx)
            if let ssl {
                SSL_set_fd(ssl, fd)
                SSL_set_accept_state(ssl)
                _ = kiln_ssl_set_mode(ssl, kiln_ssl_partial_write_modes())
                handshaking = true
            }
        }
    }

    deinit { if let ssl { SSL_free(ssl) } }

    var pendingOut: Int { outbound.count - outIndex }
    var unconsumed: Int { inbound.count - inStart }

    // MARK: Events

    func onReadable() {
        readable = true
        if handshaking {
            continueHandshake()
            return
        }
        readLoop()
    }

    func onWritable() {
        if handshaking {
            continueHandshake()
            return
        }
        flush()
    }

    func onHangup() { forceClose() }

    func continueHandshake() {
        guard let ssl, !closed else { return }
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            handshaking = false
            lastActivity = monotonicNanos()
            readLoop()
            flush()
            return
        }
        let err = SSL_get_error(ssl, r)
        if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { return }
        ERR_clear_error()
        forceClose()
    }

    /// Whether to stop reading the socket for now (the rest stays in the kernel: back-pressure).
    var readPaused: Bool {
        if lingering { return false }
        if webSocket != nil { return wsPaused || wsPendingFailure != nil }
        if let r = bodyReader, r.streamed, bodyStream.map({ $0.state.withLock { $0.pausedProducer } }) ?? false {
            return true
        }
        return unconsumed >= 128 * 1024 || pendingOut > config.writeHighWater
    }

    func readLoop() {
        while readable && !closed {
            if readPaused { return }
            let n = transportRead(loop.readBuffer)
            if n > 0 {
                lastActivity = monotonicNanos()
                if lingering { continue }
                if unconsumed == 0 { headStartedAt = lastActivity }
                if inStart > 0 && inStart == inbound.count {
                    inbound.removeAll(keepingCapacity: true)
                    inStart = 0
                } else if inStart > 64 * 1024 && inStart > inbound.count / 2 {
                    inbound.removeFirst(inStart)
                    inStart = 0
                }
                inbound.append(contentsOf: UnsafeRawBufferPointer(rebasing: loop.readBuffer[0..<n]))
                process()
            } else if n == 0 {
                readable = false
                peerClosed = true
                onPeerClosed()
                return
            } else if n == -Int(EAGAIN) {
                readable = false
                return
            } else {
                forceClose()
                return
            }
        }
    }

    func onPeerClosed() {
        if lingering {
            finalClose()
            return
        }
        if webSocket != nil {
            forceClose()
            return
        }
        keepAlive = false
        if streaming || bodyReader != nil {
            forceClose()
            return
        }
        if !inFlight {
            process()
            if !inFlight && !closed && pendingOut == 0 { finalClose() }
        }
        // A buffered request in flight: answer it, then close.
    }

    // MARK: HTTP request processing

    func process() {
        if processing || closed || lingering { return }
        processing = true
        defer { processing = false }
        if webSocket != nil {
            wsProcess()
            return
        }
        while !closed && !closeAfterFlush {
            if bodyReader != nil {
                if unconsumed == 0 { return }
                if !feedBody() { return }
                continue
            }
            if inFlight || unconsumed == 0 || pendingOut > config.writeHighWater { return }
            let result = inbound.withUnsafeBufferPointer { buf in
                parseRequestHead(UnsafeBufferPointer(rebasing: buf[inStart...]), limits: config.parserLimits)
            }
            switch result {
            case .needMore:
                return
            case .failed(let f):
                fail(f.status, f.message)
                return
            case .complete(let head, let consumed):
                consume(consumed)
                startRequest(head)
            }
        }
    }

    func consume(_ n: Int) {
        inStart += n
        if inStart >= inbound.count {
            if inbound.capacity > 64 * 1024 { inbound = [] } else { inbound.removeAll(keepingCapacity: true) }
            inStart = 0
        }
    }

    func startRequest(_ head: RequestHead) {
        let parts: RequestTarget.Parts
        do { parts = try RequestTarget.parse(head.target) } catch {
            fail(error.status, error.message)
            return
        }
        if parts.path == "*" && head.method != .OPTIONS {
            fail(.badRequest, "Asterisk-form is only valid for OPTIONS")
            return
        }
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host, and a Host is a valid authority.
        let hosts = head.headers.values("Host")
        if head.version == .http1_1 ? hosts.count != 1 : hosts.count > 1 {
            fail(.badRequest, "An HTTP/1.1 request needs exactly one Host header")
            return
        }
        if let h = hosts.first, !Connection.isValidHost(h) {
            fail(.badRequest, "The Host header is not a valid host")
            return
        }
        let (route, params) = server.responder.resolve(head.method, parts.segments)
        // A body sent where no route takes it is answered at once, without reading it.
        if head.framing != .none && (route == nil || route?.automatic != nil) && head.method != .GET
            && head.method != .HEAD
        {
            keepAlive = false
            responseMethod = head.method
            responseVersion = head.version
            dispatch(head, parts, route, params, body: .buffer([]))
            return
        }
        let limit = route?.metadata.bodyLimit ?? config.maxBodySize
        keepAlive = head.keepAlive && !loop.draining
        responseMethod = head.method
        responseVersion = head.version
        let streamed = route?.metadata.streamBody ?? false
        switch head.framing {
        case .none:
            dispatch(head, parts, route, params, body: .buffer([]))
        case .length(let n):
            if n > limit {
                fail(.payloadTooLarge, "Request body exceeds \(limit) bytes")
                return
            }
            if head.expectContinue { send(Connection.continueLine) }
            bodyStartedAt = monotonicNanos()
            bodyReader = BodyReader(
                head: head, parts: parts, route: route, params: params, limit: limit, remaining: n,
                chunked: nil, streamed: streamed)
            if streamed { beginStreamedBody() }
        case .chunked:
            if head.expectContinue { send(Connection.continueLine) }
            bodyStartedAt = monotonicNanos()
            bodyReader = BodyReader(
                head: head, parts: parts, route: route, params: params, limit: limit, remaining: 0,
                chunked: ChunkedDecoder(), streamed: streamed)
            if streamed { beginStreamedBody() }
        }
    }

    static let continueLine = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    func beginStreamedBody() {
        guard let r = bodyReader else { return }
        let stream = RequestBodyStream { [self, loop] in
            loop.execute { if !self.closed { self.readLoop() } }
        }
        bodyStream = stream
        dispatch(r.head, r.parts, r.route, r.params, body: .stream(stream))
    }

    /// Feeds buffered bytes to the body reader; false when it needs more input or failed.
    func feedBody() -> Bool {
        guard var r = bodyReader else { return true }
        var done = false
        var chunk: [UInt8] = []
        if var dec = r.chunked {
            var failure: ParseFailure?
            let used = inbound.withUnsafeBufferPointer { buf -> Int in
                let (used, outcome) = dec.feed(
                    UnsafeBufferPointer(rebasing: buf[inStart...]), into: &chunk, limit: r.limit - r.body.count)
                switch outcome {
                case .done: done = true
                case .failed(let f): failure = f
                case .needMore: break
                }
                return used
            }
            consume(used)
            r.chunked = dec
            if let failure {
                bodyReader = nil
                bodyStream?.finish(error: HTTPError(failure.status, message: failure.message))
                fail(failure.status, failure.message)
                return false
            }
        } else {
            let take = min(r.remaining, unconsumed)
            chunk = Array(inbound[inStart..<(inStart + take)])
            consume(take)
            r.remaining -= take
            done = r.remaining == 0
        }
        if r.streamed {
            if !chunk.isEmpty { _ = bodyStream?.push(chunk) }
            bodyReader = done ? nil : r
            if done { bodyStream?.finish() }
            return done
        }
        r.body.append(contentsOf: chunk)
        if done {
            bodyReader = nil
            dispatch(r.head, r.parts, r.route, r.params, body: .buffer(r.body))
            return true
        }
        bodyReader = r
        return false
    }

    func dispatch(
        _ head: RequestHead, _ parts: RequestTarget.Parts, _ route: RouteInfo?, _ params: [String: String],
        body: RequestBody
    ) {
        inFlight = true
        let request = Request(
            method: head.method, target: head.target, path: parts.path, pathSegments: parts.segments,
            query: parts.query, version: head.version, headers: head.headers, body: body,
            remoteAddress: remoteAddress, isSecure: ssl != nil)
        let context = RequestContext(
            requestID: RequestID.make(), route: route, parameters: params, startNanos: monotonicNanos())
        let responder = server.responder
        let stats = server.stats
        stats.inFlightRequests.add(1, ordering: .relaxed)
        task = Task { [self, loop] in
            let response = await responder.respond(request, context: context)
            stats.inFlightRequests.subtract(1, ordering: .relaxed)
            loop.execute { self.writeResponse(response, requestID: context.requestID) }
        }
    }

    /// A Host value: a registered name, an IPv4 address or a bracketed IPv6 literal, and an optional
    /// port (RFC 3986 `host [":" port]`), at most 261 bytes.
    static func isValidHost(_ h: String) -> Bool {
        let u = Array(h.utf8)
        guard !u.isEmpty, u.count <= 261 else { return false }
        var end = u.count
        if let colon = u.lastIndex(of: 58), u.first != 91 || colon > (u.lastIndex(of: 93) ?? 0) {
            let port = u[(colon + 1)...]
            guard port.count <= 5, port.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
            end = colon
        }
        let host = u[..<end]
        guard !host.isEmpty else { return false }
        if host.first == 91 {  // [IPv6]
            guard host.last == 93, host.count > 2 else { return false }
            return host.dropFirst().dropLast().allSatisfy { isHex($0) || $0 == 58 || $0 == 46 }
        }
        // reg-name / IPv4: unreserved, sub-delims and percent-encoding.
        return host.allSatisfy { c in
            (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57)
                || "-._~!$&'()*+,;=%".utf8.contains(c)
        }
    }

    static func isHex(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70) }
}
