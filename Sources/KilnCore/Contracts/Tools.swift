import Foundation
import KilnHTTP

/// What a built-in tool answered when called outside an agent run.
public struct ToolCallOutcome: Sendable {
    public let text: String
    /// False when the tool refused or failed (its text says why).
    public let ok: Bool
    public init(text: String, ok: Bool) {
        self.text = text
        self.ok = ok
    }
}

/// The built-in agent tools, callable outside a run (Kiln's MCP server, the tool registry): the same
/// code, path checks, sandbox and policy as inside a run. Implemented by the agents domain.
public protocol ToolRunner: Sendable {
    var tools: [ToolDescriptor] { get }
    /// Runs `tool` as `userID` (an `actorKind` of `user` or `api_key`) in `project`. The workspace's
    /// policy judges it as `agent.tool.<name>`; a refusal or a tool's failure is an outcome with
    /// `ok: false`; unknown tools and bad arguments too.
    func call(
        tool: String, arguments: JSONValue, project: ProjectRef, userID: String, actorKind: String
    ) async -> ToolCallOutcome
}

/// Agent runs as other domains start and read them (implemented by the agents domain).
public protocol AgentRunner: Sendable {
    /// Starts a run with the server's provider; returns its id (402 at a budget cap, 503 without a provider).
    func startRun(
        project: ProjectRef, access: WorkspaceAccess, userID: String, prompt: String, model: String?, maxSteps: Int?
    ) async throws -> String
    /// The run as `GET /api/agent/runs/:run_id` shows it (nil: no such run in `wsID`).
    func run(_ runID: String, wsID: String) async throws -> JSONValue?
    /// The workspace a run belongs to (nil: no such run).
    func workspaceOf(runID: String) async throws -> String?
    /// What a share link of a run shows: its prompt, status, transcript and the diff of each file it
    /// changed (nil: no such run in `wsID`).
    func shareable(_ runID: String, wsID: String) async throws -> JSONValue?
}

/// Checks a workspace's receipt chain up to a run (implemented by the receipts domain).
public protocol ReceiptVerifier: Sendable {
    /// `{ok, checked, first_break?}`; nil when the run has no receipt in `wsID`.
    func verifyChain(runID: String, wsID: String) async throws -> JSONValue?
    /// The run's signed receipt as served (nil: none yet).
    func receipt(runID: String, wsID: String) async throws -> JSONValue?
}

/// Tools of a workspace's registered MCP servers, as agent runs use them (implemented by the MCP
/// domain). Names are namespaced `<server>.<tool>`.
public protocol ExternalTools: Sendable {
    /// The tools `selection` names (`server.tool`, or `server.*` for all of a server's), enabled
    /// ones only; 400 naming an entry that matches nothing.
    func tools(wsID: String, selection: [String]) async throws -> [ToolDescriptor]
    /// Calls one (arguments checked against its schema; failures are outcomes with `ok: false`).
    /// The caller has judged it by the policy already.
    func call(wsID: String, name: String, arguments: JSONValue, userID: String) async -> ToolCallOutcome
}

/// Notebooks as agent tools see them (implemented by the notebooks domain).
public protocol NotebookCells: Sendable {
    /// The notebook at `path` as text for a model: each cell's id, type, source and text outputs.
    func readNotebook(project: ProjectRef, path: String) async throws -> String
    /// Runs a cell on the notebook's kernel as `userID`; its outputs as text (ok: false when it raised).
    func runCell(
        project: ProjectRef, path: String, cellID: String, userID: String
    ) async throws -> (
        ok: Bool, text: String
    )
}

/// Browser checks as agent tools use them (implemented by the browser domain).
public protocol BrowserChecks: Sendable {
    /// Runs a smoke or flow check of `url` in the workspace (its allowlist applies) and waits for it:
    /// the run's id, its status, a summary for a model, and its screenshots `{id, name, width, height}`.
    func check(
        wsID: String, userID: String, kind: String, url: String, steps: [JSONValue]?
    ) async throws -> (runID: String, status: String, text: String, screenshots: [JSONValue])
}
