import COpenSSL
import Foundation
import Glibc
import KilnHTTP

/// One HTTP/1.1 exchange with a server a user named (an MCP server, later a webhook), through the
/// outbound guard: the host is resolved and checked, and the checked address is the one connected
/// to (TLS still verifies the certificate against the host's name). Blocking I/O on its own thread,
/// bounded in time and size; `Connection: close`, no redirects followed.
public struct OutboundHTTP: Sendable {
    public struct Request: Sendable {
        public var method: String
        public var url: String
        public var headers: [(String, String)]
        public var body: [UInt8]
        /// Seconds for the whole exchange.
        public var timeout: Double
        public var maxResponseBytes: Int
        /// Called with the body received so far; true ends the read early (an SSE stream whose
        /// answer has come).
        public var enough: (@Sendable ([UInt8]) -> Bool)?

        public init(
            method: String = "POST", url: String, headers: [(String, String)] = [], body: [UInt8] = [],
            timeout: Double = 30, maxResponseBytes: Int = 4 << 20, enough: (@Sendable ([UInt8]) -> Bool)? = nil
        ) {
            self.method = method
            self.url = url
            self.headers = headers
            self.body = body
            self.timeout = timeout
            self.maxResponseBytes = maxResponseBytes
            self.enough = enough
        }
    }

    public struct Response: Sendable {
        public let status: Int
        public let headers: [(String, String)]
        public let body: [UInt8]
        public func header(_ name: String) -> String? {
            headers.first { $0.0.caseInsensitiveCompare(name) == .orderedSame }?.1
        }
    }

