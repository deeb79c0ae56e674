import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnProjects
@testable import KilnTestSupport

/// The built-in extractor on its own (what runs when universal-ctags is not installed, and always for Swift).
@Suite struct BuiltInSymbolTests {
    @Test func extractsDefinitionsInEveryLanguage() throws {
        let root = NSTemporaryDirectory() + "kiln-sym-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let dir = try makeSourceTree(root)
        let expected: [String: [(String, String)]] = [
            "poly/Model.swift": [
                ("Storable", "protocol"), ("Invoice", "struct"), ("total", "method"), ("formatInvoice", "function"),
                ("TAX_RATE", "constant"),
            ],
            "poly/app.py": [
                ("MAX_RETRIES", "constant"), ("Parser", "class"), ("parse_line", "method"), ("main", "function"),
            ],
            "poly/main.go": [
                ("Version", "constant"), ("Server", "type"), ("Handler", "interface"), ("Start", "method"),
                ("main", "function"),
            ],
            "poly/lib.rs": [
                ("LIMIT", "constant"), ("Engine", "struct"), ("Runner", "interface"), ("run_engine", "method"),
                ("helper", "function"),
            ],
            "poly/web.js": [
                ("API_ROOT", "constant"), ("Widget", "class"), ("render", "method"), ("mountWidget", "function"),
            ],
            "poly/App.java": [("App", "class"), ("PORT", "constant"), ("main", "method"), ("Greeter", "interface")],
            "poly/net.c": [("BUFFER_SIZE", "constant"), ("conn", "struct"), ("open_conn", "function")],
        ]
        for (path, want) in expected {
            let text = try String(contentsOfFile: dir + "/" + path, encoding: .utf8)
            let got = SymbolExtractor.extract(path: path, text: text)
            for (name, kind) in want {
                #expect(
                    got.contains { $0.name == name && $0.kind == kind },
                    "\(path): \(name) \(kind) in \(got.map { "\($0.name):\($0.kind)" })")
            }
        }
    }
}

/// The hand-written Swift declaration reader.
@Suite struct SwiftDeclarationTests {
    func parse(_ line: String) -> [String]? {
        var l = line
        return l.withUTF8 { SwiftDeclaration.parse(UnsafeRawBufferPointer($0)).map { [$0.0, $0.1] } }
    }

    @Test func readsDeclarations() {
        #expect(parse("public final class Server: Sendable {") == ["class", "Server"])
        #expect(parse("    class func make() -> Self") == ["function", "make"])
        #expect(parse("@MainActor @available(macOS 14, *) public struct View<T> {") == ["struct", "View"])
        #expect(parse("  static func ==(lhs: A, rhs: A) -> Bool") == ["function", "=="])
        #expect(parse("extension Array where Element: Equatable {") == ["extension", "Array"])
        #expect(parse("public protocol Store {") == ["protocol", "Store"])
        #expect(parse("static let MAX_SIZE: Int = 3") == ["constant", "MAX_SIZE"])
        #expect(parse("typealias Handler = () -> Void") == ["type", "Handler"])
        #expect(parse("let value = 3") == nil)
        #expect(parse("return classify(x)") == nil)
        #expect(parse("// func commented()") == nil)
        #expect(parse("private enum") == nil)
    }
}

/// The symbol table on its own: ranking, filters, storage and damage.
@Suite struct SymbolTableTests {
    func batch(_ symbols: [(String, String, String, Int)], scope: String? = nil) -> SymbolBatch {
        var b = SymbolBatch()
        for (name, kind, path, line) in symbols {
            b.add(Symbol(name: name, kind: kind, path: path, line: line, scope: scope, language: "Swift"))
        }
        return b
    }

    let sample: [(String, String, String, Int)] = [
        ("parseLine", "function", "b.swift", 3), ("ParseLine", "struct", "a.swift", 9),
        ("parselinefast", "function", "a.swift", 1),
        ("parser", "class", "c.swift", 2), ("reparseLines", "method", "c.swift", 7),
        ("pxaxrxsxe", "function", "d.swift", 4),
        ("parseLine", "function", "a.swift", 12), ("unrelated", "constant", "d.swift", 1),
        ("λParse", "function", "e.swift", 5),
    ]

