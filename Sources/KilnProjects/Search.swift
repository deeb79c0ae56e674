import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// One matching line.
extension ProjectService {
    static let maxMatches = 10_000

    struct SearchQuery: Sendable {
        let q: String
        let regex: Bool
        let caseSensitive: Bool
        let pathGlob: String?
    }

    /// One matching line before it is shown: where it is and how it ranks. Text and context are
    /// read only for the page that is returned.
    struct Hit {
        let path: String
        let line: Int
        let column: Int
        let word: Bool
        let definition: Bool
        let start: Int
        let end: Int
        let stamp: TrigramIndex.Stamp
    }

    /// Every line of the project's indexed text files that matches, ranked, and the requested page of
    /// them. The trigram index narrows literals (and the literal part of a regular expression) to
    /// candidate files; every candidate is read and verified, so the result is exactly what scanning
    /// the indexed files would find. (A file changed since the last rescan is matched on what it
    /// holds now, but found only if its indexed trigrams admit the query.)
    func search(
        projectID: String, root: String, _ query: SearchQuery, offset: Int = 0, limit: Int = maxMatches
    ) async throws -> (items: [SearchMatch], total: Int) {
        guard !query.q.isEmpty, query.q.utf8.count <= 1000 else {
            throw APIError.validation("q must have 1 to 1000 bytes", field: "q")
        }
        var regex: NSRegularExpression? = nil
        if query.regex {
            do {
                regex = try NSRegularExpression(
                    pattern: query.q, options: query.caseSensitive ? [] : [.caseInsensitive])
            } catch { throw APIError.validation("q is not a valid regular expression", field: "q") }
        }
        let needle = Array((query.caseSensitive ? query.q : query.q.lowercased()).utf8)
        let ascii = query.q.utf8.allSatisfy { $0 < 0x80 }
        // Literals go byte by byte; expressions, and case-insensitive literals beyond ASCII (Unicode
        // case folding), line by line through Foundation.
        let fast = regex == nil && (query.caseSensitive || ascii)
        if regex == nil && needle.contains(10) { return ([], 0) }
        let keys: [UInt32]
        if let regex {
            keys =
                RegexLiteral.required(regex.pattern).map { TrigramIndex.keys(of: $0, asciiOnly: !query.caseSensitive) }
                ?? []
        } else {
            keys = TrigramIndex.keys(of: Array(query.q.utf8), asciiOnly: !query.caseSensitive)
        }
        let definitions = symbolTable(projectID).snapshot().definitions(named: query.q)
        var glob: GitIgnore? = nil
        if let g = query.pathGlob, !g.isEmpty {
            var gi = GitIgnore()
            gi.add(g, base: "")
            glob = gi
        }
        // The scan reads and matches file after file (up to the search timeout): off the cooperative pool.
        return try await Blocking.run { [self, regex, glob] in
            let snapshot = try index(projectID).snapshot()
            let deadline = Date().addingTimeInterval(searchTimeout)
            var hits: [Hit] = []
            var timedOut = false
            var checked = 0
            let reader = IndexedFileReader(root: root)
            snapshot.forEachCandidate(keys) { seg, doc in
                let path = seg.paths[Int(doc)]
                if let glob,
                    !glob.decide(path, isDirectory: false)
                        && !glob.decide((path as NSString).lastPathComponent, isDirectory: false)
                {
                    return true
                }
                checked += 1
                if checked % 256 == 0, Date() > deadline {
                    timedOut = true
                    return false
                }
                let stamp = seg.stamp(doc)
                guard let content = reader.read(path, stamp) else { return true }
                if fast {
                    ProjectService.literalHits(
                        path: path, stamp: stamp, content: content, needle: needle,
                        caseInsensitive: !query.caseSensitive,
                        definitions: definitions, into: &hits)
                } else if !ProjectService.lineHits(
                    path: path, stamp: stamp, content: content, query: query, regex: regex,
                    definitions: definitions, deadline: deadline, into: &hits)
                {
                    timedOut = true
                    return false
                }
                return hits.count < ProjectService.maxMatches
            }
            if timedOut {
                throw APIError.validation(
                    "The search took longer than \(Int(searchTimeout)) s and was stopped; make q more specific",
                    field: "q")
            }
            if hits.count > ProjectService.maxMatches { hits.removeLast(hits.count - ProjectService.maxMatches) }
            hits.sort { ($0.path, $0.line) < ($1.path, $1.line) }
            // Stable ranking: definitions, then whole-word hits, then the rest, each in path and line order.
            let ranked = hits.enumerated().sorted { a, b in
                let ra = a.element.definition ? 0 : (a.element.word ? 1 : 2)
                let rb = b.element.definition ? 0 : (b.element.word ? 1 : 2)
                return ra != rb ? ra < rb : a.offset < b.offset
            }.map(\.element)
            // The page's files are read once more for text and context.
            var page: [SearchMatch] = []
            var current: (path: String, bytes: [UInt8])? = nil
            for h in ranked.dropFirst(offset).prefix(limit) {
                if current?.path != h.path {
                    let bytes = reader.read(h.path, h.stamp).map { Array($0) } ?? []
                    current = (h.path, bytes)
                }
                current!.bytes.withUnsafeBytes { page.append(ProjectService.materialize(h, content: $0)) }
            }
            return (page, ranked.count)
        }
    }

