// kiln-bench: a KilnHTTP server used only for conformance checks and benchmarks (never by
// users). Routes and bodies match the Hummingbird peer in shared/bench/peer-hb.
import Foundation
import KilnHTTP

struct Message: Codable { let message: String }
struct EchoBody: Codable {
    let id: Int
    let name: String
    let tags: [String]
    let active: Bool
}
struct AuthReply: Codable {
    let message: String
    let user: String
}

let tokens: [String: String] = [
    "token-alice-0123456789": "alice",
    "token-bob-9876543210": "bob",
]

var host = "127.0.0.1"
var port = Int(ProcessInfo.processInfo.environment["PORT"] ?? "") ?? 18090
var loops: Int? = nil
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--host": host = args.popFirst() ?? host
    case "--port": port = Int(args.popFirst() ?? "") ?? port
    case "--loops": loops = Int(args.popFirst() ?? "")
    case "--help", "-h":
        print("usage: kiln-bench [--host 127.0.0.1] [--port N] [--loops N]   (PORT in the environment works too)")
        exit(0)
    default:
        FileHandle.standardError.write(Data("kiln-bench: unknown argument \(a)\n".utf8))
        exit(2)
    }
}

let hello = Array("Hello, world!".utf8)
let router = Router()
router.get("/hello") { _, _ in Response(headers: ["Content-Type": "text/plain; charset=utf-8"], body: .bytes(hello)) }
router.get("/json") { _, _ in
    Response(
        headers: ["Content-Type": "application/json; charset=utf-8"],
        body: .bytes(Array(try JSONEncoder().encode(Message(message: "Hello, world!")))))
}
router.post("/echo") { request, _ in
    guard case .buffer(let bytes) = request.body else { throw HTTPError.badRequest("expected a body") }
    let value: EchoBody
    do { value = try JSONDecoder().decode(EchoBody.self, from: Data(bytes)) } catch {
        throw HTTPError.badRequest("invalid JSON body")
    }
    return Response(
        headers: ["Content-Type": "application/json; charset=utf-8"],
        body: .bytes(Array(try JSONEncoder().encode(value))))
}
router.get("/auth/json") { request, _ in
    guard let header = request.headers["Authorization"], header.hasPrefix("Bearer "),
        let user = tokens[String(header.dropFirst(7))]
    else { throw HTTPError(.unauthorized, message: "A valid bearer token is required") }
    return Response(
        headers: ["Content-Type": "application/json; charset=utf-8"],
        body: .bytes(Array(try JSONEncoder().encode(AuthReply(message: "Hello, \(user)!", user: user)))))
}
router.get("/ws/echo") { request, _ in
    try WebSocket.upgrade(request, settings: WebSocketSettings(maxMessageSize: 64 << 20, maxQueuedBytes: 32 << 20)) {
        ws in
        for await message in ws.messages { try await ws.send(message) }
    }
}

var config = ServerConfiguration()
config.host = host
config.port = port
if let loops { config.eventLoops = loops }
do {
    let server = try HTTPServer(configuration: config, responder: router.responder())
    try server.start()
    FileHandle.standardOutput.write(Data("kiln-bench listening on \(host):\(server.port)\n".utf8))
    try await server.runUntilSignal()
} catch {
    FileHandle.standardError.write(Data("kiln-bench: \(error)\n".utf8))
    exit(1)
}
