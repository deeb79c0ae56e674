import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Glibc
import KilnApp
import KilnCore

/// A whole Kiln server in-process on 127.0.0.1 with a free port and a fresh data dir.
final class TestApp: @unchecked Sendable {
    let app: Application
    let dataDir: String
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    init(configure: (inout Config) -> Void = { _ in }) throws {
        dataDir = NSTemporaryDirectory() + "kiln-app-\(UUID().uuidString)"
        var config = Config()
        config.host = "127.0.0.1"
        config.port = 0
        config.dataDir = dataDir
        config.eventLoops = 2
        config.publicDir = TestApp.packageRoot + "/Public"
        configure(&config)
        app = try Application(config: config)
        port = try app.start()
    }

    func stop() async { await app.shutdown() }

    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The built `kiln` executable (scripts/test.sh builds it before the tests run).
    static var kilnBinary: String { packageRoot + "/.build/debug/kiln" }
}

struct HTTPResult: Sendable {
    let status: Int
    let headers: [String: String]
    let body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
}

/// A real HTTP client request (URLSession, on its own threads).
func http(_ method: String, _ url: String, headers: [String: String] = [:], body: Data? = nil) async throws -> HTTPResult {
    var req = URLRequest(url: URL(string: url)!)
    req.httpMethod = method
    for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
    req.httpBody = body
    let (data, response) = try await URLSession.shared.data(for: req)
    let h = response as! HTTPURLResponse
    var headers: [String: String] = [:]
    for (k, v) in h.allHeaderFields { headers[String(describing: k).lowercased()] = String(describing: v) }
    return HTTPResult(status: h.statusCode, headers: headers, body: data)
}

func json(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { c in Thread { c.resume(returning: body()) }.start() }
}

/// Runs a program to completion off the cooperative pool.
func runProgram(_ path: String, _ args: [String], env: [String: String]? = nil) async -> (Int32, String, String) {
    await offPool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        if let env { p.environment = env }
        let o = Pipe(), e = Pipe()
        p.standardOutput = o; p.standardError = e
        do { try p.run() } catch { return (-1, "", "\(error)") }
        let od = o.fileHandleForReading.readDataToEndOfFile()
        let ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
    }
}

func which(_ program: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(program)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return nil
}
