import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP

/// What a tool may touch while it runs: the project, the run's snapshots, shell jobs.
public struct ToolContext: Sendable {
    public let project: ProjectRef
    public let runID: String
    public let userID: String
    /// Secrets the run's commands get in their environment.
    let secrets: [SecretValue]
    let directory: any ProjectDirectory
    let jobs: any JobLauncher
    let snapshots: Snapshots
    /// Called with each shell job the tool starts (so cancelling the run can kill it).
    let onJob: @Sendable (String?) -> Void
    /// Called after a file changed, with its unified diff.
    let onFileChanged: @Sendable (String, String) async -> Void
    let onFinding: @Sendable (String, Int, String, String) async throws -> Void
    /// Who acts: `agent` inside a run (its tool call was judged already), else the caller's kind
    /// (`user`, `api_key`), whose commands the shell judges again as `shell.run`.
    var actorKind = "agent"
    /// Notebooks (the notebooks domain), for read_notebook and run_cell.
    var notebooks: (any NotebookCells)? = nil
    /// Browser checks (the browser domain), for browser_check.
    var browser: (any BrowserChecks)? = nil
    /// Adds an event to the run's stream (a browser check's screenshots).
    var onEvent: @Sendable (String, JSONValue) async -> Void = { _, _ in }
}

public struct ToolFailure: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}

/// One tool the agent (and, later, MCP clients) may call.
public struct AgentTool: Sendable {
    public let name: String
    public let description: String
    public let schema: JSONValue
    let run: @Sendable (ToolContext, [String: JSONValue]) async throws -> String

    public var descriptor: ToolDescriptor { ToolDescriptor(name: name, description: description, schema: schema) }
}

/// The built-in tools as other domains see them (budgets count their size in every prompt).
public struct AgentToolCatalog: ToolCatalog {
    public init() {}
    public var tools: [ToolDescriptor] { ToolRegistry.all.map(\.descriptor) }
}

/// The one registry of built-in tools.
public enum ToolRegistry {
    public static let all: [AgentTool] = [
        listFiles, readFile, search, findSymbol, editFile, writeFile, runCommand, runTests, recordFinding,
        readNotebook, runCell, browserCheck,
    ]
    public static func named(_ n: String) -> AgentTool? { all.first { $0.name == n } }

    static func obj(_ props: [String: JSONValue], required: [String]) -> JSONValue {
        .object([
            "type": "object", "properties": .object(props), "required": .array(required.map { .string($0) }),
            "additionalProperties": false,
        ])
    }
    static let str: JSONValue = ["type": "string"]
    static let int: JSONValue = ["type": "integer"]
    static let bool: JSONValue = ["type": "boolean"]

    /// Checks `args` against a tool's schema (the subset the built-in schemas use).
    public static func validate(_ args: JSONValue, _ schema: JSONValue) throws -> [String: JSONValue] {
        guard case .object(let a) = args else { throw ToolFailure("arguments must be a JSON object") }
        guard case .object(let s) = schema, case .object(let props)? = s["properties"] else { return a }
        if case .array(let req)? = s["required"] {
            for case .string(let r) in req where a[r] == nil || a[r] == .null {
                throw ToolFailure("missing required argument '\(r)'")
            }
        }
        for (k, v) in a {
            guard case .object(let p)? = props[k] else { throw ToolFailure("unknown argument '\(k)'") }
            if v == .null { continue }
            switch p["type"] {
            case "string": guard case .string = v else { throw ToolFailure("argument '\(k)' must be a string") }
            case "integer":
                if case .int = v { break }
                if case .double(let d) = v, d == d.rounded() { break }
                throw ToolFailure("argument '\(k)' must be an integer")
            case "boolean": guard case .bool = v else { throw ToolFailure("argument '\(k)' must be true or false") }
            default: break
            }
        }
        return a
    }

    static func string(_ a: [String: JSONValue], _ k: String) -> String? {
        if case .string(let s)? = a[k] { s } else { nil }
    }
    static func integer(_ a: [String: JSONValue], _ k: String) -> Int? {
        switch a[k] {
        case .int(let n)?: n
        case .double(let d)?: Int(d)
        default: nil
        }
    }
    static func flag(_ a: [String: JSONValue], _ k: String) -> Bool {
        if case .bool(true)? = a[k] { true } else { false }
    }

