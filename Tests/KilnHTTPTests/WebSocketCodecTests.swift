import Testing

@testable import KilnHTTP

@Suite struct WebSocketCodecTests {
    /// A client frame: masked with `key`.
    func clientFrame(
        _ op: UInt8, _ payload: [UInt8], fin: Bool = true, key: [UInt8] = [1, 2, 3, 4], rsv: UInt8 = 0,
        masked: Bool = true
    ) -> [UInt8] {
        var f: [UInt8] = [(fin ? 0x80 : 0) | rsv | op]
        let m: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            f.append(m | UInt8(payload.count))
        } else if payload.count < 65536 {
            f += [m | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            f.append(m | 127)
            for s in stride(from: 56, through: 0, by: -8) { f.append(UInt8((payload.count >> s) & 0xFF)) }
        }
        if masked {
            f += key
            f += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
        } else {
            f += payload
        }
        return f
    }

    func decode(_ bytes: [UInt8], max: Int = 1 << 20) -> WebSocketFrameDecoder.Result {
        var b = bytes
        return b.withUnsafeMutableBufferPointer { WebSocketFrameDecoder(maxFrameSize: max).decode($0) }
    }

    @Test func decodesMaskedFramesOfEverySizeClass() {
        for size in [0, 5, 125, 126, 1000, 65535, 65536, 200_000] {
            let payload = (0..<size).map { UInt8($0 & 0xFF) }
            let raw = clientFrame(0x2, payload)
            guard case .frame(let f, let used) = decode(raw) else {
                Issue.record("size \(size)")
                continue
            }
            #expect(f.payload == payload)
            #expect(used == raw.count)
            // Any prefix is incomplete, never an error.
            #expect(decode(Array(raw.prefix(raw.count - 1))) == .needMore)
        }
    }

