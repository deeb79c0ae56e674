import Testing

@testable import KilnHTTP

@Suite struct ParserTests {
    func status(_ raw: String, limits: ParserLimits = ParserLimits()) -> Int? {
        if case .failed(let f) = parse(raw, limits: limits) { return f.status.code }
        return nil
    }

    func head(_ raw: String) -> RequestHead? {
        if case .complete(let h, _) = parse(raw) { return h }
        return nil
    }

    @Test func simpleGet() throws {
        let h = try #require(head("GET /a/b?x=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"))
        #expect(h.method == .GET)
        #expect(h.target == "/a/b?x=1")
        #expect(h.version == .http1_1)
        #expect(h.headers["host"] == "x")
        #expect(h.keepAlive)
        #expect(h.framing == .none)
    }

    @Test func consumedCountsOnlyTheHead() {
        let raw = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n"
        guard case .complete(_, let consumed) = parse(raw) else {
            Issue.record("not complete")
            return
        }
        #expect(consumed == "GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8.count)
    }

    @Test func incompleteNeedsMore() {
        for raw in [
            "", "G", "GET / HTTP/1.1", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: x\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            if case .needMore = parse(raw) {} else { Issue.record("expected needMore for \(raw.debugDescription)") }
        }
    }

    @Test func leadingEmptyLinesAreIgnored() {
        #expect(head("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n") != nil)
    }

    @Test func http10DefaultsToClose() throws {
        let h = try #require(head("GET / HTTP/1.0\r\n\r\n"))
        #expect(h.version == .http1_0)
        #expect(!h.keepAlive)
        let k = try #require(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        #expect(k.keepAlive)
        let c = try #require(head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"))
        #expect(!c.keepAlive)
    }

    @Test func contentLengthAndChunkedFraming() throws {
        #expect(head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")?.framing == .length(5))
        #expect(head("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")?.framing == .length(5))
        #expect(head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")?.framing == .length(5))
        #expect(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")?.framing == .chunked)
        #expect(head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")?.framing == .chunked)
    }

    @Test func expectContinue() throws {
        #expect(head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")?.expectContinue == true)
        #expect(status("POST / HTTP/1.1\r\nExpect: something-else\r\nContent-Length: 3\r\n\r\n") == 417)
    }

    @Test func upgradeNeedsConnectionUpgrade() throws {
        #expect(head("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")?.upgrade == "websocket")
        #expect(head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")?.upgrade == nil)
    }

