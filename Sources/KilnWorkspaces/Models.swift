import Foundation
import KilnCore
import KilnHTTP

public struct Workspace: Codable, Sendable, Equatable {
    public let id: String
    public let name: String
    public let role: Role
    public let createdAt: Date
    public let updatedAt: Date
}

public struct Member: Codable, Sendable, Equatable, NullEncoding {
    public let userId: String
    public let email: String?
    public let name: String?
    public let role: Role
    public let joinedAt: Date
}

struct NameInput: Decodable, Sendable { let name: String }

struct AddMemberInput: Decodable, Sendable {
    let email: String?
    let userId: String?
    let role: Role
}

struct RoleInput: Decodable, Sendable { let role: Role }
