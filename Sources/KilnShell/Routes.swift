import Foundation
import KilnCore
import KilnHTTP

/// `/api/shell/*`: commands and test runs streamed as jobs, job history, test settings, ssh.
struct ShellRoutes: Sendable {
    let shell: ShellService

    static let small = 64 * 1024
    static let streamDoc =
        "SSE: started {job_id, pid}, stdout/stderr {data}, exit {code, signal, duration_ms}; with Accept: application/json, "
        + "{job_id} at once"
    static let encoding = QueryParam("encoding", "base64 for exact output bytes")

    func register(_ routes: Routes) {
        let r = routes.tagged("shell")
        let run = ShellPermission.run
        let read = ShellPermission.read
        let ssh = ShellPermission.ssh
        let started = Reply.events(Schema.of(JobStarted.self))
        r.add(
            .POST, "/api/shell/run", run, "Run a command with /bin/sh -c in a project; " + Self.streamDoc,
            query: [Self.encoding],
            limit: Self.small, reply: started, runCommand)
        r.add(
            .POST, "/api/shell/test", run,
            "Run the project's tests (saved command, or detected: swift, pytest, npm, cargo, go, make); the exit event carries a summary",
            query: [Self.encoding], limit: Self.small, body: .optional, reply: started, runTests)
        r.add(
            .GET, "/api/shell/settings", read, "The project's saved test command and the detected one",
            query: [QueryParam("project_id", "the project")], settings)
        r.add(
            .PUT, "/api/shell/settings", run, "Save (or clear with null) the project's test command", limit: Self.small,
            saveSettings)
        r.add(
            .GET, "/api/shell/jobs", read, "In-flight and recent jobs, newest first",
            query: [
                QueryParam("project_id", "only this project's"),
                QueryParam("status", "running, succeeded, failed, cancelled, timed_out, lost"),
            ] + QueryParam.paging,
            reply: .page(of: ShellJob.self), jobs)
        r.add(
            .GET, "/api/shell/jobs/:job_id", read, "One job with its kept output (the last 1 MiB of each stream)",
            query: [Self.encoding], job)
        r.add(
            .GET, "/api/shell/jobs/:job_id/events", read,
            "A job's events over SSE from a cursor (Last-Event-ID or cursor=), then live ones until exit",
            query: [QueryParam("cursor", "resume after this event id"), Self.encoding], reply: .events(), events)
        r.add(
            .POST, "/api/shell/cancel/:job_id", run,
            "Cancel a job: SIGTERM to its process group, SIGKILL after a grace period; status cancelled",
            reply: .of(ShellJob.self), cancel)
        r.add(
            .GET, "/api/shell/recent", read, "Your recent commands, newest first, without repeats",
            query: [QueryParam("project_id", "only this project's"), .limit], recent)
        r.add(
            .GET, "/api/shell/ssh-hosts", ssh,
            "Hosts of the server's ssh config (aliases without wildcards) with HostName, User, Port, IdentityFile",
            reply: .page(of: SSHHost.self), sshHosts)
        r.add(
            .POST, "/api/shell/ssh-run", ssh,
            "Run a command on a configured ssh host (BatchMode, strict host keys); streamed like run",
            limit: Self.small, reply: started, sshRun)
        r.add(
            .POST, "/api/shell/ssh-pull", ssh,
            "Copy a file from a configured ssh host into a project (scp); the destination is path-checked",
            limit: Self.small, reply: .json(status: .created), sshPull)
    }

    /// Whether the client asked for exact bytes (`encoding=base64`).
    static func base64(_ req: Request) throws -> Bool {
        switch req.query["encoding"] {
        case nil, "", "utf-8", "utf8", "text": return false
        case "base64": return true
        default: throw APIError.validation("encoding must be base64 or utf-8", field: "encoding")
        }
    }

    /// The answer to a job start: its event stream, or `{job_id}` for JSON clients.
    func started(_ req: Request, _ jobID: String) throws -> Response {
        if req.prefersJSON {
            return .json(
                JSONValue.object([
                    "job_id": .string(jobID), "status": "running",
                    "events_url": .string("/api/shell/jobs/\(jobID)/events"),
                ]), status: .accepted)
        }
        return try stream(jobID, req)
    }

    /// A job's events from the request's cursor until its exit; output as text, or base64 when asked.
    func stream(_ jobID: String, _ req: Request) throws -> Response {
        let base64 = try Self.base64(req)
        return try shell.bus.sse(topic: ShellService.topic(jobID), request: req, endTypes: ["exit"]) { e in
            guard e.type == "stdout" || e.type == "stderr",
                let obj = try? JSONDecoder().decode([String: String].self, from: Data(e.data.utf8))
            else { return e.data }
            if base64 {
                let b64 = obj["b64"] ?? Data((obj["data"] ?? "").utf8).base64EncodedString()
                return JSONValue.object(["data": .string(b64), "encoding": "base64"]).jsonText
            }
            // Output that is not UTF-8 is stored with its exact bytes too; text clients get the text.
            return obj["b64"] != nil ? JSONValue.object(["data": .string(obj["data"] ?? "")]).jsonText : e.data
        }
    }

