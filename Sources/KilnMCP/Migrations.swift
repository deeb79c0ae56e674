import KilnStore

enum MCPMigrations {
    static let all = [
        Migration(
            module: "mcp", version: 1, name: "external MCP servers, their tools and credentials",
            sql: """
                CREATE TABLE mcp_servers (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    transport TEXT NOT NULL,
                    url TEXT,
                    command TEXT,
                    args TEXT NOT NULL DEFAULT '[]',
                    env_names TEXT NOT NULL DEFAULT '[]',
                    token_id TEXT,
                    enabled INTEGER NOT NULL DEFAULT 1,
                    timeout_s INTEGER NOT NULL DEFAULT 30,
                    protocol_version TEXT,
                    refreshed_at INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    created_by TEXT,
                    updated_at INTEGER NOT NULL,
                    UNIQUE (ws_id, name)
                );
                CREATE TABLE mcp_tools (
                    server_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    description TEXT,
                    input_schema TEXT NOT NULL,
                    output_schema TEXT,
                    PRIMARY KEY (server_id, name)
                );
                CREATE TABLE mcp_tokens (
                    id TEXT PRIMARY KEY,
                    ws_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    sealed BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    created_by TEXT,
                    UNIQUE (ws_id, name)
                );
                """)
    ]
}
