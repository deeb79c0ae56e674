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

@Suite struct ProjectIndexTests {
    func setUp() async throws -> (TestApp, Agent, String, String) {
        let roots = NSTemporaryDirectory() + "kiln-idx-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: roots, withIntermediateDirectories: true)
        let dir = try makeSourceTree(roots)
        let t = try TestApp { $0.moduleValues["--projects-root"] = [roots] }
        _ = try await makeUser(t, "ix@example.com")
        let a = Agent(t)
        try await a.login("ix@example.com", "a long enough password")
        let ws = try await workspaceOf(a)
        let p = try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": dir])
        return (t, a, try #require(p.json["id"] as? String), dir)
    }

    func rescan(_ a: Agent, _ t: TestApp, _ pid: String) async throws -> [String: Any] {
        let r = try await a.call("POST", "/api/project/rescan", json: ["project_id": pid])
        #expect(r.status == 202)
        let job = try #require(r.json["job_id"] as? String)
        let events = try await t.request(
            "GET", "/api/project/rescan/\(job)/events", headers: ["Cookie": "kiln_session=\(a.session!)"])
        #expect(events.headers["content-type"]?.hasPrefix("text/event-stream") == true)
        #expect(events.text.contains("event: done"))
        let doneData = try #require(
            events.text.components(separatedBy: "event: done\ndata: ").last?.split(separator: "\n").first)
        return try #require(try JSONSerialization.jsonObject(with: Data(doneData.utf8)) as? [String: Any])
    }