    @Test func refusesUnmaskedReservedAndBadControlFrames() {
        #expect(
            decode(clientFrame(0x1, [65], masked: false))
                == .failure(code: 1002, reason: "Client frames must be masked"))
        #expect(decode(clientFrame(0x1, [65], rsv: 0x40)) == .failure(code: 1002, reason: "Reserved bits set"))
        #expect(decode(clientFrame(0x3, [])) == .failure(code: 1002, reason: "Reserved opcode"))
        #expect(decode(clientFrame(0xB, [])) == .failure(code: 1002, reason: "Reserved opcode"))
        #expect(decode(clientFrame(0x9, [], fin: false)) == .failure(code: 1002, reason: "Fragmented control frame"))
        #expect(
            decode(clientFrame(0x9, [UInt8](repeating: 0, count: 126)))
                == .failure(code: 1002, reason: "Control frame too long"))
    }

    @Test func refusesOversizeAsSoonAsTheLengthIsKnown() {
        // Only the 10-byte header of a 1 GiB frame: refused without waiting for the payload.
        let header: [UInt8] = [0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0]
        #expect(decode(header, max: 1 << 20) == .failure(code: 1009, reason: "Frame too large"))
    }

    @Test func reassemblesFragmentsWithInterleavedControlFrames() {
        var m = WebSocketStateMachine(maxMessageSize: 1 << 20)
        #expect(m.receive(WebSocketFrame(fin: false, opcode: .text, payload: Array("Hel".utf8))) == .none)
        #expect(m.receive(WebSocketFrame(opcode: .ping, payload: [9])) == .sendPong([9]))
        #expect(m.receive(WebSocketFrame(fin: false, opcode: .continuation, payload: Array("lo, ".utf8))) == .none)
        #expect(
            m.receive(WebSocketFrame(fin: true, opcode: .continuation, payload: Array("world".utf8)))
                == .deliver(.text("Hello, world")))
        #expect(m.receive(WebSocketFrame(opcode: .binary, payload: [1, 2])) == .deliver(.binary([1, 2])))
    }

    @Test func fragmentationErrors() {
        var m = WebSocketStateMachine(maxMessageSize: 1 << 20)
        #expect(
            m.receive(WebSocketFrame(opcode: .continuation, payload: []))
                == .fail(code: 1002, reason: "Continuation without a message"))
        var m2 = WebSocketStateMachine(maxMessageSize: 1 << 20)
        _ = m2.receive(WebSocketFrame(fin: false, opcode: .text, payload: []))
        #expect(
            m2.receive(WebSocketFrame(opcode: .text, payload: []))
                == .fail(code: 1002, reason: "Expected a continuation frame"))
    }

    @Test func utf8IsValidatedAcrossFragmentsAndFailsFast() {
        // "€" = E2 82 AC split over three fragments is fine.
        var m = WebSocketStateMachine(maxMessageSize: 1 << 20)
        #expect(m.receive(WebSocketFrame(fin: false, opcode: .text, payload: [0xE2])) == .none)
        #expect(m.receive(WebSocketFrame(fin: false, opcode: .continuation, payload: [0x82])) == .none)
        #expect(m.receive(WebSocketFrame(fin: true, opcode: .continuation, payload: [0xAC])) == .deliver(.text("€")))
        // An invalid byte fails in the fragment that carries it, not at the end.
        var bad = WebSocketStateMachine(maxMessageSize: 1 << 20)
        #expect(
            bad.receive(WebSocketFrame(fin: false, opcode: .text, payload: [0x61, 0xC0]))
                == .fail(code: 1007, reason: "Text is not valid UTF-8"))
        // A message ending mid-character fails.
        var trunc = WebSocketStateMachine(maxMessageSize: 1 << 20)
        _ = trunc.receive(WebSocketFrame(fin: false, opcode: .text, payload: [0xE2, 0x82]))
        #expect(
            trunc.receive(WebSocketFrame(fin: true, opcode: .continuation, payload: []))
                == .fail(code: 1007, reason: "Text is not valid UTF-8"))
    }

    @Test(arguments: [
        ([UInt8]("héllo wörld €𝄞".utf8), true),
        ([0xED, 0xA0, 0x80], false),  // surrogate
        ([0xF4, 0x90, 0x80, 0x80], false),  // above U+10FFFF
        ([0xC0, 0xAF], false),  // overlong
        ([0xE0, 0x80, 0xAF], false),  // overlong
        ([0xFF], false),
        ([0x80], false),
    ])
    func utf8Validator(_ bytes: [UInt8], _ valid: Bool) {
        var v = UTF8Validator()
        #expect((v.feed(bytes) && v.isComplete) == valid)
    }

    @Test func closeFrames() {
        var m = WebSocketStateMachine(maxMessageSize: 100)
        #expect(
            m.receive(WebSocketFrame(opcode: .close, payload: [0x03, 0xE8] + Array("bye".utf8)))
                == .replyClose(code: 1000, reason: ""))
        for (payload, code) in [
            ([0x03], UInt16(1002)), ([0x03, 0xED], 1002), ([0x00, 0x00], 1002), ([0x03, 0xEE], 1002),
            ([0x0B, 0xB8 - 0xB8 + 0xB7], 1002), ([0x03, 0xE8, 0xFF], 1007),
        ] as [([UInt8], UInt16)] {
            var mm = WebSocketStateMachine(maxMessageSize: 100)
            if case .fail(let c, _) = mm.receive(WebSocketFrame(opcode: .close, payload: payload)) {
                #expect(c == code, "\(payload)")
            } else {
                Issue.record("accepted close payload \(payload)")
            }
        }
        var ok = WebSocketStateMachine(maxMessageSize: 100)
        #expect(
            ok.receive(WebSocketFrame(opcode: .close, payload: [0x0F, 0xA0])) == .replyClose(code: 4000, reason: ""))
        var empty = WebSocketStateMachine(maxMessageSize: 100)
        #expect(empty.receive(WebSocketFrame(opcode: .close, payload: [])) == .replyClose(code: 1000, reason: ""))
    }

    @Test func messageSizeCap() {
        var m = WebSocketStateMachine(maxMessageSize: 10)
        _ = m.receive(WebSocketFrame(fin: false, opcode: .binary, payload: [UInt8](repeating: 0, count: 8)))
        #expect(
            m.receive(WebSocketFrame(fin: true, opcode: .continuation, payload: [0, 0, 0]))
                == .fail(code: 1009, reason: "Message too big"))
    }

    @Test func serverFramesAreUnmaskedWithMinimalLengths() {
        #expect(encodeWebSocketFrame(opcode: .text, payload: Array("hi".utf8)) == [0x81, 2, 0x68, 0x69])
        #expect(
            Array(encodeWebSocketFrame(opcode: .binary, payload: [UInt8](repeating: 0, count: 126)).prefix(4)) == [
                0x82, 126, 0, 126,
            ])
        #expect(
            Array(encodeWebSocketFrame(opcode: .binary, payload: [UInt8](repeating: 0, count: 65536)).prefix(10)) == [
                0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0,
            ])
    }

    @Test func handshakeAcceptKey() throws {
        // RFC 6455 §1.3 example.
        let req = try Request(
            method: .GET, target: "/ws",
            headers: [
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            ])
        let res = try WebSocket.upgrade(req) { _ in }
        #expect(res.status.code == 101)
        #expect(res.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        let noVersion = try Request(
            method: .GET, target: "/ws",
            headers: ["Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="])
        #expect(throws: HTTPError.self) { try WebSocket.upgrade(noVersion) { _ in } }
        let badKey = try Request(
            method: .GET, target: "/ws",
            headers: [
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "short",
            ])
        #expect(throws: HTTPError.self) { try WebSocket.upgrade(badKey) { _ in } }
    }
}
