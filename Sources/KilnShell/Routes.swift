import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnProjects
import KilnStore

/// Shell: commands and test runs inside a project, streamed and kept as jobs; ssh to configured hosts.
public struct ShellModule: KilnModule {
    public let name = "shell"
    public init() {}
    public var migrations: [Migration] { ShellMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("shell:run", "Run commands and tests in a workspace's projects, cancel jobs", minimumRole: .member),
            PermissionGrant("shell:read", "See jobs, their output and recent commands", minimumRole: .viewer),
            PermissionGrant("ssh:run", "Run commands on and copy files from the server's configured ssh hosts", minimumRole: .admin),
        ]
    }

    static let small = 64 * 1024

    public func register(_ routes: Routes, _ services: Services) {
        let jobs = ShellJobs.shared(services)
        let projects = ProjectDirectory(services: services)
        let db = services.db
        let bus = services.bus
        services.hooks.workspaceOf(param: "job_id") { id in try await jobs.workspaceOf(id) }
        services.jobs.run("shell-recover") { try await jobs.recoverAfterRestart() }
        let sshConfigPath = services.config.sshConfig ?? SSHConfig.defaultPath()

        let str: JSONValue = ["type": "string"]
        let int: JSONValue = ["type": "integer"]
        let jobSchema: JSONValue = ["type": "object", "properties": ["job_id": str, "status": str, "events_url": str]]
        let streamDoc = "SSE: started {job_id, pid}, stdout/stderr {data}, exit {code, signal, duration_ms}; with Accept: application/json, {job_id} at once"

        struct RunInput: Decodable {
            let projectId: String?
            let command: String
            let cwd: String?
            let env: [String: String]?
            let timeoutS: Double?
        }

        /// The answer to a job start: its event stream, or `{job_id}` for JSON clients.
        @Sendable func started(_ req: Request, _ jobID: String) throws -> Response {
            if req.prefersJSON {
                return .json(JSONValue.object(["job_id": .string(jobID), "status": "running",
                                                          "events_url": .string("/api/shell/jobs/\(jobID)/events")]), status: .accepted)
            }
            return try stream(jobID, req)
        }

        @Sendable func stream(_ jobID: String, _ req: Request) throws -> Response {
            let cursor = try SSE.resumeCursor(req) ?? 0
            let base64 = try encoding(req)
            return Response.sse { sse in
                for try await e in bus.subscribe(topic: ShellJobs.topic(jobID), after: cursor) {
                    var data = e.data
                    if e.type == "stdout" || e.type == "stderr",
                       let obj = try? JSONDecoder().decode([String: String].self, from: Data(e.data.utf8)) {
                        if base64 {
                            let b64 = obj["b64"] ?? Data((obj["data"] ?? "").utf8).base64EncodedString()
                            data = JSONValue.object(["data": .string(b64), "encoding": "base64"]).jsonText
                        } else if obj["b64"] != nil {
                            data = JSONValue.object(["data": .string(obj["data"] ?? "")]).jsonText
                        }
                    }
                    try await sse.send(id: String(e.seq), event: e.type, data: data)
                    if e.type == "exit" { return }
                }
            }
        }

        @Sendable func cwdIn(_ root: String, _ cwd: String?) throws -> (String, String) {
            let rel = cwd ?? ""
            let dir = try SafePath.resolve(root: root, relative: rel, field: "cwd")
            var st = stat()
            guard stat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw APIError.validation("cwd is not a directory", field: "cwd") }
            let shown = dir == root ? "." : String(dir.dropFirst(root.count + 1))
            return (dir, shown)
        }

        @Sendable func timeout(_ t: Double?) throws -> Double {
            guard let t else { return ShellJobs.defaultTimeout }
            guard t > 0, t <= ShellJobs.maxTimeout else { throw APIError.validation("timeout_s must be from 1 to 86400", field: "timeout_s") }
            return t
        }

        routes.add(.POST, "/api/shell/run", permission: "shell:run", summary: "Run a command with /bin/sh -c in a project; " + streamDoc,
                   tags: ["shell"], query: [("encoding", "base64 for exact output bytes", false)],
                   requestBody: ["type": "object", "required": ["command"],
                                 "properties": ["project_id": str, "command": str, "cwd": str, "env": ["type": "object"], "timeout_s": int]],
                   responseBody: jobSchema, responseContentType: "text/event-stream", bodyLimit: ShellModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            _ = try encoding(req)
            let input = try await req.decode(RunInput.self, limit: ShellModule.small)
            let command = input.command
            guard !command.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, command.utf8.count <= 32 * 1024, !command.utf8.contains(0) else {
                throw APIError.validation("command must be 1 byte to 32 KiB of text without NUL", field: "command")
            }
            let project = try await projects.resolve(input.projectId, access: access, userID: uid)
            let (cwd, shown) = try cwdIn(project.root, input.cwd)
            let id = try await jobs.start(JobSpec(wsID: access.wsID, projectID: project.id, userID: uid, kind: "run", command: command,
                                                  cwd: cwd, displayCwd: shown, env: try ShellJobs.validateEnv(input.env), timeout: try timeout(input.timeoutS)))
            return try started(req, id)
        }

        routes.add(.POST, "/api/shell/test", permission: "shell:run",
                   summary: "Run the project's tests (saved command, or detected: swift, pytest, npm, cargo, go, make); the exit event carries a summary",
                   tags: ["shell"], query: [("encoding", "base64 for exact output bytes", false)],
                   requestBody: ["type": "object", "properties": ["project_id": str, "timeout_s": int]],
                   responseBody: jobSchema, responseContentType: "text/event-stream", bodyLimit: ShellModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            _ = try encoding(req)
            struct Input: Decodable { let projectId: String?; let timeoutS: Double? }
            let input = try await req.bodyBytes(limit: ShellModule.small).isEmpty ? Input(projectId: nil, timeoutS: nil) : try await req.decode(Input.self, limit: ShellModule.small)
            let project = try await projects.resolve(input.projectId, access: access, userID: uid)
            let id = try await startTests(jobs: jobs, db: db, project: project, userID: uid, timeout: try timeout(input.timeoutS))
            return try started(req, id)
        }

        routes.add(.GET, "/api/shell/settings", permission: "shell:read", summary: "The project's saved test command and the detected one",
                   tags: ["shell"], query: [("project_id", "the project", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let project = try await projects.resolve(req.query["project_id"], access: access, userID: try ctx.requirePrincipal().userID)
            let pid = project.id
            let saved = try await db.read { tx in try tx.first("SELECT test_command FROM shell_settings WHERE project_id = ?", pid)?.string("test_command") }
            let detected = TestRunners.detect(root: project.root)
            return .json(JSONValue.object(["project_id": .string(pid), "test_command": saved.map { .string($0) } ?? .null,
                                                      "detected_runner": detected.map { .string($0.runner) } ?? .null,
                                                      "detected_command": detected.map { .string($0.command) } ?? .null]))
        }

        routes.add(.PUT, "/api/shell/settings", permission: "shell:run", summary: "Save (or clear with null) the project's test command",
                   tags: ["shell"], requestBody: ["type": "object", "properties": ["project_id": str, "test_command": ["type": ["string", "null"]]]],
                   bodyLimit: ShellModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            struct Input: Decodable { let projectId: String?; let testCommand: String? }
            let input = try await req.decode(Input.self, limit: ShellModule.small)
            if let c = input.testCommand {
                guard !c.trimmingCharacters(in: .whitespaces).isEmpty, c.utf8.count <= 4096, !c.utf8.contains(0) else {
                    throw APIError.validation("test_command must be 1 to 4096 bytes without NUL", field: "test_command")
                }
            }
            let project = try await projects.resolve(input.projectId, access: access, userID: try ctx.requirePrincipal().userID)
            let pid = project.id, now = services.clock.now(), cmd = input.testCommand
            _ = try await db.write { tx in
                try tx.run("INSERT INTO shell_settings (project_id, test_command, updated_at) VALUES (?, ?, ?) ON CONFLICT (project_id) DO UPDATE SET test_command = excluded.test_command, updated_at = excluded.updated_at", pid, cmd, now)
            }
            return .json(JSONValue.object(["project_id": .string(pid), "test_command": cmd.map { .string($0) } ?? .null]))
        }

        routes.add(.GET, "/api/shell/jobs", permission: "shell:read", summary: "In-flight and recent jobs, newest first",
                   tags: ["shell"], query: [("project_id", "only this project's", false), ("status", "running, succeeded, failed, cancelled, timed_out, lost", false),
                                            ("limit", "1 to 200 (default 50)", false), ("cursor", "next_cursor of the previous page", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let page = try PageRequest(query: req.query)
            let statuses = ["running", "succeeded", "failed", "cancelled", "timed_out", "lost"]
            if let s = req.query["status"], !statuses.contains(s) {
                throw APIError.validation("status must be one of \(statuses.joined(separator: ", "))", field: "status")
            }
            var sql = "SELECT * FROM shell_jobs WHERE ws_id = ?"
            var args: [any SQLBindable] = [access.wsID]
            if let p = req.query["project_id"], !p.isEmpty { sql += " AND project_id = ?"; args.append(p) }
            if let s = req.query["status"] { sql += " AND status = ?"; args.append(s) }
            if let c = try page.timeCursor(timeColumn: "started_at", idColumn: "id") { sql += c.sql; args += c.args }
            sql += " ORDER BY started_at DESC, id DESC LIMIT ?"; args.append(page.limit + 1)
            let finalSQL = sql, finalArgs = args
            let rows = try await db.read { tx in try tx.query(finalSQL, arguments: finalArgs) }
            let items = rows.map(ShellJobs.job)
            return try .json(Page(fetched: items, limit: page.limit) { PageRequest.timeCursorKey($0.startedAt, id: $0.id) })
        }

        routes.add(.GET, "/api/shell/jobs/:job_id", permission: "shell:read", summary: "One job with its kept output (the last 1 MiB of each stream)",
                   tags: ["shell"], query: [("encoding", "base64 for exact output bytes", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let base64 = try encoding(req)
            guard let (job, out, err) = try await jobs.get(try ctx.parameter("job_id")), job.wsId == access.wsID else { throw APIError.notFound("No such job") }
            var obj = try JSONDecoder().decode([String: JSONValue].self, from: Data(try JSONCoding.encode(job)))
            func text(_ b: [UInt8]) -> JSONValue { .string(base64 ? Data(b).base64EncodedString() : String(decoding: b, as: UTF8.self)) }
            obj["stdout"] = text(out); obj["stderr"] = text(err)
            obj["encoding"] = base64 ? "base64" : "utf-8"
            obj["stdout_truncated"] = .bool(job.stdoutBytes > out.count)
            obj["stderr_truncated"] = .bool(job.stderrBytes > err.count)
            return .json(JSONValue.object(obj))
        }

        routes.add(.GET, "/api/shell/jobs/:job_id/events", permission: "shell:read",
                   summary: "A job's events over SSE from a cursor (Last-Event-ID or cursor=), then live ones until exit",
                   tags: ["shell"], query: [("cursor", "resume after this event id", false), ("encoding", "base64 for exact output bytes", false)],
                   responseContentType: "text/event-stream") { req, ctx in
            let access = try ctx.requireWorkspace()
            let id = try ctx.parameter("job_id")
            guard try await jobs.workspaceOf(id) == access.wsID else { throw APIError.notFound("No such job") }
            return try stream(id, req)
        }

        routes.add(.POST, "/api/shell/cancel/:job_id", permission: "shell:run",
                   summary: "Cancel a job: SIGTERM to its process group, SIGKILL after a grace period; status cancelled", tags: ["shell"]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let id = try ctx.parameter("job_id")
            guard let (job, _, _) = try await jobs.get(id), job.wsId == access.wsID else { throw APIError.notFound("No such job") }
            guard jobs.cancel(id) else {
                throw HTTPError(.conflict, message: "The job is not running (status \(job.status))", details: ["status": .string(job.status)])
            }
            _ = await jobs.wait(id)
            guard let (done, _, _) = try await jobs.get(id) else { throw APIError.notFound("No such job") }
            return try .json(done)
        }

        routes.add(.GET, "/api/shell/recent", permission: "shell:read", summary: "Your recent commands, newest first, without repeats",
                   tags: ["shell"], query: [("project_id", "only this project's", false), ("limit", "1 to 200 (default 50)", false)]) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            let page = try PageRequest(query: req.query)
            var sql = "SELECT command, MAX(started_at) AS last_run_at, COUNT(*) AS runs FROM shell_jobs WHERE user_id = ? AND ws_id = ? AND kind = 'run'"
            var args: [any SQLBindable] = [uid, access.wsID]
            if let p = req.query["project_id"], !p.isEmpty { sql += " AND project_id = ?"; args.append(p) }
            sql += " GROUP BY command ORDER BY last_run_at DESC LIMIT ?"; args.append(page.limit)
            let finalSQL = sql, finalArgs = args
            let rows = try await db.read { tx in try tx.query(finalSQL, arguments: finalArgs) }
            let items: [JSONValue] = rows.map { r in
                .object(["command": .string(r.string("command") ?? ""), "runs": .int(r.int("runs") ?? 0),
                         "last_run_at": .string(HTTPDate.iso8601(r.date("last_run_at") ?? Date()))])
            }
            return .json(JSONValue.object(["items": .array(items), "next_cursor": .null]))
        }

        // MARK: ssh

        @Sendable func sshHost(_ name: String) throws -> SSHHost {
            guard let h = SSHConfig.hosts(path: sshConfigPath).first(where: { $0.host == name }) else {
                throw HTTPError(.badRequest, code: "validation_failed", message: "'\(name.prefix(100))' is not a host of the server's ssh config (GET /api/shell/ssh-hosts)",
                                details: ["field": "host"])
            }
            return h
        }
        let sshOptions = ["-F", sshConfigPath, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15"]

        routes.add(.GET, "/api/shell/ssh-hosts", permission: "ssh:run",
                   summary: "Hosts of the server's ssh config (aliases without wildcards) with HostName, User, Port, IdentityFile", tags: ["shell"]) { _, ctx in
            _ = try ctx.requireWorkspace()
            return try .json(Page(items: SSHConfig.hosts(path: sshConfigPath), nextCursor: nil))
        }

        routes.add(.POST, "/api/shell/ssh-run", permission: "ssh:run",
                   summary: "Run a command on a configured ssh host (BatchMode, strict host keys); streamed like run",
                   tags: ["shell"], requestBody: ["type": "object", "required": ["host", "command"], "properties": ["host": str, "command": str, "timeout_s": int]],
                   responseBody: jobSchema, responseContentType: "text/event-stream", bodyLimit: ShellModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            struct Input: Decodable { let host: String; let command: String; let timeoutS: Double? }
            let input = try await req.decode(Input.self, limit: ShellModule.small)
            guard !input.command.isEmpty, input.command.utf8.count <= 32 * 1024, !input.command.utf8.contains(0) else {
                throw APIError.validation("command must be 1 byte to 32 KiB without NUL", field: "command")
            }
            let host = try sshHost(input.host)
            guard ProcessRunner.which("ssh") != nil else { throw APIError.programMissing("ssh", install: "apt-get install openssh-client") }
            let home = ProcessInfo.processInfo.environment["HOME"] ?? "/"
            let id = try await jobs.start(JobSpec(wsID: access.wsID, projectID: nil, userID: uid, kind: "ssh", command: input.command,
                                                  argv: ["ssh"] + sshOptions + ["--", host.host, input.command], cwd: home, displayCwd: "~",
                                                  timeout: try timeout(input.timeoutS), host: host.host))
            return try started(req, id)
        }

        routes.add(.POST, "/api/shell/ssh-pull", permission: "ssh:run",
                   summary: "Copy a file from a configured ssh host into a project (scp); the destination is path-checked",
                   tags: ["shell"], requestBody: ["type": "object", "required": ["host", "remote_path", "dest_path"],
                                                  "properties": ["host": str, "remote_path": str, "project_id": str, "dest_path": str]],
                   successStatus: 201, bodyLimit: ShellModule.small) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            struct Input: Decodable { let host: String; let remotePath: String; let projectId: String?; let destPath: String }
            let input = try await req.decode(Input.self, limit: ShellModule.small)
            let remote = input.remotePath
            guard !remote.isEmpty, remote.utf8.count <= 4096, !remote.hasPrefix("-"),
                  !remote.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                throw APIError.validation("remote_path must be 1 to 4096 printable bytes and not start with '-'", field: "remote_path")
            }
            let host = try sshHost(input.host)
            let project = try await projects.resolve(input.projectId, access: access, userID: uid)
            let dest = try SafePath.resolveForCreate(root: project.root, relative: input.destPath, field: "dest_path")
            var st = stat()
            if stat(dest, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { throw APIError.validation("dest_path is a directory", field: "dest_path") }
            guard ProcessRunner.which("scp") != nil else { throw APIError.programMissing("scp", install: "apt-get install openssh-client") }
            let tmp = (dest as NSString).deletingLastPathComponent + "/.kiln-pull-" + IDs.randomBase62(12)
            defer { unlink(tmp) }
            let r = try await ProcessRunner.run("scp", ["-q"] + sshOptions + ["--", "\(host.host):\(remote)", tmp], timeout: 600)
            guard r.status == 0 else {
                throw HTTPError(HTTPStatus(502), code: "unavailable", message: "scp failed: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).prefix(500))")
            }
            guard rename(tmp, dest) == 0 else { throw APIError.conflict("Could not place the file at dest_path") }
            let bytes = FileManager.default.contents(atPath: dest) ?? Data()
            let shown = String(dest.dropFirst(project.root.count + 1))
            return .json(JSONValue.object(["path": .string(shown), "size": .int(bytes.count), "host": .string(host.host),
                                                      "sha256": .string(Crypto.hex(Crypto.sha256(Array(bytes))))]), status: .created)
        }
    }
}

/// Starts the project's test command as a job whose exit event carries a summary.
public func startTests(jobs: ShellJobs, db: Database, project: ProjectRef, userID: String, timeout: Double) async throws -> String {
    let pid = project.id
    let saved = try await db.read { tx in try tx.first("SELECT test_command FROM shell_settings WHERE project_id = ?", pid)?.string("test_command") }
    let detected = TestRunners.detect(root: project.root)
    guard let command = saved ?? detected?.command else {
        throw HTTPError(HTTPStatus(422), code: "validation_failed",
                        message: "No test command found: save one with PUT /api/shell/settings, or add Package.swift, pytest config, package.json test script, Cargo.toml, go.mod or a Makefile test target",
                        details: ["field": "project_id"])
    }
    let runner = saved != nil ? (detected?.command == saved ? detected!.runner : "custom") : detected!.runner
    let id = try await jobs.start(JobSpec(wsID: project.wsID, projectID: project.id, userID: userID, kind: "test", command: command,
                                          cwd: project.root, displayCwd: ".", timeout: timeout))
    jobs.setSummarizer(id) { o in
        TestRunners.summarize(runner: runner, output: String(decoding: o.stdout, as: UTF8.self) + "\n" + String(decoding: o.stderr, as: UTF8.self))
    }
    return id
}

func encoding(_ req: Request) throws -> Bool {
    switch req.query["encoding"] {
    case nil, "", "utf-8", "utf8", "text": return false
    case "base64": return true
    default: throw APIError.validation("encoding must be base64 or utf-8", field: "encoding")
    }
}
