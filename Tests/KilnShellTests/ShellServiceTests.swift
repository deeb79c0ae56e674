import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnShell
@testable import KilnTestSupport

/// The job runner on its own, as other domains use it through `JobLauncher` (no HTTP).
@Suite struct ShellServiceTests {
    @Test func startWaitCancelAndTheStoredJob() async throws {
        try await withTestApp(.inProcess) { t in
            let shell: any JobLauncher = try #require(t.app.module(ShellModule.self)).service
            let service = try #require(t.app.module(ShellModule.self)).service
            let dir = t.dataDir
            let user = try await makeUser(t, "jobs@example.com")
            let ok = try await shell.start(
                JobSpec(
                    wsID: "ws_servicetest", projectID: nil, userID: user.id, kind: "run",
                    command: "printf 'a\\nb\\n'; echo oops >&2; exit 3", cwd: dir, displayCwd: ".", timeout: 60))
            let outcome = try #require(await shell.wait(ok))
            #expect(outcome.status == "failed" && outcome.exitCode == 3)
            #expect(
                String(decoding: outcome.stdout, as: UTF8.self) == "a\nb\n"
                    && String(decoding: outcome.stderr, as: UTF8.self) == "oops\n")
            let (job, out, _) = try #require(try await service.get(ok))
            #expect(job.status == "failed" && job.exitCode == 3 && out == Array("a\nb\n".utf8))
            #expect(await shell.wait(ok) == nil)  // no longer running here

            let long = try await shell.start(
                JobSpec(
                    wsID: "ws_servicetest", projectID: nil, userID: user.id, kind: "run", command: "sleep 600",
                    cwd: dir, displayCwd: ".", timeout: 60))
            #expect(shell.cancel(long, grace: 0))
            #expect(try #require(await shell.wait(long)).status == "cancelled")
            #expect(shell.cancel(long, grace: 0) == false)
            #expect(shell.detectTests(root: dir) == nil)
        }
    }
}
