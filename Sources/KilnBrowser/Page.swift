import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// One page of a run's browser: every request it makes paused and let through or refused (the
/// allowlist, then the outbound guard), its console errors, failed and blocked requests and the main
/// document's status collected, navigation and network idle awaited, screenshots taken.
final class PageSession: Sendable {
    struct State {
        var loadFired = false
        var inflight: [String: String] = [:]
        var urls: [String: String] = [:]
        var lastNetwork = kilnMonotonicNanos()
        var mainFrame: String?
        var mainStatus: Int?
        var mainURL: String?
        var console: [JSONValue] = []
        var failed: [JSONValue] = []
        var blocked: [JSONValue] = []
        var blockedIDs: Set<String> = []
    }

    let cdp: CDPConnection
    let session: String
    let gate: RequestGate
    /// Secret values typed into the page are replaced in what it reports (console text, URLs).
    let redactor: Redactor
    /// Publishes a run event (`browser.console`, `browser.request_failed`).
    let report: @Sendable (String, JSONValue) async -> Void
    let state = Mutex(State())
    static let maxListed = 200

    private init(
        cdp: CDPConnection, session: String, gate: RequestGate, redactor: Redactor,
        report: @escaping @Sendable (String, JSONValue) async -> Void
    ) {
        self.cdp = cdp
        self.session = session
        self.gate = gate
        self.redactor = redactor
        self.report = report
    }

    /// Attaches to the browser's page, starts handling its events and turns interception on.
    static func open(
        _ cdp: CDPConnection, gate: RequestGate, viewport: (width: Int, height: Int), mobile: Bool = false,
        redactor: Redactor = Redactor([]), report: @escaping @Sendable (String, JSONValue) async -> Void
    ) async throws -> PageSession {
        let targets = try await cdp.send("Target.getTargets")
        var targetID = targets.objectValue?["targetInfos"]?.arrayValue?.compactMap(\.objectValue).first {
            $0["type"]?.stringValue == "page"
        }?["targetId"]?.stringValue
        if targetID == nil {
            targetID = try await cdp.send("Target.createTarget", ["url": "about:blank"]).objectValue?["targetId"]?
                .stringValue
        }
        guard let targetID,
            let session = try await cdp.send("Target.attachToTarget", ["targetId": .string(targetID), "flatten": true])
                .objectValue?["sessionId"]?.stringValue
        else { throw CDPConnection.Failure(description: "no page to attach to") }
        let page = PageSession(cdp: cdp, session: session, gate: gate, redactor: redactor, report: report)
        Task { await page.pump() }
        for method in ["Page.enable", "Runtime.enable", "Network.enable", "Log.enable"] {
            _ = try await page.send(method)
        }
        _ = try await page.send("Fetch.enable", ["patterns": [["urlPattern": "*", "requestStage": "Request"]]])
        try await page.setViewport(viewport.width, viewport.height, mobile: mobile)
        return page
    }

    func send(_ method: String, _ params: [String: JSONValue] = [:]) async throws -> JSONValue {
        try await cdp.send(method, params, session: session)
    }

    func setViewport(_ width: Int, _ height: Int, mobile: Bool) async throws {
        _ = try await send(
            "Emulation.setDeviceMetricsOverride",
            ["width": .int(width), "height": .int(height), "deviceScaleFactor": 1, "mobile": .bool(mobile)])
    }

    // MARK: Events

    private func pump() async {
        for await e in cdp.events where e.session == session {
            await handle(e.method, e.params)
        }
    }

