import CShims
import Glibc

/// Byte-level text helpers for the index, search and findings: they work on file content in place
/// (memory-mapped or in a read buffer) and never build a String for a line that does not matter.
enum Bytes {
    /// Whether `b` is valid UTF-8 (eight ASCII bytes at a time, then the RFC 3629 ranges).
    static func isValidUTF8(_ b: UnsafeRawBufferPointer) -> Bool {
        guard let base = b.baseAddress else { return true }
        let p = base.assumingMemoryBound(to: UInt8.self)
        let n = b.count
        var i = 0
        func cont(_ j: Int) -> Bool { j < n && p[j] & 0xC0 == 0x80 }
        while i < n {
            // ASCII runs (most of source code) 32 bytes at a time, then 8.
            if i + 32 <= n {
                let q = base + i
                if (q.loadUnaligned(as: UInt64.self) | q.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    | q.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
                    | q.loadUnaligned(fromByteOffset: 24, as: UInt64.self)) & 0x8080_8080_8080_8080 == 0
                {
                    i += 32
                    continue
                }
            }
            if i + 8 <= n, (base + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                i += 8
                continue
            }
            let c = p[i]
            if c < 0x80 {
                i += 1
                continue
            }
            switch c {
            case 0xC2...0xDF:
                guard cont(i + 1) else { return false }
                i += 2
            case 0xE0:
                guard i + 1 < n, (0xA0...0xBF).contains(p[i + 1]), cont(i + 2) else { return false }
                i += 3
            case 0xE1...0xEC, 0xEE, 0xEF:
                guard cont(i + 1), cont(i + 2) else { return false }
                i += 3
            case 0xED:
                guard i + 1 < n, (0x80...0x9F).contains(p[i + 1]), cont(i + 2) else { return false }
                i += 3
            case 0xF0:
                guard i + 1 < n, (0x90...0xBF).contains(p[i + 1]), cont(i + 2), cont(i + 3) else { return false }
                i += 4
            case 0xF1...0xF3:
                guard cont(i + 1), cont(i + 2), cont(i + 3) else { return false }
                i += 4
            case 0xF4:
                guard i + 1 < n, (0x80...0x8F).contains(p[i + 1]), cont(i + 2), cont(i + 3) else { return false }
                i += 4
            default:
                return false
            }
        }
        return true
    }

    static func contains(_ b: UnsafeRawBufferPointer, _ byte: UInt8) -> Bool {
        guard let base = b.baseAddress, b.count > 0 else { return false }
        return memchr(base, Int32(byte), b.count) != nil
    }

    @inline(__always) static func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c + 32 : c }

    /// The first occurrence of `needle` at or after `from`. Case-insensitive search folds ASCII
    /// letters only; `needle` must then be lower-cased already.
    static func find(_ hay: UnsafeRawBufferPointer, from: Int, _ needle: [UInt8], caseInsensitive: Bool) -> Int? {
        let n = hay.count
        let m = needle.count
        guard m > 0, from >= 0, from + m <= n, let base = hay.baseAddress else { return nil }
        if !caseInsensitive {
            return needle.withUnsafeBytes { nd -> Int? in
                guard let hit = kiln_memmem(base + from, n - from, nd.baseAddress!, m) else { return nil }
                return UnsafeRawPointer(hit) - base
            }
        }
        let p = base.assumingMemoryBound(to: UInt8.self)
        let first = needle[0]
        let upper = first >= 97 && first <= 122 ? first - 32 : first
        let last = n - m
        // The next position of each spelling of the first byte, advanced lazily.
        func next(_ c: UInt8, _ at: Int) -> Int {
            guard at <= last, let hit = memchr(base + at, Int32(c), last - at + 1) else { return n }
            return UnsafeRawPointer(hit) - base
        }
        var nl = next(first, from)
        var nu = upper == first ? n : next(upper, from)
        while true {
            let pos = min(nl, nu)
            if pos > last { return nil }
            var j = 1
            while j < m && lower(p[pos + j]) == needle[j] { j += 1 }
            if j == m { return pos }
            if pos == nl { nl = next(first, pos + 1) } else { nu = next(upper, pos + 1) }
        }
    }

    /// Calls `body(lineStart, lineEnd, matchStart)` for every line holding `needle` (at its first
    /// occurrence in the line), in order, until `body` returns false.
    static func linesContaining(
        _ hay: UnsafeRawBufferPointer, _ needle: [UInt8], caseInsensitive: Bool,
        _ body: (_ start: Int, _ end: Int, _ at: Int) -> Bool
    ) {
        var from = 0
        while from < hay.count, let pos = find(hay, from: from, needle, caseInsensitive: caseInsensitive) {
            let (start, end) = line(hay, around: pos, notBefore: from)
            if !body(start, end, pos) { return }
            from = end + 1
        }
    }

    /// The line around `pos`: its first byte and the index of its newline (or the end).
    static func line(_ hay: UnsafeRawBufferPointer, around pos: Int, notBefore floor: Int = 0) -> (start: Int, end: Int)
    {
        let base = hay.baseAddress!
        var start = floor
        if pos > floor, let nl = kiln_memrchr(base + floor, 10, pos - floor) { start = UnsafeRawPointer(nl) - base + 1 }
        return (start, lineEnd(hay, from: pos))
    }

    static func lineEnd(_ hay: UnsafeRawBufferPointer, from: Int) -> Int {
        guard from < hay.count, let nl = memchr(hay.baseAddress! + from, 10, hay.count - from) else { return hay.count }
        return UnsafeRawPointer(nl) - hay.baseAddress!
    }

    /// Newlines in `[from, to)`.
    static func newlines(_ hay: UnsafeRawBufferPointer, from: Int, to: Int) -> Int {
        guard let base = hay.baseAddress else { return 0 }
        var count = 0
        var at = from
        while at < to, let nl = memchr(base + at, 10, to - at) {
            count += 1
            at = UnsafeRawPointer(nl) - base + 1
        }
        return count
    }

    /// The bytes of `[start, end)` as text, a trailing carriage return dropped.
    static func text(_ hay: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String {
        var e = end
        if e > start, hay[e - 1] == 13 { e -= 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: hay[start..<e]), as: UTF8.self)
    }

    /// Characters (Unicode scalars) in `[start, end)`.
    static func scalars(_ hay: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int {
        var c = 0
        for i in start..<end where hay[i] & 0xC0 != 0x80 { c += 1 }
        return c
    }

    @inline(__always) static func isWordByte(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 || c >= 0x80
    }
}
