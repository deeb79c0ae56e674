import Foundation
import KilnHTTP
import Testing

@testable import KilnCore

@Suite struct CoreTests {
    @Test func idsHaveTheirPrefixAndAreUnique() {
        let ids = (0..<1000).map { _ in IDs.make("usr") }
        #expect(Set(ids).count == 1000)
        for id in ids.prefix(20) {
            #expect(id.hasPrefix("usr_") && id.count == 26)
            #expect(IDs.isValid(id, prefix: "usr"))
            #expect(!IDs.isValid(id, prefix: "ws"))
        }
        #expect(!IDs.isValid("usr_", prefix: "usr"))
        #expect(!IDs.isValid("usr_abc/def", prefix: "usr"))
        #expect(!IDs.isValid("usr_" + String(repeating: "a", count: 65), prefix: "usr"))
    }

    @Test func pageRequestValidatesLimitAndCursor() throws {
        #expect(try PageRequest(query: QueryParameters()).limit == 50)
        #expect(try PageRequest(query: QueryParameters([("limit", "200")])).limit == 200)
        for bad in ["0", "201", "-1", "ten", ""] {
            #expect(throws: HTTPError.self, "\(bad)") { try PageRequest(query: QueryParameters([("limit", bad)])) }
        }
        let cursor = PageRequest.encodeCursor("2026-01-01|usr_1")
        #expect(try PageRequest(query: QueryParameters([("cursor", cursor)])).cursor == "2026-01-01|usr_1")
        #expect(throws: HTTPError.self) { try PageRequest(query: QueryParameters([("cursor", "***")])) }
    }

    @Test func pageKeepsLimitAndMakesACursorFromTheLastItem() throws {
        let page = Page(fetched: [1, 2, 3, 4], limit: 3, cursorOf: { String($0) })
        #expect(page.items == [1, 2, 3])
        #expect(page.nextCursor == PageRequest.encodeCursor("3"))
        let last = Page(fetched: [1, 2], limit: 3, cursorOf: { String($0) })
        #expect(last.nextCursor == nil)
        let json = try JSONDecoder().decode(JSONValue.self, from: Data(try JSONCoding.encode(last)))
        #expect(json == ["items": [1, 2], "next_cursor": .null])
    }

    @Test func manualClockMovesOnlyWhenTold() {
        let c = ManualClock(Date(timeIntervalSince1970: 100))
        #expect(c.now().timeIntervalSince1970 == 100)
        c.advance(by: 30)
        #expect(c.now().timeIntervalSince1970 == 130)
    }

    @Test func principalPermissionChecks() throws {
        let p = Principal(userID: "usr_1", kind: .apiKey(id: "key_1"), scopes: ["project:read"])
        #expect(p.scopeAllows("project:read"))
        #expect(!p.scopeAllows("shell:run"))
        #expect(p.scopeAllows(Permission.publicAccess.name))
        // Step-up: a session with MFA on needs a recent second factor.
        let now = Date()
        let fresh = Principal(
            userID: "usr_1", kind: .session(id: "ses_1"), mfaEnabled: true, mfaVerifiedAt: now.addingTimeInterval(-60))
        #expect(throws: Never.self) { try fresh.requireStepUp(now: now) }
        let stale = Principal(
            userID: "usr_1", kind: .session(id: "ses_1"), mfaEnabled: true, mfaVerifiedAt: now.addingTimeInterval(-1000)
        )
        do {
            try stale.requireStepUp(now: now)
            Issue.record("stale step-up accepted")
        } catch let e as HTTPError {
            #expect(
                e.status.code == 401 && e.code == "step_up_required"
                    && e.headers["WWW-Authenticate"] == "step-up max_age=900")
        }
        // Without MFA the password proves it (at sign-in or POST /api/auth/step-up), within 15 minutes too.
        let noMFA = Principal(userID: "usr_1", kind: .session(id: "ses_1"), mfaVerifiedAt: now.addingTimeInterval(-60))
        #expect(throws: Never.self) { try noMFA.requireStepUp(now: now) }
        let neverConfirmed = Principal(userID: "usr_1", kind: .session(id: "ses_1"))
        #expect(throws: HTTPError.self) { try neverConfirmed.requireStepUp(now: now) }
        // An API key can never step up: 403, not 401 (there is nothing it could send).
        do {
            try p.requireStepUp(now: now)
            Issue.record("an API key passed step-up")
        } catch let e as HTTPError {
            #expect(e.status.code == 403 && e.code == "step_up_required")
        }
        var ctx = RequestContext(requestID: "req_1")
        #expect(throws: HTTPError.self) { try ctx.requirePrincipal() }
        ctx[PrincipalKey.self] = p
        #expect(try ctx.requirePrincipal() == p)
    }

    @Test func programMissingNamesTheProgram() {
        let e = APIError.programMissing("git", install: "apt-get install -y git")
        #expect(e.status.code == 503 && e.code == "unavailable" && e.message.contains("git"))
    }
}

