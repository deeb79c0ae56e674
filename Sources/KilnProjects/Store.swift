import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The projects domain's SQL: projects, who opened what, the file table of the index, findings and
/// rescan jobs. (The trigram index and the symbol table are files of their own under the data dir.)
struct ProjectStore: Sendable {
    let db: Database

    func project(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM projects WHERE id = ?", id) }
    }

    /// The caller's most recently opened project.
    func mostRecent(userID: String) async throws -> (id: String, wsID: String)? {
        try await db.read { tx in
            try tx.first(
                "SELECT project_id, ws_id FROM project_opens WHERE user_id = ? ORDER BY opened_at DESC LIMIT 1", userID)
        }.flatMap { r in r.string("project_id").map { ($0, r.string("ws_id") ?? "") } }
    }

    /// Every project of a workspace, by name.
    func projects(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM projects WHERE ws_id = ? ORDER BY name, id LIMIT 1000", wsID)
        }
    }

    /// The indexed paths of a project.
    func paths(_ projectID: String) async throws -> [String] {
        try await db.read { tx in
            try tx.query("SELECT path FROM project_files WHERE project_id = ?", projectID).compactMap {
                $0.string("path")
            }
        }
    }

    func recent(userID: String, wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT p.* FROM project_opens o JOIN projects p ON p.id = o.project_id
                WHERE o.user_id = ? AND o.ws_id = ? ORDER BY o.opened_at DESC LIMIT 50
                """, userID, wsID)
        }
    }

    /// Opens the folder in the workspace: records the open of the project already there, or creates
    /// it (with its audit row). Returns the project's id and whether it is new.
    func open(
        wsID: String, dir: String, name: String, vcs: String, gitURL: String?, userID: String, newID: String,
        at now: Date
    ) async throws -> (String, Bool) {
        try await db.write { tx -> (String, Bool) in
            if let existing = try tx.first("SELECT id FROM projects WHERE ws_id = ? AND path = ?", wsID, dir)?.string(
                "id")
            {
                try tx.run(
                    """
                    INSERT INTO project_opens (user_id, project_id, ws_id, opened_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (user_id, project_id) DO UPDATE SET opened_at = excluded.opened_at
                    """, userID, existing, wsID, now)
                return (existing, false)
            }
            // One folder belongs to one workspace: not the same, an enclosing or an enclosed folder
            // of a project another workspace has open (checked in the write, so two loads cannot race).
            for other in try tx.query("SELECT path FROM projects WHERE ws_id != ?", wsID) {
                let path = other.string("path") ?? ""
                if SafePath.isInside(dir, root: path) || SafePath.isInside(path, root: dir) {
                    throw HTTPError(
                        .conflict, code: "folder_in_use",
                        message: "This folder, or one inside or around it, is open in another workspace",
                        details: ["field": "path"])
                }
            }
            try tx.run(
                "INSERT INTO projects (id, ws_id, name, path, vcs, git_url, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                newID, wsID, name, dir, vcs, gitURL, userID, now)
            try tx.run(
                "INSERT INTO project_opens (user_id, project_id, ws_id, opened_at) VALUES (?, ?, ?, ?)", userID, newID,
                wsID, now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "project.loaded", actorUserID: userID, wsID: wsID, resourceType: "project",
                    resourceID: newID, details: ["path": .string(dir), "git_url": gitURL.map { .string($0) } ?? .null]),
                at: now)
            return (newID, true)
        }
    }

    // MARK: Index state

    func isIndexed(_ projectID: String) async throws -> Bool {
        try await db.read { tx in
            try tx.first("SELECT indexed_at FROM projects WHERE id = ?", projectID)?["indexed_at"] != .null
        }
    }

    func markIndexed(_ projectID: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE projects SET index_status = 'indexed', indexed_at = ? WHERE id = ?", now, projectID)
        }
    }

    /// What the last rescan stored of each file (to tell unchanged files).
    func storedFiles(_ projectID: String) async throws -> [String: StoredFile] {
        try await db.read { tx in
            var m: [String: StoredFile] = [:]
            for r in try tx.query(
                "SELECT path, size, mtime_ns, hash, binary FROM project_files WHERE project_id = ?", projectID)
            {
                m[r.string("path") ?? ""] = StoredFile(
                    size: r.int("size") ?? 0, mtime: r.int64("mtime_ns") ?? 0, hash: r.string("hash"),
                    binary: (r.int("binary") ?? 0) != 0)
            }
            return m
        }
    }

    /// A rescan's outcome in one transaction (one sync of the log, however many files changed).
    func storeRescan(
        _ projectID: String, results: [RescanResult], findings: [String: [Finding]], gone: [String]
    ) async throws {
        _ = try await db.write { tx in
            for c in results {
                if !c.contentChanged {
                    try tx.run(
                        "UPDATE project_files SET size = ?, mtime_ns = ? WHERE project_id = ? AND path = ?", c.size,
                        c.mtime, projectID, c.path)
                    continue
                }
                try tx.run(
                    """
                    INSERT INTO project_files (project_id, path, size, mtime_ns, hash, binary) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (project_id, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, hash = excluded.hash,
                        binary = excluded.binary
                    """, projectID, c.path, c.size, c.mtime, c.hash, c.binary)
                if c.known {
                    try tx.run("DELETE FROM project_findings WHERE project_id = ? AND path = ?", projectID, c.path)
                }
                for f in findings[c.path] ?? [] {
                    try tx.run(
                        """
                        INSERT INTO project_findings (project_id, path, line, rule, severity, message, excerpt) VALUES (?, ?, ?, ?, ?, ?, ?)
                        """, projectID, f.path, f.line, f.rule, f.severity, f.message, f.excerpt)
                }
            }
            for path in gone {
                try tx.run("DELETE FROM project_files WHERE project_id = ? AND path = ?", projectID, path)
                try tx.run("DELETE FROM project_findings WHERE project_id = ? AND path = ?", projectID, path)
            }
        }
    }

    func findings(_ projectID: String) async throws -> [Finding] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT path, line, rule, severity, message, excerpt FROM project_findings WHERE project_id = ? ORDER BY path, line LIMIT 10000
                """, projectID)
        }.map { r in
            Finding(
                path: r.string("path") ?? "", line: r.int("line") ?? 0, rule: r.string("rule") ?? "",
                severity: r.string("severity") ?? "",
                message: r.string("message") ?? "", excerpt: r.string("excerpt") ?? "")
        }
    }

    // MARK: Rescan jobs

    func startRescan(jobID: String, projectID: String, wsID: String, at now: Date) async throws {
        try await db.write { tx in
            try tx.run(
                "INSERT INTO project_rescans (id, project_id, ws_id, status, started_at) VALUES (?, ?, ?, 'running', ?)",
                jobID, projectID, wsID, now)
            try tx.run("UPDATE projects SET index_status = 'indexing' WHERE id = ?", projectID)
        }
    }

    func finishRescan(jobID: String, projectID: String, stats: String, at now: Date) async throws {
        try await db.write { tx in
            try tx.run(
                "UPDATE project_rescans SET status = 'done', finished_at = ?, stats = ? WHERE id = ?", now, stats, jobID
            )
            try tx.run("UPDATE projects SET index_status = 'indexed', indexed_at = ? WHERE id = ?", now, projectID)
        }
    }

    func failRescan(jobID: String, projectID: String, at now: Date) async throws {
        try await db.write { tx in
            try tx.run("UPDATE project_rescans SET status = 'failed', finished_at = ? WHERE id = ?", now, jobID)
            try tx.run("UPDATE projects SET index_status = 'failed' WHERE id = ?", projectID)
        }
    }

    func workspaceOfRescan(_ jobID: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM project_rescans WHERE id = ?", jobID)?.string("ws_id")
        }
    }
}
