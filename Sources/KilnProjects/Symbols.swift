import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// The built-in extractor: line-oriented patterns per language for functions, methods, types,
/// protocols/interfaces and constants. Scope is the enclosing type when indentation shows one.
enum SymbolExtractor {
    /// The file name's extension, lower-cased, when it is short enough to name a language (nil for
    /// none, a dot file, or more than five characters). By bytes: this runs for every file of a
    /// rescan, where NSString's is costly.
    static func fileExtension(of path: String) -> String? {
        let u = path.utf8
        guard let dot = u.lastIndex(of: 46), !u[dot...].contains(47), dot != u.startIndex, u[u.index(before: dot)] != 47
        else { return nil }
        let ext = u[u.index(after: dot)...]
        guard ext.count <= 5 else { return nil }
        return String(decoding: ext.lazy.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
    }

    static func language(of path: String) -> String? {
        guard let ext = fileExtension(of: path) else { return nil }
        return switch ext {
        case "swift": "Swift"
        case "py": "Python"
        case "js", "jsx", "mjs", "cjs": "JavaScript"
        case "ts", "tsx": "TypeScript"
        case "go": "Go"
        case "rs": "Rust"
        case "c", "h": "C"
        case "cc", "cpp", "cxx", "hpp", "hh", "hxx": "C++"
        case "java": "Java"
        default: nil
        }
    }

    typealias Rule = (regex: NSRegularExpression, kind: String)

    static func rx(_ p: String) -> NSRegularExpression { try! NSRegularExpression(pattern: p, options: []) }

    static let rules: [String: [Rule]] = [
        "Python": [
            (rx(#"^\s*class\s+([A-Za-z_]\w*)"#), "class"),
            (rx(#"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)"#), "function"),
            (rx(#"^([A-Z][A-Z0-9_]+)\s*(?::[^=]+)?=(?!=)"#), "constant"),
        ],
        "JavaScript": [
            (rx(#"^\s*(?:export\s+)?(?:default\s+)?class\s+([A-Za-z_$][\w$]*)"#), "class"),
            (rx(#"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)"#), "function"),
            (
                rx(
                    #"^\s*(?:export\s+)?const\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?(?:\([^)]*\)|[A-Za-z_$][\w$]*)\s*=>"#
                ), "function"
            ),
            (rx(#"^\s*(?:export\s+)?const\s+([A-Z][A-Z0-9_]+)\s*="#), "constant"),
            (rx(#"^\s+(?:static\s+)?(?:async\s+)?([A-Za-z_$][\w$]*)\s*\([^)]*\)\s*\{"#), "method"),
        ],
        "Go": [
            (rx(#"^func\s+\([^)]*\)\s*([A-Za-z_]\w*)"#), "method"),
            (rx(#"^func\s+([A-Za-z_]\w*)"#), "function"),
            (rx(#"^type\s+([A-Za-z_]\w*)\s+interface"#), "interface"),
            (rx(#"^type\s+([A-Za-z_]\w*)"#), "type"),
            (rx(#"^const\s+([A-Za-z_]\w*)"#), "constant"),
        ],
        "Rust": [
            (
                rx(#"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?(?:const\s+)?fn\s+([A-Za-z_]\w*)"#),
                "function"
            ),
            (rx(#"^\s*(?:pub(?:\([^)]*\))?\s+)?(struct|enum|union|type)\s+([A-Za-z_]\w*)"#), "type"),
            (rx(#"^\s*(?:pub(?:\([^)]*\))?\s+)?trait\s+([A-Za-z_]\w*)"#), "interface"),
            (rx(#"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const|static)\s+([A-Z_][A-Z0-9_]*)\s*:"#), "constant"),
            (rx(#"^\s*impl(?:<[^>]*>)?\s+(?:[A-Za-z_:<>]+\s+for\s+)?([A-Za-z_]\w*)"#), "impl"),
        ],
        "C": [
            (rx(#"^(?:static\s+|extern\s+|inline\s+)*[A-Za-z_][\w\s\*]*?\b([A-Za-z_]\w*)\s*\([^;]*$"#), "function"),
            (rx(#"^\s*(?:typedef\s+)?(struct|union|enum)\s+([A-Za-z_]\w*)"#), "type"),
            (rx(#"^#define\s+([A-Z_][A-Z0-9_]*)"#), "constant"),
        ],
        "C++": [
            (rx(#"^\s*(?:template\s*<[^>]*>\s*)?(class|struct|union|enum(?:\s+class)?)\s+([A-Za-z_]\w*)"#), "type"),
            (
                rx(
                    #"^(?:static\s+|extern\s+|inline\s+|virtual\s+|constexpr\s+)*[A-Za-z_][\w:<>\s\*&]*?\b([A-Za-z_~][\w:~]*)\s*\([^;]*$"#
                ), "function"
            ),
            (rx(#"^#define\s+([A-Z_][A-Z0-9_]*)"#), "constant"),
            (rx(#"^\s*namespace\s+([A-Za-z_]\w*)"#), "namespace"),
        ],
        "Java": [
            (
                rx(
                    #"^\s*(?:(?:public|private|protected|abstract|final|static|sealed)\s+)*(class|enum|record)\s+([A-Za-z_]\w*)"#
                ), "class"
            ),
            (rx(#"^\s*(?:(?:public|private|protected|abstract|static)\s+)*interface\s+([A-Za-z_]\w*)"#), "interface"),
            (
                rx(
                    #"^\s*(?:(?:public|private|protected|abstract|final|static|synchronized|native)\s+)+[\w<>\[\],\s]+\s+([a-z_]\w*)\s*\("#
                ), "method"
            ),
            (
                rx(#"^\s*(?:(?:public|private|protected)\s+)?static\s+final\s+[\w<>\[\]]+\s+([A-Z_][A-Z0-9_]*)\s*="#),
                "constant"
            ),
        ],
    ]

    static let cKeywords: Set<String> = ["if", "for", "while", "switch", "return", "sizeof", "else", "do", "case"]

    /// Words at least one rule of the language needs on a line: lines without any are passed over
    /// without running the expressions. `(` stands for rules that only need a call shape.
    static let keywords: [String: [[UInt8]]] = [
        "Python": ["class", "def"],
        "JavaScript": ["class", "function", "const", "("],
        "Go": ["func", "type", "const"],
        "Rust": ["fn", "struct", "enum", "union", "type", "trait", "const", "static", "impl"],
        "C": ["struct", "union", "enum", "define", "("],
        "C++": ["class", "struct", "union", "enum", "define", "namespace", "("],
        "Java": ["class", "enum", "record", "interface", "static", "("],
    ].mapValues { $0.map { Array($0.utf8) } }

    /// Whether the line holds one of `words` as a whole word (or `(` when listed).
    static func mentions(_ line: UnsafeRawBufferPointer, _ words: [[UInt8]]) -> Bool {
        let n = line.count
        var i = 0
        while i < n {
            let c = line[i]
            if c == 40 {
                if words.contains([40]) { return true }
                i += 1
                continue
            }
            guard c >= 97 && c <= 122 else {
                i += 1
                continue
            }
            var j = i + 1
            while j < n && line[j] >= 97 && line[j] <= 122 { j += 1 }
            let before = i > 0 ? line[i - 1] : 32
            let after = j < n ? line[j] : 32
            if !Bytes.isWordByte(before) || before == 35, !Bytes.isWordByte(after) {
                for w in words where w.count == j - i && w[0] == c {
                    var k = 1
                    while k < w.count && w[k] == line[i + k] { k += 1 }
                    if k == w.count { return true }
                }
            }
            i = j
        }
        return false
    }

    /// Symbols of one file's text.
    static func extract(path: String, text: String) -> [Symbol] {
        var copy = text
        return copy.withUTF8 { extract(path: path, bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Symbols of one file's bytes (UTF-8).
    static func extract(path: String, bytes: UnsafeRawBufferPointer) -> [Symbol] {
        guard let lang = language(of: path) else { return [] }
        let rules = rules[lang == "TypeScript" ? "JavaScript" : lang] ?? []
        let words = keywords[lang == "TypeScript" ? "JavaScript" : lang] ?? []
        var out: [Symbol] = []
        var scopes: [(indent: Int, name: String)] = []
        var lineNo = 0
        var start = 0
        let n = bytes.count
        while start < n {
            let end = Bytes.lineEnd(bytes, from: start)
            defer { start = end + 1 }
            lineNo += 1
            if end - start > 8000 { continue }
            var indent = 0
            while start + indent < end && (bytes[start + indent] == 32 || bytes[start + indent] == 9) { indent += 1 }
            if start + indent == end { continue }
            let opensWithBrace = bytes[start + indent] == 125
            while let last = scopes.last, indent <= last.indent, !opensWithBrace || indent < last.indent {
                scopes.removeLast()
            }
            let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            if lang == "Swift" {
                guard let (kind, name) = SwiftDeclaration.parse(raw) else { continue }
                out.append(
                    Symbol(
                        name: name, kind: kind == "function" && !scopes.isEmpty ? "method" : kind, path: path,
                        line: lineNo,
                        scope: scopes.last?.name, language: lang))
                if kind != "function" && kind != "constant" { scopes.append((indent, name)) }
                continue
            }
            // Python constants are the one rule without a word: an upper-case first letter.
            let constantShape = lang == "Python" && indent == 0 && bytes[start] >= 65 && bytes[start] <= 90
            guard constantShape || mentions(raw, words) else { continue }
            let line = String(decoding: raw, as: UTF8.self)
            if line.count > 2000 { continue }
            let ns = line as NSString
            for rule in rules {
                guard let m = rule.regex.firstMatch(in: line, range: NSRange(location: 0, length: ns.length)) else {
                    continue
                }
                // The name is the last capture group; a type rule's first group is its keyword.
                var kind = rule.kind
                if m.numberOfRanges > 2, m.range(at: 1).location != NSNotFound {
                    kind = ns.substring(with: m.range(at: 1))
                }
                let r = m.range(at: m.numberOfRanges - 1)
                guard r.location != NSNotFound else { continue }
                let name = ns.substring(with: r)
                if (lang == "C" || lang == "C++") && cKeywords.contains(name) { continue }
                if kind == "enum class" { kind = "enum" }
                out.append(
                    Symbol(
                        name: name, kind: kind == "function" && !scopes.isEmpty ? "method" : kind, path: path,
                        line: lineNo,
                        scope: scopes.last?.name, language: lang))
                if [
                    "class", "struct", "enum", "actor", "extension", "protocol", "interface", "impl", "type", "record",
                    "namespace", "union", "trait",
                ].contains(kind) {
                    scopes.append((indent, name))
                }
                break
            }
        }
        return out
    }

    /// Symbols from universal-ctags for the given files; Swift is never sent (no parser). Tab-separated
    /// output without patterns and unsorted: JSON and sorting cost more than the parsing itself.
    static func ctags(root: String, files: [String]) async -> SymbolBatch? {
        guard let ctags = ProcessRunner.which("ctags"), !files.isEmpty else { return nil }
        let list = files.joined(separator: "\n") + "\n"
        guard
            let out = try? await ProcessRunner.run(
                ctags,
                // --options=NONE first: ctags would otherwise read .ctags.d/ in the project (a user could
                // make it write a tags file anywhere the server may).
                [
                    "--options=NONE", "--output-format=u-ctags", "--excmd=number", "--sort=no", "--fields=nKsl", "-f",
                    "-", "-L", "-",
                ],
                stdin: Array(list.utf8), cwd: root, timeout: 300), out.status == 0
        else { return nil }
        let asked = Set(files)
        var symbols = SymbolBatch()
        out.stdout.withUnsafeBytes { all in
            var start = 0
            while start < all.count {
                let end = Bytes.lineEnd(all, from: start)
                defer { start = end + 1 }
                if let s = parseCtagsLine(UnsafeRawBufferPointer(rebasing: all[start..<end])), asked.contains(s.path) {
                    symbols.add(s)
                }
            }
        }
        return symbols
    }

    // ctags kind names differ per language; these are the definitions we keep, named the built-in way.
    static let ctagsKinds: [String: String] = [
        "func": "function", "const": "constant", "member": "method", "typedef": "type", "macro": "constant",
        "implementation": "impl", "enumerator": "constant", "methodSpec": "method",
    ]
    static let wantedKinds: Set<String> = [
        "function", "method", "class", "struct", "interface", "enum", "type", "constant", "trait", "impl",
        "namespace", "union", "record", "protocol", "module",
    ]

    /// One tag line: `name<TAB>path<TAB>N;"<TAB>kind<TAB>line:N<TAB>language:L[<TAB>scopekind:scope]`
    /// (u-ctags escapes a tab or backslash in a name as `\t`, `\\`). Nil for pseudo-tags and kinds we drop.
    static func parseCtagsLine(_ line: UnsafeRawBufferPointer) -> Symbol? {
        guard line.count > 0, line[0] != 33 else { return nil }  // "!_TAG_…" pseudo-tags
        typealias Field = Slice<UnsafeRawBufferPointer>
        let fields = line.split(separator: 9, omittingEmptySubsequences: false)
        guard fields.count >= 5 else { return nil }
        func text(_ f: Field) -> String {
            guard f.contains(92) else { return String(decoding: UnsafeRawBufferPointer(rebasing: f), as: UTF8.self) }
            var out: [UInt8] = []
            var escaped = false
            for c in f {
                if escaped {
                    out.append(c == 116 ? 9 : c == 110 ? 10 : c)
                    escaped = false
                } else if c == 92 {
                    escaped = true
                } else {
                    out.append(c)
                }
            }
            return String(decoding: out, as: UTF8.self)
        }
        func starts(_ f: Field, with key: StaticString) -> Bool {
            let k = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
            return f.count >= k.count && f.prefix(k.count).elementsEqual(k)
        }
        var rawKind: String? = nil
        var lineNo: Int? = nil
        var language: String? = nil
        var scope: String? = nil
        for f in fields.dropFirst(3) {
            if let colon = f.firstIndex(of: 58) {
                let value = f[(colon + 1)...]
                if starts(f, with: "line:") {
                    lineNo = Int(String(decoding: UnsafeRawBufferPointer(rebasing: value), as: UTF8.self))
                } else if starts(f, with: "language:") {
                    language = text(value)
                } else if starts(f, with: "kind:") {
                    rawKind = text(value)
                } else if scope == nil, !value.isEmpty {
                    // scope: `class:Name` (the scope's kind, then its name, which may hold "::").
                    scope = text(value)
                }
            } else if rawKind == nil {
                rawKind = text(f)
            }
        }
        guard let rawKind, let lineNo, !fields[0].isEmpty else { return nil }
        var kind = ctagsKinds[rawKind] ?? rawKind
        let name = text(fields[0])
        let path = text(fields[1])
        // An all-caps module-level variable is a constant by convention (Python, JavaScript).
        if rawKind == "variable", name.utf8.count > 1,
            name.utf8.allSatisfy({ ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 95 })
        {
            kind = "constant"
        }
        guard wantedKinds.contains(kind) else { return nil }
        return Symbol(
            name: name, kind: kind, path: path, line: lineNo, scope: scope,
            language: language ?? SymbolExtractor.language(of: path) ?? "Unknown")
    }
}
