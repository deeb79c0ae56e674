import Foundation
import KilnCore
import KilnHTTP
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One message of a conversation, in a provider-neutral form.
public struct ChatMessage: Sendable, Codable, Equatable {
    public var role: String  // system, user, assistant, tool
    public var content: String
    public var toolCalls: [ToolCall]
    /// For role `tool`: the call this answers.
    public var toolCallId: String?
    public var toolName: String?

    public init(
        role: String, content: String, toolCalls: [ToolCall] = [], toolCallId: String? = nil, toolName: String? = nil
    ) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.toolCallId = toolCallId
        self.toolName = toolName
    }
}

public struct ToolCall: Sendable, Codable, Equatable {
    public var id: String
    public var name: String
    /// The raw JSON text of the arguments, as the model produced it.
    public var arguments: String
}

/// What one model turn produced.
public struct ModelTurn: Sendable {
    public var text = ""
    public var toolCalls: [ToolCall] = []
    public var inputTokens = 0
    public var outputTokens = 0
    public var stopReason: String?
}

public struct ModelRequest: Sendable {
    public var model: String
    public var system: String
    public var messages: [ChatMessage]
    public var tools: [ToolDescriptor]
    public var temperature: Double?
    public var maxTokens: Int
}

public struct ProviderError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// Worth another attempt (429, 5xx, a cut stream, a timeout).
    public let retryable: Bool
    public let retryAfter: Double?
}

/// A chat model behind an HTTP API.
public protocol ModelProvider: Sendable {
    var kind: String { get }
    /// Streams one turn; `onText` gets text deltas as they arrive.
    func turn(_ request: ModelRequest, onText: @escaping @Sendable (String) async -> Void) async throws -> ModelTurn
}

public struct ProviderSettings: Sendable {
    public var kind: String  // openai | anthropic
    public var baseURL: String
    public var apiKey: String?
    public var model: String
    public var timeout: Double

    static let baseURLFlag = "--llm-base-url", apiKeyFlag = "--llm-api-key", modelFlag = "--llm-model"
    static let providerFlag = "--llm-provider", timeoutFlag = "--llm-timeout"

    /// The model provider's options under `kiln serve`.
    static let options: [Config.Option] = [
        .text(
            baseURLFlag, env: "KILN_LLM_BASE_URL",
            help:
                "model provider base URL, e.g. http://127.0.0.1:8000/v1 (OpenAI-compatible) or https://api.anthropic.com"
        ),
        .text(apiKeyFlag, env: "KILN_LLM_API_KEY", help: "the provider's API key (prefer the environment variable)"),
        .text(modelFlag, env: "KILN_LLM_MODEL", help: "the default model name"),
        .choice(
            providerFlag, env: "KILN_LLM_PROVIDER", help: "openai or anthropic (default: guessed from the URL)",
            ["openai", "anthropic"]),
        .int(
            timeoutFlag, env: "KILN_LLM_TIMEOUT", help: "seconds to wait for provider output (default 120)",
            range: 1...3600),
    ]

    /// From the server config; nil when no provider is configured.
    public static func from(_ c: Config) -> ProviderSettings? {
        guard let base = c.string(baseURLFlag), !base.isEmpty else { return nil }
        let kind = c.string(providerFlag) ?? (base.contains("anthropic") ? "anthropic" : "openai")
        let model = c.string(modelFlag) ?? (kind == "anthropic" ? "claude-sonnet-4-5" : "gpt-4o-mini")
        return ProviderSettings(
            kind: kind, baseURL: base.hasSuffix("/") ? String(base.dropLast()) : base, apiKey: c.string(apiKeyFlag),
            model: model, timeout: c.double(timeoutFlag) ?? 120)
    }

    public func provider() -> any ModelProvider {
        kind == "anthropic" ? AnthropicProvider(settings: self) as any ModelProvider : OpenAIProvider(settings: self)
    }
}

