import Foundation
import KilnCore
import KilnHTTP

/// A symbol definition found in a file.
public struct Symbol: Codable, Sendable, Equatable, NullEncoding {
    public let name: String
    public let kind: String
    public let path: String
    public let line: Int
    public let scope: String?
    public let language: String

}

/// The built-in extractor: line-oriented patterns per language for functions, methods, types,
/// protocols/interfaces and constants. Scope is the enclosing type when indentation shows one.
enum SymbolExtractor {
    static func language(of path: String) -> String? {
        switch (path as NSString).pathExtension.lowercased() {
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
        "Swift": [
            (rx(#"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|open|final|static|class|override|mutating|nonisolated|indirect)\s+)*(class|struct|enum|actor|extension)\s+([A-Za-z_]\w*)"#), "type"),
            (rx(#"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|open)\s+)*protocol\s+([A-Za-z_]\w*)"#), "protocol"),
            (rx(#"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|open|final|static|class|override|mutating|nonisolated|convenience|required)\s+)*func\s+([A-Za-z_]\w*|[^\s(]+)"#), "function"),
            (rx(#"^\s*(?:(?:public|private|fileprivate|internal|open|static)\s+)*let\s+([A-Z_][A-Za-z0-9_]*)\s*[:=]"#), "constant"),
            (rx(#"^\s*(?:(?:public|private|fileprivate|internal|open)\s+)*typealias\s+([A-Za-z_]\w*)"#), "type"),
        ],
        "Python": [
            (rx(#"^\s*class\s+([A-Za-z_]\w*)"#), "class"),
            (rx(#"^\s*(?:async\s+)?def\s+([A-Za-z_]\w*)"#), "function"),
            (rx(#"^([A-Z][A-Z0-9_]+)\s*(?::[^=]+)?=(?!=)"#), "constant"),
        ],
        "JavaScript": [
            (rx(#"^\s*(?:export\s+)?(?:default\s+)?class\s+([A-Za-z_$][\w$]*)"#), "class"),
            (rx(#"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)"#), "function"),
            (rx(#"^\s*(?:export\s+)?const\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?(?:\([^)]*\)|[A-Za-z_$][\w$]*)\s*=>"#), "function"),
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
            (rx(#"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?(?:const\s+)?fn\s+([A-Za-z_]\w*)"#), "function"),
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
            (rx(#"^(?:static\s+|extern\s+|inline\s+|virtual\s+|constexpr\s+)*[A-Za-z_][\w:<>\s\*&]*?\b([A-Za-z_~][\w:~]*)\s*\([^;]*$"#), "function"),
            (rx(#"^#define\s+([A-Z_][A-Z0-9_]*)"#), "constant"),
            (rx(#"^\s*namespace\s+([A-Za-z_]\w*)"#), "namespace"),
        ],
        "Java": [
            (rx(#"^\s*(?:(?:public|private|protected|abstract|final|static|sealed)\s+)*(class|enum|record)\s+([A-Za-z_]\w*)"#), "class"),
            (rx(#"^\s*(?:(?:public|private|protected|abstract|static)\s+)*interface\s+([A-Za-z_]\w*)"#), "interface"),
            (rx(#"^\s*(?:(?:public|private|protected|abstract|final|static|synchronized|native)\s+)+[\w<>\[\],\s]+\s+([a-z_]\w*)\s*\("#), "method"),
            (rx(#"^\s*(?:(?:public|private|protected)\s+)?static\s+final\s+[\w<>\[\]]+\s+([A-Z_][A-Z0-9_]*)\s*="#), "constant"),
        ],
    ]

    static let cKeywords: Set<String> = ["if", "for", "while", "switch", "return", "sizeof", "else", "do", "case"]

    /// Symbols of one file's text.
    static func extract(path: String, text: String) -> [Symbol] {
        guard let lang = language(of: path) else { return [] }
        let rules = rules[lang == "TypeScript" ? "JavaScript" : lang] ?? []
        var out: [Symbol] = []
        var scopes: [(indent: Int, name: String)] = []
        var lineNo = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            let line = String(raw)
            if line.count > 2000 { continue }
            let indent = line.prefix { $0 == " " || $0 == "\t" }.count
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty { continue }
            while let last = scopes.last, indent <= last.indent, !trimmed.hasPrefix("}") || indent < last.indent { scopes.removeLast() }
            let ns = line as NSString
            for rule in rules {
                guard let m = rule.regex.firstMatch(in: line, range: NSRange(location: 0, length: ns.length)) else { continue }
                // The name is the last capture group; a type rule's first group is its keyword.
                var kind = rule.kind
                if m.numberOfRanges > 2, m.range(at: 1).location != NSNotFound { kind = ns.substring(with: m.range(at: 1)) }
                let r = m.range(at: m.numberOfRanges - 1)
                guard r.location != NSNotFound else { continue }
                let name = ns.substring(with: r)
                if (lang == "C" || lang == "C++") && cKeywords.contains(name) { continue }
                if kind == "enum class" { kind = "enum" }
                out.append(Symbol(name: name, kind: kind == "function" && !scopes.isEmpty ? "method" : kind, path: path, line: lineNo,
                                  scope: scopes.last?.name, language: lang))
                if ["class", "struct", "enum", "actor", "extension", "protocol", "interface", "impl", "type", "record", "namespace", "union", "trait"].contains(kind) {
                    scopes.append((indent, name))
                }
                break
            }
        }
        return out
    }

    /// Symbols from universal-ctags (JSON output) for the given files; Swift is never sent (no parser).
    static func ctags(root: String, files: [String]) async -> [Symbol]? {
        guard let ctags = ProcessRunner.which("ctags"), !files.isEmpty else { return nil }
        let list = files.joined(separator: "\n") + "\n"
        guard let out = try? await ProcessRunner.run(ctags, ["--output-format=json", "--fields=+nKZl", "-f", "-", "-L", "-"],
                                                     stdin: Array(list.utf8), cwd: root, timeout: 300), out.status == 0 else { return nil }
        var symbols: [Symbol] = []
        // ctags kind names differ per language; these are the definitions we keep, named the built-in way.
        let normalise: [String: String] = ["func": "function", "const": "constant", "member": "method", "typedef": "type", "macro": "constant",
                                           "implementation": "impl", "enumerator": "constant", "methodSpec": "method"]
        let wanted: Set<String> = ["function", "method", "class", "struct", "interface", "enum", "type", "constant", "trait", "impl",
                                   "namespace", "union", "record", "protocol", "module"]
        for line in out.stdout.split(separator: 10) {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], obj["_type"] as? String == "tag",
                  let name = obj["name"] as? String, let path = obj["path"] as? String, let lineNo = obj["line"] as? Int,
                  let rawKind = obj["kind"] as? String else { continue }
            var kind = normalise[rawKind] ?? rawKind
            // An all-caps module-level variable is a constant by convention (Python, JavaScript).
            if rawKind == "variable", name.count > 1, name.allSatisfy({ $0.isUppercase || $0.isNumber || $0 == "_" }) { kind = "constant" }
            guard wanted.contains(kind) else { continue }
            let lang = (obj["language"] as? String) ?? language(of: path) ?? "Unknown"
            symbols.append(Symbol(name: name, kind: kind, path: path, line: lineNo,
                                  scope: obj["scope"] as? String, language: lang))
        }
        return symbols
    }
}
