import Foundation
import Synchronization

/// The domains write their SQL once, in the subset SQLite and PostgreSQL share (placeholders,
/// upserts with ON CONFLICT, RETURNING, integer milliseconds for time, JSON as text). What the two
/// spell differently is rewritten here for PostgreSQL, once per distinct statement (cached):
/// - `?` placeholders become `$1, $2…` (outside string literals and quoted names);
/// - `INSERT OR IGNORE INTO …` becomes `INSERT INTO … ON CONFLICT DO NOTHING`; `instr(` is `strpos(`;
/// - in schema changes, SQLite's types become PostgreSQL's (INTEGER → BIGINT, since Kiln keeps
///   milliseconds and sizes in them; BLOB → BYTEA; REAL → DOUBLE PRECISION), a column compared
///   case-insensitively (`COLLATE NOCASE`) becomes CITEXT, `WITHOUT ROWID` goes, and SQLite-only
///   statements (FTS5 tables, PRAGMA) are left out. A migration whose PostgreSQL form differs more
///   than that carries it (`Migration.postgres`).
enum PostgresDialect {
    private static let cache = Mutex<[String: String]>([:])  // architecture: process-wide

    /// A statement with parameters, as PostgreSQL reads it.
    static func statement(_ sql: String) -> String {
        if let hit = cache.withLock({ $0[sql] }) { return hit }
        var out = numberPlaceholders(sql)
        if let r = out.range(
            of: "INSERT OR IGNORE INTO", options: [.caseInsensitive, .anchored], range: trimmedStart(out))
        {
            out.replaceSubrange(r, with: "INSERT INTO")
            out = out.trimmingCharacters(in: .whitespacesAndNewlines) + " ON CONFLICT DO NOTHING"
        }
        out = out.replacingOccurrences(of: "instr(", with: "strpos(")
        // SQLite's `x IS ?` / `x IS NOT ?` compare with NULL as a value.
        out = out.replacingOccurrences(
            of: #"\bIS NOT (\$[0-9]+)"#, with: "IS DISTINCT FROM $1", options: .regularExpression)
        out = out.replacingOccurrences(
            of: #"\bIS (\$[0-9]+)"#, with: "IS NOT DISTINCT FROM $1", options: .regularExpression)
        // `? IS NULL` gives the server no type for the parameter; text takes any value.
        out = out.replacingOccurrences(
            of: #"(\$[0-9]+) IS (NOT )?NULL"#, with: "CAST($1 AS TEXT) IS $2NULL", options: .regularExpression)
        cache.withLock { c in
            if c.count > 4096 { c.removeAll() }
            c[sql] = out
        }
        return out
    }

    private static func trimmedStart(_ s: String) -> Range<String.Index> {
        let start = s.firstIndex { !$0.isWhitespace } ?? s.endIndex
        return start..<s.endIndex
    }

    /// Column names Kiln uses that PostgreSQL reserves: quoted.
    static let reservedNames: Set<String> = ["binary"]

    /// `?` → `$n` and reserved column names quoted, skipping '…' literals, "…" names and --
    /// comments.
    static func numberPlaceholders(_ sql: String) -> String {
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var n = 0
        var quote: Character?
        var comment = false
        var prev: Character = " "
        var word = ""
        func flushWord() {
            guard !word.isEmpty else { return }
            out += reservedNames.contains(word.lowercased()) ? "\"\(word)\"" : word
            word = ""
        }
        for c in sql {
            if comment {
                if c == "\n" { comment = false }
            } else if let q = quote {
                if c == q { quote = nil }
            } else if c.isLetter || c.isNumber || c == "_" {
                word.append(c)
                prev = c
                continue
            } else {
                flushWord()
                if c == "'" || c == "\"" {
                    quote = c
                } else if c == "-" && prev == "-" {
                    comment = true
                } else if c == "?" {
                    n += 1
                    out += "$\(n)"
                    prev = c
                    continue
                }
            }
            out.append(c)
            prev = c
        }
        flushWord()
        return out
    }

    /// A migration's SQL (several statements) as PostgreSQL's schema language.
    static func schema(_ sql: String) -> String {
        var statements: [String] = []
        for raw in splitStatements(sql) {
            var s = raw
            let head = s.trimmingCharacters(in: .whitespacesAndNewlines).uppercased()
            if head.hasPrefix("CREATE VIRTUAL TABLE") || head.hasPrefix("PRAGMA") { continue }
            if head.hasPrefix("DROP TABLE ") && !head.hasPrefix("DROP TABLE IF EXISTS") {
                s = s.replacingOccurrences(of: "DROP TABLE ", with: "DROP TABLE IF EXISTS ")
            }
            if head.hasPrefix("ALTER TABLE") && head.contains("DROP COLUMN") && !head.contains("IF EXISTS") {
                s = s.replacingOccurrences(of: "DROP COLUMN ", with: "DROP COLUMN IF EXISTS ")
            }
            s = replaceWords(
                s,
                [
                    ("INTEGER", "BIGINT"), ("BLOB", "BYTEA"), ("REAL", "DOUBLE PRECISION"), ("WITHOUT ROWID", ""),
                ])
            s = s.replacingOccurrences(
                of: #"\bTEXT(\s+[^,()]*?)\s+COLLATE NOCASE"#, with: "CITEXT$1", options: .regularExpression)
            s = s.replacingOccurrences(of: " COLLATE NOCASE", with: "")
            statements.append(numberPlaceholders(s))
        }
        return statements.joined(separator: ";\n")
    }

    /// Whole words (outside literals) replaced; `INTEGER PRIMARY KEY` stays a plain key (Kiln
    /// gives its integer keys explicitly).
    private static func replaceWords(_ s: String, _ pairs: [(String, String)]) -> String {
        var out = s
        for (from, to) in pairs {
            out = out.replacingOccurrences(
                of: #"\b"# + NSRegularExpression.escapedPattern(for: from) + #"\b"#, with: to,
                options: [.regularExpression])
        }
        return out
    }

    /// Splits at `;` outside literals and quoted names (Kiln's migrations have no trigger bodies).
    static func splitStatements(_ sql: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var quote: Character?
        for c in sql {
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "'" || c == "\"" {
                quote = c
            } else if c == ";" {
                if !current.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { parts.append(current) }
                current = ""
                continue
            }
            current.append(c)
        }
        if !current.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { parts.append(current) }
        return parts
    }
}