    /// Why an exchange failed, in words safe to show (no server internals).
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        /// The limit on time was reached.
        public let timedOut: Bool
        init(_ d: String, timedOut: Bool = false) {
            description = d
            self.timedOut = timedOut
        }
    }

    let outbound: OutboundGuard

    public init(outbound: OutboundGuard) { self.outbound = outbound }

    /// The URL's parts, checked: http or https, a host, no credentials.
    public static func target(_ url: String) throws -> (tls: Bool, host: String, port: Int, path: String) {
        guard url.utf8.count <= 2048, let c = URLComponents(string: url), let scheme = c.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = c.host, !host.isEmpty
        else { throw Failure("the URL must be http:// or https:// with a host") }
        guard c.user == nil, c.password == nil else { throw Failure("the URL may not carry credentials") }
        let tls = scheme == "https"
        var path = c.percentEncodedPath.isEmpty ? "/" : c.percentEncodedPath
        if let q = c.percentEncodedQuery { path += "?" + q }
        guard !path.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f }) else {
            throw Failure("the URL's path is not valid")
        }
        return (tls, host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), c.port ?? (tls ? 443 : 80), path)
    }

    public func send(_ r: Request) async throws -> Response {
        let t = try Self.target(r.url)
        let addresses: [IPAddress]
        do { addresses = try await outbound.lookup(t.host) } catch let e as OutboundGuard.Refused {
            throw Failure(e.description)
        }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Response, any Error>) in
            Thread {
                do { c.resume(returning: try Self.exchange(r, t, addresses[0])) } catch { c.resume(throwing: error) }
            }.start()
        }
    }

    // MARK: The blocking exchange

    static func exchange(
        _ r: Request, _ t: (tls: Bool, host: String, port: Int, path: String), _ address: IPAddress
    ) throws -> Response {
        let deadline = Date().addingTimeInterval(r.timeout)
        // The address the guard checked, not the name again (a second lookup could answer otherwise).
        let conn = try io(
            { $0.timedOut ? "the server did not accept a connection in time" : "the server refused the connection" }
        ) {
            try ClientSocket(
                host: address.description, port: t.port, timeout: r.timeout, numericHost: true, deadline: deadline)
        }
        defer { conn.close() }
        if t.tls {
            try io({ f in
                f.certificate.map { "the server's certificate was refused for \(t.host): \($0)" }
                    ?? "the TLS handshake failed (is the server's certificate valid for \(t.host)?)"
            }) { try conn.startTLS(hostName: t.host, verify: true) }
        }
        let hostHeader =
            (IPAddress(t.host)?.isV4 == false ? "[\(t.host)]" : t.host)
            + ((t.tls && t.port == 443) || (!t.tls && t.port == 80) ? "" : ":\(t.port)")
        var head = "\(r.method) \(t.path) HTTP/1.1\r\nHost: \(hostHeader)\r\nConnection: close\r\n"
        head += "Content-Length: \(r.body.count)\r\n"
        for (k, v) in r.headers {
            guard !k.contains(where: { $0 == "\r" || $0 == "\n" || $0 == ":" }),
                !v.contains(where: { $0 == "\r" || $0 == "\n" })
            else { throw Failure("a header may not contain line breaks") }
            head += "\(k): \(v)\r\n"
        }
        head += "\r\n"
        try io({ _ in "the connection was lost while sending" }) { try conn.write(Array(head.utf8) + r.body) }
        // The head.
        var buffer: [UInt8] = []
        var headEnd: Int? = nil
        while headEnd == nil {
            guard let chunk = try io({ _ in "the connection was reset" }, conn.receive) else {
                throw Failure("the server did not answer in time", timedOut: true)
            }
            guard !chunk.isEmpty else { throw Failure("the server closed the connection") }
            buffer += chunk
            headEnd = Self.find([13, 10, 13, 10], in: buffer)
            if headEnd == nil && buffer.count > 64 * 1024 { throw Failure("the response head is too large") }
        }
        let headText = String(decoding: buffer[..<headEnd!], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            throw Failure("the server did not answer HTTP/1.1")
        }
        let headers: [(String, String)] = lines.compactMap { l in
            guard let colon = l.firstIndex(of: ":") else { return nil }
            return (String(l[..<colon]), l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        func header(_ n: String) -> String? { headers.first { $0.0.caseInsensitiveCompare(n) == .orderedSame }?.1 }
        // An answer to HEAD, and a 1xx, 204 or 304, has no body whatever its Content-Length says (RFC 9112 §6.3).
        if r.method == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 {
            return Response(status: status, headers: headers, body: [])
        }
        var body = Array(buffer[(headEnd! + 4)...])
        let chunked = header("Transfer-Encoding")?.lowercased().contains("chunked") == true
        let length = chunked ? nil : header("Content-Length").flatMap { Int($0) }
        if let length, length > r.maxResponseBytes {
            throw Failure("the response is larger than \(r.maxResponseBytes) bytes")
        }
        var decoded: [UInt8] = []
        var decoder = ChunkedDecoder()
        func current() throws -> [UInt8] {
            if chunked {
                decoded += try decoder.feed(body)
                body.removeAll()
                return decoded
            }
            return body
        }
        while true {
            let so = try current()
            if so.count > r.maxResponseBytes {
                throw Failure("the response is larger than \(r.maxResponseBytes) bytes")
            }
            if let length, so.count >= length {
                return Response(status: status, headers: headers, body: Array(so.prefix(length)))
            }
            if chunked && decoder.done { return Response(status: status, headers: headers, body: so) }
            if let enough = r.enough, enough(so) { return Response(status: status, headers: headers, body: so) }
            guard let chunk = try io({ _ in "the connection was reset" }, conn.receive) else {
                throw Failure("the server did not answer in time", timedOut: true)
            }
            if chunk.isEmpty {
                if length != nil || (chunked && !decoder.done) {
                    throw Failure("the server closed the connection mid-answer")
                }
                return Response(status: status, headers: headers, body: so)
            }
            body += chunk
        }
    }

    /// A socket failure as this client's, in words `message` picks for it.
    static func io<T>(_ message: (ClientSocket.Failure) -> String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let f as ClientSocket.Failure {
            throw Failure(message(f), timedOut: f.timedOut)
        }
    }

    static func find(_ needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
            if Array(hay[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
struct ChunkedDecoder {
    var pending: [UInt8] = []
    var remaining = 0
    var done = false
    var afterChunk = false

    mutating func feed(_ bytes: [UInt8]) throws -> [UInt8] {
        pending += bytes
        var out: [UInt8] = []
        while !done {
            if afterChunk {
                guard pending.count >= 2 else { break }
                pending.removeFirst(2)
                afterChunk = false
            }
            if remaining > 0 {
                let n = min(remaining, pending.count)
                out += pending[..<n]
                pending.removeFirst(n)
                remaining -= n
                if remaining > 0 { break }
                afterChunk = true
                continue
            }
            guard let eol = OutboundHTTP.find([13, 10], in: pending) else {
                if pending.count > 1024 { throw OutboundHTTP.Failure("a chunk size line is too long") }
                break
            }
            let line = String(decoding: pending[..<eol], as: UTF8.self)
            pending.removeFirst(eol + 2)
            guard
                let size = Int(line.split(separator: ";").first?.trimmingCharacters(in: .whitespaces) ?? "", radix: 16),
                size >= 0
            else { throw OutboundHTTP.Failure("the response's chunked encoding is broken") }
            if size == 0 {
                done = true
                break
            }
            remaining = size
        }
        return out
    }
}
