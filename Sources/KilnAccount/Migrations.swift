import KilnStore

enum AccountMigrations {
    static let all = [
        Migration(
            module: "account", version: 1, name: "api keys",
            sql: """
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY,
                    user_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    prefix TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    last_used_at INTEGER,
                    last_used_ip TEXT,
                    revoked_at INTEGER
                );
                CREATE INDEX api_keys_by_user ON api_keys (user_id);
                """)
    ]
}
