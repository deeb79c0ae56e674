import Foundation
import KilnTestClients
import Testing

@testable import KilnHTTP

/// The engine judged by an outside client: curl.
@Suite(.enabled(if: which("curl"))) struct CurlTests {
    @Test func keepAliveReusesTheConnection() async throws {
        let s = try LiveServer(LiveServerTests.router())
        try await using(s) { s in
            let (code, out, err) = try await run("curl", ["-sv", "\(s.base)/hello", "\(s.base)/hello"])
            #expect(code == 0)
            #expect(out == "Hello, world!Hello, world!")
            #expect(err.contains("Re-using existing connection"))
        }
    }

    @Test func chunkedUpload() async throws {
        let s = try LiveServer(LiveServerTests.router())
        try await using(s) { s in
            let payload = String(repeating: "kiln ", count: 50_000)
            let (code, out, err) = try await run(
                "curl",
                [
                    "-sv", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: text/plain",
                    "--data-binary", "@-", "\(s.base)/echo",
                ], stdin: Data(payload.utf8))
            #expect(code == 0)
            #expect(err.contains("Transfer-Encoding: chunked"))
            #expect(out == payload)
        }
    }

    @Test func headRequest() async throws {
        let s = try LiveServer(LiveServerTests.router())
        try await using(s) { s in
            let (code, out, _) = try await run("curl", ["-sI", "\(s.base)/hello"])
            #expect(code == 0)
            #expect(out.contains("HTTP/1.1 200 OK"))
            #expect(out.contains("Content-Length: 13"))
            #expect(!out.contains("Hello, world!"))
        }
    }

    @Test func expectContinueUpload() async throws {
        let s = try LiveServer(LiveServerTests.router())
        try await using(s) { s in
            let body = String(repeating: "x", count: 2_000_000)
            let (code, out, err) = try await run(
                "curl",
                [
                    "-sv", "-H", "Expect: 100-continue", "-H", "Content-Type: text/plain",
                    "--data-binary", "@-", "\(s.base)/echo",
                ], stdin: Data(body.utf8))
            #expect(code == 0)
            #expect(err.contains("HTTP/1.1 100 Continue"))
            #expect(out.count == body.count)
        }
    }

    @Test func http10() async throws {
        let s = try LiveServer(LiveServerTests.router())
        try await using(s) { s in
            let (code, out, err) = try await run("curl", ["-sv", "--http1.0", "\(s.base)/hello"])
            #expect(code == 0)
            #expect(out == "Hello, world!")
            #expect(err.contains("Connection: close"))
        }
    }

    @Test func bodyLimitIs413() async throws {
        let s = try LiveServer(LiveServerTests.router()) { $0.maxBodySize = 1000 }
        try await using(s) { s in
            let (code, out, _) = try await run(
                "curl",
                [
                    "-s", "-w", "%{http_code}", "-H", "Content-Type: text/plain", "--data-binary", "@-",
                    "\(s.base)/echo",
                ], stdin: Data(repeating: 65, count: 5000))
            #expect(code == 0)
            #expect(out.hasSuffix("413"))
            #expect(out.contains("payload_too_large"))
        }
    }

    @Test(.enabled(if: which("openssl"))) func httpsWithSelfSignedCertificate() async throws {
        let dir = try await selfSignedCertificate()
        let s = try LiveServer(LiveServerTests.router()) {
            $0.tlsCertificatePath = "\(dir)/cert.pem"
            $0.tlsKeyPath = "\(dir)/key.pem"
        }
        try await using(s) { s in
            let base = "https://localhost:\(s.port)"
            let (code, out, err) = try await run(
                "curl", ["-sv", "--cacert", "\(dir)/cert.pem", "\(base)/hello", "\(base)/hello"])
            #expect(code == 0, "\(err)")
            #expect(out == "Hello, world!Hello, world!")
            #expect(err.contains("ALPN: server accepted http/1.1"))
            #expect(err.contains("TLSv1.3"))
            // A POST with a body over TLS, and TLS 1.2 is still accepted; TLS 1.1 is not.
            let (c2, o2, _) = try await run(
                "curl",
                [
                    "-s", "--tlsv1.2", "--tls-max", "1.2", "--cacert", "\(dir)/cert.pem",
                    "-H", "Content-Type: text/plain", "-d", "over tls", "\(s.base)/echo",
                ])
            #expect(c2 == 0 && o2 == "over tls")
            let (c3, _, _) = try await run(
                "curl", ["-s", "--tlsv1.1", "--tls-max", "1.1", "--cacert", "\(dir)/cert.pem", "\(s.base)/hello"])
            #expect(c3 != 0)
            // Plain HTTP to the TLS port fails cleanly and the server keeps serving.
            let (c4, _, _) = try await run("curl", ["-s", "--max-time", "3", "http://127.0.0.1:\(s.port)/hello"])
            #expect(c4 != 0)
            let (c5, o5, _) = try await run(
                "curl",
                ["-s", "--cacert", "\(dir)/cert.pem", "\(s.base)/big", "-o", "/dev/null", "-w", "%{size_download}"])
            #expect(c5 == 0 && o5 == "\(4 << 20)")
        }
    }
}
