import COpenSSL
import CShims
import Foundation
import Synchronization

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
                if !wsCheckPartialText() {
                    wsFail(code: WebSocketCloseCode.invalidPayload, reason: "Text is not valid UTF-8")
                }
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
    func wsCheckPartialText() -> Bool {
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
    func wsFail(code: UInt16, reason: String) {
        webSocket?.finishInbound()
        if !wsCloseSent && task != nil && wsPendingFailure == nil {
            wsPendingFailure = (code, reason)
            wsCloseDeadline = monotonicNanos() + 1_000_000_000
            inbound = []
            inStart = 0
            return
        }
        sendFailureClose(code: code, reason: reason)
    }

    func sendFailureClose(code: UInt16, reason: String) {
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
        guard !closed, webSocket != nil, !wsCloseSent else {
            completion(ConnectionClosedError())
            return
        }
        send(frame)
        if closed {
            completion(ConnectionClosedError())
            return
        }
        if pendingOut <= config.writeLowWater { completion(nil) } else { waiters.append(completion) }
    }

    func wsInitiateClose(code: UInt16, reason: String) {
        guard !closed, webSocket != nil else { return }
        if wsCloseSent { return }
        wsCloseSent = true
        send(encodeWebSocketFrame(opcode: .close, payload: closePayload(code: code, reason: reason)))
        wsCloseDeadline = monotonicNanos() + 5_000_000_000
        if wsMachine.closeReceived {
            closeAfterFlush = true
            flush()
        }
    }

    func wsHandlerFinished() {
        task = nil
        guard !closed, webSocket != nil else { return }
        if let f = wsPendingFailure {
            sendFailureClose(code: f.code, reason: f.reason)
            return
        }
        if !wsCloseSent { wsInitiateClose(code: WebSocketCloseCode.normal, reason: "") }
    }
}
