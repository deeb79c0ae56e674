import KilnStore

enum CollabMigrations {
    static let all = [
        Migration(
            module: "collab", version: 1, name: "share links",
            sql: """
                CREATE TABLE share_links (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    subject_type TEXT NOT NULL,
                    subject_id TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    password_hash TEXT,
                    created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    revoked_at INTEGER,
                    views INTEGER NOT NULL DEFAULT 0,
                    first_viewed_at INTEGER
                );
                CREATE INDEX share_links_by_ws ON share_links (ws_id, created_at);
                """),
        Migration(
            module: "collab", version: 2, name: "activity, notifications, invitations, reviews",
            sql: """
                CREATE TABLE activity (
                    ws_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    actor TEXT,
                    project_id TEXT,
                    item TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (ws_id, seq)
                ) WITHOUT ROWID;
                CREATE TABLE notifications (
                    id TEXT PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    ws_id TEXT,
                    kind TEXT NOT NULL,
                    title TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    actor TEXT,
                    created_at INTEGER NOT NULL,
                    read_at INTEGER,
                    mail_pending INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX notifications_by_user ON notifications (user_id, created_at);
                CREATE INDEX notifications_mail ON notifications (mail_pending, user_id, kind) WHERE mail_pending = 1;
                CREATE TABLE notification_settings (
                    user_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    mode TEXT NOT NULL,
                    mailed_at INTEGER,
                    PRIMARY KEY (user_id, kind)
                ) WITHOUT ROWID;
                CREATE TABLE ws_invitations (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    email TEXT NOT NULL,
                    role TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    invited_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    accepted_at INTEGER,
                    accepted_by TEXT,
                    revoked_at INTEGER
                );
                CREATE INDEX ws_invitations_by_ws ON ws_invitations (ws_id, created_at);
                CREATE TABLE reviews (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    note TEXT NOT NULL,
                    requested_by TEXT NOT NULL,
                    state TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE INDEX reviews_by_ws ON reviews (ws_id, state, created_at);
                CREATE TABLE review_reviewers (
                    review_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    verdict TEXT,
                    decided_at INTEGER,
                    PRIMARY KEY (review_id, user_id)
                ) WITHOUT ROWID;
                CREATE TABLE review_comments (
                    id TEXT PRIMARY KEY,
                    review_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    body TEXT NOT NULL,
                    path TEXT,
                    line INTEGER,
                    mentions TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                );
                CREATE INDEX review_comments_by_review ON review_comments (review_id, created_at);
                ALTER TABLE share_links ADD COLUMN subject_path TEXT;
                ALTER TABLE share_links ADD COLUMN snapshot TEXT;
                """),
    ]
}