    @Test func ranksExactPrefixSubstringAndFuzzy() throws {
        let t = SymbolColumns(keeping: SymbolColumns(), without: [], adding: [batch(sample)])
        #expect(t.count == sample.count)
        let names = t.lookup("parseLine", kind: nil, limit: 50).map { "\($0.name)@\($0.path):\($0.line)" }
        // Exact (two, by path), then case-insensitive exact, then prefix, then substring; no fuzzy-only hit spells "parseline".
        #expect(
            names == [
                "parseLine@a.swift:12", "parseLine@b.swift:3", "ParseLine@a.swift:9", "parselinefast@a.swift:1",
                "reparseLines@c.swift:7",
            ])
        #expect(t.lookup("prse", kind: nil, limit: 50).map(\.name).contains("pxaxrxsxe"))
        #expect(t.lookup("PARSER", kind: nil, limit: 50).first?.name == "parser")
        #expect(t.lookup("parse", kind: "class", limit: 50).map(\.name) == ["parser"])
        #expect(t.lookup("parse", kind: "no-such-kind", limit: 50).isEmpty)
        #expect(t.lookup("parse", kind: nil, limit: 2).count == 2)
        #expect(t.lookup("", kind: nil, limit: 3).map(\.name) == ["parser", "λParse", "ParseLine"])  // shortest names first, then path, line
        #expect(t.lookup("λpa", kind: nil, limit: 5).first?.name == "λParse")
        #expect(t.lookup("zzz", kind: nil, limit: 5).isEmpty)
        #expect(t.definitions(named: "parseLine") == ["a.swift:12", "b.swift:3"])
        #expect(t.definitions(named: "parseline").isEmpty)
    }

    @Test func replacingAFileKeepsTheOthers() throws {
        let t = SymbolColumns(keeping: SymbolColumns(), without: [], adding: [batch(sample)])
        let next = SymbolColumns(
            keeping: t, without: ["a.swift", "d.swift"], adding: [batch([("freshName", "function", "a.swift", 40)])])
        #expect(
            Set(next.lookup("", kind: nil, limit: 100).map(\.path)) == ["a.swift", "b.swift", "c.swift", "e.swift"])
        #expect(next.definitions(named: "parseLine") == ["b.swift:3"])
        #expect(next.lookup("freshName", kind: nil, limit: 5).first?.line == 40)
        #expect(next.count == sample.count - 5 + 1)
    }

    @Test func copiesTakeTheirContentsSymbols() throws {
        let b = batch(sample, scope: "Outer")
        let copies = b.copies(["a.swift": ["x/a.swift", "y/a.swift"], "nowhere.swift": ["z.swift"]])
        #expect(copies.count == 2 * 3)
        let t = SymbolColumns(keeping: SymbolColumns(), without: [], adding: [b, copies])
        #expect(t.definitions(named: "parseLine") == ["a.swift:12", "b.swift:3", "x/a.swift:12", "y/a.swift:12"])
        let copied = t.lookup("parselinefast", kind: nil, limit: 10)
        #expect(copied.map(\.path) == ["a.swift", "x/a.swift", "y/a.swift"])
        #expect(
            copied.allSatisfy { $0.kind == "function" && $0.scope == "Outer" && $0.language == "Swift" && $0.line == 1 }
        )
        #expect(t.lookup("", kind: nil, limit: 100).allSatisfy { $0.path != "z.swift" })
    }

    /// A copy reuses its content's findings and symbols only while the content's file is the one read.
    @Test func aContentFileIsCheckedAgainBeforeItsCopiesReuseIt() throws {
        let dir = NSTemporaryDirectory() + "kiln-content-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/a.swift"
        try "let a = 1\n".write(toFile: path, atomically: false, encoding: .utf8)
        func entry() -> RescanContents.Entry {
            var st = stat()
            _ = lstat(path, &st)
            return .init(
                document: .init(segment: 0, doc: 0), anchors: 0,
                file: FileToRead(path: "a.swift", full: path, device: UInt64(st.st_dev), inode: UInt64(st.st_ino)),
                mtime: modificationNanos(st), language: "Swift")
        }
        let e = entry()
        #expect(e.unchanged(length: 10))
        #expect(!e.unchanged(length: 11))
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        #expect(!e.unchanged(length: 10))
        let touched = entry()
        try FileManager.default.removeItem(atPath: path)
        #expect(!touched.unchanged(length: 10))
    }

    /// The table is stored while the database records the files as read: a table that cannot be
    /// stored goes, so the next rescan extracts every file again rather than trusting stale symbols.
    @Test func aTableThatCannotBeStoredIsDroppedAsIncomplete() throws {
        let dir = NSTemporaryDirectory() + "kiln-symtab-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/symbols.bin"
        let table = SymbolTable(file: file)
        try table.replace(removing: [], adding: [batch(sample)], fresh: true)
        #expect(table.isComplete)
        // A folder where the new table is written makes the write fail.
        try FileManager.default.createDirectory(atPath: file + ".tmp", withIntermediateDirectories: false)
        #expect(throws: SymbolTableError.self) {
            try table.replace(
                removing: ["a.swift"], adding: [batch([("freshName", "function", "a.swift", 40)])], fresh: false)
        }
        #expect(!table.isComplete)
        #expect(table.snapshot().lookup("freshName", kind: nil, limit: 5).first?.path == "a.swift")
        #expect(!FileManager.default.fileExists(atPath: file))
        #expect(!SymbolTable(file: file).isComplete)
    }

    @Test func storedTableRoundTripsAndDamageIsRefused() throws {
        let dir = NSTemporaryDirectory() + "kiln-symtab-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = dir + "/symbols.bin"
        let fresh = SymbolTable(file: file)
        #expect(!fresh.isComplete && fresh.snapshot().count == 0)
        try fresh.replace(removing: [], adding: [batch(sample, scope: "Outer")], fresh: true)
        #expect(fresh.isComplete)
        let reopened = SymbolTable(file: file)
        #expect(reopened.isComplete)
        let a = fresh.snapshot().lookup("", kind: nil, limit: 100)
        let b = reopened.snapshot().lookup("", kind: nil, limit: 100)
        #expect(a == b && a.count == sample.count && a.allSatisfy { $0.scope == "Outer" && $0.language == "Swift" })
        // Truncated, a flipped index, and garbage are each refused as a whole.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        var flipped = bytes
        flipped[flipped.count - 8] = 0xFF  // a record's kind index, far past the string table
        for damaged in [Array(bytes.dropLast(3)), flipped, [UInt8](repeating: 7, count: 100), []] {
            try Data(damaged).write(to: URL(fileURLWithPath: file))
            let t = SymbolTable(file: file)
            #expect(!t.isComplete && t.snapshot().count == 0)
        }
    }
}

