import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// What a run is asked to do and how.
public struct RunInput: Sendable {
    public var prompt: String
    public var model: String
    public var maxSteps: Int
    public var temperature: Double?
    public var instructions: String?
    /// Secrets handed to the run's commands (and redacted from every tool result).
    public var secrets: [SecretValue] = []
    /// Registry tools the run may call besides the built-in ones (namespaced `<server>.<tool>`).
    public var external: [ToolDescriptor] = []
}

/// `POST /api/agent/run`.
struct StartInput: Codable, Sendable {
    var projectId: String?
    let prompt: String
    let model: String?
    let maxSteps: Int?
    /// Secrets by name for the run's commands.
    let secrets: [String]?
    /// Registry tools by name (`<server>.<tool>` or `<server>.*`); default: the preferences' `tools`.
    var tools: [String]? = nil
}

/// `POST /api/agent/rollback`.
struct RollbackInput: Decodable, Sendable {
    let runId: String
    let force: Bool?
}

/// `POST /api/agent/prefs`.
struct PrefsInput: Decodable, Sendable {
    let wsId: String?
    let scope: String?
    let provider: String?
    let model: String?
    let maxSteps: Int?
    let temperature: Double?
    let systemInstructions: String?
    let tools: [String]?
}

/// `POST /api/shell/suggest`.
struct SuggestInput: Decodable, Sendable {
    let projectId: String?
    let prompt: String
}

/// A started run, for clients that asked for JSON instead of its event stream.
struct RunStarted: Decodable {
    let runId: String
    let status: String
    let followUrl: String
}

struct AgentPrefs: Codable, Sendable {
    var provider: String?
    var model: String?
    var maxSteps: Int?
    var temperature: Double?
    var systemInstructions: String?
    /// Registry tools runs get by default (`<server>.<tool>` or `<server>.*`).
    var tools: [String]? = nil

    func overlaid(by o: AgentPrefs) -> AgentPrefs {
        AgentPrefs(
            provider: o.provider ?? provider, model: o.model ?? model, maxSteps: o.maxSteps ?? maxSteps,
            temperature: o.temperature ?? temperature, systemInstructions: o.systemInstructions ?? systemInstructions,
            tools: o.tools ?? tools)
    }
}

func runJSON(_ r: Row) -> JSONValue {
    func opt(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
    return .object([
        "id": .string(r.string("id") ?? ""), "run_id": .string(r.string("id") ?? ""),
        "ws_id": .string(r.string("ws_id") ?? ""),
        "project_id": .string(r.string("project_id") ?? ""), "user_id": .string(r.string("user_id") ?? ""),
        "prompt": .string(r.string("prompt") ?? ""), "model": .string(r.string("model") ?? ""),
        "provider": .string(r.string("provider") ?? ""),
        "status": .string(r.string("status") ?? ""), "steps": .int(r.int("steps") ?? 0),
        "max_steps": .int(r.int("max_steps") ?? 0),
        "input_tokens": .int(r.int("input_tokens") ?? 0), "output_tokens": .int(r.int("output_tokens") ?? 0),
        "files_changed": .int(r.int("files_changed") ?? 0), "summary": opt(r.string("summary")),
        "error": opt(r.string("error")),
        "reason": opt(r.string("reason")),
        "started_at": .string(HTTPDate.iso8601(r.date("started_at") ?? Date())),
        "ended_at": opt(r.date("ended_at").map(HTTPDate.iso8601)),
        "rolled_back_at": opt(r.date("rolled_back_at").map(HTTPDate.iso8601)),
    ])
}

/// `{command, explanation}` from a model answer: JSON (maybe in a code fence), else the first code line.
func parseSuggestion(_ text: String) -> (String, String) {
    var t = text.trimmingCharacters(in: .whitespacesAndNewlines)
    if let start = t.firstIndex(of: "{"), let end = t.lastIndex(of: "}") {
        let json = String(t[start...end])
        if let o = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any],
            let c = o["command"] as? String
        {
            return (c.trimmingCharacters(in: .whitespacesAndNewlines), (o["explanation"] as? String) ?? "")
        }
    }
    if t.hasPrefix("```") {
        t = t.split(separator: "\n").dropFirst().prefix { !$0.hasPrefix("```") }.joined(separator: "\n")
    }
    let first = t.split(separator: "\n").first.map(String.init) ?? ""
    return (first.trimmingCharacters(in: CharacterSet(charactersIn: "`$ ")), "")
}
