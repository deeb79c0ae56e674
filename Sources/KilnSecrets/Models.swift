import Foundation
import KilnCore
import KilnHTTP

/// A secret as listed: never its value.
public struct SecretInfo: Codable, Sendable, NullEncoding {
    public let name: String
    public let version: Int
    public let createdAt: Date
    public let updatedAt: Date
    public let updatedBy: String?
    public let expiresAt: Date?
    public let lastUsedAt: Date?
}

/// One kept version of a secret (the last five are kept).
public struct SecretVersion: Codable, Sendable, NullEncoding {
    public let version: Int
    public let createdAt: Date
    public let createdBy: String?
    public let expiresAt: Date?
}

/// `POST /api/secrets/:name`.
struct SetSecretInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "value"]
    let wsId: String?
    let value: String
    let expiresAt: String?
}

enum SecretRules {
    static let maxValue = 64 * 1024
    static let keptVersions = 5
    /// Shorter values cannot be redacted reliably from output, so they are never injected.
    static let minInjectable = 6

    static func validName(_ name: String) throws -> String {
        guard name.range(of: #"^[A-Z_][A-Z0-9_]{0,127}$"#, options: .regularExpression) != nil else {
            throw APIError.validation(
                "A secret's name is an environment variable name: A-Z, 0-9 and _, not starting with a digit, "
                    + "at most 128 characters", field: "name")
        }
        return name
    }
}
