import Foundation

/// The limits of Kiln's MCP server.
enum MCPLimits {
    /// A request body (edit_file and write_file carry file contents up to 4 MiB).
    static let maxRequestBytes = 8 << 20
}
