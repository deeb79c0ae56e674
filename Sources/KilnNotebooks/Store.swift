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

    // MARK: Kernels (which instance holds each notebook's kernel)

    func kernelHolder(_ nbID: String) async throws -> String? {
        try await db.read { tx in
            try tx.first("SELECT instance_id FROM notebook_kernels WHERE nb_id = ?", nbID)?.string("instance_id")
        }
    }

    func holdKernel(_ nbID: String, instance: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO notebook_kernels (nb_id, instance_id, started_at) VALUES (?, ?, ?)
                ON CONFLICT (nb_id) DO UPDATE SET instance_id = excluded.instance_id, started_at = excluded.started_at
                """, nbID, instance, now)
        }
    }

    func releaseKernel(_ nbID: String, instance: String) async throws {
        _ = try await db.write { tx in
            try tx.run("DELETE FROM notebook_kernels WHERE nb_id = ? AND instance_id = ?", nbID, instance)
        }
    }

    /// Forgets the kernels of instances that are gone (their processes went with them).
    func releaseKernels(notHeldBy alive: Set<String>) async throws {
        _ = try await db.write { tx in
            for r in try tx.query("SELECT nb_id, instance_id FROM notebook_kernels")
            where !alive.contains(r.string("instance_id") ?? "") {
                try tx.run(
                    "DELETE FROM notebook_kernels WHERE nb_id = ? AND instance_id = ?", r.string("nb_id"),
                    r.string("instance_id"))
            }
        }
    }
}
