import Foundation
import KilnAgents
import KilnBudget
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnProjects
import KilnStore

/// Receipts: a signed, hash-chained record of every agent run, verifiable with ordinary tools.
public struct ReceiptsModule: KilnModule {
    public let name = "receipts"
    public init() {}
    public var migrations: [Migration] { ReceiptMigrations.all }

    public var permissions: [PermissionGrant] {
        [
            PermissionGrant("receipts:read", "Read, verify and re-check the workspace's run receipts", minimumRole: .viewer),
        ]
    }

    public func register(_ routes: Routes, _ services: Services) {
        let key: Ed25519Key?
        do { key = try ReceiptChain.loadKey(dataDir: services.dataDir, create: true) } catch {
            ServerLog.error("receipt key unavailable; receipts are not written", ["error": .string(String(describing: error))])
            key = nil
        }
        let chain = ReceiptChain(db: services.db, key: key)
        let prices = PriceTable.configured(services.config)
        let db = services.db
        let projects = ProjectDirectory(services: services)
        AgentHooks.shared(services).onEnd { r in
            do { try await chain.append(r, cost: prices.cost(model: r.model, input: r.inputTokens, output: r.outputTokens), at: services.clock.now()) }
            catch { ServerLog.error("receipt not written", ["run_id": .string(r.runID), "error": .string(String(describing: error))]) }
        }

        @Sendable func receiptRow(_ ctx: RequestContext) async throws -> Row {
            let access = try ctx.requireWorkspace()
            let id = try ctx.parameter("run_id")
            guard IDs.isValid(id, prefix: "run"), let r = try await db.read({ tx in try tx.first("SELECT * FROM receipts WHERE run_id = ?", id) }),
                  r.string("ws_id") == access.wsID else { throw APIError.notFound("No receipt for that run (runs get one when they end)") }
            return r
        }

        routes.add(.GET, "/api/receipts/public-key", permission: Permission.publicAccess,
                   summary: "The server's Ed25519 receipt key: base64url of the raw 32-byte public key", tags: ["receipts"]) { _, _ in
            guard let key else { throw APIError.unavailable("The receipt key could not be loaded") }
            return .json(JSONValue.object(["algorithm": "Ed25519", "public_key": .string(Base64URL.encode(key.publicKey)),
                                                      "encoding": "base64url"]))
        }

        routes.add(.GET, "/api/receipts/chain-head", permission: "receipts:read", summary: "The newest receipt of the workspace's chain: {seq, hash, run_id}",
                   tags: ["receipts"], query: [("ws_id", "the workspace", true)]) { _, ctx in
            let ws = try ctx.requireWorkspace().wsID
            let r = try await db.read { tx in try tx.first("SELECT seq, hash, run_id FROM receipts WHERE ws_id = ? ORDER BY seq DESC LIMIT 1", ws) }
            return .json(JSONValue.object(["ws_id": .string(ws), "seq": .int(r?.int("seq") ?? 0), "hash": .string(r?.string("hash") ?? ReceiptChain.genesis),
                                                      "run_id": r?.string("run_id").map { .string($0) } ?? .null]))
        }

        routes.add(.GET, "/api/receipts", permission: "receipts:read", summary: "The workspace's receipts in chain order",
                   tags: ["receipts"], query: [("ws_id", "the workspace", true), ("limit", "1 to 200 (default 50)", false), ("cursor", "next_cursor of the previous page", false)]) { req, ctx in
            let ws = try ctx.requireWorkspace().wsID
            let page = try PageRequest(query: req.query)
            let after = try page.cursor.map { c -> Int in
                guard let n = Int(c), n >= 0 else { throw APIError.validation("cursor is not one this server issued", field: "cursor") }
                return n
            } ?? 0
            let rows = try await db.read { tx in try tx.query("SELECT * FROM receipts WHERE ws_id = ? AND seq > ? ORDER BY seq LIMIT ?", ws, after, page.limit + 1) }
            let kept = rows.prefix(page.limit)
            let next: JSONValue = rows.count > page.limit ? .string(PageRequest.encodeCursor(String(kept.last?.int("seq") ?? 0))) : .null
            return .json(JSONValue.object(["items": .array(kept.map(ReceiptChain.served)), "next_cursor": next]))
        }

        routes.add(.GET, "/api/receipts/:run_id", permission: "receipts:read", summary: "A run's receipt (body, hash, signature)", tags: ["receipts"]) { _, ctx in
            .json(ReceiptChain.served(try await receiptRow(ctx)))
        }

        routes.add(.POST, "/api/receipts/:run_id/verify", permission: "receipts:read",
                   summary: "Walk the chain from the genesis receipt to this one, recomputing every hash, link and signature: {ok, checked, first_break?}",
                   tags: ["receipts"]) { _, ctx in
            guard let key else { throw APIError.unavailable("The receipt key could not be loaded") }
            let row = try await receiptRow(ctx)
            let ws = row.string("ws_id") ?? "", through = row.int("seq") ?? 0
            let rows = try await db.read { tx in try tx.query("SELECT * FROM receipts WHERE ws_id = ? AND seq <= ? ORDER BY seq", ws, through) }
            return .json(ReceiptChain.verify(rows: rows, publicKey: key.publicKey, throughSeq: through).json)
        }

        routes.add(.POST, "/api/receipts/:run_id/reground", permission: "receipts:read",
                   summary: "Re-check each finding and changed file against the project now: holds, moved {new_line}, changed or missing",
                   tags: ["receipts"]) { _, ctx in
            let row = try await receiptRow(ctx)
            guard let body = try? JSONDecoder().decode([String: JSONValue].self, from: Data((row.string("body") ?? "").utf8)),
                  case .string(let pid)? = body["project_id"] else { throw APIError.conflict("The stored receipt is unreadable") }
            guard let project = try await projects.lookup(pid) else { throw APIError.notFound("The run's project is no longer open") }
            let evidence = (try? JSONDecoder().decode([String].self, from: Data((row.string("evidence") ?? "[]").utf8))) ?? []
            func read(_ path: String) -> [String]? {
                guard let abs = try? SafePath.resolve(root: project.root, relative: path), let d = FileManager.default.contents(atPath: abs) else { return nil }
                return String(decoding: d, as: UTF8.self).components(separatedBy: "\n")
            }
            var findings: [JSONValue] = []
            if case .array(let fs)? = body["findings"] {
                for (i, f) in fs.enumerated() {
                    guard case .object(let o) = f, case .string(let path)? = o["path"], case .int(let line)? = o["line"] else { continue }
                    var out = o
                    let ev = i < evidence.count ? evidence[i] : ""
                    let evLines = ev.components(separatedBy: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                    guard let lines = read(path) else { out["status"] = "missing"; findings.append(.object(out)); continue }
                    let trimmed = lines.map { $0.trimmingCharacters(in: .whitespaces) }
                    /// Where the evidence (its non-blank lines, in order) starts, nearest the recorded line.
                    func starts() -> [Int] {
                        guard let first = evLines.first else { return [] }
                        return trimmed.indices.filter { s in
                            trimmed[s].contains(first) && evLines.indices.allSatisfy { k in s + k < trimmed.count && trimmed[s + k].contains(evLines[k]) }
                        }.map { $0 + 1 }
                    }
                    let found = starts()
                    if evLines.isEmpty { out["status"] = line <= lines.count ? "holds" : "changed" }
                    else if found.contains(line) { out["status"] = "holds" }
                    else if let nearest = found.min(by: { abs($0 - line) < abs($1 - line) }) { out["status"] = "moved"; out["new_line"] = .int(nearest) }
                    else { out["status"] = "changed" }
                    findings.append(.object(out))
                }
            }
            var files: [JSONValue] = []
            if case .array(let fs)? = body["files_changed"] {
                for f in fs {
                    guard case .object(var o) = f, case .string(let path)? = o["path"] else { continue }
                    let now = (try? SafePath.resolve(root: project.root, relative: path)).flatMap { FileManager.default.contents(atPath: $0) }
                        .map { Crypto.hex(Crypto.sha256(Array($0))) }
                    let after: String? = if case .string(let s)? = o["sha256_after"] { s } else { nil }
                    o["sha256_now"] = now.map { .string($0) } ?? .null
                    o["status"] = now == after ? "holds" : (now == nil ? "missing" : "changed")
                    files.append(.object(o))
                }
            }
            return .json(JSONValue.object(["run_id": .string(row.string("run_id") ?? ""), "findings": .array(findings), "files": .array(files)]))
        }
    }
}

/// `kiln receipts verify`: the same walk, offline, over a data dir.
public enum ReceiptsCLI {
    public static func verify(dataDir: String, wsID: String) throws -> ReceiptChain.Verification {
        guard let key = try ReceiptChain.loadKey(dataDir: dataDir, create: false) else {
            throw Crypto.Failure.invalidInput("no receipt key in \(dataDir) (receipt.key)")
        }
        let db = try Database(path: dataDir + "/kiln.db", readers: 1)
        let rows = try db.readSync { tx in try tx.query("SELECT * FROM receipts WHERE ws_id = ? ORDER BY seq", wsID) }
        return ReceiptChain.verify(rows: rows, publicKey: key.publicKey)
    }
}
