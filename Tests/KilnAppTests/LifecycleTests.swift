import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnShell
@testable import KilnTestSupport

/// A module whose route names a permission it never registered (a typo, say).
struct MisdeclaredModule: KilnModule {
    let name = "misdeclared"
    func register(_ routes: Routes) {
        routes.tagged("misdeclared").add(
            .GET, "/api/misdeclared", Permission("projects:read", "a typo of project:read"), "Oops"
        ) { _, _ in
            .noContent()
        }
    }
}

@Suite struct LifecycleTests {
    @Test func aRouteWithAnUnregisteredPermissionRefusesTheStart() throws {
        var config = Config()
        config.dataDir = NSTemporaryDirectory() + "kiln-misdeclared-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: config.dataDir) }
        do {
            _ = try Application(config: config, extraModules: [MisdeclaredModule()])
            Issue.record("the application started with a route whose permission nobody registered")
        } catch let e as Config.ConfigError {
            #expect(e.description.contains("projects:read") && e.description.contains("/api/misdeclared"))
        }
        // The same application without it starts.
        _ = try Application(config: config, ephemeral: true)
    }

    /// A running job, an open terminal and an SSE follower of the job: shutdown ends all three and
    /// returns only once they have ended.
    @Test func shutdownEndsJobsTerminalsAndFollowersAndWaits() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let job = try await f.start("sleep 600")
            let pty = try await f.a.call("POST", "/api/pty/spawn", json: ["project_id": f.pid])
            #expect(pty.status == 201, "\(pty.text)")
            let shellPID = try #require(pty.json["pid"] as? Int)
            let jobPID = try #require(f.t.app.module(ShellModule.self)?.service.live.withLock { $0[job]?.pid })

            // A follower on a raw socket, attached once it has the job's first event.
            let follower = try RawClient(port: f.t.port)
            follower.send(
                "GET /api/shell/jobs/\(job)/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: kiln_session=\(f.a.session ?? "")\r\n\r\n"
            )
            let head = await follower.read(until: "event: started")
            #expect(head.contains("200 OK") && head.contains("event: started"), "\(head)")

            await f.t.app.shutdown()

            // Everything has ended by the time shutdown returned.
            #expect(processGone(jobPID) && processGone(Int32(shellPID)))
            let rest = String(decoding: await follower.readAll(), as: UTF8.self)
            #expect(rest.contains("event: exit") && rest.contains("\"status\":\"cancelled\""), "\(rest)")
            let status = try await f.t.app.services.db.read { tx in
                try tx.first("SELECT status FROM shell_jobs WHERE id = ?", job)?.string("status")
            }
            #expect(status == "cancelled")
            await f.t.app.shutdown()  // a second call is harmless
        }
    }

    /// No static registries: what one application runs, another in the same process does not see.
    @Test func twoApplicationsShareNothing() async throws {
        try await using(try await ShellFixture.make()) { a in
            try await withTestApp(.inProcess) { b in
                let job = try await a.start("sleep 600")
                let shellA = try #require(a.t.app.module(ShellModule.self)?.service)
                let shellB = try #require(b.app.module(ShellModule.self)?.service)
                #expect(shellA.isRunning(job) && !shellB.isRunning(job))
                #expect(shellB.cancel(job, grace: 0) == false)
                #expect(shellA.cancel(job, grace: 0))
                _ = await shellA.wait(job)
            }
        }
    }

    @Test func modulesBringTheirOptionsAndCommands() throws {
        let flags = Set(Application.configOptions.map(\.flag))
        for flag in [
            "--projects-root", "--search-timeout", "--shell-grace", "--ssh-config", "--pty-idle-minutes",
            "--llm-base-url", "--pricing",
        ] {
            #expect(flags.contains(flag), "\(flag)")
        }
        #expect(Set(Application.commands.map(\.name)) == ["admin", "receipts", "policy"])
    }
}
