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
