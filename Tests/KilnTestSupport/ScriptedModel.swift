import Foundation
import Glibc
import KilnApp
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnAuth

/// A model provider for tests: a real HTTP server speaking the OpenAI-compatible streaming protocol
/// (`/v1/chat/completions`) and Anthropic's (`/v1/messages`), replaying scripted turns in order.
final class ScriptedModel: @unchecked Sendable {
    enum Step: Sendable {
        /// SSE `data:` payloads, then `[DONE]` (OpenAI) — or Anthropic events as (event, data).
        case openai([String], delayMs: Int = 0)
        case anthropic([(String, String)])
        /// An error status with a JSON body.
        case status(Int, String)
        /// Payloads, then the stream ends without finishing.
        case cut([String])
    }
    let steps = Mutex<[Step]>([])
    let bodies = Mutex<[[UInt8]]>([])
    /// The request bodies the provider received, parsed.
    var requests: [[String: Any]] {
        bodies.withLock { $0 }.map { ((try? JSONSerialization.jsonObject(with: Data($0))) as? [String: Any]) ?? [:] }
    }
    let server: HTTPServer
    var port: Int { server.port }
    var base: String { "http://127.0.0.1:\(port)" }

    init() throws {
        let router = Router()
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.eventLoops = 1
        server = try HTTPServer(configuration: config, responder: router.responder())
        let handler: Handler = { [unowned self] req, ctx in
            let body = try await req.bodyBytes(context: ctx)
            self.bodies.withLock { $0.append(body) }
            let step = self.steps.withLock { s -> Step? in s.isEmpty ? nil : s.removeFirst() }
            switch step {
            case nil:
                return Response(
                    status: HTTPStatus(500), headers: ["Content-Type": "application/json"],
                    body: .bytes(Array(#"{"error":{"message":"script exhausted"}}"#.utf8)))
            case .status(let code, let text):
                return Response(
                    status: HTTPStatus(code), headers: ["Content-Type": "application/json", "Retry-After": "0"],
                    body: .bytes(Array(text.utf8)))
            case .openai(let chunks, let delay):
                return Response.sse { sse in
                    for c in chunks {
                        if delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
                        try await sse.send(data: c)
                    }
                    try await sse.send(data: "[DONE]")
                }
            case .anthropic(let events):
                return Response.sse { sse in for (e, d) in events { try await sse.send(event: e, data: d) } }
            case .cut(let chunks):
                return Response.sse { sse in for c in chunks { try await sse.send(data: c) } }
            }
        }
        router.on(.POST, "/v1/chat/completions", RouteMetadata(), handler)
        router.on(.POST, "/v1/messages", RouteMetadata(), handler)
        try server.start()
    }

    func script(_ s: [Step]) { steps.withLock { $0 += s } }
    func stop() async { await server.shutdown() }

    // OpenAI chunk helpers.
    static func text(_ t: String) -> String { jsonText(["choices": [["index": 0, "delta": ["content": t]]]]) }
    static func toolStart(_ i: Int, id: String, name: String, args: String = "") -> String {
        jsonText([
            "choices": [
                [
                    "index": 0,
                    "delta": [
                        "tool_calls": [
                            ["index": i, "id": id, "type": "function", "function": ["name": name, "arguments": args]]
                        ]
                    ],
                ]
            ]
        ])
    }
    static func toolArgs(_ i: Int, _ args: String) -> String {
        jsonText(["choices": [["index": 0, "delta": ["tool_calls": [["index": i, "function": ["arguments": args]]]]]]])
    }
    static func finish(_ reason: String, input: Int = 100, output: Int = 20) -> [String] {
        [
            jsonText(["choices": [["index": 0, "delta": [:] as [String: Any], "finish_reason": reason]]]),
            jsonText([
                "choices": [] as [Any],
                "usage": ["prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output],
            ]),
        ]
    }
    /// One turn calling `tool` with `args` (split in three chunks).
    static func call(_ id: String, _ tool: String, _ args: [String: Any], index: Int = 0) -> [String] {
        let a = jsonText(args)
        let third = max(1, a.count / 3)
        return [
            toolStart(index, id: id, name: tool, args: String(a.prefix(third))),
            toolArgs(index, String(a.dropFirst(third).prefix(third))), toolArgs(index, String(a.dropFirst(2 * third))),
        ]
    }
    static func jsonText(_ o: Any) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
    }
}

struct AgentFixture: Stoppable {
    let f: ShellFixture
    let model: ScriptedModel

    static func make(
        anthropic: Bool = false, configure: @escaping (inout Config) -> Void = { _ in }
    ) async throws -> AgentFixture {
        let model = try ScriptedModel()
        let f = try await ShellFixture.make([
            "a.txt": "alpha\nbeta\ngamma\n",
            "c.txt": "one\ntwo\n",
            "notes.md": "TODO: tidy up\n",
            "Makefile": "test:\n\t@echo 'ok 1 - first'\n\t@echo 'ok 2 - second'\n",
        ]) { c in
            c.set("--llm-base-url", anthropic ? model.base : model.base + "/v1")
            c.set("--llm-provider", anthropic ? "anthropic" : "openai")
            c.set("--llm-model", "test-model")
            c.set("--llm-api-key", "sk-test-not-a-secret")
            configure(&c)
        }
        return AgentFixture(f: f, model: model)
    }

    func stop() async {
        await f.t.stop()
        await model.stop()
    }

    func follow(_ run: String, cursor: Int? = nil) async throws -> HTTPResult {
        try await f.a.call("GET", "/api/agent/follow?run_id=\(run)" + (cursor.map { "&cursor=\($0)" } ?? ""))
    }
}

/// A price for the scripted model, so costs are real numbers: $2 in / $8 out per million tokens.
func testPricingFile() throws -> String {
    let p = NSTemporaryDirectory() + "kiln-pricing-\(UUID().uuidString).json"
    try #"{"models": {"test-model": {"input_per_mtok_usd_micros": 2000000, "output_per_mtok_usd_micros": 8000000}}}"#
        .write(toFile: p, atomically: true, encoding: .utf8)
    return p
}

extension AgentFixture {
    static func priced(configure: @escaping (inout Config) -> Void = { _ in }) async throws -> AgentFixture {
        let model = try ScriptedModel()
        let pricing = try testPricingFile()
        let f = try await ShellFixture.make(["a.txt": "alpha\nbeta\ngamma\n", "c.txt": "one\ntwo\n"]) { c in
            c.set("--llm-base-url", model.base + "/v1")
            c.set("--llm-provider", "openai")
            c.set("--llm-model", "test-model")
            c.set("--pricing", pricing)
            configure(&c)
        }
        return AgentFixture(f: f, model: model)
    }

    /// Runs to the end (JSON start, then follow); returns the run id and its last event.
    func runToEnd(_ prompt: String = "go") async throws -> (String, SSEEventParsed?) {
        let r = try await f.a.call(
            "POST", "/api/agent/run", json: ["project_id": f.pid, "prompt": prompt],
            headers: ["Accept": "application/json"])
        let run = try #require(r.json["run_id"] as? String, "\(r.text)")
        return (run, parseSSE(try await follow(run).text).last)
    }

    func chainRows() async throws -> [Row] {
        let ws = f.ws
        return try await f.t.app.services.db.read { tx in
            try tx.query("SELECT * FROM receipts WHERE ws_id = ? ORDER BY seq", ws)
        }
    }
}
