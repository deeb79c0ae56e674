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

@Suite(.enabled(if: ProcessRunner.which("git") != nil)) struct ProjectTests {
    @Test func loadTreeFileAndRecent() async throws {
        let roots = NSTemporaryDirectory() + "kiln-roots-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: roots, withIntermediateDirectories: true)
        let repo = try await makeRepo(roots)
        let t = try TestApp { $0.moduleValues["--projects-root"] = [roots] }
        try await using(t) { t in
            _ = try await makeUser(t, "p@example.com")
            let a = Agent(t)
            try await a.login("p@example.com", "a long enough password")
            let ws = try await workspaceOf(a)

            // Load: created, then the same project again.
            let loaded = try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": repo])
            #expect(loaded.status == 201, "\(loaded.text)")
            let pid = try #require(loaded.json["id"] as? String)
            #expect(loaded.json["vcs"] as? String == "git" && loaded.json["branch"] as? String == "main")
            #expect((loaded.json["head_commit"] as? String)?.count == 40)
            let again = try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": repo])
            #expect(again.status == 200 && again.json["id"] as? String == pid)
            #expect(
                try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": "app"]).json["id"] as? String
                    == pid)

            // Refused load paths.
            for (path, status) in [
                ("/etc", 403), ("\(roots)/../", 400), ("\(roots)/app/../../etc", 400), ("\(roots)/nope", 404),
                ("\(repo)/README.md", 400), ("\(repo)/outside-link", 403), ("a\u{0}b", 400), ("../x", 400),
            ] {
                let r = try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": path])
                #expect(r.status == status, "load \(path): \(r.status) \(r.text)")
            }
            for url in ["http://example.com/x.git", "git://example.com/x", "ext::sh -c x", "-uhello"] {
                #expect(
                    try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "git_url": url]).status == 400,
                    "\(url)")
            }

            // Clone over file://.
            let cloned = try await a.call(
                "POST", "/api/project/load", json: ["ws_id": ws, "git_url": "file://\(repo)", "name": "copy"])
            #expect(cloned.status == 201, "\(cloned.text)")
            #expect(
                cloned.json["vcs"] as? String == "git" && (cloned.json["path"] as? String)?.hasSuffix("/copy") == true)
            #expect(
                try await a.call(
                    "POST", "/api/project/load", json: ["ws_id": ws, "git_url": "file://\(repo)", "name": "copy"]
                ).status == 409)

            // Tree: git's ignores and status.
            let tree = try await a.call("GET", "/api/project/tree?project_id=\(pid)")
            let items = try #require(tree.json["items"] as? [[String: Any]])
            let names = Set(items.compactMap { $0["name"] as? String })
            #expect(
                names.isSuperset(of: [
                    "src", "README.md", "logs", "notes.txt", "image.bin", "inside-link", ".gitignore",
                ]))
            #expect(!names.contains("build") && !names.contains(".git"))
            #expect(items.first { $0["name"] as? String == "README.md" }?["git_status"] as? String == "M")
            #expect(items.first { $0["name"] as? String == "notes.txt" }?["git_status"] as? String == "??")
            #expect(items.first { $0["name"] as? String == "inside-link" }?["type"] as? String == "symlink")
            #expect(items.first?["type"] as? String == "dir")
            let logs = try await a.call("GET", "/api/project/tree?project_id=\(pid)&path=logs")
            #expect((logs.json["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["keep.log"])
            let all = try await a.call("GET", "/api/project/tree?project_id=\(pid)&all=1")
            #expect(
                (all.json["items"] as? [[String: Any]])?.first { $0["name"] as? String == "build" }?["ignored"] as? Bool
                    == true)
            let gen = try await a.call("GET", "/api/project/tree?project_id=\(pid)&path=src/gen")
            #expect((gen.json["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == [".gitignore"])
            // The default project is the most recently opened one (the clone).
            #expect(try await a.call("GET", "/api/project/tree").status == 200)

            // Refused tree and file paths.
            for (path, status) in [
                ("..", 400), ("/etc", 400), ("src/../..", 400), ("outside-link", 403), ("nope", 404), ("a%00b", 400),
            ] {
                let r = try await a.call("GET", "/api/project/tree?project_id=\(pid)&path=\(path)")
                #expect(r.status == status, "tree \(path): \(r.status)")
            }
            for (path, status) in [
                ("../app/README.md", 400), ("/etc/passwd", 400), ("passwd-link", 403), ("outside-link/passwd", 403),
                ("", 400), ("src", 400),
            ] {
                let r = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=\(path)")
                #expect(r.status == status, "file \(path): \(r.status)")
            }

            // File: content, ETag and 304, slices, binary, raw, size cap, non-UTF-8.
            let readme = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=README.md")
            #expect(readme.json["content"] as? String == "# App\nline two changed\nline three\n")
            let etag = try #require(readme.headers["etag"])
            #expect(
                try await a.call(
                    "GET", "/api/project/file?project_id=\(pid)&path=README.md", headers: ["If-None-Match": etag]
                ).status == 304)
            let slice = try await a.call(
                "GET", "/api/project/file?project_id=\(pid)&path=README.md&start_line=2&end_line=3")
            #expect(
                slice.json["content"] as? String == "line two changed\nline three\n"
                    && slice.json["total_lines"] as? Int == 3)
            #expect(
                try await a.call("GET", "/api/project/file?project_id=\(pid)&path=README.md&start_line=0").status == 400
            )
            #expect(
                try await a.call("GET", "/api/project/file?project_id=\(pid)&path=README.md&start_line=3&end_line=2")
                    .status == 400)
            let bin = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=image.bin")
            #expect(
                bin.json["binary"] as? Bool == true && bin.json["content"] is NSNull && bin.json["size"] as? Int == 5)
            let raw = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=image.bin&raw=1")
            #expect(Array(raw.body) == [0, 1, 2, 255, 0])
            let latin = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=latin1.txt")
            #expect(latin.json["binary"] as? Bool == true)
            let big = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=big.txt")
            #expect(big.status == 413 && errorCode(big) == "payload_too_large")
            let bigSlice = try await a.call(
                "GET", "/api/project/file?project_id=\(pid)&path=big.txt&start_line=1&end_line=1")
            #expect(bigSlice.status == 200 && (bigSlice.json["content"] as? String)?.count == (20 << 20) + 1)
            let rawBig = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=big.txt&raw=1")
            #expect(rawBig.status == 200 && rawBig.body.count == 20 << 20)
            // Raw or sliced, a file is held in memory up to 64 MiB: a larger one (sparse here) is refused raw,
            // and its lines are read in pieces, only the slice kept.
            let huge = repo + "/huge.txt"
            let hugeFD = open(huge, O_CREAT | O_WRONLY, 0o644)
            let head = Array(("first\nsecond\n" + String(repeating: "x", count: 16_000) + "\n").utf8)
            #expect(ftruncate(hugeFD, 65 << 20) == 0 && pwrite(hugeFD, head, head.count, 0) == head.count)
            close(hugeFD)
            defer { unlink(huge) }
            let hugeRaw = try await a.call("GET", "/api/project/file?project_id=\(pid)&path=huge.txt&raw=1")
            #expect(hugeRaw.status == 413 && errorCode(hugeRaw) == "payload_too_large")
            let hugeHead = try await a.call(
                "GET", "/api/project/file?project_id=\(pid)&path=huge.txt&start_line=2&end_line=2")
            #expect(hugeHead.status == 200 && hugeHead.json["content"] as? String == "second\n", "\(hugeHead.status)")
            #expect(
                try await a.call("GET", "/api/project/file?project_id=\(pid)&path=inside-link/main.swift").json[
                    "content"] as? String != nil)

            // Recent: newest first.
            let recent = try await a.call("GET", "/api/project/recent?ws_id=\(ws)")
            #expect(
                (recent.json["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["copy", "app"])

            // Another workspace's member sees nothing; a viewer reads but cannot load.
            _ = try await makeUser(t, "q@example.com")
            let q = Agent(t)
            try await q.login("q@example.com", "a long enough password")
            #expect(try await q.call("GET", "/api/project/tree?project_id=\(pid)").status == 404)
            #expect(try await q.call("GET", "/api/project/tree?project_id=prj_doesnotexist0000000000").status == 404)
            _ = try await a.call(
                "POST", "/api/workspaces/\(ws)/members", json: ["email": "q@example.com", "role": "viewer"])
            #expect(try await q.call("GET", "/api/project/tree?project_id=\(pid)").status == 200)
            #expect(try await q.call("POST", "/api/project/load", json: ["ws_id": ws, "path": repo]).status == 403)
        }
    }
}