    private func handle(_ method: String, _ p: [String: JSONValue]) async {
        switch method {
        case "Fetch.requestPaused":
            let id = p["requestId"]?.stringValue ?? ""
            let request = p["request"]?.objectValue ?? [:]
            let url = request["url"]?.stringValue ?? ""
            if let why = await gate.refusal(url) {
                let item: JSONValue = [
                    "url": .string(redactor.redact(String(url.prefix(2000)))), "reason": .string(redactor.redact(why)),
                    "resource_type": p["resourceType"] ?? .null, "blocked": true,
                ]
                if let networkID = p["networkId"]?.stringValue {
                    state.withLock { _ = $0.blockedIDs.insert(networkID) }
                }
                let first = state.withLock { s -> Bool in
                    guard s.blocked.count < Self.maxListed else { return false }
                    s.blocked.append(item)
                    return true
                }
                if first { await report("browser.request_failed", item) }
                _ = try? await send("Fetch.failRequest", ["requestId": .string(id), "errorReason": "BlockedByClient"])
            } else {
                _ = try? await send("Fetch.continueRequest", ["requestId": .string(id)])
            }
        case "Network.webSocketCreated":
            let url = p["url"]?.stringValue ?? ""
            let http =
                url.hasPrefix("wss:")
                ? "https:" + url.dropFirst(4) : url.hasPrefix("ws:") ? "http:" + url.dropFirst(3) : url
            if let why = await gate.refusal(String(http)) {
                let item: JSONValue = [
                    "url": .string(redactor.redact(String(url.prefix(2000)))), "reason": .string(redactor.redact(why)),
                    "resource_type": "WebSocket", "blocked": true,
                ]
                let kept = state.withLock { s -> Bool in
                    guard s.blocked.count < Self.maxListed else { return false }
                    s.blocked.append(item)
                    return true
                }
                if kept { await report("browser.request_failed", item) }
            }
        case "Network.requestWillBeSent":
            let id = p["requestId"]?.stringValue ?? ""
            let url = p["request"]?.objectValue?["url"]?.stringValue ?? ""
            state.withLock { s in
                s.inflight[id] = url
                s.urls[id] = url
                s.lastNetwork = kilnMonotonicNanos()
                if p["type"]?.stringValue == "Document", s.mainFrame == nil || p["frameId"]?.stringValue == s.mainFrame
                {
                    s.mainFrame = p["frameId"]?.stringValue
                    s.mainURL = url
                }
            }
        case "Network.responseReceived":
            let response = p["response"]?.objectValue ?? [:]
            let code = response["status"]?.intValue ?? 0
            let item = state.withLock { s -> JSONValue? in
                if p["type"]?.stringValue == "Document", p["frameId"]?.stringValue == s.mainFrame {
                    s.mainStatus = code
                    s.mainURL = response["url"]?.stringValue ?? s.mainURL
                    return nil
                }
                // A resource the server refused or lost (a missing image, a broken script) failed too.
                guard code >= 400, s.failed.count < Self.maxListed else { return nil }
                let item: JSONValue = [
                    "url": .string(redactor.redact(String((response["url"]?.stringValue ?? "").prefix(2000)))),
                    "error": .string("HTTP \(code)"), "status": .int(code), "resource_type": p["type"] ?? .null,
                    "blocked": false,
                ]
                s.failed.append(item)
                return item
            }
            if let item { await report("browser.request_failed", item) }
        case "Network.loadingFinished":
            state.withLock { s in
                s.inflight[p["requestId"]?.stringValue ?? ""] = nil
                s.lastNetwork = kilnMonotonicNanos()
            }
        case "Network.loadingFailed":
            let id = p["requestId"]?.stringValue ?? ""
            let item = state.withLock { s -> JSONValue? in
                s.inflight[id] = nil
                s.lastNetwork = kilnMonotonicNanos()
                guard !s.blockedIDs.contains(id), p["canceled"] != .bool(true), s.failed.count < Self.maxListed else {
                    return nil
                }
                let item: JSONValue = [
                    "url": .string(redactor.redact(String((s.urls[id] ?? "").prefix(2000)))),
                    "error": p["errorText"] ?? .null,
                    "resource_type": p["type"] ?? .null, "blocked": false,
                ]
                s.failed.append(item)
                return item
            }
            if let item { await report("browser.request_failed", item) }
        case "Page.loadEventFired":
            state.withLock { $0.loadFired = true }
        case "Page.frameStartedLoading":
            // A click or a script navigated the main frame: wait for its load again.
            state.withLock { s in
                if s.mainFrame == nil || p["frameId"]?.stringValue == s.mainFrame { s.loadFired = false }
            }
        case "Runtime.consoleAPICalled" where ["error", "assert"].contains(p["type"]?.stringValue ?? ""):
            let text = (p["args"]?.arrayValue ?? []).map { a -> String in
                let o = a.objectValue ?? [:]
                return o["value"]?.stringValue ?? o["description"]?.stringValue ?? o["value"].map(\.jsonText) ?? ""
            }.joined(separator: " ")
            await console([
                "level": "error", "source": "console", "text": .string(redactor.redact(String(text.prefix(4000)))),
            ])
        case "Runtime.exceptionThrown":
            let d = p["exceptionDetails"]?.objectValue ?? [:]
            let text =
                d["exception"]?.objectValue?["description"]?.stringValue ?? d["text"]?.stringValue
                ?? "uncaught exception"
            await console([
                "level": "error", "source": "exception", "text": .string(redactor.redact(String(text.prefix(4000)))),
                "url": d["url"] ?? .null, "line": d["lineNumber"] ?? .null,
            ])
        default:
            break
        }
    }

