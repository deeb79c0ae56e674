// libFuzzer target: the HTTP/1.1 request parser, target/query decoding and the chunked decoder.
// Built with the KilnHTTP sources in one module by scripts/fuzz/run.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let buf = UnsafeBufferPointer(start: data, count: size)
    var limits = ParserLimits()
    limits.maxRequestLine = 512
    limits.maxHeaderBytes = 2048
    limits.maxHeaderCount = 20
    switch parseRequestHead(buf, limits: limits) {
    case .needMore, .failed:
        break
    case .complete(let head, let consumed):
        precondition(consumed > 0 && consumed <= size, "consumed out of range")
        precondition(head.headers.count <= 20, "header count limit ignored")
        if let parts = try? RequestTarget.parse(head.target) {
            for seg in parts.segments { precondition(seg != ".." && !seg.utf8.contains(0), "dot-dot or NUL segment") }
        }
        _ = Cookies.parse(head.headers.values("Cookie"))
        if head.framing == .chunked {
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            let rest = UnsafeBufferPointer(rebasing: buf[consumed...])
            var offset = 0
            // Feed in small pieces to exercise the incremental paths.
            while offset < rest.count {
                let end = min(rest.count, offset + 7)
                let (used, outcome) = decoder.feed(UnsafeBufferPointer(rebasing: rest[offset..<end]), into: &body, limit: 4096)
                precondition(used <= end - offset, "decoder used more than it was given")
                precondition(body.count <= 4096, "body limit ignored")
                if outcome != .needMore { break }
                offset += used
                if used == 0 { break }
            }
        }
    }
    return 0
}