    /// A path inside the project (traversal, absolute paths and symlink escapes refused).
    static func inside(_ ctx: ToolContext, _ rel: String, create: Bool = false) throws -> String {
        do {
            return create
                ? try SafePath.resolveForCreate(root: ctx.project.root, relative: rel)
                : try SafePath.resolve(root: ctx.project.root, relative: rel)
        } catch let e as HTTPError { throw ToolFailure(e.message) }
    }

    /// A project file's bytes, opened beneath the project through no symlink (nil: no such file).
    static func readBeneath(_ ctx: ToolContext, _ rel: String, max: Int = 16 << 20) throws -> [UInt8]? {
        do { return try SafePath.readBeneath(root: ctx.project.root, relative: rel, max: max) } catch let e
            as HTTPError
        { throw ToolFailure(e.message) }
    }

    /// The normalised relative path (400-style problems become tool failures).
    static func normalised(_ rel: String) throws -> String {
        do { return try SafePath.segments(rel).joined(separator: "/") } catch let e as HTTPError {
            throw ToolFailure(e.message)
        }
    }

    static func relative(_ ctx: ToolContext, _ abs: String) -> String {
        abs == ctx.project.root ? "." : String(abs.dropFirst(ctx.project.root.count + 1))
    }

    static let maxRead = 256 * 1024

    static let listFiles = AgentTool(
        name: "list_files", description: "List one directory of the project (ignored files hidden).",
        schema: obj(["path": str], required: [])
    ) { ctx, a in
        let rel = string(a, "path") ?? ""
        _ = try inside(ctx, rel)
        let entries: [TreeEntry]
        do { entries = try await ctx.directory.list(ctx.project, path: rel) } catch let e as HTTPError {
            throw ToolFailure(e.message)
        }
        return entries.map { $0.type == "dir" ? $0.path + "/" : "\($0.path) (\($0.size) bytes)" }.joined(
            separator: "\n")
    }

    static let readFile = AgentTool(
        name: "read_file",
        description: "Read a text file of the project, optionally lines start_line..end_line (1-based).",
        schema: obj(["path": str, "start_line": int, "end_line": int], required: ["path"])
    ) { ctx, a in
        guard let data = try readBeneath(ctx, string(a, "path")!) else {
            throw ToolFailure("\(string(a, "path")!) does not exist")
        }
        guard !data.prefix(8000).contains(0) else { throw ToolFailure("\(string(a, "path")!) is a binary file") }
        let lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
        let start = max(1, integer(a, "start_line") ?? 1)
        let end = min(lines.count, integer(a, "end_line") ?? lines.count)
        guard start <= max(end, 1) else { throw ToolFailure("start_line is after end_line") }
        var out = ""
        for i in (start - 1)..<max(end, start - 1) {
            out += "\(i + 1)\t\(lines[i])\n"
            if out.utf8.count > maxRead {
                out += "… (truncated; read a smaller range)\n"
                break
            }
        }
        return out
    }

    static let search = AgentTool(
        name: "search",
        description:
            "Full-text search in the project (literal, or a regular expression with regex=true); path is a glob filter.",
        schema: obj(["query": str, "regex": bool, "path": str], required: ["query"])
    ) { ctx, a in
        let matches: [SearchMatch]
        let total: Int
        do {
            (matches, total) = try await ctx.directory.search(
                ctx.project, q: string(a, "query")!, regex: flag(a, "regex"), caseSensitive: false,
                pathGlob: string(a, "path"), limit: 50)
        } catch let e as HTTPError { throw ToolFailure(e.message) }
        if matches.isEmpty { return "no matches" }
        return matches.map { "\($0.path):\($0.line): \($0.text)" }.joined(separator: "\n")
            + (total > matches.count ? "\n… \(total - matches.count) more" : "")
    }

    static let findSymbol = AgentTool(
        name: "find_symbol", description: "Find where a function, type, method or constant is defined.",
        schema: obj(["name": str, "kind": str], required: ["name"])
    ) { ctx, a in
        let found: [Symbol]
        do {
            found = try await ctx.directory.symbols(
                ctx.project, q: string(a, "name")!, kind: string(a, "kind"), limit: 30)
        } catch let e as HTTPError { throw ToolFailure(e.message) }
        if found.isEmpty { return "no symbols found" }
        return found.map { "\($0.kind) \($0.name) — \($0.path):\($0.line)" + ($0.scope.map { " in \($0)" } ?? "") }
            .joined(separator: "\n")
    }