extension ProjectIndexTests {
    @Test func aLostSymbolTableIsRebuiltFromUnchangedFiles() async throws {
        let (t, a, pid, _) = try await setUp()
        try await using(t) { t in
            _ = try await rescan(a, t, pid)
            func names(_ q: String) async throws -> [String] {
                (try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=\(q)").json["items"]
                    as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            }
            #expect(try await names("formatInvoice").first == "formatInvoice")
            let dir = t.dataDir + "/index/" + pid
            try Data("damaged".utf8).write(to: URL(fileURLWithPath: dir + "/symbols.bin"))
            let cache = try #require(t.app.module(ProjectsModule.self)).service.cache
            cache.forgetSymbolTable(dir)
            // The next lookup notices and rebuilds: no file changed, yet every symbol is back.
            #expect(try await names("formatInvoice").first == "formatInvoice")
            #expect(try await names("open_conn").first == "open_conn")
            #expect(cache.symbolTable(dir).isComplete)
            let again = try await rescan(a, t, pid)
            #expect(again["indexed"] as? Int == 0 && again["symbols"] as? Int == 0)
        }
    }
}

/// The byte-level filters in front of the findings expressions must never refuse a line an
/// expression would match.
@Suite struct FindingsFilterTests {
    func randomLine(_ rng: inout SystemRandomNumberGenerator) -> String {
        let pieces = [
            "api_key", " = ", ":", "\"", "'", "TO" + "DO", "FIX" + "ME", "x", "_", " ", "\t", "abcdefgh", "0123456789",
            "é", "token", "=", "NOTE",
        ]
        return (0..<Int(rng.next() % 14 + 1)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined()
    }

    @Test func filtersAgreeWithTheExpressions() {
        var rng = SystemRandomNumberGenerator()
        var assignments = 0
        var todos = 0
        for i in 0..<20_000 {
            var line = randomLine(&rng)
            if i % 10 == 0 { line = "password = \"\(String(repeating: "k9", count: 9))\"" }
            let ns = line as NSString
            let range = NSRange(location: 0, length: ns.length)
            let assigns = Findings.assignment.firstMatch(in: line, range: range) != nil
            let todo = Findings.todo.firstMatch(in: line, range: range).map { ns.substring(with: $0.range) }
            var copy = line
            copy.withUTF8 { u in
                let bytes = UnsafeRawBufferPointer(u)
                if assigns {
                    assignments += 1
                    #expect(Findings.mayAssignSecret(bytes), "\(line.debugDescription)")
                }
                // ASCII word boundaries: the expression's \b also treats é as a letter.
                if !line.contains("é") {
                    #expect(
                        Findings.todoWord(bytes).map { _ in true } == todo.map { _ in true }, "\(line.debugDescription)"
                    )
                    if todo != nil { todos += 1 }
                }
            }
        }
        #expect(assignments > 1000 && todos > 1000)
    }
}

@Suite struct BytesTests {
    /// The UTF-8 check against the standard library's validation: ASCII runs long enough for the
    /// 32- and 8-byte strides, with one bad or multi-byte sequence at every offset.
    @Test func utf8CheckAgreesWithTheStandardLibrary() {
        let pieces: [[UInt8]] = [
            [0xC3, 0xA9], [0xE2, 0x82, 0xAC], [0xF0, 0x9F, 0x98, 0x80], [0x80], [0xC3], [0xE2, 0x82],
            [0xED, 0xA0, 0x80],
            [0xF4, 0x90, 0x80, 0x80], [0xC0, 0xAF], [0xFF], [0xE0, 0x80, 0xAF], [0xF0, 0x9F, 0x98],
        ]
        var rng = SystemRandomNumberGenerator()
        for length in [0, 1, 7, 8, 31, 32, 33, 64, 100] {
            for offset in 0...length {
                for piece in pieces {
                    var bytes = (0..<length).map { _ in UInt8.random(in: 32...126, using: &rng) }
                    bytes.insert(contentsOf: piece, at: offset)
                    let want = String(validating: bytes, as: UTF8.self) != nil
                    #expect(bytes.withUnsafeBytes { Bytes.isValidUTF8($0) } == want, "\(bytes)")
                }
            }
        }
    }
}

/// Reading a project's files: the rescan's walk and readers and the file route against a tree that
/// changes under them, and line slices read in pieces.
@Suite struct ProjectFileReadingTests {
    /// A project folder `root` and a folder beside it, `outside`, in a fresh temporary folder (`base`,
    /// for the caller to remove), with `folders` and `files` (paths from `base`, text by path).
    func rootAndOutside(
        _ name: String, folders: [String], files: [String: String]
    ) throws -> (base: String, root: String, outside: String) {
        let base = NSTemporaryDirectory() + "kiln-\(name)-\(UUID().uuidString)"
        for d in ["root", "outside"] + folders {
            try FileManager.default.createDirectory(atPath: base + "/" + d, withIntermediateDirectories: true)
        }
        for (path, text) in files { try text.write(toFile: base + "/" + path, atomically: false, encoding: .utf8) }
        return (base, base + "/root", base + "/outside")
    }

