import KilnStore

enum AuthMigrations {
    static let all = [
        Migration(module: "auth", version: 1, name: "users and setup tokens", sql: """
            CREATE TABLE users (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE COLLATE NOCASE,
                name TEXT NOT NULL,
                password_hash TEXT,
                email_verified INTEGER NOT NULL DEFAULT 0,
                is_owner INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE TABLE setup_tokens (
                token_hash TEXT PRIMARY KEY,
                purpose TEXT NOT NULL CHECK (purpose IN ('owner', 'user')),
                user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER
            );
            """),
    ]
}
