import Foundation
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization

/// Browser runs: a headless Chromium per run (in the sandbox, driven over a pipe), at most
/// `--browser-concurrency` at a time and the rest queued, every request of the page checked
/// against the workspace's allowlist and the outbound guard. Events on `browser:<run>`:
/// `browser.queued`, `browser.started`, `browser.console`, `browser.request_failed`,
/// `browser.screenshot {id, width, height}`, `browser.completed {status, summary}`.
public final class BrowserService: BrowserChecks {
    let store: BrowserStore
    let bus: EventBus
    let clock: any Clock
    let instances: Instances
    let sandbox: Sandbox
    let guardian: OutboundGuard
    let binary: String?
    let shotsDir: String
    let slots: Slots
    /// Screenshots of runs that ended longer ago than this go (full-page PNGs add up).
    let keepSeconds: Double
    let secrets: (any SecretProvider)?
    /// Runs going: their browser, once started, and whether they were cancelled.
    let live = Mutex<[String: (browser: ChromiumProcess?, cancelled: Bool)]>([:])

    static let concurrencyFlag = "--browser-concurrency"
    static let chromiumFlag = "--chromium"
    static let keepDaysFlag = "--browser-keep-days"
    static let options: [Config.Option] = [
        .int(
            concurrencyFlag, env: "KILN_BROWSER_CONCURRENCY",
            help: "headless Chromium processes at a time for browser runs (default 2; the rest wait)", range: 1...16),
        .int(
            keepDaysFlag, env: "KILN_BROWSER_KEEP_DAYS",
            help: "days a browser run's screenshots are kept after it ends (default 30; its findings stay)",
            range: 1...3650),
        .text(chromiumFlag, env: "KILN_CHROMIUM", help: "the Chromium to run (default: chromium on PATH)"),
    ]

    init(services: Services, secrets: (any SecretProvider)?) {
        self.secrets = secrets
        store = BrowserStore(db: services.db)
        bus = services.bus
        clock = services.clock
        instances = services.instances
        sandbox = services.sandbox
        guardian = services.outbound
        binary = ChromiumProcess.find(services.config.string(Self.chromiumFlag))
        shotsDir = services.dataDir + "/browser"
        slots = Slots(max(1, min(16, services.config.int(Self.concurrencyFlag) ?? 2)))
        keepSeconds = Double(services.config.int(Self.keepDaysFlag) ?? 30) * 86400
    }

    static func topic(_ runID: String) -> String { "browser:\(runID)" }
    static let terminal: Set<String> = ["browser.completed"]

    func publish(_ runID: String, _ type: String, _ data: JSONValue) async {
        _ = try? await bus.publish(topic: Self.topic(runID), type: type, data: data.jsonText)
    }

    // MARK: Allowlist

    func allowlist(wsID: String) async throws -> JSONValue {
        let rows = try await store.allowlist(wsID: wsID)
        return [
            "ws_id": .string(wsID),
            "entries": .array(
                rows.map {
                    ["pattern": .string($0.string("pattern") ?? ""), "note": .string($0.string("note") ?? "")]
                }),
        ]
    }

