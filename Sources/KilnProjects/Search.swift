import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// One matching line.
public struct SearchMatch: Codable, Sendable {
    public let path: String
    public let line: Int
    /// 1-based, in characters.
    public let column: Int
    public let text: String
    public let before: [String]
    public let after: [String]
    /// Ranked first: the match is a whole word, or the line defines a symbol of that name.
    public let exactWord: Bool
    public let definition: Bool
}

extension ProjectService {
    static let maxMatches = 10_000

    struct SearchQuery: Sendable {
        let q: String
        let regex: Bool
        let caseSensitive: Bool
        let pathGlob: String?
    }

    /// Every line of the project's indexed text files that matches, ranked. The trigram index narrows
    /// literal queries to candidate files; every candidate is verified line by line, so the result is
    /// exactly what scanning the files would find.
    func search(projectID: String, _ query: SearchQuery) async throws -> [SearchMatch] {
        guard !query.q.isEmpty, query.q.utf8.count <= 1000 else { throw APIError.validation("q must have 1 to 1000 bytes", field: "q") }
        var regex: NSRegularExpression? = nil
        if query.regex {
            do { regex = try NSRegularExpression(pattern: query.q, options: query.caseSensitive ? [] : [.caseInsensitive]) }
            catch { throw APIError.validation("q is not a valid regular expression", field: "q") }
        }
        let narrowing = query.regex ? nil : FullText.literalQuery(query.q)
        let definitions: Set<String> = try await db.read { tx in
            Set(try tx.query("SELECT path, line FROM project_symbols WHERE project_id = ? AND name = ?", projectID, query.q)
                .map { "\($0.string("path") ?? ""):\($0.int("line") ?? 0)" })
        }
        var glob: GitIgnore? = nil
        if let g = query.pathGlob, !g.isEmpty { var gi = GitIgnore(); gi.add(g, base: ""); glob = gi }
        var out: [SearchMatch] = []
        // Candidates in pages of 200 files (memory stays bounded however large the project).
        var lastRowID: Int64 = 0
        pages: while true {
            let after = lastRowID
            let rows: [Row] = try await db.read { tx in
                if let m = narrowing {
                    return try tx.query("SELECT rowid, path, content FROM project_fts WHERE project_fts MATCH ? AND project_id = ? AND rowid > ? ORDER BY rowid LIMIT 200",
                                        m, projectID, after)
                }
                return try tx.query("SELECT rowid, path, content FROM project_fts WHERE project_id = ? AND rowid > ? ORDER BY rowid LIMIT 200", projectID, after)
            }
            if rows.isEmpty { break }
            lastRowID = rows.last?.int64("rowid") ?? after
            for r in rows {
                guard let path = r.string("path"), let content = r.string("content") else { continue }
                if let glob, !glob.decide(path, isDirectory: false) && !glob.decide((path as NSString).lastPathComponent, isDirectory: false) { continue }
                try Task.checkCancellation()
                ProjectService.matchLines(path: path, content: content, query: query, regex: regex, definitions: definitions, into: &out)
                if out.count >= ProjectService.maxMatches { break pages }
            }
            if rows.count < 200 { break }
        }
        out.sort { ($0.path, $0.line) < ($1.path, $1.line) }
        // Stable ranking: definitions, then whole-word hits, then the rest, each in path and line order.
        return out.enumerated().sorted { a, b in
            let ra = a.element.definition ? 0 : (a.element.exactWord ? 1 : 2), rb = b.element.definition ? 0 : (b.element.exactWord ? 1 : 2)
            return ra != rb ? ra < rb : a.offset < b.offset
        }.map(\.element)
    }

