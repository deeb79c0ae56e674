import Foundation
import Glibc

/// A blocking TCP client that sends raw bytes: what a hostile or unusual client would do.
/// Runs blocking work on its own thread so it never starves the cooperative pool that the
/// server's handlers run on.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { c in Thread { c.resume(returning: body()) }.start() }
}

public final class RawClient: @unchecked Sendable {
    public private(set) var fd: Int32

    public init(port: Int, timeout: Double = 30) throws {
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
    public func closeNow() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    public func send(_ s: String) { send(Array(s.utf8)) }
    public func send(_ b: [UInt8]) {
        var off = 0
        while off < b.count {
            let n = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, b.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    public func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes or the timeout passes.
    public func readAllSync() -> [UInt8] {
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
    public func readResponsesSync(_ count: Int) -> [ParsedResponse] {
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

    public func readResponse() async -> ParsedResponse? { await readResponses(1).first }
    public func readAll() async -> [UInt8] { await offPool { self.readAllSync() } }
    /// Reads until the peer closes (true) or the client's own read timeout passes (false).
    public func waitForClose() async -> Bool {
        await offPool {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buf.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, 65536, 0) }
                if n > 0 { continue }
                return n == 0 || errno == ECONNRESET
            }
        }
    }
    public func readResponses(_ count: Int) async -> [ParsedResponse] {
        await offPool { self.readResponsesSync(count) }
    }
    public func read(until marker: String) async -> String { await offPool { self.readSync(until: marker) } }
    public func read(exactly n: Int) async -> [UInt8] { await offPool { self.readSync(exactly: n) } }

    /// Reads until the text received contains `marker` (or close/timeout).
    public func readSync(until marker: String) -> String {
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
    public func readSync(exactly n: Int) -> [UInt8] {
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
