import Foundation
import KilnCore
import KilnHTTP

/// One catalogue of the tools a workspace may use, and calls into it.
extension MCPRegistryService {
    /// Kiln's own tools (`kiln.<tool>`, those the caller's key allows) and every registered server's
    /// (`<server>.<tool>`), filtered by `q` (in the name or description).
    func catalogue(wsID: String, q: String?, principal p: Principal) async throws -> [JSONValue] {
        let needle = q?.lowercased().trimmingCharacters(in: .whitespaces) ?? ""
        guard needle.utf8.count <= 200 else { throw APIError.validation("q is longer than 200 bytes", field: "q") }
        func matches(_ name: String, _ description: String?) -> Bool {
            needle.isEmpty || name.lowercased().contains(needle)
                || (description?.lowercased().contains(needle) ?? false)
        }
        var items: [JSONValue] = []
        for t in toolbox.visible(to: p) where matches("kiln." + t.name, t.description) {
            items.append([
                "name": .string("kiln." + t.name), "description": .string(t.description), "input_schema": t.input,
                "output_schema": t.output, "origin": "kiln", "server": .null, "server_id": .null, "enabled": true,
            ])
        }
        for r in try await store.tools(wsID: wsID) {
            let name = (r.string("server_name") ?? "") + "." + (r.string("name") ?? "")
            guard matches(name, r.string("description")) else { continue }
            func schema(_ k: String) -> JSONValue {
                r.string(k).flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) } ?? .null
            }
            items.append([
                "name": .string(name), "description": r.string("description").map { .string($0) } ?? .null,
                "input_schema": schema("input_schema"), "output_schema": schema("output_schema"), "origin": "mcp",
                "server": .string(r.string("server_name") ?? ""), "server_id": .string(r.string("server_id") ?? ""),
                "enabled": .bool(r.bool("server_enabled") ?? false),
            ])
        }
        return items
    }

    /// Calls a catalogue tool: arguments checked against its schema (400 naming the failing path),
    /// an external one judged by the policy as `mcp.<server>.<tool>`; every call audited (tool,
    /// server, caller, outcome; never the argument values).
    func invoke(
        wsID: String, tool: String, arguments: JSONValue?, principal p: Principal, ip: String
    ) async throws -> JSONValue {
        let start = kilnMonotonicNanos()
        var args: [String: JSONValue] = [:]
        switch arguments {
        case nil, .null?: break
        case .object(let o)?: args = o
        default: throw APIError.validation("arguments must be an object", field: "arguments")
        }
        func ms() -> Double { (Double(kilnMonotonicNanos() &- start) / 1e4).rounded() / 100 }
        func check(_ schema: JSONValue) throws {
            if let problem = SchemaCheck.problem(.object(args), against: schema, at: "arguments") {
                throw HTTPError(
                    .badRequest, code: "validation_failed", message: "\(problem.path) \(problem.message)",
                    details: ["field": .string(problem.path)])
            }
        }
        if tool.hasPrefix("kiln.") {
            let name = String(tool.dropFirst(5))
            guard let t = toolbox.visible(to: p).first(where: { $0.name == name }) else {
                throw APIError.notFound("No tool \(tool.prefix(100)) in the catalogue")
            }
            try check(t.input)
            let r = await toolbox.call(t, args, as: p, workspace: wsID)
            try await audit(wsID, tool, server: nil, p, ok: !r.isError, ms: ms(), ip: ip)
            return Self.answer(text: r.text, structured: r.structured, isError: r.isError, ms: ms())
        }
        guard let dot = tool.firstIndex(of: "."), dot != tool.startIndex else {
            throw APIError.validation("tool must be kiln.<tool> or <server>.<tool>", field: "tool")
        }
        let serverName = String(tool[..<dot])
        let toolName = String(tool[tool.index(after: dot)...])
        guard let row = try await store.servers(wsID: wsID).first(where: { $0.string("name") == serverName }),
            let listed = try await store.tools(wsID: wsID).first(where: {
                $0.string("server_name") == serverName && $0.string("name") == toolName
            })
        else { throw APIError.notFound("No tool \(tool.prefix(100)) in the catalogue (refresh its server?)") }
        guard row.bool("enabled") == true else { throw APIError.conflict("MCP server \(serverName) is disabled") }
        let schema = listed.string("input_schema").flatMap {
            try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))
        }
        try check(schema ?? ["type": "object"])
        if let policy {
            try await policy.check(
                wsID: wsID, userID: p.userID, action: "mcp.\(serverName).\(toolName)",
                context: PolicyContext(actorKind: p.apiKeyID == nil ? "user" : "api_key"))
        }
        let server = try await remote(row, userID: p.userID)
        let result: JSONValue
        do {
            result = try await client.request(
                server, "tools/call", ["name": .string(toolName), "arguments": .object(args)])
        } catch {
            try? await audit(wsID, tool, server: serverName, p, ok: false, ms: ms(), ip: ip, failed: true)
            throw Self.upstream(error, server: serverName)
        }
        let o = result.objectValue ?? [:]
        let isError = o["isError"] == .bool(true)
        try await audit(wsID, tool, server: serverName, p, ok: !isError, ms: ms(), ip: ip)
        var answer: [String: JSONValue] = [
            "content": o["content"] ?? .array([]), "is_error": .bool(isError), "duration_ms": .double(ms()),
        ]
        if let s = o["structuredContent"] { answer["structured_content"] = s }
        return .object(answer)
    }

    static func answer(text: String, structured: JSONValue?, isError: Bool, ms: Double) -> JSONValue {
        var o: [String: JSONValue] = [
            "content": [["type": "text", "text": .string(text)]], "is_error": .bool(isError),
            "duration_ms": .double(ms),
        ]
        if let structured, !isError { o["structured_content"] = structured }
        return .object(o)
    }

    func audit(
        _ wsID: String, _ tool: String, server: String?, _ p: Principal, ok: Bool, ms: Double, ip: String,
        failed: Bool = false
    ) async throws {
        try await audit(
            wsID, tool, server: server, userID: p.userID, keyID: p.apiKeyID, ip: ip,
            outcome: failed ? "failed" : ok ? "ok" : "error", ms: ms, via: "api")
    }

    /// `mcp.tool.called`: which tool of which server, who, how it went, how long; never the arguments.
    func audit(
        _ wsID: String, _ tool: String, server: String?, userID: String, keyID: String?, ip: String?,
        outcome: String, ms: Double, via: String
    ) async throws {
        let now = clock.now()
        _ = try await store.db.write { tx in
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mcp.tool.called", actorUserID: userID, actorKeyID: keyID, wsID: wsID,
                    resourceType: "mcp_tool", resourceID: tool, ip: ip,
                    details: [
                        "tool": .string(tool), "server": server.map { .string($0) } ?? .null,
                        "outcome": .string(outcome), "duration_ms": .double(ms), "via": .string(via),
                    ]), at: now)
        }
    }
}

