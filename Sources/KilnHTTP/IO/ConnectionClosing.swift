import COpenSSL
import CShims
import Foundation
import Synchronization

/// The transport under a connection (plain or TLS), and closing it.
extension Connection {
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
    func beginLingeringClose() {
        guard !closed, !lingering else { return }
        lingering = true
        if let ssl {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
            ERR_clear_error()
        }
        shutdown(fd, Int32(SHUT_WR))
        lingerDeadline = monotonicNanos() + 2_000_000_000
        inbound = []
        inStart = 0
        if peerClosed {
            finalClose()
            return
        }
        readLoop()
    }

    /// Closes now: cancels any handler, fails waiting writers, frees the fd.
    func forceClose() {
        guard !closed else { return }
        finalClose()
    }

    func finalClose() {
        guard !closed else { return }
        closed = true
        pushClosed.store(true, ordering: .relaxed)
        task?.cancel()
        task = nil
        bodyStream?.finish(error: ConnectionClosedError())
        bodyStream = nil
        if streaming {
            server.stats.streamingResponses.subtract(1, ordering: .relaxed)
            streaming = false
        }
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
        inbound = []
        outbound = []
    }

    func checkTimeouts(now: UInt64) {
        guard !closed else { return }
        let s = UInt64(1_000_000_000)
        if lingering {
            if now >= lingerDeadline { finalClose() }
            return
        }
        if webSocket != nil {
            if wsCloseDeadline > 0 && now >= wsCloseDeadline {
                if let f = wsPendingFailure, !wsCloseSent {
                    sendFailureClose(code: f.code, reason: f.reason)
                } else {
                    forceClose()
                }
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
            let tooSlow = !(bodyReader?.streamed ?? false) && now - bodyStartedAt > UInt64(config.bodyTotalTimeout) * s
            if !waitingForHandler && (tooSlow || now - lastActivity > UInt64(config.bodyTimeout) * s) {
                bodyStream?.finish(error: HTTPError(.requestTimeout, message: "Timed out reading the request body"))
                bodyReader = nil
                fail(.requestTimeout, "Timed out reading the request body")
            }
            return
        }
        if inFlight || streaming { return }
        if unconsumed > 0 {
            if now - headStartedAt > UInt64(config.headerTimeout) * s {
                fail(.requestTimeout, "Timed out reading the request head")
            }
        } else if servedRequests == 0 {
            if now - acceptedAt > UInt64(config.headerTimeout) * s { forceClose() }
        } else if now - lastActivity > UInt64(config.idleTimeout) * s {
            forceClose()
        }
    }

    /// Server shutdown: idle connections close now; busy ones close after their response;
    /// streams end; WebSockets get 1001.
    func drain(endStreams: Bool = true) {
        guard !closed else { return }
        keepAlive = false
        if !endStreams {
            if !inFlight && bodyReader == nil && pendingOut == 0 && webSocket == nil && !streaming { forceClose() }
            return
        }
        if webSocket != nil {
            wsInitiateClose(code: WebSocketCloseCode.goingAway, reason: "Server shutting down")
            return
        }
        if streaming {
            task?.cancel()
            return
        }
        if !inFlight && bodyReader == nil && pendingOut == 0 { forceClose() }
    }
}
