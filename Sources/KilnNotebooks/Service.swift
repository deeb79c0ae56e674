import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

/// Notebooks: `.ipynb` files in a project, read and written by Kiln itself. The file is the truth:
/// every change reads it, checks the editor's `If-Match` against its hash (412 when stale), applies
/// the change and writes it atomically beneath the project; a file changed by someone else between
/// that read and the write is a 409.
public final class NotebookService: Sendable {
    let store: NotebookStore
    let projects: any ProjectDirectory
    let clock: any Clock
    /// One change at a time per server, so two editors' read-modify-writes cannot interleave.
    let editing = Mutex(())
    let runner: NotebookRunner
    let instances: Instances
    /// Judges each run (`notebook.run`, with the notebook's path).
    let policy: (any PolicyEngine)?

    init(services: Services, projects: any ProjectDirectory, policy: (any PolicyEngine)? = nil) {
        store = NotebookStore(db: services.db)
        self.projects = projects
        clock = services.clock
        instances = services.instances
        runner = NotebookRunner(services: services, store: store)
        self.policy = policy
    }

    /// `nb_` + a hash of the project and path: the same path always has the same id.
    static func makeID(projectID: String, path: String) -> String {
        "nb_" + Crypto.hex(Crypto.sha256(Array("\(projectID)\u{0}\(path)".utf8))).prefix(32)
    }

    static func checkPath(_ path: String) throws -> String {
        let clean = try SafePath.segments(path).joined(separator: "/")
        guard clean.hasSuffix(".ipynb"), clean.utf8.count <= 1024, clean.count > 6 else {
            throw APIError.validation("path must name a .ipynb file inside the project", field: "path")
        }
        return clean
    }

    // MARK: Reading

    /// The notebook an id names, inside the admitted workspace (404 otherwise).
    func locate(_ nbID: String, access: WorkspaceAccess) async throws -> (ProjectRef, String, Row) {
        guard nbID.hasPrefix("nb_"), nbID.utf8.count <= 64, let row = try await store.notebook(nbID),
            let projectID = row.string("project_id"), let project = try await projects.lookup(projectID),
            project.wsID == access.wsID, let path = row.string("path")
        else { throw APIError.notFound("No such notebook") }
        return (project, path, row)
    }

    func workspaceOf(_ nbID: String) async throws -> String? {
        guard nbID.hasPrefix("nb_"), nbID.utf8.count <= 64, let row = try await store.notebook(nbID),
            let projectID = row.string("project_id")
        else { return nil }
        return try await projects.lookup(projectID)?.wsID
    }

    static func read(_ project: ProjectRef, _ path: String) throws -> NotebookFile {
        guard let bytes = try SafePath.readBeneath(root: project.root, relative: path, max: NotebookFile.maxBytes)
        else {
            throw APIError.notFound("The notebook's file \(path) is gone")
        }
        return try NotebookFile.parse(bytes)
    }

    static func document(_ nb: NotebookFile, id: String, project: ProjectRef, path: String, row: Row?) -> JSONValue {
        var o = nb.top
        o["id"] = .string(id)
        o["project_id"] = .string(project.id)
        o["path"] = .string(path)
        o["etag"] = .string(nb.etag)
        o["kernel"] = nb.kernel.map { .string($0) } ?? .null
        o["last_run_at"] = row?.date("last_run_at").map { .string(HTTPDate.iso8601($0)) } ?? .null
        o["cells"] = .array(nb.cells.map(NotebookFile.shown))
        return .object(o)
    }

    func get(_ nbID: String, access: WorkspaceAccess) async throws -> (JSONValue, String) {
        let (project, path, row) = try await locate(nbID, access: access)
        let nb = try Self.read(project, path)
        return (Self.document(nb, id: nbID, project: project, path: path, row: row), nb.etag)
    }

