import Foundation
import KilnCore
import KilnHTTP

/// The answer to MFA enrolment: the secret, its otpauth URL and the recovery codes (shown once).
public struct MFASetup: Codable, Sendable {
    public let secret: String
    public let otpauthUrl: String
    public let recoveryCodes: [String]
}

/// What a good second factor did.
public enum MFAOutcome: String, Sendable, Codable {
    case loginCompleted = "login_completed", enabled, stepUp = "step_up"
}

/// A new session.
public struct LoginResult: Sendable {
    public let user: User
    public let sessionToken: String
    public let sessionID: String
    public let csrfToken: String
    public let mfaRequired: Bool
    public let expiresAt: Date
}

/// `POST /auth/setup`: a setup token and the new password (the owner also gives email and name).
public struct SetupInput: Decodable, Sendable {
    public let token: String
    public let email: String?
    public let name: String?
    public let password: String
}

/// `POST /auth/register` (`invitation`: the token from an invitation link).
public struct RegisterInput: Decodable, Sendable {
    public let email: String
    public let password: String
    public let name: String
    public let invitation: String?

    public init(email: String, password: String, name: String, invitation: String? = nil) {
        self.email = email
        self.password = password
        self.name = name
        self.invitation = invitation
    }
}

/// Who may register (`--registration closed|invite|open`, `--registration-domains`).
public struct RegistrationPolicy: Sendable {
    public enum Mode: String, Sendable { case closed, invite, open }
    public let mode: Mode
    /// Under `open`: the email domains that may register (empty: any).
    public let domains: [String]

    public init(mode: Mode = .open, domains: [String] = []) {
        self.mode = mode
        self.domains = domains.map { $0.lowercased() }
    }

    init(config: Config) {
        self.init(
            mode: config.string(AuthSettings.registration).flatMap(Mode.init(rawValue:)) ?? .closed,
            domains: config.strings(AuthSettings.domains))
    }

    /// Throws the 403 for a registration without an invitation that this policy refuses.
    func admits(email: String) throws {
        switch mode {
        case .closed:
            throw HTTPError(
                .forbidden, code: "registration_closed",
                message: "Registration is closed on this server; an administrator can create your account or invite you"
            )
        case .invite:
            throw HTTPError(
                .forbidden, code: "invitation_required",
                message: "Registration on this server needs an invitation (the link an administrator sends)",
                details: ["field": "invitation"])
        case .open:
            let domain = email.split(separator: "@").last.map { $0.lowercased() } ?? ""
            guard domains.isEmpty || domains.contains(domain) else {
                throw HTTPError(
                    .forbidden, code: "registration_closed",
                    message: "Registration is open to addresses at \(domains.joined(separator: ", ")) only",
                    details: ["field": "email"])
            }
        }
    }
}

/// The identity domain's options under `kiln serve`.
enum AuthSettings {
    static let registration = "--registration"
    static let domains = "--registration-domains"
    static let options: [Config.Option] = [
        .choice(
            registration, env: "KILN_REGISTRATION",
            help: "who may register: closed (default: admins create accounts and invite), invite, or open",
            ["closed", "invite", "open"]),
        Config.Option(
            flag: domains, env: "KILN_REGISTRATION_DOMAINS",
            help: "under --registration open: the email domains that may register (comma-separated)", repeatable: true
        ) { c, v in
            c.moduleValues[domains, default: []] += v.split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            }.filter { !$0.isEmpty }
        },
    ]
}

struct LoginInput: Decodable, Sendable {
    let email: String
    let password: String
}

struct EmailInput: Decodable, Sendable { let email: String }

struct ResetInput: Decodable, Sendable {
    let token: String
    let password: String
}

struct CodeInput: Decodable, Sendable { let code: String }

struct MFADisableInput: Decodable, Sendable {
    let password: String
    let code: String
}

/// `GET /api/auth/session`.
struct SessionBody: Encodable, Sendable {
    let user: User
    let csrfToken: String?
    let mfaRequired: Bool
    let sessionId: String?
    let apiKeyId: String?
    /// May this account start processes (shell, terminals, the agent's commands).
    let canExecute: Bool
    let isAdmin: Bool
    /// Until when step-up routes are open without confirming again (nil: confirm first).
    let steppedUpUntil: Date?

    enum CodingKeys: String, CodingKey {
        case user, csrfToken, mfaRequired, sessionId, apiKeyId, canExecute, isAdmin, steppedUpUntil
    }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(user, forKey: .user)
        try c.encode(csrfToken, forKey: .csrfToken)
        try c.encode(mfaRequired, forKey: .mfaRequired)
        try c.encode(sessionId, forKey: .sessionId)
        try c.encode(apiKeyId, forKey: .apiKeyId)
        try c.encode(canExecute, forKey: .canExecute)
        try c.encode(isAdmin, forKey: .isAdmin)
        try c.encode(steppedUpUntil, forKey: .steppedUpUntil)
    }
}

/// `POST /api/auth/step-up`: the password (accounts without MFA) or a second-factor code.
struct StepUpInput: Decodable, Sendable {
    let password: String?
    let code: String?
}

/// `POST /auth/login`.
struct LoginBody: Encodable, Sendable {
    let user: User
    let csrfToken: String
    let mfaRequired: Bool
    let expiresAt: Date
}
