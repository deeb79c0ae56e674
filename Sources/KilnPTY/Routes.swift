import CShims
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import KilnProjects
import Synchronization

/// Terminals: real pseudo-terminals attached over WebSocket.
public struct PTYModule: KilnModule {
    public let name = "pty"
    public init() {}

    public var permissions: [PermissionGrant] {
        [PermissionGrant("pty:open", "Open, list, attach to and end your own terminals (a shell on the server)", minimumRole: .member)]
    }

    public func register(_ routes: Routes, _ services: Services) {
        let terminals = Terminals(idleSeconds: services.config.ptyIdleMinutes * 60, maxPerUser: services.config.ptyMaxPerUser)
        let projects = ProjectDirectory(services: services)
        services.hooks.workspaceOf(param: "pty_id") { id in terminals.get(id)?.wsID }
        services.jobs.every(30, name: "pty-reaper") { terminals.reap() }

        let str: JSONValue = ["type": "string"]
        let int: JSONValue = ["type": "integer"]

        /// The caller's own terminal in the admitted workspace (404 otherwise: others' terminals are not revealed).
        @Sendable func own(_ ctx: RequestContext) throws -> Terminal {
            let access = try ctx.requireWorkspace()
            guard let t = terminals.get(try ctx.parameter("pty_id")), t.wsID == access.wsID, t.userID == (try ctx.requirePrincipal().userID) else {
                throw APIError.notFound("No such terminal")
            }
            return t
        }

        routes.add(.POST, "/api/pty/spawn", permission: "pty:open",
                   summary: "Start a terminal (forkpty, TERM=xterm-256color) running your shell; attach at ws_url",
                   tags: ["pty"], requestBody: ["type": "object", "properties": ["project_id": str, "ws_id": str, "cols": int, "rows": int, "shell": str, "cwd": str]],
                   successStatus: 201, responseBody: ["type": "object", "properties": ["id": str, "ws_url": str]], bodyLimit: 16 * 1024) { req, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            struct Input: Decodable { let projectId: String?; let cols: Int?; let rows: Int?; let shell: String?; let cwd: String? }
            let body = try await req.bodyBytes(limit: 16 * 1024)
            let input = body.isEmpty ? Input(projectId: nil, cols: nil, rows: nil, shell: nil, cwd: nil) : try await req.decode(Input.self, limit: 16 * 1024)
            let cols = input.cols ?? 80, rows = input.rows ?? 24
            guard (1...1000).contains(cols) else { throw APIError.validation("cols must be from 1 to 1000", field: "cols") }
            guard (1...1000).contains(rows) else { throw APIError.validation("rows must be from 1 to 1000", field: "rows") }
            let env = ProcessInfo.processInfo.environment
            let shell = input.shell ?? env["SHELL"].flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil } ?? "/bin/bash"
            guard shell.hasPrefix("/"), !shell.contains("\0"), FileManager.default.isExecutableFile(atPath: shell) else {
                throw APIError.validation("shell must be the absolute path of an executable on the server", field: "shell")
            }
            var cwd: String
            var projectID: String? = nil
            if input.projectId != nil || (input.cwd != nil && !(input.cwd!.hasPrefix("/"))) {
                let project = try await projects.resolve(input.projectId, access: access, userID: uid)
                projectID = project.id
                cwd = try SafePath.resolve(root: project.root, relative: input.cwd ?? "", field: "cwd")
            } else if let c = input.cwd {
                guard !c.contains("\0"), let real = SafePath.real(c) else { throw APIError.validation("cwd does not exist", field: "cwd") }
                cwd = real
            } else {
                cwd = env["HOME"] ?? "/"
            }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: cwd, isDirectory: &isDir), isDir.boolValue else {
                throw APIError.validation("cwd is not a directory", field: "cwd")
            }
            let t = try terminals.spawn(userID: uid, wsID: access.wsID, projectID: projectID, shell: shell, cwd: cwd, cols: cols, rows: rows)
            let scheme = req.isSecure ? "wss" : "ws"
            let host = req.headers["Host"] ?? "127.0.0.1"
            var info = t.info
            if case .object(var o) = info {
                o["ws_url"] = .string("\(scheme)://\(host)/api/pty/\(t.id)/stream")
                o["ws_path"] = .string("/api/pty/\(t.id)/stream")
                info = .object(o)
            }
            return .json(info, status: .created)
        }

        routes.add(.GET, "/api/pty", permission: "pty:open", summary: "Your terminals in the workspace", tags: ["pty"]) { _, ctx in
            let access = try ctx.requireWorkspace()
            let uid = try ctx.requirePrincipal().userID
            let items = terminals.list(userID: uid, wsID: access.wsID).map(\.info)
            return .json(JSONValue.object(["items": .array(items), "next_cursor": .null]))
        }

        routes.add(.DELETE, "/api/pty/:pty_id", permission: "pty:open", summary: "End one of your terminals", tags: ["pty"]) { _, ctx in
            let t = try own(ctx)
            terminals.end(t)
            return .json(t.info)
        }

        routes.add(.GET, "/api/pty/:pty_id/stream", permission: "pty:open",
                   summary: "WebSocket: binary frames are terminal bytes both ways; text frames are JSON control ({type: resize, cols, rows} in, {type: exit, code} out). Attaching replays the last 256 KiB",
                   tags: ["pty"], successStatus: 101, responseContentType: "application/octet-stream") { req, ctx in
            let t = try own(ctx)
            return try WebSocket.upgrade(req, settings: WebSocketSettings(maxMessageSize: 1 << 20, maxQueuedBytes: 1 << 20)) { ws in
                await serve(t, ws)
            }
        }
    }
}