    /// Appends the matching lines of one file.
    static func matchLines(path: String, content: String, query: SearchQuery, regex: NSRegularExpression?, definitions: Set<String>,
                           into out: inout [SearchMatch]) {
        let lines = content.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        let count = content.hasSuffix("\n") ? lines.count - 1 : lines.count
        for i in 0..<max(count, 0) {
            let line = lines[i]
            var column: Int? = nil
            var word = false
            if let regex {
                let ns = line as NSString
                if let m = regex.firstMatch(in: line, range: NSRange(location: 0, length: ns.length)) {
                    column = (ns.substring(to: m.range.location) as String).count + 1
                    word = isWord(ns.substring(with: m.range), in: line, at: m.range.location)
                }
            } else if let range = line.range(of: query.q, options: query.caseSensitive ? [] : [.caseInsensitive]) {
                column = line.distance(from: line.startIndex, to: range.lowerBound) + 1
                let before = range.lowerBound == line.startIndex ? nil : line[line.index(before: range.lowerBound)]
                let after = range.upperBound == line.endIndex ? nil : line[range.upperBound]
                word = !(before.map { $0.isLetter || $0.isNumber || $0 == "_" } ?? false) && !(after.map { $0.isLetter || $0.isNumber || $0 == "_" } ?? false)
            }
            guard let column else { continue }
            out.append(SearchMatch(path: path, line: i + 1, column: column, text: String(line.prefix(1000)),
                                   before: Array(lines[max(0, i - 2)..<i]).map { String($0.prefix(1000)) },
                                   after: Array(lines[min(count, i + 1)..<min(count, i + 3)]).map { String($0.prefix(1000)) },
                                   exactWord: word, definition: definitions.contains("\(path):\(i + 1)")))
            if out.count >= maxMatches { return }
        }
    }

    static func isWord(_ match: String, in line: String, at utf16Offset: Int) -> Bool {
        let ns = line as NSString
        func wordChar(_ c: unichar) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95 }
        let start = utf16Offset, end = utf16Offset + (match as NSString).length
        let before = start > 0 ? wordChar(ns.character(at: start - 1)) : false
        let after = end < ns.length ? wordChar(ns.character(at: end)) : false
        return !before && !after
    }

    /// Symbols ranked: exact, then case-insensitive exact, prefix, substring, then fuzzy (subsequence).
    func symbols(projectID: String, q: String, kind: String?, limit: Int) async throws -> [Symbol] {
        guard q.utf8.count <= 200 else { throw APIError.validation("q must have at most 200 bytes", field: "q") }
        let rows = try await db.read { tx in
            if let kind {
                return try tx.query("SELECT name, kind, path, line, scope, language FROM project_symbols WHERE project_id = ? AND kind = ?", projectID, kind)
            }
            return try tx.query("SELECT name, kind, path, line, scope, language FROM project_symbols WHERE project_id = ?", projectID)
        }
        let lq = q.lowercased()
        func rank(_ name: String) -> Int? {
            if q.isEmpty { return 0 }
            if name == q { return 0 }
            let ln = name.lowercased()
            if ln == lq { return 1 }
            if name.hasPrefix(q) { return 2 }
            if ln.hasPrefix(lq) { return 3 }
            if ln.contains(lq) { return 4 }
            // Subsequence: every query character in order; tighter spans rank higher.
            var it = ln.makeIterator()
            var span = 0, started = false
            for c in lq {
                var found = false
                while let n = it.next() { if started { span += 1 }; if n == c { found = true; started = true; break } }
                if !found { return nil }
            }
            return 5 + min(span, 1000)
        }
        var scored: [(Int, Symbol)] = []
        for r in rows {
            let name = r.string("name") ?? ""
            guard let score = rank(name) else { continue }
            scored.append((score, Symbol(name: name, kind: r.string("kind") ?? "", path: r.string("path") ?? "", line: r.int("line") ?? 0,
                                         scope: r.string("scope"), language: r.string("language") ?? "")))
        }
        scored.sort { ($0.0, $0.1.name.count, $0.1.path, $0.1.line) < ($1.0, $1.1.name.count, $1.1.path, $1.1.line) }
        return scored.prefix(limit).map(\.1)
    }

    func findings(projectID: String) async throws -> [Finding] {
        try await db.read { tx in
            try tx.query("SELECT path, line, rule, severity, message, excerpt FROM project_findings WHERE project_id = ? ORDER BY path, line LIMIT 10000", projectID)
        }.map { r in
            Finding(path: r.string("path") ?? "", line: r.int("line") ?? 0, rule: r.string("rule") ?? "", severity: r.string("severity") ?? "",
                    message: r.string("message") ?? "", excerpt: r.string("excerpt") ?? "")
        }
    }

    func isIndexed(_ projectID: String) async throws -> Bool {
        try await db.read { tx in try tx.first("SELECT indexed_at FROM projects WHERE id = ?", projectID)?["indexed_at"] != .null }
    }
}
