import KilnStore

enum PTYMigrations {
    static let all = [
        Migration(
            module: "pty", version: 1, name: "which instance holds each terminal",
            sql: """
                CREATE TABLE pty_terminals (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    instance_id TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    ended_at INTEGER
                );
                """)
    ]
}
