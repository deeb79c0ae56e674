import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// A `.gitignore` matcher following git's rules: comments and blank lines, `!` negation, escapes,
/// trailing `/` for directories, patterns with a slash anchored to their file's directory, `*`,
/// `?`, `[…]`, and `**` (leading, trailing and between slashes); deeper files override shallower
/// ones, the last matching line wins, and nothing inside an ignored directory can be re-included.
public struct GitIgnore: Sendable {
    struct Rule: Sendable {
        let pattern: [UInt8]
        let negated: Bool
        let directoryOnly: Bool
        let anchored: Bool
        /// Directory of the .gitignore, relative to the root ("" for the root).
        let base: String
        /// `base/` as bytes (empty for the root).
        let basePrefix: [UInt8]
        let shape: Shape
    }

    /// Most lines are a plain name or `*.ext`; those skip the general matcher.
    enum Shape: Sendable {
        case literal
        case suffix([UInt8])
        case general
    }

    static func shape(of p: [UInt8]) -> Shape {
        func plain(_ s: ArraySlice<UInt8>) -> Bool { !s.contains { $0 == 42 || $0 == 63 || $0 == 91 || $0 == 92 } }
        if plain(p[...]) { return .literal }
        if p.count > 1, p[0] == 42, plain(p[1...]) { return .suffix(Array(p[1...])) }
        return .general
    }

    var rules: [Rule] = []

    public init() {}

