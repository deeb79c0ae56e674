import Foundation
import KilnCore
import KilnHTTP

/// `/mcp`: Kiln as an MCP server (streamable HTTP, JSON answers), for API keys.
struct MCPRoutes: Sendable {
    let server: MCPServerService
    /// Origins besides the request's own Host that may call (from --public-url).
    let trustedOrigins: Set<String>

    func register(_ routes: Routes) {
        let r = routes.tagged("mcp")
        routes.add(
            .POST, "/mcp", Permission.authenticated,
            "Kiln as an MCP server (streamable HTTP; protocol 2026-07-28 stateless, or 2025-11-25 with initialize "
                + "and Mcp-Session-Id): tools list_projects, search, read_file, find_symbol, list_files, edit_file, "
                + "write_file, run_tests, run_command, start_agent_run, get_run, verify_receipts; resources "
                + "kiln://<project>/<path>. API keys only; the key's scopes limit the tools",
            tags: ["mcp"], reply: .json(Schema.any), bodyLimit: MCPLimits.maxRequestBytes, requestSchema: Schema.any,
            post)
        r.add(
            .DELETE, "/mcp", Permission.authenticated, "End a 2025-11-25 session (Mcp-Session-Id)",
            reply: .noContent, delete)
        r.add(
            .GET, "/mcp", Permission.authenticated,
            "Not offered: this server opens no server-to-client stream (405 with Allow: POST, DELETE)", get)
    }

    /// MCP clients authenticate with an API key; a browser's cookie is not enough, and a page of
    /// another origin may not call at all.
    func caller(_ req: Request, _ ctx: RequestContext) throws -> Principal {
        if let origin = req.headers["Origin"] {
            let own = req.headers["Host"].map { "\(req.isSecure ? "https" : "http")://\($0)" }
            guard origin == own || trustedOrigins.contains(origin) else {
                throw HTTPError.forbidden("Cross-origin request refused")
            }
        }
        let p = try ctx.requirePrincipal()
        guard p.apiKeyID != nil else {
            throw HTTPError(
                .unauthorized, code: "unauthenticated",
                message: "Kiln's MCP server takes an API key: Authorization: Bearer kf_…",
                headers: HTTPHeaders([("WWW-Authenticate", "Bearer")]))
        }
        return p
    }

    @Sendable func post(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try caller(req, ctx)
        let accept = req.headers["Accept"] ?? "*/*"
        guard accept.contains("application/json") || accept.contains("*/*") || accept.contains("application/*") else {
            throw HTTPError(HTTPStatus(406), message: "Accept must allow application/json")
        }
        guard let mt = req.mediaType, mt == "application/json" else {
            throw HTTPError(.unsupportedMediaType, message: "Content-Type must be application/json")
        }
        let answer = await server.handle(try await req.bodyBytes(context: ctx), headers: req.headers, principal: p)
        var res: Response
        if let body = answer.body {
            res = Response.json(body, status: answer.status)
        } else {
            res = Response(status: answer.status)
        }
        for (k, v) in answer.headers { res.headers[k] = v }
        return res
    }

    @Sendable func delete(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try caller(req, ctx)
        guard server.endSession(req.headers[MCPWire.sessionHeader], principal: p) else {
            throw APIError.notFound("No such MCP session")
        }
        return Response(status: .noContent)
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        _ = try caller(req, ctx)
        var headers = HTTPHeaders()
        headers.add("Allow", "POST, DELETE")
        throw HTTPError(
            .methodNotAllowed, code: "method_not_allowed",
            message: "This MCP server opens no server-to-client stream; POST requests to /mcp", headers: headers)
    }
}

/// `/api/mcp/*`: the workspace's tool registry: external servers, their credentials, the
/// catalogue of every tool, and calls into it.
struct RegistryRoutes: Sendable {
    let registry: MCPRegistryService

