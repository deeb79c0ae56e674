import Foundation
import KilnCore
import KilnHTTP

/// Finds a project's test command from its files, and reads pass/fail counts out of the output of
/// the common runners.
public enum TestRunners {
    public struct Detected: Sendable, Equatable {
        public let runner: String
        public let command: String
    }

    /// The first matching marker file wins, in the order the issue lists them.
    public static func detect(root: String) -> Detected? {
        let fm = FileManager.default
        func has(_ f: String) -> Bool { fm.fileExists(atPath: root + "/" + f) }
        func text(_ f: String) -> String? {
            guard let d = fm.contents(atPath: root + "/" + f), d.count <= 1 << 20 else { return nil }
            return String(decoding: d, as: UTF8.self)
        }
        if has("Package.swift") { return Detected(runner: "swift", command: "swift test") }
        if has("pytest.ini") || text("pyproject.toml")?.contains("[tool.pytest") == true
            || text("setup.cfg")?.contains("[tool:pytest]") == true
            || text("tox.ini")?.contains("[pytest]") == true || has("conftest.py")
        {
            return Detected(runner: "pytest", command: "python3 -m pytest")
        }
        if has("pyproject.toml") || has("setup.py") {
            if hasPythonTests(root) { return Detected(runner: "pytest", command: "python3 -m pytest") }
        }
        if let pkg = text("package.json"),
            let obj = try? JSONSerialization.jsonObject(with: Data(pkg.utf8)) as? [String: Any],
            let scripts = obj["scripts"] as? [String: Any], scripts["test"] is String
        {
            return Detected(runner: "npm", command: "npm test")
        }
        if has("Cargo.toml") { return Detected(runner: "cargo", command: "cargo test") }
        if has("go.mod") { return Detected(runner: "go", command: "go test ./...") }
        for name in ["GNUmakefile", "makefile", "Makefile"] {
            if let mk = text(name),
                mk.split(separator: "\n").contains(where: {
                    $0.hasPrefix("test:") || $0.hasPrefix("test ") && $0.contains(":")
                })
            {
                return Detected(runner: "make", command: "make test")
            }
        }
        return nil
    }

    static func hasPythonTests(_ root: String) -> Bool {
        for dir in ["", "tests/", "test/"] {
            if let items = try? FileManager.default.contentsOfDirectory(atPath: root + "/" + dir),
                items.contains(where: { $0.hasPrefix("test_") && $0.hasSuffix(".py") })
            {
                return true
            }
        }
        return false
    }