/// Streams an HTTP response's body line by line (URLSession's delegate API, which Linux supports),
/// with a timeout between chunks and cancellation that cancels the request.
final class LineStream: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    struct Head: Sendable {
        let status: Int
        let headers: [String: String]
    }
    enum Event: Sendable { case head(Head), line(String), end((any Error)?) }

    let continuation: AsyncStream<Event>.Continuation
    let stream: AsyncStream<Event>
    private var buffer: [UInt8] = []
    private var task: URLSessionDataTask?
    private var session: URLSession?

    override init() {
        (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .unbounded)
        super.init()
    }

    func start(_ request: URLRequest) {
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = request.timeoutInterval
        config.httpCookieStorage = nil
        let s = URLSession(configuration: config, delegate: self, delegateQueue: nil)
        session = s
        task = s.dataTask(with: request)
        task?.resume()
    }

    func cancel() {
        task?.cancel()
        session?.invalidateAndCancel()
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        let h = response as? HTTPURLResponse
        var headers: [String: String] = [:]
        for (k, v) in h?.allHeaderFields ?? [:] { headers[String(describing: k).lowercased()] = String(describing: v) }
        continuation.yield(.head(Head(status: h?.statusCode ?? 0, headers: headers)))
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        buffer += data
        while let nl = buffer.firstIndex(of: 0x0A) {
            var line = Array(buffer[..<nl])
            buffer.removeSubrange(...nl)
            if line.last == 0x0D { line.removeLast() }
            continuation.yield(.line(String(decoding: line, as: UTF8.self)))
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        if !buffer.isEmpty {
            continuation.yield(.line(String(decoding: buffer, as: UTF8.self)))
            buffer = []
        }
        continuation.yield(.end(error))
        continuation.finish()
        session.finishTasksAndInvalidate()
    }
}

enum ProviderHTTP {
    /// POSTs `body` and hands each SSE `data:` payload (or, for a non-stream error, the whole body) to `onData`.
    /// Throws a retryable error for 429/5xx/cut streams, a final one for other 4xx.
    static func streamSSE(
        url: String, headers: [String: String], body: [UInt8], timeout: Double,
        onData: (String, String?) async throws -> Bool
    ) async throws {
        guard let u = URL(string: url) else {
            throw ProviderError(description: "The provider URL is not valid", retryable: false, retryAfter: nil)
        }
        var req = URLRequest(url: u, timeoutInterval: timeout)
        req.httpMethod = "POST"
        req.httpBody = Data(body)
        req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        req.setValue("text/event-stream", forHTTPHeaderField: "Accept")
        for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
        let ls = LineStream()
        try await withTaskCancellationHandler {
            ls.start(req)
            var status = 0
            var retryAfter: Double?
            var errorBody = ""
            var event: String? = nil
            var finished = false
            for await e in ls.stream {
                try Task.checkCancellation()
                switch e {
                case .head(let h):
                    status = h.status
                    retryAfter = h.headers["retry-after"].flatMap(Double.init)
                case .line(let line):
                    if status != 200 {
                        if errorBody.utf8.count < 4000 { errorBody += line + "\n" }
                        continue
                    }
                    if line.hasPrefix("event:") {
                        event = line.dropFirst(6).trimmingCharacters(in: .whitespaces)
                        continue
                    }
                    guard line.hasPrefix("data:") else {
                        if line.isEmpty { event = nil }
                        continue
                    }
                    let data = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
                    if try await onData(data, event) { finished = true }
                case .end(let error):
                    if Task.isCancelled { throw CancellationError() }
                    if let error, !finished {
                        throw ProviderError(
                            description: "The provider connection failed: \(error.localizedDescription)",
                            retryable: true, retryAfter: nil)
                    }
                }
            }
            if status == 429 || status >= 500 {
                throw ProviderError(
                    description: "The provider answered \(status)\(detail(errorBody))", retryable: true,
                    retryAfter: retryAfter)
            }
            if status != 200 {
                throw ProviderError(
                    description: "The provider refused the request (\(status))\(detail(errorBody))", retryable: false,
                    retryAfter: nil)
            }
            if !finished {
                throw ProviderError(
                    description: "The provider's stream ended before the answer was complete", retryable: true,
                    retryAfter: nil)
            }
        } onCancel: {
            ls.cancel()
        }
    }

    /// The provider's own error message, short, never echoing our request.
    static func detail(_ body: String) -> String {
        if let obj = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] {
            if let e = obj["error"] as? [String: Any], let m = e["message"] as? String {
                return ": " + String(m.prefix(300))
            }
            if let m = obj["message"] as? String { return ": " + String(m.prefix(300)) }
        }
        let t = body.trimmingCharacters(in: .whitespacesAndNewlines)
        return t.isEmpty ? "" : ": " + String(t.prefix(300))
    }

    static func json(_ s: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any]
    }
}

