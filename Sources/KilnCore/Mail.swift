import Foundation
import KilnHTTP

/// A message Kiln sends (verification, password reset…).
public struct MailMessage: Sendable {
    public let to: String
    public let subject: String
    public let body: String
    /// The link the message carries (logged by the outbox so a mail-less install works).
    public let link: String?
    public init(to: String, subject: String, body: String, link: String? = nil) {
        self.to = to
        self.subject = subject
        self.body = body
        self.link = link
    }
}

public protocol Mailer: Sendable {
    func send(_ message: MailMessage) async throws
}

/// Without an SMTP server: each message becomes a file (0600) in `<data-dir>/outbox/`; the log names
/// the file only, never the link or token in it (logs travel further than the data dir).
public struct OutboxMailer: Mailer {
    public let directory: String
    public let from: String

    public init(directory: String, from: String = "Kiln <kiln@localhost>") {
        self.directory = directory
        self.from = from
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    public func send(_ m: MailMessage) async throws {
        let now = Date()
        let name = "\(HTTPDate.iso8601(now).replacingOccurrences(of: ":", with: "-"))-\(IDs.randomBase62(8)).eml"
        let text = """
            From: \(from)\r
            To: \(m.to)\r
            Subject: \(m.subject)\r
            Date: \(HTTPDate.format(now))\r
            Content-Type: text/plain; charset=utf-8\r
            \r
            \(m.body)
            """
        let path = directory + "/" + name
        guard
            FileManager.default.createFile(
                atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw HTTPError.unavailable("cannot write to the mail outbox")
        }
        ServerLog.info("mail written to outbox", ["file": .string(path)])
    }
}

/// Mail bodies from `Templates/<name>.txt` (with `{{key}}` placeholders), or the built-in text.
public struct MailTemplates: Sendable {
    public let directory: String?
    public init(directory: String?) { self.directory = directory }

    public func render(_ name: String, fallback: String, _ values: [String: String]) -> String {
        var text = fallback
        if let directory, let t = try? String(contentsOfFile: "\(directory)/\(name).txt", encoding: .utf8) { text = t }
        for (k, v) in values { text = text.replacingOccurrences(of: "{{\(k)}}", with: v) }
        return text
    }
}
