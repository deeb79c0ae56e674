import Foundation
import Glibc
import KilnApp
import KilnCore
import KilnHTTP
import KilnStore
@_exported import KilnTestClients
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A whole Kiln application for one test, stopped (and awaited) when `body` returns.
func withTestApp<T>(
    _ mode: TestApp.Mode = .socket, configure: (inout Config) -> Void = { _ in },
    _ body: (TestApp) async throws -> T
) async throws -> T {
    try await using(try TestApp(mode, configure: configure), body)
}

/// A whole Kiln server for a test, on a fresh data dir: on 127.0.0.1 with a free port (`.socket`,
/// where the socket is the point: streams, WebSockets, real clients), or answering through its
/// router with no socket at all (`.inProcess`, on a throwaway in-memory database).
final class TestApp: Stoppable, @unchecked Sendable {
    enum Mode: Sendable { case socket, inProcess }

    let app: Application
    let dataDir: String
    /// The PostgreSQL database of this app (KILN_TEST_STORE=postgres), nil on SQLite.
    let databaseURL: String?
    let mode: Mode
    let port: Int
    var base: String { mode == .socket ? "http://127.0.0.1:\(port)" : "inprocess://kiln" }

    init(_ mode: Mode = .socket, clock: any Clock = SystemClock(), configure: (inout Config) -> Void = { _ in }) throws
    {
        self.mode = mode
        dataDir = NSTemporaryDirectory() + "kiln-app-\(UUID().uuidString)"
        var config = Config()
        config.host = "127.0.0.1"
        config.port = 0
        config.dataDir = dataDir
        config.eventLoops = 2
        config.publicDir = TestApp.packageRoot + "/Public"
        if let url = try TestApp.freshPostgresDatabase() {
            config.databaseURL = url
            config.databasePool = 4
        }
        configure(&config)
        databaseURL = config.databaseURL
        app = try Application(config: config, clock: clock)
        if mode == .socket {
            port = try app.start()
        } else {
            try app.startModules()
            port = 0
        }
    }

    func stop() async { await app.shutdown() }

    /// One request without a session, over the socket or in process as the app runs.
    func request(
        _ method: String, _ path: String, headers: [String: String] = [:], body: Data? = nil
    ) async throws -> HTTPResult {
        mode == .socket
            ? try await http(method, base + path, headers: headers, body: body)
            : try await inProcess(app, method, path, headers: headers, body: body)
    }

    /// With KILN_TEST_STORE=postgres (scripts/test.sh's second pass), each app gets a new database
    /// of its own in the throwaway server at KILN_TEST_PG_URL; otherwise SQLite in its data dir.
    static func freshPostgresDatabase() throws -> String? {
        let env = ProcessInfo.processInfo.environment
        guard env["KILN_TEST_STORE"] == "postgres", let url = env["KILN_TEST_PG_URL"] else { return nil }
        let name = "kiln_t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        let admin = try PostgresConnection(config: try PostgresConfig(url: url))
        defer { admin.close() }
        try admin.simpleQuery("CREATE DATABASE \(name)")
        return url.replacingOccurrences(of: "/kiln_test?", with: "/\(name)?")
    }

    /// What names this app's store to the `kiln` binary: its data dir, and its database on PostgreSQL.
    var storeArguments: [String] { ["--data-dir", dataDir] + (databaseURL.map { ["--database-url", $0] } ?? []) }

