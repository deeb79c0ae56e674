/// A complete WebSocket message.
public enum WebSocketMessage: Sendable, Equatable {
    case text(String)
    case binary([UInt8])
}

/// Turns decoded frames into messages and protocol actions (pure: no socket). Aggregates
/// fragments up to `maxMessageSize`, validates UTF-8 across fragments, answers pings, and
/// validates close frames.
public struct WebSocketStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        case none
        case deliver(WebSocketMessage)
        case sendPong([UInt8])
        /// The peer closed: answer with this close frame, then close the connection.
        case replyClose(code: UInt16?, reason: String)
        /// Protocol violation: send close with `code`, then close the connection.
        case fail(code: UInt16, reason: String)
    }

    public let maxMessageSize: Int
    public internal(set) var messageOpcode: WebSocketOpcode?
    var buffer: [UInt8] = []
    public internal(set) var utf8 = UTF8Validator()
    public private(set) var closeReceived = false

    public init(maxMessageSize: Int) { self.maxMessageSize = maxMessageSize }

    public mutating func receive(_ frame: WebSocketFrame) -> Action {
        if closeReceived { return .none }
        switch frame.opcode {
        case .ping:
            return .sendPong(frame.payload)
        case .pong:
            return .none
        case .close:
            closeReceived = true
            let p = frame.payload
            if p.isEmpty { return .replyClose(code: WebSocketCloseCode.normal, reason: "") }
            if p.count == 1 {
                return .fail(code: WebSocketCloseCode.protocolError, reason: "Close payload of one byte")
            }
            let code = UInt16(p[0]) << 8 | UInt16(p[1])
            guard WebSocketCloseCode.isValidReceived(code) else {
                return .fail(code: WebSocketCloseCode.protocolError, reason: "Invalid close code")
            }
            var v = UTF8Validator()
            guard v.feed(Array(p[2...])), v.isComplete else {
                return .fail(code: WebSocketCloseCode.invalidPayload, reason: "Close reason is not UTF-8")
            }
            return .replyClose(code: code, reason: "")
        case .text, .binary:
            if messageOpcode != nil {
                return .fail(code: WebSocketCloseCode.protocolError, reason: "Expected a continuation frame")
            }
            if frame.fin {
                if frame.payload.count > maxMessageSize {
                    return .fail(code: WebSocketCloseCode.messageTooBig, reason: "Message too big")
                }
                if frame.opcode == .text {
                    guard let s = String(validating: frame.payload, as: UTF8.self) else {
                        return .fail(code: WebSocketCloseCode.invalidPayload, reason: "Text is not valid UTF-8")
                    }
                    return .deliver(.text(s))
                }
                return .deliver(.binary(frame.payload))
            }
            messageOpcode = frame.opcode
            buffer = frame.payload
            utf8 = UTF8Validator()
            return appendChecks(frame.payload, fin: false)
        case .continuation:
            guard messageOpcode != nil else {
                return .fail(code: WebSocketCloseCode.protocolError, reason: "Continuation without a message")
            }
            if buffer.count + frame.payload.count > maxMessageSize {
                return .fail(code: WebSocketCloseCode.messageTooBig, reason: "Message too big")
            }
            buffer.append(contentsOf: frame.payload)
            return appendChecks(frame.payload, fin: frame.fin)
        }
    }

    private mutating func appendChecks(_ payload: [UInt8], fin: Bool) -> Action {
        if buffer.count > maxMessageSize {
            return .fail(code: WebSocketCloseCode.messageTooBig, reason: "Message too big")
        }
        if messageOpcode == .text {
            guard utf8.feed(payload) else {
                return .fail(code: WebSocketCloseCode.invalidPayload, reason: "Text is not valid UTF-8")
            }
        }
        guard fin else { return .none }
        let op = messageOpcode
        messageOpcode = nil
        let data = buffer
        buffer = []
        if op == .text {
            guard utf8.isComplete else {
                return .fail(code: WebSocketCloseCode.invalidPayload, reason: "Text is not valid UTF-8")
            }
            return .deliver(.text(String(decoding: data, as: UTF8.self)))
        }
        return .deliver(.binary(data))
    }
}
