/// A substring index over documents (SQLite FTS5 with the trigram tokenizer). SQLite specifics stay
/// here; a PostgreSQL store would back the same calls with pg_trgm.
public enum FullText {
    /// DDL for an index named `name` with the given unindexed key columns.
    public static func createSQL(_ name: String, keys: [String]) -> String {
        let cols = keys.map { "\($0) UNINDEXED" }.joined(separator: ", ")
        return "CREATE VIRTUAL TABLE \(name) USING fts5(\(cols), content, tokenize = 'trigram');"
    }

    /// A MATCH expression for the literal `text` (a phrase of its trigrams); nil when shorter than
    /// three characters (a trigram index cannot narrow those).
    public static func literalQuery(_ text: String) -> String? {
        guard text.count >= 3 else { return nil }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