    @Test func rescanIsIncremental() async throws {
        let (t, a, pid, dir) = try await setUp()
        try await using(t) { t in
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
            #expect(
                (gone.json["items"] as? [[String: Any]])?.contains { $0["name"] as? String == "open_conn" } == false)
        }
    }

    @Test func searchEqualsGrepForRandomQueries() async throws {
        let (t, a, pid, dir) = try await setUp()
        try await using(t) { t in
            _ = try await rescan(a, t, pid)
            // Queries: substrings of real lines (literal, with case variants) and a fixed set of regexes.
            var rng = SystemRandomNumberGenerator()
            let corpus = try String(contentsOfFile: dir + "/Sources/KilnHTTP/IO/Connection.swift", encoding: .utf8)
                .split(separator: "\n").map(String.init).filter { $0.trimmingCharacters(in: .whitespaces).count > 12 }
            var queries: [(q: String, regex: Bool, caseSensitive: Bool)] = []
            // The project's own .gitignore is a file like any other: found by its text too (grep once
            // left it out, and a random query that met "ignored/" failed).
            queries.append(("IGNORED/", false, false))
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
            let regexes = [
                "func [a-z]+\\(", "[A-Z][a-z]+Error", "let [a-z]+ = ", "^import ", "^\\s*case \\.", "[0-9]{4,}",
                "Web[Ss]ocket",
                "try await [a-z]+\\.", "\\bguard let\\b", "[a-z]+_[a-z]+\\(", "https?://", "Response\\.(json|text)",
                "^\\}$",
                "static (let|func)", "(GET|POST|PUT|DELETE) ", "[Ee]rror", "\\(\\)$", "^\\s+//", "\\$0",
                "<[A-Z][a-z]+>",
                "[a-z]+ing\\b", "ws_[a-z]+", "^struct ", "Int\\?", "self\\.[a-z]+ = ", "\"[a-z]+\": ",
                "\\.count > [0-9]",
                "private (var|let|func)", "X-[A-Z][a-z]+", "[A-Z]{3,}",
            ]
            for r in regexes { queries.append((r, true, true)) }
            var mismatches: [String] = []
            for (q, regex, cs) in queries {
                var grepArgs = ["-rnI", "--exclude-dir=ignored"]
                grepArgs.append(regex ? "-E" : "-F")
                if !cs { grepArgs.append("-i") }
                grepArgs += ["-e", q, "."]
                let g = try await ProcessRunner.run("grep", grepArgs, cwd: dir)
                let expected = Set(
                    g.stdoutText.split(separator: "\n").compactMap { line -> String? in
                        let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                        guard parts.count >= 2 else { return nil }
                        return "\(parts[0].dropFirst(2)):\(parts[1])"
                    })
                var got = Set<String>()
                var cursor: String? = nil
                repeat {
                    var url =
                        "/api/project/search?project_id=\(pid)&limit=200&q=\(q.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)"
                    if regex { url += "&regex=1" }
                    if cs { url += "&case=1" }
                    if let cursor { url += "&cursor=\(cursor)" }
                    let r = try await a.call("GET", url)
                    guard r.status == 200 else {
                        mismatches.append("\(q): status \(r.status)")
                        break
                    }
                    for m in r.json["items"] as? [[String: Any]] ?? [] {
                        got.insert("\(m["path"] as? String ?? ""):\(m["line"] as? Int ?? 0)")
                    }
                    cursor = r.json["next_cursor"] as? String
                } while cursor != nil
                if got != expected {
                    mismatches.append(
                        "\(regex ? "re" : "lit")\(cs ? "" : "/i") \(q.debugDescription): grep \(expected.count) ours \(got.count) e.g. \(expected.symmetricDifference(got).sorted().prefix(2))"
                    )
                }
            }
            #expect(queries.count == 200)
            #expect(mismatches.isEmpty, "\(mismatches.count) of 200 differ: \(mismatches.prefix(5))")
        }
    }

    /// Files of the same content are indexed once, the others as copies: each is found under its own
    /// path, each keeps being found when another changes or goes, and each gets its findings.
    @Test func identicalFilesAreEachFound() async throws {
        let (t, a, pid, dir) = try await setUp()
        try await using(t) { t in
            let token = "ghp_" + String(repeating: "Zq9x", count: 9)
            let text = "let marker = \"kiln-twin-marker\"\nlet t = \"\(token)\"\nfunc twinFunction() {}\n"
            for name in ["one", "two", "three"] {
                try text.write(toFile: dir + "/poly/twin-\(name).swift", atomically: true, encoding: .utf8)
            }
            // C twins go to ctags where it is installed; the C++ one is of another language, so its
            // symbols are its own.
            let c = "int twin_c_function(void) { return 1; }\n"
            // ctags parses a `.h` as C++ (the built-in extractor as C): a header twin of a `.c` file is
            // extracted itself, not given the `.c` file's symbols.
            for name in ["twin-a.c", "twin-b.c", "twin-c.hpp", "twin-d.h"] {
                try c.write(toFile: dir + "/poly/" + name, atomically: true, encoding: .utf8)
            }
            let header = ProcessRunner.which("ctags") != nil ? "C++" : "C"
            func found(_ q: String) async throws -> [String] {
                let r = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=\(q)&case=1")
                return ((r.json["items"] as? [[String: Any]]) ?? []).compactMap { $0["path"] as? String }.sorted()
            }
            func symbols(_ q: String) async throws -> [String] {
                let r = try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=\(q)")
                return ((r.json["items"] as? [[String: Any]]) ?? []).filter { $0["name"] as? String == q }.map {
                    "\($0["path"] ?? "") \($0["language"] ?? "") \($0["line"] ?? "")"
                }.sorted()
            }
            let first = try await rescan(a, t, pid)
            #expect(
                try await found("kiln-twin-marker") == [
                    "poly/twin-one.swift", "poly/twin-three.swift", "poly/twin-two.swift",
                ])
            #expect(
                try await symbols("twinFunction") == [
                    "poly/twin-one.swift Swift 3", "poly/twin-three.swift Swift 3", "poly/twin-two.swift Swift 3",
                ])
            #expect(
                try await symbols("twin_c_function") == [
                    "poly/twin-a.c C 1", "poly/twin-b.c C 1", "poly/twin-c.hpp C++ 1", "poly/twin-d.h \(header) 1",
                ])
            let vendoredSymbols = try await symbols("readLoop")
            #expect(
                vendoredSymbols.contains { $0.hasPrefix("Sources/KilnHTTP/") }
                    && vendoredSymbols.contains { $0.hasPrefix("vendor/KilnHTTP/") }, "\(vendoredSymbols)")
            let vendored = try await found("func readLoop")
            #expect(
                vendored.contains { $0.hasPrefix("Sources/KilnHTTP/") }
                    && vendored.contains { $0.hasPrefix("vendor/KilnHTTP/") }, "\(vendored)")
            let findings =
                try await a.call("GET", "/api/project/findings?project_id=\(pid)").json["items"] as? [[String: Any]]
                ?? []
            let twins = Set(
                findings.filter { $0["rule"] as? String == "github-token" }.compactMap { $0["path"] as? String })
            #expect(twins == ["poly/twin-one.swift", "poly/twin-two.swift", "poly/twin-three.swift"])
            // The twins after the first, and every vendored file (a few may be empty or binary).
            let vendorFiles = FileManager.default.enumerator(atPath: dir + "/vendor")!.allObjects.count
            #expect((first["copies"] as? Int ?? 0) >= 2 + vendorFiles / 2, "\(first)")

            // Whichever of them held the content, the others outlive its change and its removal.
            try "let marker = \"kiln-changed-twin\"\n".write(
                toFile: dir + "/poly/twin-one.swift", atomically: true, encoding: .utf8)
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
    }

    @Test func searchDetailsRankingAndBadInput() async throws {
        let (t, a, pid, _) = try await setUp()
        try await using(t) { t in
            let r = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=formatInvoice")
            let items = try #require(r.json["items"] as? [[String: Any]])
            #expect(
                items.first?["definition"] as? Bool == true && items.first?["path"] as? String == "poly/Model.swift")
            #expect(items.first?["line"] as? Int == 8 && items.first?["column"] as? Int == 6)
            #expect((items.first?["before"] as? [String])?.count == 2)
            let glob = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=class&path=poly/*.py")
            #expect(
                (glob.json["items"] as? [[String: Any]])?.allSatisfy {
                    ($0["path"] as? String)?.hasSuffix(".py") == true
                } == true)
            #expect(
                try await a.call("GET", "/api/project/search?project_id=\(pid)&q=zqxjkw-ignored-marker").json["total"]
                    as? Int == 0)
            #expect(
                try await a.call("GET", "/api/project/search?project_id=\(pid)&q=%28unclosed&regex=1").status == 400)
            #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=").status == 400)
            #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=x&limit=999").status == 400)
            #expect(try await a.call("GET", "/api/project/search?project_id=\(pid)&q=x&cursor=%21%21").status == 400)
        }
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
        try (String(repeating: "a", count: 40) + "b\n").write(
            toFile: roots + "/p/runaway.txt", atomically: true, encoding: .utf8)
        let t = try TestApp {
            $0.moduleValues["--projects-root"] = [roots]
            $0.set("--search-timeout", "1")
        }
        try await using(t) { t in
            _ = try await makeUser(t, "rx@example.com")
            let a = Agent(t)
            try await a.login("rx@example.com", "a long enough password")
            let p = try await a.call(
                "POST", "/api/project/load", json: ["ws_id": try await workspaceOf(a), "path": roots + "/p"])
            let pid = try #require(p.json["id"] as? String)
            // The 400 is the search timeout's answer: without it this pattern would not come back.
            let r = try await a.call("GET", "/api/project/search?project_id=\(pid)&regex=1&q=%28a%2B%29%2Bc")
            #expect(r.status == 400 && (r.json["error"] as? [String: Any])?["message"] as? String != nil)
            let ok = try await a.call("GET", "/api/project/search?project_id=\(pid)&regex=1&q=a%2Bb")
            #expect(ok.status == 200 && ok.json["total"] as? Int == 1)
        }
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
        let t = try TestApp { $0.moduleValues["--projects-root"] = [roots] }
        try await using(t) { t in
            _ = try await makeUser(t, "ln@example.com")
            let a = Agent(t)
            try await a.login("ln@example.com", "a long enough password")
            let p = try await a.call(
                "POST", "/api/project/load", json: ["ws_id": try await workspaceOf(a), "path": roots + "/p"])
            let pid = try #require(p.json["id"] as? String)
            let inside = try await a.call("GET", "/api/project/search?project_id=\(pid)&q=qqmarker")
            let paths = Set((inside.json["items"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String })
            #expect(paths == ["real.txt", "alias.txt"])
        }
    }

    @Test func symbolsAcrossLanguages() async throws {
        let (t, a, pid, _) = try await setUp()
        try await using(t) { t in
            func first(_ q: String, _ extra: String = "") async throws -> [String: Any]? {
                (try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=\(q)\(extra)").json["items"]
                    as? [[String: Any]])?.first
            }
            for (name, path) in [
                ("Invoice", "poly/Model.swift"), ("Storable", "poly/Model.swift"),
                ("formatInvoice", "poly/Model.swift"),
                ("Parser", "poly/app.py"), ("parse_line", "poly/app.py"), ("MAX_RETRIES", "poly/app.py"),
                ("Server", "poly/main.go"), ("Start", "poly/main.go"),
                ("Engine", "poly/lib.rs"), ("run_engine", "poly/lib.rs"), ("Runner", "poly/lib.rs"),
                ("Widget", "poly/web.js"), ("mountWidget", "poly/web.js"), ("App", "poly/App.java"),
                ("Greeter", "poly/App.java"),
                ("open_conn", "poly/net.c"), ("BUFFER_SIZE", "poly/net.c"),
                ("HTTPServer", "Sources/KilnHTTP/Server.swift"),
            ] {
                let s = try await first(name)
                #expect(
                    s?["name"] as? String == name && s?["path"] as? String == path, "\(name): \(String(describing: s))")
            }
            let method = try await first("total")
            #expect(method?["scope"] as? String == "Invoice" && method?["language"] as? String == "Swift")
            #expect(try await first("formatInv")?["name"] as? String == "formatInvoice")  // prefix
            #expect(try await first("frmtInvc")?["name"] as? String == "formatInvoice")  // fuzzy
            #expect(try await first("Invoice", "&kind=struct")?["kind"] as? String == "struct")
            #expect(
                try await a.call("GET", "/api/project/symbols?project_id=\(pid)&q=zzzzqqq").json["items"] as? [Any]
                    != nil)
        }
    }

    @Test func findingsMaskSecrets() async throws {
        let (t, a, pid, _) = try await setUp()
        try await using(t) { t in
            let r = try await a.call("GET", "/api/project/findings?project_id=\(pid)")
            let items = try #require(r.json["items"] as? [[String: Any]])
            let rules = Set(items.compactMap { $0["rule"] as? String })
            #expect(
                rules.isSuperset(of: [
                    "aws-access-key", "private-key", "high-entropy-assignment", "merge-conflict", "todo",
                ]), "\(rules)")
            #expect(!r.text.contains("AKIAIOSFODNN7EXAMPLE") && !r.text.contains("9f8e7d6c5b4a39281706f5e4d3c2b1a0"))
            #expect(r.text.contains("AKIA•"))
        }
    }

    /// Findings run after the search index is committed, on the changed files only: they follow
    /// edits, removals and size, and unchanged files keep theirs.
    @Test func findingsFollowRescans() async throws {
        let (t, a, pid, dir) = try await setUp()
        try await using(t) { t in
            func findings() async throws -> [(String, String)] {
                let items =
                    try await a.call("GET", "/api/project/findings?project_id=\(pid)").json["items"] as? [[String: Any]]
                    ?? []
                return items.compactMap { i in
                    (i["path"] as? String).flatMap { p in (i["rule"] as? String).map { (p, $0) } }
                }
            }
            let first = try await rescan(a, t, pid)
            let before = try await findings()
            #expect(first["findings"] as? Int == before.count)
            #expect(before.contains { $0 == ("secrets/config.py", "aws-access-key") })
            let token = "ghp_" + String(repeating: "a1B2", count: 9)
            try "nothing secret here any more\n".write(
                toFile: dir + "/secrets/config.py", atomically: true, encoding: .utf8)
            try "let t = \"\(token)\"\n".write(toFile: dir + "/poly/token.swift", atomically: true, encoding: .utf8)
            try Data(repeating: 0x61, count: (1 << 20) + 1).write(to: URL(fileURLWithPath: dir + "/poly/big.txt"))
            try FileManager.default.removeItem(atPath: dir + "/secrets/merge.txt")
            let second = try await rescan(a, t, pid)
            let after = try await findings()
            #expect(
                second["findings"] as? Int == after.count - before.filter { $0.0.hasPrefix("secrets/id_rsa") }.count)
            #expect(!after.contains { $0.0 == "secrets/config.py" || $0.0 == "secrets/merge.txt" })
            #expect(after.contains { $0 == ("poly/token.swift", "github-token") })
            #expect(after.contains { $0 == ("poly/big.txt", "large-file") })
            #expect(after.contains { $0 == ("secrets/id_rsa", "private-key") })  // unchanged, kept
        }
    }
}
