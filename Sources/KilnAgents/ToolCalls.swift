import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// The built-in tools and runs as other domains use them (Kiln's MCP server): the same registry,
/// path checks, sandbox and policy as inside a run.
extension AgentService: ToolRunner, AgentRunner {
    /// Every built-in tool but `record_finding`, which belongs to a run's receipt.
    public var tools: [ToolDescriptor] { ToolRegistry.all.filter { $0.name != "record_finding" }.map(\.descriptor) }

    public func call(
        tool: String, arguments: JSONValue, project: ProjectRef, userID: String, actorKind: String
    ) async -> ToolCallOutcome {
        guard let t = ToolRegistry.named(tool), tool != "record_finding" else {
            return ToolCallOutcome(text: "error: no tool named '\(tool.prefix(100))'", ok: false)
        }
        if let policy = engine.policy {
            do {
                try await policy.check(
                    wsID: project.wsID, userID: userID, action: "agent.tool.\(tool)",
                    context: AgentEngine.policyContext(actorKind: actorKind, arguments))
            } catch let e as any HTTPResponseError {
                return ToolCallOutcome(text: "error: " + e.message, ok: false)
            } catch {
                return ToolCallOutcome(text: "error: the workspace's policy could not be read", ok: false)
            }
        }
        let changed = ChangeFlag()
        let ctx = ToolContext(
            project: project, runID: "", userID: userID, secrets: [], directory: projects, jobs: jobs,
            snapshots: engine.snapshots, onJob: { _ in }, onFileChanged: { _, _ in changed.set() },
            onFinding: { _, _, _, _ in throw ToolFailure("findings belong to agent runs") }, actorKind: actorKind,
            notebooks: engine.notebooks.withLock { $0 }, browser: engine.browser.withLock { $0 })
        do {
            let out = try await t.run(ctx, try ToolRegistry.validate(arguments, t.schema))
            if changed.isSet { try? await projects.reindex(project) }
            return ToolCallOutcome(text: out, ok: true)
        } catch let e as ToolFailure {
            return ToolCallOutcome(text: "error: " + e.description, ok: false)
        } catch let e as any HTTPResponseError {
            return ToolCallOutcome(text: "error: " + e.message, ok: false)
        } catch {
            return ToolCallOutcome(text: "error: the tool failed", ok: false)
        }
    }

    public func startRun(
        project: ProjectRef, access: WorkspaceAccess, userID: String, prompt: String, model: String?, maxSteps: Int?
    ) async throws -> String {
        try await start(
            StartInput(projectId: project.id, prompt: prompt, model: model, maxSteps: maxSteps, secrets: nil),
            access: access, userID: userID)
    }

    public func workspaceOf(runID: String) async throws -> String? { try await workspaceOf(runID) }

    public func shareable(_ runID: String, wsID: String) async throws -> JSONValue? {
        guard let run = try await run(runID, wsID: wsID), case .object(let o) = run else { return nil }
        // The diffs as the run streamed them (file.changed events, kept with the run's events).
        var diffs: [JSONValue] = []
        for e in try await bus.stored(topic: AgentEngine.topic(runID), limit: 100_000) where e.type == "file.changed" {
            if let d = try? JSONDecoder().decode(JSONValue.self, from: Data(e.data.utf8)) { diffs.append(d) }
        }
        var shown: [String: JSONValue] = [:]
        for k in [
            "run_id", "id", "prompt", "model", "status", "summary", "started_at", "ended_at", "transcript", "steps",
        ] {
            if let v = o[k] { shown[k] = v }
        }
        shown["diffs"] = .array(diffs)
        return .object(shown)
    }

    public func run(_ runID: String, wsID: String) async throws -> JSONValue? {
        guard IDs.isValid(runID, prefix: "run") else { return nil }
        do { return try await detail(runID, in: wsID) } catch let e as HTTPError where e.status == .notFound {
            return nil
        }
    }
}

/// Whether a tool call changed a file (then the project is re-indexed once).
final class ChangeFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
