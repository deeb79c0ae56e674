import KilnStore

enum BudgetMigrations {
    static let all = [
        Migration(
            module: "budget", version: 1, name: "usage ledger and caps",
            sql: """
                CREATE TABLE budget_usage (
                    run_id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    model TEXT NOT NULL,
                    day TEXT NOT NULL,
                    input_tokens INTEGER NOT NULL,
                    output_tokens INTEGER NOT NULL,
                    steps INTEGER NOT NULL,
                    cost_usd_micros INTEGER NOT NULL,
                    ended INTEGER NOT NULL DEFAULT 0,
                    updated_at INTEGER NOT NULL
                );
                CREATE INDEX budget_usage_by_day ON budget_usage (ws_id, day);
                CREATE TABLE budget_limits (
                    ws_id TEXT PRIMARY KEY,
                    daily_usd_micros INTEGER,
                    monthly_usd_micros INTEGER,
                    per_run_usd_micros INTEGER,
                    updated_at INTEGER NOT NULL
                );
                """)
    ]
}
