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
                """),
        Migration(
            module: "policy", version: 2, name: "approvals of parked actions",
            sql: """
                CREATE TABLE approvals (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    action TEXT NOT NULL,
                    context TEXT NOT NULL,
                    rule_id TEXT,
                    reason TEXT,
                    self_approval INTEGER NOT NULL DEFAULT 0,
                    requested_by TEXT NOT NULL,
                    run_id TEXT,
                    call_id TEXT,
                    state TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    decided_by TEXT,
                    decided_at INTEGER,
                    decision_reason TEXT,
                    resume_kind TEXT,
                    resume_payload TEXT,
                    resume_grants TEXT,
                    result TEXT,
                    redeemed_at INTEGER
                );
                CREATE INDEX approvals_by_ws ON approvals (ws_id, created_at);
                CREATE INDEX approvals_by_state ON approvals (state, expires_at);
                """),
        Migration(
            module: "policy", version: 3, name: "the instance where each parked action waits",
            sql: "ALTER TABLE approvals ADD COLUMN instance_id TEXT"),
    ]
}
