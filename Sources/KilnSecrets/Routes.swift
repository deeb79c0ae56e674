import Foundation
import KilnCore
import KilnHTTP

/// `/api/secrets/*`: names and versions, reveal (step-up, never an API key), set, delete.
struct SecretsRoutes: Sendable {
    let secrets: SecretsService

    func register(_ routes: Routes) {
        let r = routes.tagged("secrets")
        r.add(
            .GET, "/api/secrets", SecretsPermission.list,
            "The workspace's secrets: name, version, created/updated (and by whom), expiry, last use; never values",
            query: [.wsID], reply: .page(of: SecretInfo.self), list)
        r.add(
            .GET, "/api/secrets/:name", SecretsPermission.reveal,
            "Reveal a secret's value: needs step-up (never an API key), audited with ?reason=, Cache-Control: no-store",
            query: [
                .wsID, QueryParam("reason", "why you read it (kept in the audit trail)"),
                QueryParam(
                    "approval_id", "an approved reveal of yours, collected once (when a rule requires approval)"),
            ], reveal)
        r.add(
            .POST, "/api/secrets/:name", SecretsPermission.write,
            "Set a secret (a new version; the last 5 are kept): name A-Z0-9_ (an environment variable), "
                + "value up to 64 KiB, optional expires_at",
            limit: 80 * 1024, reply: .of(SecretInfo.self), set)
        r.add(
            .POST, "/api/secrets/rotate-master", .instanceAdmin,
            "A new master key (instance admin, step-up): every secret's data key and every MFA secret re-sealed in one "
                + "transaction; a crash at any point leaves everything readable with one of the two keys",
            reply: .json(Schema.object(["key_id": Schema.string, "resealed": Schema.integer])), rotate)
        r.add(
            .GET, "/api/secrets/:name/versions", SecretsPermission.list, "A secret's kept versions, newest first",
            query: [.wsID], reply: .page(of: SecretVersion.self), versions)
        r.add(
            .DELETE, "/api/secrets/:name", SecretsPermission.write, "Delete a secret and every kept version",
            query: [.wsID], reply: .noContent, delete)
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(Page(all: try await secrets.list(wsID: try ctx.requireWorkspace().wsID)))
    }

    @Sendable func reveal(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        try p.requireStepUp(now: secrets.clock.now())
        let (info, value) = try await secrets.reveal(
            wsID: try ctx.requireWorkspace().wsID, name: try ctx.parameter("name"), reason: req.query["reason"],
            userID: p.userID, ip: req.remoteAddress,
            approvalID: req.query["approval_id"].flatMap { $0.isEmpty ? nil : $0 })
        guard case .object(var body) = try JSONValue(encoding: info) else { throw APIError(.internalServerError) }
        body["value"] = .string(value)
        var res = Response.json(JSONValue.object(body))
        res.headers["Cache-Control"] = "no-store"
        return res
    }

    @Sendable func set(_ req: Request, _ ctx: RequestContext, _ input: SetSecretInput) async throws -> Response {
        let (info, created) = try await secrets.set(
            wsID: try ctx.requireWorkspace().wsID, name: try ctx.parameter("name"), value: input.value,
            expiresAt: input.expiresAt, userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        return try .json(info, status: created ? .created : .ok)
    }

    @Sendable func rotate(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let p = try ctx.requirePrincipal()
        try p.requireStepUp(now: secrets.clock.now())
        let (keyID, n) = try await secrets.rotateMaster(userID: p.userID, ip: req.remoteAddress)
        return .json(JSONValue.object(["key_id": .string(keyID), "resealed": .int(n)]))
    }

    @Sendable func versions(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(
            Page(
                all: try await secrets.versions(wsID: try ctx.requireWorkspace().wsID, name: try ctx.parameter("name")))
        )
    }

    @Sendable func delete(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try await secrets.delete(
            wsID: try ctx.requireWorkspace().wsID, name: try ctx.parameter("name"),
            userID: try ctx.requirePrincipal().userID, ip: req.remoteAddress)
        return .noContent()
    }
}
