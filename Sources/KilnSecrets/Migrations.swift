import KilnStore

enum SecretsMigrations {
    static let all = [
        Migration(
            module: "secrets", version: 1, name: "secrets and their versions",
            sql: """
                CREATE TABLE secrets (
                    ws_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    updated_by TEXT,
                    expires_at INTEGER,
                    last_used_at INTEGER,
                    PRIMARY KEY (ws_id, name)
                );
                CREATE TABLE secret_versions (
                    ws_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    key_id TEXT NOT NULL,
                    wrapped_key BLOB NOT NULL,
                    ciphertext BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    created_by TEXT,
                    expires_at INTEGER,
                    PRIMARY KEY (ws_id, name, version)
                );
                """)
    ]
}