    /// Lines holding a literal, found with memmem (or an ASCII-folding scan) over the content.
    static func literalHits(
        path: String, stamp: TrigramIndex.Stamp, content: UnsafeRawBufferPointer, needle: [UInt8],
        caseInsensitive: Bool, definitions: Set<String>, into hits: inout [Hit]
    ) {
        var lineNo = 1
        var counted = 0
        Bytes.linesContaining(content, needle, caseInsensitive: caseInsensitive) { start, end, pos in
            lineNo += Bytes.newlines(content, from: counted, to: start)
            counted = start
            let before = pos > start ? content[pos - 1] : 32
            let afterAt = pos + needle.count
            let after = afterAt < end ? content[afterAt] : 32
            hits.append(
                Hit(
                    path: path, line: lineNo, column: Bytes.scalars(content, start, pos) + 1,
                    word: !Bytes.isWordByte(before) && !Bytes.isWordByte(after),
                    definition: definitions.contains("\(path):\(lineNo)"), start: start, end: end, stamp: stamp))
            return hits.count < maxMatches
        }
    }

    /// Lines matching a regular expression (or a literal under Unicode case folding), line by line.
    /// False when the deadline passed.
    static func lineHits(
        path: String, stamp: TrigramIndex.Stamp, content: UnsafeRawBufferPointer, query: SearchQuery,
        regex: NSRegularExpression?, definitions: Set<String>, deadline: Date, into hits: inout [Hit]
    ) -> Bool {
        var start = 0
        var lineNo = 0
        let n = content.count
        while start < n {
            let end = Bytes.lineEnd(content, from: start)
            defer { start = end + 1 }
            lineNo += 1
            if lineNo % 1024 == 0, Date() > deadline { return false }
            let line = Bytes.text(content, start, end)
            var column: Int? = nil
            var word = false
            if let regex {
                let ns = line as NSString
                var found: NSRange? = nil
                var late = false
                // Progress reports let a runaway match be stopped at the deadline.
                regex.enumerateMatches(
                    in: line, options: [.reportProgress], range: NSRange(location: 0, length: ns.length)
                ) { m, _, stop in
                    if let m {
                        found = m.range
                        stop.pointee = true
                    } else if Date() > deadline {
                        late = true
                        stop.pointee = true
                    }
                }
                if late { return false }
                if let r = found {
                    column = (ns.substring(to: r.location) as String).count + 1
                    word = isWord(ns.substring(with: r), in: line, at: r.location)
                }
            } else if let range = line.range(of: query.q, options: query.caseSensitive ? [] : [.caseInsensitive]) {
                column = line.distance(from: line.startIndex, to: range.lowerBound) + 1
                let before = range.lowerBound == line.startIndex ? nil : line[line.index(before: range.lowerBound)]
                let after = range.upperBound == line.endIndex ? nil : line[range.upperBound]
                word =
                    !(before.map { $0.isLetter || $0.isNumber || $0 == "_" } ?? false)
                    && !(after.map { $0.isLetter || $0.isNumber || $0 == "_" } ?? false)
            }
            guard let column else { continue }
            hits.append(
                Hit(
                    path: path, line: lineNo, column: column, word: word,
                    definition: definitions.contains("\(path):\(lineNo)"),
                    start: start, end: end, stamp: stamp))
            if hits.count >= maxMatches { return true }
        }
        return true
    }

