import Foundation
import KilnHTTP

/// What to run as a job.
public struct JobSpec: Sendable {
    public var wsID: String
    public var projectID: String?
    public var userID: String
    public var kind: String
    public var command: String
    /// The argv to execute (default: `/bin/sh -c command`).
    public var argv: [String]?
    /// The real working directory (already path-checked).
    public var cwd: String
    /// The cwd as shown (relative to the project).
    public var displayCwd: String
    public var env: [String: String]
    public var timeout: Double
    public var host: String?
    /// A Kiln tool (ssh) rather than user code: runs outside the sandbox, with a built environment.
    public var isKilnTool: Bool
    /// Secrets put into the environment by name; their values are redacted from the output.
    public var secrets: [SecretValue]
    /// Who acts, for policies: `user`, `api_key`, or `agent` (whose tool call was judged already).
    public var actorKind: String
    /// Approvals this very job was given (a `require_approval` rule lets it through once approved).
    public var grants: [PolicyGrant] = []

    public init(
        wsID: String, projectID: String?, userID: String, kind: String, command: String, argv: [String]? = nil,
        cwd: String, displayCwd: String, env: [String: String] = [:], timeout: Double, host: String? = nil,
        isKilnTool: Bool = false, secrets: [SecretValue] = [], actorKind: String = "user"
    ) {
        self.isKilnTool = isKilnTool
        self.secrets = secrets
        self.actorKind = actorKind
        self.wsID = wsID
        self.projectID = projectID
        self.userID = userID
        self.kind = kind
        self.command = command
        self.argv = argv
        self.cwd = cwd
        self.displayCwd = displayCwd
        self.env = env
        self.timeout = timeout
        self.host = host
    }
}

/// How a job ended.
public struct JobOutcome: Sendable {
    public let status: String
    public let exitCode: Int?
    public let signal: Int?
    public let durationMs: Int
    /// The kept tails of the output (the last megabyte of each stream).
    public let stdout: [UInt8]
    public let stderr: [UInt8]

    public init(status: String, exitCode: Int?, signal: Int?, durationMs: Int, stdout: [UInt8], stderr: [UInt8]) {
        self.status = status
        self.exitCode = exitCode
        self.signal = signal
        self.durationMs = durationMs
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// A project's test command: saved, or found from its files.
public struct TestCommand: Sendable, Equatable {
    public let runner: String
    public let command: String
    public init(runner: String, command: String) {
        self.runner = runner
        self.command = command
    }
}

/// Starts and follows jobs (implemented by the shell domain; agents run their commands through it).
public protocol JobLauncher: Sendable {
    /// Starts a job; returns its id once its `started` event is stored.
    func start(_ spec: JobSpec) async throws -> String
    /// Starts the project's test command as a job whose exit event carries a summary.
    func startTests(
        project: ProjectRef, userID: String, timeout: Double, secrets: [SecretValue], actorKind: String
    ) async throws -> String
    /// Waits for a job this process runs; nil when it is not running here.
    func wait(_ jobID: String) async -> JobOutcome?
    /// Stops a job (SIGTERM, SIGKILL after `grace` seconds); false when it is not running.
    @discardableResult
    func cancel(_ jobID: String, grace: Double?) -> Bool
    /// The test command the project's files suggest (nil: none found).
    func detectTests(root: String) -> TestCommand?
}
