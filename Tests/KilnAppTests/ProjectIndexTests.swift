import Foundation
import Glibc
import Testing
@testable import KilnApp
@testable import KilnProjects
import KilnCore
import KilnHTTP

/// A project (not a git repository) holding a copy of this package's sources, a vendored second copy
/// of one module (files of identical content), plus test files.
func makeSourceTree(_ roots: String) throws -> String {
    let dir = roots + "/tree"
    let fm = FileManager.default
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try fm.copyItem(atPath: TestApp.packageRoot + "/Sources", toPath: dir + "/Sources")
    try fm.createDirectory(atPath: dir + "/vendor", withIntermediateDirectories: true)
    try fm.copyItem(atPath: TestApp.packageRoot + "/Sources/KilnHTTP", toPath: dir + "/vendor/KilnHTTP")
    let files: [String: String] = [
        "poly/app.py": "MAX_RETRIES = 3\n\nclass Parser:\n    def parse_line(self, line):\n        return line\n\ndef main():\n    pass\n",
        "poly/main.go": "package main\n\nconst Version = \"1\"\n\ntype Server struct{}\n\ntype Handler interface {\n\tServe()\n}\n\nfunc (s *Server) Start() {}\n\nfunc main() {}\n",
        "poly/lib.rs": "pub const LIMIT: usize = 10;\n\npub struct Engine {}\n\npub trait Runner {}\n\nimpl Engine {\n    pub fn run_engine(&self) {}\n}\n\nfn helper() {}\n",
        "poly/web.js": "export const API_ROOT = '/api';\n\nexport class Widget {\n  render(props) {\n    return props;\n  }\n}\n\nexport function mountWidget() {}\n",
        "poly/App.java": "public class App {\n    public static final int PORT = 8080;\n    public static void main(String[] args) {}\n}\n\ninterface Greeter {}\n",
        "poly/net.c": "#define BUFFER_SIZE 64\n\nstruct conn {\n    int fd;\n};\n\nint open_conn(const char *host)\n{\n    return 0;\n}\n",
        "poly/Model.swift": "public protocol Storable {}\n\npublic struct Invoice: Storable {\n    public let TAX_RATE = 0\n    func total() -> Int { 0 }\n}\n\nfunc formatInvoice(_ i: Invoice) -> String { \"\" }\n",
        "secrets/config.py": "AWS_KEY = \"AKIAIOSFODNN7EXAMPLE\"\napi_key = \"9f8e7d6c5b4a39281706f5e4d3c2b1a0\"\n# TODO: rotate\n",
        "secrets/id_rsa": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
        "secrets/merge.txt": "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> topic\n",
        "ignored/skip.txt": "zqxjkw-ignored-marker\n",
        ".gitignore": "ignored/\n",
    ]
    for (rel, text) in files {
        let p = dir + "/" + rel
        try fm.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
    }
    try Data([0, 1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/poly/blob.bin"))
    return dir
}

@Suite struct ProjectIndexTests {
    func setUp() async throws -> (TestApp, Agent, String, String) {
        let roots = NSTemporaryDirectory() + "kiln-idx-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: roots, withIntermediateDirectories: true)
        let dir = try makeSourceTree(roots)
        let t = try TestApp { $0.projectsRoots = [roots] }
        _ = try await makeUser(t, "ix@example.com")
        let a = Agent(t.base)
        try await a.login("ix@example.com", "a long enough password")
        let ws = try await workspaceOf(a)
        let p = try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": dir])
        return (t, a, try #require(p.json["id"] as? String), dir)
    }

    func rescan(_ a: Agent, _ t: TestApp, _ pid: String) async throws -> [String: Any] {
        let r = try await a.call("POST", "/api/project/rescan", json: ["project_id": pid])
        #expect(r.status == 202)
        let job = try #require(r.json["job_id"] as? String)
        let events = try await http("GET", t.base + "/api/project/rescan/\(job)/events", headers: ["Cookie": "kiln_session=\(a.session!)"])
        #expect(events.headers["content-type"]?.hasPrefix("text/event-stream") == true)
        #expect(events.text.contains("event: done"))
        let doneData = try #require(events.text.components(separatedBy: "event: done\ndata: ").last?.split(separator: "\n").first)
        return try #require(try JSONSerialization.jsonObject(with: Data(doneData.utf8)) as? [String: Any])
    }

    @Test func rescanIsIncremental() async throws {
        let (t, a, pid, dir) = try await setUp()
        defer { Task { await t.stop() } }
        let first = try await rescan(a, t, pid)
        #expect((first["indexed"] as? Int ?? 0) > 50 && (first["symbols"] as? Int ?? 0) > 100)
        let second = try await rescan(a, t, pid)
        #expect(second["indexed"] as? Int == 0 && second["unchanged"] as? Int == first["files_seen"] as? Int)
        try "func addedLater() {}\n".write(toFile: dir + "/poly/new.swift", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: dir + "/poly/net.c")
        let third = try await rescan(a, t, pid)
        #expect(third["indexed"] as? Int == 1 && third["removed"] as? Int == 1)
        let found = try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=addedLater")
        #expect((found.json["items"] as? [[String: Any]])?.first?["path"] as? String == "poly/new.swift")
        let gone = try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=open_conn")
        #expect((gone.json["items"] as? [[String: Any]])?.contains { $0["name"] as? String == "open_conn" } == false)
    }

    @Test func searchEqualsGrepForRandomQueries() async throws {
        let (t, a, pid, dir) = try await setUp()
        defer { Task { await t.stop() } }
        _ = try await rescan(a, t, pid)
        // Queries: substrings of real lines (literal, with case variants) and a fixed set of regexes.
        var rng = SystemRandomNumberGenerator()
        let corpus = try String(contentsOfFile: dir + "/Sources/KilnHTTP/IO/Connection.swift", encoding: .utf8)
            .split(separator: "\n").map(String.init).filter { $0.trimmingCharacters(in: .whitespaces).count > 12 }
        var queries: [(q: String, regex: Bool, caseSensitive: Bool)] = []
        while queries.count < 170 {
            let line = corpus[Int(rng.next() % UInt64(corpus.count))].trimmingCharacters(in: .whitespaces)
            let len = 3 + Int(rng.next() % 10)
            guard line.count > len else { continue }
            let start = Int(rng.next() % UInt64(line.count - len))
            var q = String(Array(line)[start..<(start + len)])
            if q.hasPrefix("-") || q.contains("\\") { continue }
            let mode = Int(rng.next() % 3)
            if mode == 1 { q = q.uppercased() }
            queries.append((q, false, mode == 2))
        }
        let regexes = ["func [a-z]+\\(", "[A-Z][a-z]+Error", "let [a-z]+ = ", "^import ", "^\\s*case \\.", "[0-9]{4,}", "Web[Ss]ocket",
                       "try await [a-z]+\\.", "\\bguard let\\b", "[a-z]+_[a-z]+\\(", "https?://", "Response\\.(json|text)", "^\\}$",
                       "static (let|func)", "(GET|POST|PUT|DELETE) ", "[Ee]rror", "\\(\\)$", "^\\s+//", "\\$0", "<[A-Z][a-z]+>",
                       "[a-z]+ing\\b", "ws_[a-z]+", "^struct ", "Int\\?", "self\\.[a-z]+ = ", "\"[a-z]+\": ", "\\.count > [0-9]",
                       "private (var|let|func)", "X-[A-Z][a-z]+", "[A-Z]{3,}"]
        for r in regexes { queries.append((r, true, true)) }
        var mismatches: [String] = []
        for (q, regex, cs) in queries {
            var grepArgs = ["-rnI", "--exclude-dir=ignored", "--exclude=.gitignore"]
            grepArgs.append(regex ? "-E" : "-F")
            if !cs { grepArgs.append("-i") }
            grepArgs += ["-e", q, "."]
            let g = try await ProcessRunner.run("grep", grepArgs, cwd: dir)
            let expected = Set(g.stdoutText.split(separator: "\n").compactMap { line -> String? in
                let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count >= 2 else { return nil }
                return "\(parts[0].dropFirst(2)):\(parts[1])"
            })
            var got = Set<String>()
            var cursor: String? = nil
            repeat {
                var url = "/api/project/search?project_id=\(pid)&limit=200&q=\(q.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)"
                if regex { url += "&regex=1" }
                if cs { url += "&case=1" }
                if let cursor { url += "&cursor=\(cursor)" }
                let r = try await a.call("GET", url)
                guard r.status == 200 else { mismatches.append("\(q): status \(r.status)"); break }
                for m in r.json["items"] as? [[String: Any]] ?? [] { got.insert("\(m["path"] as? String ?? ""):\(m["line"] as? Int ?? 0)") }
                cursor = r.json["next_cursor"] as? String
            } while cursor != nil
            if got != expected { mismatches.append("\(regex ? "re" : "lit")\(cs ? "" : "/i") \(q.debugDescription): grep \(expected.count) ours \(got.count) e.g. \(expected.symmetricDifference(got).sorted().prefix(2))") }
        }
        #expect(queries.count == 200)
        #expect(mismatches.isEmpty, "\(mismatches.count) of 200 differ: \(mismatches.prefix(5))")
    }

    /// Files of the same content are indexed once, the others as copies: each is found under its own
    /// path, each keeps being found when another changes or goes, and each gets its findings.
    @Test func identicalFilesAreEachFound() async throws {
        let (t, a, pid, dir) = try await setUp()
        defer { Task { await t.stop() } }
        let token = "ghp_" + String(repeating: "Zq9x", count: 9)
        let text = "let marker = \"kiln-twin-marker\"\nlet t = \"\(token)\"\nfunc twinFunction() {}\n"
        for name in ["one", "two", "three"] { try text.write(toFile: dir + "/poly/twin-\(name).swift", atomically: true, encoding: .utf8) }
        // C twins go to ctags where it is installed; the C++ one is of another language, so its
        // symbols are its own.
        let c = "int twin_c_function(void) { return 1; }\n"
        // ctags parses a `.h` as C++ (the built-in extractor as C): a header twin of a `.c` file is
        // extracted itself, not given the `.c` file's symbols.
        for name in ["twin-a.c", "twin-b.c", "twin-c.hpp", "twin-d.h"] { try c.write(toFile: dir + "/poly/" + name, atomically: true, encoding: .utf8) }
        let header = ProcessRunner.which("ctags") != nil ? "C++" : "C"
        func found(_ q: String) async throws -> [String] {
            let r = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=\(q)&case=1")
            return ((r.json["items"] as? [[String: Any]]) ?? []).compactMap { $0["path"] as? String }.sorted()
        }
        func symbols(_ q: String) async throws -> [String] {
            let r = try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=\(q)")
            return ((r.json["items"] as? [[String: Any]]) ?? []).filter { $0["name"] as? String == q }.map { "\($0["path"] ?? "") \($0["language"] ?? "") \($0["line"] ?? "")" }.sorted()
        }
        let first = try await rescan(a, t, pid)
        #expect(try await found("kiln-twin-marker") == ["poly/twin-one.swift", "poly/twin-three.swift", "poly/twin-two.swift"])
        #expect(try await symbols("twinFunction") == ["poly/twin-one.swift Swift 3", "poly/twin-three.swift Swift 3", "poly/twin-two.swift Swift 3"])
        #expect(try await symbols("twin_c_function") == ["poly/twin-a.c C 1", "poly/twin-b.c C 1", "poly/twin-c.hpp C++ 1", "poly/twin-d.h \(header) 1"])
        let vendoredSymbols = try await symbols("readLoop")
        #expect(vendoredSymbols.contains { $0.hasPrefix("Sources/KilnHTTP/") } && vendoredSymbols.contains { $0.hasPrefix("vendor/KilnHTTP/") }, "\(vendoredSymbols)")
        let vendored = try await found("func readLoop")
        #expect(vendored.contains { $0.hasPrefix("Sources/KilnHTTP/") } && vendored.contains { $0.hasPrefix("vendor/KilnHTTP/") }, "\(vendored)")
        let findings = try await a.call("GET", "/api/project/findings?project_id=\(pid)").json["items"] as? [[String: Any]] ?? []
        let twins = Set(findings.filter { $0["rule"] as? String == "github-token" }.compactMap { $0["path"] as? String })
        #expect(twins == ["poly/twin-one.swift", "poly/twin-two.swift", "poly/twin-three.swift"])
        // The twins after the first, and every vendored file (a few may be empty or binary).
        let vendorFiles = FileManager.default.enumerator(atPath: dir + "/vendor")!.allObjects.count
        #expect((first["copies"] as? Int ?? 0) >= 2 + vendorFiles / 2, "\(first)")

        // Whichever of them held the content, the others outlive its change and its removal.
        try "let marker = \"kiln-changed-twin\"\n".write(toFile: dir + "/poly/twin-one.swift", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: dir + "/poly/twin-two.swift")
        _ = try await rescan(a, t, pid)
        #expect(try await found("kiln-twin-marker") == ["poly/twin-three.swift"])
        #expect(try await found("kiln-changed-twin") == ["poly/twin-one.swift"])
        #expect(try await symbols("twinFunction") == ["poly/twin-three.swift Swift 3"])
        // A rescan with nothing to read keeps it so.
        let again = try await rescan(a, t, pid)
        #expect(again["indexed"] as? Int == 0)
        #expect(try await found("kiln-twin-marker") == ["poly/twin-three.swift"])
    }

    @Test func searchDetailsRankingAndBadInput() async throws {
        let (t, a, pid, _) = try await setUp()
        defer { Task { await t.stop() } }
        let r = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=formatInvoice")
        let items = try #require(r.json["items"] as? [[String: Any]])
        #expect(items.first?["definition"] as? Bool == true && items.first?["path"] as? String == "poly/Model.swift")
        #expect(items.first?["line"] as? Int == 8 && items.first?["column"] as? Int == 6)
        #expect((items.first?["before"] as? [String])?.count == 2)
        let glob = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=class&path=poly/*.py")
        #expect((glob.json["items"] as? [[String: Any]])?.allSatisfy { ($0["path"] as? String)?.hasSuffix(".py") == true } == true)
        #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=zqxjkw-ignored-marker").json["total"] as? Int == 0)
        #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=%28unclosed&regex=1").status == 400)
        #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=").status == 400)
        #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=x&limit=999").status == 400)
        #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=x&cursor=%21%21").status == 400)
    }

    @Test func regexNarrowingAndARunawayExpression() async throws {
        #expect(RegexLiteral.required("func [a-z]+\\(") == Array("func ".utf8))
        #expect(RegexLiteral.required("try await [a-z]+\\.") == Array("try await ".utf8))
        #expect(RegexLiteral.required("Web[Ss]ocket") == Array("ocket".utf8))
        #expect(RegexLiteral.required("colou?r") == Array("colo".utf8))
        #expect(RegexLiteral.required("abc+d") == Array("abc".utf8))
        #expect(RegexLiteral.required("(GET|POST) ") == nil)
        #expect(RegexLiteral.required("(?i)needle") == nil)
        #expect(RegexLiteral.required("ab(cdef)?") == nil)
        #expect(RegexLiteral.required("x{2}yz") == nil)

        let roots = NSTemporaryDirectory() + "kiln-rx-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: roots + "/p", withIntermediateDirectories: true)
        try (String(repeating: "a", count: 40) + "b\n").write(toFile: roots + "/p/runaway.txt", atomically: true, encoding: .utf8)
        let t = try TestApp { $0.projectsRoots = [roots]; $0.searchTimeoutSeconds = 1 }
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "rx@example.com")
        let a = Agent(t.base)
        try await a.login("rx@example.com", "a long enough password")
        let p = try await a.call("POST", "/api/project/load", json: ["ws_id": try await workspaceOf(a), "path": roots + "/p"])
        let pid = try #require(p.json["id"] as? String)
        let started = Date()
        let r = try await a.call("GET", "/api/project/search?project_id=\(pid)&regex=1&q=%28a%2B%29%2Bc")
        #expect(r.status == 400 && (r.json["error"] as? [String: Any])?["message"] as? String != nil)
        #expect(Date().timeIntervalSince(started) < 30)
        let ok = try await a.call("GET", "/api/project/search?project_id=\(pid)&regex=1&q=a%2Bb")
        #expect(ok.status == 200 && ok.json["total"] as? Int == 1)
    }

    @Test func symlinkedFilesAreIndexedOnlyInsideTheProject() async throws {
        let roots = NSTemporaryDirectory() + "kiln-ln-\(UUID().uuidString)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: roots + "/p", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: roots + "/elsewhere", withIntermediateDirectories: true)
        try "qqmarker-inside\n".write(toFile: roots + "/p/real.txt", atomically: true, encoding: .utf8)
        try "qqmarker-outside\n".write(toFile: roots + "/elsewhere/secret.txt", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: roots + "/p/alias.txt", withDestinationPath: roots + "/p/real.txt")
        try fm.createSymbolicLink(atPath: roots + "/p/escape.txt", withDestinationPath: roots + "/elsewhere/secret.txt")
        let t = try TestApp { $0.projectsRoots = [roots + "/p"] }
        defer { Task { await t.stop() } }
        _ = try await makeUser(t, "ln@example.com")
        let a = Agent(t.base)
        try await a.login("ln@example.com", "a long enough password")
        let p = try await a.call("POST", "/api/project/load", json: ["ws_id": try await workspaceOf(a), "path": roots + "/p"])
        let pid = try #require(p.json["id"] as? String)
        let inside = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=qqmarker")
        let paths = Set((inside.json["items"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String })
        #expect(paths == ["real.txt", "alias.txt"])
    }

    @Test func symbolsAcrossLanguages() async throws {
        let (t, a, pid, _) = try await setUp()
        defer { Task { await t.stop() } }
        func first(_ q: String, _ extra: String = "") async throws -> [String: Any]? {
            (try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=\(q)\(extra)").json["items"] as? [[String: Any]])?.first
        }
        for (name, path) in [("Invoice", "poly/Model.swift"), ("Storable", "poly/Model.swift"), ("formatInvoice", "poly/Model.swift"),
                             ("Parser", "poly/app.py"), ("parse_line", "poly/app.py"), ("MAX_RETRIES", "poly/app.py"),
                             ("Server", "poly/main.go"), ("Start", "poly/main.go"),
                             ("Engine", "poly/lib.rs"), ("run_engine", "poly/lib.rs"), ("Runner", "poly/lib.rs"),
                             ("Widget", "poly/web.js"), ("mountWidget", "poly/web.js"), ("App", "poly/App.java"), ("Greeter", "poly/App.java"),
                             ("open_conn", "poly/net.c"), ("BUFFER_SIZE", "poly/net.c"), ("HTTPServer", "Sources/KilnHTTP/Server.swift")] {
            let s = try await first(name)
            #expect(s?["name"] as? String == name && s?["path"] as? String == path, "\(name): \(String(describing: s))")
        }
        let method = try await first("total")
        #expect(method?["scope"] as? String == "Invoice" && method?["language"] as? String == "Swift")
        #expect(try await first("formatInv")?["name"] as? String == "formatInvoice")   // prefix
        #expect(try await first("frmtInvc")?["name"] as? String == "formatInvoice")   // fuzzy
        #expect(try await first("Invoice", "&kind=struct")?["kind"] as? String == "struct")
        #expect(try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=zzzzqqq").json["items"] as? [Any] != nil)
    }

    @Test func findingsMaskSecrets() async throws {
        let (t, a, pid, _) = try await setUp()
        defer { Task { await t.stop() } }
        let r = try await a.call("GET", "/api/project/findings?project_id=\(pid)")
        let items = try #require(r.json["items"] as? [[String: Any]])
        let rules = Set(items.compactMap { $0["rule"] as? String })
        #expect(rules.isSuperset(of: ["aws-access-key", "private-key", "high-entropy-assignment", "merge-conflict", "todo"]), "\(rules)")
        #expect(!r.text.contains("AKIAIOSFODNN7EXAMPLE") && !r.text.contains("9f8e7d6c5b4a39281706f5e4d3c2b1a0"))
        #expect(r.text.contains("AKIA•"))
    }

    /// Findings run after the search index is committed, on the changed files only: they follow
    /// edits, removals and size, and unchanged files keep theirs.
    @Test func findingsFollowRescans() async throws {
        let (t, a, pid, dir) = try await setUp()
        defer { Task { await t.stop() } }
        func findings() async throws -> [(String, String)] {
            let items = try await a.call("GET", "/api/project/findings?project_id=\(pid)").json["items"] as? [[String: Any]] ?? []
            return items.compactMap { i in (i["path"] as? String).flatMap { p in (i["rule"] as? String).map { (p, $0) } } }
        }
        let first = try await rescan(a, t, pid)
        let before = try await findings()
        #expect(first["findings"] as? Int == before.count)
        #expect(before.contains { $0 == ("secrets/config.py", "aws-access-key") })
        let token = "ghp_" + String(repeating: "a1B2", count: 9)
        try "nothing secret here any more\n".write(toFile: dir + "/secrets/config.py", atomically: true, encoding: .utf8)
        try "let t = \"\(token)\"\n".write(toFile: dir + "/poly/token.swift", atomically: true, encoding: .utf8)
        try Data(repeating: 0x61, count: (1 << 20) + 1).write(to: URL(fileURLWithPath: dir + "/poly/big.txt"))
        try FileManager.default.removeItem(atPath: dir + "/secrets/merge.txt")
        let second = try await rescan(a, t, pid)
        let after = try await findings()
        #expect(second["findings"] as? Int == after.count - before.filter { $0.0.hasPrefix("secrets/id_rsa") }.count)
        #expect(!after.contains { $0.0 == "secrets/config.py" || $0.0 == "secrets/merge.txt" })
        #expect(after.contains { $0 == ("poly/token.swift", "github-token") })
        #expect(after.contains { $0 == ("poly/big.txt", "large-file") })
        #expect(after.contains { $0 == ("secrets/id_rsa", "private-key") })   // unchanged, kept
    }
}

/// The built-in extractor on its own (what runs when universal-ctags is not installed, and always for Swift).
@Suite struct BuiltInSymbolTests {
    @Test func extractsDefinitionsInEveryLanguage() throws {
        let root = NSTemporaryDirectory() + "kiln-sym-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let dir = try makeSourceTree(root)
        let expected: [String: [(String, String)]] = [
            "poly/Model.swift": [("Storable", "protocol"), ("Invoice", "struct"), ("total", "method"), ("formatInvoice", "function"), ("TAX_RATE", "constant")],
            "poly/app.py": [("MAX_RETRIES", "constant"), ("Parser", "class"), ("parse_line", "method"), ("main", "function")],
            "poly/main.go": [("Version", "constant"), ("Server", "type"), ("Handler", "interface"), ("Start", "method"), ("main", "function")],
            "poly/lib.rs": [("LIMIT", "constant"), ("Engine", "struct"), ("Runner", "interface"), ("run_engine", "method"), ("helper", "function")],
            "poly/web.js": [("API_ROOT", "constant"), ("Widget", "class"), ("render", "method"), ("mountWidget", "function")],
            "poly/App.java": [("App", "class"), ("PORT", "constant"), ("main", "method"), ("Greeter", "interface")],
            "poly/net.c": [("BUFFER_SIZE", "constant"), ("conn", "struct"), ("open_conn", "function")],
        ]
        for (path, want) in expected {
            let text = try String(contentsOfFile: dir + "/" + path, encoding: .utf8)
            let got = SymbolExtractor.extract(path: path, text: text)
            for (name, kind) in want {
                #expect(got.contains { $0.name == name && $0.kind == kind }, "\(path): \(name) \(kind) in \(got.map { "\($0.name):\($0.kind)" })")
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
        for (name, kind, path, line) in symbols { b.add(Symbol(name: name, kind: kind, path: path, line: line, scope: scope, language: "Swift")) }
        return b
    }

    let sample: [(String, String, String, Int)] = [
        ("parseLine", "function", "b.swift", 3), ("ParseLine", "struct", "a.swift", 9), ("parselinefast", "function", "a.swift", 1),
        ("parser", "class", "c.swift", 2), ("reparseLines", "method", "c.swift", 7), ("pxaxrxsxe", "function", "d.swift", 4),
        ("parseLine", "function", "a.swift", 12), ("unrelated", "constant", "d.swift", 1), ("λParse", "function", "e.swift", 5),
    ]

    @Test func ranksExactPrefixSubstringAndFuzzy() throws {
        let t = SymbolColumns(keeping: SymbolColumns(), without: [], adding: [batch(sample)])
        #expect(t.count == sample.count)
        let names = t.lookup("parseLine", kind: nil, limit: 50).map { "\($0.name)@\($0.path):\($0.line)" }
        // Exact (two, by path), then case-insensitive exact, then prefix, then substring; no fuzzy-only hit spells "parseline".
        #expect(names == ["parseLine@a.swift:12", "parseLine@b.swift:3", "ParseLine@a.swift:9", "parselinefast@a.swift:1", "reparseLines@c.swift:7"])
        #expect(t.lookup("prse", kind: nil, limit: 50).map(\.name).contains("pxaxrxsxe"))
        #expect(t.lookup("PARSER", kind: nil, limit: 50).first?.name == "parser")
        #expect(t.lookup("parse", kind: "class", limit: 50).map(\.name) == ["parser"])
        #expect(t.lookup("parse", kind: "no-such-kind", limit: 50).isEmpty)
        #expect(t.lookup("parse", kind: nil, limit: 2).count == 2)
        #expect(t.lookup("", kind: nil, limit: 3).map(\.name) == ["parser", "λParse", "ParseLine"])   // shortest names first, then path, line
        #expect(t.lookup("λpa", kind: nil, limit: 5).first?.name == "λParse")
        #expect(t.lookup("zzz", kind: nil, limit: 5).isEmpty)
        #expect(t.definitions(named: "parseLine") == ["a.swift:12", "b.swift:3"])
        #expect(t.definitions(named: "parseline").isEmpty)
    }

    @Test func replacingAFileKeepsTheOthers() throws {
        let t = SymbolColumns(keeping: SymbolColumns(), without: [], adding: [batch(sample)])
        let next = SymbolColumns(keeping: t, without: ["a.swift", "d.swift"], adding: [batch([("freshName", "function", "a.swift", 40)])])
        #expect(Set(next.lookup("", kind: nil, limit: 100).map(\.path)) == ["a.swift", "b.swift", "c.swift", "e.swift"])
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
        #expect(copied.allSatisfy { $0.kind == "function" && $0.scope == "Outer" && $0.language == "Swift" && $0.line == 1 })
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
            return .init(document: .init(segment: 0, doc: 0), anchors: 0,
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
            try table.replace(removing: ["a.swift"], adding: [batch([("freshName", "function", "a.swift", 40)])], fresh: false)
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
        let a = fresh.snapshot().lookup("", kind: nil, limit: 100), b = reopened.snapshot().lookup("", kind: nil, limit: 100)
        #expect(a == b && a.count == sample.count && a.allSatisfy { $0.scope == "Outer" && $0.language == "Swift" })
        // Truncated, a flipped index, and garbage are each refused as a whole.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        var flipped = bytes
        flipped[flipped.count - 8] = 0xFF   // a record's kind index, far past the string table
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
        defer { Task { await t.stop() } }
        _ = try await rescan(a, t, pid)
        func names(_ q: String) async throws -> [String] {
            (try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=\(q)").json["items"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        }
        #expect(try await names("formatInvoice").first == "formatInvoice")
        let dir = t.dataDir + "/index/" + pid
        try Data("damaged".utf8).write(to: URL(fileURLWithPath: dir + "/symbols.bin"))
        SymbolTable.forgetShared(directory: dir)
        // The next lookup notices and rebuilds: no file changed, yet every symbol is back.
        #expect(try await names("formatInvoice").first == "formatInvoice")
        #expect(try await names("open_conn").first == "open_conn")
        #expect(SymbolTable.shared(directory: dir).isComplete)
        let again = try await rescan(a, t, pid)
        #expect(again["indexed"] as? Int == 0 && again["symbols"] as? Int == 0)
    }
}

/// The byte-level filters in front of the findings expressions must never refuse a line an
/// expression would match.
@Suite struct FindingsFilterTests {
    func randomLine(_ rng: inout SystemRandomNumberGenerator) -> String {
        let pieces = ["api_key", " = ", ":", "\"", "'", "TO" + "DO", "FIX" + "ME", "x", "_", " ", "\t", "abcdefgh", "0123456789", "é", "token", "=", "NOTE"]
        return (0..<Int(rng.next() % 14 + 1)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined()
    }

    @Test func filtersAgreeWithTheExpressions() {
        var rng = SystemRandomNumberGenerator()
        var assignments = 0, todos = 0
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
                if assigns { assignments += 1; #expect(Findings.mayAssignSecret(bytes), "\(line.debugDescription)") }
                // ASCII word boundaries: the expression's \b also treats é as a letter.
                if !line.contains("é") {
                    #expect(Findings.todoWord(bytes).map { _ in true } == todo.map { _ in true }, "\(line.debugDescription)")
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
        let pieces: [[UInt8]] = [[0xC3, 0xA9], [0xE2, 0x82, 0xAC], [0xF0, 0x9F, 0x98, 0x80], [0x80], [0xC3], [0xE2, 0x82], [0xED, 0xA0, 0x80],
                                 [0xF4, 0x90, 0x80, 0x80], [0xC0, 0xAF], [0xFF], [0xE0, 0x80, 0xAF], [0xF0, 0x9F, 0x98]]
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
    func rootAndOutside(_ name: String, folders: [String], files: [String: String]) throws -> (base: String, root: String, outside: String) {
        let base = NSTemporaryDirectory() + "kiln-\(name)-\(UUID().uuidString)"
        for d in ["root", "outside"] + folders { try FileManager.default.createDirectory(atPath: base + "/" + d, withIntermediateDirectories: true) }
        for (path, text) in files { try text.write(toFile: base + "/" + path, atomically: false, encoding: .utf8) }
        return (base, base + "/root", base + "/outside")
    }

    /// New files are opened beneath the project's folder through no symlink, and so are the folders
    /// the walk enters: a folder swapped for a link to the outside after its parent was listed is not
    /// entered, a file is not read through it.
    @Test(.enabled(if: SafePath.canOpenBeneath, "openat2 (Linux 5.6)"))
    func filesAndFoldersAreOpenedBeneathTheRootThroughNoSymlink() throws {
        let fm = FileManager.default
        let (base, root, outside) = try rootAndOutside("beneath", folders: ["root/sub", "root/z"], files: [
            "root/sub/a.txt": "inside\n", "root/a.txt": "first\n", "root/z/kept.txt": "in z\n", "outside/secret.txt": "secret\n"])
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
    func referenceSlice(_ bytes: [UInt8], _ lines: [ArraySlice<UInt8>], _ start: Int?, _ end: Int?) -> (slice: [UInt8], s: Int, e: Int, total: Int)? {
        let total = bytes.last == 10 ? lines.count - 1 : lines.count
        let s = max(1, start ?? 1), e = min(total, end ?? total)
        guard s <= max(e, 1) else { return nil }
        var slice: [UInt8] = []
        if s <= e { for i in (s - 1)..<e { slice += lines[i]; slice.append(10) } }
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
        for i in 0..<3000 { long += Array(String(repeating: "x", count: Int(rng.next() % 900)).utf8) + (i % 7 == 0 ? [13, 10] : [10]) }
        let files: [[UInt8]] = [[], [10], [10, 10], Array("one".utf8), Array("one\ntwo".utf8), Array("one\ntwo\n".utf8),
                                Array(repeating: 65, count: 8191) + [10] + Array("next\n".utf8), Array(repeating: 66, count: 8192) + [10, 67],
                                long, long.dropLast()]
        var checked = 0
        for (n, bytes) in files.enumerated() {
            let path = dir + "/f\(n)"
            #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
            // Split once per file: the test runs beside the others on the same few threads.
            let lines = bytes.split(separator: 10, omittingEmptySubsequences: false)
            let total = max(1, lines.count)
            var ranges: [(Int?, Int?)] = [(1, nil), (nil, 1), (1, 1), (2, 3), (total, nil), (total, total + 5), (total + 1, nil), (3, 2)]
            for _ in 0..<12 { let a = 1 + Int(rng.next() % UInt64(total + 2)); ranges.append((a, a + Int(rng.next() % 50))) }
            for (start, end) in ranges {
                let fd = open(path, O_RDONLY)
                defer { close(fd) }
                let first = ProjectService.readUpTo(fd, 8192)
                let want = referenceSlice(bytes, lines, start, end)
                let got = try? ProjectService.lines(fd, first: first, path: "f", size: bytes.count, etag: "", startLine: start, endLine: end)
                #expect((got == nil) == (want == nil), "file \(n) range \(String(describing: start))-\(String(describing: end))")
                if let got, let want {
                    let same = got.bytes == want.slice && got.startLine == want.s && got.endLine == want.e && got.totalLines == want.total
                    #expect(same, "file \(n) range \(String(describing: start))-\(String(describing: end)): \(got.totalLines ?? -1) lines, want \(want.total)")
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
        let (base, root, outside) = try rootAndOutside("resolved", folders: ["root/sub"], files: ["root/sub/a.txt": "inside\n", "outside/a.txt": "secret\n"])
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
            let leaked = try ProjectService.openResolved(root + "/sub/a.txt", root: root, path: "sub/a.txt", expecting: outsideStat)
            close(leaked)
            Issue.record("opened a file through a link out")
        } catch let e as APIError {
            #expect(e.status == .forbidden)
        }
        // A file replaced since it was resolved.
        #expect(unlink(root + "/sub") == 0 && rename(root + "/sub.moved", root + "/sub") == 0)
        try "replaced\n".write(toFile: root + "/sub/a.txt", atomically: true, encoding: .utf8)
        do { _ = try ProjectService.openResolved(root + "/sub/a.txt", root: root, path: "sub/a.txt", expecting: st); Issue.record("no conflict") } catch let e as APIError {
            #expect(e.status == .conflict)
        }
    }

    /// The tree route lists the folder it resolved only while no link is on the way to it.
    @Test(.enabled(if: SafePath.canOpenBeneath, "openat2 (Linux 5.6)"))
    func theTreeListsOnlyWhatItResolved() throws {
        let fm = FileManager.default
        let (base, root, outside) = try rootAndOutside("list", folders: ["root/sub/.git"], files: ["root/sub/a.txt": "a", "outside/secret.txt": "s"])
        defer { try? fm.removeItem(atPath: base) }
        var bad: [CChar] = Array((root + "/sub/bad-").utf8CString.dropLast()) + [CChar(bitPattern: 0xFF), 0]
        close(open(&bad, O_CREAT | O_WRONLY, 0o644))
        let listed = try ProjectService.listDirectory(root + "/sub", root: root, rel: "sub", path: "sub")
        #expect(listed.keys.sorted() == ["a.txt"] && listed["a.txt"]?.st_size == 1)
        func status(_ body: () throws -> Any) -> HTTPStatus? {
            do { _ = try body(); return nil } catch let e as APIError { return e.status } catch { return nil }
        }
        #expect(status { try ProjectService.listDirectory(root + "/sub/a.txt", root: root, rel: "sub/a.txt", path: "sub/a.txt") } == .badRequest)
        // `sub/inner` resolved, then `sub` becomes a link out, where an `inner` folder waits.
        try fm.createDirectory(atPath: root + "/sub/inner", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: outside + "/inner", withIntermediateDirectories: true)
        #expect(rename(root + "/sub", root + "/sub.moved") == 0 && symlink(outside, root + "/sub") == 0)
        #expect(status { try ProjectService.listDirectory(root + "/sub/inner", root: root, rel: "sub/inner", path: "sub/inner") } == .forbidden)
        #expect(status { try ProjectService.listDirectory(root + "/sub", root: root, rel: "sub", path: "sub") } == .forbidden)
    }
}
