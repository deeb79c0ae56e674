import Foundation
import KilnCore
import KilnHTTP
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

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
