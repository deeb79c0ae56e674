import Foundation
import Glibc
import KilnCore
import KilnTestClients
import Testing

@testable import KilnHTTP

/// A live server on 127.0.0.1 with a free port, for tests that need a real socket.
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

/// Runs an outside program and returns (exit status, stdout, stderr), through Kiln's own spawn.
func run(_ program: String, _ args: [String], stdin: Data? = nil) async throws -> (Int32, String, String) {
    let o = try await ProcessRunner.run(program, args, stdin: stdin.map { Array($0) }, timeout: 120)
    return (o.status, o.stdoutText, o.stderr)
}

func which(_ program: String) -> Bool { ProcessRunner.which(program) != nil }

func parse(_ s: String, limits: ParserLimits = ParserLimits()) -> HeadParseResult {
    Array(s.utf8).withUnsafeBufferPointer { parseRequestHead($0, limits: limits) }
}

/// A folder with `cert.pem` and `key.pem`: a self-signed certificate for localhost and 127.0.0.1
/// (made with the openssl command).
func selfSignedCertificate() async throws -> String {
    let dir = NSTemporaryDirectory() + "kiln-tls-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let (gen, _, genErr) = try await run(
        "openssl",
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "\(dir)/key.pem", "-out", "\(dir)/cert.pem", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
    try #require(gen == 0, "\(genErr)")
    return dir
}