    /// Adds the lines of a `.gitignore` found in directory `base` (relative to the root, "" for the root).
    public mutating func add(_ text: String, base: String) {
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            var line = Array(raw.utf8)
            if line.last == 13 { line.removeLast() }
            if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
            // Trailing spaces are dropped unless escaped.
            while let last = line.last, last == 32, !(line.count >= 2 && line[line.count - 2] == 92) {
                line.removeLast()
            }
            if line.isEmpty { continue }
            var negated = false
            if line.first == UInt8(ascii: "!") {
                negated = true
                line.removeFirst()
            } else if line.first == 92, line.count > 1, line[1] == UInt8(ascii: "!") || line[1] == UInt8(ascii: "#") {
                line.removeFirst()
            }
            var directoryOnly = false
            if line.last == UInt8(ascii: "/") {
                directoryOnly = true
                line.removeLast()
            }
            if line.isEmpty { continue }
            let anchored = line.contains(UInt8(ascii: "/"))
            if line.first == UInt8(ascii: "/") { line.removeFirst() }
            rules.append(
                Rule(
                    pattern: line, negated: negated, directoryOnly: directoryOnly, anchored: anchored, base: base,
                    basePrefix: base.isEmpty ? [] : Array((base + "/").utf8), shape: GitIgnore.shape(of: line)))
        }
    }

    /// Whether `path` (relative to the root, `/`-separated) is ignored, given whether it is a
    /// directory. Parents are checked first: an ignored directory hides everything in it.
    public func isIgnored(_ path: String, isDirectory: Bool) -> Bool {
        let parts = path.split(separator: "/").map(String.init)
        var prefix = ""
        for (i, part) in parts.enumerated() {
            prefix = prefix.isEmpty ? part : prefix + "/" + part
            let dir = i < parts.count - 1 || isDirectory
            if decide(prefix, isDirectory: dir) { return true }
        }
        return false
    }

    /// Whether the last matching rule ignores exactly this path (parents not considered); used as a path glob too.
    public func decide(_ path: String, isDirectory: Bool) -> Bool {
        guard !rules.isEmpty else { return false }
        var path = path
        return path.withUTF8 { decide($0, isDirectory: isDirectory) }
    }

    /// `decide` on the path's bytes. The last matching rule wins, so the rules are tried from the
    /// last; this runs for every entry of a walk, so nothing is copied unless a pattern needs the
    /// general matcher.
    func decide(_ bytes: UnsafeBufferPointer<UInt8>, isDirectory: Bool) -> Bool {
        let nameStart = (bytes.lastIndex(of: 47) ?? -1) + 1
        func equal(_ a: [UInt8], _ b: UnsafeBufferPointer<UInt8>, at offset: Int) -> Bool {
            a.withUnsafeBufferPointer { memcmp($0.baseAddress!, b.baseAddress! + offset, $0.count) == 0 }
        }
        for i in rules.indices.reversed() {
            if rules[i].directoryOnly && !isDirectory { continue }
            var start = 0
            let prefixCount = rules[i].basePrefix.count
            if prefixCount > 0 {
                guard bytes.count > prefixCount, equal(rules[i].basePrefix, bytes, at: 0) else { continue }
                start = prefixCount
            }
            let from = rules[i].anchored ? start : max(start, nameStart)
            let count = bytes.count - from
            let hit: Bool
            switch rules[i].shape {
            case .literal:
                hit = count == rules[i].pattern.count && (count == 0 || equal(rules[i].pattern, bytes, at: from))
            case .suffix(let tail):
                // `*` never crosses a slash.
                hit =
                    count >= tail.count && (tail.isEmpty || equal(tail, bytes, at: bytes.count - tail.count))
                    && !bytes[from..<(bytes.count - tail.count)].contains(47)
            case .general: hit = GitIgnore.wildmatch(rules[i].pattern, Array(bytes[from...]))
            }
            if hit { return !rules[i].negated }
        }
        return false
    }

    /// git's wildmatch with WM_PATHNAME: `*` and `?` stop at `/`, `**` crosses directories.
    static func wildmatch(_ p: [UInt8], _ t: [UInt8]) -> Bool { match(p, 0, t, 0) }

    private static func match(_ p: [UInt8], _ pi0: Int, _ t: [UInt8], _ ti0: Int) -> Bool {
        var pi = pi0
        var ti = ti0
        let slash = UInt8(ascii: "/")
        let star = UInt8(ascii: "*")
        while pi < p.count {
            let c = p[pi]
            if c == star {
                if pi + 1 < p.count, p[pi + 1] == star {
                    // `**`: only special when it stands between slashes (or at the ends).
                    let before = pi == 0 || p[pi - 1] == slash
                    var after = pi + 2
                    let atEnd = after == p.count
                    let followedBySlash = !atEnd && p[after] == slash
                    if before && (atEnd || followedBySlash) {
                        if atEnd { return true }  // trailing `/**`: everything inside
                        after += 1  // `**/`: zero or more directories
                        var k = ti
                        while true {
                            if match(p, after, t, k) { return true }
                            guard let next = t[k...].firstIndex(of: slash) else { return false }
                            k = next + 1
                        }
                    }
                    pi += 1  // an ordinary `*` (the second star falls through next round)
                    continue
                }
                // `*`: any run without a slash.
                var k = ti
                while true {
                    if match(p, pi + 1, t, k) { return true }
                    if k >= t.count || t[k] == slash { return false }
                    k += 1
                }
            }
            guard ti < t.count else { return false }
            switch c {
            case UInt8(ascii: "?"):
                if t[ti] == slash { return false }
                pi += 1
                ti += 1
            case UInt8(ascii: "["):
                guard let (ok, next) = matchClass(p, pi, t[ti]) else {
                    if t[ti] != c { return false }
                    pi += 1
                    ti += 1
                    continue
                }
                if !ok || t[ti] == slash { return false }
                pi = next
                ti += 1
            case 92 where pi + 1 < p.count:
                if t[ti] != p[pi + 1] { return false }
                pi += 2
                ti += 1
            default:
                if t[ti] != c { return false }
                pi += 1
                ti += 1
            }
        }
        return ti == t.count
    }

    /// `[…]` at p[start]: (matches, index after `]`), or nil when the class is unterminated.
    private static func matchClass(_ p: [UInt8], _ start: Int, _ ch: UInt8) -> (Bool, Int)? {
        var i = start + 1
        var negate = false
        if i < p.count, p[i] == UInt8(ascii: "!") || p[i] == UInt8(ascii: "^") {
            negate = true
            i += 1
        }
        var matched = false
        var first = true
        while i < p.count {
            let c = p[i]
            if c == UInt8(ascii: "]") && !first { return (matched != negate, i + 1) }
            first = false
            var lo = c
            if c == 92, i + 1 < p.count {
                i += 1
                lo = p[i]
            }
            if i + 2 < p.count, p[i + 1] == UInt8(ascii: "-"), p[i + 2] != UInt8(ascii: "]") {
                let hi = p[i + 2]
                if ch >= lo && ch <= hi { matched = true }
                i += 3
            } else {
                if ch == lo { matched = true }
                i += 1
            }
        }
        return nil
    }
}
