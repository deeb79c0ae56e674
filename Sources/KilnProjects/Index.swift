import CShims
import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization

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
        CREATE VIRTUAL TABLE project_fts USING fts5(project_id UNINDEXED, path UNINDEXED, content, tokenize = 'trigram');
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

    /// Kiln's own trigram index (files under `<data-dir>/index/<project>`) replaces FTS5: every
    /// project is re-indexed once after this migration.
    static let ownIndex = Migration(module: "projects", version: 3, name: "own trigram index replaces FTS5; symbols by name", sql: """
        DROP TABLE project_fts;
        ALTER TABLE project_files DROP COLUMN fts_rowid;
        DELETE FROM project_files;
        DELETE FROM project_symbols;
        DELETE FROM project_findings;
        UPDATE projects SET index_status = 'not_indexed', indexed_at = NULL;
        CREATE INDEX project_symbols_by_name ON project_symbols (project_id, name);
        """)

    /// Symbols move to each project's own table file (`SymbolTable`); the next rescan of every
    /// project extracts them again (its trigram index stays).
    static let symbolTable = Migration(module: "projects", version: 4, name: "symbols move to the index folder", sql: """
        DROP TABLE project_symbols;
        UPDATE projects SET index_status = 'not_indexed', indexed_at = NULL;
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
    /// Each secret rule with the bit of the anchors its matches contain.
    static let secretRules: [(String, NSRegularExpression, String, UInt16)] = [
        ("private-key", try! NSRegularExpression(pattern: "-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"), "A private key is committed", 1 << 0),
        ("aws-access-key", try! NSRegularExpression(pattern: "\\b(?:AKIA|ASIA)[0-9A-Z]{16}\\b"), "An AWS access key id", 1 << 1),
        ("github-token", try! NSRegularExpression(pattern: "\\bgh[pousr]_[A-Za-z0-9]{36,}\\b"), "A GitHub token", 1 << 2),
        ("slack-token", try! NSRegularExpression(pattern: "\\bxox[baprs]-[A-Za-z0-9-]{10,}"), "A Slack token", 1 << 3),
        ("stripe-key", try! NSRegularExpression(pattern: "\\b(?:sk|rk)_live_[A-Za-z0-9]{16,}"), "A Stripe live key", 1 << 4),
        ("google-api-key", try! NSRegularExpression(pattern: "\\bAIza[0-9A-Za-z_-]{35}\\b"), "A Google API key", 1 << 5),
        ("kiln-api-key", try! NSRegularExpression(pattern: "\\bkf_[A-Za-z0-9]{40}\\b"), "A Kiln API key", 1 << 6),
    ]
    static let mergeBit: UInt16 = 1 << 7, todoBit: UInt16 = 1 << 8, assignmentBit: UInt16 = 1 << 9
    static let assignment = try! NSRegularExpression(pattern: #"(?i)\b([a-z0-9_]*(?:secret|token|passwd|password|api[_-]?key|access[_-]?key)[a-z0-9_]*)\s*[:=]\s*["']([^"'\s]{16,})["']"#)
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
    static let anchors: [Anchor] = [
        Anchor("PRIVATE KEY", 1 << 0), Anchor("AKIA", 1 << 1), Anchor("ASIA", 1 << 1), Anchor("ghp_", 1 << 2), Anchor("gho_", 1 << 2),
        Anchor("ghu_", 1 << 2), Anchor("ghs_", 1 << 2), Anchor("ghr_", 1 << 2), Anchor("xox", 1 << 3), Anchor("_live_", 1 << 4),
        Anchor("AIza", 1 << 5), Anchor("kf_", 1 << 6), Anchor("<<<<<<< ", mergeBit), Anchor("=======", mergeBit), Anchor(">>>>>>> ", mergeBit),
        Anchor("TO" + "DO", todoBit), Anchor("FIX" + "ME", todoBit),
    ] + ["secret", "token", "passw", "apikey", "api_key", "api-key", "accesskey", "access_key", "access-key"].map {
        Anchor($0, assignmentBit, caseInsensitive: true)
    }

    /// Keeps the first 4 characters of a secret: enough to recognise it, never enough to use it.
    static func mask(_ s: String) -> String { String(s.prefix(4)) + String(repeating: "•", count: max(4, min(12, s.count - 4))) }

    static func entropy(_ s: String) -> Double {
        var counts: [Character: Int] = [:]
        for c in s { counts[c, default: 0] += 1 }
        let n = Double(s.count)
        return counts.values.reduce(0) { $0 - Double($1) / n * log2(Double($1) / n) }
    }

    static func largeFileFinding(path: String, size: Int) -> Finding? {
        size > largeFile ? Finding(path: path, line: 0, rule: "large-file", severity: "info", message: "File is \(size) bytes", excerpt: "") : nil
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
        var lineNo = 1, counted = 0
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
            if rules & ~todoBit != 0 { finding = check(path: path, line: String(decoding: bytes, as: UTF8.self), number: lineNo, rules: rules & ~todoBit) }
            if finding == nil, rules & todoBit != 0, let word = todoWord(bytes) {
                finding = Finding(path: path, line: lineNo, rule: word.lowercased(), severity: "low", message: "\(word) note",
                                  excerpt: String(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespaces).prefix(300)))
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
                let before = at > 0 ? line[at - 1] : 32, after = at + w.count < line.count ? line[at + w.count] : 32
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
            for m in rx.matches(in: line, range: range) { secrets.append(ns.substring(with: m.range)); rule = rule ?? (name, msg) }
        }
        // Secret-looking assignments are masked on every line, whatever else the line matched (a line
        // with one always holds an assignment anchor).
        for m in rules & assignmentBit != 0 ? assignment.matches(in: line, range: range) : [] {
            let value = ns.substring(with: m.range(at: 2))
            if entropy(value) >= 3.5 { secrets.append(value); rule = rule ?? ("high-entropy-assignment", "A secret-looking value is assigned in code") }
        }
        if let (name, msg) = rule {
            for s in secrets where s.count > 4 { line = line.replacingOccurrences(of: s, with: mask(s)) }
            return Finding(path: path, line: n, rule: name, severity: "high", message: msg, excerpt: String(line.prefix(300)))
        }
        if rules & mergeBit != 0, line.hasPrefix("<<<<<<< ") || line == "=======" || line.hasPrefix(">>>>>>> ") {
            return Finding(path: path, line: n, rule: "merge-conflict", severity: "high", message: "A merge-conflict marker", excerpt: String(line.prefix(300)))
        }
        if rules & todoBit != 0, let m = todo.firstMatch(in: line, range: range) {
            return Finding(path: path, line: n, rule: ns.substring(with: m.range).lowercased(), severity: "low",
                           message: "\(ns.substring(with: m.range)) note", excerpt: String(line.trimmingCharacters(in: .whitespaces).prefix(300)))
        }
        return nil
    }
}

/// Progress of a rescan, published as SSE events.
public struct RescanStats: Codable, Sendable {
    public var filesSeen = 0
    public var indexed = 0
    /// Of the files indexed, those whose content another file of this rescan already has (kept as copies).
    public var copies = 0
    public var skipped = 0
    public var unchanged = 0
    public var removed = 0
    public var bytes = 0
    public var symbols = 0
    public var findings = 0
}

/// A file's mtime in nanoseconds (what the index stores to notice changes).
func modificationNanos(_ st: stat) -> Int64 { Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec) }

/// A file the walk found, valid while it is visited: its folder (open) and name, and whether the
/// folder listed it as a regular file (else a symlink).
struct WalkedFile {
    let directory: Int32
    let name: String
    let isRegular: Bool

    /// The file's lstat, relative to its folder (the kernel does not look the whole path up again).
    func lstat(_ st: inout stat) -> Bool { fstatat(directory, name, &st, AT_SYMLINK_NOFOLLOW) == 0 }
}

/// A file a rescan must read: new, or its size or mtime changed.
struct RescanItem: Sendable {
    let path: String
    /// The file to read: the real path when `path` is a symlink (opened without following links).
    let full: String
    let device: UInt64
    let inode: UInt64
    let oldHash: String?
    let known: Bool
    /// A new regular file the walk did not stat: the reader opens it beneath the project's folder
    /// (through no symlink) and takes its device and inode from the open file.
    var beneath = false
    var file: FileToRead { FileToRead(path: path, full: full, device: device, inode: inode) }

    /// The item with the identity of the file the reader opened.
    func identified(_ st: stat) -> RescanItem {
        RescanItem(path: path, full: full, device: UInt64(st.st_dev), inode: UInt64(st.st_ino), oldHash: oldHash, known: known)
    }
}

/// What reading one file produced.
struct RescanResult: Sendable {
    let file: FileToRead
    var path: String { file.path }
    let size: Int
    let mtime: Int64
    let hash: String?
    let binary: Bool
    /// The findings anchors whose trigrams the text holds (`Findings.anchorMask`).
    var anchors: UInt32 = 0
    /// False when the content hash matched the stored one (only size and mtime are updated).
    let contentChanged: Bool
    /// Whether the file was known before (its old rows need deleting).
    let known: Bool
    /// Indexed as a copy of another file's content: its findings are that file's.
    var copy = false
}

/// A file of the same content as one read before it in the same rescan (`content`): the second pass
/// gives it that file's findings, and its symbols too when `symbolsReused` (both are read the same
/// way, in the same language), instead of reading it again.
struct RescanCopy: Sendable {
    let file: FileToRead
    let length: Int
    let anchors: UInt32
    let language: String?
    let symbolsReused: Bool
    let content: RescanContents.Entry
}

/// A file as the walk found it: its path in the project, the path to open (a symlink's target) and
/// the identity it had (a file replaced since is not read).
struct FileToRead: Sendable {
    let path: String
    let full: String
    let device: UInt64
    let inode: UInt64
}

/// A file whose symbols the second pass extracts (it was indexed as text, in a language we read).
struct SymbolItem: Sendable {
    let path: String
    let full: String
    let device: UInt64
    let inode: UInt64
    let language: String
}

/// State the rescan threads share: a work queue that may still be filling (the walk feeds it while
/// the readers drain it), counters, a stop flag.
final class RescanShared<Item: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Item]
    private var cursor = 0
    private var closed: Bool
    /// Time the takers spent waiting for items (the walk was behind), for the rescan log.
    private var waited: UInt64 = 0
    var waitedNanos: UInt64 { condition.lock(); defer { condition.unlock() }; return waited }
    let stats: Mutex<RescanStats>
    private let stopFlag = Mutex(false)

    /// A queue holding `items`; `open` ones take more with `push` until `close`.
    init(items: [Item] = [], open: Bool = false, stats: RescanStats) {
        self.items = items; closed = !open; self.stats = Mutex(stats)
    }

    var isStopped: Bool { stopFlag.withLock { $0 } }

    func push(_ batch: [Item]) {
        guard !batch.isEmpty else { return }
        condition.lock(); items += batch; condition.broadcast(); condition.unlock()
    }

    func close() { condition.lock(); closed = true; condition.broadcast(); condition.unlock() }

    /// Ends the work early (cancelled, or a thread failed): every waiting thread returns.
    func stop() { stopFlag.withLock { $0 = true }; close() }

    /// The next item, waiting while the queue is open and empty; nil when it is done or stopped.
    func next() -> Item? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if isStopped { return nil }
            if cursor < items.count { defer { cursor += 1 }; return items[cursor] }
            if closed { return nil }
            let t0 = kilnMonotonicNanos()
            condition.wait()
            waited += kilnMonotonicNanos() - t0
        }
    }
}

/// What the database knows of a file from the last rescan.
struct StoredFile: Sendable { let size: Int; let mtime: Int64; let hash: String?; let binary: Bool }

/// The first stage of a rescan, on a thread of its own: lists the files (git's view, or the built-in
/// walk as it goes), stats those it knows (and symlinks, and whatever git lists), and feeds those
/// that must be read to the queue, so reading starts with the first directory rather than after the
/// last. Unchanged files are only counted.
final class RescanWalk: @unchecked Sendable {
    let root: String
    let stored: [String: StoredFile]
    /// Paths the trigram index holds.
    let live: Set<String>
    let symbolsComplete: Bool
    /// Whether the readers open new files beneath the root (so the walk need not stat them).
    let beneath: Bool
    let queue: RescanShared<RescanItem>
    /// The stored files the walk found (the others are gone); only those, so the first index of a
    /// tree hashes no path here.
    private(set) var seen = Set<String>()
    /// Unchanged text files whose symbols must be extracted again (the symbol table was lost).
    private(set) var reextract: [SymbolItem] = []
    private(set) var duration: UInt64 = 0

    init(root: String, stored: [String: StoredFile], live: Set<String>, symbolsComplete: Bool, beneath: Bool,
         queue: RescanShared<RescanItem>) {
        self.root = root; self.stored = stored; self.live = live; self.symbolsComplete = symbolsComplete
        self.beneath = beneath; self.queue = queue
        seen.reserveCapacity(stored.count)
    }

    /// Walks `listed` (git's list) or the tree itself, then closes the queue.
    func run(_ listed: [String]?) {
        let start = kilnMonotonicNanos()
        var batch: [RescanItem] = []
        var seenCount = 0, skipped = 0, unchanged = 0
        func flush() {
            queue.push(batch)
            batch.removeAll(keepingCapacity: true)
            let c = (seenCount, skipped, unchanged)
            queue.stats.withLock { $0.filesSeen += c.0; $0.skipped += c.1; $0.unchanged += c.2 }
            (seenCount, skipped, unchanged) = (0, 0, 0)
        }
        let visit = { [self] (path: String, walked: WalkedFile?) -> Bool in
            seenCount += 1
            if let item = consider(path, walked, &skipped, &unchanged) { batch.append(item) }
            if seenCount % 256 == 0 {
                flush()
                if queue.isStopped { return false }
            }
            return true
        }
        if let listed {
            for path in listed where !visit(path, nil) { break }
        } else {
            ProjectService.walk(root) { visit($0, $1) }
        }
        flush()
        duration = kilnMonotonicNanos() - start
        queue.close()
    }

    /// The item to read for one listed file, or nil when it is gone, not a regular file, or unchanged.
    /// `walked` is the file as the walk found it (git's list gives none).
    private func consider(_ path: String, _ walked: WalkedFile?, _ skipped: inout Int, _ unchanged: inout Int) -> RescanItem? {
        let old = stored[path]
        if old != nil { seen.insert(path) }
        let full = root + "/" + path
        // A new file the walk found regular needs no stat (nothing to compare it with): the reader
        // opens it beneath the root. What git lists may be anything, so it is looked at first.
        if old == nil, beneath, let walked, walked.isRegular {
            return RescanItem(path: path, full: full, device: 0, inode: 0, oldHash: nil, known: false, beneath: true)
        }
        var st = stat()
        var target = full
        if let walked { guard walked.lstat(&st) else { skipped += 1; return nil } } else { guard lstat(full, &st) == 0 else { skipped += 1; return nil } }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            // A symlink is indexed as its target only when that stays inside the project.
            guard let real = SafePath.real(full), SafePath.isInside(real, root: root), stat(real, &st) == 0 else { skipped += 1; return nil }
            target = real
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { skipped += 1; return nil }
        let size = Int(st.st_size)
        let mtime = modificationNanos(st)
        // A text file the index no longer holds (a reset index) is read again even if unchanged.
        let lost = old.map { !$0.binary && $0.hash != nil && !live.contains(path) } ?? false
        if let old, old.size == size, old.mtime == mtime, !lost {
            unchanged += 1
            if !symbolsComplete, !old.binary, old.hash != nil, let language = SymbolExtractor.language(of: path) {
                reextract.append(SymbolItem(path: path, full: target, device: UInt64(st.st_dev), inode: UInt64(st.st_ino), language: language))
            }
            return nil
        }
        return RescanItem(path: path, full: target, device: UInt64(st.st_dev), inode: UInt64(st.st_ino), oldHash: lost ? nil : old?.hash, known: old != nil)
    }
}

/// Runs `work(i)` for i in 0..<count, each on a thread of its own, and waits for all. Not Dispatch's
/// global queues: the async request handlers share those, and a long rescan would starve them.
func onThreads(_ count: Int, stop: @escaping @Sendable () -> Void, _ work: @escaping @Sendable (Int) -> Void) async {
    await withTaskCancellationHandler {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let remaining = Mutex(count)
            for i in 0..<count {
                Thread.detachNewThread {
                    work(i)
                    if remaining.withLock({ $0 -= 1; return $0 == 0 }) { done.resume() }
                }
            }
        }
    } onCancel: { stop() }
}

/// The contents indexed so far in one rescan, by keyed hash and length, shared by its threads: a file
/// whose content is already there (a vendored copy, a second version of a package) becomes a copy
/// of that document instead of being indexed again.
final class RescanContents: Sendable {
    struct Key: Hashable { let hash: UInt64; let length: Int }
    /// The first file read with this content: its document, anchors, symbol language and the
    /// modification time it had (a copy's symbols and findings are its, while it stays so).
    struct Entry: Sendable {
        let document: TrigramIndex.DocumentRef
        let anchors: UInt32
        let file: FileToRead
        let mtime: Int64
        let language: String?

        /// Whether the file is still the one read (same identity and modification time), checked after
        /// the second pass has read it again.
        func unchanged(length: Int) -> Bool {
            var st = stat()
            return lstat(file.full, &st) == 0 && UInt64(st.st_dev) == file.device && UInt64(st.st_ino) == file.inode
                && Int(st.st_size) == length && modificationNanos(st) == mtime
        }
    }
    private let entries = Mutex<[Key: Entry]>([:])

    func find(_ key: Key) -> Entry? { entries.withLock { $0[key] } }
    func add(_ key: Key, _ entry: Entry) { entries.withLock { if $0[key] == nil { $0[key] = entry } } }
}

/// One indexing thread: reads files, hashes them and adds text to its own index segment (a new one
/// every `segmentBytes`), content seen before in this rescan as a copy. Findings and symbols wait
/// for the second pass.
final class RescanWorker: @unchecked Sendable {
    let shared: RescanShared<RescanItem>
    let index: TrigramIndex
    let contents: RescanContents
    var builder: TrigramIndex.Builder?
    var built: [Int] = []
    var results: [RescanResult] = []
    var symbolItems: [SymbolItem] = []
    var copies: [RescanCopy] = []
    var error: (any Error)?
    private let file = FileSlurper()
    /// The project's folder, open: where `beneath` items are opened from.
    let rootFD: Int32

    init(_ shared: RescanShared<RescanItem>, index: TrigramIndex, contents: RescanContents, rootFD: Int32) {
        self.shared = shared
        self.index = index
        self.contents = contents
        self.rootFD = rootFD
    }

    func run() {
        do {
            while let item = shared.next() { try process(item) }
            if let b = builder {
                if b.documentCount > 0 { try b.finish(); built.append(b.segmentID) } else { b.discard() }
                builder = nil
            }
        } catch {
            self.error = error
            shared.stop()
            builder?.discard()
            builder = nil
        }
    }

    private func process(_ walked: RescanItem) throws {
        let opened = walked.beneath ? file.read(beneath: rootFD, walked.path, limit: ProjectService.maxIndexBytes)
            : file.read(walked.full, device: walked.device, inode: walked.inode, limit: ProjectService.maxIndexBytes)
        guard let (st, content) = opened else {
            shared.stats.withLock { $0.skipped += 1 }
            return
        }
        let item = walked.beneath ? walked.identified(st) : walked
        let mtime = modificationNanos(st)
        guard let bytes = content else {
            results.append(RescanResult(file: item.file, size: Int(st.st_size), mtime: mtime, hash: nil, binary: false,
                                        contentChanged: true, known: item.known))
            shared.stats.withLock { $0.skipped += 1 }
            return
        }
        let n = bytes.count
        // XXH64 keyed with the index's secret seed: ten times SHA-256's speed, and a collision
        // (which would keep stale postings) cannot be aimed for without the seed.
        let h64 = XXH64.hash(bytes, seed: index.contentSeed)
        let hash = "x64:" + XXH64.hex(h64)
        if hash == item.oldHash {
            results.append(RescanResult(file: item.file, size: n, mtime: mtime, hash: hash, binary: false,
                                        contentChanged: false, known: true))
            shared.stats.withLock { $0.unchanged += 1 }
            return
        }
        // The same hash (keyed with a secret seed) and length: the same content, text like the first.
        let key = RescanContents.Key(hash: h64, length: n)
        let known = contents.find(key)
        let text = known != nil || (!Bytes.contains(bytes, 0) && Bytes.isValidUTF8(bytes))
        var anchors: UInt32 = 0
        if text {
            if let b = builder, b.contentBytes >= ProjectService.segmentBytes {
                try b.finish()
                built.append(b.segmentID)
                builder = try index.makeBuilder(reusing: b)
            }
            let b = try builder ?? index.makeBuilder()
            builder = b
            let stamp = TrigramIndex.Stamp(length: UInt64(n), modified: mtime, device: item.device, inode: item.inode)
            let language = SymbolExtractor.language(of: item.path)
            var extract = language != nil
            if let known {
                b.addCopy(path: item.path, stamp: stamp, of: known.document)
                anchors = known.anchors
                // The same extension, not only the same language: ctags parses `.h` as C++, `.c` as C.
                let reuse = language != nil && language == known.language
                    && SymbolExtractor.fileExtension(of: item.path) == SymbolExtractor.fileExtension(of: known.file.path)
                    && ProjectService.ctagsCanTake(item.path) == ProjectService.ctagsCanTake(known.file.path)
                copies.append(RescanCopy(file: item.file, length: n, anchors: anchors, language: language, symbolsReused: reuse, content: known))
                extract = !reuse
                shared.stats.withLock { $0.copies += 1 }
            } else {
                let document = b.add(path: item.path, content: bytes, stamp: stamp)
                anchors = Findings.anchorMask(contains: b.lastDocumentContains)
                contents.add(key, .init(document: document, anchors: anchors, file: item.file, mtime: mtime, language: language))
            }
            if extract, let language {
                symbolItems.append(SymbolItem(path: item.path, full: item.full, device: item.device, inode: item.inode, language: language))
            }
        }
        results.append(RescanResult(file: item.file, size: n, mtime: mtime, hash: hash, binary: !text, anchors: anchors,
                                    contentChanged: true, known: item.known, copy: known != nil))
        shared.stats.withLock { $0.indexed += 1; $0.bytes += n }
    }
}

/// One symbol thread of the second pass: the built-in extractor over the files it is given.
final class SymbolWorker: @unchecked Sendable {
    let shared: RescanShared<SymbolItem>
    var symbols = SymbolBatch()
    private let file = FileSlurper()

    init(_ shared: RescanShared<SymbolItem>) { self.shared = shared }

    func run() {
        while let item = shared.next() {
            guard let (_, content) = file.read(item.full, device: item.device, inode: item.inode, limit: ProjectService.maxIndexBytes),
                  let bytes = content else { continue }
            symbols.add(contentsOf: SymbolExtractor.extract(path: item.path, bytes: bytes))
        }
    }
}

/// One findings thread of the second pass: reads the files that hold some anchor and runs the rules.
final class FindingsWorker: @unchecked Sendable {
    let shared: RescanShared<(FileToRead, UInt32)>
    var findings: [String: [Finding]] = [:]
    private let file = FileSlurper()

    init(_ shared: RescanShared<(FileToRead, UInt32)>) { self.shared = shared }

    func run() {
        while let (item, mask) = shared.next() {
            guard let (_, content) = file.read(item.full, device: item.device, inode: item.inode, limit: ProjectService.maxIndexBytes),
                  let bytes = content else { continue }
            let found = Findings.scan(path: item.path, content: bytes, anchorMask: mask)
            if !found.isEmpty { findings[item.path, default: []] += found }
        }
    }
}

extension ProjectService {
    static let maxIndexBytes = 8 * 1024 * 1024
    /// Content per index segment: bounds what one rescan thread holds in memory while building.
    static let segmentBytes: UInt64 = 16 << 20

    func index(_ projectID: String) throws -> TrigramIndex {
        try TrigramIndex.shared(directory: indexRoot + "/" + projectID)
    }

    /// The project's symbols, stored beside its trigram index.
    func symbolTable(_ projectID: String) -> SymbolTable { SymbolTable.shared(directory: indexRoot + "/" + projectID) }

    /// Indexes the project first when it never was (or a migration asked for it again), or when its
    /// symbol table was lost (the rescan extracts every file's symbols again).
    func ensureIndexed(_ projectID: String, root: String, vcs: String, bus: EventBus) async throws {
        guard try await !isIndexed(projectID) || !symbolTable(projectID).isComplete else { return }
        _ = try await rescan(projectID: projectID, root: root, vcs: vcs, jobID: IDs.make("job"), bus: bus)
        let now = clock.now()
        _ = try await db.write { tx in try tx.run("UPDATE projects SET index_status = 'indexed', indexed_at = ? WHERE id = ?", now, projectID) }
    }

    /// The files of a project that are not ignored (git's view when it is a git repository).
    func listFiles(_ root: String, vcs: String) async throws -> [String] {
        if let listed = try await gitFiles(root, vcs: vcs) { return listed }
        var out: [String] = []
        Self.walk(root) { path, _ in out.append(path); return true }
        return out
    }

    /// git's list of a repository's tracked and untracked, not-ignored files; nil when the project
    /// is not a git repository or git is missing or fails (the built-in walk stands in).
    func gitFiles(_ root: String, vcs: String) async throws -> [String]? {
        guard vcs == "git", ProcessRunner.which("git") != nil else { return nil }
        let ls = try await ProcessRunner.run("git", ["-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout: 600)
        guard ls.status == 0 else { return nil }
        return ls.stdout.split(separator: 0).compactMap { String(validating: Array($0), as: UTF8.self) }
    }

    /// The built-in walk: readdir with the entry types the file system reports, `.gitignore` files
    /// applied as git would. Symlinked folders are not entered: each folder is opened beneath the
    /// root through no symlink (where openat2 exists), so one swapped for a link after its parent was
    /// read does not lead out either. `visit` gets each file's relative path and the file as found
    /// (valid during the call), and stops the walk by answering false.
    static func walk(_ root: String, visit: (String, WalkedFile) -> Bool) {
        var stack: [(String, GitIgnore)] = [("", GitIgnore())]
        var entries: [(name: String, type: Int32)] = []
        var st = stat()
        let rootFD = SafePath.openRoot(root)
        defer { if rootFD >= 0 { close(rootFD) } }
        while let (rel, parentIgnores) = stack.popLast() {
            let d: OpaquePointer?
            if rootFD >= 0 {
                let fd = SafePath.openBeneath(rootFD, rel, flags: O_RDONLY | O_DIRECTORY)
                d = fd >= 0 ? fdopendir(fd) : nil
                if fd >= 0 && d == nil { close(fd) }
            } else {
                d = opendir(rel.isEmpty ? root : root + "/" + rel)
            }
            guard let d else { continue }
            defer { closedir(d) }
            let fd = dirfd(d)
            entries.removeAll(keepingCapacity: true)
            var hasIgnoreFile = false
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." || name == ".git" { continue }
                var type = Int32(e.pointee.d_type)
                if type == Int32(DT_UNKNOWN) {
                    guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                    let fmt = st.st_mode & S_IFMT
                    type = fmt == S_IFDIR ? Int32(DT_DIR) : fmt == S_IFREG ? Int32(DT_REG) : fmt == S_IFLNK ? Int32(DT_LNK) : Int32(DT_UNKNOWN)
                }
                if name == ".gitignore" { hasIgnoreFile = true }
                entries.append((name, type))
            }
            // The folder's own rules apply to its entries; the folders above were checked before
            // the walk entered this one.
            var ignores = parentIgnores
            if hasIgnoreFile, let text = Self.readText(at: fd, ".gitignore") { ignores.add(text, base: rel) }
            for (name, type) in entries {
                let childRel = rel.isEmpty ? name : rel + "/" + name
                let isDir = type == Int32(DT_DIR)
                if ignores.decide(childRel, isDirectory: isDir) { continue }
                if isDir {
                    stack.append((childRel, ignores))
                } else if type == Int32(DT_REG) || type == Int32(DT_LNK) {
                    if !visit(childRel, WalkedFile(directory: fd, name: name, isRegular: type == Int32(DT_REG))) { return }
                }
            }
        }
    }

    /// A small text file read relative to an open directory (a `.gitignore`), at most 1 MiB.
    static func readText(at dirFD: Int32, _ name: String) -> String? {
        let fd = openat(dirFD, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < 1 << 20 {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 65536) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(validating: out, as: UTF8.self)
    }

    /// Re-indexes a project: unchanged files (size + mtime, then hash) are not re-read or re-parsed.
    /// One rescan per project at a time; a second waits for the first.
    func rescan(projectID: String, root: String, vcs: String, jobID: String, bus: EventBus) async throws -> RescanStats {
        let index = try index(projectID)
        return try await index.exclusive {
            try await rescanExclusive(index, projectID: projectID, root: root, vcs: vcs, topic: "rescan:\(jobID)", bus: bus)
        }
    }

    private func rescanExclusive(_ index: TrigramIndex, projectID: String, root: String, vcs: String, topic: String, bus: EventBus) async throws -> RescanStats {
        let stored: [String: StoredFile] = try await db.read { tx in
            var m: [String: StoredFile] = [:]
            for r in try tx.query("SELECT path, size, mtime_ns, hash, binary FROM project_files WHERE project_id = ?", projectID) {
                m[r.string("path") ?? ""] = StoredFile(size: r.int("size") ?? 0, mtime: r.int64("mtime_ns") ?? 0, hash: r.string("hash"),
                                                       binary: (r.int("binary") ?? 0) != 0)
            }
            return m
        }
        var phases: [String: JSONValue] = [:]
        var mark = kilnMonotonicNanos()
        func phase(_ name: String) {
            let now = kilnMonotonicNanos()
            phases[name + "_ms"] = .int(Int((now - mark) / 1_000_000))
            mark = now
        }
        let symbols = symbolTable(projectID)
        let symbolsComplete = symbols.isComplete
        let listed = try await gitFiles(root, vcs: vcs)
        phase("list")

        // First pass, on every core: the walk feeds the readers, which read, hash, index and run
        // the findings rules. Search sees the result as soon as it is committed.
        let threads = max(1, min(4, ProcessInfo.processInfo.activeProcessorCount))
        let shared = RescanShared<RescanItem>(open: true, stats: RescanStats())
        // Where new files are opened from (beneath it, through no symlink).
        let rootFD = SafePath.openRoot(root)
        defer { if rootFD >= 0 { close(rootFD) } }
        let walker = RescanWalk(root: root, stored: stored, live: index.livePaths(), symbolsComplete: symbolsComplete,
                                beneath: rootFD >= 0, queue: shared)
        let contents = RescanContents()
        let workers = (0..<threads).map { _ in RescanWorker(shared, index: index, contents: contents, rootFD: rootFD) }
        let reporter = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                if Task.isCancelled { break }
                _ = try? await bus.publish(topic: topic, type: "progress", value: shared.stats.withLock { $0 })
            }
        }
        defer { reporter.cancel() }
        await onThreads(threads + 1, stop: { shared.stop() }) { i in
            if i == threads { walker.run(listed) } else { workers[i].run() }
        }
        phases["walk_ms"] = .int(Int(walker.duration / 1_000_000))
        phases["readers_waited_ms"] = .int(Int(shared.waitedNanos / 1_000_000))
        let seen = walker.seen
        let built = workers.flatMap(\.built)
        if let failure = workers.compactMap(\.error).first {
            index.discard(built)
            throw failure
        }
        if Task.isCancelled {
            index.discard(built)
            throw CancellationError()
        }
        let results = workers.flatMap(\.results)
        // The reader threads' segment buffers are freed by now; their heaps go back to the system
        // rather than stay beside what the second pass allocates on other threads.
        _ = kiln_malloc_trim()
        phase("read")

        // The index first: if the database write fails, the next rescan sees old hashes and redoes
        // these files, and the index keeps one live copy per path.
        let gone = stored.keys.filter { !seen.contains($0) }
        shared.stats.withLock { $0.removed = gone.count }
        let dropped = results.filter { $0.contentChanged && ($0.binary || $0.hash == nil) }.map(\.path)
        do {
            try index.commit(adding: built, removing: gone + dropped)
            try index.compactIfNeeded(segmentBytes: ProjectService.segmentBytes)
        } catch {
            index.discard(built)
            throw error
        }
        try await bus.publish(topic: topic, type: "indexed", value: shared.stats.withLock { $0 })
        phase("commit")

        // Second pass: findings and symbols of the files read. A copy takes those of its content's
        // file, relabelled, unless that file changed or went before the pass was over; then the copy
        // is read itself.
        // Findings: only the changed text files that hold all trigrams of some anchor are read again;
        // the size rule needs no content.
        var findings: [String: [Finding]] = [:]
        for r in results where r.contentChanged {
            if let f = Findings.largeFileFinding(path: r.path, size: r.size) { findings[r.path] = [f] }
        }
        let findingItems = results.filter { $0.contentChanged && $0.anchors != 0 && !$0.copy }.map { ($0.file, $0.anchors) }
        async let scannedFirst = scanFindings(findingItems)
        let symbolItems = workers.flatMap(\.symbolItems) + walker.reextract
        var found = await extractSymbols(symbolItems, root: root, threads: threads)
        var scanned = await scannedFirst
        try Task.checkCancellation()

        let copies = workers.flatMap(\.copies)
        var findingLabels: [String: [String]] = [:], symbolLabels: [String: [String]] = [:]
        var rereadFindings: [(FileToRead, UInt32)] = [], rereadSymbols: [SymbolItem] = []
        for c in copies {
            if c.content.unchanged(length: c.length) {
                if c.anchors != 0 { findingLabels[c.content.file.path, default: []].append(c.file.path) }
                if c.symbolsReused { symbolLabels[c.content.file.path, default: []].append(c.file.path) }
                continue
            }
            if c.anchors != 0 { rereadFindings.append((c.file, c.anchors)) }
            if c.symbolsReused, let language = c.language {
                rereadSymbols.append(SymbolItem(path: c.file.path, full: c.file.full, device: c.file.device, inode: c.file.inode, language: language))
            }
        }
        if !rereadFindings.isEmpty { scanned.merge(await scanFindings(rereadFindings)) { $0 + $1 } }
        if !rereadSymbols.isEmpty { found += await extractSymbols(rereadSymbols, root: root, threads: threads) }
        for (content, labels) in findingLabels {
            guard let those = scanned[content] else { continue }
            for label in labels {
                scanned[label, default: []] += those.map { Finding(path: label, line: $0.line, rule: $0.rule, severity: $0.severity, message: $0.message, excerpt: $0.excerpt) }
            }
        }
        if !symbolLabels.isEmpty { found += found.map { $0.copies(symbolLabels) } }
        phases["symbol_files"] = .int(symbolItems.count + rereadSymbols.count)
        phases["symbol_copies"] = .int(symbolLabels.values.reduce(0) { $0 + $1.count })
        findings.merge(scanned) { $0 + $1 }
        let allFindings = findings
        let symbolCount = found.reduce(0) { $0 + $1.count }, findingCount = allFindings.values.reduce(0) { $0 + $1.count }
        let stats = shared.stats.withLock { s in
            s.symbols = symbolCount; s.findings = findingCount
            return s
        }
        phase("symbols")

        // The symbol table and the database at once (the database on its own writer thread). If the
        // database write fails, the next rescan sees old hashes and reads these files again; if the
        // table's does, it is dropped as incomplete and the next rescan extracts every file again.
        // One transaction: one sync of the log, however many files changed.
        async let databaseWritten: Void = db.write { tx in
            for c in results {
                if !c.contentChanged {
                    try tx.run("UPDATE project_files SET size = ?, mtime_ns = ? WHERE project_id = ? AND path = ?", c.size, c.mtime, projectID, c.path)
                    continue
                }
                try tx.run("""
                    INSERT INTO project_files (project_id, path, size, mtime_ns, hash, binary) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (project_id, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, hash = excluded.hash,
                        binary = excluded.binary
                    """, projectID, c.path, c.size, c.mtime, c.hash, c.binary)
                if c.known {
                    try tx.run("DELETE FROM project_findings WHERE project_id = ? AND path = ?", projectID, c.path)
                }
                for f in allFindings[c.path] ?? [] {
                    try tx.run("INSERT INTO project_findings (project_id, path, line, rule, severity, message, excerpt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               projectID, f.path, f.line, f.rule, f.severity, f.message, f.excerpt)
                }
            }
            for path in gone {
                try tx.run("DELETE FROM project_files WHERE project_id = ? AND path = ?", projectID, path)
                try tx.run("DELETE FROM project_findings WHERE project_id = ? AND path = ?", projectID, path)
            }
        }
        // Every file read again drops its old symbols, whatever it holds now.
        let replaced = Set(results.filter(\.contentChanged).map(\.path)).union(gone)
        var symbolTableFailure: (any Error)?
        if !symbolsComplete || !replaced.isEmpty {
            do { try symbols.replace(removing: replaced, adding: consume found, fresh: !symbolsComplete) } catch { symbolTableFailure = error }
        }
        phase("symbol_table")
        try await databaseWritten
        if let symbolTableFailure { throw symbolTableFailure }
        _ = kiln_malloc_trim()
        phase("database")
        phases["project_id"] = .string(projectID)
        phases["files"] = .int(stats.filesSeen)
        ServerLog.info("rescan finished", phases)
        return stats
    }

    /// Whether universal-ctags can be handed the path in its file list (no tab or line break).
    static func ctagsCanTake(_ path: String) -> Bool {
        !path.utf8.contains(where: { $0 == 10 || $0 == 9 || $0 == 13 })
    }

    /// The symbols of `items`: universal-ctags (several processes at once) where it is installed and
    /// parses the language, the built-in extractor for Swift, for paths ctags cannot be handed, for
    /// batches ctags fails on, and for everything when ctags is not installed.
    func extractSymbols(_ items: [SymbolItem], root: String, threads: Int) async -> [SymbolBatch] {
        let useCtags = ProcessRunner.which("ctags") != nil
        var builtIn: [SymbolItem] = []
        var ctagsItems: [SymbolItem] = []
        for item in items {
            if useCtags && item.language != "Swift" && Self.ctagsCanTake(item.path) { ctagsItems.append(item) } else { builtIn.append(item) }
        }
        ctagsItems.sort { $0.path < $1.path }
        let chunks = stride(from: 0, to: ctagsItems.count, by: 400).map { Array(ctagsItems[$0..<min($0 + 400, ctagsItems.count)]) }
        let symbolShared = RescanShared(items: builtIn, stats: RescanStats())
        let symbolWorkers = (0..<threads).map { _ in SymbolWorker(symbolShared) }
        async let builtInDone: Void = onThreads(threads, stop: { symbolShared.stop() }) { symbolWorkers[$0].run() }
        let ctagsSymbols: [SymbolBatch] = await withTaskGroup(of: SymbolBatch.self) { group in
            var all: [SymbolBatch] = []
            var next = 0
            func add(_ g: inout TaskGroup<SymbolBatch>) {
                guard next < chunks.count else { return }
                let chunk = chunks[next]
                next += 1
                g.addTask {
                    if let found = await SymbolExtractor.ctags(root: root, files: chunk.map(\.path)) { return found }
                    var out = SymbolBatch()
                    let file = FileSlurper()
                    for item in chunk {
                        if let (_, content) = file.read(item.full, device: item.device, inode: item.inode, limit: ProjectService.maxIndexBytes), let bytes = content {
                            out.add(contentsOf: SymbolExtractor.extract(path: item.path, bytes: bytes))
                        }
                    }
                    return out
                }
            }
            for _ in 0..<threads { add(&group) }
            while let found = await group.next() { all.append(found); add(&group) }
            return all
        }
        await builtInDone
        return symbolWorkers.map(\.symbols) + ctagsSymbols
    }

    /// The findings of the text files `items` (each with its anchor mask), read on a thread of their own.
    func scanFindings(_ items: [(FileToRead, UInt32)]) async -> [String: [Finding]] {
        guard !items.isEmpty else { return [:] }
        let shared = RescanShared(items: items, stats: RescanStats())
        let worker = FindingsWorker(shared)
        await onThreads(1, stop: { shared.stop() }) { _ in worker.run() }
        return worker.findings
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