    /// The project's notebooks: indexed `.ipynb` files and those made here, with their cell counts.
    func list(projectID: String?, access: WorkspaceAccess, userID: String) async throws -> [JSONValue] {
        let project = try await projects.resolve(projectID, access: access, userID: userID)
        var paths = Set(try await projects.indexedPaths(project).filter { $0.hasSuffix(".ipynb") })
        let rows = try await store.notebooks(projectID: project.id)
        for r in rows { if let p = r.string("path") { paths.insert(p) } }
        var items: [JSONValue] = []
        for path in paths.sorted().prefix(500) {
            guard let nb = try? Self.read(project, path) else { continue }
            let id = try await store.id(
                projectID: project.id, path: path, newID: Self.makeID(projectID: project.id, path: path),
                at: clock.now())
            let row = rows.first { $0.string("path") == path }
            items.append([
                "id": .string(id), "path": .string(path), "cells": .int(nb.cells.count),
                "kernel": nb.kernel.map { .string($0) } ?? .null, "etag": .string(nb.etag),
                "last_run_at": row?.date("last_run_at").map { .string(HTTPDate.iso8601($0)) } ?? .null,
            ])
        }
        return items
    }

    // MARK: Changing

    func create(_ i: CreateInput, access: WorkspaceAccess, userID: String) async throws -> (JSONValue, String) {
        let path = try Self.checkPath(i.path)
        let kernel = i.kernel ?? "python3"
        guard kernel.range(of: #"^[A-Za-z0-9._-]{1,64}$"#, options: .regularExpression) != nil else {
            throw APIError.validation("kernel must be a kernelspec name", field: "kernel")
        }
        let project = try await projects.resolve(i.projectId, access: access, userID: userID)
        let language = kernel.hasPrefix("python") ? "python" : kernel
        let nb = NotebookFile.empty(kernel: kernel, language: language)
        try editing.withLock { _ in
            // Anything there (even a file too large to read) counts as taken.
            let taken: Bool
            do {
                taken = try SafePath.readBeneath(root: project.root, relative: path, max: NotebookFile.maxBytes) != nil
            } catch { taken = true }
            if taken { throw APIError.conflict("\(path) exists already; open it instead") }
            try SafePath.writeBeneath(root: project.root, relative: path, bytes: nb.render(), createFolders: true)
        }
        let id = try await store.id(
            projectID: project.id, path: path, newID: Self.makeID(projectID: project.id, path: path), at: clock.now())
        try? await projects.reindex(project)
        return try await get(id, access: access)
    }

    /// Reads, checks `ifMatch`, changes and writes the notebook; returns what `change` answered and
    /// the new ETag.
    func mutate<T: Sendable>(
        _ nbID: String, access: WorkspaceAccess, ifMatch: String?, _ change: (inout NotebookFile) throws -> T
    ) async throws -> (T, String) {
        let (project, path, _) = try await locate(nbID, access: access)
        return try editing.withLock { _ in
            var nb = try Self.read(project, path)
            if let ifMatch, ifMatch != nb.etag {
                throw HTTPError(
                    .preconditionFailed,
                    message: "The notebook changed since you read it; reload it and apply your change again",
                    details: ["etag": .string(nb.etag)])
            }
            let answer = try change(&nb)
            guard nb.cells.count <= NotebookLimits.maxCells else {
                throw APIError.validation(
                    "A notebook may have at most \(NotebookLimits.maxCells) cells", field: "index")
            }
            let bytes = nb.render()
            // Someone else (an editor outside Kiln) wrote the file meanwhile: do not overwrite it.
            let now = try SafePath.readBeneath(root: project.root, relative: path, max: NotebookFile.maxBytes)
            guard let now, NotebookFile.etag(now) == nb.etag else {
                throw APIError.conflict("The notebook's file changed on disk while this change was made; reload it")
            }
            try SafePath.writeBeneath(root: project.root, relative: path, bytes: bytes, createFolders: false)
            return (answer, NotebookFile.etag(bytes))
        }
    }

    static func checkSource(_ s: String?) throws {
        if let s, s.utf8.count > NotebookLimits.maxSource {
            throw APIError.validation("source may be at most 1 MiB", field: "source")
        }
    }

