import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// Receipts: every finished run is appended to its workspace's chain, signed with the server's
/// Ed25519 key. It follows runs as a `RunObserver`; the chain can be read, verified and re-checked
/// against the project as it is now.
public struct ReceiptService: RunObserver {
    let store: ReceiptStore
    let key: Ed25519Key?
    let pricing: any Pricing
    let projects: any ProjectDirectory
    let clock: any Clock

    public init(services: Services, projects: any ProjectDirectory, pricing: any Pricing) {
        store = ReceiptStore(db: services.db)
        do { key = try ReceiptChain.loadKey(dataDir: services.dataDir, create: true) } catch {
            ServerLog.error(
                "receipt key unavailable; receipts are not written", ["error": .string(String(describing: error))])
            key = nil
        }
        self.pricing = pricing
        self.projects = projects
        clock = services.clock
    }

    public func runEnded(_ r: RunRecord) async {
        do {
            try await append(
                r, cost: pricing.cost(model: r.model, input: r.inputTokens, output: r.outputTokens), at: clock.now())
        } catch {
            ServerLog.error(
                "receipt not written", ["run_id": .string(r.runID), "error": .string(String(describing: error))])
        }
    }

    /// Appends the run's receipt to its workspace's chain.
    func append(_ r: RunRecord, cost: Int, at now: Date) async throws {
        guard let key else { return }
        let evidence = JSONValue.array(r.findings.map { .string($0.evidence) }).jsonText
        try await store.append(wsID: r.wsID, runID: r.runID, evidence: evidence, at: now) { seq, prev in
            let bytes = try CanonicalJSON.bytes(ReceiptChain.body(r, seq: seq, prev: prev, cost: cost))
            return (bytes, Crypto.hex(Crypto.sha256(bytes)), Base64URL.encode(key.sign(bytes)))
        }
    }

    func requireKey() throws -> Ed25519Key {
        guard let key else { throw APIError.unavailable("The receipt key could not be loaded") }
        return key
    }

    /// The run's receipt when it belongs to the workspace.
    func receipt(runID: String, in wsID: String) async throws -> Row {
        guard IDs.isValid(runID, prefix: "run"), let r = try await store.receipt(runID: runID),
            r.string("ws_id") == wsID
        else {
            throw APIError.notFound("No receipt for that run (runs get one when they end)")
        }
        return r
    }

    func head(wsID: String) async throws -> ChainHead {
        let r = try await store.head(wsID: wsID)
        return ChainHead(
            wsId: wsID, seq: r?.int("seq") ?? 0, hash: r?.string("hash") ?? ReceiptChain.genesis,
            runId: r?.string("run_id"))
    }

    func list(wsID: String, page: PageRequest) async throws -> Page<JSONValue> {
        let rows = try await store.receipts(wsID: wsID, after: try page.numericCursor(), limit: page.limit + 1)
        let kept = rows.prefix(page.limit)
        let next = rows.count > page.limit ? PageRequest.encodeCursor(String(kept.last?.int("seq") ?? 0)) : nil
        return Page(items: kept.map(ReceiptChain.served), nextCursor: next)
    }

    /// Walks the chain from its genesis receipt to the run's.
    func verify(runID: String, in wsID: String) async throws -> ReceiptChain.Verification {
        let key = try requireKey()
        let row = try await receipt(runID: runID, in: wsID)
        let through = row.int("seq") ?? 0
        let rows = try await store.chain(wsID: row.string("ws_id") ?? "", through: through)
        return ReceiptChain.verify(rows: rows, publicKey: key.publicKey, throughSeq: through)
    }
}

extension ReceiptService: ReceiptVerifier {
    public func receipt(runID: String, wsID: String) async throws -> JSONValue? {
        guard IDs.isValid(runID, prefix: "run") else { return nil }
        do { return ReceiptChain.served(try await receipt(runID: runID, in: wsID)) } catch let e as HTTPError
            where e.status == .notFound
        { return nil }
    }

    public func verifyChain(runID: String, wsID: String) async throws -> JSONValue? {
        guard IDs.isValid(runID, prefix: "run") else { return nil }
        do { return try await verify(runID: runID, in: wsID).json } catch let e as HTTPError where e.status == .notFound
        {
            return nil
        }
    }
}
