import KilnStore

enum ReceiptMigrations {
    static let all = [
        Migration(
            module: "receipts", version: 1, name: "receipt chains",
            sql: """
                CREATE TABLE receipts (
                    ws_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    run_id TEXT NOT NULL UNIQUE,
                    body TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    signature TEXT NOT NULL,
                    evidence TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (ws_id, seq)
                );
                """)
    ]
}
