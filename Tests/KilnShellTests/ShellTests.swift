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
@testable import KilnShell
@testable import KilnTestSupport

@Suite struct ShellTests {
    @Test func streamsOutputInOrderWithExitCodeAndSignal() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let ev = try await f.run("echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; echo out2; exit 7")
            // Two pipes keep their relative order only as far as the reader keeps up, so the check allows
            // a merged stdout event but not reordered text.
            #expect(ev.first?.event == "started" && ev.last?.event == "exit", "\(ev.map(\.event))")
            #expect(ev.compactMap(\.id) == Array(1...ev.count))
            #expect(ev[0].data["job_id"] as? String != nil && ev[0].data["pid"] as? Int != nil)
            #expect(output(ev, "stdout") == "out1\nout2\n" && output(ev, "stderr") == "err1\n")
            #expect(ev[1].event == "stdout" && (ev[1].data["data"] as? String)?.hasPrefix("out1") == true)
            #expect(ev.map(\.event) == ["started", "stdout", "stderr", "stdout", "exit"] || ev.count == 4)
            let exit = ev.last!.data
            #expect(exit["code"] as? Int == 7 && exit["signal"] is NSNull && exit["duration_ms"] as? Int != nil)

            let killed = try await f.run("kill -TERM $$")
            #expect(killed.last?.data["signal"] as? Int == 15 && killed.last?.data["code"] is NSNull)
            #expect(killed.last?.data["signal_name"] as? String == "SIGTERM")

