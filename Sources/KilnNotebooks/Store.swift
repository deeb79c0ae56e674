import Foundation
import KilnCore
import KilnStore

/// The notebooks domain's SQL: the id each notebook path has (the file itself is the truth).
struct NotebookStore: Sendable {
    let db: Database

    /// The id of `path` in the project, made on first sight (stable for the path).
    func id(projectID: String, path: String, newID: String, at now: Date) async throws -> String {
        try await db.write { tx in
            if let r = try tx.first("SELECT id FROM notebooks WHERE project_id = ? AND path = ?", projectID, path),
                let id = r.string("id")
            {
                return id
            }
            try tx.run(
                "INSERT INTO notebooks (id, project_id, path, created_at) VALUES (?, ?, ?, ?)", newID, projectID, path,
                now)
            return newID
        }
    }

    func notebook(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM notebooks WHERE id = ?", id) }
    }

    func notebooks(projectID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM notebooks WHERE project_id = ? ORDER BY path", projectID)
        }
    }

    func setRun(_ id: String, at now: Date) async throws {
        _ = try await db.write { tx in try tx.run("UPDATE notebooks SET last_run_at = ? WHERE id = ?", now, id) }
    }
}