    /// New files are opened beneath the project's folder through no symlink, and so are the folders
    /// the walk enters: a folder swapped for a link to the outside after its parent was listed is not
    /// entered, a file is not read through it.
    @Test(.enabled(if: SafePath.canOpenBeneath, "openat2 (Linux 5.6)"))
    func filesAndFoldersAreOpenedBeneathTheRootThroughNoSymlink() throws {
        let fm = FileManager.default
        let (base, root, outside) = try rootAndOutside(
            "beneath", folders: ["root/sub", "root/z"],
            files: [
                "root/sub/a.txt": "inside\n", "root/a.txt": "first\n", "root/z/kept.txt": "in z\n",
                "outside/secret.txt": "secret\n",
            ])
        defer { try? fm.removeItem(atPath: base) }
        try fm.createSymbolicLink(atPath: root + "/link", withDestinationPath: outside)
        try fm.createSymbolicLink(atPath: root + "/sub/l.txt", withDestinationPath: "a.txt")

        let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        #expect(rootFD >= 0)
        defer { close(rootFD) }
        let file = FileSlurper()
        func text(_ path: String) -> String? {
            guard let (_, bytes) = file.read(beneath: rootFD, path, limit: 1 << 20), let bytes else { return nil }
            return String(decoding: bytes, as: UTF8.self)
        }
        #expect(text("sub/a.txt") == "inside\n")
        #expect(text("link/secret.txt") == nil)
        #expect(text("sub/l.txt") == nil)
        #expect(text("../outside/secret.txt") == nil)
        #expect(text(outside + "/secret.txt") == nil)
        #expect(text("sub") == nil)

        // While the walk visits the root's files, `z` (listed, not yet entered) becomes a link out.
        var found: [String] = []
        var swapped = false
        ProjectService.walk(root) { path, _ in
            found.append(path)
            if !swapped {
                swapped = true
                #expect(rename(root + "/z", root + "/z.moved") == 0)
                #expect(symlink(outside, root + "/z") == 0)
            }
            return true
        }
        #expect(swapped)
        #expect(!found.contains("z/secret.txt"), "\(found)")
        #expect(found.contains("sub/a.txt") && found.contains("a.txt"))
    }