/// Retries a turn on 429/5xx/cut streams with exponential backoff (honouring Retry-After up to 20 s).
func withRetries<T: Sendable>(attempts: Int = 4, _ body: () async throws -> T) async throws -> T {
    var delay = 0.5
    for attempt in 1... {
        do { return try await body() } catch let e as ProviderError where e.retryable && attempt < attempts {
            try await Task.sleep(nanoseconds: UInt64(min(20, e.retryAfter ?? delay) * 1e9))
            delay *= 2
        }
    }
    fatalError("unreachable")
}

/// OpenAI chat completions with `stream: true` (also vLLM, Ollama, llama.cpp, LM Studio, most gateways).
struct OpenAIProvider: ModelProvider {
    let settings: ProviderSettings
    var kind: String { "openai" }

    func body(_ r: ModelRequest) -> [UInt8] {
        var messages: [JSONValue] = [["role": "system", "content": .string(r.system)]]
        for m in r.messages {
            switch m.role {
            case "assistant":
                var o: [String: JSONValue] = [
                    "role": "assistant",
                    "content": m.content.isEmpty && !m.toolCalls.isEmpty ? .null : .string(m.content),
                ]
                if !m.toolCalls.isEmpty {
                    o["tool_calls"] = .array(
                        m.toolCalls.map { c in
                            [
                                "id": .string(c.id), "type": "function",
                                "function": ["name": .string(c.name), "arguments": .string(c.arguments)],
                            ]
                        })
                }
                messages.append(.object(o))
            case "tool":
                messages.append([
                    "role": "tool", "tool_call_id": .string(m.toolCallId ?? ""), "content": .string(m.content),
                ])
            default:
                messages.append(["role": .string(m.role), "content": .string(m.content)])
            }
        }
        var o: [String: JSONValue] = [
            "model": .string(r.model), "messages": .array(messages), "stream": true,
            "stream_options": ["include_usage": true], "max_tokens": .int(r.maxTokens),
        ]
        if !r.tools.isEmpty {
            o["tools"] = .array(
                r.tools.map { t in
                    [
                        "type": "function",
                        "function": [
                            "name": .string(t.name), "description": .string(t.description), "parameters": t.schema,
                        ],
                    ]
                })
        }
        if let t = r.temperature { o["temperature"] = .double(t) }
        return Array(JSONValue.object(o).jsonText.utf8)
    }

    func turn(_ r: ModelRequest, onText: @escaping @Sendable (String) async -> Void) async throws -> ModelTurn {
        try await withRetries {
            var turn = ModelTurn()
            var calls: [Int: ToolCall] = [:]
            var reported = false
            var headers: [String: String] = [:]
            if let k = settings.apiKey { headers["Authorization"] = "Bearer \(k)" }
            try await ProviderHTTP.streamSSE(
                url: settings.baseURL + "/chat/completions", headers: headers, body: body(r), timeout: settings.timeout
            ) { data, _ in
                if data == "[DONE]" { return true }
                guard let obj = ProviderHTTP.json(data) else { return false }
                if let usage = obj["usage"] as? [String: Any] {
                    reported = true
                    turn.inputTokens = usage["prompt_tokens"] as? Int ?? turn.inputTokens
                    turn.outputTokens = usage["completion_tokens"] as? Int ?? turn.outputTokens
                }
                guard let choice = (obj["choices"] as? [[String: Any]])?.first else { return false }
                if let reason = choice["finish_reason"] as? String { turn.stopReason = reason }
                guard let delta = choice["delta"] as? [String: Any] else { return false }
                if let text = delta["content"] as? String, !text.isEmpty {
                    turn.text += text
                    await onText(text)
                }
                for tc in delta["tool_calls"] as? [[String: Any]] ?? [] {
                    let i = tc["index"] as? Int ?? 0
                    var c = calls[i] ?? ToolCall(id: "", name: "", arguments: "")
                    if let id = tc["id"] as? String, !id.isEmpty { c.id = id }
                    if let f = tc["function"] as? [String: Any] {
                        if let n = f["name"] as? String { c.name += n }
                        if let a = f["arguments"] as? String { c.arguments += a }
                    }
                    calls[i] = c
                }
                return false
            }
            turn.toolCalls = calls.keys.sorted().map { i in
                var c = calls[i]!
                if c.id.isEmpty { c.id = "call_\(i)_" + IDs.randomBase62(8) }
                return c
            }
            // Servers that report no usage are billed by the usual four-characters-a-token estimate.
            if !reported {
                turn.outputTokens = estimateTokens(turn.text + turn.toolCalls.map(\.arguments).joined())
                turn.inputTokens = estimateTokens(r.system + r.messages.map(\.content).joined())
            }
            return turn
        }
    }
}

