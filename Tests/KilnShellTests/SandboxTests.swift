import Foundation
import KilnCore
import Testing

@testable import KilnTestSupport

/// What a job run through the sandbox can see and touch (bubblewrap; the test command installs it).
@Suite struct SandboxTests {
    /// In CI the sandbox must work; elsewhere a machine without bubblewrap skips with a note.
    static func usable(_ f: ShellFixture) -> Bool {
        if f.t.app.services.sandbox.isolates { return true }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("the sandbox is not usable here: \(f.t.app.services.sandbox.summary)")
        }
        return false
    }

    @Test func aJobSeesItsProjectAndNothingOfTheServer() async throws {
        setenv("KILN_SANDBOX_TEST_SECRET", "hidden-value", 1)
        let f = try await ShellFixture.make(["own.txt": "mine\n"])
        try await using(f) { f in
            guard Self.usable(f) else { return }
            let roots = (f.dir as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: roots + "/other", withIntermediateDirectories: true)
            try "other project's secret\n".write(toFile: roots + "/other/secret.txt", atomically: true, encoding: .utf8)
            let data = f.t.dataDir
            let script = """
                cat \(data)/master.key >/dev/null 2>&1 && echo READ-KEY
                cat \(data)/kiln.db >/dev/null 2>&1 && echo READ-DB
                ls \(data) >/dev/null 2>&1 && echo LISTED-DATA
                grep -a KILN_SANDBOX_TEST_SECRET /proc/\(getpid())/environ >/dev/null 2>&1 && echo READ-ENV
                cat \(roots)/other/secret.txt >/dev/null 2>&1 && echo READ-OTHER
                echo x > \(roots)/escape.txt 2>/dev/null
                echo x > \(data)/escape.txt 2>/dev/null
                echo x > /usr/escape.txt 2>/dev/null && echo WROTE-SYSTEM
                cat /etc/shadow 2>/dev/null | grep -q root && echo READ-SHADOW
                ls /root >/dev/null 2>&1 && echo LISTED-ROOT
                cat own.txt
                echo written > new.txt && echo WROTE-INSIDE
                echo tmp > /tmp/t && cat /tmp/t
                echo home=$HOME user=$USER
                env | grep -c KILN_ ; env | grep -c SSH_AUTH_SOCK
                ls /proc | grep -cE '^[0-9]+$'
                """
            let ev = try await f.run(script)
            let out = output(ev, "stdout")
            for leak in [
                "READ-KEY", "READ-DB", "LISTED-DATA", "READ-ENV", "READ-OTHER", "WROTE-SYSTEM",
                "READ-SHADOW", "LISTED-ROOT",
            ] {
                #expect(!out.contains(leak), "\(leak)\n\(out)")
            }
            let lines = out.split(separator: "\n").map(String.init)
            #expect(lines.contains("mine") && lines.contains("WROTE-INSIDE") && lines.contains("tmp"), "\(out)")
            #expect(try String(contentsOfFile: f.dir + "/new.txt", encoding: .utf8) == "written\n")
            // (A path under /tmp lands in the workspace's private /tmp: the real one is untouched.)
            #expect(!FileManager.default.fileExists(atPath: roots + "/escape.txt"))
            #expect(!FileManager.default.fileExists(atPath: data + "/escape.txt"))
            #expect(lines.contains { $0.hasPrefix("home=/home/") }, "\(out)")
            // No KILN_* variable and no agent socket; only the sandbox's own few processes.
            let counts = lines.suffix(3).compactMap { Int($0) }
            #expect(counts.count == 3 && counts[0] == 0 && counts[1] == 0 && counts[2] <= 6, "\(out)")
            #expect(ev.last?.data["code"] as? Int == 0)
        }
    }

    /// HOME and /tmp belong to the workspace and last between jobs; a job of another workspace
    /// does not see them.
    @Test func homeAndTmpPersistPerWorkspace() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            guard Self.usable(f) else { return }
            _ = try await f.run("echo cached > $HOME/.cache-test; echo kept > /tmp/kept")
            let again = output(try await f.run("cat $HOME/.cache-test /tmp/kept"), "stdout")
            #expect(again == "cached\nkept\n")
            let state = f.t.dataDir + "/sandbox/" + f.ws
            #expect(FileManager.default.fileExists(atPath: state + "/home/.cache-test"))
            var st = stat()
            #expect(stat(state, &st) == 0 && st.st_mode & 0o777 == 0o700)
        }
    }
}
