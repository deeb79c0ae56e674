import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The policy domain's SQL: every version of each workspace's document (the newest is in force).
struct PolicyStore: Sendable {
    let db: Database

    func latest(_ wsID: String) async throws -> Row? {
        try await db.read { tx in
            try tx.first("SELECT * FROM policy_versions WHERE ws_id = ? ORDER BY version DESC LIMIT 1", wsID)
        }
    }

    func latest(_ tx: Transaction, _ wsID: String) throws -> Row? {
        try tx.first("SELECT * FROM policy_versions WHERE ws_id = ? ORDER BY version DESC LIMIT 1", wsID)
    }

    func insert(_ tx: Transaction, wsID: String, version: Int, document: String, userID: String, at now: Date) throws {
        try tx.run(
            "INSERT INTO policy_versions (ws_id, version, document, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
            wsID, version, document, now, userID)
    }

    func history(_ wsID: String, before: Int?, limit: Int) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT ws_id, version, created_at, created_by FROM policy_versions
                WHERE ws_id = ? AND version < ? ORDER BY version DESC LIMIT ?
                """, wsID, before ?? Int.max, limit)
        }
    }

    /// A deleted workspace's policies (its approvals stay, as the record of what was decided).
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM policy_versions WHERE ws_id = ?", wsID)
    }
}

/// The approvals' SQL: one row per parked action, pending until decided, expired or withdrawn.
struct ApprovalStore: Sendable {
    let db: Database

    func insert(
        _ tx: Transaction, id: String, _ r: ApprovalRequest, context: String, resumePayload: String?,
        resumeGrants: String?, instance: String, at now: Date, expires: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO approvals (id, ws_id, action, context, rule_id, reason, self_approval, requested_by, run_id,
                call_id, state, created_at, expires_at, resume_kind, resume_payload, resume_grants, instance_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)
            """, id, r.wsID, r.action, context, r.decision.ruleId, r.decision.reason, r.decision.selfApproval ? 1 : 0,
            r.requestedBy, r.runID, r.callID, now, expires, r.resume?.kind, resumePayload, resumeGrants, instance)
    }

    func get(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM approvals WHERE id = ?", id) }
    }

    func get(_ tx: Transaction, _ id: String) throws -> Row? {
        try tx.first("SELECT * FROM approvals WHERE id = ?", id)
    }

    func workspaceOf(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM approvals WHERE id = ?", id)?.string("ws_id") }
    }

    /// Newest first, after the page's cursor (its created_at and id).
    func list(_ wsID: String, state: String?, page: PageRequest) async throws -> [Row] {
        var q = Query("SELECT * FROM approvals WHERE ws_id = ?", wsID)
        q.and("state = ?", ifGiven: state)
        try page.newestFirst(&q, timeColumn: "created_at", idColumn: "id")
        let query = q
        return try await db.read { tx in try query.rows(tx) }
    }

    /// Ends a pending approval; false when it was no longer pending.
    func decide(
        _ tx: Transaction, _ id: String, state: String, by userID: String?, reason: String?, at now: Date
    ) throws -> Bool {
        try tx.run(
            """
            UPDATE approvals SET state = ?, decided_by = ?, decision_reason = ?, decided_at = ?
            WHERE id = ? AND state = 'pending'
            """, state, userID, reason, now, id) > 0
    }

    /// Marks an approved approval as collected by its requester; false when it is not theirs, not
    /// approved, for another action, or collected already.
    func redeem(_ id: String, userID: String, action: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            try tx.run(
                """
                UPDATE approvals SET redeemed_at = ?
                WHERE id = ? AND requested_by = ? AND action = ? AND state = 'approved' AND redeemed_at IS NULL
                """, now, id, userID, action) > 0
        }
    }

    func setResult(_ id: String, _ result: String) async throws {
        _ = try await db.write { tx in try tx.run("UPDATE approvals SET result = ? WHERE id = ?", result, id) }
    }

    func due(at now: Date) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                "SELECT id, ws_id, run_id FROM approvals WHERE state = 'pending' AND expires_at <= ? LIMIT 500", now)
        }
    }

    /// Pending approvals a run waits for (none survive a restart: their runs ended with the process).
    func pendingForRuns() async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                "SELECT id, ws_id, run_id, instance_id FROM approvals WHERE state = 'pending' AND run_id IS NOT NULL")
        }
    }
}