    /// Replaces a project file (snapshotting what was there for rollback), beneath the project
    /// through no symlink; `createFolders` makes missing folders.
    static func change(_ ctx: ToolContext, _ rel: String, _ newText: [UInt8], createFolders: Bool = false) async throws
    {
        let old = try readBeneath(ctx, rel)
        // Outside a run (an MCP call) there is no run to roll back, so nothing to snapshot for.
        if !ctx.runID.isEmpty { try await ctx.snapshots.save(runID: ctx.runID, path: rel, prior: old) }
        do {
            try SafePath.writeBeneath(
                root: ctx.project.root, relative: rel, bytes: newText, createFolders: createFolders)
        } catch let e as HTTPError { throw ToolFailure(e.message) }
        await ctx.onFileChanged(
            rel,
            UnifiedDiff.make(
                old: old.map { String(decoding: $0, as: UTF8.self) }, new: String(decoding: newText, as: UTF8.self),
                path: rel))
    }

    static let editFile = AgentTool(
        name: "edit_file",
        description:
            "Replace exactly one occurrence of old_string with new_string in a file (refused when old_string is missing or ambiguous).",
        schema: obj(
            ["path": str, "old_string": str, "new_string": str], required: ["path", "old_string", "new_string"])
    ) { ctx, a in
        let rel = try normalised(string(a, "path")!)
        guard let data = try readBeneath(ctx, rel) else { throw ToolFailure("\(string(a, "path")!) does not exist") }
        let text = String(decoding: data, as: UTF8.self)
        let old = string(a, "old_string")!
        let new = string(a, "new_string")!
        guard !old.isEmpty else { throw ToolFailure("old_string must not be empty") }
        let count = text.components(separatedBy: old).count - 1
        guard count == 1 else {
            throw ToolFailure(
                count == 0
                    ? "old_string was not found in \(string(a, "path")!)"
                    : "old_string occurs \(count) times in \(string(a, "path")!); include more context to make it unique"
            )
        }
        let r = text.range(of: old)!
        try await change(ctx, rel, Array(text.replacingCharacters(in: r, with: new).utf8))
        return "edited \(rel)"
    }

    static let writeFile = AgentTool(
        name: "write_file", description: "Create or overwrite a file with content (folders are created as needed).",
        schema: obj(["path": str, "content": str], required: ["path", "content"])
    ) { ctx, a in
        let rel = string(a, "path")!
        let content = string(a, "content")!
        guard content.utf8.count <= 4 << 20 else { throw ToolFailure("content is larger than 4 MiB") }
        let path = try normalised(rel)
        guard !path.isEmpty else { throw ToolFailure("path names no file") }
        try await change(ctx, path, Array(content.utf8), createFolders: true)
        return "wrote \(path) (\(content.utf8.count) bytes)"
    }

    static func tailText(_ o: JobOutcome) -> String {
        let out = String(decoding: o.stdout.suffix(12_000), as: UTF8.self)
        let err = String(decoding: o.stderr.suffix(4_000), as: UTF8.self)
        var s = "exit: \(o.exitCode.map(String.init) ?? "signal \(o.signal ?? 0)") (\(o.status), \(o.durationMs) ms)\n"
        if !out.isEmpty { s += "stdout:\n" + out + (out.hasSuffix("\n") ? "" : "\n") }
        if !err.isEmpty { s += "stderr:\n" + err }
        return s
    }

    static let runCommand = AgentTool(
        name: "run_command",
        description: "Run a shell command (/bin/sh -c) in the project; returns its exit status and output tail.",
        schema: obj(["command": str, "timeout_s": int], required: ["command"])
    ) { ctx, a in
        let cmd = string(a, "command")!
        guard !cmd.isEmpty, cmd.utf8.count <= 32 * 1024 else { throw ToolFailure("command must be 1 byte to 32 KiB") }
        let timeout = Double(min(max(integer(a, "timeout_s") ?? 120, 1), 1800))
        let id = try await ctx.jobs.start(
            JobSpec(
                wsID: ctx.project.wsID, projectID: ctx.project.id, userID: ctx.userID, kind: "agent",
                command: cmd, cwd: ctx.project.root, displayCwd: ".", timeout: timeout, secrets: ctx.secrets,
                actorKind: ctx.actorKind))
        ctx.onJob(id)
        defer { ctx.onJob(nil) }
        guard let o = await ctx.jobs.wait(id) else { throw ToolFailure("the command's job was lost") }
        return tailText(o)
    }

