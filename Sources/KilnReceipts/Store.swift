import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The receipts domain's SQL: each workspace's chain of signed receipts, in order.
struct ReceiptStore: Sendable {
    let db: Database

    /// Appends a receipt in one transaction (so concurrent run ends still give one gap-free chain):
    /// `sign` gets the new seq and the previous hash and returns (body bytes, hash, signature).
    func append(
        wsID: String, runID: String, evidence: String, at now: Date,
        sign: @escaping @Sendable (_ seq: Int, _ prev: String) throws -> ([UInt8], String, String)
    ) async throws {
        _ = try await db.write { tx in
            if try tx.first("SELECT 1 AS x FROM receipts WHERE run_id = ?", runID) != nil { return }
            let last = try tx.first("SELECT seq, hash FROM receipts WHERE ws_id = ? ORDER BY seq DESC LIMIT 1", wsID)
            let seq = (last?.int("seq") ?? 0) + 1
            let (bytes, hash, signature) = try sign(seq, last?.string("hash") ?? ReceiptChain.genesis)
            try tx.run(
                "INSERT INTO receipts (ws_id, seq, run_id, body, hash, signature, evidence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                wsID, seq, runID, String(decoding: bytes, as: UTF8.self), hash, signature, evidence, now)
        }
    }

    func receipt(runID: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM receipts WHERE run_id = ?", runID) }
    }

    func head(wsID: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first("SELECT seq, hash, run_id FROM receipts WHERE ws_id = ? ORDER BY seq DESC LIMIT 1", wsID)
        }
    }

    func receipts(wsID: String, after seq: Int, limit: Int) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM receipts WHERE ws_id = ? AND seq > ? ORDER BY seq LIMIT ?", wsID, seq, limit)
        }
    }

    /// The chain from its genesis receipt through `through` (all when nil).
    func chain(wsID: String, through: Int? = nil) async throws -> [Row] {
        try await db.read { tx in try Self.chain(tx, wsID: wsID, through: through) }
    }

    /// The whole chain, read on the caller's thread (`kiln receipts verify`).
    func chainSync(wsID: String) throws -> [Row] {
        try db.readSync { tx in try Self.chain(tx, wsID: wsID, through: nil) }
    }

    static func chain(_ tx: Transaction, wsID: String, through: Int?) throws -> [Row] {
        if let through {
            return try tx.query("SELECT * FROM receipts WHERE ws_id = ? AND seq <= ? ORDER BY seq", wsID, through)
        }
        return try tx.query("SELECT * FROM receipts WHERE ws_id = ? ORDER BY seq", wsID)
    }
}