    // Request smuggling and framing defences: each is a 400.
    @Test(arguments: [
        ("CL and TE", "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("TE and CL", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"),
        ("differing CLs", "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
        ("differing CL list", "POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n"),
        ("signed CL", "POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n"),
        ("negative CL", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        ("hex CL", "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"),
        ("empty CL", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"),
        ("huge CL", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        ("unknown coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("chunked not last", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        ("chunked twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("identity coding", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"),
        ("obs-fold tab", "GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n"),
        ("bare LF after request line", "GET / HTTP/1.1\nHost: x\r\n\r\n"),
        ("bare LF in headers", "GET / HTTP/1.1\r\nHost: x\n\r\n"),
        ("bare LF end", "GET / HTTP/1.1\r\nHost: x\r\n\n"),
        ("bare CR in value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"),
        ("bare CR line", "GET / HTTP/1.1\r\n\rX: y\r\n\r\n"),
        ("NUL in value", "GET / HTTP/1.1\r\nX-A: a\u{0}b\r\n\r\n"),
        ("control char in value", "GET / HTTP/1.1\r\nX-A: a\u{1}b\r\n\r\n"),
        ("DEL in value", "GET / HTTP/1.1\r\nX-A: a\u{7f}b\r\n\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("empty name", "GET / HTTP/1.1\r\n: x\r\n\r\n"),
        ("invalid name char", "GET / HTTP/1.1\r\nX(A): x\r\n\r\n"),
        ("no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n"),
        ("invalid method char", "G(T / HTTP/1.1\r\n\r\n"),
        ("two spaces", "GET  / HTTP/1.1\r\n\r\n"),
        ("no target", "GET HTTP/1.1\r\n\r\n"),
        ("control char in target", "GET /a\u{1}b HTTP/1.1\r\n\r\n"),
        ("lowercase version", "GET / http/1.1\r\n\r\n"),
        ("garbage version", "GET / HTTX/1.1\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("trailing junk in line", "GET / HTTP/1.1 x\r\n\r\n"),
    ])
    func rejects(_ name: String, _ raw: String) {
        #expect(status(raw) == 400, "\(name)")
    }

    @Test func unsupportedVersionIs505() {
        #expect(status("GET / HTTP/2.0\r\n\r\n") == 505)
        #expect(status("GET / HTTP/1.2\r\n\r\n") == 505)
    }

    @Test func requestLineLimitIs414() {
        let long = "GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\n\r\n"
        #expect(status(long) == 414)
        // Even before the line ends.
        #expect(status("GET /" + String(repeating: "a", count: 9000)) == 414)
        var l = ParserLimits()
        l.maxRequestLine = 100
        #expect(status("GET /" + String(repeating: "a", count: 200) + " HTTP/1.1\r\n\r\n", limits: l) == 414)
    }

    @Test func headerLimitsAre431() {
        let many = "GET / HTTP/1.1\r\n" + (0..<101).map { "X-\($0): v\r\n" }.joined() + "\r\n"
        #expect(status(many) == 431)
        let exactly100 = "GET / HTTP/1.1\r\n" + (0..<100).map { "X-\($0): v\r\n" }.joined() + "\r\n"
        #expect(head(exactly100) != nil)
        let big = "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 70_000) + "\r\n\r\n"
        #expect(status(big) == 431)
        // Too large before the head is complete.
        #expect(status("GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 70_000)) == 431)
    }

    @Test func valueWhitespaceIsTrimmedAndObsTextKept() throws {
        let h = try #require(head("GET / HTTP/1.1\r\nX-A: \t hello world \t\r\nX-B:\r\n\r\n"))
        #expect(h.headers["X-A"] == "hello world")
        #expect(h.headers["X-B"] == "")
        #expect(head("GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n") != nil)
    }

    @Test func multiValuedHeadersKeepOrder() throws {
        let h = try #require(head("GET / HTTP/1.1\r\nSet-Thing: a\r\nset-thing: b\r\n\r\n"))
        #expect(h.headers.values("SET-THING") == ["a", "b"])
    }
}

@Suite struct ChunkedDecoderTests {
    func decode(_ parts: [String], limit: Int = 1 << 20) -> (String, ChunkedDecoder.Outcome, ChunkedDecoder) {
        var d = ChunkedDecoder()
        var body: [UInt8] = []
        var last = ChunkedDecoder.Outcome.needMore
        for p in parts {
            let bytes = Array(p.utf8)
            var off = 0
            while off < bytes.count {
                let (used, outcome) = bytes[off...].withUnsafeBufferPointer { d.feed($0, into: &body, limit: limit) }
                off += used
                last = outcome
                if outcome != .needMore { break }
            }
            if last != .needMore { break }
        }
        return (String(decoding: body, as: UTF8.self), last, d)
    }

    @Test func decodesChunksAndTrailers() {
        let (body, outcome, d) = decode(["5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"])
        #expect(body == "hello world")
        #expect(outcome == .done)
        #expect(d.trailers["X-Sum"] == "42")
    }

    @Test func decodesByteByByte() {
        let raw = "3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"
        let (body, outcome, _) = decode(raw.map { String($0) })
        #expect(body == "abc0123456789")
        #expect(outcome == .done)
    }

    @Test(arguments: [
        "x\r\nabc\r\n0\r\n\r\n",  // not hex
        "3\r\nabcX\r\n0\r\n\r\n",  // data not followed by CRLF
        "3\nabc\r\n0\r\n\r\n",  // bare LF
        "ffffffffffffffffff\r\n",  // overflow
        "3 junk\r\nabc\r\n0\r\n\r\n",  // garbage after size
        "0\r\nBad Trailer\r\n\r\n",  // invalid trailer field
        "\r\nabc\r\n",  // empty size
    ])
    func rejectsMalformed(_ raw: String) {
        let (_, outcome, _) = decode([raw])
        if case .failed(let f) = outcome {
            #expect(f.status.code == 400)
        } else {
            Issue.record("accepted \(raw.debugDescription)")
        }
    }

    @Test func enforcesLimit() {
        let (_, outcome, _) = decode(["10\r\n0123456789abcdef\r\n0\r\n\r\n"], limit: 8)
        #expect(outcome == .failed(ParseFailure(.payloadTooLarge, "Request body too large")))
    }
}
