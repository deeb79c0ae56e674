import Foundation
import Glibc
import KilnApp
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnAuth

struct SSEEventParsed {
    let id: Int?
    let event: String
    let data: [String: Any]
}

/// Parses an SSE body into events (comments skipped).
func parseSSE(_ text: String) -> [SSEEventParsed] {
    var out: [SSEEventParsed] = []
    for block in text.components(separatedBy: "\n\n") {
        var id: Int?
        var event = "message"
        var data = ""
        for line in block.split(separator: "\n") {
            if line.hasPrefix("id: ") {
                id = Int(line.dropFirst(4))
            } else if line.hasPrefix("event: ") {
                event = String(line.dropFirst(7))
            } else if line.hasPrefix("data: ") {
                data += line.dropFirst(6)
            }
        }
        guard !data.isEmpty else { continue }
        out.append(
            SSEEventParsed(
                id: id, event: event,
                data: (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:]))
    }
    return out
}

/// A signed-in member with one opened plain-directory project.
struct ShellFixture: Stoppable {
    let t: TestApp
    let a: Agent
    let ws: String
    let pid: String
    let dir: String

    static func make(
        _ files: [String: String] = [:], configure: @escaping (inout Config) -> Void = { _ in }
    ) async throws -> ShellFixture {
        let roots = NSTemporaryDirectory() + "kiln-sh-\(UUID().uuidString)"
        let dir = roots + "/proj"
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        for (rel, text) in files {
            let p = dir + "/" + rel
            try FileManager.default.createDirectory(
                atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: p, atomically: true, encoding: .utf8)
        }
        // A symlink leading out of the project (to a small folder, so test runners that follow it stay quick).
        try FileManager.default.createDirectory(atPath: roots + "/outside", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/out-link", withDestinationPath: roots + "/outside")
        let t = try TestApp { c in
            c.moduleValues["--projects-root"] = [roots]
            c.set("--shell-grace", "1")
            configure(&c)
        }
        _ = try await makeUser(t, "sh@example.com")
        let a = Agent(t)
        try await a.login("sh@example.com", "a long enough password")
        let ws = try await workspaceOf(a)
        let p = try await a.call("POST", "/api/project/load", json: ["ws_id": ws, "path": dir])
        return ShellFixture(t: t, a: a, ws: ws, pid: try #require(p.json["id"] as? String), dir: dir)
    }

    func stop() async { await t.stop() }

    func run(_ command: String, extra: [String: Any] = [:], query: String = "") async throws -> [SSEEventParsed] {
        var body: [String: Any] = ["project_id": pid, "command": command]
        for (k, v) in extra { body[k] = v }
        let r = try await a.call("POST", "/api/shell/run" + query, json: body)
        #expect(r.status == 200, "\(r.text)")
        #expect(r.headers["content-type"]?.hasPrefix("text/event-stream") == true)
        return parseSSE(r.text)
    }

    func start(_ command: String, extra: [String: Any] = [:]) async throws -> String {
        var body: [String: Any] = ["project_id": pid, "command": command]
        for (k, v) in extra { body[k] = v }
        let r = try await a.call("POST", "/api/shell/run", json: body, headers: ["Accept": "application/json"])
        #expect(r.status == 202, "\(r.text)")
        return try #require(r.json["job_id"] as? String)
    }

    func events(_ job: String, cursor: Int? = nil, lastEventID: Int? = nil) async throws -> [SSEEventParsed] {
        var headers: [String: String] = [:]
        if let lastEventID { headers["Last-Event-ID"] = String(lastEventID) }
        let r = try await a.call(
            "GET", "/api/shell/jobs/\(job)/events" + (cursor.map { "?cursor=\($0)" } ?? ""), headers: headers)
        #expect(r.status == 200)
        return parseSSE(r.text)
    }
}

func output(_ events: [SSEEventParsed], _ stream: String) -> String {
    events.filter { $0.event == stream }.map { $0.data["data"] as? String ?? "" }.joined()
}

/// Host pids of live processes whose command line is exactly `argv` (a sandboxed process's own
/// idea of its pid is its namespace's, so tests find it by what it runs).
public func processes(running argv: [String]) -> [Int32] {
    let want = argv.joined(separator: "\0") + "\0"
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return String(decoding: data, as: UTF8.self) == want && !processGone(pid)
    }
}

public func processGone(_ pid: Int32) -> Bool {
    if kill(pid, 0) != 0 { return true }
    // A zombie (no init reaping it in a container) is dead too.
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
}
