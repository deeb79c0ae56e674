import Foundation
import KilnCore
import KilnHTTP

/// `GET /api/receipts/chain-head`: the newest receipt of a workspace's chain (seq 0 and the genesis
/// hash while there is none).
struct ChainHead: Encodable, NullEncoding, Sendable {
    let wsId: String
    let seq: Int
    let hash: String
    let runId: String?
}
