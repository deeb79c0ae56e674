import Foundation
import KilnCore
import KilnHTTP

/// A tool Kiln's MCP server offers: its schemas, the permission it needs in the project's
/// workspace, and what it calls.
struct KilnTool: Sendable {
    enum Kind: Sendable {
        /// A built-in agent tool, run through the `ToolRunner` (same code, path checks, policy).
        case builtin
        case listProjects, startAgentRun, getRun, verifyReceipts
    }
    let name: String
    let description: String
    let input: JSONValue
    let output: JSONValue
    let permission: String
    let kind: Kind

    /// As `tools/list` shows it.
    var listed: JSONValue {
        ["name": .string(name), "description": .string(description), "inputSchema": input, "outputSchema": output]
    }
}

/// The outcome of a `tools/call`: content for people and models, structured content matching the
/// tool's output schema, and whether the tool failed (a failure is a result, not a protocol error).
struct ToolResult: Sendable {
    let text: String
    let structured: JSONValue?
    let isError: Bool

    static func failure(_ text: String) -> ToolResult { ToolResult(text: text, structured: nil, isError: true) }

    func json(modern: Bool) -> JSONValue {
        var o: [String: JSONValue] = [
            "content": [["type": "text", "text": .string(text)]], "isError": .bool(isError),
        ]
        if let structured, !isError { o["structuredContent"] = structured }
        if modern { o["resultType"] = "complete" }
        return .object(o)
    }
}

/// The catalogue of Kiln's own tools, and their calls.
struct KilnToolbox: Sendable {
    let runner: any ToolRunner
    let agents: (any AgentRunner)?
    let receipts: (any ReceiptVerifier)?
    let projects: any ProjectDirectory
    let authorizer: Authorizer
    let hooks: Hooks

    static let textOutput: JSONValue = [
        "type": "object", "properties": ["output": ["type": "string"]], "required": ["output"],
    ]
    static let projectID: JSONValue = [
        "type": "string", "description": "the project (default: the one you opened most recently)",
    ]

    /// Who may do what with each built-in tool.
    static func permission(ofBuiltin name: String) -> String {
        switch name {
        case "edit_file", "write_file": "project:write"
        case "run_command", "run_tests": "shell:run"
        case "run_cell": "notebook:run"
        case "read_notebook": "notebook:read"
        default: "project:read"
        }
    }

    var all: [KilnTool] {
        var tools: [KilnTool] = [
            KilnTool(
                name: "list_projects", description: "List the projects of a workspace (default: your most recent one).",
                input: ["type": "object", "properties": ["ws_id": ["type": "string"]], "additionalProperties": false],
                output: [
                    "type": "object",
                    "properties": [
                        "projects": [
                            "type": "array",
                            "items": [
                                "type": "object",
                                "properties": [
                                    "id": ["type": "string"], "name": ["type": "string"], "path": ["type": "string"],
                                    "vcs": ["type": "string"], "ws_id": ["type": "string"],
                                ],
                            ],
                        ]
                    ],
                    "required": ["projects"],
                ], permission: "project:read", kind: .listProjects)
        ]
        for d in runner.tools {
            var input = d.schema
            if case .object(var s) = input, case .object(var props)? = s["properties"] {
                props["project_id"] = Self.projectID
                s["properties"] = .object(props)
                input = .object(s)
            }
            tools.append(
                KilnTool(
                    name: d.name, description: d.description, input: input, output: Self.textOutput,
                    permission: Self.permission(ofBuiltin: d.name), kind: .builtin))
        }
        if agents != nil {
            tools.append(
                KilnTool(
                    name: "start_agent_run",
                    description: "Start an agent run on a project with the server's model; follow it with get_run.",
                    input: [
                        "type": "object",
                        "properties": [
                            "prompt": ["type": "string"], "project_id": Self.projectID, "model": ["type": "string"],
                            "max_steps": ["type": "integer"],
                        ],
                        "required": ["prompt"], "additionalProperties": false,
                    ],
                    output: [
                        "type": "object", "properties": ["run_id": ["type": "string"], "status": ["type": "string"]],
                        "required": ["run_id", "status"],
                    ], permission: "agent:run", kind: .startAgentRun))
            tools.append(
                KilnTool(
                    name: "get_run",
                    description: "An agent run: status, summary, usage, transcript, tool calls and changed files.",
                    input: [
                        "type": "object", "properties": ["run_id": ["type": "string"]], "required": ["run_id"],
                        "additionalProperties": false,
                    ],
                    output: ["type": "object", "properties": ["run": ["type": "object"]], "required": ["run"]],
                    permission: "agent:read", kind: .getRun))
        }
        if receipts != nil {
            tools.append(
                KilnTool(
                    name: "verify_receipts",
                    description: "Verify the workspace's signed receipt chain up to a run's receipt.",
                    input: [
                        "type": "object", "properties": ["run_id": ["type": "string"]], "required": ["run_id"],
                        "additionalProperties": false,
                    ],
                    output: [
                        "type": "object",
                        "properties": [
                            "ok": ["type": "boolean"], "checked": ["type": "integer"],
                            "first_break": ["type": "object"],
                        ],
                        "required": ["ok", "checked"],
                    ], permission: "receipts:read", kind: .verifyReceipts))
        }
        return tools
    }

