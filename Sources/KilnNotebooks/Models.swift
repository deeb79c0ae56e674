import Foundation
import KilnCore
import KilnHTTP

/// `POST /api/notebook`.
struct CreateInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["path"]
    let projectId: String?
    let path: String
    let kernel: String?
}

/// `POST /api/notebook/:nb_id/cells`.
struct AddCellInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["cell_type"]
    let index: Int?
    let cellType: String
    let source: String?
}

/// `PATCH /api/notebook/:nb_id/cells/:cell_id`: absent fields stay.
struct PatchCellInput: Decodable, Sendable {
    let source: String?
    let cellType: String?
    let metadata: JSONValue?
}

/// `POST /api/notebook/:nb_id/cells/:cell_id/move`.
struct MoveInput: Decodable, Sendable, SchemaRequiredFields {
    static let requiredFields = ["index"]
    let index: Int
}

/// `POST /api/notebook/:nb_id/run-all`.
struct RunAllInput: Decodable, Sendable {
    let continueOnError: Bool?
}

enum NotebookLimits {
    static let maxSource = 1 << 20
    static let maxCells = 10_000
    static let maxMetadata = 256 * 1024
}
