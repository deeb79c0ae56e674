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
        if handshaking { continueHandshake(); return }
        readLoop()
    }

    func onWritable() {
        if handshaking { continueHandshake(); return }
        flush()
    }

    func onHangup() { forceClose() }

    private func continueHandshake() {
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
    private var readPaused: Bool {
        if lingering { return false }
        if webSocket != nil { return wsPaused || wsPendingFailure != nil }
        if let r = bodyReader, r.streamed, bodyStream.map({ $0.state.withLock { $0.pausedProducer } }) ?? false { return true }
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
                if inStart > 0 && inStart == inbound.count { inbound.removeAll(keepingCapacity: true); inStart = 0 }
                else if inStart > 64 * 1024 && inStart > inbound.count / 2 { inbound.removeFirst(inStart); inStart = 0 }
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

    private func onPeerClosed() {
        if lingering { finalClose(); return }
        if webSocket != nil { forceClose(); return }
        keepAlive = false
        if streaming || bodyReader != nil { forceClose(); return }
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
        if webSocket != nil { wsProcess(); return }
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

    private func consume(_ n: Int) {
        inStart += n
        if inStart >= inbound.count {
            if inbound.capacity > 64 * 1024 { inbound = [] } else { inbound.removeAll(keepingCapacity: true) }
            inStart = 0
        }
    }

    private func startRequest(_ head: RequestHead) {
        let parts: RequestTarget.Parts
        do { parts = try RequestTarget.parse(head.target) }
        catch { fail(error.status, error.message); return }
        if parts.path == "*" && head.method != .OPTIONS { fail(.badRequest, "Asterisk-form is only valid for OPTIONS"); return }
        let (route, params) = server.responder.resolve(head.method, parts.segments)
        let limit = route?.metadata.bodyLimit ?? config.maxBodySize
        keepAlive = head.keepAlive && !loop.draining
        responseMethod = head.method
        responseVersion = head.version
        let streamed = route?.metadata.streamBody ?? false
        switch head.framing {
        case .none:
            dispatch(head, parts, route, params, body: .buffer([]))
        case .length(let n):
            if n > limit { fail(.payloadTooLarge, "Request body exceeds \(limit) bytes"); return }
            if head.expectContinue { send(Connection.continueLine) }
            bodyReader = BodyReader(head: head, parts: parts, route: route, params: params, limit: limit, remaining: n,
                                    chunked: nil, streamed: streamed)
            if streamed { beginStreamedBody() }
        case .chunked:
            if head.expectContinue { send(Connection.continueLine) }
            bodyReader = BodyReader(head: head, parts: parts, route: route, params: params, limit: limit, remaining: 0,
                                    chunked: ChunkedDecoder(), streamed: streamed)
            if streamed { beginStreamedBody() }
        }
    }

    static let continueLine = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    private func beginStreamedBody() {
        guard let r = bodyReader else { return }
        let stream = RequestBodyStream { [self, loop] in
            loop.execute { if !self.closed { self.readLoop() } }
        }
        bodyStream = stream
        dispatch(r.head, r.parts, r.route, r.params, body: .stream(stream))
    }

    /// Feeds buffered bytes to the body reader; false when it needs more input or failed.
    private func feedBody() -> Bool {
        guard var r = bodyReader else { return true }
        var done = false
        var chunk: [UInt8] = []
        if var dec = r.chunked {
            var failure: ParseFailure?
            let used = inbound.withUnsafeBufferPointer { buf -> Int in
                let (used, outcome) = dec.feed(UnsafeBufferPointer(rebasing: buf[inStart...]), into: &chunk, limit: r.limit - r.body.count)
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

    private func dispatch(_ head: RequestHead, _ parts: RequestTarget.Parts, _ route: RouteInfo?, _ params: [String: String],
                          body: RequestBody) {
        inFlight = true
        let request = Request(method: head.method, target: head.target, path: parts.path, pathSegments: parts.segments,
                              query: parts.query, version: head.version, headers: head.headers, body: body,
                              remoteAddress: remoteAddress, isSecure: ssl != nil)
        let context = RequestContext(requestID: RequestID.make(), route: route, parameters: params, startNanos: monotonicNanos())
        let responder = server.responder
        let stats = server.stats
        stats.inFlightRequests.add(1, ordering: .relaxed)
        task = Task { [self, loop] in
            let response = await responder.respond(request, context: context)
            stats.inFlightRequests.subtract(1, ordering: .relaxed)
            loop.execute { self.writeResponse(response, requestID: context.requestID) }
        }
    }

    // MARK: Responses

    /// Engine-level failure: the shared error JSON, then a clean close.
    func fail(_ status: HTTPStatus, _ message: String) {
        server.stats.protocolErrors.add(1, ordering: .relaxed)
        let rid = RequestID.make()
        let body = errorBody(code: HTTPError.defaultCode(for: status), message: message, details: [:], requestID: rid)
        keepAlive = false
        responseMethod = .GET
        var headers = HTTPHeaders()
        headers.add("Content-Type", "application/json; charset=utf-8")
        headers.add("X-Request-Id", rid)
        let head = serializeHead(status: status, headers: headers, contentLength: body.count, chunked: false)
        sendPair(head, body)
        closeAfterFlush = true
        flush()
    }

    func writeResponse(_ response: Response, requestID: String) {
        task = nil
        // The connection already failed (a timeout or a bad body answered by the engine): drop this answer.
        guard !closed, !closeAfterFlush, !lingering else { inFlight = false; return }
        if let r = bodyReader, r.streamed {
            // The handler answered before reading the whole body: close after this response.
            bodyReader = nil
            bodyStream?.finish(error: ConnectionClosedError())
            keepAlive = false
        } else if let s = bodyStream, !s.isFinished {
            keepAlive = false
        }
        bodyStream = nil
        var response = response
        if !validResponseHeaders(response.headers) {
            ServerLog.error("invalid response header", ["request_id": .string(requestID)])
            response = Response.error(HTTPError(.internalServerError, code: "internal", message: "Internal server error"), requestID: requestID)
        }
        let isHead = responseMethod == .HEAD
        switch response.body {
        case .bytes(let body):
            let allows = response.status.allowsBody
            let head = serializeHead(status: response.status, headers: response.headers,
                                     contentLength: allows || response.status.code == 304 ? (response.status.code == 304 ? nil : body.count) : nil,
                                     chunked: false)
            if isHead || !allows { send(head) } else { sendPair(head, body) }
            finishResponse()
        case .stream(let producer):
            let userLength = response.headers["Content-Length"].flatMap { Int($0) }
            let chunked = userLength == nil && responseVersion == .http1_1
            if userLength == nil && !chunked { keepAlive = false }
            let head = serializeHead(status: response.status, headers: response.headers, contentLength: userLength,
                                     chunked: chunked, keepUserLength: true)
            send(head)
            if isHead || !response.status.allowsBody { finishResponse(); return }
            streaming = true
            chunkedStream = chunked
            server.stats.streamingResponses.add(1, ordering: .relaxed)
            let writer = ConnectionBodyWriter(connection: self)
            task = Task { [self, loop] in
                let ok: Bool
                do { try await producer(writer); ok = true } catch {
                    ok = false
                    if !(error is CancellationError) && !(error is ConnectionClosedError) {
                        ServerLog.warn("stream producer failed", ["request_id": .string(requestID), "error": .string(String(describing: error))])
                    }
                }
                loop.execute { self.finishStream(ok: ok) }
            }
        case .webSocket(let settings, let handler):
            guard response.status.code == 101 else { finishResponse(); return }
            keepAlive = false
            send(serializeHead(status: response.status, headers: response.headers, contentLength: nil, chunked: false, upgrade: true))
            startWebSocket(settings: settings, handler: handler)
        }
    }

    private func finishStream(ok: Bool) {
        task = nil
        if streaming { server.stats.streamingResponses.subtract(1, ordering: .relaxed) }
        streaming = false
        guard !closed else { return }
        if !ok && pendingOut == 0 && !chunkedStream { forceClose(); return }
        if !ok { keepAlive = false }
        if chunkedStream { send(Connection.lastChunk) }
        finishResponse()
    }

    static let lastChunk = Array("0\r\n\r\n".utf8)

    private func finishResponse() {
        inFlight = false
        servedRequests += 1
        lastActivity = monotonicNanos()
        if !keepAlive || peerClosed {
            closeAfterFlush = true
            flush()
            return
        }
        headStartedAt = lastActivity
        if pendingOut <= config.writeHighWater {
            process()
            if readable { readLoop() }
        }
    }

    /// Streamed body bytes from a producer task (on the loop).
    func streamWrite(_ bytes: [UInt8], completion: @escaping ((any Error)?) -> Void) {
        guard !closed, streaming else { completion(ConnectionClosedError()); return }
        if chunkedStream {
            var framed = Array(String(bytes.count, radix: 16).utf8)
            framed.append(CR); framed.append(LF)
            framed.reserveCapacity(framed.count + bytes.count + 2)
            framed.append(contentsOf: bytes)
            framed.append(CR); framed.append(LF)
            send(framed)
        } else {
            send(bytes)
        }
        if closed { completion(ConnectionClosedError()); return }
        if pendingOut <= config.writeLowWater { completion(nil) } else { waiters.append(completion) }
    }

    func serializeHead(status: HTTPStatus, headers: HTTPHeaders, contentLength: Int?, chunked: Bool,
                       keepUserLength: Bool = false, upgrade: Bool = false) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(256)
        out.append(contentsOf: Connection.statusLine(status))
        out.append(contentsOf: Connection.serverLine)
        out.append(contentsOf: loop.dateLine)
        for f in headers.fields {
            if !upgrade && (asciiCaseInsensitiveEqual(f.name, "Connection") || asciiCaseInsensitiveEqual(f.name, "Transfer-Encoding")) { continue }
            if asciiCaseInsensitiveEqual(f.name, "Content-Length") && !keepUserLength { continue }
            out.append(contentsOf: f.name.utf8); out.append(COLON); out.append(SP)
            out.append(contentsOf: f.value.utf8); out.append(CR); out.append(LF)
        }
        if let contentLength, !keepUserLength || headers["Content-Length"] == nil {
            out.append(contentsOf: Connection.contentLengthPrefix)
            out.append(contentsOf: String(contentLength).utf8)
            out.append(CR); out.append(LF)
        }
        if chunked { out.append(contentsOf: Connection.chunkedLine) }
        if !upgrade {
            if !keepAlive || loop.draining { out.append(contentsOf: Connection.closeLine) }
            else if responseVersion == .http1_0 { out.append(contentsOf: Connection.keepAliveLine) }
        }
        out.append(CR); out.append(LF)
        return out
    }

    static let serverLine = Array("Server: kiln\r\n".utf8)
    static let contentLengthPrefix = Array("Content-Length: ".utf8)
    static let chunkedLine = Array("Transfer-Encoding: chunked\r\n".utf8)
    static let closeLine = Array("Connection: close\r\n".utf8)
    static let keepAliveLine = Array("Connection: keep-alive\r\n".utf8)
    static let statusLines: [Int: [UInt8]] = {
        var d: [Int: [UInt8]] = [:]
        for c in [100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 402, 403, 404, 405, 408, 409,
                  410, 413, 414, 415, 416, 417, 422, 426, 429, 431, 500, 501, 502, 503, 504, 505] {
            d[c] = Array("HTTP/1.1 \(c) \(HTTPStatus(c).reason)\r\n".utf8)
        }
        return d
    }()
    static func statusLine(_ s: HTTPStatus) -> [UInt8] { statusLines[s.code] ?? Array("HTTP/1.1 \(s.code) \(s.reason)\r\n".utf8) }

    /// Outbound header names must be tokens and values free of CR, LF and NUL (no response splitting).
    private func validResponseHeaders(_ h: HTTPHeaders) -> Bool {
        for f in h.fields {
            if f.name.isEmpty || !f.name.utf8.allSatisfy(isTokenChar) { return false }
            if f.value.utf8.contains(where: { $0 == CR || $0 == LF || $0 == 0 }) { return false }
        }
        return true
    }

    // MARK: Writing

    func send(_ bytes: [UInt8]) {
        guard !closed else { return }
        if pendingOut == 0 && ssl == nil && !handshaking {
            let n = bytes.withUnsafeBytes { kiln_send(fd, $0.baseAddress, $0.count) }
            if n == bytes.count { return }
            if n < 0 && n != -Int(EAGAIN) { forceClose(); return }
            let written = max(n, 0)
            if outIndex == outbound.count { outbound.removeAll(keepingCapacity: true); outIndex = 0 }
            outbound.append(contentsOf: bytes[written...])
            return
        }
        outbound.append(contentsOf: bytes)
        flush()
    }

    /// Head and body in one syscall when nothing else is queued (no Nagle delay, no copy).
    func sendPair(_ head: [UInt8], _ body: [UInt8]) {
        guard !closed else { return }
        if body.isEmpty { send(head); return }
        if pendingOut == 0 && ssl == nil && !handshaking {
            let n = head.withUnsafeBytes { h in body.withUnsafeBytes { b in kiln_writev2(fd, h.baseAddress, h.count, b.baseAddress, b.count) } }
            let total = head.count + body.count
            if n == total { return }
            if n < 0 && n != -Int(EAGAIN) { forceClose(); return }
            let written = max(n, 0)
            outbound.removeAll(keepingCapacity: true); outIndex = 0
            if written < head.count { outbound.append(contentsOf: head[written...]); outbound.append(contentsOf: body) }
            else { outbound.append(contentsOf: body[(written - head.count)...]) }
            return
        }
        outbound.append(contentsOf: head)
        outbound.append(contentsOf: body)
        flush()
    }

    func flush() {
        guard !closed else { return }
        if handshaking { return }
        while outIndex < outbound.count {
            let n = outbound.withUnsafeBytes { b in
                transportWrite(UnsafeRawBufferPointer(rebasing: b[outIndex...]))
            }
            if n > 0 {
                outIndex += n
                lastActivity = monotonicNanos()
            } else if n == -Int(EAGAIN) {
                break
            } else {
                forceClose()
                return
            }
        }
        if outIndex == outbound.count {
            if outbound.capacity > 256 * 1024 { outbound = [] } else { outbound.removeAll(keepingCapacity: true) }
            outIndex = 0
        }
        if pendingOut <= config.writeLowWater && !waiters.isEmpty {
            let w = waiters
            waiters.removeAll()
            for c in w { c(nil) }
        }
        if pendingOut == 0 {
            if closeAfterFlush { beginLingeringClose(); return }
            if !inFlight && !processing && unconsumed > 0 { process() }
            if readable && !processing { readLoop() }
        }
    }

    // MARK: Transport

    func transportRead(_ buf: UnsafeMutableRawBufferPointer) -> Int {
        if let ssl {
            ERR_clear_error()
            let r = SSL_read(ssl, buf.baseAddress, Int32(buf.count))
            if r > 0 { return Int(r) }
            let err = SSL_get_error(ssl, r)
            if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { return -Int(EAGAIN) }
            if err == SSL_ERROR_ZERO_RETURN { return 0 }
            if err == SSL_ERROR_SYSCALL && r == 0 { return 0 }
            ERR_clear_error()
            return -Int(EIO)
        }
        let r = read(fd, buf.baseAddress, buf.count)
        if r >= 0 { return r }
        let e = errno
        return e == EAGAIN || e == EWOULDBLOCK ? -Int(EAGAIN) : (e == EINTR ? -Int(EAGAIN) : -Int(e))
    }

    func transportWrite(_ buf: UnsafeRawBufferPointer) -> Int {
        if let ssl {
            ERR_clear_error()
            let r = SSL_write(ssl, buf.baseAddress, Int32(min(buf.count, Int(Int32.max))))
            if r > 0 { return Int(r) }
            let err = SSL_get_error(ssl, r)
            if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { return -Int(EAGAIN) }
            ERR_clear_error()
            return -Int(EIO)
        }
        return kiln_send(fd, buf.baseAddress, buf.count)
    }

    // MARK: Closing

    /// Half-close after the last response, then drain until the peer closes (so it gets the
    /// response instead of a reset), bounded by two seconds.
    private func beginLingeringClose() {
        guard !closed, !lingering else { return }
        lingering = true
        if let ssl { ERR_clear_error(); _ = SSL_shutdown(ssl); ERR_clear_error() }
        shutdown(fd, Int32(SHUT_WR))
        lingerDeadline = monotonicNanos() + 2_000_000_000
        inbound = []; inStart = 0
        if peerClosed { finalClose(); return }
        readLoop()
    }

    /// Closes now: cancels any handler, fails waiting writers, frees the fd.
    func forceClose() {
        guard !closed else { return }
        finalClose()
    }

    private func finalClose() {
        guard !closed else { return }
        closed = true
        pushClosed.store(true, ordering: .relaxed)
        task?.cancel()
        task = nil
        bodyStream?.finish(error: ConnectionClosedError())
        bodyStream = nil
        if streaming { server.stats.streamingResponses.subtract(1, ordering: .relaxed); streaming = false }
        if let ws = webSocket {
            ws.finishInbound()
            server.stats.webSocketConnections.subtract(1, ordering: .relaxed)
            webSocket = nil
        }
        let w = waiters
        waiters.removeAll()
        for c in w { c(ConnectionClosedError()) }
        _ = kiln_epoll_del(loop.epfd, fd)
        close(fd)
        loop.remove(fd)
        inbound = []; outbound = []
    }

    func checkTimeouts(now: UInt64) {
        guard !closed else { return }
        let s = UInt64(1_000_000_000)
        if lingering { if now >= lingerDeadline { finalClose() }; return }
        if webSocket != nil {
            if wsCloseDeadline > 0 && now >= wsCloseDeadline {
                if let f = wsPendingFailure, !wsCloseSent { sendFailureClose(code: f.code, reason: f.reason) } else { forceClose() }
            }
            return
        }
        if handshaking {
            if now - acceptedAt > UInt64(config.headerTimeout) * s { forceClose() }
            return
        }
        if bodyReader != nil {
            // A paused read waits for the handler, not the client: no timeout then.
            let waitingForHandler = bodyStream?.state.withLock { $0.pausedProducer } ?? false
            if !waitingForHandler && now - lastActivity > UInt64(config.bodyTimeout) * s {
                bodyStream?.finish(error: HTTPError(.requestTimeout, message: "Timed out reading the request body"))
                bodyReader = nil
                fail(.requestTimeout, "Timed out reading the request body")
            }
            return
        }
        if inFlight || streaming { return }
        if unconsumed > 0 {
            if now - headStartedAt > UInt64(config.headerTimeout) * s { fail(.requestTimeout, "Timed out reading the request head") }
        } else if servedRequests == 0 {
            if now - acceptedAt > UInt64(config.headerTimeout) * s { forceClose() }
        } else if now - lastActivity > UInt64(config.idleTimeout) * s {
            forceClose()
        }
    }

    /// Server shutdown: idle connections close now; busy ones close after their response;
    /// streams end; WebSockets get 1001.
    func drain() {
        guard !closed else { return }
        keepAlive = false
        if webSocket != nil { wsInitiateClose(code: WebSocketCloseCode.goingAway, reason: "Server shutting down"); return }
        if streaming { task?.cancel(); return }
        if !inFlight && bodyReader == nil && pendingOut == 0 { forceClose() }
    }
}

// MARK: - WebSocket mode

extension Connection {
    func startWebSocket(settings: WebSocketSettings, handler: @escaping @Sendable (WebSocket) async throws -> Void) {
        let ws = WebSocket(connection: self, settings: settings)
        webSocket = ws
        wsDecoder = WebSocketFrameDecoder(maxFrameSize: settings.maxMessageSize)
        wsMachine = WebSocketStateMachine(maxMessageSize: settings.maxMessageSize)
        server.stats.webSocketConnections.add(1, ordering: .relaxed)
        inFlight = false
        task = Task { [self, loop] in
            do { try await handler(ws) } catch {
                if !(error is CancellationError) && !(error is ConnectionClosedError) {
                    ServerLog.warn("websocket handler failed", ["error": .string(String(describing: error))])
                }
            }
            loop.execute { self.wsHandlerFinished() }
        }
        if unconsumed > 0 { wsProcess() }
        if readable { readLoop() }
    }

    func wsProcess() {
        while !closed, let ws = webSocket, !wsPaused, unconsumed > 0, !lingering, wsPendingFailure == nil {
            let result = inbound.withUnsafeMutableBufferPointer { buf in
                wsDecoder.decode(UnsafeMutableBufferPointer(rebasing: buf[inStart...]))
            }
            switch result {
            case .needMore:
                if !wsCheckPartialText() { wsFail(code: WebSocketCloseCode.invalidPayload, reason: "Text is not valid UTF-8") }
                return
            case .failure(let code, let reason):
                wsFail(code: code, reason: reason)
                return
            case .frame(let frame, let consumed):
                wsPartialChecked = 0
                consume(consumed)
                switch wsMachine.receive(frame) {
                case .none: break
                case .deliver(let m):
                    if !ws.enqueue(m) { wsPaused = true }
                case .sendPong(let payload):
                    if !wsCloseSent { send(encodeWebSocketFrame(opcode: .pong, payload: payload)) }
                case .replyClose(let code, _):
                    ws.peerCloseCode.withLock { $0 = code }
                    ws.finishInbound()
                    if !wsCloseSent {
                        wsCloseSent = true
                        send(encodeWebSocketFrame(opcode: .close, payload: closePayload(code: code, reason: "")))
                    }
                    closeAfterFlush = true
                    flush()
                    return
                case .fail(let code, let reason):
                    wsFail(code: code, reason: reason)
                    return
                }
            }
        }
    }

    /// Validates the part of a text frame that has arrived so far; false at invalid UTF-8.
    private func wsCheckPartialText() -> Bool {
        inbound.withUnsafeBufferPointer { all in
            let buf = UnsafeBufferPointer(rebasing: all[inStart...])
            guard let h = wsDecoder.peekHeader(buf) else { return true }
            let isText = h.opcode == .text || (h.opcode == .continuation && wsMachine.messageOpcode == .text)
            guard isText else { return true }
            let available = min(buf.count - h.headerLength, h.payloadLength)
            guard available > wsPartialChecked else { return true }
            if wsPartialChecked == 0 { wsPartialValidator = h.opcode == .text ? UTF8Validator() : wsMachine.utf8 }
            var chunk = Array(buf[(h.headerLength + wsPartialChecked)..<(h.headerLength + available)])
            let k = [h.key.0, h.key.1, h.key.2, h.key.3]
            let r = wsPartialChecked & 3
            chunk.withUnsafeMutableBufferPointer {
                WebSocketFrameDecoder.unmask($0, key: (k[r], k[(r + 1) & 3], k[(r + 2) & 3], k[(r + 3) & 3]))
            }
            wsPartialChecked = available
            return wsPartialValidator.feed(chunk)
        }
    }

    /// Fails the connection. Messages already queued still reach the handler (and its answers
    /// still go out) before the close frame, bounded by one second.
    private func wsFail(code: UInt16, reason: String) {
        webSocket?.finishInbound()
        if !wsCloseSent && task != nil && wsPendingFailure == nil {
            wsPendingFailure = (code, reason)
            wsCloseDeadline = monotonicNanos() + 1_000_000_000
            inbound = []; inStart = 0
            return
        }
        sendFailureClose(code: code, reason: reason)
    }

    private func sendFailureClose(code: UInt16, reason: String) {
        if !wsCloseSent {
            wsCloseSent = true
            send(encodeWebSocketFrame(opcode: .close, payload: closePayload(code: code, reason: reason)))
        }
        closeAfterFlush = true
        flush()
    }

    func wsResumeReading() {
        guard wsPaused, !closed else { return }
        wsPaused = false
        wsProcess()
        if readable { readLoop() }
    }

    func wsWrite(_ frame: [UInt8], completion: @escaping ((any Error)?) -> Void) {
        // While failing, reads have stopped; answers to messages received before the failure still go out.
        guard !closed, webSocket != nil, !wsCloseSent else { completion(ConnectionClosedError()); return }
        send(frame)
        if closed { completion(ConnectionClosedError()); return }
        if pendingOut <= config.writeLowWater { completion(nil) } else { waiters.append(completion) }
    }

    func wsInitiateClose(code: UInt16, reason: String) {
        guard !closed, webSocket != nil else { return }
        if wsCloseSent { return }
        wsCloseSent = true
        send(encodeWebSocketFrame(opcode: .close, payload: closePayload(code: code, reason: reason)))
        wsCloseDeadline = monotonicNanos() + 5_000_000_000
        if wsMachine.closeReceived { closeAfterFlush = true; flush() }
    }

    func wsHandlerFinished() {
        task = nil
        guard !closed, webSocket != nil else { return }
        if let f = wsPendingFailure { sendFailureClose(code: f.code, reason: f.reason); return }
        if !wsCloseSent { wsInitiateClose(code: WebSocketCloseCode.normal, reason: "") }
    }
}
