import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The shell domain's SQL: jobs (with the tails of their output) and each project's test command.
struct ShellStore: Sendable {
    let db: Database

    func insertJob(id: String, _ spec: JobSpec, instance: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO shell_jobs (id, ws_id, project_id, user_id, kind, command, cwd, host, status, started_at,
                    instance_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)
                """, id, spec.wsID, spec.projectID, spec.userID, spec.kind, spec.command, spec.displayCwd, spec.host,
                now, instance)
        }
    }

    func setPID(_ id: String, _ pid: Int) async throws {
        _ = try await db.write { tx in try tx.run("UPDATE shell_jobs SET pid = ? WHERE id = ?", pid, id) }
    }

    /// A job that never started a process.
    func failWithoutProcess(_ id: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE shell_jobs SET status = 'failed', ended_at = ?, duration_ms = 0 WHERE id = ?", now, id)
        }
    }

    func finish(_ id: String, _ o: JobOutcome, summary: String?, totals: (Int, Int), at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                UPDATE shell_jobs SET status = ?, exit_code = ?, signal = ?, ended_at = ?, duration_ms = ?, summary = ?,
                    stdout_tail = ?, stderr_tail = ?, stdout_bytes = ?, stderr_bytes = ? WHERE id = ?
                """, o.status, o.exitCode, o.signal, now, o.durationMs, summary, o.stdout, o.stderr, totals.0, totals.1,
                id)
        }
    }

    /// Running jobs with the instance that runs them.
    func runningJobs() async throws -> [(id: String, instance: String?)] {
        try await db.read { tx in try tx.query("SELECT id, instance_id FROM shell_jobs WHERE status = 'running'") }
            .compactMap { r in r.string("id").map { ($0, r.string("instance_id")) } }
    }

    /// True when this call ended the job (another survivor may have been first).
    func markLost(_ id: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            try tx.run(
                "UPDATE shell_jobs SET status = 'lost', ended_at = ? WHERE id = ? AND status = 'running'", now, id)
        } > 0
    }

    func instanceOf(_ id: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT instance_id FROM shell_jobs WHERE id = ?", id)?.string("instance_id")
        }
    }

    func job(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM shell_jobs WHERE id = ?", id) }
    }

    func workspaceOf(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM shell_jobs WHERE id = ?", id)?.string("ws_id") }
    }

    /// A workspace's jobs, newest first, after the page's cursor (its started_at and id).
    func jobs(wsID: String, projectID: String?, status: String?, page: PageRequest) async throws -> [Row] {
        var q = Query("SELECT * FROM shell_jobs WHERE ws_id = ?", wsID)
        q.and("project_id = ?", ifGiven: projectID)
        q.and("status = ?", ifGiven: status)
        try page.newestFirst(&q, timeColumn: "started_at", idColumn: "id")
        let query = q
        return try await db.read { tx in try query.rows(tx) }
    }

    /// The user's commands in a workspace, each once, newest first: (command, runs, last run).
    func recentCommands(
        userID: String, wsID: String, projectID: String?, limit: Int
    ) async throws -> [(String, Int, Date)] {
        var q = Query(
            "SELECT command, MAX(started_at) AS last_run_at, COUNT(*) AS runs FROM shell_jobs WHERE user_id = ? AND ws_id = ?",
            userID, wsID)
        q.and("kind = 'run'")
        q.and("project_id = ?", ifGiven: projectID)
        q.append("GROUP BY command ORDER BY last_run_at DESC LIMIT ?", limit)
        let query = q
        return try await db.read { tx in try query.rows(tx) }.map { r in
            (r.string("command") ?? "", r.int("runs") ?? 0, r.date("last_run_at") ?? Date())
        }
    }

    func testCommand(_ projectID: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT test_command FROM shell_settings WHERE project_id = ?", projectID)?.string(
                "test_command")
        }
    }

    func setTestCommand(_ projectID: String, _ command: String?, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO shell_settings (project_id, test_command, updated_at) VALUES (?, ?, ?)
                ON CONFLICT (project_id) DO UPDATE SET test_command = excluded.test_command, updated_at = excluded.updated_at
                """, projectID, command, now)
        }
    }
}