    func setAllowlist(_ input: AllowlistInput, wsID: String, by p: Principal, ip: String) async throws -> JSONValue {
        guard input.entries.count <= Allowlist.maxEntries else {
            throw APIError.validation("at most \(Allowlist.maxEntries) entries", field: "entries")
        }
        var entries: [(String, String)] = []
        for (i, e) in input.entries.enumerated() {
            guard let parsed = Allowlist.Entry(pattern: e.pattern) else {
                throw APIError.validation(
                    "entries[\(i)].pattern must be an origin like https://example.com, https://*.example.com or "
                        + "http://127.0.0.1:8080 (a port of * for any)", field: "entries[\(i)].pattern")
            }
            let note = e.note ?? ""
            guard note.count <= 500 else {
                throw APIError.validation("entries[\(i)].note may have 500 characters", field: "entries[\(i)].note")
            }
            entries.append((parsed.pattern, note))
        }
        let now = clock.now()
        let kept = entries
        try await store.db.write { [store] tx in
            try store.setAllowlist(tx, wsID: wsID, kept)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "browser.allowlist_changed", actorUserID: p.userID, actorKeyID: p.apiKeyID, wsID: wsID,
                    resourceType: "browser_allowlist", resourceID: wsID, ip: ip,
                    details: ["patterns": .array(kept.map { .string($0.0) })]), at: now)
        }
        return try await allowlist(wsID: wsID)
    }

    func gate(wsID: String) async throws -> RequestGate {
        let entries = try await store.allowlist(wsID: wsID).compactMap {
            Allowlist.Entry(pattern: $0.string("pattern") ?? "", note: $0.string("note") ?? "")
        }
        return RequestGate(allowlist: Allowlist(entries: entries), guardian: guardian)
    }

    // MARK: Runs

    /// Checks the request, records the run as queued and starts it in the background; its id.
    func start(_ i: BrowserRunInput, wsID: String, userID: String) async throws -> String {
        guard BrowserLimits.kinds.contains(i.kind) else {
            throw APIError.validation("kind must be smoke, flow or marketing", field: "kind")
        }
        let steps = try (i.steps ?? []).enumerated().map { try FlowStep($0.element, index: $0.offset) }
        if i.kind == "flow" {
            guard !steps.isEmpty, steps.count <= FlowStep.maxSteps else {
                throw APIError.validation("a flow has 1 to \(FlowStep.maxSteps) steps", field: "steps")
            }
        } else if !steps.isEmpty {
            throw APIError.validation("steps are for kind flow", field: "steps")
        }
        guard i.url.utf8.count <= BrowserLimits.maxURL, let url = URL(string: i.url),
            ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil
        else { throw APIError.validation("url must be an http(s) URL", field: "url") }
        let viewport = (
            i.viewport?.width ?? BrowserLimits.defaultViewport.width,
            i.viewport?.height ?? BrowserLimits.defaultViewport.height
        )
        guard BrowserLimits.viewportWidths.contains(viewport.0), BrowserLimits.viewportHeights.contains(viewport.1)
        else {
            throw APIError.validation(
                "viewport is {width 200-3840, height 200-2160}", field: "viewport")
        }
        let timeout = i.timeoutS ?? BrowserLimits.defaultTimeout
        guard (1...BrowserLimits.maxTimeout).contains(timeout) else {
            throw APIError.validation("timeout_s must be from 1 to \(BrowserLimits.maxTimeout)", field: "timeout_s")
        }
        guard let binary else {
            throw HTTPError(
                .serviceUnavailable,
                message: "Browser runs need Chromium, which is not installed: apt-get install -y chromium",
                details: ["program": "chromium"])
        }
        try sandbox.requireUsable()
        let gate = try await gate(wsID: wsID)
        guard gate.allowlist.allows(url) else {
            throw APIError.validation(
                "\(url.scheme ?? "")://\(url.host ?? "") is not on the workspace's browser allowlist "
                    + "(PUT /api/browser/allowlist)", field: "url")
        }
        // Secrets a flow types are fetched (checked, audited) now; their values live only in the job.
        let names = Array(Set(steps.compactMap(\.secret))).sorted()
        var values: [SecretValue] = []
        if !names.isEmpty {
            guard let secrets else { throw APIError.unavailable("Secrets are not available") }
            values = try await secrets.use(names, wsID: wsID, userID: userID, purpose: "browser run")
        }
        let id = IDs.ordered("brun", at: clock.now())
        try await store.insertRun(
            id: id, wsID: wsID, userID: userID, kind: i.kind, url: i.url, instance: instances.id, at: clock.now())
        live.withLock { $0[id] = (nil, false) }
        await publish(id, "browser.queued", ["run_id": .string(id), "kind": .string(i.kind), "url": .string(i.url)])
        let job = BrowserJob(
            service: self, binary: binary, runID: id, wsID: wsID, kind: i.kind, url: i.url,
            viewport: (viewport.0, viewport.1), timeout: timeout, gate: gate, steps: steps, secrets: values)
        Task { await job.run() }
        return id
    }

    /// An agent's browser_check: a run like any other (queued, allowlisted, recorded), waited for.
    public func check(
        wsID: String, userID: String, kind: String, url: String, steps: [JSONValue]?
    ) async throws -> (runID: String, status: String, text: String, screenshots: [JSONValue]) {
        guard kind == "smoke" || kind == "flow" else {
            throw APIError.validation("kind must be smoke or flow", field: "kind")
        }
        let input = BrowserRunInput(wsId: wsID, kind: kind, url: url, steps: steps, viewport: nil, timeoutS: nil)
        let id = try await start(input, wsID: wsID, userID: userID)
        var row = try await store.run(id)
        // The run's own deadline bounds this wait (plus time queued behind others).
        for _ in 0..<(10 * 60 * 5) where !["passed", "failed", "cancelled"].contains(row?.string("status") ?? "") {
            try await Task.sleep(nanoseconds: 200_000_000)
            row = try await store.run(id)
        }
        guard let row else { throw APIError.notFound("The browser run is gone") }
        let status = row.string("status") ?? "failed"
        let result = row.string("result").flatMap { try? JSONValue(parsing: $0) }?.objectValue ?? [:]
        var lines = ["browser run \(id): \(status)"]
        for k in ["error", "http_status", "final_url", "title"] {
            if let v = result[k], v != .null { lines.append("\(k): \(v.stringValue ?? v.jsonText)") }
        }
        for (k, label) in [
            ("console_errors", "console errors"), ("failed_requests", "failed requests"),
            ("blocked_requests", "blocked requests"), ("steps", "steps"),
        ] {
            if let list = result[k]?.arrayValue, !list.isEmpty {
                lines.append("\(label):")
                lines += list.prefix(20).map { "- " + $0.jsonText }
            }
        }
        let shots = try await store.shots(id).map { s -> JSONValue in
            [
                "id": .string(s.string("id") ?? ""), "name": .string(s.string("name") ?? ""),
                "width": .int(s.int("width") ?? 0), "height": .int(s.int("height") ?? 0),
            ]
        }
        return (id, status, String(lines.joined(separator: "\n").prefix(16_000)), shots)
    }

    /// Cancels a queued or running run (its browser is killed at once).
    func cancel(_ id: String, wsID: String) async throws {
        _ = try await run(id, wsID: wsID)
        let browser = live.withLock { l -> ChromiumProcess?? in
            guard let entry = l[id] else { return nil }
            l[id] = (entry.browser, true)
            return .some(entry.browser)
        }
        guard let browser else {
            let status = try await run(id, wsID: wsID).string("status") ?? ""
            if status == "queued" || status == "running" {
                throw try await instances.misdirected("Browser run \(id)", holder: try await store.instanceOf(id))
            }
            throw APIError.conflict("The run is over")
        }
        await browser?.stop()
        slots.cancel(id)
    }

    func isCancelled(_ id: String) -> Bool { live.withLock { $0[id]?.cancelled ?? true } }

    func run(_ id: String, wsID: String) async throws -> Row {
        guard IDs.isValid(id, prefix: "brun"), let r = try await store.run(id), r.string("ws_id") == wsID else {
            throw APIError.notFound("No such browser run")
        }
        return r
    }

    func shown(_ r: Row) async throws -> JSONValue {
        let id = r.string("id") ?? ""
        var o: [String: JSONValue] = [
            "id": .string(id), "run_id": .string(id), "ws_id": .string(r.string("ws_id") ?? ""),
            "user_id": .string(r.string("user_id") ?? ""), "kind": .string(r.string("kind") ?? ""),
            "url": .string(r.string("url") ?? ""), "status": .string(r.string("status") ?? ""),
            "created_at": .string(HTTPDate.iso8601(r.date("created_at") ?? Date())),
            "started_at": r.date("started_at").map { .string(HTTPDate.iso8601($0)) } ?? .null,
            "ended_at": r.date("ended_at").map { .string(HTTPDate.iso8601($0)) } ?? .null,
            "result": r.string("result").flatMap { try? JSONValue(parsing: $0) } ?? .null,
        ]
        o["screenshots"] = .array(
            try await store.shots(id).map { s in
                let sid = s.string("id") ?? ""
                return [
                    "id": .string(sid), "name": .string(s.string("name") ?? ""), "width": .int(s.int("width") ?? 0),
                    "height": .int(s.int("height") ?? 0), "bytes": .int(s.int("bytes") ?? 0),
                    "url": .string("/api/browser/runs/\(id)/screenshots/\(sid)"),
                ]
            })
        return .object(o)
    }

    func runs(wsID: String, page: PageRequest) async throws -> JSONValue {
        let rows = try await store.runs(wsID: wsID, before: page.cursor, limit: page.limit + 1)
        var items: [JSONValue] = []
        for r in rows { items.append(try await shown(r)) }
        let p = Page(fetched: items, limit: page.limit) { $0.objectValue?["id"]?.stringValue ?? "" }
        return ["items": .array(p.items), "next_cursor": p.nextCursor.map { .string($0) } ?? .null]
    }

    /// A screenshot's PNG bytes (404 for one of another run, or one past `--browser-keep-days`).
    func screenshot(_ shotID: String, runID: String, wsID: String) async throws -> [UInt8] {
        _ = try await run(runID, wsID: wsID)
        guard IDs.isValid(shotID, prefix: "shot"), let s = try await store.shot(shotID), s.string("run_id") == runID,
            let data = FileManager.default.contents(atPath: "\(shotsDir)/\(runID)/\(shotID).png")
        else {
            throw APIError.notFound(
                "No such screenshot (a run's screenshots are kept \(Int(keepSeconds / 86400)) days after it ends)")
        }
        return Array(data)
    }

    /// Removes the screenshots of runs that ended before `cutoff` (rows, then files), a page at a
    /// time; the runs and their findings stay. Returns how many runs lost theirs.
    @discardableResult
    func purgeScreenshots(endedBefore cutoff: Date) async throws -> Int {
        var purged = 0
        while true {
            let runs = try await store.runsWithShotsEndedBefore(cutoff, limit: 200)
            for id in runs {
                try await store.deleteShots(runID: id)
                try? FileManager.default.removeItem(atPath: "\(shotsDir)/\(id)")
            }
            purged += runs.count
            if runs.count < 200 { return purged }
        }
    }

    /// Keeps a PNG and announces it.
    func keep(_ png: [UInt8], runID: String, name: String) async throws -> JSONValue {
        guard let (w, h) = PageSession.pngSize(png) else {
            throw CDPConnection.Failure(description: "the screenshot is not a PNG")
        }
        let id = IDs.ordered("shot", at: clock.now())
        let dir = "\(shotsDir)/\(runID)"
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard
            FileManager.default.createFile(
                atPath: "\(dir)/\(id).png", contents: Data(png), attributes: [.posixPermissions: 0o600])
        else { throw CDPConnection.Failure(description: "cannot store the screenshot") }
        try await store.insertShot(
            id: id, runID: runID, name: name, width: w, height: h, bytes: png.count, at: clock.now())
        let shown: JSONValue = ["id": .string(id), "name": .string(name), "width": .int(w), "height": .int(h)]
        await publish(runID, "browser.screenshot", shown)
        return shown
    }

    func workspaceOfRun(_ id: String) async throws -> String? {
        guard IDs.isValid(id, prefix: "brun") else { return nil }
        return try await store.workspaceOfRun(id)
    }

    /// Runs whose server stopped (a restart, a crash, a lost instance) end as `lost`, once, so
    /// their streams end.
    func recover(alive: Set<String>) async throws {
        for (id, instance) in try await store.unfinished()
        where !alive.contains(instance ?? "") && live.withLock({ $0[id] == nil }) {
            let result: JSONValue = ["status": "lost", "error": "the server running the run stopped"]
            guard try await store.finishLost(id, result: result.jsonText, at: clock.now()) else { continue }
            await publish(id, "browser.completed", ["status": "lost", "summary": result])
        }
    }

    /// Every running browser is killed (the server is stopping).
    func stopAll() async {
        let browsers = live.withLock { l in l.values.compactMap(\.browser) }
        for b in browsers { await b.stop() }
    }
}

/// At most `n` browsers at a time; the rest wait in order (a cancelled one leaves the queue).
final class Slots: Sendable {
    private let state: Mutex<(free: Int, waiting: [(id: String, c: CheckedContinuation<Bool, Never>)])>

    init(_ n: Int) { state = Mutex((n, [])) }

    /// True once a slot is held; false when the run was cancelled while it waited.
    func acquire(_ id: String) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let now = state.withLock { s -> Bool in
                if s.free > 0 {
                    s.free -= 1
                    return true
                }
                s.waiting.append((id, c))
                return false
            }
            if now { c.resume(returning: true) }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            if s.waiting.isEmpty {
                s.free += 1
                return nil
            }
            return s.waiting.removeFirst().c
        }
        next?.resume(returning: true)
    }

    func cancel(_ id: String) {
        let c = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            guard let i = s.waiting.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiting.remove(at: i).c
        }
        c?.resume(returning: false)
    }
}