    @Sendable func runCommand(_ req: Request, _ ctx: RequestContext, _ input: RunInput) async throws -> Response {
        _ = try Self.base64(req)
        let p = try ctx.requirePrincipal()
        let id = try await shell.run(
            input, access: try ctx.requireWorkspace(), userID: p.userID,
            actorKind: p.apiKeyID == nil ? "user" : "api_key")
        return try started(req, id)
    }

    @Sendable func runTests(_ req: Request, _ ctx: RequestContext, _ input: TestInput) async throws -> Response {
        _ = try Self.base64(req)
        let p = try ctx.requirePrincipal()
        let id = try await shell.runTests(
            input, access: try ctx.requireWorkspace(), userID: p.userID,
            actorKind: p.apiKeyID == nil ? "user" : "api_key")
        return try started(req, id)
    }

    @Sendable func settings(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            try await shell.settings(
                req.query["project_id"], access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func saveSettings(_ req: Request, _ ctx: RequestContext, _ input: SettingsInput) async throws -> Response
    {
        .json(
            try await shell.saveSettings(
                input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func jobs(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let project = req.query["project_id"].flatMap { $0.isEmpty ? nil : $0 }
        return try .json(
            try await shell.jobs(
                wsID: try ctx.requireWorkspace().wsID, projectID: project, status: req.query["status"],
                page: try PageRequest(query: req.query)))
    }

    @Sendable func job(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let base64 = try Self.base64(req)
        let (job, out, err) = try await shell.job(try ctx.parameter("job_id"), in: try ctx.requireWorkspace().wsID)
        guard case .object(var obj) = try JSONValue(encoding: job) else { throw APIError(.internalServerError) }
        func text(_ b: [UInt8]) -> JSONValue {
            .string(base64 ? Data(b).base64EncodedString() : String(decoding: b, as: UTF8.self))
        }
        obj["stdout"] = text(out)
        obj["stderr"] = text(err)
        obj["encoding"] = base64 ? "base64" : "utf-8"
        obj["stdout_truncated"] = .bool(job.stdoutBytes > out.count)
        obj["stderr_truncated"] = .bool(job.stderrBytes > err.count)
        return .json(JSONValue.object(obj))
    }

    @Sendable func events(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let id = try ctx.parameter("job_id")
        guard try await shell.workspaceOf(id) == (try ctx.requireWorkspace().wsID) else {
            throw APIError.notFound("No such job")
        }
        return try stream(id, req)
    }

    @Sendable func cancel(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let id = try ctx.parameter("job_id")
        let (job, _, _) = try await shell.job(id, in: try ctx.requireWorkspace().wsID)
        guard shell.cancel(id) else {
            if job.status == "running" { throw try await shell.elsewhere(id) }
            throw HTTPError(
                .conflict, message: "The job is not running (status \(job.status))",
                details: ["status": .string(job.status)])
        }
        _ = await shell.wait(id)
        guard let (done, _, _) = try await shell.get(id) else { throw APIError.notFound("No such job") }
        return try .json(done)
    }

    @Sendable func recent(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let access = try ctx.requireWorkspace()
        let page = try PageRequest(query: req.query)
        let project = req.query["project_id"].flatMap { $0.isEmpty ? nil : $0 }
        return .json(
            try await shell.recentCommands(
                userID: try ctx.requirePrincipal().userID, wsID: access.wsID, projectID: project,
                limit: page.limit
            ).json)
    }

    @Sendable func sshHosts(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        _ = try ctx.requireWorkspace()
        return try .json(Page(all: shell.sshHosts()))
    }

    /// ssh reaches other machines with the server's keys: a fresh step-up first.
    func steppedUp(_ ctx: RequestContext) throws -> Principal {
        let p = try ctx.requirePrincipal()
        try p.requireStepUp(now: shell.clock.now())
        return p
    }

    @Sendable func sshRun(_ req: Request, _ ctx: RequestContext, _ input: SSHRunInput) async throws -> Response {
        let p = try steppedUp(ctx)
        let id = try await shell.sshRun(input, access: try ctx.requireWorkspace(), userID: p.userID)
        return try started(req, id)
    }

    @Sendable func sshPull(_ req: Request, _ ctx: RequestContext, _ input: SSHPullInput) async throws -> Response {
        let p = try steppedUp(ctx)
        return .json(
            try await shell.sshPull(input, access: try ctx.requireWorkspace(), userID: p.userID), status: .created)
    }
}
