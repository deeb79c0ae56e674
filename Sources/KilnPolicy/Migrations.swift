import KilnStore

enum PolicyMigrations {
    static let all = [
        Migration(
            module: "policy", version: 1, name: "policy documents and their versions",
            sql: """
                CREATE TABLE policy_versions (
                    ws_id TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    document TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    created_by TEXT,
                    PRIMARY KEY (ws_id, version)
                );
                """)
    ]
}
