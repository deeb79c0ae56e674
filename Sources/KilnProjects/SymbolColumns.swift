import CShims
import Foundation
import Glibc
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

/// The symbol table's columns. Entry `i`'s name is `names[nameStarts[i]..<nameStarts[i + 1]]`
/// (likewise its lower-cased name); paths are interned in sorted order, so a path's index is its rank.
struct SymbolColumns: Sendable {
    struct Record: Sendable {
        var path: UInt32
        var line: UInt32
        /// Into `others`, or `.max` for none.
        var scope: UInt32
        var kind: UInt32
        var language: UInt32
    }
    private(set) var names: [UInt8] = []
    private(set) var nameStarts: [UInt32] = [0]
    private(set) var lowered: [UInt8] = []
    private(set) var loweredStarts: [UInt32] = [0]
    private(set) var paths: [String] = []
    /// Kinds, languages and scopes.
    private(set) var others: [String] = []
    private(set) var records: [Record] = []

    var count: Int { records.count }

    init() {}

    // MARK: Reading

    func symbol(_ i: Int) -> Symbol {
        let r = records[i]
        return Symbol(
            name: String(decoding: names[Int(nameStarts[i])..<Int(nameStarts[i + 1])], as: UTF8.self),
            kind: others[Int(r.kind)],
            path: paths[Int(r.path)], line: Int(r.line), scope: r.scope == .max ? nil : others[Int(r.scope)],
            language: others[Int(r.language)])
    }

    /// Compares entry `i`'s lower-cased name with `key`: <0, 0, >0; `prefix` compares only key's length.
    private func compareLowered(_ i: Int, _ key: [UInt8], prefix: Bool) -> Int {
        let s = Int(loweredStarts[i])
        let e = Int(loweredStarts[i + 1])
        let n = prefix ? min(e - s, key.count) : e - s
        let c = lowered.withUnsafeBufferPointer { l in
            key.withUnsafeBufferPointer { k in memcmp(l.baseAddress! + s, k.baseAddress!, min(n, key.count)) }
        }
        if c != 0 { return Int(c) }
        if prefix { return n < key.count ? -1 : 0 }
        return n == key.count ? 0 : (n < key.count ? -1 : 1)
    }