            // cwd and env reach the command; Kiln's own settings do not.
            setenv("KILN_TEST_SECRET", "hidden", 1)
            let env = try await f.run(
                "pwd; echo $GREETING; echo ${KILN_TEST_SECRET:-unset}",
                extra: ["cwd": "sub", "env": ["GREETING": "hello"]])
            #expect(
                output(env, "stdout") == f.dir + "/sub\nhello\nunset\n"
                    || output(env, "stdout").hasSuffix("/proj/sub\nhello\nunset\n"))
        }
    }

    @Test func exactBytesWithBase64AndReplacementOtherwise() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let b64 = try await f.run("printf 'caf\\303\\251 \\377\\376'", query: "?encoding=base64")
            // Each event is its own base64 (the output may come in more than one chunk).
            let bytes = b64.filter { $0.event == "stdout" }.flatMap {
                Data(base64Encoded: $0.data["data"] as? String ?? "").map(Array.init) ?? [0]
            }
            #expect(
                bytes == [0x63, 0x61, 0x66, 0xC3, 0xA9, 0x20, 0xFF, 0xFE], "\(b64.map { "\($0.event) \($0.data)" })")
            // A chunk ending in the middle of a character keeps that part for the next read; bytes that
            // never start one (0xF8...0xFF) are not held back.
            #expect(RunningJob.utf8Boundary([0x61, 0xC3]) == 1 && RunningJob.utf8Boundary([0x61, 0xE2, 0x82]) == 1)
            #expect(RunningJob.utf8Boundary([0x61, 0xFE]) == 2 && RunningJob.utf8Boundary([0x61, 0xC3, 0xA9]) == 3)
            let text = try await f.run("printf 'caf\\303\\251 \\377'")
            #expect(output(text, "stdout") == "café \u{FFFD}")
            #expect(
                try await f.a.call(
                    "POST", "/api/shell/run?encoding=rot13", json: ["project_id": f.pid, "command": "true"]
                ).status == 400)
        }
    }

    @Test func timeoutAndCancelKillTheWholeProcessGroup() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let timed = try await f.run("sleep 30", extra: ["timeout_s": 1])
            #expect(timed.last?.event == "exit" && timed.last?.data["status"] as? String == "timed_out")
            #expect(timed.last?.data["signal"] as? Int == 15)

            // A grandchild in the background, and a main process that ignores SIGTERM.
            let job = try await f.start("sleep 313 & trap '' TERM; while true; do sleep 1; done")
            var grandchild: [Int32] = []
            for _ in 0..<100 where grandchild.isEmpty {
                grandchild = processes(running: ["sleep", "313"])
                if grandchild.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(grandchild.count == 1)
            let cancelled = try await f.a.call("POST", "/api/shell/cancel/\(job)")
            #expect(cancelled.status == 200, "\(cancelled.text)")
            #expect(cancelled.json["status"] as? String == "cancelled")
            #expect(cancelled.json["signal"] as? Int == 9)  // it ignored SIGTERM, so SIGKILL after the grace period
            #expect(grandchild.allSatisfy(processGone) && processes(running: ["sleep", "313"]).isEmpty)
            let again = try await f.a.call("POST", "/api/shell/cancel/\(job)")
            #expect(again.status == 409 && errorCode(again) == "conflict")
            #expect(try await f.a.call("POST", "/api/shell/cancel/job_0000000000000000000000").status == 404)
            let ev = try await f.events(job)
            #expect(ev.last?.event == "exit" && ev.last?.data["status"] as? String == "cancelled")
        }
    }

    @Test func refusesCwdEscapesAndBadInput() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            for (cwd, status) in [
                ("../", 400), ("/etc", 400), ("sub/../..", 400), ("out-link", 403), ("nope", 404), ("a\u{0}b", 400),
            ] {
                let r = try await f.a.call(
                    "POST", "/api/shell/run", json: ["project_id": f.pid, "command": "pwd", "cwd": cwd])
                #expect(r.status == status, "cwd \(cwd): \(r.status) \(r.text)")
            }
            let bad: [[String: Any]] = [
                ["project_id": f.pid], ["project_id": f.pid, "command": ""],
                ["project_id": f.pid, "command": "true", "timeout_s": 0],
                ["project_id": f.pid, "command": "true", "env": ["1BAD": "x"]], ["project_id": f.pid, "command": 5],
            ]
            for body in bad {
                let r = try await f.a.call("POST", "/api/shell/run", json: body)
                #expect(r.status == 400, "\(body): \(r.status) \(r.text)")
                #expect(errorCode(r) == "validation_failed")
            }
            let wrongType = try await f.a.call("POST", "/api/shell/run", headers: ["Content-Type": "text/plain"])
            #expect(wrongType.status == 415 || wrongType.status == 400)
            #expect(
                try await f.a.call(
                    "POST", "/api/shell/run", json: ["project_id": "prj_0000000000000000000000", "command": "true"]
                ).status == 404)
            // A viewer may read jobs but not run commands.
            _ = try await makeUser(f.t, "view@example.com")
            _ = try await f.a.call(
                "POST", "/api/workspaces/\(f.ws)/members", json: ["email": "view@example.com", "role": "viewer"])
            let v = Agent(f.t)
            try await v.login("view@example.com", "a long enough password")
            #expect(
                try await v.call("POST", "/api/shell/run", json: ["project_id": f.pid, "command": "true"]).status == 403
            )
            #expect(try await v.call("GET", "/api/shell/jobs?ws_id=\(f.ws)").status == 200)
        }
    }

    @Test func outputIsCappedAndTheTailKept() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let total = ShellService.eventCapBytes + 1_000_000
            let job = try await f.start("head -c \(total) /dev/zero | tr '\\0' a; printf END")
            let ev = try await f.events(job)
            #expect(output(ev, "stdout").utf8.count == ShellService.eventCapBytes)
            #expect(ev.last?.data["truncated"] as? Bool == true && ev.last?.data["stdout_bytes"] as? Int == total + 3)
            let got = try await f.a.call("GET", "/api/shell/jobs/\(job)")
            let tail = try #require(got.json["stdout"] as? String)
            #expect(tail.utf8.count == ShellService.tailBytes && tail.hasSuffix("aaaEND"))
            #expect(got.json["stdout_truncated"] as? Bool == true && got.json["status"] as? String == "succeeded")
        }
    }

    @Test func resumeByCursorAfterADisconnect() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            // The job holds its output until the file `go` appears, so the client below cannot see its end
            // however slowly a loaded machine runs either of them.
            let job = try await f.start(
                "while [ ! -e go ]; do sleep 0.05; done; for i in $(seq 1 30); do echo line$i; sleep 0.05; done")
            // An outside client reads the live stream for a while and drops the connection; the job runs on.
            if let curl = which("curl") {
                let (_, partial, _) = await runProgram(
                    curl,
                    [
                        "-sN", "--max-time", "8", "-b", "kiln_session=\(f.a.session!)",
                        f.t.base + "/api/shell/jobs/\(job)/events",
                    ])
                #expect(partial.contains("event: started") && !partial.contains("event: exit"))
            }
            #expect(FileManager.default.createFile(atPath: f.dir + "/go", contents: nil))
            let all = try await f.events(job)
            #expect(all.last?.event == "exit" && output(all, "stdout") == (1...30).map { "line\($0)\n" }.joined())
            for cursor in [0, 2, all.count - 1] {
                let tail = try await f.events(job, cursor: cursor)
                #expect(tail.compactMap(\.id) == Array((cursor + 1)...all.count))
            }
            let viaHeader = try await f.events(job, lastEventID: 3)
            #expect(viaHeader.first?.id == 4)
            #expect(try await f.a.call("GET", "/api/shell/jobs/\(job)/events?cursor=-1").status == 400)

            // The job list, one job, and recent commands (deduplicated, newest first).
            _ = try await f.run("echo a")
            _ = try await f.run("echo b")
            _ = try await f.run("echo a")
            let recent = try await f.a.call("GET", "/api/shell/recent?project_id=\(f.pid)")
            let commands = (recent.json["items"] as? [[String: Any]])?.compactMap { $0["command"] as? String }
            #expect(commands?.prefix(2) == ["echo a", "echo b"] && commands?.filter { $0 == "echo a" }.count == 1)
            let list = try await f.a.call("GET", "/api/shell/jobs?project_id=\(f.pid)&limit=2")
            #expect((list.json["items"] as? [[String: Any]])?.count == 2 && list.json["next_cursor"] as? String != nil)
            let next = try await f.a.call(
                "GET", "/api/shell/jobs?project_id=\(f.pid)&limit=200&cursor=\(list.json["next_cursor"] as! String)")
            #expect((next.json["items"] as? [[String: Any]])?.count == 2)
            let ok = try await f.a.call("GET", "/api/shell/jobs?status=succeeded&ws_id=\(f.ws)")
            #expect(
                (ok.json["items"] as? [[String: Any]])?.allSatisfy { $0["status"] as? String == "succeeded" } == true)
            #expect(try await f.a.call("GET", "/api/shell/jobs?status=weird&ws_id=\(f.ws)").status == 400)
        }
    }
}

