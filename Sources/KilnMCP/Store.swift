import Foundation
import KilnCore
import KilnStore

/// The MCP domain's SQL: registered servers, the tools each last listed, and sealed credentials.
struct MCPStore: Sendable {
    let db: Database

    // MARK: Servers

    func servers(wsID: String) async throws -> [Row] {
        try await db.read { tx in try tx.query("SELECT * FROM mcp_servers WHERE ws_id = ? ORDER BY name", wsID) }
    }

    func server(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM mcp_servers WHERE id = ?", id) }
    }

    func server(_ tx: Transaction, wsID: String, name: String) throws -> Row? {
        try tx.first("SELECT * FROM mcp_servers WHERE ws_id = ? AND name = ?", wsID, name)
    }

    func insertServer(
        _ tx: Transaction, _ s: ServerFields, id: String, wsID: String, userID: String, at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO mcp_servers (id, ws_id, name, transport, url, command, args, env_names, token_id, enabled,
                timeout_s, created_at, created_by, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, id, wsID, s.name, s.transport, s.url, s.command, s.argsJSON, s.envNamesJSON, s.tokenID, s.enabled,
            s.timeout, now, userID, now)
    }

    func updateServer(_ tx: Transaction, _ s: ServerFields, id: String, at now: Date) throws {
        try tx.run(
            """
            UPDATE mcp_servers SET name = ?, transport = ?, url = ?, command = ?, args = ?, env_names = ?, token_id = ?,
                enabled = ?, timeout_s = ?, updated_at = ? WHERE id = ?
            """, s.name, s.transport, s.url, s.command, s.argsJSON, s.envNamesJSON, s.tokenID, s.enabled, s.timeout,
            now,
            id)
    }

    func deleteServer(_ tx: Transaction, _ id: String) throws -> Bool {
        try tx.run("DELETE FROM mcp_tools WHERE server_id = ?", id)
        return try tx.run("DELETE FROM mcp_servers WHERE id = ?", id) > 0
    }

    func serverCount(_ tx: Transaction, wsID: String) throws -> Int {
        try tx.first("SELECT COUNT(*) AS n FROM mcp_servers WHERE ws_id = ?", wsID)?.int("n") ?? 0
    }

    func workspaceOfToken(_ tx: Transaction, _ id: String) throws -> String? {
        try tx.first("SELECT ws_id FROM mcp_tokens WHERE id = ?", id)?.string("ws_id")
    }

    func workspaceOfServer(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM mcp_servers WHERE id = ?", id)?.string("ws_id") }
    }

    /// Replaces the server's tools with what it listed now.
    func replaceTools(_ serverID: String, _ tools: [RemoteTool], version: String, at now: Date) async throws {
        _ = try await db.write { tx in
            try tx.run("DELETE FROM mcp_tools WHERE server_id = ?", serverID)
            for t in tools {
                try tx.run(
                    """
                    INSERT INTO mcp_tools (server_id, name, description, input_schema, output_schema)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                    serverID, t.name, t.description, t.inputSchema.jsonText, t.outputSchema?.jsonText)
            }
            try tx.run(
                "UPDATE mcp_servers SET protocol_version = ?, refreshed_at = ?, last_error = NULL WHERE id = ?",
                version,
                now, serverID)
        }
    }

    func setError(_ serverID: String, _ error: String) async throws {
        _ = try await db.write { tx in
            try tx.run("UPDATE mcp_servers SET last_error = ? WHERE id = ?", error, serverID)
        }
    }

    /// Every stored tool of the workspace's servers, with its server's name and state.
    func tools(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                """
                SELECT t.*, s.name AS server_name, s.enabled AS server_enabled FROM mcp_tools t
                JOIN mcp_servers s ON s.id = t.server_id WHERE s.ws_id = ? ORDER BY s.name, t.name
                """, wsID)
        }
    }

    func toolCount(_ serverID: String) async throws -> Int {
        try await db.read { tx in
            try tx.first("SELECT COUNT(*) AS n FROM mcp_tools WHERE server_id = ?", serverID)?.int("n") ?? 0
        }
    }

    // MARK: Tokens

    func tokens(wsID: String) async throws -> [Row] {
        try await db.read { tx in
            try tx.query(
                "SELECT id, ws_id, name, kind, created_at, created_by FROM mcp_tokens WHERE ws_id = ? ORDER BY name",
                wsID)
        }
    }

    func token(_ id: String) async throws -> Row? {
        try await db.read { tx in try tx.first("SELECT * FROM mcp_tokens WHERE id = ?", id) }
    }

    func sealedToken(_ tx: Transaction, _ id: String) throws -> [UInt8]? {
        try tx.first("SELECT sealed FROM mcp_tokens WHERE id = ?", id)?.blob("sealed")
    }

    func insertToken(
        _ tx: Transaction, id: String, wsID: String, name: String, kind: String, sealed: [UInt8], userID: String,
        at now: Date
    ) throws {
        try tx.run(
            """
            INSERT INTO mcp_tokens (id, ws_id, name, kind, sealed, created_at, created_by)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """,
            id, wsID, name, kind, sealed, now, userID)
    }

    func tokenNamed(_ tx: Transaction, wsID: String, name: String) throws -> Row? {
        try tx.first("SELECT id FROM mcp_tokens WHERE ws_id = ? AND name = ?", wsID, name)
    }

    func deleteToken(_ tx: Transaction, _ id: String) throws -> Bool {
        try tx.run("UPDATE mcp_servers SET token_id = NULL WHERE token_id = ?", id)
        return try tx.run("DELETE FROM mcp_tokens WHERE id = ?", id) > 0
    }

    func workspaceOfToken(_ id: String) async throws -> String? {
        try await db.read { tx in try tx.first("SELECT ws_id FROM mcp_tokens WHERE id = ?", id)?.string("ws_id") }
    }

    func sealedTokens(_ tx: Transaction) throws -> [Row] { try tx.query("SELECT id, sealed FROM mcp_tokens") }

    func setSealed(_ tx: Transaction, _ id: String, _ sealed: [UInt8]) throws {
        try tx.run("UPDATE mcp_tokens SET sealed = ? WHERE id = ?", sealed, id)
    }

    /// A deleted workspace's registered servers, their tools and its sealed credentials.
    func purgeWorkspace(_ tx: Transaction, _ wsID: String) throws {
        try tx.run("DELETE FROM mcp_tools WHERE server_id IN (SELECT id FROM mcp_servers WHERE ws_id = ?)", wsID)
        try tx.run("DELETE FROM mcp_servers WHERE ws_id = ?", wsID)
        try tx.run("DELETE FROM mcp_tokens WHERE ws_id = ?", wsID)
    }
}
