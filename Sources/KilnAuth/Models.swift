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

/// `POST /auth/register`.
public struct RegisterInput: Decodable, Sendable {
    public let email: String
    public let password: String
    public let name: String
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

    enum CodingKeys: String, CodingKey { case user, csrfToken, mfaRequired, sessionId, apiKeyId }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(user, forKey: .user)
        try c.encode(csrfToken, forKey: .csrfToken)
        try c.encode(mfaRequired, forKey: .mfaRequired)
        try c.encode(sessionId, forKey: .sessionId)
        try c.encode(apiKeyId, forKey: .apiKeyId)
    }
}

/// `POST /auth/login`.
struct LoginBody: Encodable, Sendable {
    let user: User
    let csrfToken: String
    let mfaRequired: Bool
    let expiresAt: Date
}
