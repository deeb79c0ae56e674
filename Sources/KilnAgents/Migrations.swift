import KilnStore

enum AgentMigrations {
    static let all = [
        Migration(
            module: "agents", version: 1, name: "runs, transcripts, tool calls, snapshots, findings, prefs",
            sql: """
                CREATE TABLE agent_runs (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    project_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    prompt TEXT NOT NULL,
                    model TEXT NOT NULL,
                    provider TEXT NOT NULL,
                    status TEXT NOT NULL,
                    max_steps INTEGER NOT NULL,
                    steps INTEGER NOT NULL DEFAULT 0,
                    input_tokens INTEGER NOT NULL DEFAULT 0,
                    output_tokens INTEGER NOT NULL DEFAULT 0,
                    summary TEXT,
                    error TEXT,
                    reason TEXT,
                    started_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    rolled_back_at INTEGER
                );
                CREATE INDEX agent_runs_by_ws ON agent_runs (ws_id, started_at);
                CREATE INDEX agent_runs_by_user ON agent_runs (user_id, started_at);
                CREATE TABLE agent_messages (
                    run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    role TEXT NOT NULL,
                    content TEXT NOT NULL,
                    tool_calls TEXT,
                    tool_call_id TEXT,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (run_id, seq)
                );
                CREATE TABLE agent_tool_calls (
                    run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                    call_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    tool TEXT NOT NULL,
                    args TEXT NOT NULL,
                    ok INTEGER NOT NULL,
                    output TEXT NOT NULL,
                    PRIMARY KEY (run_id, seq)
                );
                CREATE TABLE agent_snapshots (
                    run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                    path TEXT NOT NULL,
                    existed INTEGER NOT NULL,
                    file TEXT,
                    sha_before TEXT,
                    sha_after TEXT,
                    PRIMARY KEY (run_id, path)
                );
                CREATE TABLE agent_findings (
                    run_id TEXT NOT NULL REFERENCES agent_runs(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    path TEXT NOT NULL,
                    line INTEGER NOT NULL,
                    claim TEXT NOT NULL,
                    evidence TEXT NOT NULL,
                    PRIMARY KEY (run_id, seq)
                );
                CREATE TABLE agent_prefs (
                    scope TEXT NOT NULL,
                    scope_id TEXT NOT NULL,
                    prefs TEXT NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (scope, scope_id)
                );
                """),
        Migration(
            module: "agents", version: 2, name: "the instance running each run",
            sql: "ALTER TABLE agent_runs ADD COLUMN instance_id TEXT"),
    ]
}