    static let runTests = AgentTool(
        name: "run_tests",
        description:
            "Run the project's tests (its saved or detected test command); returns counts and the output tail.",
        schema: obj(["timeout_s": int], required: [])
    ) { ctx, a in
        let timeout = Double(min(max(integer(a, "timeout_s") ?? 900, 1), 3600))
        let id: String
        do {
            id = try await ctx.jobs.startTests(
                project: ctx.project, userID: ctx.userID, timeout: timeout, secrets: ctx.secrets,
                actorKind: ctx.actorKind)
        } catch let
            e as HTTPError
        { throw ToolFailure(e.message) }
        ctx.onJob(id)
        defer { ctx.onJob(nil) }
        guard let o = await ctx.jobs.wait(id) else { throw ToolFailure("the test job was lost") }
        return tailText(o)
    }

    static let recordFinding = AgentTool(
        name: "record_finding",
        description: "Record a claim about the code (kept in the run's receipt and re-checkable later).",
        schema: obj(
            ["path": str, "line": int, "claim": str, "evidence": str], required: ["path", "line", "claim", "evidence"])
    ) { ctx, a in
        let p = try inside(ctx, string(a, "path")!)
        let line = integer(a, "line")!
        guard line >= 1 else { throw ToolFailure("line must be 1 or more") }
        let claim = string(a, "claim")!
        let evidence = string(a, "evidence")!
        guard claim.utf8.count <= 4096, evidence.utf8.count <= 16 * 1024 else {
            throw ToolFailure("claim (4 KiB) or evidence (16 KiB) too long")
        }
        try await ctx.onFinding(relative(ctx, p), line, claim, evidence)
        return "recorded"
    }

    static func notebooks(_ ctx: ToolContext) throws -> any NotebookCells {
        guard let n = ctx.notebooks else { throw ToolFailure("notebooks are not available on this server") }
        return n
    }

    static let readNotebook = AgentTool(
        name: "read_notebook",
        description: "Read a Jupyter notebook (.ipynb) of the project: each cell's id, type, source and outputs.",
        schema: obj(["path": str], required: ["path"])
    ) { ctx, a in
        do { return try await notebooks(ctx).readNotebook(project: ctx.project, path: string(a, "path")!) } catch let e
            as HTTPError
        { throw ToolFailure(e.message) }
    }

    static let runCell = AgentTool(
        name: "run_cell",
        description:
            "Run one cell (by its id, see read_notebook) of a project notebook on its kernel; returns the cell's outputs.",
        schema: obj(["path": str, "cell_id": str], required: ["path", "cell_id"])
    ) { ctx, a in
        let r: (ok: Bool, text: String)
        do {
            r = try await notebooks(ctx).runCell(
                project: ctx.project, path: string(a, "path")!, cellID: string(a, "cell_id")!, userID: ctx.userID)
        } catch let e as HTTPError { throw ToolFailure(e.message) }
        return r.text
    }

    static let browserCheck = AgentTool(
        name: "browser_check",
        description:
            "Check a web page in headless Chromium (only origins on the workspace's browser allowlist): kind smoke "
            + "loads url and reports the HTTP status, title, console errors, failed and blocked requests; kind flow "
            + "also runs steps ({action: goto|click|type|press|wait_for|expect|screenshot, selector?, text?, url?, "
            + "key?}) and stops at the first that fails. Screenshots are attached to the run.",
        schema: obj(
            [
                "kind": ["type": "string", "enum": ["smoke", "flow"]], "url": str,
                "steps": ["type": "array", "items": ["type": "object"]],
            ], required: ["kind", "url"])
    ) { ctx, a in
        guard let browser = ctx.browser else { throw ToolFailure("browser checks are not available on this server") }
        let r: (runID: String, status: String, text: String, screenshots: [JSONValue])
        do {
            r = try await browser.check(
                wsID: ctx.project.wsID, userID: ctx.userID, kind: string(a, "kind")!, url: string(a, "url")!,
                steps: a["steps"]?.arrayValue)
        } catch let e as HTTPError { throw ToolFailure(e.message) }
        for shot in r.screenshots {
            var o = shot.objectValue ?? [:]
            o["browser_run_id"] = .string(r.runID)
            await ctx.onEvent("browser.screenshot", .object(o))
        }
        guard r.status == "passed" else { throw ToolFailure("the check \(r.status): \(r.text)") }
        return r.text
    }
}
