// libFuzzer target: the WebSocket frame decoder and message state machine.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWebSocket(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let decoder = WebSocketFrameDecoder(maxFrameSize: 4096)
    var machine = WebSocketStateMachine(maxMessageSize: 8192)
    var offset = 0
    while offset < bytes.count {
        let result = bytes.withUnsafeMutableBufferPointer { decoder.decode(UnsafeMutableBufferPointer(rebasing: $0[offset...])) }
        switch result {
        case .needMore, .failure:
            return 0
        case .frame(let frame, let consumed):
            precondition(consumed > 0 && offset + consumed <= bytes.count, "consumed out of range")
            precondition(frame.payload.count <= 4096, "frame cap ignored")
            offset += consumed
            switch machine.receive(frame) {
            case .deliver(.text(let s)): precondition(s.utf8.count <= 8192, "message cap ignored")
            case .deliver(.binary(let b)): precondition(b.count <= 8192, "message cap ignored")
            case .fail, .replyClose: return 0
            default: break
            }
        }
    }
    // The incremental validator must agree with the standard library.
    var v = UTF8Validator()
    let ok = bytes.withUnsafeBufferPointer { v.feed($0) } && v.isComplete
    precondition(ok == (String(validating: bytes, as: UTF8.self) != nil), "UTF-8 validator disagrees with the standard library")
    return 0
}
