import Foundation
import KilnCore
import KilnHTTP
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnBrowser
@testable import KilnTestSupport

/// A small site served by the test itself: a home page with a console error, an image without alt, a
/// script from a non-allowed origin and a broken link; a sign-up form; a page reaching for the cloud
/// metadata address and Kiln's own port; a redirect off the allowlist.
final class TestSite: Sendable {
    let server: HTTPServer
    var port: Int { server.port }
    var base: String { "http://127.0.0.1:\(port)" }

    init(kilnPort: @escaping @Sendable () -> Int) throws {
        let router = Router()
        var config = ServerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.eventLoops = 1
        server = try HTTPServer(configuration: config, responder: router.responder())
        @Sendable func page(_ html: String, status: Int = 200) -> Response {
            Response(
                status: HTTPStatus(status), headers: ["Content-Type": "text/html; charset=utf-8"],
                body: .bytes(Array(html.utf8)))
        }
        router.on(.GET, "/", RouteMetadata()) { _, _ in
            page(
                """
                <!doctype html><html><head><title>Kiln test site</title></head><body>
                <h1>Welcome to the test site</h1><p style="height:1500px">A tall page.</p>
                <img src="/pixel.png"><a href="/signup">Sign up</a> <a href="/broken">Broken</a>
                <script>console.error("boom: the home page failed");</script>
                <script src="https://cdn.not-allowed.example/tracker.js"></script>
                </body></html>
                """)
        }
        router.on(.GET, "/pixel.png", RouteMetadata()) { _, _ in
            // A 1×1 PNG.
            let png = Data(
                base64Encoded:
                    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")!
            return Response(status: .ok, headers: ["Content-Type": "image/png"], body: .bytes(Array(png)))
        }
        router.on(.GET, "/signup", RouteMetadata()) { _, _ in
            page(
                """
                <!doctype html><html lang="en"><head><title>Sign up</title></head><body><h1>Sign up</h1>
                <form action="/welcome" method="get"><input id="name" name="name">
                <button id="go" type="submit">Create account</button></form></body></html>
                """)
        }
        router.on(.GET, "/welcome", RouteMetadata()) { req, _ in
            let name = HTMLText.escape(req.query["name"] ?? "")
            return page(
                "<!doctype html><html><head><title>Hi</title></head><body><p id=msg>Welcome, \(name)!</p></body></html>"
            )
        }
        router.on(.GET, "/reach", RouteMetadata()) { _, _ in
            page(
                """
                <!doctype html><html><head><title>Reaching out</title></head><body>
                <img src="http://169.254.169.254/latest/meta-data/"><img src="http://127.0.0.1:\(kilnPort())/healthz">
                </body></html>
                """)
        }
        router.on(.GET, "/ws", RouteMetadata()) { req, _ in
            let target = req.query["to"] ?? "127.0.0.1:9"
            return page(
                """
                <!doctype html><html><head><title>Sockets</title></head><body>
                <script>const s = new WebSocket("ws://\(HTMLText.escape(target))/socket");</script></body></html>
                """)
        }
        router.on(.GET, "/away", RouteMetadata()) { _, _ in
            Response(status: HTTPStatus(302), headers: ["Location": "https://elsewhere.not-allowed.example/"])
        }
        try server.start()
    }

    func stop() async { await server.shutdown() }
}

@Suite(.serialized) struct BrowserTests {
    static let available = ChromiumProcess.find(nil) != nil

    /// A member with the site on the workspace's allowlist (127.0.0.1 allowed for private addresses).
    static func fixture(
        _ configure: @escaping @Sendable (inout Config) -> Void = { _ in }
    ) async throws -> (ShellFixture, TestSite) {
        let kilnPort = Mutex(0)
        let site = try TestSite { kilnPort.withLock { $0 } }
        let f = try await ShellFixture.make { c in
            c.moduleValues["--allow-private-network"] = ["127.0.0.1/32", "::1/128"]
            configure(&c)
        }
        kilnPort.withLock { $0 = f.t.port }
        let put = try await f.a.call(
            "PUT", "/api/browser/allowlist",
            json: ["ws_id": f.ws, "entries": [["pattern": site.base, "note": "the test site"]]])
        #expect(put.status == 200, "\(put.text)")
        return (f, site)
    }