    /// Counts read from a runner's output: `{runner, passed, failed, skipped}` (counts the output
    /// does not state are omitted). Every known format is tried, since `make test` may run any of them.
    public static func summarize(runner: String, output: String) -> JSONValue {
        var passed: Int?
        var failed: Int?
        var skipped: Int?
        func add(_ v: inout Int?, _ n: Int) { v = (v ?? 0) + n }
        func captures(_ pattern: String, _ text: String) -> [[String]] {
            guard let rx = try? NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines]) else { return [] }
            let ns = text as NSString
            return rx.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { m in
                (0..<m.numberOfRanges).map { i in
                    m.range(at: i).location == NSNotFound ? "" : ns.substring(with: m.range(at: i))
                }
            }
        }
        let text = output.count > 4 << 20 ? String(output.suffix(4 << 20)) : output

        // pytest: "===== 3 passed, 1 failed, 2 skipped in 0.12s =====" (the last such line).
        if let line = captures(
            #"^=+ (.*\d+ (?:passed|failed|skipped|error|errors|xfailed|deselected).*) in [\d.]+s.*=+$"#, text
        ).last?[1] {
            for c in captures(#"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)"#, line) {
                let n = Int(c[1]) ?? 0
                switch c[2] {
                case "passed", "xpassed": add(&passed, n)
                case "failed", "error", "errors": add(&failed, n)
                default: add(&skipped, n)
                }
            }
            if passed == nil { passed = 0 }
            if failed == nil { failed = 0 }
        }
        // XCTest: "Executed 5 tests, with 1 failure (0 unexpected)" — the last summary covers all suites.
        if passed == nil,
            let c = captures(#"Executed (\d+) tests?, with (\d+) failures?(?: \((\d+) unexpected\))?"#, text).last
        {
            let total = Int(c[1]) ?? 0
            let f = Int(c[2]) ?? 0
            let skippedX =
                captures(#"Executed \d+ tests?, with (\d+) tests? skipped"#, text).last.flatMap { Int($0[1]) } ?? 0
            passed = total - f - skippedX
            failed = f
            skipped = skippedX
        }
        // Swift Testing: "Test run with 12 tests in 3 suites passed after 0.1 seconds." / "… failed … with 2 issues".
        if let c = captures(#"Test run with (\d+) tests?(?: in \d+ suites?)? (passed|failed)"#, text).last {
            let total = Int(c[1]) ?? 0
            let f =
                c[2] == "failed"
                ? Set(captures(#"✘ Test (\S+)\(.*\) (?:recorded an issue|failed)"#, text).map { $0[1] }).count : 0
            add(&passed, total - f)
            add(&failed, f)
        }
        // cargo: "test result: ok. 3 passed; 0 failed; 1 ignored" per crate.
        if passed == nil || runner == "cargo" {
            for c in captures(#"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored"#, text) {
                add(&passed, Int(c[1]) ?? 0)
                add(&failed, Int(c[2]) ?? 0)
                add(&skipped, Int(c[3]) ?? 0)
            }
        }
        // go test -v style lines, else package lines.
        if passed == nil || runner == "go" {
            let p = captures(#"^\s*--- PASS: "#, text).count
            let f = captures(#"^\s*--- FAIL: "#, text).count
            let s = captures(#"^\s*--- SKIP: "#, text).count
            if p + f + s > 0 {
                passed = p
                failed = f
                skipped = s
            } else if runner == "go" {
                passed = captures(#"^ok\s+\S+"#, text).count
                failed = captures(#"^FAIL\s+\S+"#, text).count
            }
        }
        // Jest: "Tests:       1 failed, 2 skipped, 5 passed, 8 total"; mocha: "5 passing", "1 failing", "2 pending".
        if passed == nil, let line = captures(#"^Tests:\s+(.*\d+ total)"#, text).last?[1] {
            for c in captures(#"(\d+) (passed|failed|skipped|todo)"#, line) {
                let n = Int(c[1]) ?? 0
                switch c[2] {
                case "passed": add(&passed, n)
                case "failed": add(&failed, n)
                default: add(&skipped, n)
                }
            }
        }
        if passed == nil, let c = captures(#"^\s*(\d+) passing"#, text).last {
            passed = Int(c[1])
            failed = captures(#"^\s*(\d+) failing"#, text).last.flatMap { Int($0[1]) } ?? 0
            skipped = captures(#"^\s*(\d+) pending"#, text).last.flatMap { Int($0[1]) }
        }
        // TAP ("ok 1 - …" / "not ok 2 - …"), common in Makefile projects.
        if passed == nil {
            let ok = captures(#"^ok \d+"#, text).count
            let notOK = captures(#"^not ok \d+"#, text).count
            let skip = captures(#"^ok \d+.*# (?i:skip)"#, text).count
            if ok + notOK > 0 {
                passed = ok - skip
                failed = notOK
                skipped = skip
            }
        }
        // A generic "N passed, M failed" line.
        if passed == nil, let c = captures(#"(\d+) (?:tests? )?passed(?:[,;] (\d+) (?:tests? )?failed)?"#, text).last {
            passed = Int(c[1])
            failed = Int(c[2]) ?? 0
        }
        var out: [String: JSONValue] = ["runner": .string(runner)]
        if let passed { out["passed"] = .int(passed) }
        if let failed { out["failed"] = .int(failed) }
        if let skipped { out["skipped"] = .int(skipped) }
        if passed != nil && skipped == nil { out["skipped"] = 0 }
        return .object(out)
    }
}
