import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// A workspace's chain of signed run receipts. `hash` is the hex SHA-256 of the receipt's RFC 8785
/// canonical JSON without `hash` and `signature`; `signature` is the Ed25519 signature of those same
/// bytes, base64url without padding. The body is stored exactly as it was signed.
public enum ReceiptChain {
    public static let genesis = String(repeating: "0", count: 64)

    /// The server's receipt key, made on first start (0600 in the data dir).
    public static func loadKey(dataDir: String, create: Bool) throws -> Ed25519Key? {
        let path = dataDir + "/receipt.key"
        if create && !FileManager.default.fileExists(atPath: path) {
            // Made once even when several servers start together: the first link wins, all read it.
            let fresh = try Ed25519Key.generate()
            do { try MasterKey.createOnce(path, contents: Array(Base64URL.encode(fresh.seed).utf8)) } catch {
                throw Crypto.Failure.invalidInput("cannot write \(path)")
            }
        }
        if let data = FileManager.default.contents(atPath: path) {
            guard
                let seed = Base64URL.decode(
                    String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                seed.count == 32
            else {
                throw Crypto.Failure.invalidInput("\(path) is not a base64url Ed25519 seed")
            }
            return try Ed25519Key(seed: seed)
        }
        return nil
    }

    static func iso(_ d: Date) -> String { HTTPDate.iso8601(d) }

    /// The receipt body for a finished run (integers and strings only, null for absent hashes).
    static func body(_ r: RunRecord, seq: Int, prev: String, cost: Int) -> JSONValue {
        var b = fields(r, seq: seq, prev: prev, cost: cost)
        // Only runs that met an approval carry the list, so every other body is signed as before.
        if !r.approvals.isEmpty {
            b["approvals"] = .array(
                r.approvals.map {
                    [
                        "approval_id": .string($0.approvalID), "call_id": .string($0.callID),
                        "action": .string($0.action), "decision": .string($0.decision),
                        "decided_by": $0.decidedBy.map { .string($0) } ?? .null,
                        "decided_at": .string(iso($0.decidedAt)),
                    ]
                })
        }
        return .object(b)
    }

    static func fields(_ r: RunRecord, seq: Int, prev: String, cost: Int) -> [String: JSONValue] {
        [
            "seq": .int(seq), "run_id": .string(r.runID), "ws_id": .string(r.wsID), "project_id": .string(r.projectID),
            "prev_hash": .string(prev), "user": .string(r.userID), "model": .string(r.model),
            "started_at": .string(iso(r.startedAt)), "ended_at": .string(iso(r.endedAt)), "status": .string(r.status),
            "prompt_sha256": .string(Crypto.hex(Crypto.sha256(Array(r.prompt.utf8)))),
            "tool_calls": .array(
                r.calls.map {
                    ["tool": .string($0.tool), "args_sha256": .string($0.argsSHA256), "ok": .int($0.ok ? 1 : 0)]
                }),
            "files_changed": .array(
                r.files.map {
                    [
                        "path": .string($0.path), "sha256_before": $0.before.map { .string($0) } ?? .null,
                        "sha256_after": $0.after.map { .string($0) } ?? .null,
                    ]
                }),
            "findings": .array(
                r.findings.map {
                    [
                        "path": .string($0.path), "line": .int($0.line), "claim": .string($0.claim),
                        "evidence_sha256": .string($0.evidenceSHA256),
                    ]
                }),
            "usage": ["input_tokens": .int(r.inputTokens), "output_tokens": .int(r.outputTokens)],
            "cost_usd_micros": .int(cost),
        ]
    }

    /// A stored receipt as served: its body plus `hash` and `signature`.
    static func served(_ row: Row) -> JSONValue {
        guard var o = (try? JSONDecoder().decode([String: JSONValue].self, from: Data((row.string("body") ?? "").utf8)))
        else {
            return ["seq": .int(row.int("seq") ?? 0), "run_id": .string(row.string("run_id") ?? ""), "corrupt": true]
        }
        o["hash"] = .string(row.string("hash") ?? "")
        o["signature"] = .string(row.string("signature") ?? "")
        return .object(o)
    }

    public struct Verification: Sendable {
        public let ok: Bool
        public let checked: Int
        public let breakSeq: Int?
        public let reason: String?
        public var json: JSONValue {
            var o: [String: JSONValue] = ["ok": .bool(ok), "checked": .int(checked)]
            if let breakSeq { o["first_break"] = ["seq": .int(breakSeq), "reason": .string(reason ?? "")] }
            return .object(o)
        }
    }

    /// Walks the chain from the genesis receipt up to `throughSeq` (all when nil), recomputing every
    /// hash, link and signature against `publicKey`.
    public static func verify(rows: [Row], publicKey: [UInt8], throughSeq: Int? = nil) -> Verification {
        var prev = genesis
        var expected = 1
        var checked = 0
        for row in rows {
            let seq = row.int("seq") ?? 0
            if let t = throughSeq, seq > t { break }
            func fail(_ reason: String, at s: Int? = nil) -> Verification {
                Verification(ok: false, checked: checked, breakSeq: s ?? seq, reason: reason)
            }
            if seq != expected { return fail("receipt \(expected) is missing", at: expected) }
            let text = row.string("body") ?? ""
            let bytes = Array(text.utf8)
            guard let body = try? JSONDecoder().decode([String: JSONValue].self, from: Data(bytes)) else {
                return fail("the stored receipt is not JSON")
            }
            guard let canonical = try? CanonicalJSON.bytes(.object(body)), canonical == bytes else {
                return fail("the stored receipt is not in canonical form")
            }
            let hash = Crypto.hex(Crypto.sha256(bytes))
            if hash != row.string("hash") { return fail("hash mismatch: the receipt's content changed") }
            if body["seq"] != .int(seq) {
                return fail("the receipt's seq field (\(body["seq"]?.jsonText ?? "none")) does not match its position")
            }
            if body["prev_hash"] != .string(prev) { return fail("prev_hash does not link to receipt \(seq - 1)") }
            guard let sig = Base64URL.decode(row.string("signature") ?? ""),
                Ed25519Key.verify(publicKey: publicKey, message: bytes, signature: sig)
            else {
                return fail("bad signature")
            }
            prev = hash
            expected += 1
            checked += 1
        }
        if let t = throughSeq, expected <= t {
            return Verification(
                ok: false, checked: checked, breakSeq: expected, reason: "receipt \(expected) is missing")
        }
        return Verification(ok: true, checked: checked, breakSeq: nil, reason: nil)
    }
}