    static func run(_ f: ShellFixture, _ body: [String: Any]) async throws -> [String: Any] {
        var b = body
        b["ws_id"] = f.ws
        let r = try await f.a.call("POST", "/api/browser/run", json: b)
        #expect(r.status == 200, "\(r.text)")
        let events = parseSSE(r.text)
        let done = try #require(events.last { $0.event == "browser.completed" }, "\(r.text)")
        let data = try #require(done.data["summary"] as? [String: Any])
        return data
    }

    static func png(_ f: ShellFixture, _ runID: String, _ shot: [String: Any]) async throws -> (Int, Int)? {
        let r = try await f.a.call("GET", "/api/browser/runs/\(runID)/screenshots/\(shot["id"] as? String ?? "")")
        guard r.status == 200, r.headers["content-type"] == "image/png" else { return nil }
        return PageSession.pngSize(Array(r.body))
    }

    @Test(.enabled(if: available)) func smokeReportsConsoleErrorsBlockedRequestsAndAFullPageScreenshot() async throws {
        let (f, site) = try await Self.fixture()
        defer { Task { await site.stop() } }
        try await using(f) { f in
            let s = try await Self.run(f, ["kind": "smoke", "url": site.base + "/"])
            #expect(s["status"] as? String == "passed", "\(s)")
            #expect(s["http_status"] as? Int == 200 && s["title"] as? String == "Kiln test site")
            let console = (s["console_errors"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String }
            #expect(console.contains { $0.contains("boom: the home page failed") }, "\(console)")
            let blocked = (s["blocked_requests"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
            #expect(blocked.contains("https://cdn.not-allowed.example/tracker.js"), "\(blocked)")
            let timings = try #require(s["timings"] as? [String: Any])
            #expect(timings["ttfb_ms"] != nil && timings["load_ms"] != nil)
            let shot = try #require(s["screenshot"] as? [String: Any])
            let runs = Self.items(try await f.a.call("GET", "/api/browser/runs?ws_id=\(f.ws)"))
            let runID = try #require(runs.first?["id"] as? String)
            let size = try await Self.png(f, runID, shot)
            #expect(size?.0 == 1280 && size?.0 == shot["width"] as? Int && size?.1 == shot["height"] as? Int)
            #expect((size?.1 ?? 0) > 1500, "the whole tall page: \(String(describing: size))")
            // No profile left behind.
            #expect(try await Self.noProfiles(f.t.dataDir), "profiles left behind")
        }
    }

    @Test(.enabled(if: available)) func aFlowSignsUpAndABrokenSelectorFailsWithAScreenshot() async throws {
        let (f, site) = try await Self.fixture()
        defer { Task { await site.stop() } }
        try await using(f) { f in
            let steps: [[String: Any]] = [
                ["action": "click", "selector": "a[href='/signup']"],
                ["wait_for": ["selector": "#name"]],
                ["type": ["selector": "#name", "text": "Ada"]],
                ["click": "#go"],
                ["expect": ["selector": "#msg", "text": "Welcome, Ada!"]],
                ["screenshot": "welcome"],
            ]
            let ok = try await Self.run(f, ["kind": "flow", "url": site.base + "/", "steps": steps])
            #expect(ok["status"] as? String == "passed", "\(ok)")
            let reports = ok["steps"] as? [[String: Any]] ?? []
            #expect(reports.count == 6 && reports.allSatisfy { $0["ok"] as? Bool == true && $0["duration_ms"] is Int })
            #expect((ok["final_url"] as? String)?.contains("/welcome?name=Ada") == true)

            let broken = try await Self.run(
                f,
                [
                    "kind": "flow", "url": site.base + "/signup",
                    "steps": [
                        ["type": ["selector": "#name", "text": "Bo"]], ["click": "#no-such-button"], ["click": "#go"],
                    ],
                ])
            #expect(broken["status"] as? String == "failed" && broken["failed_step"] as? Int == 1, "\(broken)")
            let failed = (broken["steps"] as? [[String: Any]])?.last
            #expect((failed?["error"] as? String)?.contains("#no-such-button") == true)
            let shot = try #require(failed?["screenshot"] as? [String: Any], "a screenshot of the failure")
            let runs = Self.items(try await f.a.call("GET", "/api/browser/runs?ws_id=\(f.ws)"))
            let runID = try #require(runs.first?["id"] as? String)
            #expect(try await Self.png(f, runID, shot) != nil)

            // Bad steps: 400 naming the step.
            for bad: [String: Any] in [
                ["eval": "1+1"], ["click": [:] as [String: Any]], ["type": ["selector": "#x"]],
                ["wait_for": ["timeout_ms": 5]],
            ] {
                let r = try await f.a.call(
                    "POST", "/api/browser/run",
                    json: ["ws_id": f.ws, "kind": "flow", "url": site.base + "/", "steps": [bad]])
                #expect(r.status == 400 && r.text.contains("steps[0]"), "\(bad): \(r.text)")
            }
        }
    }

    @Test(.enabled(if: available)) func marketingFindsTheMissingPiecesAtThreeWidths() async throws {
        let (f, site) = try await Self.fixture()
        defer { Task { await site.stop() } }
        try await using(f) { f in
            let m = try await Self.run(f, ["kind": "marketing", "url": site.base + "/"])
            #expect(m["status"] as? String == "failed", "\(m)")
            let checks = Dictionary(
                uniqueKeysWithValues: (m["checks"] as? [[String: Any]] ?? []).map {
                    ($0["check"] as? String ?? "", $0["ok"] as? Bool ?? true)
                })
            #expect(checks["meta_description"] == false && checks["images_alt"] == false && checks["links"] == false)
            #expect(checks["one_h1"] == true && checks["lang"] == false)
            let noAlt = m["images_without_alt"] as? [String] ?? []
            #expect(noAlt.contains { $0.hasSuffix("/pixel.png") })
            let broken = (m["broken_links"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
            #expect(broken == [site.base + "/broken"], "\(broken) \(m["links"] ?? "")")
            let shots = m["screenshots"] as? [[String: Any]] ?? []
            #expect(shots.compactMap { $0["width"] as? Int } == [1440, 834, 390], "\(shots)")
        }
    }

    @Test(.enabled(if: available)) func privateAddressesKilnItselfAndRedirectsAwayAreBlocked() async throws {
        let (f, site) = try await Self.fixture()
        defer { Task { await site.stop() } }
        try await using(f) { f in
            let s = try await Self.run(f, ["kind": "smoke", "url": site.base + "/reach"])
            let blocked = (s["blocked_requests"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
            #expect(blocked.contains("http://169.254.169.254/latest/meta-data/"), "\(blocked)")
            #expect(blocked.contains("http://127.0.0.1:\(f.t.port)/healthz"), "\(blocked)")
            let away = try await Self.run(f, ["kind": "smoke", "url": site.base + "/away"])
            let awayBlocked = (away["blocked_requests"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
            #expect(awayBlocked.contains("https://elsewhere.not-allowed.example/"), "\(away)")
            #expect(away["status"] as? String == "failed")
            // A WebSocket (which the DevTools protocol cannot pause) to a server off the list: reported,
            // and it never reaches that server.
            let victimHits = Mutex(0)
            let victimRouter = Router()
            victimRouter.on(.GET, "/socket", RouteMetadata()) { _, _ in
                victimHits.withLock { $0 += 1 }
                return Response(status: .ok)
            }
            var vc = ServerConfiguration()
            vc.host = "127.0.0.1"
            vc.port = 0
            vc.eventLoops = 1
            let victim = try HTTPServer(configuration: vc, responder: victimRouter.responder())
            try victim.start()
            let ws = try await Self.run(f, ["kind": "smoke", "url": site.base + "/ws?to=127.0.0.1:\(victim.port)"])
            await victim.shutdown()
            let wsBlocked = (ws["blocked_requests"] as? [[String: Any]] ?? []).compactMap { $0["url"] as? String }
            #expect(wsBlocked.contains("ws://127.0.0.1:\(victim.port)/socket"), "\(ws)")
            #expect(victimHits.withLock { $0 } == 0, "the WebSocket reached the server off the list")
            // A host name on the list is pinned to the address the guard checked: Chromium is told
            // `MAP localhost 127.0.0.1` and loads the page through it.
            _ = try await f.a.call(
                "PUT", "/api/browser/allowlist",
                json: [
                    "ws_id": f.ws, "entries": [["pattern": site.base], ["pattern": "http://localhost:\(site.port)"]],
                ])
            let pinned = try await Self.run(f, ["kind": "smoke", "url": "http://localhost:\(site.port)/signup"])
            #expect(pinned["status"] as? String == "passed" && pinned["title"] as? String == "Sign up", "\(pinned)")
            let gate = try await f.t.app.module(BrowserModule.self)!.service.gate(wsID: f.ws)
            #expect(ChromiumProcess.resolverRules(await gate.pins()) == "MAP localhost 127.0.0.1")
            // Not on the list at all: refused before a browser starts.
            let off = try await f.a.call(
                "POST", "/api/browser/run", json: ["ws_id": f.ws, "kind": "smoke", "url": "https://example.com/"])
            #expect(off.status == 400, "\(off.text)")
        }
    }

    @Test(.enabled(if: available)) func fiveAtOnceRunTwoAtATimeAndLeaveNothingBehind() async throws {
        let (f, site) = try await Self.fixture()
        defer { Task { await site.stop() } }
        try await using(f) { f in
            var ids: [String] = []
            for _ in 0..<5 {
                let r = try await f.a.call(
                    "POST", "/api/browser/run", json: ["ws_id": f.ws, "kind": "smoke", "url": site.base + "/"],
                    headers: ["Accept": "application/json"])
                #expect(r.status == 202, "\(r.text)")
                ids.append(try #require(r.json["run_id"] as? String))
            }
            // Chromium forks helpers that carry its command line for a moment, so browsers are told
            // apart by their run (their profile), not counted by process.
            var most = 0
            for _ in 0..<600 {
                most = max(most, Self.browserRuns().count)
                let states = try await ids.asyncMap {
                    try await f.a.call("GET", "/api/browser/runs/\($0)").json["status"] as? String ?? ""
                }
                if states.allSatisfy({ ["passed", "failed", "cancelled"].contains($0) }) { break }
                try await Task.sleep(nanoseconds: 50_000_000)
            }
            for id in ids {
                #expect(try await f.a.call("GET", "/api/browser/runs/\(id)").json["status"] as? String == "passed")
            }
            #expect(most >= 1 && most <= 2, "\(most) browsers at once")
            #expect(try await Self.noProfiles(f.t.dataDir))

            // A cancel kills the browser at once; nothing of it is left.
            let slow = try await f.a.call(
                "POST", "/api/browser/run",
                json: [
                    "ws_id": f.ws, "kind": "flow", "url": site.base + "/",
                    "steps": [["wait_for": ["selector": "#never", "timeout_ms": 30000]]],
                ], headers: ["Accept": "application/json"])
            let slowID = try #require(slow.json["run_id"] as? String)
            for _ in 0..<200 where Self.browsers(of: f.t.dataDir) == 0 { try await Task.sleep(nanoseconds: 25_000_000) }
            #expect(Self.browsers(of: f.t.dataDir) > 0)
            #expect(try await f.a.call("POST", "/api/browser/runs/\(slowID)/cancel").status == 200)
            for _ in 0..<200 where Self.browsers(of: f.t.dataDir) > 0 { try await Task.sleep(nanoseconds: 25_000_000) }
            #expect(Self.browsers(of: f.t.dataDir) == 0, "no orphaned Chromium")
            for _ in 0..<100 {
                if try await f.a.call("GET", "/api/browser/runs/\(slowID)").json["status"] as? String == "cancelled" {
                    break
                }
                try await Task.sleep(nanoseconds: 25_000_000)
            }
            let after = try await f.a.call("GET", "/api/browser/runs/\(slowID)")
            #expect(after.json["status"] as? String == "cancelled", "\(after.text)")
            #expect(try await Self.noProfiles(f.t.dataDir))

            // The browser killed with SIGKILL from outside: the run fails, nothing of it is left.
            let doomed = try await f.a.call(
                "POST", "/api/browser/run",
                json: [
                    "ws_id": f.ws, "kind": "flow", "url": site.base + "/",
                    "steps": [["wait_for": ["selector": "#never", "timeout_ms": 30000]]],
                ], headers: ["Accept": "application/json"])
            let doomedID = try #require(doomed.json["run_id"] as? String)
            var pids: [Int32] = []
            for _ in 0..<200 where pids.isEmpty {
                pids = Self.browserPIDs()
                if pids.isEmpty { try await Task.sleep(nanoseconds: 25_000_000) }
            }
            #expect(!pids.isEmpty)
            for pid in pids { kill(pid, SIGKILL) }
            for _ in 0..<200 {
                if try await f.a.call("GET", "/api/browser/runs/\(doomedID)").json["status"] as? String == "failed" {
                    break
                }
                try await Task.sleep(nanoseconds: 25_000_000)
            }
            #expect(try await f.a.call("GET", "/api/browser/runs/\(doomedID)").json["status"] as? String == "failed")
            for _ in 0..<200 where Self.anyChromium() { try await Task.sleep(nanoseconds: 25_000_000) }
            #expect(!Self.anyChromium(), "no orphaned Chromium process (renderers, zygotes) after the kill")
            #expect(try await Self.noProfiles(f.t.dataDir))
        }
    }

    @Test(.enabled(if: available)) func anAgentChecksThePageItChanged() async throws {
        let kilnPort = Mutex(0)
        let site = try TestSite { kilnPort.withLock { $0 } }
        defer { Task { await site.stop() } }
        let x = try await AgentFixture.make { c in c.moduleValues["--allow-private-network"] = ["127.0.0.1/32"] }
        try await using(x) { x in
            let f = x.f
            _ = try await f.a.call(
                "PUT", "/api/browser/allowlist", json: ["ws_id": f.ws, "entries": [["pattern": site.base]]])
            x.model.script([
                .openai(
                    ScriptedModel.call("b1", "browser_check", ["kind": "smoke", "url": site.base + "/signup"])
                        + ScriptedModel.finish("tool_calls")),
                .openai([ScriptedModel.text("the page works")] + ScriptedModel.finish("stop")),
            ])
            let (run, last) = try await x.runToEnd("check the sign-up page")
            #expect(last?.event == "run.completed", "\(String(describing: last))")
            let events = parseSSE(try await x.follow(run).text)
            let shot = try #require(events.first { $0.event == "browser.screenshot" }, "\(events.map(\.event))")
            #expect(
                shot.data["width"] as? Int == 1280
                    && (shot.data["browser_run_id"] as? String)?.hasPrefix("brun_") == true)
            let result = events.first { $0.event == "tool.result" }.map { "\($0.data)" } ?? ""
            #expect(result.contains("passed"), "\(result)")
            // In the receipt: the call, and that it held.
            let receipt = try await f.a.call("GET", "/api/receipts/\(run)")
            #expect(receipt.text.contains("browser_check"), "\(receipt.text)")
        }
    }

    @Test func badInputPermissionsAndAMissingChromium() async throws {
        let f = try await ShellFixture.make { c in c.set("--chromium", "/nonexistent/chromium") }
        try await using(f) { f in
            let bad = try await f.a.call(
                "PUT", "/api/browser/allowlist", json: ["ws_id": f.ws, "entries": [["pattern": "ftp://x.example"]]])
            #expect(bad.status == 400, "\(bad.text)")
            for p in ["https://*.example.com", "http://127.0.0.1:8080", "http://localhost:*"] {
                #expect(
                    try await f.a.call(
                        "PUT", "/api/browser/allowlist", json: ["ws_id": f.ws, "entries": [["pattern": p]]]
                    )
                    .status == 200, "\(p)")
            }
            let got = try await f.a.call("GET", "/api/browser/allowlist?ws_id=\(f.ws)")
            #expect((got.json["entries"] as? [[String: Any]])?.first?["pattern"] as? String == "http://localhost:*")
            func run(_ body: [String: Any]) async throws -> HTTPResult {
                var b = body
                b["ws_id"] = f.ws
                return try await f.a.call("POST", "/api/browser/run", json: b)
            }
            #expect(try await run(["kind": "crawl", "url": "http://localhost:3000/"]).status == 400)
            #expect(try await run(["kind": "smoke", "url": "file:///etc/passwd"]).status == 400)
            #expect(try await run(["kind": "smoke", "url": "http://localhost:3000/", "timeout_s": 0]).status == 400)
            #expect(
                try await run([
                    "kind": "smoke", "url": "http://localhost:3000/", "viewport": ["width": 5, "height": 5],
                ])
                .status == 400)
            #expect(try await run(["kind": "flow", "url": "http://localhost:3000/"]).status == 400)
            let missing = try await run(["kind": "smoke", "url": "http://localhost:3000/"])
            #expect(missing.status == 503 && missing.text.contains("chromium"), "\(missing.text)")
            #expect(try await f.a.call("GET", "/api/browser/runs/brun_nope").status == 404)

            // A viewer reads but does not run; a member runs but does not change the allowlist.
            let (viewer, member) = (Agent(f.t), Agent(f.t))
            for (a, email, role) in [(viewer, "v@example.com", "viewer"), (member, "m@example.com", "member")] {
                _ = try await makeUser(f.t, email)
                _ = try await f.a.call("POST", "/api/workspaces/\(f.ws)/members", json: ["email": email, "role": role])
                try await a.login(email, "a long enough password")
            }
            #expect(try await viewer.call("GET", "/api/browser/runs?ws_id=\(f.ws)").status == 200)
            #expect(
                try await viewer.call(
                    "POST", "/api/browser/run", json: ["ws_id": f.ws, "kind": "smoke", "url": "http://localhost:3000/"]
                ).status == 403)
            #expect(
                try await member.call("PUT", "/api/browser/allowlist", json: ["ws_id": f.ws, "entries": [] as [Any]])
                    .status == 403)
        }
    }

    /// Screenshots of runs that ended longer ago than --browser-keep-days go, files and rows; the run and
    /// its findings stay, and a younger run keeps its screenshots. (No Chromium needed: the runs and
    /// their PNGs are recorded as a run would.)
    @Test func oldScreenshotsArePurgedAndTheRunsStay() async throws {
        let f = try await ShellFixture.make { c in c.set("--browser-keep-days", "7") }
        try await using(f) { f in
            let s = try #require(f.t.app.module(BrowserModule.self)).service
            let png = Array(
                Data(
                    base64Encoded:
                        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
                )!)
            let now = Date()
            var shots: [String: String] = [:]
            for (run, ended) in [("brun_old", now.addingTimeInterval(-8 * 86400)), ("brun_new", now)] {
                try await s.store.insertRun(
                    id: run, wsID: f.ws, userID: "usr_test", kind: "smoke", url: "http://localhost/", instance: "i",
                    at: ended)
                shots[run] = try #require(
                    try await s.keep(png, runID: run, name: "page").objectValue?["id"]?.stringValue)
                try await s.store.finish(run, status: "passed", result: "{\"title\":\"kept\"}", at: ended)
            }
            func shot(_ run: String) async throws -> Int {
                try await f.a.call("GET", "/api/browser/runs/\(run)/screenshots/\(shots[run]!)").status
            }
            let before = (try await shot("brun_old"), try await shot("brun_new"))
            #expect(before == (200, 200))
            #expect(try await s.purgeScreenshots(endedBefore: now.addingTimeInterval(-s.keepSeconds)) == 1)
            #expect(try await shot("brun_old") == 404)
            #expect(!FileManager.default.fileExists(atPath: f.t.dataDir + "/browser/brun_old"))
            #expect(try await shot("brun_new") == 200)
            let old = try await f.a.call("GET", "/api/browser/runs/brun_old")
            #expect(old.status == 200 && (old.json["screenshots"] as? [Any])?.isEmpty == true, "\(old.text)")
            #expect((old.json["result"] as? [String: Any])?["title"] as? String == "kept")
            #expect(try await s.purgeScreenshots(endedBefore: now.addingTimeInterval(-s.keepSeconds)) == 0)
        }
    }

    static func items(_ r: HTTPResult) -> [[String: Any]] { r.json["items"] as? [[String: Any]] ?? [] }

    /// Whether no profile folder is left (within five seconds: the last is removed when the last
    /// process of its browser is gone, a moment after the run reports).
    static func noProfiles(_ dir: String) async throws -> Bool {
        for _ in 0..<100 {
            if try profiles(under: dir).isEmpty { return true }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        return false
    }

    /// Profile folders of browser runs left anywhere under the data dir.
    static func profiles(under dir: String) throws -> [String] {
        let e = FileManager.default.enumerator(atPath: dir)
        var out: [String] = []
        while let p = e?.nextObject() as? String {
            if p.contains(".kiln-browser/brun_") { out.append(p) }
        }
        return out
    }

    static func cmdlines() -> [(Int32, [Substring])] {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return pids.compactMap { p in
            guard let pid = Int32(p), let cmd = FileManager.default.contents(atPath: "/proc/\(p)/cmdline") else {
                return nil
            }
            return (pid, String(decoding: cmd, as: UTF8.self).split(separator: "\0"))
        }
    }

    /// The browser processes of runs (not their renderers and helpers, which carry --type=).
    static func browserPIDs() -> [Int32] {
        cmdlines().filter { _, args in
            args.contains { $0.hasPrefix("--user-data-dir=") && $0.contains(".kiln-browser/brun_") }
                && !args.contains { $0.hasPrefix("--type=") }
                // Not the sandbox around it, nor the shell of Debian's /usr/bin/chromium script (and
                // its subshells) before it execs the browser.
                && args.first.map { !$0.hasSuffix("bwrap") && !$0.hasSuffix("sh") } == true
        }.map(\.0)
    }

    /// The runs whose Chromium is up now (by the profile on any of its processes' command lines).
    static func browserRuns() -> Set<String> {
        var runs = Set<String>()
        for (_, args) in cmdlines() {
            for a in args where a.hasPrefix("--user-data-dir=") {
                if let r = a.range(of: "brun_") { runs.insert(String(a[r.lowerBound...].prefix { $0 != "/" })) }
            }
        }
        return runs
    }

    /// Any process of a run's Chromium at all (helpers included), or its sandbox.
    static func anyChromium() -> Bool {
        cmdlines().contains { _, args in args.contains { $0.contains(".kiln-browser/brun_") } }
    }

    /// Runs with a Chromium up now (the suite runs its tests one at a time).
    static func browsers(of dir: String) -> Int { browserRuns().count }
}

extension Array {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }
}
