import COpenSSL
import CShims
import Foundation
import Synchronization

/// Writing responses, the transport under them, and closing.
extension Connection {
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
        guard !closed, !closeAfterFlush, !lingering else {
            inFlight = false
            return
        }
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
            response = Response.error(
                HTTPError(.internalServerError, code: "internal", message: "Internal server error"),
                requestID: requestID)
        }
        let isHead = responseMethod == .HEAD
        switch response.body {
        case .bytes(let body):
            let allows = response.status.allowsBody
            let head = serializeHead(
                status: response.status, headers: response.headers,
                contentLength: allows || response.status.code == 304
                    ? (response.status.code == 304 ? nil : body.count) : nil,
                chunked: false)
            if isHead || !allows { send(head) } else { sendPair(head, body) }
            finishResponse()
        case .stream(let producer):
            let userLength = response.headers["Content-Length"].flatMap { Int($0) }
            let chunked = userLength == nil && responseVersion == .http1_1
            if userLength == nil && !chunked { keepAlive = false }
            let head = serializeHead(
                status: response.status, headers: response.headers, contentLength: userLength,
                chunked: chunked, keepUserLength: true)
            send(head)
            if isHead || !response.status.allowsBody {
                finishResponse()
                return
            }
            streaming = true
            chunkedStream = chunked
            server.stats.streamingResponses.add(1, ordering: .relaxed)
            let writer = ConnectionBodyWriter(connection: self)
            task = Task { [self, loop] in
                let ok: Bool
                do {
                    try await producer(writer)
                    ok = true
                } catch {
                    ok = false
                    if !(error is CancellationError) && !(error is ConnectionClosedError) {
                        ServerLog.warn(
                            "stream producer failed",
                            ["request_id": .string(requestID), "error": .string(String(describing: error))])
                    }
                }
                loop.execute { self.finishStream(ok: ok) }
            }
        case .webSocket(let settings, let handler):
            guard response.status.code == 101 else {
                finishResponse()
                return
            }
            keepAlive = false
            send(
                serializeHead(
                    status: response.status, headers: response.headers, contentLength: nil, chunked: false,
                    upgrade: true))
            startWebSocket(settings: settings, handler: handler)
        }
    }

    func finishStream(ok: Bool) {
        task = nil
        if streaming { server.stats.streamingResponses.subtract(1, ordering: .relaxed) }
        streaming = false
        guard !closed else { return }
        if !ok && pendingOut == 0 && !chunkedStream {
            forceClose()
            return
        }
        if !ok { keepAlive = false }
        if chunkedStream { send(Connection.lastChunk) }
        finishResponse()
    }

    static let lastChunk = Array("0\r\n\r\n".utf8)

    func finishResponse() {
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
        guard !closed, streaming else {
            completion(ConnectionClosedError())
            return
        }
        if chunkedStream {
            var framed = Array(String(bytes.count, radix: 16).utf8)
            framed.append(CR)
            framed.append(LF)
            framed.reserveCapacity(framed.count + bytes.count + 2)
            framed.append(contentsOf: bytes)
            framed.append(CR)
            framed.append(LF)
            send(framed)
        } else {
            send(bytes)
        }
        if closed {
            completion(ConnectionClosedError())
            return
        }
        if pendingOut <= config.writeLowWater { completion(nil) } else { waiters.append(completion) }
    }

    func serializeHead(
        status: HTTPStatus, headers: HTTPHeaders, contentLength: Int?, chunked: Bool,
        keepUserLength: Bool = false, upgrade: Bool = false
    ) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(256)
        out.append(contentsOf: Connection.statusLine(status))
        out.append(contentsOf: Connection.serverLine)
        out.append(contentsOf: loop.dateLine)
        for f in headers.fields {
            if !upgrade
                && (asciiCaseInsensitiveEqual(f.name, "Connection")
                    || asciiCaseInsensitiveEqual(f.name, "Transfer-Encoding"))
            {
                continue
            }
            if asciiCaseInsensitiveEqual(f.name, "Content-Length") && !keepUserLength { continue }
            out.append(contentsOf: f.name.utf8)
            out.append(COLON)
            out.append(SP)
            out.append(contentsOf: f.value.utf8)
            out.append(CR)
            out.append(LF)
        }
        if let contentLength, !keepUserLength || headers["Content-Length"] == nil {
            out.append(contentsOf: Connection.contentLengthPrefix)
            out.append(contentsOf: String(contentLength).utf8)
            out.append(CR)
            out.append(LF)
        }
        if chunked { out.append(contentsOf: Connection.chunkedLine) }
        if !upgrade {
            if !keepAlive || loop.draining {
                out.append(contentsOf: Connection.closeLine)
            } else if responseVersion == .http1_0 {
                out.append(contentsOf: Connection.keepAliveLine)
            }
        }
        out.append(CR)
        out.append(LF)
        return out
    }

    static let serverLine = Array("Server: kiln\r\n".utf8)
    static let contentLengthPrefix = Array("Content-Length: ".utf8)
    static let chunkedLine = Array("Transfer-Encoding: chunked\r\n".utf8)
    static let closeLine = Array("Connection: close\r\n".utf8)
    static let keepAliveLine = Array("Connection: keep-alive\r\n".utf8)
    static let statusLines: [Int: [UInt8]] = {
        var d: [Int: [UInt8]] = [:]
        for c in [
            100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 402, 403, 404, 405, 408, 409,
            410, 413, 414, 415, 416, 417, 422, 426, 429, 431, 500, 501, 502, 503, 504, 505,
        ] {
            d[c] = Array("HTTP/1.1 \(c) \(HTTPStatus(c).reason)\r\n".utf8)
        }
        return d
    }()
    static func statusLine(_ s: HTTPStatus) -> [UInt8] {
        statusLines[s.code] ?? Array("HTTP/1.1 \(s.code) \(s.reason)\r\n".utf8)
    }

    /// Outbound header names must be tokens and values free of CR, LF and NUL (no response splitting).
    func validResponseHeaders(_ h: HTTPHeaders) -> Bool {
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
            if n < 0 && n != -Int(EAGAIN) {
                forceClose()
                return
            }
            let written = max(n, 0)
            if outIndex == outbound.count {
                outbound.removeAll(keepingCapacity: true)
                outIndex = 0
            }
            outbound.append(contentsOf: bytes[written...])
            return
        }
        outbound.append(contentsOf: bytes)
        flush()
    }

    /// Head and body in one syscall when nothing else is queued (no Nagle delay, no copy).
    func sendPair(_ head: [UInt8], _ body: [UInt8]) {
        guard !closed else { return }
        if body.isEmpty {
            send(head)
            return
        }
        if pendingOut == 0 && ssl == nil && !handshaking {
            let n = head.withUnsafeBytes { h in
                body.withUnsafeBytes { b in kiln_writev2(fd, h.baseAddress, h.count, b.baseAddress, b.count) }
            }
            let total = head.count + body.count
            if n == total { return }
            if n < 0 && n != -Int(EAGAIN) {
                forceClose()
                return
            }
            let written = max(n, 0)
            outbound.removeAll(keepingCapacity: true)
            outIndex = 0
            if written < head.count {
                outbound.append(contentsOf: head[written...])
                outbound.append(contentsOf: body)
            } else {
                outbound.append(contentsOf: body[(written - head.count)...])
            }
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
            if closeAfterFlush {
                beginLingeringClose()
                return
            }
            if !inFlight && !processing && unconsumed > 0 { process() }
            if readable && !processing { readLoop() }
        }
    }
}