    static var onPostgres: Bool {
        ProcessInfo.processInfo.environment["KILN_TEST_STORE"] == "postgres"
            && ProcessInfo.processInfo.environment["KILN_TEST_PG_URL"] != nil
    }

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

/// URLSession without any cookie storage: tests set cookies explicitly (cookies ignore ports,
/// so a shared jar would leak sessions between parallel tests).
let testSession: URLSession = {
    let c = URLSessionConfiguration.ephemeral
    c.httpCookieAcceptPolicy = .never
    c.httpShouldSetCookies = false
    c.httpCookieStorage = nil
    // Generous: under the whole suite's load on two cores a queued request can wait a minute (a
    // test that waits for something that never comes still fails, only later).
    c.timeoutIntervalForRequest = 180
    c.httpMaximumConnectionsPerHost = 128
    return URLSession(configuration: c)
}()

/// A real HTTP client request (URLSession, on its own threads).
func http(
    _ method: String, _ url: String, headers: [String: String] = [:], body: Data? = nil
) async throws -> HTTPResult {
    var req = URLRequest(url: URL(string: url)!)
    req.httpMethod = method
    for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
    req.httpBody = body
    let (data, response) = try await testSession.data(for: req)
    let h = response as! HTTPURLResponse
    var headers: [String: String] = [:]
    for (k, v) in h.allHeaderFields { headers[String(describing: k).lowercased()] = String(describing: v) }
    return HTTPResult(status: h.statusCode, headers: headers, body: data)
}

/// A request answered by the application's router, with no socket: streamed bodies (SSE) are
/// collected until their producer ends.
func inProcess(
    _ app: Application, _ method: String, _ path: String, headers: [String: String] = [:], body: Data? = nil
) async throws -> HTTPResult {
    var h = HTTPHeaders()
    h.add("Host", "localhost")
    for (k, v) in headers { h.add(k, v) }
    let req = try Request(method: HTTPMethod(method), target: path, headers: h, body: body.map { Array($0) } ?? [])
    let res = await app.responder.handle(req)
    var out: [String: String] = [:]
    for f in res.headers.fields {
        let k = f.name.lowercased()
        out[k] = out[k].map { $0 + ", " + f.value } ?? f.value
    }
    switch res.body {
    case .bytes(let b):
        return HTTPResult(status: res.status.code, headers: out, body: Data(b))
    case .stream(let produce):
        let sink = CollectingWriter()
        try? await produce(sink)
        return HTTPResult(status: res.status.code, headers: out, body: Data(sink.bytes))
    case .webSocket:
        return HTTPResult(status: res.status.code, headers: out, body: Data())
    }
}

/// Collects a streamed body in memory (in-process requests).
final class CollectingWriter: ResponseBodyWriter {
    private let collected = Mutex<[UInt8]>([])
    var bytes: [UInt8] { collected.withLock { $0 } }
    func write(_ bytes: [UInt8]) async throws { collected.withLock { $0 += bytes } }
    func push(_ bytes: [UInt8], limit: Int) -> Bool {
        collected.withLock { $0 += bytes }
        return true
    }
}

func json(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

/// Runs a program to completion (Kiln's own spawn, not Foundation.Process).
func runProgram(_ path: String, _ args: [String]) async -> (Int32, String, String) {
    do {
        let o = try await ProcessRunner.run(path, args, timeout: 120)
        return (o.status, o.stdoutText, o.stderr)
    } catch { return (-1, "", "\(error)") }
}

func which(_ program: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(program)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return nil
}

/// A signed-in client: keeps its session cookie and CSRF token like a browser would. It talks to a
/// `TestApp` over its socket or in process, as the app was started.
final class Agent: @unchecked Sendable {
    let base: String
    let app: Application?
    var session: String?
    var csrf: String?
    var bearer: String?
    var origin: String?
    /// Sent as X-Forwarded-For (an app started with --trusted-proxy 127.0.0.1/32 takes it as the client).
    var forwardedFor: String?

    init(_ base: String) {
        self.base = base
        app = nil
    }

    init(_ t: TestApp) {
        base = t.base
        app = t.mode == .inProcess ? t.app : nil
    }

    func call(
        _ method: String, _ path: String, json body: [String: Any]? = nil, headers extra: [String: String] = [:],
        csrf sendCSRF: Bool = true
    ) async throws -> HTTPResult {
        try await call(method, path, raw: body.map(json), headers: extra, csrf: sendCSRF)
    }

    /// A request with exactly these body bytes (Content-Type from `headers`, else JSON).
    func call(
        _ method: String, _ path: String, body: [UInt8], headers extra: [String: String] = [:]
    ) async throws -> HTTPResult {
        var h = extra
        if h["Content-Type"] == nil { h["Content-Type"] = "application/json" }
        return try await call(method, path, raw: Data(body), headers: h, csrf: true)
    }

    func call(
        _ method: String, _ path: String, raw data: Data?, headers extra: [String: String], csrf sendCSRF: Bool
    ) async throws -> HTTPResult {
        var h = extra
        if let session { h["Cookie"] = "kiln_session=\(session)" }
        if let bearer { h["Authorization"] = "Bearer \(bearer)" }
        if sendCSRF, let csrf, !["GET", "HEAD"].contains(method) { h["X-CSRF-Token"] = csrf }
        if let origin { h["Origin"] = origin }
        if let forwardedFor { h["X-Forwarded-For"] = forwardedFor }
        if data != nil && h["Content-Type"] == nil { h["Content-Type"] = "application/json" }
        let r: HTTPResult
        if let app {
            r = try await inProcess(app, method, path, headers: h, body: data)
        } else {
            r = try await http(method, base + path, headers: h, body: data)
        }
        if let sc = r.headers["set-cookie"], sc.hasPrefix("kiln_session=") {
            let v = String(sc.dropFirst("kiln_session=".count).prefix { $0 != ";" })
            session = v.isEmpty ? nil : v
        }
        if let t = r.json["csrf_token"] as? String { csrf = t }
        return r
    }

    @discardableResult
    func login(_ email: String, _ password: String) async throws -> HTTPResult {
        try await call("POST", "/auth/login", json: ["email": email, "password": password])
    }
}