/// Runs one viewer connection: replay, then output out and keystrokes in, until either side ends.
func serve(_ t: Terminal, _ ws: WebSocket) async {
    let viewer = t.attach(ws)
    for await message in ws.messages {
        switch message {
        case .binary(let b): t.input(b)
        case .text(let s):
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any], let type = obj["type"] as? String else {
                try? await ws.send(text: #"{"type":"error","message":"control messages are JSON objects with a type"}"#)
                continue
            }
            switch type {
            case "resize":
                guard let c = obj["cols"] as? Int, let r = obj["rows"] as? Int, (1...1000).contains(c), (1...1000).contains(r) else {
                    try? await ws.send(text: #"{"type":"error","message":"resize needs cols and rows from 1 to 1000"}"#)
                    continue
                }
                t.resize(cols: c, rows: r)
            case "input":
                if let d = obj["data"] as? String { t.input(Array(d.utf8)) }
            case "ping":
                try? await ws.send(text: #"{"type":"pong"}"#)
            default:
                try? await ws.send(text: JSONValue.object(["type": "error", "message": .string("unknown control message type")]).jsonText)
            }
        }
    }
    t.detach(viewer)
}

/// Every live terminal of this server.
final class Terminals: Sendable {
    let all = Mutex<[String: Terminal]>([:])
    let idleSeconds: Double
    let maxPerUser: Int
    /// Exited terminals stay listed (for their exit code and replay) this long after the last viewer left.
    static let keepExitedSeconds = 600.0

    init(idleSeconds: Double, maxPerUser: Int) { self.idleSeconds = idleSeconds; self.maxPerUser = maxPerUser }

    func get(_ id: String) -> Terminal? { IDs.isValid(id, prefix: "pty") ? all.withLock { $0[id] } : nil }

    func list(userID: String, wsID: String) -> [Terminal] {
        all.withLock { Array($0.values) }.filter { $0.userID == userID && $0.wsID == wsID }.sorted { $0.createdAt < $1.createdAt }
    }

    func spawn(userID: String, wsID: String, projectID: String?, shell: String, cwd: String, cols: Int, rows: Int) throws -> Terminal {
        let count = all.withLock { $0.values.filter { $0.userID == userID && !$0.exited }.count }
        guard count < maxPerUser else { throw HTTPError(.tooManyRequests, code: "rate_limited", message: "You have \(count) terminals open; end one first") }
        let env = ProcessRunner.childEnvironment(["TERM": "xterm-256color", "COLORTERM": "truecolor", "SHELL": shell])
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let name = (shell as NSString).lastPathComponent
        let argv = [strdup(name), strdup("-i")] + [nil]
        defer { envp.forEach { free($0) }; argv.forEach { free($0) } }
        var master: Int32 = -1
        let pid = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in kiln_forkpty(&master, shell, a.baseAddress, e.baseAddress, cwd, UInt16(cols), UInt16(rows)) }
        }
        guard pid > 0 else { throw APIError.unavailable("Could not start a terminal: \(String(cString: strerror(-pid)))") }
        let t = Terminal(id: IDs.make("pty"), userID: userID, wsID: wsID, projectID: projectID, shell: shell, cwd: cwd, pid: pid, master: master, cols: cols, rows: rows)
        all.withLock { $0[t.id] = t }
        Thread { t.pump(onExit: {}) }.start()
        return t
    }

    func end(_ t: Terminal) {
        t.terminate()
        if t.exited { all.withLock { $0[t.id] = nil } }
        else {
            // Forget it once the reader saw the exit.
            Thread {
                for _ in 0..<500 where !t.exited { usleep(10_000) }
                _ = self.all.withLock { $0.removeValue(forKey: t.id) }
            }.start()
        }
    }

    /// Ends terminals nobody has viewed for the idle limit and forgets long-exited ones.
    func reap(now: Date = Date()) {
        for t in all.withLock({ Array($0.values) }) {
            let (viewers, lastSeen) = t.state.withLock { ($0.viewers.count, $0.lastSeen) }
            guard viewers == 0 else { continue }
            let idle = now.timeIntervalSince(lastSeen)
            if t.exited { if idle > Terminals.keepExitedSeconds { _ = all.withLock { $0.removeValue(forKey: t.id) } } }
            else if idle > idleSeconds { end(t) }
        }
    }

    func shutdown() { for t in all.withLock({ Array($0.values) }) { t.terminate() } }
}
