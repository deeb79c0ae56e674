import Foundation
import KilnCore
import KilnHTTP

/// The limits of Kiln's MCP server.
enum MCPLimits {
    /// A request body (edit_file and write_file carry file contents up to 4 MiB).
    static let maxRequestBytes = 8 << 20
}

extension MCPLimits {
    static let maxServersPerWorkspace = 100
    static let maxToolsPerServer = 1000
    static let maxPages = 50
    static let defaultTimeout = 30
}

/// A tool an external server listed.
struct RemoteTool: Sendable {
    let name: String
    let description: String?
    let inputSchema: JSONValue
    let outputSchema: JSONValue?
}

/// A server's settings, checked, as stored.
struct ServerFields: Sendable {
    var name: String
    var transport: String
    var url: String?
    var command: String?
    var args: [String]
    var envNames: [String]
    var tokenID: String?
    var enabled: Bool
    var timeout: Int

    var argsJSON: String { JSONValue.array(args.map { .string($0) }).jsonText }
    var envNamesJSON: String { JSONValue.array(envNames.map { .string($0) }).jsonText }
}

/// `POST /api/mcp/servers` and `PATCH /api/mcp/servers/:server_id` (absent fields stay as they are).
struct ServerInput: Decodable, Sendable {
    let wsId: String?
    let name: String?
    let transport: String?
    let url: String?
    let command: String?
    let args: [String]?
    let envNames: [String]?
    let tokenId: String?
    let enabled: Bool?
    let timeoutS: Int?
}

/// `POST /api/mcp/tokens`: a bearer token, or header pairs.
struct TokenInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "name"]
    let wsId: String?
    let name: String
    let token: String?
    let headers: [String: String]?
}

/// `POST /api/mcp`: a tool of the catalogue and its arguments.
struct InvokeInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "tool"]
    let wsId: String?
    let tool: String
    let arguments: JSONValue?
}
