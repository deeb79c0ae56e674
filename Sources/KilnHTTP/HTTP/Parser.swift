#if canImport(Glibc)
    import Glibc
#endif

/// Size limits the parser enforces (each answered with its own status).
public struct ParserLimits: Sendable {
    /// Request line, in bytes, excluding CRLF (414 beyond).
    public var maxRequestLine = 8 * 1024
    /// Header section, in bytes (431 beyond).
    public var maxHeaderBytes = 64 * 1024
    /// Header field count (431 beyond).
    public var maxHeaderCount = 100
    public init() {}
}

/// How the request body is delimited.
public enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int)
    case chunked
}

/// A request line plus header section, validated for framing.
public struct RequestHead: Sendable {
    public var method: HTTPMethod
    public var target: String
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    public var framing: BodyFraming
    public var keepAlive: Bool
    public var expectContinue: Bool
    /// The protocol named by `Upgrade` when `Connection: upgrade` is present.
    public var upgrade: String?
}

/// A protocol violation: the response status and a message for the client.
public struct ParseFailure: Error, Sendable, Equatable {
    public var status: HTTPStatus
    public var message: String
    public init(_ status: HTTPStatus, _ message: String) {
        self.status = status
        self.message = message
    }
}

public enum HeadParseResult: Sendable {
    case needMore
    /// The head and the number of bytes it took.
    case complete(RequestHead, consumed: Int)
    case failed(ParseFailure)
}

// Byte classes.
let CR: UInt8 = 13
let LF: UInt8 = 10
let SP: UInt8 = 32
let HTAB: UInt8 = 9
let COLON: UInt8 = 58

let tokenTable: [Bool] = {
    var t = [Bool](repeating: false, count: 256)
    for c in UInt8(ascii: "0")...UInt8(ascii: "9") { t[Int(c)] = true }
    for c in UInt8(ascii: "a")...UInt8(ascii: "z") { t[Int(c)] = true }
    for c in UInt8(ascii: "A")...UInt8(ascii: "Z") { t[Int(c)] = true }
    for c in "!#$%&'*+-.^_`|~".utf8 { t[Int(c)] = true }
    return t
}()

@inline(__always) func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: c - 48
    case 65...70: c - 55
    case 97...102: c - 87
    default: nil
    }
}

/// RFC 9110 tchar.
@inline(__always) public func isTokenChar(_ c: UInt8) -> Bool { tokenTable[Int(c)] }
/// field-vchar / SP / HTAB (obs-text allowed; CTLs, NUL and DEL refused).
@inline(__always) func isFieldValueChar(_ c: UInt8) -> Bool { c == HTAB || (c >= 0x20 && c != 0x7F) }

@inline(__always) func findLF(_ b: UnsafeBufferPointer<UInt8>, from: Int) -> Int? {
    guard from < b.count, let base = b.baseAddress else { return nil }
    guard let p = memchr(base + from, Int32(LF), b.count - from) else { return nil }
    return base.distance(to: p.assumingMemoryBound(to: UInt8.self))
}

@inline(__always) func string(_ b: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int) -> String {
    String(decoding: UnsafeBufferPointer(rebasing: b[from..<to]), as: UTF8.self)
}

/// Well-known methods without allocating a new string for each request.
func methodFrom(_ b: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int) -> HTTPMethod {
    let len = to - from
    switch (len, b[from]) {
    case (3, 71) where b[from + 1] == 69 && b[from + 2] == 84: return .GET
    case (4, 80) where b[from + 1] == 79 && b[from + 2] == 83 && b[from + 3] == 84: return .POST
    case (3, 80) where b[from + 1] == 85 && b[from + 2] == 84: return .PUT
    case (4, 72) where b[from + 1] == 69 && b[from + 2] == 65 && b[from + 3] == 68: return .HEAD
    default: return HTTPMethod(string(b, from, to))
    }
}