@Suite struct TestRunnerTests {
    func dir(_ files: [String: String]) throws -> String {
        let d = NSTemporaryDirectory() + "kiln-tr-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        for (k, v) in files { try v.write(toFile: d + "/" + k, atomically: true, encoding: .utf8) }
        return d
    }

    @Test func detectsEachToolchain() throws {
        #expect(TestRunners.detect(root: try dir(["Package.swift": "// swift-tools-version:5.9"]))?.runner == "swift")
        #expect(
            TestRunners.detect(root: try dir(["pyproject.toml": "[tool.pytest.ini_options]\n"]))?.runner == "pytest")
        #expect(TestRunners.detect(root: try dir(["pytest.ini": "[pytest]\n"]))?.command == "python3 -m pytest")
        #expect(
            TestRunners.detect(root: try dir(["package.json": #"{"scripts":{"test":"jest"}}"#]))?.command == "npm test")
        #expect(TestRunners.detect(root: try dir(["package.json": #"{"scripts":{"build":"tsc"}}"#])) == nil)
        #expect(TestRunners.detect(root: try dir(["Cargo.toml": "[package]\n"]))?.command == "cargo test")
        #expect(TestRunners.detect(root: try dir(["go.mod": "module x\n"]))?.command == "go test ./...")
        #expect(
            TestRunners.detect(root: try dir(["Makefile": "all:\n\techo\ntest: all\n\techo ok\n"]))?.command
                == "make test")
        #expect(TestRunners.detect(root: try dir(["Makefile": "all:\n\techo\n"])) == nil)
    }

    @Test func summarizesEachRunnersOutput() {
        func counts(_ runner: String, _ out: String) -> [Int?] {
            guard case .object(let o) = TestRunners.summarize(runner: runner, output: out) else { return [] }
            return ["passed", "failed", "skipped"].map { if case .int(let n)? = o[$0] { n } else { nil } }
        }
        #expect(counts("pytest", "....\n===== 3 passed, 1 failed, 2 skipped in 0.12s =====\n") == [3, 1, 2])
        #expect(counts("pytest", "== 5 passed in 0.01s ==") == [5, 0, 0])
        #expect(
            counts(
                "swift",
                "Test Suite 'All tests' failed.\n\t Executed 5 tests, with 2 failures (0 unexpected) in 0.01 (0.01) seconds\n"
            ) == [3, 2, 0])
        #expect(counts("swift", "✔ Test run with 4 tests in 2 suites passed after 0.002 seconds.\n") == [4, 0, 0])
        #expect(
            counts(
                "cargo",
                "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured\ntest result: FAILED. 1 passed; 2 failed; 0 ignored;"
            ) == [4, 2, 1])
        #expect(counts("go", "--- PASS: TestA (0.00s)\n--- FAIL: TestB (0.00s)\n--- SKIP: TestC\n") == [1, 1, 1])
        #expect(counts("npm", "Tests:       1 failed, 2 skipped, 5 passed, 8 total\n") == [5, 1, 2])
        #expect(counts("make", "ok 1 - a\nnot ok 2 - b\nok 3 - c # SKIP no db\n") == [1, 1, 1])
    }
}