    /// The entries whose lower-cased name starts with `key` (or equals it), as a range.
    private func loweredRange(_ key: [UInt8], prefix: Bool) -> Range<Int> {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if compareLowered(mid, key, prefix: prefix) < 0 { lo = mid + 1 } else { hi = mid }
        }
        var end = lo
        hi = count
        while end < hi {
            let mid = (end + hi) / 2
            if compareLowered(mid, key, prefix: prefix) <= 0 { end = mid + 1 } else { hi = mid }
        }
        return lo..<end
    }

    private func nameEquals(_ i: Int, _ q: [UInt8]) -> Bool {
        let s = Int(nameStarts[i])
        let e = Int(nameStarts[i + 1])
        return e - s == q.count && names[s..<e].elementsEqual(q)
    }

    private func nameHasPrefix(_ i: Int, _ q: [UInt8]) -> Bool {
        let s = Int(nameStarts[i])
        let e = Int(nameStarts[i + 1])
        return e - s >= q.count && names[s..<(s + q.count)].elementsEqual(q)
    }

    /// `path:line` of every definition named exactly `name`.
    func definitions(named name: String) -> Set<String> {
        let q = Array(name.utf8)
        var out = Set<String>()
        for i in loweredRange(Array(name.lowercased().utf8), prefix: false) where nameEquals(i, q) {
            out.insert("\(paths[Int(records[i].path)]):\(records[i].line)")
        }
        return out
    }

    /// Symbols ranked: exact, then case-insensitive exact, prefix, case-insensitive prefix, substring,
    /// then fuzzy (every character in order, tighter spans first); ties by shorter name, path, line.
    func lookup(_ q: String, kind: String?, limit: Int) -> [Symbol] {
        var kindID: UInt32? = nil
        if let kind {
            guard let k = others.firstIndex(of: kind) else { return [] }
            kindID = UInt32(k)
        }
        let qb = Array(q.utf8)
        let lq = Array(q.lowercased().utf8)
        var best = TopRanked(limit: limit)
        func consider(_ i: Int, _ score: Int) {
            if let kindID, records[i].kind != kindID { return }
            best.offer(
                score: score, nameLength: Int(nameStarts[i + 1] - nameStarts[i]), path: records[i].path,
                line: records[i].line, index: i)
        }
        if q.isEmpty {
            for i in 0..<count { consider(i, 0) }
            return best.indices.map(symbol)
        }
        // Exact and prefix matches are one range of the sorted lower-cased names.
        let prefixed = loweredRange(lq, prefix: true)
        for i in prefixed {
            let ciExact = Int(loweredStarts[i + 1] - loweredStarts[i]) == lq.count
            consider(i, nameEquals(i, qb) ? 0 : ciExact ? 1 : nameHasPrefix(i, qb) ? 2 : 3)
        }
        // Substring and fuzzy matches rank below all of those: only needed when they leave room.
        if best.isFull { return best.indices.map(symbol) }
        lowered.withUnsafeBufferPointer { l in
            lq.withUnsafeBufferPointer { k in
                for i in 0..<count where !prefixed.contains(i) {
                    let s = Int(loweredStarts[i])
                    let e = Int(loweredStarts[i + 1])
                    if e - s >= k.count, kiln_memmem(l.baseAddress! + s, e - s, k.baseAddress!, k.count) != nil {
                        consider(i, 4)
                        continue
                    }
                    // Subsequence: the span after the first matched byte counts against it.
                    var j = s
                    var span = 0
                    var matched = 0
                    while j < e && matched < k.count {
                        if l[j] == k[matched] { matched += 1 } else if matched > 0 { span += 1 }
                        j += 1
                    }
                    if matched == k.count { consider(i, 5 + min(span, 1000)) }
                }
            }
        }
        return best.indices.map(symbol)
    }

    // MARK: Building

    /// `old` without the symbols of `removing`, plus `adding`, sorted by lower-cased name, name,
    /// path and line.
    init(keeping old: SymbolColumns, without removing: Set<String>, adding batches: [SymbolBatch]) {
        // Paths first: interned in sorted order, so an index is a rank.
        let oldKept = old.paths.map { !removing.contains($0) }
        var pathSet = Set<String>()
        for (i, p) in old.paths.enumerated() where oldKept[i] { pathSet.insert(p) }
        for b in batches { for r in b.rows { pathSet.insert(b.strings[Int(r.path)]) } }
        paths = pathSet.sorted()
        let pathIDs = Dictionary(uniqueKeysWithValues: paths.enumerated().map { ($1, UInt32($0)) })
        var otherIDs: [String: UInt32] = [:]
        var others: [String] = []
        func other(_ s: String) -> UInt32 {
            if let id = otherIDs[s] { return id }
            let id = UInt32(others.count)
            others.append(s)
            otherIDs[s] = id
            return id
        }

        // Everything unsorted, in one packed set of columns.
        var names: [UInt8] = []
        var nameStarts: [UInt32] = [0]
        var lowered: [UInt8] = []
        var loweredStarts: [UInt32] = [0]
        var records: [Record] = []
        let total = old.count + batches.reduce(0) { $0 + $1.count }
        records.reserveCapacity(total)
        nameStarts.reserveCapacity(total + 1)
        loweredStarts.reserveCapacity(total + 1)
        names.reserveCapacity(old.names.count + batches.reduce(0) { $0 + $1.names.count })
        lowered.reserveCapacity(names.capacity)
        let oldOthers = old.others.map(other)
        for i in 0..<old.count where oldKept[Int(old.records[i].path)] {
            let r = old.records[i]
            names.append(contentsOf: old.names[Int(old.nameStarts[i])..<Int(old.nameStarts[i + 1])])
            nameStarts.append(UInt32(names.count))
            lowered.append(contentsOf: old.lowered[Int(old.loweredStarts[i])..<Int(old.loweredStarts[i + 1])])
            loweredStarts.append(UInt32(lowered.count))
            records.append(
                Record(
                    path: pathIDs[old.paths[Int(r.path)]]!, line: r.line,
                    scope: r.scope == .max ? .max : oldOthers[Int(r.scope)],
                    kind: oldOthers[Int(r.kind)], language: oldOthers[Int(r.language)]))
        }
        for b in batches {
            var pathOf = [UInt32?](repeating: nil, count: b.strings.count)
            var otherOf = [UInt32?](repeating: nil, count: b.strings.count)
            func mapPath(_ id: UInt32) -> UInt32 {
                if let m = pathOf[Int(id)] { return m }
                let m = pathIDs[b.strings[Int(id)]]!
                pathOf[Int(id)] = m
                return m
            }
            func mapOther(_ id: UInt32) -> UInt32 {
                if id == .max { return .max }
                if let m = otherOf[Int(id)] { return m }
                let m = other(b.strings[Int(id)])
                otherOf[Int(id)] = m
                return m
            }
            var start = 0
            for (k, r) in b.rows.enumerated() {
                let end = Int(b.nameEnds[k])
                let name = b.names[start..<end]
                start = end
                names.append(contentsOf: name)
                nameStarts.append(UInt32(names.count))
                if name.allSatisfy({ $0 < 0x80 }) {
                    lowered.append(contentsOf: name.lazy.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 })
                } else {
                    lowered.append(contentsOf: String(decoding: name, as: UTF8.self).lowercased().utf8)
                }
                loweredStarts.append(UInt32(lowered.count))
                records.append(
                    Record(
                        path: mapPath(r.path), line: r.line, scope: mapOther(r.scope), kind: mapOther(r.kind),
                        language: mapOther(r.language)))
            }
        }

        // The order: by the first 8 bytes of the lower-cased name as one integer, which settles most
        // comparisons, then by the bytes in place.
        var order: [(key: UInt64, index: UInt32)] = lowered.withUnsafeBufferPointer { lw in
            (0..<records.count).map { i in
                let s = Int(loweredStarts[i])
                let e = Int(loweredStarts[i + 1])
                var key: UInt64 = 0
                for j in 0..<8 { key = key << 8 | UInt64(s + j < e ? lw[s + j] : 0) }
                return (key, UInt32(i))
            }
        }
        names.withUnsafeBufferPointer { nm in
            lowered.withUnsafeBufferPointer { lw in
                nameStarts.withUnsafeBufferPointer { ns in
                    loweredStarts.withUnsafeBufferPointer { ls in
                        records.withUnsafeBufferPointer { rs in
                            func compare(
                                _ base: UnsafeBufferPointer<UInt8>, _ starts: UnsafeBufferPointer<UInt32>, _ a: Int,
                                _ b: Int
                            ) -> Int32 {
                                let sa = Int(starts[a])
                                let la = Int(starts[a + 1]) - sa
                                let sb = Int(starts[b])
                                let lb = Int(starts[b + 1]) - sb
                                let c =
                                    la == 0 || lb == 0
                                    ? 0 : memcmp(base.baseAddress! + sa, base.baseAddress! + sb, min(la, lb))
                                return c != 0 ? c : Int32(la - lb)
                            }
                            order.sort { x, y in
                                if x.key != y.key { return x.key < y.key }
                                let a = Int(x.index)
                                let b = Int(y.index)
                                let l = compare(lw, ls, a, b)
                                if l != 0 { return l < 0 }
                                let n = compare(nm, ns, a, b)
                                if n != 0 { return n < 0 }
                                return (rs[a].path, rs[a].line, a) < (rs[b].path, rs[b].line, b)
                            }
                        }
                    }
                }
            }
        }

        self.others = others
        self.records.reserveCapacity(order.count)
        self.nameStarts.reserveCapacity(order.count + 1)
        self.loweredStarts.reserveCapacity(order.count + 1)
        self.names.reserveCapacity(names.count)
        self.lowered.reserveCapacity(lowered.count)
        for o in order {
            let i = Int(o.index)
            self.names.append(contentsOf: names[Int(nameStarts[i])..<Int(nameStarts[i + 1])])
            self.nameStarts.append(UInt32(self.names.count))
            self.lowered.append(contentsOf: lowered[Int(loweredStarts[i])..<Int(loweredStarts[i + 1])])
            self.loweredStarts.append(UInt32(self.lowered.count))
            self.records.append(records[i])
        }
    }

    // MARK: Storage

    static let magic: UInt32 = 0x3159_534B  // "KSY1"

    /// Header (magic, entry count, path count, other count), then the four string columns (offsets,
    /// then bytes), then the records.
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(names.count * 2 + records.count * 28 + 1024)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func column(_ starts: [UInt32], _ bytes: [UInt8]) {
            for s in starts { u32(s) }
            out.append(contentsOf: bytes)
        }
        func strings(_ list: [String]) {
            var starts: [UInt32] = [0]
            var bytes: [UInt8] = []
            for s in list {
                bytes.append(contentsOf: s.utf8)
                starts.append(UInt32(bytes.count))
            }
            column(starts, bytes)
        }
        u32(Self.magic)
        u32(UInt32(count))
        u32(UInt32(paths.count))
        u32(UInt32(others.count))
        column(nameStarts, names)
        column(loweredStarts, lowered)
        strings(paths)
        strings(others)
        for r in records {
            u32(r.path)
            u32(r.line)
            u32(r.scope)
            u32(r.kind)
            u32(r.language)
        }
        return out
    }

    /// Reads what `encoded` wrote, checking every offset and index, so a damaged file is refused
    /// rather than trusted.
    init(decoding b: [UInt8]) throws {
        var at = 0
        func u32() throws -> UInt32 {
            guard at + 4 <= b.count else { throw SymbolTableError.corrupt("truncated") }
            defer { at += 4 }
            return UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
        }
        func column(_ n: Int) throws -> ([UInt32], [UInt8]) {
            guard n < b.count else { throw SymbolTableError.corrupt("count") }
            var starts: [UInt32] = []
            starts.reserveCapacity(n + 1)
            for _ in 0...n { starts.append(try u32()) }
            guard starts[0] == 0, zip(starts, starts.dropFirst()).allSatisfy({ $0 <= $1 }),
                at + Int(starts[n]) <= b.count
            else {
                throw SymbolTableError.corrupt("column offsets")
            }
            defer { at += Int(starts[n]) }
            return (starts, Array(b[at..<(at + Int(starts[n]))]))
        }
        func strings(_ n: Int) throws -> [String] {
            let (starts, bytes) = try column(n)
            return (0..<n).map { String(decoding: bytes[Int(starts[$0])..<Int(starts[$0 + 1])], as: UTF8.self) }
        }
        guard try u32() == Self.magic else { throw SymbolTableError.corrupt("magic") }
        let n = Int(try u32())
        let pathCount = Int(try u32())
        let otherCount = Int(try u32())
        (nameStarts, names) = try column(n)
        (loweredStarts, lowered) = try column(n)
        paths = try strings(pathCount)
        others = try strings(otherCount)
        guard b.count - at == n * 20 else { throw SymbolTableError.corrupt("record table size") }
        records.reserveCapacity(n)
        for _ in 0..<n {
            let r = Record(path: try u32(), line: try u32(), scope: try u32(), kind: try u32(), language: try u32())
            guard Int(r.path) < pathCount, r.scope == .max || Int(r.scope) < otherCount, Int(r.kind) < otherCount,
                Int(r.language) < otherCount
            else {
                throw SymbolTableError.corrupt("record index")
            }
            records.append(r)
        }
    }
}

/// The best `limit` entries by (score, name length, path rank, line), kept sorted as they are offered.
struct TopRanked {
    typealias Key = (score: Int, nameLength: Int, path: UInt32, line: UInt32)
    let limit: Int
    private var kept: [(key: Key, index: Int)] = []

    init(limit: Int) { self.limit = max(0, limit) }

    var isFull: Bool { kept.count >= limit }
    var indices: [Int] { kept.map(\.index) }

    private static func less(_ a: Key, _ b: Key) -> Bool {
        (a.score, a.nameLength, a.path, a.line) < (b.score, b.nameLength, b.path, b.line)
    }

    mutating func offer(score: Int, nameLength: Int, path: UInt32, line: UInt32, index: Int) {
        let key: Key = (score, nameLength, path, line)
        if kept.count >= limit {
            guard let last = kept.last, Self.less(key, last.key) else { return }
            kept.removeLast()
        }
        var lo = 0
        var hi = kept.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if Self.less(kept[mid].key, key) || !Self.less(key, kept[mid].key) && kept[mid].index < index {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        kept.insert((key, index), at: lo)
    }
}