/// Parses one request head from the start of `b`. Pure: no allocation beyond the result.
public func parseRequestHead(_ b: UnsafeBufferPointer<UInt8>, limits: ParserLimits = ParserLimits()) -> HeadParseResult
{
    let n = b.count
    var i = 0
    // RFC 9112 §2.2: ignore empty lines before the request line.
    while i + 1 < n && b[i] == CR && b[i + 1] == LF { i += 2 }
    if i < n && b[i] == LF { return .failed(ParseFailure(.badRequest, "Bare LF line ending")) }
    if i + 1 >= n { return .needMore }
    let lineStart = i
    guard let lf = findLF(b, from: lineStart) else {
        if n - lineStart > limits.maxRequestLine { return .failed(ParseFailure(.uriTooLong, "Request line too long")) }
        return .needMore
    }
    if lf - lineStart - 1 > limits.maxRequestLine { return .failed(ParseFailure(.uriTooLong, "Request line too long")) }
    if lf == lineStart || b[lf - 1] != CR { return .failed(ParseFailure(.badRequest, "Bare LF line ending")) }
    let lineEnd = lf - 1

    // method SP request-target SP HTTP-version
    var p = lineStart
    while p < lineEnd && isTokenChar(b[p]) { p += 1 }
    guard p > lineStart, p < lineEnd, b[p] == SP else {
        return .failed(ParseFailure(.badRequest, "Malformed request line"))
    }
    let method = methodFrom(b, lineStart, p)
    p += 1
    let targetStart = p
    while p < lineEnd && b[p] > 0x20 && b[p] < 0x7F { p += 1 }
    guard p > targetStart, p < lineEnd, b[p] == SP else {
        return .failed(ParseFailure(.badRequest, "Malformed request target"))
    }
    let target = string(b, targetStart, p)
    p += 1
    let version: HTTPVersion
    let vlen = lineEnd - p
    if vlen == 8, b[p] == 72, b[p + 1] == 84, b[p + 2] == 84, b[p + 3] == 80, b[p + 4] == 47, b[p + 6] == 46,
        (48...57).contains(b[p + 5]), (48...57).contains(b[p + 7])
    {
        switch (b[p + 5], b[p + 7]) {
        case (49, 49): version = .http1_1
        case (49, 48): version = .http1_0
        default: return .failed(ParseFailure(.versionNotSupported, "Only HTTP/1.0 and HTTP/1.1 are supported"))
        }
    } else {
        return .failed(ParseFailure(.badRequest, "Malformed HTTP version"))
    }

    // Header fields.
    var pos = lf + 1
    let headStart = pos
    var headers = HTTPHeaders()
    var count = 0
    while true {
        if pos >= n {
            return n - headStart > limits.maxHeaderBytes
                ? .failed(ParseFailure(.headersTooLarge, "Header section too large")) : .needMore
        }
        let c = b[pos]
        if c == CR {
            if pos + 1 >= n { return .needMore }
            guard b[pos + 1] == LF else { return .failed(ParseFailure(.badRequest, "Bare CR in header section")) }
            pos += 2
            break
        }
        if c == LF { return .failed(ParseFailure(.badRequest, "Bare LF line ending")) }
        if c == SP || c == HTAB { return .failed(ParseFailure(.badRequest, "Obsolete line folding is not accepted")) }
        guard let flf = findLF(b, from: pos) else {
            return n - headStart > limits.maxHeaderBytes
                ? .failed(ParseFailure(.headersTooLarge, "Header section too large")) : .needMore
        }
        if flf + 1 - headStart > limits.maxHeaderBytes {
            return .failed(ParseFailure(.headersTooLarge, "Header section too large"))
        }
        guard b[flf - 1] == CR else { return .failed(ParseFailure(.badRequest, "Bare LF line ending")) }
        let fend = flf - 1
        var q = pos
        while q < fend && isTokenChar(b[q]) { q += 1 }
        guard q > pos, q < fend, b[q] == COLON else {
            return .failed(ParseFailure(.badRequest, "Invalid header field name"))
        }
        let nameEnd = q
        q += 1
        while q < fend && (b[q] == SP || b[q] == HTAB) { q += 1 }
        var vend = fend
        while vend > q && (b[vend - 1] == SP || b[vend - 1] == HTAB) { vend -= 1 }
        var k = q
        while k < vend {
            guard isFieldValueChar(b[k]) else {
                return .failed(ParseFailure(.badRequest, "Invalid character in header value"))
            }
            k += 1
        }
        count += 1
        if count > limits.maxHeaderCount { return .failed(ParseFailure(.headersTooLarge, "Too many header fields")) }
        headers.add(string(b, pos, nameEnd), string(b, q, vend))
        pos = flf + 1
    }

    switch validateFraming(method: method, version: version, headers: headers) {
    case .failure(let f): return .failed(f)
    case .success(var head):
        head.target = target
        return .complete(head, consumed: pos)
    }
}

