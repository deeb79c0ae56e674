import KilnStore

enum NotebookMigrations {
    static let all = [
        Migration(
            module: "notebooks", version: 1, name: "notebook ids for project paths",
            sql: """
                CREATE TABLE notebooks (
                    id TEXT PRIMARY KEY,
                    project_id TEXT NOT NULL,
                    path TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_run_at INTEGER,
                    UNIQUE (project_id, path)
                );
                """),
        Migration(
            module: "notebooks", version: 2, name: "the instance holding each notebook's kernel",
            sql: """
                CREATE TABLE notebook_kernels (
                    nb_id TEXT PRIMARY KEY,
                    instance_id TEXT NOT NULL,
                    started_at INTEGER NOT NULL
                );
                """),
    ]
}