    /// What a slice must be: the file split at newlines whole, as the route did before it read files
    /// in pieces.
    func referenceSlice(
        _ bytes: [UInt8], _ lines: [ArraySlice<UInt8>], _ start: Int?, _ end: Int?
    ) -> (slice: [UInt8], s: Int, e: Int, total: Int)? {
        let total = bytes.last == 10 ? lines.count - 1 : lines.count
        let s = max(1, start ?? 1)
        let e = min(total, end ?? total)
        guard s <= max(e, 1) else { return nil }
        var slice: [UInt8] = []
        if s <= e {
            for i in (s - 1)..<e {
                slice += lines[i]
                slice.append(10)
            }
        }
        return (slice, s, e, total)
    }

    @Test func lineSlicesReadInPiecesEqualTheWholeFileSplit() throws {
        let dir = NSTemporaryDirectory() + "kiln-lines-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SystemRandomNumberGenerator()
        // Lines long and short around the 8 KiB first read and the 1 MiB pieces after it, with and
        // without a last newline, CRLF, empty lines, and the empty file.
        var long: [UInt8] = []
        for i in 0..<3000 {
            long += Array(String(repeating: "x", count: Int(rng.next() % 900)).utf8) + (i % 7 == 0 ? [13, 10] : [10])
        }
        let files: [[UInt8]] = [
            [], [10], [10, 10], Array("one".utf8), Array("one\ntwo".utf8), Array("one\ntwo\n".utf8),
            Array(repeating: 65, count: 8191) + [10] + Array("next\n".utf8),
            Array(repeating: 66, count: 8192) + [10, 67],
            long, long.dropLast(),
        ]
        var checked = 0
        for (n, bytes) in files.enumerated() {
            let path = dir + "/f\(n)"
            #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
            // Split once per file: the test runs beside the others on the same few threads.
            let lines = bytes.split(separator: 10, omittingEmptySubsequences: false)
            let total = max(1, lines.count)
            var ranges: [(Int?, Int?)] = [
                (1, nil), (nil, 1), (1, 1), (2, 3), (total, nil), (total, total + 5), (total + 1, nil), (3, 2),
            ]
            for _ in 0..<12 {
                let a = 1 + Int(rng.next() % UInt64(total + 2))
                ranges.append((a, a + Int(rng.next() % 50)))
            }
            for (start, end) in ranges {
                let fd = open(path, O_RDONLY)
                defer { close(fd) }
                let first = ProjectService.readUpTo(fd, 8192)
                let want = referenceSlice(bytes, lines, start, end)
                let got = try? ProjectService.lines(
                    fd, first: first, path: "f", size: bytes.count, etag: "", startLine: start, endLine: end)
                #expect(
                    (got == nil) == (want == nil),
                    "file \(n) range \(String(describing: start))-\(String(describing: end))")
                if let got, let want {
                    let same =
                        got.bytes == want.slice && got.startLine == want.s && got.endLine == want.e
                        && got.totalLines == want.total
                    #expect(
                        same,
                        "file \(n) range \(String(describing: start))-\(String(describing: end)): \(got.totalLines ?? -1) lines, want \(want.total)"
                    )
                }
                checked += 1
            }
        }
        #expect(checked == 200)
    }

    /// The file route opens what it resolved only while that is still it: a folder on the way that
    /// became a link is refused, a file replaced since conflicts.
    @Test(.enabled(if: SafePath.canOpenBeneath, "openat2 (Linux 5.6)"))
    func theFileRouteOpensOnlyWhatItResolved() throws {
        let (base, root, outside) = try rootAndOutside(
            "resolved", folders: ["root/sub"], files: ["root/sub/a.txt": "inside\n", "outside/a.txt": "secret\n"])
        defer { try? FileManager.default.removeItem(atPath: base) }
        var st = stat()
        #expect(stat(root + "/sub/a.txt", &st) == 0)
        let fd = try ProjectService.openResolved(root + "/sub/a.txt", root: root, path: "sub/a.txt", expecting: st)
        #expect(ProjectService.readUpTo(fd, 100) == Array("inside\n".utf8))
        close(fd)
        // Resolved, then `sub` becomes a link out (same name, and the outside file's stat).
        #expect(rename(root + "/sub", root + "/sub.moved") == 0 && symlink(outside, root + "/sub") == 0)
        var outsideStat = stat()
        #expect(stat(outside + "/a.txt", &outsideStat) == 0)
        do {
            let leaked = try ProjectService.openResolved(
                root + "/sub/a.txt", root: root, path: "sub/a.txt", expecting: outsideStat)
            close(leaked)
            Issue.record("opened a file through a link out")
        } catch let e as APIError {
            #expect(e.status == .forbidden)
        }
        // A file replaced since it was resolved.
        #expect(unlink(root + "/sub") == 0 && rename(root + "/sub.moved", root + "/sub") == 0)
        try "replaced\n".write(toFile: root + "/sub/a.txt", atomically: true, encoding: .utf8)
        do {
            _ = try ProjectService.openResolved(root + "/sub/a.txt", root: root, path: "sub/a.txt", expecting: st)
            Issue.record("no conflict")
        } catch let e as APIError {
            #expect(e.status == .conflict)
        }
    }

    /// The tree route lists the folder it resolved only while no link is on the way to it.
    @Test(.enabled(if: SafePath.canOpenBeneath, "openat2 (Linux 5.6)"))
    func theTreeListsOnlyWhatItResolved() throws {
        let fm = FileManager.default
        let (base, root, outside) = try rootAndOutside(
            "list", folders: ["root/sub/.git"], files: ["root/sub/a.txt": "a", "outside/secret.txt": "s"])
        defer { try? fm.removeItem(atPath: base) }
        var bad: [CChar] = Array((root + "/sub/bad-").utf8CString.dropLast()) + [CChar(bitPattern: 0xFF), 0]
        close(open(&bad, O_CREAT | O_WRONLY, 0o644))
        let listed = try ProjectService.listDirectory(root + "/sub", root: root, rel: "sub", path: "sub")
        #expect(listed.keys.sorted() == ["a.txt"] && listed["a.txt"]?.st_size == 1)
        func status(_ body: () throws -> Any) -> HTTPStatus? {
            do {
                _ = try body()
                return nil
            } catch let e as APIError { return e.status } catch { return nil }
        }
        #expect(
            status {
                try ProjectService.listDirectory(root + "/sub/a.txt", root: root, rel: "sub/a.txt", path: "sub/a.txt")
            } == .badRequest)
        // `sub/inner` resolved, then `sub` becomes a link out, where an `inner` folder waits.
        try fm.createDirectory(atPath: root + "/sub/inner", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: outside + "/inner", withIntermediateDirectories: true)
        #expect(rename(root + "/sub", root + "/sub.moved") == 0 && symlink(outside, root + "/sub") == 0)
        #expect(
            status {
                try ProjectService.listDirectory(root + "/sub/inner", root: root, rel: "sub/inner", path: "sub/inner")
            } == .forbidden)
        #expect(
            status { try ProjectService.listDirectory(root + "/sub", root: root, rel: "sub", path: "sub") }
                == .forbidden)
    }
}
