import Foundation
import KilnCore
import KilnHTTP
import KilnStore

enum Findings {
    static let largeFile = 1 << 20
    /// Each secret rule with the bit of the anchors its matches contain.
    static let secretRules: [(String, NSRegularExpression, String, UInt16)] = [
        (
            "private-key",
            try! NSRegularExpression(
                pattern: "-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"),
            "A private key is committed", 1 << 0
        ),
        (
            "aws-access-key", try! NSRegularExpression(pattern: "\\b(?:AKIA|ASIA)[0-9A-Z]{16}\\b"),
            "An AWS access key id", 1 << 1
        ),
        (
            "github-token", try! NSRegularExpression(pattern: "\\bgh[pousr]_[A-Za-z0-9]{36,}\\b"), "A GitHub token",
            1 << 2
        ),
        ("slack-token", try! NSRegularExpression(pattern: "\\bxox[baprs]-[A-Za-z0-9-]{10,}"), "A Slack token", 1 << 3),
        (
            "stripe-key", try! NSRegularExpression(pattern: "\\b(?:sk|rk)_live_[A-Za-z0-9]{16,}"), "A Stripe live key",
            1 << 4
        ),
        (
            "google-api-key", try! NSRegularExpression(pattern: "\\bAIza[0-9A-Za-z_-]{35}\\b"), "A Google API key",
            1 << 5
        ),
        ("kiln-api-key", try! NSRegularExpression(pattern: "\\bkf_[A-Za-z0-9]{40}\\b"), "A Kiln API key", 1 << 6),
    ]
    static let mergeBit: UInt16 = 1 << 7, todoBit: UInt16 = 1 << 8, assignmentBit: UInt16 = 1 << 9
    static let assignment = try! NSRegularExpression(
        pattern:
            #"(?i)\b([a-z0-9_]*(?:secret|token|passwd|password|api[_-]?key|access[_-]?key)[a-z0-9_]*)\s*[:=]\s*["']([^"'\s]{16,})["']"#
    )
    // Spelled in parts so that scanners for unfinished-work markers do not flag this rule itself.
    static let todo = try! NSRegularExpression(pattern: "\\b(TO" + "DO|FIX" + "ME)\\b")

    /// Literal text every match of some rules contains. Only lines holding an anchor are checked, with
    /// the rules whose anchor they hold, and only in files whose trigrams include the anchor's.
    struct Anchor {
        let bytes: [UInt8]
        let caseInsensitive: Bool
        let rules: UInt16
        let keys: [UInt32]
        init(_ s: String, _ rules: UInt16, caseInsensitive: Bool = false) {
            bytes = Array((caseInsensitive ? s.lowercased() : s).utf8)
            self.caseInsensitive = caseInsensitive
            self.rules = rules
            keys = TrigramIndex.keys(of: bytes, asciiOnly: true)
        }
    }
    /// At most 32: `anchorMasks` gives each a bit.
    static let anchors: [Anchor] =
        [
            Anchor("PRIVATE KEY", 1 << 0), Anchor("AKIA", 1 << 1), Anchor("ASIA", 1 << 1), Anchor("ghp_", 1 << 2),
            Anchor("gho_", 1 << 2),
            Anchor("ghu_", 1 << 2), Anchor("ghs_", 1 << 2), Anchor("ghr_", 1 << 2), Anchor("xox", 1 << 3),
            Anchor("_live_", 1 << 4),
            Anchor("AIza", 1 << 5), Anchor("kf_", 1 << 6), Anchor("<<<<<<< ", mergeBit), Anchor("=======", mergeBit),
            Anchor(">>>>>>> ", mergeBit),
            Anchor("TO" + "DO", todoBit), Anchor("FIX" + "ME", todoBit),
        ]
        + ["secret", "token", "passw", "apikey", "api_key", "api-key", "accesskey", "access_key", "access-key"].map {
            Anchor($0, assignmentBit, caseInsensitive: true)
        }

    /// Keeps the first 4 characters of a secret: enough to recognise it, never enough to use it.
    static func mask(_ s: String) -> String {
        String(s.prefix(4)) + String(repeating: "•", count: max(4, min(12, s.count - 4)))
    }

    static func entropy(_ s: String) -> Double {
        var counts: [Character: Int] = [:]
        for c in s { counts[c, default: 0] += 1 }
        let n = Double(s.count)
        return counts.values.reduce(0) { $0 - Double($1) / n * log2(Double($1) / n) }
    }

    static func largeFileFinding(path: String, size: Int) -> Finding? {
        size > largeFile
            ? Finding(
                path: path, line: 0, rule: "large-file", severity: "info", message: "File is \(size) bytes", excerpt: ""
            ) : nil
    }

    /// The anchors (bit i for `anchors[i]`) all of whose trigrams a file holds (`contains` answers
    /// for one trigram key; the index builder knows): a file without any has no findings but the
    /// size rule, and is not read for them.
    static func anchorMask(contains: (UInt32) -> Bool) -> UInt32 {
        var mask: UInt32 = 0
        for (i, a) in anchors.enumerated() where a.keys.allSatisfy(contains) { mask |= 1 << UInt32(i) }
        return mask
    }

