import Foundation
import KilnCore
import KilnHTTP

/// `/api/pty/*`: start, list and end your terminals, and attach to one over WebSocket.
struct PTYRoutes: Sendable {
    let terminals: TerminalService

    func register(_ routes: Routes) {
        let r = routes.tagged("pty")
        let open = PTYPermission.open
        r.add(
            .POST, "/api/pty/spawn", open,
            "Start a terminal (forkpty, TERM=xterm-256color) running your shell; attach at ws_url",
            limit: 16 * 1024, body: .optional, reply: .of(SpawnedTerminal.self, status: .created), spawn)
        r.add(.GET, "/api/pty", open, "Your terminals in the workspace", list)
        r.add(
            .DELETE, "/api/pty/:pty_id", open,
            "End one of your terminals: answers once its shell has ended, with the exit code", end)
        r.add(
            .GET, "/api/pty/:pty_id/stream", open,
            "WebSocket: binary frames are terminal bytes both ways; text frames are JSON control ({type: resize, cols, rows} in, "
                + "{type: exit, code} out). Attaching replays the last 256 KiB",
            reply: .webSocket, stream)
    }

    func own(_ ctx: RequestContext) async throws -> Terminal {
        try await terminals.own(
            try ctx.parameter("pty_id"), access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID)
    }

    @Sendable func spawn(_ req: Request, _ ctx: RequestContext, _ input: SpawnInput) async throws -> Response {
        let t = try await terminals.spawn(
            input, access: try ctx.requireWorkspace(), userID: try ctx.requirePrincipal().userID)
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

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let access = try ctx.requireWorkspace()
        return .json(
            Page(all: terminals.list(userID: try ctx.requirePrincipal().userID, wsID: access.wsID).map(\.info)).json)
    }

    @Sendable func end(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let t = try await own(ctx)
        await terminals.end(t)
        return .json(t.info)
    }

    @Sendable func stream(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let t = try await own(ctx)
        return try WebSocket.upgrade(req, settings: WebSocketSettings(maxMessageSize: 1 << 20, maxQueuedBytes: 1 << 20))
        { ws in
            await TerminalService.serve(t, ws)
        }
    }
}
