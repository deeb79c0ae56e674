import KilnStore

enum ProjectMigrations {
    static var all: [Migration] { base + [index, ownIndex, symbolTable] }
    static let base = [
        Migration(
            module: "projects", version: 1, name: "projects and recent opens",
            sql: """
                CREATE TABLE projects (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    path TEXT NOT NULL,
                    vcs TEXT NOT NULL,
                    git_url TEXT,
                    created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    index_status TEXT NOT NULL DEFAULT 'not_indexed',
                    indexed_at INTEGER,
                    UNIQUE (ws_id, path)
                );
                CREATE TABLE project_opens (
                    user_id TEXT NOT NULL,
                    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
                    ws_id TEXT NOT NULL,
                    opened_at INTEGER NOT NULL,
                    PRIMARY KEY (user_id, project_id)
                );
                CREATE INDEX project_opens_recent ON project_opens (user_id, opened_at);
                """)
    ]
}

extension ProjectMigrations {
    static let index = Migration(
        module: "projects", version: 2, name: "file index, symbols, findings, rescan jobs",
        sql: """
            CREATE TABLE project_files (
                project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
                path TEXT NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                hash TEXT,
                binary INTEGER NOT NULL,
                fts_rowid INTEGER,
                PRIMARY KEY (project_id, path)
            );
            CREATE VIRTUAL TABLE project_fts USING fts5(project_id UNINDEXED, path UNINDEXED, content, tokenize = 'trigram');
            CREATE TABLE project_symbols (
                project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
                path TEXT NOT NULL,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                line INTEGER NOT NULL,
                scope TEXT,
                language TEXT NOT NULL
            );
            CREATE INDEX project_symbols_by_file ON project_symbols (project_id, path);
            CREATE TABLE project_findings (
                project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
                path TEXT NOT NULL,
                line INTEGER NOT NULL,
                rule TEXT NOT NULL,
                severity TEXT NOT NULL,
                message TEXT NOT NULL,
                excerpt TEXT NOT NULL
            );
            CREATE INDEX project_findings_by_file ON project_findings (project_id, path);
            CREATE TABLE project_rescans (
                id TEXT PRIMARY KEY,
                project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
                ws_id TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at INTEGER NOT NULL,
                finished_at INTEGER,
                stats TEXT
            );
            """)

    /// Kiln's own trigram index (files under `<data-dir>/index/<project>`) replaces FTS5: every
    /// project is re-indexed once after this migration.
    static let ownIndex = Migration(
        module: "projects", version: 3, name: "own trigram index replaces FTS5; symbols by name",
        sql: """
            DROP TABLE project_fts;
            ALTER TABLE project_files DROP COLUMN fts_rowid;
            DELETE FROM project_files;
            DELETE FROM project_symbols;
            DELETE FROM project_findings;
            UPDATE projects SET index_status = 'not_indexed', indexed_at = NULL;
            CREATE INDEX project_symbols_by_name ON project_symbols (project_id, name);
            """)

    /// Symbols move to each project's own table file (`SymbolTable`); the next rescan of every
    /// project extracts them again (its trigram index stays).
    static let symbolTable = Migration(
        module: "projects", version: 4, name: "symbols move to the index folder",
        sql: """
            DROP TABLE project_symbols;
            UPDATE projects SET index_status = 'not_indexed', indexed_at = NULL;
            """)
}