    static func checkType(_ t: String) throws {
        guard NotebookFile.cellTypes.contains(t) else {
            throw APIError.validation("cell_type must be code, markdown or raw", field: "cell_type")
        }
    }

    func addCell(
        _ nbID: String, _ i: AddCellInput, access: WorkspaceAccess, ifMatch: String?
    ) async throws -> (
        JSONValue, String
    ) {
        try Self.checkType(i.cellType)
        try Self.checkSource(i.source)
        return try await mutate(nbID, access: access, ifMatch: ifMatch) { nb in
            let index = i.index ?? nb.cells.count
            guard (0...nb.cells.count).contains(index) else {
                throw APIError.validation("index must be from 0 to \(nb.cells.count)", field: "index")
            }
            var id = NotebookFile.newID()
            while nb.index(of: id) != nil { id = NotebookFile.newID() }
            let cell = NotebookFile.cell(type: i.cellType, source: i.source ?? "", id: id)
            nb.cells.insert(cell, at: index)
            return NotebookFile.shown(cell)
        }
    }

    func patchCell(
        _ nbID: String, _ cellID: String, _ i: PatchCellInput, access: WorkspaceAccess, ifMatch: String?
    ) async throws -> (JSONValue, String) {
        if let t = i.cellType { try Self.checkType(t) }
        try Self.checkSource(i.source)
        if let m = i.metadata {
            guard case .object = m else { throw APIError.validation("metadata must be an object", field: "metadata") }
            guard m.jsonText.utf8.count <= NotebookLimits.maxMetadata else {
                throw APIError.validation("metadata may be at most 256 KiB", field: "metadata")
            }
        }
        return try await mutate(nbID, access: access, ifMatch: ifMatch) { nb in
            guard let at = nb.index(of: cellID) else { throw APIError.notFound("No cell \(cellID.prefix(64))") }
            var cell = nb.cells[at]
            if let t = i.cellType { cell = NotebookFile.retype(cell, to: t) }
            if let s = i.source { cell["source"] = NotebookFile.lines(s) }
            if let m = i.metadata { cell["metadata"] = m }
            nb.cells[at] = cell
            return NotebookFile.shown(cell)
        }
    }

    func deleteCell(_ nbID: String, _ cellID: String, access: WorkspaceAccess, ifMatch: String?) async throws -> String
    {
        try await mutate(nbID, access: access, ifMatch: ifMatch) { nb in
            guard let at = nb.index(of: cellID) else { throw APIError.notFound("No cell \(cellID.prefix(64))") }
            nb.cells.remove(at: at)
        }.1
    }

    func moveCell(
        _ nbID: String, _ cellID: String, to index: Int, access: WorkspaceAccess, ifMatch: String?
    ) async throws -> (JSONValue, String) {
        try await mutate(nbID, access: access, ifMatch: ifMatch) { nb in
            guard let at = nb.index(of: cellID) else { throw APIError.notFound("No cell \(cellID.prefix(64))") }
            guard (0..<nb.cells.count).contains(index) else {
                throw APIError.validation("index must be from 0 to \(nb.cells.count - 1)", field: "index")
            }
            let cell = nb.cells.remove(at: at)
            nb.cells.insert(cell, at: index)
            return NotebookFile.shown(cell)
        }
    }

    // MARK: Running

