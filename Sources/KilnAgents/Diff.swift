import Foundation
import KilnCore
import KilnHTTP

/// Line diffs in unified format (3 lines of context): common prefix and suffix are trimmed, the
/// middle is aligned by longest common subsequence (or replaced whole when very large).
public enum UnifiedDiff {
    public static func make(old: String?, new: String, path: String) -> String {
        let a = old.map(lines) ?? []
        let b = lines(new)
        var head = "--- " + (old == nil ? "/dev/null" : "a/\(path)") + "\n+++ b/\(path)\n"
        var ops: [(Character, String)] = []
        var p = 0
        while p < a.count && p < b.count && a[p] == b[p] { p += 1 }
        var s = 0
        while s < a.count - p && s < b.count - p && a[a.count - 1 - s] == b[b.count - 1 - s] { s += 1 }
        for i in 0..<p { ops.append((" ", a[i])) }
        let am = Array(a[p..<(a.count - s)])
        let bm = Array(b[p..<(b.count - s)])
        if am.count * bm.count <= 4_000_000 {
            var dp = [[Int]](repeating: [Int](repeating: 0, count: bm.count + 1), count: am.count + 1)
            for i in stride(from: am.count - 1, through: 0, by: -1) {
                for j in stride(from: bm.count - 1, through: 0, by: -1) {
                    dp[i][j] = am[i] == bm[j] ? dp[i + 1][j + 1] + 1 : max(dp[i + 1][j], dp[i][j + 1])
                }
            }
            var i = 0
            var j = 0
            while i < am.count || j < bm.count {
                if i < am.count && j < bm.count && am[i] == bm[j] {
                    ops.append((" ", am[i]))
                    i += 1
                    j += 1
                }
                // Deletions before insertions, as diff(1) prints them.
                else if i < am.count && (j == bm.count || dp[i + 1][j] >= dp[i][j + 1]) {
                    ops.append(("-", am[i]))
                    i += 1
                } else {
                    ops.append(("+", bm[j]))
                    j += 1
                }
            }
        } else {
            ops += am.map { ("-", $0) } + bm.map { ("+", $0) }
        }
        for i in (a.count - s)..<a.count { ops.append((" ", a[i])) }
        // Hunks: changed lines with up to 3 lines of context, nearby changes merged.
        let changed = ops.indices.filter { ops[$0].0 != " " }
        guard !changed.isEmpty else { return head }
        var groups: [(Int, Int)] = []
        for c in changed {
            let lo = max(0, c - 3)
            let hi = min(ops.count - 1, c + 3)
            if let last = groups.last, lo <= last.1 + 1 {
                groups[groups.count - 1].1 = hi
            } else {
                groups.append((lo, hi))
            }
        }
        for (lo, hi) in groups {
            var oldStart = 1
            var newStart = 1
            for k in 0..<lo {
                if ops[k].0 != "+" { oldStart += 1 }
                if ops[k].0 != "-" { newStart += 1 }
            }
            let slice = ops[lo...hi]
            let oldCount = slice.filter { $0.0 != "+" }.count
            let newCount = slice.filter { $0.0 != "-" }.count
            head +=
                "@@ -\(oldCount == 0 ? oldStart - 1 : oldStart),\(oldCount) +\(newCount == 0 ? newStart - 1 : newStart),\(newCount) @@\n"
            for (op, line) in slice { head += "\(op)\(line)\n" }
        }
        return head
    }

    static func lines(_ s: String) -> [String] {
        var l = s.components(separatedBy: "\n")
        if l.last == "" { l.removeLast() }
        return l
    }
}
