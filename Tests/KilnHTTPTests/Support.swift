import Foundation
import Glibc
import KilnCore

@testable import KilnHTTP

/// A live server on 127.0.0.1 with a free port, for tests that need a real socket.
/// Something a test starts and must stop (and wait for) before it ends.
protocol Stoppable: Sendable { func stop() async }

/// Runs `body` with `resource`, then stops it and waits, whether the body threw or not.
func using<R: Stoppable, T>(_ resource: R, _ body: (R) async throws -> T) async throws -> T {
    do {
        let out = try await body(resource)
        await resource.stop()
        return out
    } catch {
        await resource.stop()
        throw error
    }
}

final class LiveServer: Stoppable, @unchecked Sendable {
    let server: HTTPServer
    var port: Int { server.port }
    var base: String { "\(server.isTLS ? "https" : "http")://127.0.0.1:\(port)" }

    init(_ router: Router, configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.eventLoops = 2
        configure(&config)
        server = try HTTPServer(configuration: config, responder: router.responder())
        try server.start()
    }

    func stop() async { await server.shutdown() }
}

/// A blocking TCP client that sends raw bytes: what a hostile or unusual client would do.
/// Runs blocking work on its own thread so it never starves the cooperative pool that the
/// server's handlers run on.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { c in Thread { c.resume(returning: body()) }.start() }
}

final class RawClient: @unchecked Sendable {
    private(set) var fd: Int32

    init(port: Int, timeout: Double = 30) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard r == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Closes the socket now (the peer sees the client go away).
    func closeNow() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    func send(_ s: String) { send(Array(s.utf8)) }
    func send(_ b: [UInt8]) {
        var off = 0
        while off < b.count {
            let n = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, b.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes or the timeout passes.
    func readAllSync() -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// Reads until `count` complete responses (by Content-Length or chunked end) have arrived.
    func readResponsesSync(_ count: Int) -> [ParsedResponse] {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let parsed = ParsedResponse.parseAll(data)
            if parsed.count >= count { return parsed }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
            if n <= 0 { return parsed }
            data.append(contentsOf: buf[0..<n])
        }
    }

    func readResponse() async -> ParsedResponse? { await readResponses(1).first }
    func readAll() async -> [UInt8] { await offPool { self.readAllSync() } }
    /// Reads until the peer closes (true) or the client's own read timeout passes (false).
    func waitForClose() async -> Bool {
        await offPool {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buf.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, 65536, 0) }
                if n > 0 { continue }
                return n == 0 || errno == ECONNRESET
            }
        }
    }
    func readResponses(_ count: Int) async -> [ParsedResponse] { await offPool { self.readResponsesSync(count) } }
    func read(until marker: String) async -> String { await offPool { self.readSync(until: marker) } }
    func read(exactly n: Int) async -> [UInt8] { await offPool { self.readSync(exactly: n) } }

    /// Reads until the text received contains `marker` (or close/timeout).
    func readSync(until marker: String) -> String {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while !String(decoding: out, as: UTF8.self).contains(marker) {
            let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
            if r <= 0 { break }
            out.append(contentsOf: buf[0..<r])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Reads exactly `n` bytes (or fewer on close/timeout).
    func readSync(exactly n: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < n {
            let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, n - out.count, 0) }
            if r <= 0 { break }
            out.append(contentsOf: buf[0..<r])
        }
        return out
    }
}

/// A response parsed from raw bytes (status, headers, body), for assertions.
struct ParsedResponse: Sendable {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]
    var bodyText: String { String(decoding: body, as: UTF8.self) }
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }

    static func parseAll(_ data: [UInt8]) -> [ParsedResponse] {
        var out: [ParsedResponse] = []
        var i = 0
        while let (r, used) = parseOne(Array(data[i...])) {
            out.append(r)
            i += used
        }
        return out
    }

    static func parseOne(_ d: [UInt8]) -> (ParsedResponse, Int)? {
        guard let end = find(d, Array("\r\n\r\n".utf8), from: 0) else { return nil }
        let head = String(decoding: d[0..<end], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        let headers = lines.map { l -> (String, String) in
            let p = l.split(separator: ":", maxSplits: 1)
            return (String(p[0]), p.count > 1 ? p[1].trimmingCharacters(in: .whitespaces) : "")
        }
        var r = ParsedResponse(status: status, headers: headers, body: [])
        var pos = end + 4
        if status == 100 || status == 101 { return (r, pos) }
        if let te = r.header("Transfer-Encoding"), te == "chunked" {
            while true {
                guard let le = find(d, [13, 10], from: pos) else { return nil }
                guard let size = Int(String(decoding: d[pos..<le], as: UTF8.self), radix: 16) else { return nil }
                pos = le + 2
                if size == 0 {
                    guard d.count >= pos + 2 else { return nil }
                    pos += 2
                    break
                }
                guard d.count >= pos + size + 2 else { return nil }
                r.body.append(contentsOf: d[pos..<(pos + size)])
                pos += size + 2
            }
            return (r, pos)
        }
        let len = Int(r.header("Content-Length") ?? "0") ?? 0
        guard d.count >= pos + len else { return nil }
        r.body = Array(d[pos..<(pos + len)])
        return (r, pos + len)
    }

    static func find(_ d: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard d.count >= needle.count else { return nil }
        var i = from
        while i + needle.count <= d.count {
            if d[i] == needle[0] && Array(d[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }
}

/// Runs an outside program and returns (exit status, stdout, stderr), through Kiln's own spawn.
func run(_ program: String, _ args: [String], stdin: Data? = nil) async throws -> (Int32, String, String) {
    let o = try await ProcessRunner.run(program, args, stdin: stdin.map { Array($0) }, timeout: 120)
    return (o.status, o.stdoutText, o.stderr)
}

func which(_ program: String) -> Bool { ProcessRunner.which(program) != nil }

func parse(_ s: String, limits: ParserLimits = ParserLimits()) -> HeadParseResult {
    Array(s.utf8).withUnsafeBufferPointer { parseRequestHead($0, limits: limits) }
}
