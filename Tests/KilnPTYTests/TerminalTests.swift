import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnPTY
@testable import KilnTestSupport

@Suite struct TerminalTests {
    /// DELETE answers once the shell has ended, with its exit status; the list no longer has it.
    @Test func endingATerminalWaitsForItsShell() async throws {
        try await using(try await ShellFixture.make()) { f in
            let spawned = try await f.a.call(
                "POST", "/api/pty/spawn", json: ["project_id": f.pid, "cols": 100, "rows": 30])
            #expect(spawned.status == 201, "\(spawned.text)")
            let id = try #require(spawned.json["id"] as? String)
            let pid = try #require(spawned.json["pid"] as? Int)
            #expect(
                spawned.json["status"] as? String == "running"
                    && (spawned.json["ws_path"] as? String)?.hasSuffix("/stream") == true)
            let listed = try await f.a.call("GET", "/api/pty?ws_id=\(f.ws)")
            #expect((listed.json["items"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
            let ended = try await f.a.call("DELETE", "/api/pty/\(id)?ws_id=\(f.ws)")
            #expect(
                ended.status == 200 && ended.json["status"] as? String == "exited" && ended.json["exit_code"] is Int,
                "\(ended.text)")
            #expect(processGone(Int32(pid)))
            let after = try await f.a.call("GET", "/api/pty?ws_id=\(f.ws)")
            #expect((after.json["items"] as? [[String: Any]])?.isEmpty == true)
            #expect(try await f.a.call("DELETE", "/api/pty/\(id)?ws_id=\(f.ws)").status == 404)
        }
    }

    @Test func badSpawnsAre400() async throws {
        try await using(try await ShellFixture.make()) { f in
            for body: [String: Any] in [
                ["cols": 0], ["rows": 5000], ["shell": "sh"], ["shell": "/nonexistent"], ["cwd": "../.."],
                ["cols": "80"],
            ] {
                var b = body
                b["project_id"] = f.pid
                let r = try await f.a.call("POST", "/api/pty/spawn", json: b)
                #expect(r.status == 400, "\(body): \(r.text)")
            }
        }
    }
}
