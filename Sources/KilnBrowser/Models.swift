import Foundation
import KilnCore
import KilnHTTP

/// `PUT /api/browser/allowlist`.
struct AllowlistInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["entries"]
    struct Entry: Decodable, Sendable {
        let pattern: String
        let note: String?
    }
    let wsId: String?
    let entries: [Entry]
}

/// `POST /api/browser/run`.
struct BrowserRunInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["kind", "url"]
    struct Viewport: Decodable, Sendable {
        let width: Int
        let height: Int
    }
    let wsId: String?
    let kind: String
    let url: String
    let steps: [JSONValue]?
    let viewport: Viewport?
    let timeoutS: Int?
}

enum BrowserLimits {
    static let defaultViewport = (width: 1280, height: 800)
    static let viewportWidths = 200...3840
    static let viewportHeights = 200...2160
    static let defaultTimeout = 30
    static let maxTimeout = 120
    static let maxURL = 2048
    static let kinds: Set<String> = ["smoke", "flow", "marketing"]
}
