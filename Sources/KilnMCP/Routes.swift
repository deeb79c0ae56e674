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
