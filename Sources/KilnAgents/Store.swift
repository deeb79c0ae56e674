import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The agents domain's SQL: runs, their transcripts, tool calls, file snapshots, findings, and
/// preferences.
struct AgentStore: Sendable {
    let db: Database

    // MARK: Runs

    func insertRun(
        id: String, project: ProjectRef, userID: String, prompt: String, model: String, provider: String, maxSteps: Int,
        instance: String, at now: Date
    ) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO agent_runs (id, ws_id, project_id, user_id, prompt, model, provider, status, max_steps,
                    started_at, instance_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)
                """, id, project.wsID, project.id, userID, prompt, model, provider, maxSteps, now, instance)
            try tx.run(
                "INSERT INTO agent_messages (run_id, seq, role, content, created_at) VALUES (?, 1, 'user', ?, ?)", id,
                prompt, now)
        }
    }

    /// A run's id, workspace, project and status (nil: no such run).
    func runHead(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT ws_id, project_id, status FROM agent_runs WHERE id = ?", id) }
    }

    /// Runs in flight with the instance running each.
    func runningRuns() async throws -> [(id: String, instance: String?)] {
        try await db.read { tx in
            try tx.query("SELECT id, instance_id FROM agent_runs WHERE status IN ('running', 'waiting_approval')")
        }.compactMap { r in r.string("id").map { ($0, r.string("instance_id")) } }
    }

    func instanceOf(_ id: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT instance_id FROM agent_runs WHERE id = ?", id)?.string("instance_id")
        }
    }

    /// True when this call ended the run as lost (another survivor may have been first).
    func markLost(_ id: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            try tx.run(
                """
                UPDATE agent_runs
                SET status = 'lost', error = 'the server running it stopped', reason = 'instance_lost', ended_at = ?
                WHERE id = ? AND status IN ('running', 'waiting_approval')
                """, now, id)
        } > 0
    }

    /// `running` ⇄ `waiting_approval` while a tool call waits for a decision.
    func setLiveStatus(_ id: String, _ status: String) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "UPDATE agent_runs SET status = ? WHERE id = ? AND status IN ('running', 'waiting_approval')", status,
                id)
        }
    }

    func setUsage(_ id: String, input: Int, output: Int, steps: Int) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "UPDATE agent_runs SET input_tokens = ?, output_tokens = ?, steps = ? WHERE id = ?", input, output,
                steps, id)
        }
    }

    func finishRun(
        _ id: String, status: String, summary: String?, error: String?, reason: String?, tokens: (Int, Int),
        at now: Date
    ) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                UPDATE agent_runs SET status = ?, summary = ?, error = ?, reason = ?, ended_at = ?, input_tokens = ?, output_tokens = ?
                WHERE id = ?
                """, status, summary, error, reason, now, tokens.0, tokens.1, id)
        }
    }

    func markRolledBack(_ id: String, at now: Date) async throws {
        _ = try await db.write { tx in try tx.run("UPDATE agent_runs SET rolled_back_at = ? WHERE id = ?", now, id) }
    }

    static let runWithFileCount =
        "SELECT r.*, (SELECT COUNT(*) FROM agent_snapshots s WHERE s.run_id = r.id) AS files_changed FROM agent_runs r"

    /// A workspace's runs, newest first, after the page's cursor (started_at and id).
    func runs(wsID: String, projectID: String?, page: PageRequest) async throws -> [Row] {
        var q = Query(Self.runWithFileCount + " WHERE r.ws_id = ?", wsID)
        q.and("r.project_id = ?", ifGiven: projectID)
        try page.newestFirst(&q, timeColumn: "r.started_at", idColumn: "r.id")
        let query = q
        return try await db.read { tx in try query.rows(tx) }
    }

    /// One run with its transcript, tool calls, changed files and findings.
    func runDetail(
        _ id: String
    ) async throws -> (run: Row, messages: [Row], calls: [Row], files: [Row], findings: [Row])? {
        try await db.read { tx in
            guard let r = try tx.first(Self.runWithFileCount + " WHERE r.id = ?", id) else { return nil }
            return (
                r, try tx.query("SELECT * FROM agent_messages WHERE run_id = ? ORDER BY seq", id),
                try tx.query("SELECT * FROM agent_tool_calls WHERE run_id = ? ORDER BY seq", id),
                try tx.query(
                    "SELECT path, existed, sha_before, sha_after FROM agent_snapshots WHERE run_id = ? ORDER BY path",
                    id),
                try tx.query("SELECT path, line, claim, evidence FROM agent_findings WHERE run_id = ? ORDER BY seq", id)
            )
        }
    }

    // MARK: Transcript

    func insertMessage(runID: String, seq: Int, _ m: ChatMessage, toolCalls: String?, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO agent_messages (run_id, seq, role, content, tool_calls, tool_call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, runID, seq, m.role, m.content, toolCalls, m.toolCallId, now)
        }
    }

    func insertToolCall(
        runID: String, callID: String, seq: Int, tool: String, args: String, ok: Bool, output: String
    ) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "INSERT INTO agent_tool_calls (run_id, call_id, seq, tool, args, ok, output) VALUES (?, ?, ?, ?, ?, ?, ?)",
                runID, callID, seq, tool, args, ok, output)
        }
    }

    func toolCalls(_ runID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT call_id, tool, args, ok FROM agent_tool_calls WHERE run_id = ? ORDER BY seq", runID)
        }
    }

    func insertFinding(runID: String, seq: Int, path: String, line: Int, claim: String, evidence: String) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "INSERT INTO agent_findings (run_id, seq, path, line, claim, evidence) VALUES (?, ?, ?, ?, ?, ?)",
                runID, seq, path, line, claim, evidence)
        }
    }

    func findings(_ runID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT path, line, claim, evidence FROM agent_findings WHERE run_id = ? ORDER BY seq", runID)
        }
    }

    // MARK: Snapshots

    func hasSnapshot(runID: String, path: String) async throws -> Bool {
        try await db.read { tx in
            try tx.first("SELECT 1 AS x FROM agent_snapshots WHERE run_id = ? AND path = ?", runID, path) != nil
        }
    }

    func insertSnapshot(runID: String, path: String, existed: Bool, file: String?, shaBefore: String?) async throws {
        _ = try await db.write { tx in
            try tx.run(
                "INSERT OR IGNORE INTO agent_snapshots (run_id, path, existed, file, sha_before) VALUES (?, ?, ?, ?, ?)",
                runID, path, existed, file, shaBefore)
        }
    }

    func snapshots(_ runID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                "SELECT path, existed, file, sha_before, sha_after FROM agent_snapshots WHERE run_id = ? ORDER BY path",
                runID)
        }
    }

    func setSnapshotAfter(runID: String, path: String, sha: String?) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE agent_snapshots SET sha_after = ? WHERE run_id = ? AND path = ?", sha, runID, path)
        }
    }

    // MARK: Preferences

    /// The stored preference documents of the workspace and the user, by scope.
    func prefs(userID: String, wsID: String) async throws -> [String: String] {
        let rows = try await db.read { tx in
            try tx.query(
                """
                SELECT scope, prefs FROM agent_prefs WHERE (scope = 'workspace' AND scope_id = ?) OR (scope = 'user' AND scope_id = ?)
                """, wsID, userID)
        }
        var out: [String: String] = [:]
        for r in rows { if let scope = r.string("scope"), let text = r.string("prefs") { out[scope] = text } }
        return out
    }

    func setPrefs(scope: String, scopeID: String, _ text: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO agent_prefs (scope, scope_id, prefs, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (scope, scope_id) DO UPDATE SET prefs = excluded.prefs, updated_at = excluded.updated_at
                """, scope, scopeID, text, now)
        }
    }

    func audit(_ e: AuditEvent, at now: Date) async throws {
        _ = try await db.write { tx in try AuditLog.append(tx, e, at: now) }
    }

    /// A deleted workspace's default preferences (its runs stay, as history).
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM agent_prefs WHERE scope = 'workspace' AND scope_id = ?", wsID)
    }
}
