import Foundation
import KilnCore
import KilnStore

/// The collab domain's SQL: share links and invitations (tokens kept only as hashes), the activity
/// feed, notifications and their settings, reviews with their reviewers and comments.
struct CollabStore: Sendable {
    let db: Database

    func insertLink(
        _ tx: Transaction, id: String, wsID: String, type: String, subjectID: String, tokenHash: String,
        passwordHash: String?, userID: String, at now: Date, expires: Date, path: String?, snapshot: String?
    ) throws {
        try tx.run(
            """
            INSERT INTO share_links (id, ws_id, subject_type, subject_id, token_hash, password_hash, created_by,
                created_at, expires_at, subject_path, snapshot)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, id, wsID, type, subjectID, tokenHash, passwordHash, userID, now, expires, path, snapshot)
    }

    func links(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM share_links WHERE ws_id = ? ORDER BY created_at DESC, id DESC LIMIT 500", wsID)
        }
    }

    func link(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM share_links WHERE id = ?", id) }
    }

    func link(tokenHash: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM share_links WHERE token_hash = ?", tokenHash) }
    }

    func revoke(_ tx: Transaction, _ id: String, at now: Date) throws -> Bool {
        try tx.run("UPDATE share_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", now, id) > 0
    }

    /// Counts a view; true when it was the first.
    func viewed(_ id: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            let first =
                try tx.run(
                    "UPDATE share_links SET first_viewed_at = ? WHERE id = ? AND first_viewed_at IS NULL", now, id) > 0
            try tx.run("UPDATE share_links SET views = views + 1 WHERE id = ?", id)
            return first
        }
    }

    func workspaceOf(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM share_links WHERE id = ?", id)?.string("ws_id") }
    }

    // MARK: Activity

    func insertActivity(
        ws: String, seq: Int, kind: String, actor: String?, projectID: String?, item: String, at now: Date
    ) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT OR IGNORE INTO activity (ws_id, seq, kind, actor, project_id, item, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """, ws, seq, kind, actor, projectID, item, now)
        }
    }

    /// Newest first, before `cursor` (a seq); each filter optional.
    func activity(
        ws: String, before cursor: Int, limit: Int, kind: String?, actor: String?, projectID: String?
    ) async throws -> [Row] {
        // A kind's prefix ("run" for run.started, run.completed…); a `%` or `_` in the filter is
        // escaped, so it matches only itself.
        let pattern = kind.map { k in
            k.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                .replacingOccurrences(of: "_", with: "\\_") + ".%"
        }
        return try await db.read { tx in
            try tx.query(
                """
                SELECT seq, item FROM activity
                WHERE ws_id = ? AND seq < ? AND (? IS NULL OR kind = ? OR kind LIKE ? ESCAPE '\\')
                    AND (? IS NULL OR actor = ?) AND (? IS NULL OR project_id = ?)
                ORDER BY seq DESC LIMIT ?
                """, ws, cursor, kind, kind, pattern, actor, actor, projectID, projectID, limit)
        }
    }

    // MARK: Notifications

    func insertNotification(
        id: String, userID: String, wsID: String?, kind: String, title: String, subject: String, actor: String?,
        mailPending: Bool, at now: Date
    ) async throws {
        _ = try await db.write { tx in
            try tx.run(
                """
                INSERT INTO notifications (id, user_id, ws_id, kind, title, subject, actor, created_at, mail_pending)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, id, userID, wsID, kind, title, subject, actor, now, mailPending ? 1 : 0)
        }
    }

    func notifications(userID: String, unreadOnly: Bool, before cursor: String?, limit: Int) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT * FROM notifications
                WHERE user_id = ? AND (? = 0 OR read_at IS NULL) AND (? IS NULL OR id < ?)
                ORDER BY id DESC LIMIT ?
                """, userID, unreadOnly ? 1 : 0, cursor, cursor, limit)
        }
    }

    func unreadCount(userID: String) async throws -> Int {
        try await db.read { tx in
            try tx.first(
                "SELECT COUNT(*) AS n FROM notifications WHERE user_id = ? AND read_at IS NULL", userID)?.int("n") ?? 0
        }
    }

    /// Marks one (or, with nil, every) unread notification of the user read; how many changed.
    func markRead(userID: String, id: String?, at now: Date) async throws -> Int {
        try await db.write { tx in
            try tx.run(
                """
                UPDATE notifications SET read_at = ?
                WHERE user_id = ? AND read_at IS NULL AND (? IS NULL OR id = ?)
                """, now, userID, id, id)
        }
    }

    func notificationOwner(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT user_id FROM notifications WHERE id = ?", id)?.string("user_id")
        }
    }

    func settings(userID: String) async throws -> [String: String] {
        let rows = try await db.read { tx in
            try tx.query("SELECT kind, mode FROM notification_settings WHERE user_id = ?", userID)
        }
        var out: [String: String] = [:]
        for r in rows { out[r.string("kind") ?? ""] = r.string("mode") }
        return out
    }

    func setSettings(userID: String, _ modes: [String: String]) async throws {
        try await db.write { tx in
            for (kind, mode) in modes {
                try tx.run(
                    """
                    INSERT INTO notification_settings (user_id, kind, mode) VALUES (?, ?, ?)
                    ON CONFLICT (user_id, kind) DO UPDATE SET mode = excluded.mode
                    """, userID, kind, mode)
            }
        }
    }

    /// (user, kind) pairs with mail waiting whose last mail is older than `before` (or never sent).
    func mailDue(before: Date) async throws -> [(String, String)] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT DISTINCT n.user_id, n.kind FROM notifications n
                LEFT JOIN notification_settings s ON s.user_id = n.user_id AND s.kind = n.kind
                WHERE n.mail_pending = 1 AND (s.mailed_at IS NULL OR s.mailed_at <= ?) LIMIT 500
                """, before)
        }.map { ($0.string("user_id") ?? "", $0.string("kind") ?? "") }
    }

    /// Takes the pending mail of (user, kind) if its last mail is older than `before`: the
    /// notifications to put in one mail (none when another sender took them or it is too soon).
    func takeMail(userID: String, kind: String, before: Date, at now: Date) async throws -> [Row] {
        try await db.write { tx in
            let last = try tx.first(
                "SELECT mailed_at FROM notification_settings WHERE user_id = ? AND kind = ?", userID, kind)?.date(
                    "mailed_at")
            if let last, last > before { return [] }
            let rows = try tx.query(
                """
                SELECT * FROM notifications WHERE user_id = ? AND kind = ? AND mail_pending = 1
                ORDER BY created_at LIMIT 100
                """, userID, kind)
            guard !rows.isEmpty else { return [] }
            try tx.run(
                "UPDATE notifications SET mail_pending = 0 WHERE user_id = ? AND kind = ? AND mail_pending = 1",
                userID, kind)
            try tx.run(
                """
                INSERT INTO notification_settings (user_id, kind, mode, mailed_at) VALUES (?, ?, 'email', ?)
                ON CONFLICT (user_id, kind) DO UPDATE SET mailed_at = excluded.mailed_at
                """, userID, kind, now)
            return rows
        }
    }

    /// Notifications older than `before` go (read or not, they are history by then).
    func purgeNotifications(before: Date) async throws -> Int {
        try await db.write { tx in try tx.run("DELETE FROM notifications WHERE created_at < ?", before) }
    }

    /// A deleted workspace's share links, invitations, activity, notifications and reviews.
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM share_links WHERE ws_id = ?", wsID)
        try tx.run("DELETE FROM ws_invitations WHERE ws_id = ?", wsID)
        try tx.run("DELETE FROM activity WHERE ws_id = ?", wsID)
        try tx.run("DELETE FROM notifications WHERE ws_id = ?", wsID)
        for table in ["review_comments", "review_reviewers"] {
            try tx.run("DELETE FROM \(table) WHERE review_id IN (SELECT id FROM reviews WHERE ws_id = ?)", wsID)
        }
        try tx.run("DELETE FROM reviews WHERE ws_id = ?", wsID)
    }

    func purgeUser(_ tx: Transaction, userID: String) throws {
        try tx.run("DELETE FROM notifications WHERE user_id = ?", userID)
        try tx.run("DELETE FROM notification_settings WHERE user_id = ?", userID)
        try tx.run("DELETE FROM review_reviewers WHERE user_id = ?", userID)
    }

    // MARK: Invitations

    func insertInvitation(
        _ tx: Transaction, id: String, wsID: String, email: String, role: String, tokenHash: String, by: String,
        at now: Date, expires: Date
    ) throws {
        // A new invitation of the same address replaces a pending one.
        try tx.run(
            """
            UPDATE ws_invitations SET revoked_at = ?
            WHERE ws_id = ? AND email = ? AND accepted_at IS NULL AND revoked_at IS NULL
            """, now, wsID, email)
        try tx.run(
            """
            INSERT INTO ws_invitations (id, ws_id, email, role, token_hash, invited_by, created_at, expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, id, wsID, email, role, tokenHash, by, now, expires)
    }

    /// Invitations made in the workspace since `since` (a cap on how many mails a workspace sends).
    func invitationsMade(wsID: String, since: Date) async throws -> Int {
        try await db.read { tx in
            try tx.first(
                "SELECT COUNT(*) AS n FROM ws_invitations WHERE ws_id = ? AND created_at > ?", wsID, since)?.int("n")
                ?? 0
        }
    }

    func invitations(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                "SELECT * FROM ws_invitations WHERE ws_id = ? ORDER BY created_at DESC, id DESC LIMIT 500", wsID)
        }
    }

    func invitation(id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM ws_invitations WHERE id = ?", id) }
    }

    func invitation(tokenHash: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM ws_invitations WHERE token_hash = ?", tokenHash) }
    }

    func invitationWorkspace(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM ws_invitations WHERE id = ?", id)?.string("ws_id") }
    }

    func revokeInvitation(_ tx: Transaction, _ id: String, at now: Date) throws -> Bool {
        try tx.run(
            "UPDATE ws_invitations SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL AND accepted_at IS NULL",
            now, id) > 0
    }

    /// Claims a pending, unexpired invitation for one acceptance (false: used, revoked or expired).
    func claimInvitation(_ id: String, at now: Date) async throws -> Bool {
        try await db.write { tx in
            try tx.run(
                """
                UPDATE ws_invitations SET accepted_at = ?
                WHERE id = ? AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > ?
                """, now, id, now) > 0
        }
    }

    func unclaimInvitation(_ id: String) async throws {
        _ = try await db.write { tx in try tx.run("UPDATE ws_invitations SET accepted_at = NULL WHERE id = ?", id) }
    }

    func setInvitationAccepted(_ tx: Transaction, _ id: String, by userID: String) throws {
        try tx.run("UPDATE ws_invitations SET accepted_by = ? WHERE id = ?", userID, id)
    }

    // MARK: Reviews

    func insertReview(
        _ tx: Transaction, id: String, wsID: String, subject: String, note: String, by: String, reviewers: [String],
        at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO reviews (id, ws_id, subject, note, requested_by, state, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, 'open', ?, ?)
            """, id, wsID, subject, note, by, now, now)
        for r in reviewers {
            try tx.run("INSERT INTO review_reviewers (review_id, user_id) VALUES (?, ?)", id, r)
        }
    }

    func reviews(wsID: String, state: String?, before cursor: String?, limit: Int) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT * FROM reviews WHERE ws_id = ? AND (? IS NULL OR state = ?) AND (? IS NULL OR id < ?)
                ORDER BY id DESC LIMIT ?
                """, wsID, state, state, cursor, cursor, limit)
        }
    }

    func review(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM reviews WHERE id = ?", id) }
    }

    func reviewers(_ id: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM review_reviewers WHERE review_id = ? ORDER BY user_id", id)
        }
    }

    func comments(_ id: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query("SELECT * FROM review_comments WHERE review_id = ? ORDER BY created_at, id LIMIT 2000", id)
        }
    }

    func insertComment(
        _ tx: Transaction, id: String, reviewID: String, userID: String, body: String, path: String?, line: Int?,
        mentions: String, at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO review_comments (id, review_id, user_id, body, path, line, mentions, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, id, reviewID, userID, body, path, line, mentions, now)
        try tx.run("UPDATE reviews SET updated_at = ? WHERE id = ?", now, reviewID)
    }

    /// Records a reviewer's verdict and recomputes the review's state: changes requested by anyone
    /// wins, else approved once someone approved, else open. Returns the new state.
    func setVerdict(
        _ tx: Transaction, reviewID: String, userID: String, verdict: String, at now: Date
    ) throws
        -> String
    {
        try tx.run(
            "UPDATE review_reviewers SET verdict = ?, decided_at = ? WHERE review_id = ? AND user_id = ?", verdict, now,
            reviewID, userID)
        let verdicts = try tx.query("SELECT verdict FROM review_reviewers WHERE review_id = ?", reviewID).compactMap {
            $0.string("verdict")
        }
        let state =
            verdicts.contains("request_changes")
            ? "changes_requested" : verdicts.contains("approve") ? "approved" : "open"
        try tx.run("UPDATE reviews SET state = ?, updated_at = ? WHERE id = ?", state, now, reviewID)
        return state
    }

    func reviewWorkspace(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM reviews WHERE id = ?", id)?.string("ws_id") }
    }
}
