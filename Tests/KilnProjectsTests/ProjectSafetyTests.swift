import Foundation
import KilnCore
import Testing

@testable import KilnTestSupport

/// Which folders a workspace may open, and git run as Kiln's own hardened tool.
@Suite(.enabled(if: ProcessRunner.which("git") != nil)) struct ProjectSafetyTests {
    struct Two: Stoppable {
        let t: TestApp
        let a: Agent
        let b: Agent
        let wsA: String
        let wsB: String
        let roots: String
        func stop() async { await t.stop() }
    }

    /// Two accounts, each with its own workspace, over one projects root.
    static func two() async throws -> Two {
        let roots = NSTemporaryDirectory() + "kiln-safe-\(UUID().uuidString)"
        for dir in ["shared/inner", "solo", "mine/sub"] {
            try FileManager.default.createDirectory(atPath: roots + "/" + dir, withIntermediateDirectories: true)
        }
        let t = try TestApp { $0.moduleValues["--projects-root"] = [roots] }
        _ = try await makeUser(t, "a@example.com")
        _ = try await makeUser(t, "b@example.com")
        let a = Agent(t)
        try await a.login("a@example.com", "a long enough password")
        let b = Agent(t)
        try await b.login("b@example.com", "a long enough password")
        return Two(
            t: t, a: a, b: b, wsA: try await workspaceOf(a), wsB: try await workspaceOf(b),
            roots: SafePath.real(roots)!)
    }

    @Test func aFolderBelongsToOneWorkspace() async throws {
        try await using(try await Self.two()) { f in
            func load(_ agent: Agent, _ ws: String, _ path: String) async throws -> HTTPResult {
                try await agent.call("POST", "/api/project/load", json: ["ws_id": ws, "path": path])
            }
            #expect(try await load(f.a, f.wsA, f.roots + "/shared").status == 201)
            // The same folder, one inside it and one around it: another workspace gets 409.
            for path in [f.roots + "/shared", f.roots + "/shared/inner"] {
                let r = try await load(f.b, f.wsB, path)
                #expect(r.status == 409 && errorCode(r) == "folder_in_use", "\(path): \(r.text)")
            }
            #expect(try await load(f.a, f.wsA, f.roots + "/mine/sub").status == 201)
            let around = try await load(f.b, f.wsB, f.roots + "/mine")
            #expect(around.status == 409 && errorCode(around) == "folder_in_use")
            // Its own workspace may nest, and another workspace may open an unrelated folder.
            #expect(try await load(f.a, f.wsA, f.roots + "/shared/inner").status == 201)
            #expect(try await load(f.b, f.wsB, f.roots + "/solo").status == 201)
            // The projects root itself holds everyone's projects.
            let root = try await load(f.a, f.wsA, f.roots)
            #expect(root.status == 400 && errorCode(root) == "validation_failed", "\(root.text)")
        }
    }

    @Test func gitURLsAreCheckedBeforeAnythingRuns() async throws {
        try await using(try await Self.two()) { f in
            let outside = NSTemporaryDirectory() + "kiln-outside-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
            _ = try await ProcessRunner.run("git", ["init", "-q", outside])
            for (url, says) in [
                ("https://user:s3cret-token@example.com/x.git", "credentials"),
                ("https://s3cret-token@example.com/x.git", "credentials"),
                ("ssh://git:s3cret-token@example.com/x.git", "credentials"),
                ("file://\(outside)", "project roots"),
                ("file:///etc", "project roots"),
                ("https://127.0.0.1/x.git", "private"),
                ("https://0x7f.1/x.git", "private"),
                ("https://[::ffff:127.0.0.1]/x.git", "private"),
                ("https://localhost/x.git", "private"),
                ("https://169.254.169.254/latest", "private"),
                ("ssh://10.0.0.1/x.git", "private"),
                ("https://example.com/x.git?token=abc", "query"),
                ("http://example.com/x.git", "https://"),
            ] {
                let r = try await f.a.call("POST", "/api/project/load", json: ["ws_id": f.wsA, "git_url": url])
                #expect(r.status == 400 && errorCode(r) == "validation_failed", "\(url): \(r.text)")
                #expect(r.text.contains(says), "\(url): \(r.text)")
                #expect(!r.text.contains("s3cret-token"), "\(url): \(r.text)")
            }
            // Nothing of a refused URL was stored or audited.
            let audit = try await f.a.call("GET", "/api/audit?ws_id=\(f.wsA)")
            #expect(!audit.text.contains("s3cret-token") && !audit.text.contains("git_url"), "\(audit.text)")
        }
    }

    /// git's own text is not echoed: the error names the class of failure.
    @Test func cloneFailuresAreClassified() async throws {
        try await using(try await Self.two()) { f in
            let r = try await f.a.call(
                "POST", "/api/project/load",
                json: ["ws_id": f.wsA, "git_url": "file://\(f.roots)/solo", "name": "solo-copy"])
            #expect(r.status == 400, "\(r.text)")
            #expect(r.text.contains("the repository was not found") && !r.text.contains("fatal"), "\(r.text)")
            #expect(!FileManager.default.fileExists(atPath: f.roots + "/solo-copy"))
        }
    }

    /// A repository's own config can name programs git runs (core.fsmonitor, hooks): Kiln's git
    /// turns them off, and runs in the project's sandbox anyway.
    @Test func aRepositorysConfigRunsNothingOnTheServer() async throws {
        try await using(try await Self.two()) { f in
            let repo = f.roots + "/solo"
            _ = try await ProcessRunner.run("git", ["init", "-q", "-b", "main", repo])
            try "x\n".write(toFile: repo + "/a.txt", atomically: true, encoding: .utf8)
            // Inside the project (which the sandbox shows), so only the setting itself keeps it from running.
            let marker = repo + "/fsmonitor-ran"
            let config = "\n[core]\n\tfsmonitor = \"touch \(marker)\"\n\thooksPath = hooks\n"
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: repo + "/.git/config"))
            handle.seekToEndOfFile()
            handle.write(Data(config.utf8))
            try handle.close()
            let loaded = try await f.a.call("POST", "/api/project/load", json: ["ws_id": f.wsA, "path": repo])
            #expect(loaded.status == 201, "\(loaded.text)")
            let pid = try #require(loaded.json["id"] as? String)
            let tree = try await f.a.call("GET", "/api/project/tree?project_id=\(pid)")
            #expect(tree.status == 200 && tree.text.contains("a.txt"))
            _ = try await f.a.call(
                "POST", "/api/project/rescan", json: ["project_id": pid], headers: ["Accept": "application/json"])
            try await Task.sleep(for: .milliseconds(300))
            #expect(!FileManager.default.fileExists(atPath: marker))
        }
    }
}