/// The semantic checks that keep a request's framing unambiguous (request smuggling defences).
func validateFraming(
    method: HTTPMethod, version: HTTPVersion, headers: HTTPHeaders
) -> Result<RequestHead, ParseFailure> {
    var contentLength: Int? = nil
    var teValues: [String] = []
    var hosts = 0
    var connection: [String] = []
    var expect: String? = nil
    var upgrade: String? = nil
    for f in headers.fields {
        let name = f.name
        switch name.utf8.count {
        case 4 where asciiCaseInsensitiveEqual(name, "host"):
            hosts += 1
        case 6 where asciiCaseInsensitiveEqual(name, "expect"):
            expect = f.value
        case 7 where asciiCaseInsensitiveEqual(name, "upgrade"):
            upgrade = f.value
        case 10 where asciiCaseInsensitiveEqual(name, "connection"):
            connection.append(contentsOf: f.value.split(separator: ",").map { trimOWS($0).lowercased() })
        case 14 where asciiCaseInsensitiveEqual(name, "content-length"):
            for part in f.value.split(separator: ",", omittingEmptySubsequences: false) {
                let v = trimOWS(part)
                guard !v.isEmpty, v.utf8.count <= 18, v.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let len = Int(v)
                else {
                    return .failure(ParseFailure(.badRequest, "Invalid Content-Length"))
                }
                if let cl = contentLength, cl != len {
                    return .failure(ParseFailure(.badRequest, "Conflicting Content-Length values"))
                }
                contentLength = len
            }
        case 17 where asciiCaseInsensitiveEqual(name, "transfer-encoding"):
            teValues.append(
                contentsOf: f.value.split(separator: ",", omittingEmptySubsequences: false).map {
                    trimOWS($0).lowercased()
                })
        default: break
        }
    }
    if hosts > 1 { return .failure(ParseFailure(.badRequest, "More than one Host header")) }
    var framing = BodyFraming.none
    if !teValues.isEmpty {
        if contentLength != nil {
            return .failure(ParseFailure(.badRequest, "Both Content-Length and Transfer-Encoding"))
        }
        if version == .http1_0 {
            return .failure(ParseFailure(.badRequest, "Transfer-Encoding in an HTTP/1.0 request"))
        }
        guard teValues == ["chunked"] else { return .failure(ParseFailure(.badRequest, "Unsupported transfer coding")) }
        framing = .chunked
    } else if let cl = contentLength, cl > 0 {
        framing = .length(cl)
    }
    var expectContinue = false
    if let e = expect {
        guard asciiCaseInsensitiveEqual(trimOWS(Substring(e)), "100-continue") else {
            return .failure(ParseFailure(.expectationFailed, "Unsupported expectation"))
        }
        expectContinue = version == .http1_1
    }
    let keepAlive = version == .http1_1 ? !connection.contains("close") : connection.contains("keep-alive")
    let up = connection.contains("upgrade") ? upgrade : nil
    return .success(
        RequestHead(
            method: method, target: "", version: version, headers: headers, framing: framing,
            keepAlive: keepAlive, expectContinue: expectContinue, upgrade: up))
}

/// Incremental decoder for `Transfer-Encoding: chunked` bodies, trailers included.
public struct ChunkedDecoder: Sendable {
    enum State: Sendable { case size, data(Int), dataCR, dataLF, trailer, done }
    var state = State.size
    var line: [UInt8] = []
    var trailerBytes = 0
    public private(set) var trailers = HTTPHeaders()
    public private(set) var total = 0
    public var isDone: Bool { if case .done = state { true } else { false } }
    static let maxLine = 4096
    static let maxTrailerBytes = 64 * 1024

    public init() {}

    public enum Outcome: Sendable, Equatable { case needMore, done, failed(ParseFailure) }

