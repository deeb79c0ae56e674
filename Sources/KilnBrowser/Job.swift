import CShims
import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// One browser run from its slot to its end: waits for a free slot, starts Chromium, opens the
/// page, does what its kind asks (`smoke`, `flow`, `marketing`), then kills the browser (its
/// profile goes with it) and records the result. A deadline holds throughout.
struct BrowserJob: Sendable {
    let service: BrowserService
    let binary: String
    let runID: String
    let wsID: String
    let kind: String
    let url: String
    let viewport: (width: Int, height: Int)
    let timeout: Int
    let gate: RequestGate
    let steps: [FlowStep]
    /// Secrets the flow types (by name); their values never reach an event, the result or a log.
    let secrets: [SecretValue]
    var redactor: Redactor { Redactor(secrets) }

    static let timingsScript = """
        (async () => {
          const n = performance.getEntriesByType('navigation')[0];
          const lcp = await new Promise((done) => {
            try {
              new PerformanceObserver((l) => {
                const e = l.getEntries();
                done(e.length ? e[e.length - 1].startTime : null);
              })
                .observe({ type: 'largest-contentful-paint', buffered: true });
            } catch (e) { done(null); }
            setTimeout(() => done(null), 200);
          });
          const r = (v) => (v === null || v === undefined ? null : Math.round(v * 10) / 10);
          return n ? { ttfb_ms: r(n.responseStart), dom_content_loaded_ms: r(n.domContentLoadedEventEnd),
                       load_ms: r(n.loadEventEnd), lcp_ms: r(lcp) } : { lcp_ms: r(lcp) };
        })()
        """

    func run() async {
        let s = service
        guard await s.slots.acquire(runID) else {
            await finish("cancelled", ["status": "cancelled", "error": "cancelled before it started"])
            return
        }
        defer { s.slots.release() }
        guard !s.isCancelled(runID) else {
            await finish("cancelled", ["status": "cancelled", "error": "cancelled before it started"])
            return
        }
        try? await s.store.setRunning(runID, at: s.clock.now())
        await s.publish(
            runID, "browser.started", ["run_id": .string(runID), "kind": .string(kind), "url": .string(url)])
        let started = kilnMonotonicNanos()
        let deadline = started &+ UInt64(timeout) * 1_000_000_000
        let browser: ChromiumProcess
        do {
            browser = try ChromiumProcess.start(
                binary: binary, sandbox: s.sandbox, wsID: wsID, runID: runID, viewport: viewport,
                allowlist: gate.allowlist, pins: await gate.pins())
        } catch {
            await finish("failed", ["status": "failed", "error": .string("Chromium did not start: \(error)")])
            return
        }
        let cancelledMeanwhile = s.live.withLock { l -> Bool in
            let cancelled = l[runID]?.cancelled ?? true
            l[runID] = (browser, cancelled)
            return cancelled
        }
        if cancelledMeanwhile {
            await browser.stop()
            await finish("cancelled", ["status": "cancelled", "error": "cancelled"])
            return
        }
        // The deadline holds even when the page never answers: the browser is killed, and every
        // command waiting on it fails.
        let timedOut = TimedOut()
        let watchdog = Task {
            try? await Task.sleep(nanoseconds: UInt64(timeout) * 1_000_000_000)
            if !Task.isCancelled {
                timedOut.set()
                await browser.stop()
            }
        }
        var result: [String: JSONValue] = ["url": .string(url), "kind": .string(kind)]
        var status = "passed"
        let redactor = self.redactor
        do {
            let page = try await PageSession.open(
                browser.cdp, gate: gate, viewport: viewport, redactor: redactor
            ) { type, data in
                await s.publish(runID, type, data)
            }
            switch kind {
            case "flow": (status, result) = try await flow(page, deadline: deadline, result)
            case "marketing": (status, result) = try await marketing(page, deadline: deadline, result)
            default: (status, result) = try await smoke(page, deadline: deadline, result)
            }
            let collected = page.state.withLock { ($0.console, $0.failed, $0.blocked) }
            result["console_errors"] = .array(collected.0)
            result["failed_requests"] = .array(collected.1)
            result["blocked_requests"] = .array(collected.2)
        } catch {
            status = s.isCancelled(runID) ? "cancelled" : "failed"
            result["error"] = .string(
                timedOut.value
                    ? "The run took longer than \(timeout) s"
                    : s.isCancelled(runID) ? "cancelled" : redactor.redact("\(error)"))
        }
        // A cancel or the deadline ends the run whatever step it was in (a step that failed because
        // its browser was killed under it failed for that reason).
        if s.isCancelled(runID) {
            status = "cancelled"
            result["error"] = "cancelled"
        } else if timedOut.value {
            status = "failed"
            result["error"] = .string("The run took longer than \(timeout) s")
        }
        watchdog.cancel()
        await browser.stop()
        result["status"] = .string(status)
        result["duration_ms"] = .int(Int((kilnMonotonicNanos() &- started) / 1_000_000))
        await finish(status, result)
        // The slot is handed on once every process of this browser is gone.
        await browser.gone()
        _ = kiln_malloc_trim()
    }

    /// Load the URL; report the HTTP status, the final URL after redirects, the title, timings (TTFB,
    /// DOMContentLoaded, load, LCP when the page has one) and a full-page screenshot.
    func smoke(
        _ page: PageSession, deadline: UInt64, _ base: [String: JSONValue]
    ) async throws
        -> (String, [String: JSONValue])
    {
        var result = base
        var status = "passed"
        if let navError = try await page.navigate(url, deadline: deadline) {
            status = "failed"
            result["error"] = .string("The page did not load: \(navError)")
        }
        let seen = page.state.withLock { ($0.mainStatus, $0.mainURL) }
        result["http_status"] = seen.0.map { .int($0) } ?? .null
        if let code = seen.0, code >= 400 {
            status = "failed"
            result["error"] = .string("The page answered HTTP \(code)")
        }
        result["final_url"] = (try? await page.evaluate("location.href")) ?? seen.1.map { .string($0) } ?? .null
        result["title"] = (try? await page.evaluate("document.title")) ?? .null
        result["timings"] = (try? await page.evaluate(Self.timingsScript)) ?? .null
        let png = try await page.screenshot(width: viewport.width, height: viewport.height, mobile: false)
        result["screenshot"] = try await service.keep(png, runID: runID, name: "full page")
        return (status, result)
    }

    func finish(_ status: String, _ result: [String: JSONValue]) async {
        let s = service
        let summary = JSONValue.object(result)
        try? await s.store.finish(runID, status: status, result: summary.jsonText, at: s.clock.now())
        s.live.withLock { $0[runID] = nil }
        await s.publish(runID, "browser.completed", ["status": .string(status), "summary": summary])
    }
}

/// Set once by the watchdog when the deadline passed.
final class TimedOut: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var value: Bool { flag.withLock { $0 } }
}
