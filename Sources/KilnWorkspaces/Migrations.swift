import KilnStore

enum WorkspaceMigrations {
    static let all = [
        Migration(
            module: "workspaces", version: 1, name: "workspaces and memberships",
            sql: """
                CREATE TABLE workspaces (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE TABLE memberships (
                    ws_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
                    user_id TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (ws_id, user_id)
                );
                CREATE INDEX memberships_by_user ON memberships (user_id);
                """)
    ]
}