    func register(_ routes: Routes) {
        let r = routes.tagged("mcp")
        let small = 64 * 1024
        r.add(
            .GET, "/api/mcp", MCPPermission.read,
            "The catalogue: Kiln's tools (kiln.<tool>) and each registered server's (<server>.<tool>) with JSON "
                + "Schemas, origin and whether enabled; q filters by name or description",
            query: [.wsID, QueryParam("q", "a word in the tool's name or description")], reply: .json(Schema.any),
            catalogue)
        r.add(
            .POST, "/api/mcp", MCPPermission.invoke,
            "Call a catalogue tool {ws_id, tool, arguments} → {content, structured_content?, is_error, duration_ms}; "
                + "arguments are checked against its schema (400 naming the path); 502/504 when its server fails",
            limit: MCPLimits.maxRequestBytes, reply: .json(Schema.any), invoke)
        r.add(
            .GET, "/api/mcp/servers", MCPPermission.read, "The workspace's registered MCP servers", query: [.wsID],
            reply: .json(Schema.page(Schema.any)), servers)
        r.add(
            .POST, "/api/mcp/servers", MCPPermission.manage,
            "Register a server {ws_id, name, transport: http|stdio, url | command + args + env_names, token_id?, "
                + "enabled, timeout_s}; names are [a-z0-9_-]{1,32}, unique per workspace",
            limit: small, reply: .json(Schema.any, status: .created), create)
        r.add(
            .GET, "/api/mcp/servers/:server_id", MCPPermission.read, "One registered server", reply: .json(Schema.any),
            get)
        r.add(
            .PATCH, "/api/mcp/servers/:server_id", MCPPermission.manage, "Change a server (absent fields stay)",
            limit: small, reply: .json(Schema.any), patch)
        r.add(
            .DELETE, "/api/mcp/servers/:server_id", MCPPermission.manage, "Remove a server and its tools",
            reply: .noContent, delete)
        r.add(
            .POST, "/api/mcp/servers/:server_id/refresh", MCPPermission.manage,
            "List the server's tools (tools/list, every page) and store them", reply: .json(Schema.any), refresh)
        r.add(
            .GET, "/api/mcp/servers/:server_id/health", MCPPermission.invoke,
            "Whether the server answers: {ok, protocol_version, latency_ms} or {ok: false, error}",
            reply: .json(Schema.any), health)
        r.add(
            .GET, "/api/mcp/tokens", MCPPermission.read, "Credentials for servers: names and kinds, never values",
            query: [.wsID], reply: .json(Schema.page(Schema.any)), tokens)
        r.add(
            .POST, "/api/mcp/tokens", MCPPermission.manage,
            "Store a credential {ws_id, name, token | headers}: sealed with the master key, never shown again",
            limit: small, reply: .json(Schema.any, status: .created), createToken)
        r.add(
            .DELETE, "/api/mcp/tokens/:token_id", MCPPermission.manage,
            "Delete a credential (servers using it lose it)",
            reply: .noContent, deleteToken)
    }

    @Sendable func catalogue(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let items = try await registry.catalogue(
            wsID: try ctx.requireWorkspace().wsID, q: req.query["q"], principal: try ctx.requirePrincipal())
        return .json(JSONValue.object(["items": .array(items), "next_cursor": .null]))
    }

    @Sendable func invoke(_ req: Request, _ ctx: RequestContext, _ input: InvokeInput) async throws -> Response {
        .json(
            try await registry.invoke(
                wsID: try ctx.requireWorkspace().wsID, tool: input.tool, arguments: input.arguments,
                principal: try ctx.requirePrincipal(), ip: req.remoteAddress))
    }

    @Sendable func servers(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            JSONValue.object([
                "items": .array(try await registry.servers(wsID: try ctx.requireWorkspace().wsID)),
                "next_cursor": .null,
            ]))
    }

    @Sendable func create(_ req: Request, _ ctx: RequestContext, _ input: ServerInput) async throws -> Response {
        .json(
            try await registry.create(
                input, wsID: try ctx.requireWorkspace().wsID, userID: try ctx.requirePrincipal().userID,
                ip: req.remoteAddress), status: .created)
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await registry.get(try ctx.parameter("server_id"), wsID: try ctx.requireWorkspace().wsID))
    }

    @Sendable func patch(_ req: Request, _ ctx: RequestContext, _ input: ServerInput) async throws -> Response {
        .json(
            try await registry.patch(
                try ctx.parameter("server_id"), input, wsID: try ctx.requireWorkspace().wsID,
                userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress))
    }

    @Sendable func delete(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await registry.delete(
            try ctx.parameter("server_id"), wsID: try ctx.requireWorkspace().wsID,
            userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        return Response(status: .noContent)
    }

    @Sendable func refresh(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            try await registry.refresh(
                try ctx.parameter("server_id"), wsID: try ctx.requireWorkspace().wsID,
                userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func health(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            try await registry.health(
                try ctx.parameter("server_id"), wsID: try ctx.requireWorkspace().wsID,
                userID: try ctx.requirePrincipal().userID))
    }

    @Sendable func tokens(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            JSONValue.object([
                "items": .array(try await registry.tokens(wsID: try ctx.requireWorkspace().wsID)), "next_cursor": .null,
            ]))
    }

    @Sendable func createToken(_ req: Request, _ ctx: RequestContext, _ input: TokenInput) async throws -> Response {
        .json(
            try await registry.createToken(
                input, wsID: try ctx.requireWorkspace().wsID, userID: try ctx.requirePrincipal().userID,
                ip: req.remoteAddress), status: .created)
    }

    @Sendable func deleteToken(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await registry.deleteToken(
            try ctx.parameter("token_id"), wsID: try ctx.requireWorkspace().wsID,
            userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        return Response(status: .noContent)
    }
}
