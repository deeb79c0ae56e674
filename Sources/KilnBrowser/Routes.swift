import Foundation
import KilnCore
import KilnHTTP

/// `/api/browser/*`: the workspace's allowlist, runs (streamed like jobs), their screenshots.
struct BrowserRoutes: Sendable {
    let browser: BrowserService

    func register(_ routes: Routes) {
        let r = routes.tagged("browser")
        typealias P = BrowserPermission
        r.add(
            .GET, "/api/browser/allowlist", P.read, "The origins the workspace's browser runs may load",
            query: [.wsID], reply: .json(Schema.any), allowlist)
        r.add(
            .PUT, "/api/browser/allowlist", P.manage,
            "Replace the allowlist {ws_id, entries: [{pattern: https://*.example.com, note}]} (at most 100; a port "
                + "of * for any; private addresses also need --allow-private-network)",
            limit: 64 * 1024, reply: .json(Schema.any), putAllowlist)
        r.add(
            .POST, "/api/browser/run", P.run,
            "Run headless Chromium {ws_id, kind: smoke|flow|marketing, url, steps? (flow: goto, click, type, press, "
                + "wait_for, expect, screenshot), viewport?: {width, height}, timeout_s? (≤ 120)}: SSE browser.step, "
                + "browser.queued, browser.started, browser.console, browser.request_failed, browser.screenshot "
                + "{id, width, height}, browser.completed {status, summary}; with Accept: application/json 202 "
                + "{run_id}; 503 without Chromium",
            limit: 64 * 1024, reply: .events(Schema.any), run)
        r.add(
            .GET, "/api/browser/runs", P.read, "The workspace's browser runs, newest first",
            query: [.wsID, .limit, .cursor], reply: .json(Schema.page(Schema.any)), list)
        r.add(
            .GET, "/api/browser/runs/:browser_run_id", P.read,
            "A run: its status, result (status, title, timings, console errors, failed and blocked requests) "
                + "and screenshots", reply: .json(Schema.any), get)
        r.add(
            .GET, "/api/browser/runs/:browser_run_id/events", P.read,
            "A run's events (SSE, from the start or after Last-Event-ID), ending with browser.completed",
            query: [.cursor], reply: .events(), events)
        r.add(
            .POST, "/api/browser/runs/:browser_run_id/cancel", P.run, "Cancel a queued or running run",
            limit: 16 * 1024, body: .optional, reply: .json(Schema.any), cancel)
        r.add(
            .GET, "/api/browser/runs/:browser_run_id/screenshots/:shot_id", P.read, "A screenshot (PNG)",
            reply: Reply(.ok, nil, contentType: "image/png"), screenshot)
    }

    @Sendable func allowlist(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await browser.allowlist(wsID: try ctx.requireWorkspace().wsID))
    }

    @Sendable func putAllowlist(_ req: Request, _ ctx: RequestContext, _ input: AllowlistInput) async throws -> Response
    {
        .json(
            try await browser.setAllowlist(
                input, wsID: try ctx.requireWorkspace().wsID, by: try ctx.requirePrincipal(), ip: req.remoteAddress))
    }

    @Sendable func run(_ req: Request, _ ctx: RequestContext, _ input: BrowserRunInput) async throws -> Response {
        let id = try await browser.start(
            input, wsID: try ctx.requireWorkspace().wsID, userID: try ctx.requirePrincipal().userID)
        if req.prefersJSON {
            return .json(
                JSONValue.object([
                    "run_id": .string(id), "status": "queued",
                    "events_url": .string("/api/browser/runs/\(id)/events"),
                ]), status: .accepted)
        }
        return try browser.bus.sse(topic: BrowserService.topic(id), request: req, endTypes: BrowserService.terminal)
    }

    @Sendable func list(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(try await browser.runs(wsID: try ctx.requireWorkspace().wsID, page: try PageRequest(query: req.query)))
    }

    @Sendable func get(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let r = try await browser.run(try ctx.parameter("browser_run_id"), wsID: try ctx.requireWorkspace().wsID)
        return .json(try await browser.shown(r))
    }

    @Sendable func events(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let r = try await browser.run(try ctx.parameter("browser_run_id"), wsID: try ctx.requireWorkspace().wsID)
        return try browser.bus.sse(
            topic: BrowserService.topic(r.string("id") ?? ""), request: req, endTypes: BrowserService.terminal)
    }

    @Sendable func cancel(_ req: Request, _ ctx: RequestContext, _ input: JSONValue) async throws -> Response {
        let id = try ctx.parameter("browser_run_id")
        try await browser.cancel(id, wsID: try ctx.requireWorkspace().wsID)
        return .json(JSONValue.object(["run_id": .string(id), "cancelled": true]))
    }

    @Sendable func screenshot(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let png = try await browser.screenshot(
            try ctx.parameter("shot_id"), runID: try ctx.parameter("browser_run_id"),
            wsID: try ctx.requireWorkspace().wsID)
        var res = Response(status: .ok)
        res.headers["Content-Type"] = "image/png"
        res.headers["Cache-Control"] = "private, max-age=3600"
        res.body = .bytes(png)
        return res
    }
}
