import Foundation
import KilnCore
import KilnHTTP

/// A job as the API shows it.
public struct ShellJob: Codable, Sendable, NullEncoding {
    public let id: String
    public let jobId: String
    public let wsId: String
    public let projectId: String?
    public let userId: String
    public let kind: String
    public let command: String
    public let cwd: String
    public let host: String?
    public let status: String
    public let pid: Int?
    public let exitCode: Int?
    public let signal: Int?
    public let startedAt: Date
    public let endedAt: Date?
    public let durationMs: Int?
    public let summary: JSONValue?
    public let stdoutBytes: Int
    public let stderrBytes: Int
}

/// `POST /api/shell/run`.
struct RunInput: Codable, Sendable {
    var projectId: String?
    let command: String
    let cwd: String?
    let env: [String: String]?
    let timeoutS: Double?
    /// Secrets by name, put into the environment (their values redacted from the output).
    let secrets: [String]?
}

/// `POST /api/shell/test`.
struct TestInput: Codable, Sendable {
    let projectId: String?
    let timeoutS: Double?
}

/// `PUT /api/shell/settings`: null clears the saved command.
struct SettingsInput: Decodable, Sendable {
    let projectId: String?
    let testCommand: String?
}

/// `POST /api/shell/ssh-run`.
struct SSHRunInput: Codable, Sendable {
    let host: String
    let command: String
    let timeoutS: Double?
}

/// `POST /api/shell/ssh-pull`.
struct SSHPullInput: Codable, Sendable {
    let host: String
    let remotePath: String
    var projectId: String?
    let destPath: String
}

/// A started job, for clients that asked for JSON instead of its event stream.
struct JobStarted: Decodable {
    let jobId: String
    let status: String
    let eventsUrl: String
}
