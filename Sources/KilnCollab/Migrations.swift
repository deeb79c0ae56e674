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
                """)
    ]
}
