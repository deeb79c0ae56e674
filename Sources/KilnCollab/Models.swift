import Foundation
import KilnCore
import KilnHTTP

/// `POST /api/collab/share-link`.
struct ShareInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["ws_id", "subject"]
    struct Subject: Decodable, Sendable {
        let type: String
        let id: String
    }
    let wsId: String?
    let subject: Subject
    let expiresInHours: Int?
    let password: String?
}

enum ShareLimits {
    static let maxHours = 720
    static let defaultHours = 72
    static let maxPassword = 256
    /// Wrong passwords a link takes in 10 minutes before it refuses every try for the rest of them.
    static let passwordTries = 10
}