    /// A hit with its line and two lines of context each side. The file is read again, so a hit
    /// past its end (the file shrank meanwhile) keeps what is left.
    static func materialize(_ h: Hit, content: UnsafeRawBufferPointer) -> SearchMatch {
        let n = content.count
        guard h.start <= h.end, h.end <= n else {
            return SearchMatch(
                path: h.path, line: h.line, column: h.column, text: "", before: [], after: [], exactWord: h.word,
                definition: h.definition)
        }
        var before: [String] = []
        var s = h.start
        while before.count < 2 && s > 0 {
            let (ps, pe) = Bytes.line(content, around: s - 1)
            before.insert(String(Bytes.text(content, ps, pe).prefix(1000)), at: 0)
            s = ps
        }
        var after: [String] = []
        var e = h.end
        while after.count < 2 && e + 1 < n {
            let ne = Bytes.lineEnd(content, from: e + 1)
            after.append(String(Bytes.text(content, e + 1, ne).prefix(1000)))
            e = ne
        }
        return SearchMatch(
            path: h.path, line: h.line, column: h.column,
            text: String(Bytes.text(content, h.start, h.end).prefix(1000)),
            before: before, after: after, exactWord: h.word, definition: h.definition)
    }

    static func isWord(_ match: String, in line: String, at utf16Offset: Int) -> Bool {
        let ns = line as NSString
        func wordChar(_ c: unichar) -> Bool {
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95
        }
        let start = utf16Offset
        let end = utf16Offset + (match as NSString).length
        let before = start > 0 ? wordChar(ns.character(at: start - 1)) : false
        let after = end < ns.length ? wordChar(ns.character(at: end)) : false
        return !before && !after
    }

    /// Symbols ranked: exact, then case-insensitive exact, prefix, substring, then fuzzy (subsequence).
    func symbols(projectID: String, q: String, kind: String?, limit: Int) throws -> [Symbol] {
        guard q.utf8.count <= 200 else { throw APIError.validation("q must have at most 200 bytes", field: "q") }
        return symbolTable(projectID).snapshot().lookup(q, kind: kind, limit: limit)
    }

    func findings(projectID: String) async throws -> [Finding] { try await store.findings(projectID) }
}

/// The literal text a regular expression's every match must contain, read off simply: the longest
/// run of plain characters outside groups, classes and optional parts. Nil (no narrowing) for
/// alternation, inline flags, or no run of three bytes.
enum RegexLiteral {
    static func required(_ pattern: String) -> [UInt8]? {
        let p = Array(pattern.utf8)
        if p.contains(UInt8(ascii: "|")) || pattern.contains("(?") { return nil }
        var best: [UInt8] = []
        var run: [UInt8] = []
        var depth = 0
        var i = 0
        func endRun() {
            if run.count > best.count { best = run }
            run = []
        }
        func isAlnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
        /// Skips a quantifier at `i`; true when there was one.
        func skipQuantifier() -> Bool {
            guard i < p.count else { return false }
            switch p[i] {
            case UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "?"):
                i += 1
            case UInt8(ascii: "{"):
                while i < p.count && p[i] != UInt8(ascii: "}") { i += 1 }
                i += 1
            default:
                return false
            }
            if i < p.count && (p[i] == UInt8(ascii: "?") || p[i] == UInt8(ascii: "+")) { i += 1 }
            return true
        }
        while i < p.count {
            let c = p[i]
            var literal: UInt8
            switch c {
            case UInt8(ascii: "\\"):
                guard i + 1 < p.count else { return nil }
                let e = p[i + 1]
                i += 2
                if isAlnum(e) || e >= 0x80 {
                    endRun()
                    _ = skipQuantifier()
                    continue
                }
                literal = e
            case UInt8(ascii: "["):
                endRun()
                i += 1
                if i < p.count && p[i] == UInt8(ascii: "^") { i += 1 }
                if i < p.count && p[i] == UInt8(ascii: "]") { i += 1 }
                while i < p.count && p[i] != UInt8(ascii: "]") { i += p[i] == UInt8(ascii: "\\") ? 2 : 1 }
                i += 1
                _ = skipQuantifier()
                continue
            case UInt8(ascii: "("):
                depth += 1
                endRun()
                i += 1
                continue
            case UInt8(ascii: ")"):
                depth -= 1
                endRun()
                i += 1
                _ = skipQuantifier()
                continue
            case UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "$"), UInt8(ascii: "*"), UInt8(ascii: "+"),
                UInt8(ascii: "?"), UInt8(ascii: "{"):
                endRun()
                i += 1
                continue
            default:
                if c >= 0x80 {
                    endRun()
                    i += 1
                    continue
                }
                literal = c
                i += 1
            }
            let quantified = i < p.count ? p[i] : 0
            if skipQuantifier() {
                // `x+` still needs one x; `x*`, `x?` and `x{…}` may need none.
                if quantified == UInt8(ascii: "+") && depth == 0 { run.append(literal) }
                endRun()
                continue
            }
            if depth == 0 { run.append(literal) } else { endRun() }
        }
        endRun()
        return best.count >= 3 ? best : nil
    }
}