@Suite struct ProcessRunnerTests {
    @Test func runsWithStdinStdoutStderrAndStatus() async throws {
        let cat = try await ProcessRunner.run("cat", [], stdin: Array("hello kiln".utf8))
        #expect(cat.status == 0 && cat.stdoutText == "hello kiln")
        let sh = try await ProcessRunner.run("sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(sh.status == 3 && sh.stdoutText == "out\n" && sh.stderr == "err\n")
        let big = try await ProcessRunner.run("sh", ["-c", "head -c 3000000 /dev/zero"])
        #expect(big.stdout.count == 3_000_000)
    }

    @Test func timeoutKillsTheProcessGroup() async throws {
        let pidFile = NSTemporaryDirectory() + "kiln-group-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let r = try await ProcessRunner.run("sh", ["-c", "sleep 30 & echo $! > \(pidFile); sleep 30"], timeout: 0.5)
        #expect(r.status == 124)
        // The command's own child went with it: the whole group was killed, not only the shell.
        let written = try String(contentsOfFile: pidFile, encoding: .utf8)
        let child = try #require(Int32(written.trimmingCharacters(in: .whitespacesAndNewlines)))
        var gone = false
        for _ in 0..<100 where !gone {
            // Killed and not yet reaped (a zombie: state Z in /proc) counts as gone.
            let stat = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8)) ?? ""
            gone = kill(child, 0) != 0 || stat.split(separator: ")").last?.dropFirst().first == "Z"
            if !gone { try await Task.sleep(nanoseconds: 20_000_000) }
        }
        #expect(gone, "the background sleep \(child) outlived the timeout")
    }

    @Test func missingProgramsAndWorkingDirectory() async throws {
        await #expect(throws: ProcessRunner.SpawnError.self) {
            _ = try await ProcessRunner.run("no-such-program-kiln", [])
        }
        let pwd = try await ProcessRunner.run("pwd", [], cwd: "/tmp")
        #expect(pwd.stdoutText == "/tmp\n")
        let env = try await ProcessRunner.run(
            "sh", ["-c", "echo $KILN_T"], environment: ["KILN_T": "x1", "PATH": "/usr/bin:/bin"])
        #expect(env.stdoutText == "x1\n")
    }
}

@Suite struct TailBufferTests {
    @Test func keepsTheLastBytesAcrossWraps() {
        var t = TailBuffer(capacity: 10)
        var all: [UInt8] = []
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let chunk = (0..<Int.random(in: 0...13, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            t.append(chunk[...])
            all += chunk
            #expect(t.bytes == Array(all.suffix(10)))
        }
    }
}

@Suite struct HelpTextTests {
    /// A flag wider than the column keeps a space before its help (it moves to the next line).
    @Test func longFlagsAreNotGluedToTheirHelp() {
        let text = Config.helpText([
            .text("--port", env: "KILN_PORT", help: "port"),
            .text("--max-agent-runs-per-workspace", env: "KILN_X", help: "runs at once"),
        ])
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0] == "  --port VALUE" + String(repeating: " ", count: 14) + "port  [KILN_PORT]")
        #expect(lines[1] == "  --max-agent-runs-per-workspace VALUE")
        #expect(lines[2] == String(repeating: " ", count: 28) + "runs at once  [KILN_X]")
    }
}

@Suite struct RedactionTests {
    let r = Redactor([SecretValue(name: "TOKEN", value: "s3cr3t/v+lue"), SecretValue(name: "OTHER", value: "abc def")])

    @Test func everyFormIsReplaced() {
        let b64 = Data("s3cr3t/v+lue".utf8).base64EncodedString()
        let text = "x s3cr3t/v+lue y \(b64) z s3cr3t%2Fv%2Blue w s3cr3t%2fv%2blue q abc+def"
        let out = r.redact(text)
        #expect(!out.contains("s3cr3t") && !out.contains(b64.trimmingCharacters(in: ["="])))
        #expect(out.hasPrefix("x [secret:TOKEN] y [secret:TOKEN]"), "\(out)")
        #expect(out.hasSuffix("q [secret:OTHER]"), "\(out)")
        #expect(r.redact("nothing here") == "nothing here")
    }

    /// Split at every byte, the stream gives the same result as the whole.
    @Test func aSecretSplitAcrossPiecesIsStillReplaced() {
        let text = Array("before s3cr3t/v+lue middle s3cr3t/v+lu end s3cr3".utf8)
        let whole = r.redact(text)
        for cut in 1..<text.count {
            var s = StreamRedactor(r)
            let got = s.feed(Array(text[..<cut])) + s.feed(Array(text[cut...])) + s.finish()
            #expect(got == whole, "cut at \(cut)")
        }
        var s = StreamRedactor(r)
        var got: [UInt8] = []
        for b in text { got += s.feed([b]) }
        got += s.finish()
        #expect(got == whole)
        #expect(String(decoding: whole, as: UTF8.self) == "before [secret:TOKEN] middle s3cr3t/v+lu end s3cr3")
    }

    @Test func anEmptyRedactorPassesEverything() {
        var s = StreamRedactor(Redactor([]))
        #expect(s.feed(Array("abc".utf8)) == Array("abc".utf8))
    }
}
