import Foundation

/// Quick open: ranks a project's indexed paths against what was typed, as editors do (every
/// character of the query in order, case-insensitive; runs, word starts and the file name count
/// most). Kept apart from the symbol ranking: paths are ranked by where in the path a match falls.
public struct PathMatch: Codable, Sendable {
    public let path: String
    /// Offsets (in UTF-8 bytes) of the matched characters, for highlighting.
    public let positions: [Int]
    public let score: Int
}

enum PathFinder {
    static let maxQuery = 256

    /// The best `limit` matches of `query` among `paths`; an empty query gives the shortest paths.
    static func rank(_ paths: [String], query: String, limit: Int) -> [PathMatch] {
        let q = Array(query.lowercased().utf8.filter { $0 != 0x20 })
        if q.isEmpty {
            return paths.sorted { ($0.utf8.count, $0) < ($1.utf8.count, $1) }.prefix(limit).map {
                PathMatch(path: $0, positions: [], score: 0)
            }
        }
        var found: [PathMatch] = []
        for path in paths {
            if let m = match(Array(path.utf8), q) { found.append(PathMatch(path: path, positions: m.1, score: m.0)) }
        }
        found.sort { a, b in
            a.score != b.score ? a.score > b.score : (a.path.utf8.count, a.path) < (b.path.utf8.count, b.path)
        }
        return Array(found.prefix(limit))
    }

    /// The best-scoring placement of `q` in `p` (dynamic programming over positions), or nil when
    /// `q` is not a subsequence: `rdm` in `README.md` takes the `m` after the dot, not the one in `ME`.
    static func match(_ p: [UInt8], _ q: [UInt8]) -> (Int, [Int])? {
        let n = p.count
        let m = q.count
        guard m <= n, n <= 4096 else { return nil }
        let lower = p.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 32 : $0 }
        let base = (p.lastIndex(of: 0x2F) ?? -1) + 1
        let none = Int.min / 2
        // score[j * n + i]: the best total with q[j] placed at i; from[j * n + i]: where q[j-1] went.
        var score = [Int](repeating: none, count: m * n)
        var from = [Int](repeating: -1, count: m * n)
        for j in 0..<m {
            var bestBefore = none  // best score[j-1][k] for k < i - 1
            var bestAt = -1
            for i in 0..<n {
                if j > 0, i >= 2, score[(j - 1) * n + i - 2] > bestBefore {
                    bestBefore = score[(j - 1) * n + i - 2]
                    bestAt = i - 2
                }
                guard lower[i] == q[j] else { continue }
                let b = bonus(p, i, base: base) + (j == 0 && i == base ? 10 : 0)
                if j == 0 {
                    score[i] = b
                    continue
                }
                var total = none
                if bestAt >= 0 {
                    total = bestBefore + b
                    from[j * n + i] = bestAt
                }
                if i >= 1, score[(j - 1) * n + i - 1] > none, score[(j - 1) * n + i - 1] + b + 6 > total {
                    total = score[(j - 1) * n + i - 1] + b + 6  // a run
                    from[j * n + i] = i - 1
                }
                score[j * n + i] = total
            }
        }
        var end = -1
        for i in 0..<n
        where score[(m - 1) * n + i] > none && (end < 0 || score[(m - 1) * n + i] > score[(m - 1) * n + end]) {
            end = i
        }
        guard end >= 0 else { return nil }
        var positions = [Int](repeating: 0, count: m)
        var i = end
        for j in stride(from: m - 1, through: 0, by: -1) {
            positions[j] = i
            i = from[j * n + i]
        }
        return (score[(m - 1) * n + end] * 100 - min(n, 99), positions)
    }

    /// What one matched character is worth where it falls.
    static func bonus(_ p: [UInt8], _ i: Int, base: Int) -> Int {
        var s = 1
        if i == 0 || [0x2F, 0x5F, 0x2D, 0x2E, 0x20].contains(p[i - 1]) { s += 8 }  // after / _ - . space
        if i > 0, p[i] >= 0x41, p[i] <= 0x5A, p[i - 1] >= 0x61, p[i - 1] <= 0x7A { s += 6 }  // camelCase
        if i >= base { s += 3 }
        return s
    }
}