    /// The tools this caller's key and account may use (the role is checked again at each call).
    func visible(to p: Principal) -> [KilnTool] {
        all.filter { (try? authorizer.checkPrincipal(p, $0.permission)) != nil }
    }

    /// Calls a tool as `p`. Refusals (permission, policy, a bad path) are error results.
    /// `workspace`: where a call without `project_id` or `ws_id` acts (default: the caller's most recent).
    func call(
        _ tool: KilnTool, _ args: [String: JSONValue], as p: Principal, workspace inWS: String? = nil
    ) async -> ToolResult {
        do {
            try authorizer.checkPrincipal(p, tool.permission)
            switch tool.kind {
            case .builtin:
                let (project, _) = try await project(args["project_id"]?.stringValue, tool.permission, p, in: inWS)
                var rest = args
                rest["project_id"] = nil
                let out = await runner.call(
                    tool: tool.name, arguments: .object(rest), project: project, userID: p.userID,
                    actorKind: p.apiKeyID == nil ? "user" : "api_key")
                return ToolResult(text: out.text, structured: ["output": .string(out.text)], isError: !out.ok)
            case .listProjects:
                let wsID = try await workspace(args["ws_id"]?.stringValue ?? inWS, p)
                _ = try await authorizer.role(p, tool.permission, wsID: wsID)
                let list = try await projects.projects(wsID: wsID)
                let items: [JSONValue] = list.map {
                    [
                        "id": .string($0.id), "name": .string($0.name), "path": .string($0.root),
                        "vcs": .string($0.vcs), "ws_id": .string($0.wsID),
                    ]
                }
                let text =
                    list.isEmpty
                    ? "no projects" : list.map { "\($0.id)  \($0.name)  \($0.root)" }.joined(separator: "\n")
                return ToolResult(text: text, structured: ["projects": .array(items)], isError: false)
            case .startAgentRun:
                guard let agents else { return .failure("agent runs are not available") }
                guard let prompt = args["prompt"]?.stringValue else { return .failure("prompt is required") }
                let (project, access) = try await project(
                    args["project_id"]?.stringValue, tool.permission, p, in: inWS)
                var maxSteps: Int? = nil
                if case .int(let n)? = args["max_steps"] { maxSteps = n }
                let id = try await agents.startRun(
                    project: project, access: access, userID: p.userID, prompt: prompt,
                    model: args["model"]?.stringValue, maxSteps: maxSteps)
                return ToolResult(
                    text: "started \(id)", structured: ["run_id": .string(id), "status": "running"], isError: false)
            case .getRun, .verifyReceipts:
                guard let agents, let runID = args["run_id"]?.stringValue else { return .failure("run_id is required") }
                guard let wsID = try await agents.workspaceOf(runID: runID) else { return .failure("no such run") }
                do { _ = try await authorizer.role(p, tool.permission, wsID: wsID) } catch let e as HTTPError
                    where e.status == .notFound
                { return .failure("no such run") }
                if tool.kind == .getRun {
                    guard let run = try await agents.run(runID, wsID: wsID) else { return .failure("no such run") }
                    return ToolResult(text: run.jsonText, structured: ["run": run], isError: false)
                }
                guard let receipts, let v = try await receipts.verifyChain(runID: runID, wsID: wsID) else {
                    return .failure("the run has no receipt (yet)")
                }
                return ToolResult(text: v.jsonText, structured: v, isError: v.objectValue?["ok"] != .bool(true))
            }
        } catch let e as any HTTPResponseError {
            return .failure("error: " + e.message)
        } catch {
            return .failure("error: the tool failed")
        }
    }

    /// The workspace named, else the caller's default one.
    func workspace(_ wsID: String?, _ p: Principal) async throws -> String {
        if let wsID, !wsID.isEmpty { return wsID }
        guard let ws = try await hooks.defaultWorkspace(userID: p.userID) else {
            throw APIError.validation("You are in no workspace; give ws_id", field: "ws_id")
        }
        return ws
    }

    /// The project named (in whichever workspace it is), else the caller's most recent one, with
    /// the access `permission` gives there.
    func project(
        _ projectID: String?, _ permission: String, _ p: Principal, in inWS: String? = nil
    ) async throws -> (
        ProjectRef, WorkspaceAccess
    ) {
        var wsID: String
        if let projectID, !projectID.isEmpty {
            guard IDs.isValid(projectID, prefix: "prj"), let found = try await projects.lookup(projectID) else {
                throw APIError.notFound("No such project")
            }
            wsID = found.wsID
        } else {
            wsID = try await workspace(inWS, p)
        }
        let access = try await authorizer.role(p, permission, wsID: wsID)
        return (try await projects.resolve(projectID, access: access, userID: p.userID), access)
    }
}
