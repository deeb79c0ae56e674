import COpenSSL
import Foundation
import Glibc
import KilnHTTP

/// Sends mail through an SMTP server: `smtp://[user:pass@]host[:port]` (STARTTLS when offered;
/// `?starttls=required` refuses plain text) or `smtps://…` (TLS from the start, port 465).
/// `?verify=false` accepts a self-signed server certificate (a local relay). AUTH PLAIN only over TLS.
public struct SMTPMailer: Mailer {
    public let host: String
    public let port: Int
    public let implicitTLS: Bool
    public let requireTLS: Bool
    public let verifyCertificate: Bool
    public let username: String?
    public let password: String?
    public let from: String

    public init(url: String, from: String) throws {
        guard let u = URLComponents(string: url), let scheme = u.scheme, scheme == "smtp" || scheme == "smtps",
            let host = u.host, !host.isEmpty
        else {
            throw Config.ConfigError("--smtp-url must look like smtp://user:pass@host:587 or smtps://host:465")
        }
        self.host = host
        implicitTLS = scheme == "smtps"
        port = u.port ?? (implicitTLS ? 465 : 587)
        let q = Dictionary((u.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { a, _ in a })
        requireTLS = q["starttls"] == "required"
        verifyCertificate = q["verify"] != "false"
        username = u.user.map { $0.removingPercentEncoding ?? $0 }
        password = u.password.map { $0.removingPercentEncoding ?? $0 }
        guard SMTPMailer.isSafeAddress(from) || from.contains("<") else {
            throw Config.ConfigError("--mail-from is not a valid address")
        }
        self.from = from
    }

    static func isSafeAddress(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 254
            && !s.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "<" || $0 == ">" || $0 == " " })
            && s.contains("@")
    }

    /// The bare address inside `Name <addr>`.
    static func address(_ s: String) -> String {
        if let a = s.firstIndex(of: "<"), let b = s.lastIndex(of: ">"), a < b {
            return String(s[s.index(after: a)..<b])
        }
        return s
    }

    public func send(_ m: MailMessage) async throws {
        guard SMTPMailer.isSafeAddress(m.to), !m.subject.contains(where: { $0 == "\r" || $0 == "\n" }) else {
            throw HTTPError.badRequest("mail recipient or subject is not valid")
        }
        let me = self
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                do {
                    try me.deliver(m)
                    c.resume()
                } catch { c.resume(throwing: error) }
            }
        }
        ServerLog.info(
            "mail sent", ["to": .string(m.to), "subject": .string(m.subject), "relay": .string("\(host):\(port)")])
    }

    public struct SMTPError: Error, CustomStringConvertible { public let description: String }

    /// One blocking SMTP conversation (runs on a dispatch thread).
    func deliver(_ m: MailMessage) throws {
        let conn = try SMTPConnection(host: host, port: port, verify: verifyCertificate)
        defer { conn.close() }
        if implicitTLS { try conn.startTLS() }
        _ = try conn.expect(220)
        var ehlo = try conn.command("EHLO kiln", expect: 250)
        if !implicitTLS {
            if ehlo.contains(where: { $0.uppercased().hasPrefix("STARTTLS") }) {
                _ = try conn.command("STARTTLS", expect: 220)
                try conn.startTLS()
                ehlo = try conn.command("EHLO kiln", expect: 250)
            } else if requireTLS || username != nil {
                throw SMTPError(
                    description:
                        "the SMTP server does not offer STARTTLS; refusing to send \(username != nil ? "credentials" : "mail") in the clear"
                )
            }
        }
        if let user = username, let pass = password {
            let token = Data(([0] + Array(user.utf8) + [0] + Array(pass.utf8))).base64EncodedString()
            _ = try conn.command("AUTH PLAIN \(token)", expect: 235, redact: true)
        }
        _ = try conn.command("MAIL FROM:<\(SMTPMailer.address(from))>", expect: 250)
        _ = try conn.command("RCPT TO:<\(m.to)>", expect: 250, alsoOK: [251])
        _ = try conn.command("DATA", expect: 354)
        var body = """
            From: \(from)\r
            To: \(m.to)\r
            Subject: \(m.subject)\r
            Date: \(HTTPDate.format(Date()))\r
            Message-ID: <\(IDs.randomBase62(24))@kiln>\r
            MIME-Version: 1.0\r
            Content-Type: text/plain; charset=utf-8\r
            Content-Transfer-Encoding: 8bit\r
            \r\n
            """
        for line in m.body.replacingOccurrences(of: "\r\n", with: "\n").split(
            separator: "\n", omittingEmptySubsequences: false)
        {
            body += (line.hasPrefix(".") ? "." : "") + line + "\r\n"  // dot-stuffing (RFC 5321 §4.5.2)
        }
        body += ".\r\n"
        try conn.write(body)
        _ = try conn.expect(250)
        _ = try? conn.command("QUIT", expect: 221)
    }
}

/// A line connection for the SMTP client on Kiln's one client socket (30 s for every wait).
final class SMTPConnection {
    let socket: ClientSocket
    let host: String
    let verify: Bool

    init(host: String, port: Int, verify: Bool) throws {
        self.host = host
        self.verify = verify
        do {
            socket = try ClientSocket(host: host, port: port, timeout: 30, readTimeout: 30, writeTimeout: 30)
        } catch let f as ClientSocket.Failure {
            throw SMTPMailer.SMTPError(description: "cannot connect to SMTP server \(host):\(port): \(f)")
        }
    }

    func startTLS() throws {
        do {
            try socket.startTLS(hostName: host, verify: verify)
        } catch let f as ClientSocket.Failure {
            throw SMTPMailer.SMTPError(
                description:
                    "TLS handshake with the SMTP server failed (\(f); certificate not trusted? use ?verify=false for a "
                    + "local relay)")
        }
    }

    func write(_ text: String) throws {
        do { try socket.write(Array(text.utf8)) } catch let f as ClientSocket.Failure {
            throw SMTPMailer.SMTPError(description: "SMTP connection lost while sending (\(f))")
        }
    }

    func readLine() throws -> String {
        do { return try socket.readLine(limit: 64 * 1024) } catch let f as ClientSocket.Failure {
            throw SMTPMailer.SMTPError(description: "SMTP server closed the connection (\(f))")
        }
    }

    /// Reads a (multi-line) reply; returns its text lines.
    func expect(_ code: Int, alsoOK: [Int] = []) throws -> [String] {
        var lines: [String] = []
        while true {
            let line = try readLine()
            guard line.count >= 3, let c = Int(line.prefix(3)) else {
                throw SMTPMailer.SMTPError(description: "malformed SMTP reply")
            }
            lines.append(String(line.dropFirst(4)))
            if line.count == 3 || line[line.index(line.startIndex, offsetBy: 3)] == " " {
                guard c == code || alsoOK.contains(c) else {
                    throw SMTPMailer.SMTPError(description: "SMTP server answered \(c): \(lines.last ?? "")")
                }
                return lines
            }
        }
    }

    func command(_ cmd: String, expect code: Int, alsoOK: [Int] = [], redact: Bool = false) throws -> [String] {
        try write(cmd + "\r\n")
        do { return try expect(code, alsoOK: alsoOK) } catch let e as SMTPMailer.SMTPError {
            throw SMTPMailer.SMTPError(description: "\(redact ? "AUTH" : String(cmd.prefix(20))): \(e.description)")
        }
    }

    func close() { socket.close() }
}
