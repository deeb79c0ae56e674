import Foundation
import Glibc
import KilnTestClients
import Testing

@testable import KilnHTTP

/// The client socket under Kiln's outbound HTTP, SMTP and PostgreSQL clients, against Kiln's own TLS
/// server and raw sockets: verification by CA file and host name, plain bytes before a handshake
/// refused, deadlines and the end of a stream.
@Suite struct ClientSocketTests {
    static func get(_ s: ClientSocket) throws -> String {
        try s.write(Array("GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
        var got: [UInt8] = []
        while let chunk = try s.receive(), !chunk.isEmpty { got += chunk }
        return String(decoding: got, as: UTF8.self)
    }

    @Test(.enabled(if: which("openssl"))) func verifiesTheChainAndTheName() async throws {
        let dir = try await selfSignedCertificate()
        let server = try LiveServer(LiveServerTests.router()) {
            $0.tlsCertificatePath = "\(dir)/cert.pem"
            $0.tlsKeyPath = "\(dir)/key.pem"
        }
        // The client blocks on its socket, so it runs on a thread of its own (and the expectations are
        // checked back here, in the test): on the cooperative pool it would hold one of its (two, here)
        // threads that the server's handler needs to answer.
        let seen = try await using(server) { server in
            let port = server.port
            return try await offPool { () -> Result<Seen, any Error> in Result { try Self.verify(port: port, dir: dir) }
            }
            .get()
        }
        for (description, answer) in seen.verified {
            #expect(description?.hasPrefix("TLSv1.") == true)
            #expect(answer.hasPrefix("HTTP/1.1 200") && answer.hasSuffix("Hello, world!"), "\(answer)")
        }
        #expect(seen.refused.count == 2)
        for refused in seen.refused { #expect(refused?.certificate != nil, "\(String(describing: refused))") }
        #expect(seen.unverified.hasPrefix("HTTP/1.1 200"))
    }

    struct Seen: Sendable {
        var verified: [(String?, String)] = []
        var refused: [ClientSocket.Failure?] = []
        var unverified = ""
    }

    static func verify(port: Int, dir: String) throws -> Seen {
        var seen = Seen()
        func connect() throws -> ClientSocket {
            try ClientSocket(host: "127.0.0.1", port: port, timeout: 5, numericHost: true, readTimeout: 30)
        }
        for name in ["localhost", "127.0.0.1"] {
            let s = try connect()
            try s.startTLS(hostName: name, verify: true, rootCert: "\(dir)/cert.pem")
            seen.verified.append((s.isTLS ? s.tlsDescription : nil, try Self.get(s)))
        }
        // Another name, or the system's roots (which do not hold this certificate): refused, and why.
        for (name, root) in [("example.com", "\(dir)/cert.pem"), ("localhost", nil)] as [(String, String?)] {
            let s = try connect()
            do {
                try s.startTLS(hostName: name, verify: true, rootCert: root)
                seen.refused.append(nil)
            } catch let failure as ClientSocket.Failure { seen.refused.append(failure) }
        }
        // Without verification (sslmode=require, a local relay) the same certificate is taken.
        let s = try connect()
        try s.startTLS(hostName: "example.com", verify: false)
        seen.unverified = try Self.get(s)
        return seen
    }

    /// A TCP socket bound to a free port of 127.0.0.1 (not listening yet), and the port.
    static func bound() -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, Int(UInt16(bigEndian: a.sin_port)))
    }

    /// A listening socket on 127.0.0.1; `serve` runs on a thread with the first accepted connection.
    static func listener(_ serve: @escaping @Sendable (Int32) -> Void) throws -> (port: Int, fd: Int32) {
        let (fd, port) = bound()
        listen(fd, 4)
        Thread {
            let c = accept(fd, nil, nil)
            if c >= 0 { serve(c) }
        }.start()
        return (port, fd)
    }

    @Test func plainBytesBeforeTheHandshakeAreRefused() throws {
        // A man in the middle answers "yes, TLS" and adds his own bytes to be read as if encrypted.
        let (port, fd) = try Self.listener { c in
            let bytes = Array("Sinjected".utf8)
            _ = send(c, bytes, bytes.count, 0)
            sleep(20)  // long enough for a loaded machine; the test is done well before
            close(c)
        }
        defer { close(fd) }
        let s = try ClientSocket(host: "127.0.0.1", port: port, timeout: 5, readTimeout: 5)
        #expect(try s.readByte() == UInt8(ascii: "S"))
        let refused = #expect(throws: ClientSocket.Failure.self) { try s.startTLS(hostName: nil, verify: false) }
        #expect(refused?.description.contains("before the TLS handshake") == true)
    }

    @Test func deadlinesEndWaitsAndLinesAreRead() throws {
        let (port, fd) = try Self.listener { c in
            let bytes = Array("220 ready\r\n250-first\r\n250 last\n".utf8)
            _ = send(c, bytes, bytes.count, 0)
            sleep(20)  // then nothing more for a while (longer than a loaded machine needs)
            close(c)
        }
        let s = try ClientSocket(host: "127.0.0.1", port: port, timeout: 5, readTimeout: 5)
        #expect(try s.readLine() == "220 ready")
        #expect(try s.readLine() == "250-first")
        #expect(try s.readLine() == "250 last")
        s.deadline = Date().addingTimeInterval(0.3)
        #expect(try s.receive() == nil, "the deadline ends the wait")
        let late = #expect(throws: ClientSocket.Failure.self) { _ = try s.readByte() }
        #expect(late?.timedOut == true)
        close(fd)
        // Nobody listening: refused, not a hang. (The port stays bound, not listening, while the
        // test connects: a port given back could be taken at once by another test's server.)
        let (bound, free) = Self.bound()
        defer { close(bound) }
        let refused = #expect(throws: ClientSocket.Failure.self) {
            _ = try ClientSocket(host: "127.0.0.1", port: free, timeout: 2)
        }
        #expect(refused?.timedOut == false)
    }
}
