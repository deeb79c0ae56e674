import Foundation
import KilnCore
import KilnHTTP

/// `POST /api/pty/spawn` (every field optional).
struct SpawnInput: Codable, Sendable {
    var wsId: String?
    var projectId: String?
    let cols: Int?
    let rows: Int?
    let shell: String?
    let cwd: String?
    /// Secrets by name, put into the shell's environment (their values redacted from its output).
    let secrets: [String]?
}

/// A terminal as `POST /api/pty/spawn` answers it.
struct SpawnedTerminal: Decodable {
    let id: String
    let wsUrl: String
    let wsPath: String
    let status: String
}