    /// Starts a code cell on the notebook's kernel; its events go to `nbrun:<run_id>` and its outputs
    /// into the file when it ends. Returns the run's id and its outcome to wait for.
    func run(
        _ nbID: String, cellID: String, access: WorkspaceAccess, userID: String, ip: String,
        actorKind: String = "user"
    ) async throws -> (String, Task<JSONValue, Never>) {
        let (project, path, _) = try await locate(nbID, access: access)
        // An agent's run_cell was judged as its tool call already.
        if let policy, actorKind != "agent" {
            try await policy.check(
                wsID: access.wsID, userID: userID, action: "notebook.run",
                context: PolicyContext(path: path, actorKind: actorKind))
        }
        let nb = try Self.read(project, path)
        guard let at = nb.index(of: cellID) else { throw APIError.notFound("No cell \(cellID.prefix(64))") }
        let cell = nb.cells[at]
        let code = NotebookFile.text(cell["source"])
        let runID = IDs.make("nbr")
        let now = clock.now()
        _ = try await store.db.write { tx in
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "notebook.cell.run", actorUserID: userID, wsID: access.wsID, resourceType: "notebook",
                    resourceID: nbID, ip: ip,
                    details: [
                        "cell_id": .string(cellID), "source_sha256": .string(NotebookRunner.sourceHash(code)),
                        "run_id": .string(runID),
                    ]), at: now)
        }
        guard cell["cell_type"]?.stringValue == "code" else {
            // Markdown and raw cells have nothing to run.
            _ = try? await runner.bus.publish(
                topic: NotebookRunner.topic(runID), type: "cell.completed",
                data: #"{"status":"ok","duration_ms":0,"execution_count":null}"#)
            return (runID, Task { ["status": "ok", "execution_count": .null, "outputs": [], "duration_ms": 0] })
        }
        try await kernelElsewhere(nbID)
        let kernel = try await runner.kernel(nbID, project: project, name: nb.kernel ?? "python3", userID: userID)
        let task = Task { () -> JSONValue in
            let r = await runner.execute(kernel, code: code, runID: runID)
            try? await store.setRun(nbID, at: clock.now())
            // Outputs go into the cell if it is still there (an editor may have removed it meanwhile).
            _ = try? await mutate(nbID, access: access, ifMatch: nil) { nb in
                guard let i = nb.index(of: cellID) else { return }
                nb.cells[i]["outputs"] = NotebookRunner.stored(r.outputs)
                nb.cells[i]["execution_count"] = r.count.map { .int($0) } ?? .null
            }
            return [
                "run_id": .string(runID), "status": .string(r.status),
                "execution_count": r.count.map { .int($0) } ?? .null, "duration_ms": .int(r.ms),
                "outputs": .array(r.outputs.map(NotebookFile.shownOutput)),
            ]
        }
        return (runID, task)
    }

    /// Runs every code cell in order; stops at the first error unless `continueOnError`.
    func runAll(
        _ nbID: String, continueOnError: Bool, access: WorkspaceAccess, userID: String, ip: String,
        actorKind: String = "user"
    ) async throws -> JSONValue {
        let (project, path, _) = try await locate(nbID, access: access)
        let ids = try Self.read(project, path).cells.filter { $0["cell_type"]?.stringValue == "code" }.compactMap {
            $0["id"]?.stringValue
        }
        var results: [JSONValue] = []
        for id in ids {
            let (_, task) = try await run(
                nbID, cellID: id, access: access, userID: userID, ip: ip, actorKind: actorKind)
            let r = await task.value
            results.append([
                "cell_id": .string(id), "status": r.objectValue?["status"] ?? "ok",
                "execution_count": r.objectValue?["execution_count"] ?? .null,
            ])
            if r.objectValue?["status"]?.stringValue != "ok" && !continueOnError { break }
        }
        return ["cells": .array(results)]
    }

    func kernelInfo(_ nbID: String, access: WorkspaceAccess) async throws -> JSONValue {
        _ = try await locate(nbID, access: access)
        guard let k = runner.existing(nbID) else { return ["state": "none", "kernel": .null, "language": .null] }
        return await k.info
    }

    /// A kernel's state lives in its process: when another live instance sharing the database holds
    /// this notebook's kernel, running, interrupting or restarting it here answers 421 naming that
    /// instance (a load balancer retries there). A kernel recorded for an instance that is gone went
    /// with it, and is forgotten.
    func kernelElsewhere(_ nbID: String) async throws {
        guard runner.existing(nbID) == nil, let holder = try await store.kernelHolder(nbID), holder != instances.id
        else { return }
        if try await instances.url(of: holder) != nil {
            throw try await instances.misdirected("The kernel of notebook \(nbID)", holder: holder)
        }
        try await store.releaseKernel(nbID, instance: holder)
    }

    func interrupt(_ nbID: String, access: WorkspaceAccess) async throws -> JSONValue {
        _ = try await locate(nbID, access: access)
        try await kernelElsewhere(nbID)
        guard let k = runner.existing(nbID) else { throw APIError.conflict("The notebook has no kernel running") }
        await k.interrupt()
        return await k.info
    }

    func restart(_ nbID: String, access: WorkspaceAccess, userID: String) async throws -> JSONValue {
        let (project, path, _) = try await locate(nbID, access: access)
        try await kernelElsewhere(nbID)
        if let k = runner.existing(nbID), await k.state != .dead {
            await k.restart()
            return await k.info
        }
        let nb = try Self.read(project, path)
        let k = try await runner.kernel(nbID, project: project, name: nb.kernel ?? "python3", userID: userID)
        return await k.info
    }
}