/// Registry tools in agent runs: selected by name, called like an invoke (schema-checked, audited).
extension MCPRegistryService: ExternalTools {
    public func tools(wsID: String, selection: [String]) async throws -> [ToolDescriptor] {
        let rows = try await store.tools(wsID: wsID).filter { $0.bool("server_enabled") == true }
        var out: [ToolDescriptor] = []
        for entry in selection {
            guard let dot = entry.firstIndex(of: "."), dot != entry.startIndex else {
                throw APIError.validation("tools: '\(entry.prefix(100))' is not <server>.<tool>", field: "tools")
            }
            let server = String(entry[..<dot])
            let tool = String(entry[entry.index(after: dot)...])
            let matched = rows.filter {
                $0.string("server_name") == server && (tool == "*" || $0.string("name") == tool)
            }
            guard !matched.isEmpty else {
                throw APIError.validation(
                    "tools: no enabled registry tool matches '\(entry.prefix(100))' (GET /api/mcp lists them)",
                    field: "tools")
            }
            for r in matched {
                let name = server + "." + (r.string("name") ?? "")
                guard !out.contains(where: { $0.name == name }) else { continue }
                let schema = r.string("input_schema").flatMap {
                    try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))
                }
                out.append(
                    ToolDescriptor(
                        name: name, description: r.string("description") ?? "", schema: schema ?? ["type": "object"]))
            }
        }
        return out
    }

    public func call(wsID: String, name: String, arguments: JSONValue, userID: String) async -> ToolCallOutcome {
        let start = kilnMonotonicNanos()
        guard let dot = name.firstIndex(of: ".") else { return ToolCallOutcome(text: "error: no such tool", ok: false) }
        let serverName = String(name[..<dot])
        let toolName = String(name[name.index(after: dot)...])
        func ms() -> Double { (Double(kilnMonotonicNanos() &- start) / 1e4).rounded() / 100 }
        do {
            guard let row = try await store.servers(wsID: wsID).first(where: { $0.string("name") == serverName }),
                row.bool("enabled") == true,
                let listed = try await store.tools(wsID: wsID).first(where: {
                    $0.string("server_name") == serverName && $0.string("name") == toolName
                })
            else { return ToolCallOutcome(text: "error: the tool \(name) is not available", ok: false) }
            let schema = listed.string("input_schema").flatMap {
                try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))
            }
            if let problem = SchemaCheck.problem(arguments, against: schema ?? ["type": "object"], at: "arguments") {
                return ToolCallOutcome(text: "error: \(problem.path) \(problem.message)", ok: false)
            }
            let result = try await client.request(
                try await remote(row, userID: userID), "tools/call",
                ["name": .string(toolName), "arguments": arguments])
            let o = result.objectValue ?? [:]
            let isError = o["isError"] == .bool(true)
            var text = ""
            if case .array(let blocks)? = o["content"] {
                for case .object(let b) in blocks {
                    if let t = b["text"]?.stringValue {
                        text += t
                    } else if let type = b["type"]?.stringValue {
                        text += "[\(type) content]"
                    }
                }
            }
            if text.isEmpty, let s = o["structuredContent"] { text = s.jsonText }
            try? await audit(
                wsID, name, server: serverName, userID: userID, keyID: nil, ip: nil, outcome: isError ? "error" : "ok",
                ms: ms(), via: "agent")
            return ToolCallOutcome(text: isError ? "error: " + text : text, ok: !isError)
        } catch {
            try? await audit(
                wsID, name, server: serverName, userID: userID, keyID: nil, ip: nil, outcome: "failed", ms: ms(),
                via: "agent")
            return ToolCallOutcome(text: "error: " + Self.upstream(error, server: serverName).message, ok: false)
        }
    }
}
