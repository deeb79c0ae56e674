import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Swift declarations read off a line by hand (the language's files are most of a Swift code base,
/// and this is far faster than trying expressions on every line): attributes, modifiers, then
/// `class`/`struct`/`enum`/`actor`/`extension`/`protocol`/`func`/`typealias` and a name, or `let` and
/// an upper-case name followed by `:` or `=` (a constant). `class func f` is a function.
enum SwiftDeclaration {
    /// Modifiers and declaration keywords (`class` is both), matched on the line's bytes in place:
    /// this runs on every line of every Swift file, so no word is copied or hashed.
    static let keywords: [(bytes: [UInt8], modifier: Bool, kind: String?)] =
        [
            "public", "private", "fileprivate", "internal", "open", "final", "static", "override", "mutating",
            "nonisolated", "indirect",
            "convenience", "required", "package",
        ].map { (Array($0.utf8), true, nil) }
        + [
            ("class", "class"), ("struct", "struct"), ("enum", "enum"), ("actor", "actor"), ("extension", "extension"),
            ("protocol", "protocol"),
            ("func", "function"), ("typealias", "type"), ("let", "constant"),
        ].map { (Array($0.0.utf8), $0.0 == "class", $0.1) }

    /// The keyword spelled by `line[word]`, if it is one.
    static func keyword(_ line: UnsafeRawBufferPointer, _ word: Range<Int>) -> (modifier: Bool, kind: String?)? {
        let len = word.count
        guard len >= 3 && len <= 11 else { return nil }
        let first = line[word.lowerBound]
        for k in keywords where k.bytes.count == len && k.bytes[0] == first {
            var j = 1
            while j < len && k.bytes[j] == line[word.lowerBound + j] { j += 1 }
            if j == len { return (k.modifier, k.kind) }
        }
        return nil
    }

    static func isSpace(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 13 || c == 11 || c == 12 }
    static func isIdent(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95
    }

    /// (kind, name) when the line declares something.
    static func parse(_ line: UnsafeRawBufferPointer) -> (String, String)? {
        let n = line.count
        var i = 0
        func skipSpace() -> Bool {
            let from = i
            while i < n && isSpace(line[i]) { i += 1 }
            return i > from
        }
        func word() -> Range<Int> {
            let from = i
            while i < n && isIdent(line[i]) { i += 1 }
            return from..<i
        }
        _ = skipSpace()
        var sawAttribute = false
        while i < n {
            if line[i] == UInt8(ascii: "@") {
                i += 1
                guard !word().isEmpty else { return nil }
                if i < n && line[i] == UInt8(ascii: "(") {
                    while i < n && line[i] != UInt8(ascii: ")") { i += 1 }
                    guard i < n else { return nil }
                    i += 1
                }
                guard skipSpace() else { return nil }
                sawAttribute = true
                continue
            }
            let w = word()
            guard !w.isEmpty, i < n, isSpace(line[i]), let wk = keyword(line, w) else { return nil }
            _ = skipSpace()
            // A modifier that is also a keyword (`class`) is a modifier when another keyword follows.
            let next = i
            let following = word()
            i = next
            if wk.modifier && (wk.kind == nil || keyword(line, following) != nil) { continue }
            guard let kind = wk.kind else { return nil }
            if kind == "constant" {
                guard !sawAttribute, i < n, (line[i] >= 65 && line[i] <= 90) || line[i] == 95 else { return nil }
                let name = word()
                while i < n && isSpace(line[i]) { i += 1 }
                guard i < n, line[i] == UInt8(ascii: ":") || line[i] == UInt8(ascii: "=") else { return nil }
                return (kind, String(decoding: UnsafeRawBufferPointer(rebasing: line[name]), as: UTF8.self))
            }
            guard i < n else { return nil }
            if kind == "function", !(isIdent(line[i]) && !(line[i] >= 48 && line[i] <= 57)) {
                // An operator (`func ==(…)`) or a quoted name: everything up to space or `(`.
                let from = i
                while i < n && !isSpace(line[i]) && line[i] != UInt8(ascii: "(") { i += 1 }
                return i > from ? (kind, String(decoding: line[from..<i], as: UTF8.self)) : nil
            }
            guard (line[i] >= 65 && line[i] <= 90) || (line[i] >= 97 && line[i] <= 122) || line[i] == 95 else {
                return nil
            }
            return (kind, String(decoding: UnsafeRawBufferPointer(rebasing: line[word()]), as: UTF8.self))
        }
        return nil
    }
}