@Suite(.serialized) struct TestRunTests {
    func runTests(_ f: ShellFixture) async throws -> [String: Any] {
        let r = try await f.a.call("POST", "/api/shell/test", json: ["project_id": f.pid])
        #expect(r.status == 200, "\(r.text)")
        let ev = parseSSE(r.text)
        #expect(ev.first?.event == "started" && ev.last?.event == "exit", "\(r.text.suffix(2000))")
        return ev.last?.data["summary"] as? [String: Any] ?? [:]
    }

    @Test func makefileProject() async throws {
        let f = try await ShellFixture.make([
            "Makefile":
                "test:\n\t@echo 'ok 1 - parses'\n\t@echo 'ok 2 - formats'\n\t@echo 'not ok 3 - rounds'\n\t@exit 1\n"
        ])
        try await using(f) { f in
            let s = try await runTests(f)
            #expect(s["runner"] as? String == "make" && s["passed"] as? Int == 2 && s["failed"] as? Int == 1, "\(s)")
            // A saved command wins over detection; no command at all is a clear 422.
            let saved = try await f.a.call(
                "PUT", "/api/shell/settings",
                json: ["project_id": f.pid, "test_command": "echo '== 4 passed in 0.1s =='"])
            #expect(saved.status == 200)
            let s2 = try await runTests(f)
            #expect(s2["passed"] as? Int == 4 && s2["runner"] as? String == "custom", "\(s2)")
            #expect(
                try await f.a.call("PUT", "/api/shell/settings", json: ["project_id": f.pid, "test_command": "  "])
                    .status == 400)
            let settings = try await f.a.call("GET", "/api/shell/settings?project_id=\(f.pid)")
            #expect(settings.json["detected_runner"] as? String == "make")
            try FileManager.default.removeItem(atPath: f.dir + "/Makefile")
            _ = try await f.a.call("PUT", "/api/shell/settings", json: ["project_id": f.pid, "test_command": NSNull()])
            let none = try await f.a.call("POST", "/api/shell/test", json: ["project_id": f.pid])
            #expect(none.status == 422 && errorCode(none) == "validation_failed")
        }
    }

    @Test(.enabled(if: ProcessRunner.which("python3") != nil)) func pytestProject() async throws {
        let probe = try await ProcessRunner.run("python3", ["-c", "import pytest"])
        guard probe.status == 0 else {
            Issue.record("pytest is not installed for python3 on PATH (scripts/test.sh installs it into .build/venv)")
            return
        }
        let f = try await ShellFixture.make([
            "pytest.ini": "[pytest]\n",
            "test_math.py":
                "import pytest\n\ndef test_add():\n    assert 1 + 1 == 2\n\ndef test_sub():\n    assert 2 - 1 == 1\n\ndef test_bad():\n    assert 1 == 2\n\n@pytest.mark.skip(reason='later')\ndef test_later():\n    pass\n",
        ])
        try await using(f) { f in
            let s = try await runTests(f)
            #expect(
                s["runner"] as? String == "pytest" && s["passed"] as? Int == 2 && s["failed"] as? Int == 1
                    && s["skipped"] as? Int == 1, "\(s)")
        }
    }

    @Test func swiftPackage() async throws {
        let f = try await ShellFixture.make([
            "Package.swift":
                "// swift-tools-version:5.9\nimport PackageDescription\nlet package = Package(name: \"Tiny\", targets: [.target(name: \"Tiny\"), .testTarget(name: \"TinyTests\", dependencies: [\"Tiny\"])])\n",
            "Sources/Tiny/Tiny.swift": "public func twice(_ x: Int) -> Int { x * 2 }\n",
            "Tests/TinyTests/TinyTests.swift":
                "import XCTest\n@testable import Tiny\nfinal class TinyTests: XCTestCase {\n    func testTwice() { XCTAssertEqual(twice(2), 4) }\n    func testAlsoTwice() { XCTAssertEqual(twice(3), 6) }\n    func testWrong() { XCTAssertEqual(twice(3), 7) }\n}\n",
        ])
        try await using(f) { f in
            let s = try await runTests(f)
            #expect(s["runner"] as? String == "swift" && s["passed"] as? Int == 2 && s["failed"] as? Int == 1, "\(s)")
        }
    }
}
