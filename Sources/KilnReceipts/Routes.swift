import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP

/// `/api/receipts/*`: the public key, the chain, one receipt, verification and re-grounding.
struct ReceiptRoutes: Sendable {
    let receipts: ReceiptService

    func register(_ routes: Routes) {
        let r = routes.tagged("receipts")
        let read = ReceiptPermission.read
        r.add(
            .GET, "/api/receipts/public-key", .publicAccess,
            "The server's Ed25519 receipt key: base64url of the raw 32-byte public key",
            publicKey)
        r.add(
            .GET, "/api/receipts/chain-head", read, "The newest receipt of the workspace's chain: {seq, hash, run_id}",
            query: [.wsID],
            chainHead)
        r.add(
            .GET, "/api/receipts", read, "The workspace's receipts in chain order", query: [.wsID] + QueryParam.paging,
            list)
        r.add(.GET, "/api/receipts/:run_id", read, "A run's receipt (body, hash, signature)", receipt)
        r.add(
            .POST, "/api/receipts/:run_id/verify", read,
            "Walk the chain from the genesis receipt to this one, recomputing every hash, link and signature: {ok, checked, first_break?}",
            verify)
        r.add(
            .POST, "/api/receipts/:run_id/reground", read,
            "Re-check each finding and changed file against the project now: holds, moved {new_line}, changed or missing",
            reground)
    }

    @Sendable func publicKey(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let key = try receipts.requireKey()
        return .json(
            JSONValue.object([
                "algorithm": "Ed25519", "public_key": .string(Base64URL.encode(key.publicKey)), "encoding": "base64url",
            ]))
    }

    @Sendable func chainHead(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        try .json(try await receipts.head(wsID: try ctx.requireWorkspace().wsID))
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            try await receipts.list(wsID: try ctx.requireWorkspace().wsID, page: try PageRequest(query: req.query)).json
        )
    }

    @Sendable func receipt(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(
            ReceiptChain.served(
                try await receipts.receipt(runID: try ctx.parameter("run_id"), in: try ctx.requireWorkspace().wsID)))
    }

    @Sendable func verify(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await receipts.verify(runID: try ctx.parameter("run_id"), in: try ctx.requireWorkspace().wsID).json)
    }

    @Sendable func reground(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await receipts.reground(runID: try ctx.parameter("run_id"), in: try ctx.requireWorkspace().wsID))
    }
}