/// Anthropic Messages with `stream: true` and tool use.
struct AnthropicProvider: ModelProvider {
    let settings: ProviderSettings
    var kind: String { "anthropic" }

    func body(_ r: ModelRequest) -> [UInt8] {
        var messages: [JSONValue] = []
        for m in r.messages {
            switch m.role {
            case "assistant":
                var blocks: [JSONValue] = []
                if !m.content.isEmpty { blocks.append(["type": "text", "text": .string(m.content)]) }
                for c in m.toolCalls {
                    let input =
                        (try? JSONDecoder().decode(JSONValue.self, from: Data(c.arguments.utf8))) ?? .object([:])
                    blocks.append(["type": "tool_use", "id": .string(c.id), "name": .string(c.name), "input": input])
                }
                messages.append(["role": "assistant", "content": .array(blocks)])
            case "tool":
                let block: JSONValue = [
                    "type": "tool_result", "tool_use_id": .string(m.toolCallId ?? ""), "content": .string(m.content),
                ]
                // Consecutive tool results go into one user message, as the API requires.
                if case .object(var last)? = messages.last, last["role"] == "user",
                    case .array(var content)? = last["content"],
                    case .object(let first)? = content.first, first["type"] == "tool_result"
                {
                    content.append(block)
                    last["content"] = .array(content)
                    messages[messages.count - 1] = .object(last)
                } else {
                    messages.append(["role": "user", "content": .array([block])])
                }
            default:
                messages.append(["role": "user", "content": .string(m.content)])
            }
        }
        var o: [String: JSONValue] = [
            "model": .string(r.model), "system": .string(r.system), "messages": .array(messages),
            "stream": true, "max_tokens": .int(r.maxTokens),
        ]
        if !r.tools.isEmpty {
            o["tools"] = .array(
                r.tools.map { t in
                    ["name": .string(t.name), "description": .string(t.description), "input_schema": t.schema]
                })
        }
        if let t = r.temperature { o["temperature"] = .double(min(1, t)) }
        return Array(JSONValue.object(o).jsonText.utf8)
    }

    func turn(_ r: ModelRequest, onText: @escaping @Sendable (String) async -> Void) async throws -> ModelTurn {
        try await withRetries {
            var turn = ModelTurn()
            var blocks: [Int: ToolCall] = [:]
            var headers = ["anthropic-version": "2023-06-01"]
            if let k = settings.apiKey { headers["x-api-key"] = k }
            try await ProviderHTTP.streamSSE(
                url: settings.baseURL + "/v1/messages", headers: headers, body: body(r), timeout: settings.timeout
            ) { data, _ in
                guard let obj = ProviderHTTP.json(data), let type = obj["type"] as? String else { return false }
                switch type {
                case "message_start":
                    let usage = (obj["message"] as? [String: Any])?["usage"] as? [String: Any]
                    turn.inputTokens = usage?["input_tokens"] as? Int ?? 0
                    turn.outputTokens = usage?["output_tokens"] as? Int ?? 0
                case "content_block_start":
                    if let b = obj["content_block"] as? [String: Any], b["type"] as? String == "tool_use" {
                        blocks[obj["index"] as? Int ?? 0] = ToolCall(
                            id: b["id"] as? String ?? "", name: b["name"] as? String ?? "", arguments: "")
                    }
                case "content_block_delta":
                    let d = obj["delta"] as? [String: Any] ?? [:]
                    if let text = d["text"] as? String {
                        turn.text += text
                        await onText(text)
                    }
                    if let part = d["partial_json"] as? String, let i = obj["index"] as? Int {
                        blocks[i]?.arguments += part
                    }
                case "message_delta":
                    if let u = obj["usage"] as? [String: Any], let out = u["output_tokens"] as? Int {
                        turn.outputTokens = out
                    }
                    if let reason = (obj["delta"] as? [String: Any])?["stop_reason"] as? String {
                        turn.stopReason = reason
                    }
                case "message_stop":
                    return true
                case "error":
                    let m = (obj["error"] as? [String: Any])?["message"] as? String ?? "unknown"
                    throw ProviderError(
                        description: "The provider reported an error: \(m.prefix(300))", retryable: true,
                        retryAfter: nil)
                default: break
                }
                return false
            }
            turn.toolCalls = blocks.keys.sorted().map { i in
                var c = blocks[i]!
                if c.arguments.isEmpty { c.arguments = "{}" }
                return c
            }
            return turn
        }
    }
}