    /// Consumes bytes from `b`, appending body data to `body`; returns how many bytes it used.
    public mutating func feed(_ b: UnsafeBufferPointer<UInt8>, into body: inout [UInt8], limit: Int) -> (Int, Outcome) {
        var i = 0
        let n = b.count
        while i < n {
            switch state {
            case .size, .trailer:
                guard let lf = findLF(b, from: i) else {
                    line.append(contentsOf: UnsafeBufferPointer(rebasing: b[i..<n]))
                    if line.count > ChunkedDecoder.maxLine {
                        return (n, .failed(ParseFailure(.badRequest, "Chunk line too long")))
                    }
                    return (n, .needMore)
                }
                line.append(contentsOf: UnsafeBufferPointer(rebasing: b[i..<lf]))
                i = lf + 1
                if line.count > ChunkedDecoder.maxLine {
                    return (i, .failed(ParseFailure(.badRequest, "Chunk line too long")))
                }
                guard line.last == CR else { return (i, .failed(ParseFailure(.badRequest, "Bare LF in chunked body"))) }
                line.removeLast()
                if case .size = state {
                    switch ChunkedDecoder.parseSize(line) {
                    case .none: return (i, .failed(ParseFailure(.badRequest, "Invalid chunk size")))
                    case .some(0): state = .trailer
                    case .some(let size):
                        if total + size > limit {
                            return (i, .failed(ParseFailure(.payloadTooLarge, "Request body too large")))
                        }
                        state = .data(size)
                    }
                } else {
                    if line.isEmpty {
                        state = .done
                        line = []
                        return (i, .done)
                    }
                    trailerBytes += line.count + 2
                    if trailerBytes > ChunkedDecoder.maxTrailerBytes {
                        return (i, .failed(ParseFailure(.headersTooLarge, "Trailer section too large")))
                    }
                    guard let field = ChunkedDecoder.parseField(line) else {
                        return (i, .failed(ParseFailure(.badRequest, "Invalid trailer field")))
                    }
                    trailers.add(field.0, field.1)
                }
                line.removeAll(keepingCapacity: true)
            case .data(let remaining):
                let take = min(remaining, n - i)
                body.append(contentsOf: UnsafeBufferPointer(rebasing: b[i..<(i + take)]))
                total += take
                i += take
                state = remaining - take == 0 ? .dataCR : .data(remaining - take)
            case .dataCR:
                guard b[i] == CR else {
                    return (i, .failed(ParseFailure(.badRequest, "Chunk data not followed by CRLF")))
                }
                i += 1
                state = .dataLF
            case .dataLF:
                guard b[i] == LF else {
                    return (i, .failed(ParseFailure(.badRequest, "Chunk data not followed by CRLF")))
                }
                i += 1
                state = .size
            case .done:
                return (i, .done)
            }
        }
        if case .done = state { return (i, .done) }
        return (i, .needMore)
    }

    /// chunk-size [ chunk-ext ]; nil when malformed or absurdly large.
    static func parseSize(_ line: [UInt8]) -> Int? {
        var v = 0
        var i = 0
        while i < line.count, let h = hexValue(line[i]) {
            if i >= 15 { return nil }
            v = v << 4 | Int(h)
            i += 1
        }
        guard i > 0 else { return nil }
        if i == line.count { return v }
        // chunk-ext: BWS ";" ... — tokens, quoted strings, '=' and whitespace; no controls.
        var j = i
        while j < line.count && (line[j] == SP || line[j] == HTAB) { j += 1 }
        guard j < line.count, line[j] == UInt8(ascii: ";") else { return nil }
        for c in line[j...] where !(isFieldValueChar(c)) { return nil }
        return v
    }

    static func parseField(_ line: [UInt8]) -> (String, String)? {
        guard let first = line.first, first != SP, first != HTAB, let colon = line.firstIndex(of: COLON), colon > 0
        else { return nil }
        guard line[..<colon].allSatisfy(isTokenChar) else { return nil }
        var s = colon + 1
        var e = line.count
        while s < e && (line[s] == SP || line[s] == HTAB) { s += 1 }
        while e > s && (line[e - 1] == SP || line[e - 1] == HTAB) { e -= 1 }
        guard line[s..<e].allSatisfy(isFieldValueChar) else { return nil }
        return (String(decoding: line[..<colon], as: UTF8.self), String(decoding: line[s..<e], as: UTF8.self))
    }
}
