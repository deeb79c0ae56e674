import KilnStore

enum BrowserMigrations {
    static let all = [
        Migration(
            module: "browser", version: 1, name: "allowlists, runs, screenshots",
            sql: """
                CREATE TABLE browser_allowlist (
                    ws_id TEXT NOT NULL,
                    position INTEGER NOT NULL,
                    pattern TEXT NOT NULL,
                    note TEXT NOT NULL,
                    PRIMARY KEY (ws_id, position)
                ) WITHOUT ROWID;
                CREATE TABLE browser_runs (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    url TEXT NOT NULL,
                    status TEXT NOT NULL,
                    result TEXT,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    ended_at INTEGER
                );
                CREATE INDEX browser_runs_by_ws ON browser_runs (ws_id, created_at);
                CREATE TABLE browser_shots (
                    id TEXT PRIMARY KEY,
                    run_id TEXT NOT NULL REFERENCES browser_runs(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    width INTEGER NOT NULL,
                    height INTEGER NOT NULL,
                    bytes INTEGER NOT NULL,
                    created_at INTEGER NOT NULL
                );
                CREATE INDEX browser_shots_by_run ON browser_shots (run_id, created_at);
                """),
        Migration(
            module: "browser", version: 2, name: "the instance holding each run",
            sql: "ALTER TABLE browser_runs ADD COLUMN instance_id TEXT"),
    ]
}
