import Foundation
import Synchronization

/// Request metrics in Prometheus form: counts by method/route/status and a duration histogram per route.
public final class HTTPMetrics: Sendable {
    public static let buckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    struct Histogram {
        var counts = [Int](repeating: 0, count: HTTPMetrics.buckets.count)
        var sum = 0.0
        var count = 0
    }
    struct State {
        var requests: [String: Int] = [:]  // "method\u{0}route\u{0}status"
        var durations: [String: Histogram] = [:]
    }

    private let state = Mutex(State())
    public init() {}

    public func record(method: String, route: String, status: Int, seconds: Double) {
        state.withLock { s in
            s.requests["\(method)\u{0}\(route)\u{0}\(status)", default: 0] += 1
            var h = s.durations[route] ?? Histogram()
            for (i, b) in HTTPMetrics.buckets.enumerated() where seconds <= b { h.counts[i] += 1 }
            h.sum += seconds
            h.count += 1
            s.durations[route] = h
        }
    }

    /// Prometheus text exposition for the request metrics.
    public func render(into out: inout String) {
        let s = state.withLock { $0 }
        out += "# HELP kiln_http_requests_total HTTP requests answered, by method, route pattern and status.\n"
        out += "# TYPE kiln_http_requests_total counter\n"
        for (k, v) in s.requests.sorted(by: { $0.key < $1.key }) {
            let p = k.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
            out +=
                "kiln_http_requests_total{method=\"\(label(p[0]))\",route=\"\(label(p[1]))\",status=\"\(p[2])\"} \(v)\n"
        }
        out += "# HELP kiln_http_request_duration_seconds Time from request head to response, by route pattern.\n"
        out += "# TYPE kiln_http_request_duration_seconds histogram\n"
        for (route, h) in s.durations.sorted(by: { $0.key < $1.key }) {
            let r = label(route)
            for (i, b) in HTTPMetrics.buckets.enumerated() {
                out += "kiln_http_request_duration_seconds_bucket{route=\"\(r)\",le=\"\(b)\"} \(h.counts[i])\n"
            }
            out += "kiln_http_request_duration_seconds_bucket{route=\"\(r)\",le=\"+Inf\"} \(h.count)\n"
            out += "kiln_http_request_duration_seconds_sum{route=\"\(r)\"} \(h.sum)\n"
            out += "kiln_http_request_duration_seconds_count{route=\"\(r)\"} \(h.count)\n"
        }
    }

    func label(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// Appends one gauge or counter with HELP and TYPE.
public func prometheusMetric(_ out: inout String, name: String, type: String, help: String, value: Double) {
    out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    out += value == value.rounded() && abs(value) < 1e15 ? "\(name) \(Int64(value))\n" : "\(name) \(value)\n"
}
