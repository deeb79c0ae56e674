/// WebSocket opcodes (RFC 6455 §5.2).
public enum WebSocketOpcode: UInt8, Sendable {
    case continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA
    var isControl: Bool { rawValue & 0x8 != 0 }
}

/// One frame, payload already unmasked.
public struct WebSocketFrame: Sendable, Equatable {
    public var fin: Bool
    public var opcode: WebSocketOpcode
    public var payload: [UInt8]
    public init(fin: Bool = true, opcode: WebSocketOpcode, payload: [UInt8]) {
        self.fin = fin
        self.opcode = opcode
        self.payload = payload
    }
}

/// Close codes the engine sends.
public enum WebSocketCloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    public static let unsupportedData: UInt16 = 1003
    public static let invalidPayload: UInt16 = 1007
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let internalError: UInt16 = 1011

    /// Codes a peer may put in a close frame (RFC 6455 §7.4, IANA registry).
    public static func isValidReceived(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}

/// Decodes client frames from a byte buffer (pure). Enforces masking, reserved bits, control-frame
/// rules and the size cap as soon as the length is known — before reading the payload.
public struct WebSocketFrameDecoder: Sendable {
    public var maxFrameSize: Int
    public init(maxFrameSize: Int) { self.maxFrameSize = maxFrameSize }

    public enum Result: Sendable, Equatable {
        case needMore
        case frame(WebSocketFrame, consumed: Int)
        case failure(code: UInt16, reason: String)
    }

    /// The header of a frame whose payload has not fully arrived: (opcode, header length, payload length, mask key).
    public func peekHeader(
        _ buf: UnsafeBufferPointer<UInt8>
    ) -> (opcode: WebSocketOpcode, headerLength: Int, payloadLength: Int, key: (UInt8, UInt8, UInt8, UInt8))? {
        let n = buf.count
        guard n >= 2, buf[1] & 0x80 != 0, let op = WebSocketOpcode(rawValue: buf[0] & 0x0F) else { return nil }
        var len = Int(buf[1] & 0x7F)
        var off = 2
        if len == 126 {
            guard n >= 4 else { return nil }
            len = Int(buf[2]) << 8 | Int(buf[3])
            off = 4
        } else if len == 127 {
            guard n >= 10 else { return nil }
            var v: UInt64 = 0
            for i in 2..<10 { v = v << 8 | UInt64(buf[i]) }
            guard v <= UInt64(maxFrameSize) else { return nil }
            len = Int(v)
            off = 10
        }
        guard n >= off + 4 else { return nil }
        return (op, off + 4, len, (buf[off], buf[off + 1], buf[off + 2], buf[off + 3]))
    }

    /// Decodes one frame from the start of `buf`. `requireMask` is true for frames from clients.
    public func decode(_ buf: UnsafeMutableBufferPointer<UInt8>, requireMask: Bool = true) -> Result {
        let n = buf.count
        guard n >= 2 else { return .needMore }
        let b0 = buf[0]
        let b1 = buf[1]
        if b0 & 0x70 != 0 { return .failure(code: WebSocketCloseCode.protocolError, reason: "Reserved bits set") }
        guard let opcode = WebSocketOpcode(rawValue: b0 & 0x0F) else {
            return .failure(code: WebSocketCloseCode.protocolError, reason: "Reserved opcode")
        }
        let fin = b0 & 0x80 != 0
        let masked = b1 & 0x80 != 0
        if requireMask && !masked {
            return .failure(code: WebSocketCloseCode.protocolError, reason: "Client frames must be masked")
        }
        var len = Int(b1 & 0x7F)
        var off = 2
        if opcode.isControl {
            if !fin { return .failure(code: WebSocketCloseCode.protocolError, reason: "Fragmented control frame") }
            if len > 125 { return .failure(code: WebSocketCloseCode.protocolError, reason: "Control frame too long") }
        }
        if len == 126 {
            guard n >= 4 else { return .needMore }
            len = Int(buf[2]) << 8 | Int(buf[3])
            if len < 126 { return .failure(code: WebSocketCloseCode.protocolError, reason: "Non-minimal length") }
            off = 4
        } else if len == 127 {
            guard n >= 10 else { return .needMore }
            var v: UInt64 = 0
            for i in 2..<10 { v = v << 8 | UInt64(buf[i]) }
            if v >> 63 != 0 { return .failure(code: WebSocketCloseCode.protocolError, reason: "Invalid length") }
            if v < 65536 { return .failure(code: WebSocketCloseCode.protocolError, reason: "Non-minimal length") }
            if v > UInt64(maxFrameSize) {
                return .failure(code: WebSocketCloseCode.messageTooBig, reason: "Frame too large")
            }
            len = Int(v)
            off = 10
        }
        if len > maxFrameSize { return .failure(code: WebSocketCloseCode.messageTooBig, reason: "Frame too large") }
        var key: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        if masked {
            guard n >= off + 4 else { return .needMore }
            key = (buf[off], buf[off + 1], buf[off + 2], buf[off + 3])
            off += 4
        }
        guard n >= off + len else { return .needMore }
        let payloadBuf = UnsafeMutableBufferPointer(rebasing: buf[off..<(off + len)])
        if masked { WebSocketFrameDecoder.unmask(payloadBuf, key: key) }
        return .frame(WebSocketFrame(fin: fin, opcode: opcode, payload: Array(payloadBuf)), consumed: off + len)
    }

    /// XORs `buf` with the masking key in place, 8 bytes at a time.
    public static func unmask(_ buf: UnsafeMutableBufferPointer<UInt8>, key: (UInt8, UInt8, UInt8, UInt8)) {
        guard let base = buf.baseAddress, buf.count > 0 else { return }
        let k = [key.0, key.1, key.2, key.3]
        var k64: UInt64 = 0
        for i in 0..<8 { k64 |= UInt64(k[i & 3]) << (8 * UInt64(i)) }
        let n = buf.count
        var i = 0
        let raw = UnsafeMutableRawPointer(base)
        while i + 8 <= n {
            let w = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            raw.storeBytes(of: w ^ k64, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < n {
            base[i] ^= k[i & 3]
            i += 1
        }
    }
}

/// Encodes a server frame (never masked).
public func encodeWebSocketFrame(opcode: WebSocketOpcode, payload: UnsafeRawBufferPointer, fin: Bool = true) -> [UInt8]
{
    var out = [UInt8]()
    let len = payload.count
    out.reserveCapacity(len + 10)
    out.append((fin ? 0x80 : 0) | opcode.rawValue)
    if len < 126 {
        out.append(UInt8(len))
    } else if len < 65536 {
        out.append(126)
        out.append(UInt8(len >> 8))
        out.append(UInt8(len & 0xFF))
    } else {
        out.append(127)
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((UInt64(len) >> UInt64(s)) & 0xFF)) }
    }
    out.append(contentsOf: payload)
    return out
}

public func encodeWebSocketFrame(opcode: WebSocketOpcode, payload: [UInt8], fin: Bool = true) -> [UInt8] {
    payload.withUnsafeBytes { encodeWebSocketFrame(opcode: opcode, payload: $0, fin: fin) }
}

func closePayload(code: UInt16?, reason: String) -> [UInt8] {
    guard let code else { return [] }
    var p: [UInt8] = [UInt8(code >> 8), UInt8(code & 0xFF)]
    p.append(contentsOf: reason.utf8.prefix(123))
    return p
}