    /// Findings of one file's text. `anchorMask` names the anchors whose trigrams the file holds
    /// (every anchor when not given): only those are looked for.
    static func scan(path: String, content: UnsafeRawBufferPointer, anchorMask: UInt32 = .max) -> [Finding] {
        var out: [Finding] = []
        guard content.count > 0 else { return out }
        // Line start → the rules whose anchors the line holds.
        var lines: [Int: UInt16] = [:]
        for (i, a) in anchors.enumerated() where anchorMask & (1 << UInt32(i)) != 0 {
            Bytes.linesContaining(content, a.bytes, caseInsensitive: a.caseInsensitive) { start, _, _ in
                lines[start, default: 0] |= a.rules
                return true
            }
        }
        guard !lines.isEmpty else { return out }
        var lineNo = 1
        var counted = 0
        for start in lines.keys.sorted() {
            lineNo += Bytes.newlines(content, from: counted, to: start)
            counted = start
            let end = Bytes.lineEnd(content, from: start)
            if end - start > 4000 { continue }
            let bytes = UnsafeRawBufferPointer(rebasing: content[start..<end])
            var rules = lines[start] ?? 0
            if rules & assignmentBit != 0 && !mayAssignSecret(bytes) { rules &= ~assignmentBit }
            if rules == 0 { continue }
            // The expressions (through Foundation, which copies the line to UTF-16) only for the
            // rules that need them; a to-do note is recognised on the bytes.
            var finding: Finding? = nil
            if rules & ~todoBit != 0 {
                finding = check(
                    path: path, line: String(decoding: bytes, as: UTF8.self), number: lineNo, rules: rules & ~todoBit)
            }
            if finding == nil, rules & todoBit != 0, let word = todoWord(bytes) {
                finding = Finding(
                    path: path, line: lineNo, rule: word.lowercased(), severity: "low", message: "\(word) note",
                    excerpt: String(
                        String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces).prefix(300)))
            }
            if let finding { out.append(finding) }
        }
        return out
    }

    /// Whether the line could match `assignment`: `=` or `:`, optional spaces, a quote, then 16 or more
    /// bytes that are neither quote nor space and a closing quote (bytes, so never fewer than the
    /// expression's characters: a line this refuses, the expression refuses too).
    static func mayAssignSecret(_ line: UnsafeRawBufferPointer) -> Bool {
        let n = line.count
        var i = 0
        func isSpace(_ c: UInt8) -> Bool { c == 32 || (c >= 9 && c <= 13) }
        while i < n {
            let c = line[i]
            i += 1
            guard c == 61 || c == 58 else { continue }
            var j = i
            while j < n && isSpace(line[j]) { j += 1 }
            guard j < n, line[j] == 34 || line[j] == 39 else { continue }
            j += 1
            let from = j
            while j < n && line[j] != 34 && line[j] != 39 && !isSpace(line[j]) { j += 1 }
            if j - from >= 16 && j < n && (line[j] == 34 || line[j] == 39) { return true }
        }
        return false
    }

    /// A to-do or fix-me marker (the words of `todo`) as a whole word on the line (ASCII word characters).
    static func todoWord(_ line: UnsafeRawBufferPointer) -> String? {
        for word in ["TO" + "DO", "FIX" + "ME"] {
            let w = Array(word.utf8)
            var from = 0
            while let at = Bytes.find(line, from: from, w, caseInsensitive: false) {
                let before = at > 0 ? line[at - 1] : 32
                let after = at + w.count < line.count ? line[at + w.count] : 32
                if !Bytes.isWordByte(before) && !Bytes.isWordByte(after) { return word }
                from = at + 1
            }
        }
        return nil
    }

    /// The rules on one line (those `rules` names; every rule when not given).
    static func check(path: String, line original: String, number n: Int, rules: UInt16 = .max) -> Finding? {
        var line = original
        let ns = line as NSString
        let range = NSRange(location: 0, length: ns.length)
        var secrets: [String] = []
        var rule: (String, String)? = nil
        for (name, rx, msg, bit) in secretRules where rules & bit != 0 {
            for m in rx.matches(in: line, range: range) {
                secrets.append(ns.substring(with: m.range))
                rule = rule ?? (name, msg)
            }
        }
        // Secret-looking assignments are masked on every line, whatever else the line matched (a line
        // with one always holds an assignment anchor).
        for m in rules & assignmentBit != 0 ? assignment.matches(in: line, range: range) : [] {
            let value = ns.substring(with: m.range(at: 2))
            if entropy(value) >= 3.5 {
                secrets.append(value)
                rule = rule ?? ("high-entropy-assignment", "A secret-looking value is assigned in code")
            }
        }
        if let (name, msg) = rule {
            for s in secrets where s.count > 4 { line = line.replacingOccurrences(of: s, with: mask(s)) }
            return Finding(
                path: path, line: n, rule: name, severity: "high", message: msg, excerpt: String(line.prefix(300)))
        }
        if rules & mergeBit != 0, line.hasPrefix("<<<<<<< ") || line == "=======" || line.hasPrefix(">>>>>>> ") {
            return Finding(
                path: path, line: n, rule: "merge-conflict", severity: "high", message: "A merge-conflict marker",
                excerpt: String(line.prefix(300)))
        }
        if rules & todoBit != 0, let m = todo.firstMatch(in: line, range: range) {
            return Finding(
                path: path, line: n, rule: ns.substring(with: m.range).lowercased(), severity: "low",
                message: "\(ns.substring(with: m.range)) note",
                excerpt: String(line.trimmingCharacters(in: .whitespaces).prefix(300)))
        }
        return nil
    }
}

/// Progress of a rescan, published as SSE events.
