import KilnStore

enum ShellMigrations {
    static let all = [
        Migration(
            module: "shell", version: 1, name: "shell jobs and settings",
            sql: """
                CREATE TABLE shell_jobs (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    project_id TEXT,
                    user_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    command TEXT NOT NULL,
                    cwd TEXT NOT NULL,
                    host TEXT,
                    status TEXT NOT NULL,
                    pid INTEGER,
                    exit_code INTEGER,
                    signal INTEGER,
                    started_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    duration_ms INTEGER,
                    summary TEXT,
                    stdout_tail BLOB,
                    stderr_tail BLOB,
                    stdout_bytes INTEGER NOT NULL DEFAULT 0,
                    stderr_bytes INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX shell_jobs_by_project ON shell_jobs (project_id, started_at);
                CREATE INDEX shell_jobs_by_user ON shell_jobs (user_id, started_at);
                CREATE TABLE shell_settings (
                    project_id TEXT PRIMARY KEY,
                    test_command TEXT,
                    updated_at INTEGER NOT NULL
                );
                """),
        Migration(
            module: "shell", version: 2, name: "the instance running each job",
            sql: "ALTER TABLE shell_jobs ADD COLUMN instance_id TEXT"),
    ]
}