    private func console(_ item: JSONValue) async {
        let kept = state.withLock { s -> Bool in
            guard s.console.count < Self.maxListed else { return false }
            s.console.append(item)
            return true
        }
        if kept { await report("browser.console", item) }
    }

    // MARK: Actions

    /// Loads `url` and waits for the load event and then 300 ms without network traffic (or
    /// the deadline). Returns the navigation error, if the browser gave one.
    func navigate(_ url: String, deadline: UInt64) async throws -> String? {
        state.withLock {
            $0.loadFired = false
            $0.mainFrame = nil
            $0.mainStatus = nil
        }
        let r = try await send("Page.navigate", ["url": .string(url)])
        if let error = r.objectValue?["errorText"]?.stringValue, !error.isEmpty { return error }
        if let frame = r.objectValue?["frameId"]?.stringValue { state.withLock { $0.mainFrame = frame } }
        await settle(deadline: deadline)
        return nil
    }

    /// Waits for the load event and then a quiet network (no request for 300 ms: a page that loads more
    /// after its load event is waited for), or the deadline.
    func settle(deadline: UInt64) async {
        while kilnMonotonicNanos() < deadline && !cdp.isClosed {
            let quiet = state.withLock { s in
                s.loadFired && s.inflight.isEmpty && kilnMonotonicNanos() &- s.lastNetwork > 300_000_000
            }
            if quiet { return }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// A JavaScript expression's value (promises awaited).
    func evaluate(_ expression: String) async throws -> JSONValue {
        let r = try await send(
            "Runtime.evaluate", ["expression": .string(expression), "returnByValue": true, "awaitPromise": true])
        if let ex = r.objectValue?["exceptionDetails"]?.objectValue {
            throw CDPConnection.Failure(
                description: ex["exception"]?.objectValue?["description"]?.stringValue ?? "the page's script failed")
        }
        return r.objectValue?["result"]?.objectValue?["value"] ?? .null
    }

    /// A PNG of the whole page (up to 16,384 pixels tall) at `width`.
    func screenshot(width: Int, height: Int, mobile: Bool) async throws -> [UInt8] {
        let metrics = try await send("Page.getLayoutMetrics").objectValue ?? [:]
        let content = metrics["cssContentSize"]?.objectValue ?? metrics["contentSize"]?.objectValue ?? [:]
        let full = min(
            16_384, max(height, Int((content["height"].flatMap(Self.number) ?? Double(height)).rounded(.up))))
        try await setViewport(width, full, mobile: mobile)
        defer { Task { try? await self.setViewport(width, height, mobile: mobile) } }
        let shot = try await send("Page.captureScreenshot", ["format": "png", "captureBeyondViewport": false])
        guard let b64 = shot.objectValue?["data"]?.stringValue, let data = Data(base64Encoded: b64) else {
            throw CDPConnection.Failure(description: "the browser returned no screenshot")
        }
        return Array(data)
    }

    static func number(_ v: JSONValue) -> Double? {
        switch v {
        case .int(let n): Double(n)
        case .double(let d): d
        default: nil
        }
    }

    /// A PNG's width and height from its IHDR chunk.
    static func pngSize(_ png: [UInt8]) -> (Int, Int)? {
        guard png.count >= 24, png[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { return nil }
        func be(_ at: Int) -> Int { png[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        return (be(16), be(20))
    }
}