extension NotebookService: NotebookCells {
    /// The id of a notebook path in a project (made on first sight).
    func nbID(_ project: ProjectRef, _ path: String) async throws -> String {
        let clean = try Self.checkPath(path)
        return try await store.id(
            projectID: project.id, path: clean, newID: Self.makeID(projectID: project.id, path: clean), at: clock.now())
    }

    public func readNotebook(project: ProjectRef, path: String) async throws -> String {
        let nb = try Self.read(project, try Self.checkPath(path))
        var out = "notebook \(path) (kernel \(nb.kernel ?? "none"), \(nb.cells.count) cells)\n"
        for c in nb.cells {
            let id = c["id"]?.stringValue ?? ""
            let type = c["cell_type"]?.stringValue ?? ""
            var head = "--- cell \(id) (\(type)"
            if case .int(let n)? = c["execution_count"] { head += ", run \(n)" }
            out += head + ")\n" + NotebookFile.text(c["source"]) + "\n"
            if case .array(let outputs)? = c["outputs"], !outputs.isEmpty {
                out += "[outputs]\n" + Self.outputsText(outputs) + "\n"
            }
            if out.utf8.count > 64 * 1024 {
                out += "… (truncated; the notebook is longer)\n"
                break
            }
        }
        return out
    }

    public func runCell(
        project: ProjectRef, path: String, cellID: String, userID: String
    ) async throws -> (
        ok: Bool, text: String
    ) {
        let id = try await nbID(project, path)
        let (_, task) = try await run(
            id, cellID: cellID, access: WorkspaceAccess(wsID: project.wsID, role: .member), userID: userID,
            ip: "agent", actorKind: "agent")
        let r = await task.value.objectValue ?? [:]
        let status = r["status"]?.stringValue ?? "ok"
        var text = "status: \(status)"
        if case .int(let n)? = r["execution_count"] { text += ", execution count \(n)" }
        if case .array(let outputs)? = r["outputs"], !outputs.isEmpty { text += "\n" + Self.outputsText(outputs) }
        return (status == "ok", text)
    }

    /// Outputs as a model reads them: stream text, text/plain of results, errors by name and value.
    static func outputsText(_ outputs: [JSONValue]) -> String {
        var out = ""
        for o in outputs {
            guard case .object(let x) = o else { continue }
            switch x["output_type"]?.stringValue {
            case "stream": out += NotebookFile.text(x["text"])
            case "error":
                out += "\(x["ename"]?.stringValue ?? "Error"): \(x["evalue"]?.stringValue ?? "")\n"
            default:
                let data = x["data"]?.objectValue ?? [:]
                if let t = data["text/plain"] { out += NotebookFile.text(t) + "\n" }
                for k in data.keys.sorted() where k.hasPrefix("image/") { out += "[\(k) image]\n" }
            }
        }
        return out.utf8.count > 12_000 ? String(out.utf8.prefix(12_000)).map { $0 + "…" } ?? "" : out
    }
}
