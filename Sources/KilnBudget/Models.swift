import Foundation
import KilnCore
import KilnHTTP

/// A workspace's caps in micro-dollars (nil: none).
struct Limits: Sendable {
    var daily: Int?
    var monthly: Int?
    var perRun: Int?
}

/// `PUT /api/budget/limits`: a cap left out stays, null removes it.
struct LimitsInput: Decodable, Sendable {
    let wsId: String?
    let dailyUsdMicros: Patch<Int>
    let monthlyUsdMicros: Patch<Int>
    let perRunUsdMicros: Patch<Int>
}

/// `POST /api/budget/estimate`.
struct EstimateInput: Decodable, Sendable {
    let wsId: String?
    let projectId: String?
    let model: String
    let prompt: String
    let maxSteps: Int?
}
