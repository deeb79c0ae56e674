import Foundation
import KilnCore
import KilnHTTP

/// One step of a flow. Written `{"action": "click", "selector": "#go"}`, `{"click": {"selector":
/// "#go"}}` or `{"click": "#go"}` (the string being the step's main argument).
struct FlowStep: Sendable {
    let action: String
    let selector: String?
    let text: String?
    let url: String?
    let key: String?
    let name: String?
    /// A secret's name, for `type`: its value is typed, never shown.
    let secret: String?
    let count: Int?
    let visible: Bool?
    let timeoutMS: Int?

    static let actions: Set<String> = ["goto", "click", "type", "press", "wait_for", "expect", "screenshot"]
    static let maxSteps = 100
    static let maxWait = 60_000

    /// Parses and checks a step; the 400 names the step at fault.
    init(_ raw: JSONValue, index i: Int) throws {
        let field = "steps[\(i)]"
        guard var o = raw.objectValue else { throw APIError.validation("\(field) must be an object", field: field) }
        var action = o["action"]?.stringValue
        if action == nil, o.count == 1, let (k, v) = o.first, Self.actions.contains(k) {
            action = k
            if let inner = v.objectValue {
                o = inner
            } else if let s = v.stringValue {
                let main = ["goto": "url", "press": "key", "screenshot": "name"][k] ?? "selector"
                o = [main: .string(s)]
            }
        }
        guard let action, Self.actions.contains(action) else {
            throw APIError.validation(
                "\(field) needs an action: goto, click, type, press, wait_for, expect or screenshot (eval is not "
                    + "offered)", field: field)
        }
        func text(_ k: String, max: Int = 2000) throws -> String? {
            guard let v = o[k], v != .null else { return nil }
            guard let s = v.stringValue, !s.isEmpty, s.utf8.count <= max else {
                throw APIError.validation("\(field).\(k) must be a string of 1 to \(max) bytes", field: "\(field).\(k)")
            }
            return s
        }
        self.action = action
        selector = try text("selector")
        self.text = try text("text", max: 10_000)
        url = try text("url")
        key = try text("key", max: 40)
        name = try text("name", max: 100)
        secret = try text("secret", max: 200)
        count = o["count"]?.intValue
        visible = o["visible"].flatMap { if case .bool(let b) = $0 { b } else { nil } }
        timeoutMS = o["timeout_ms"]?.intValue
        if let t = timeoutMS, !(1...Self.maxWait).contains(t) {
            throw APIError.validation(
                "\(field).timeout_ms must be from 1 to \(Self.maxWait)", field: "\(field).timeout_ms")
        }
        switch action {
        case "goto" where url == nil: throw APIError.validation("\(field) (goto) needs url", field: "\(field).url")
        case "click" where selector == nil, "expect" where selector == nil:
            throw APIError.validation("\(field) (\(action)) needs selector", field: "\(field).selector")
        case "type" where selector == nil || (self.text == nil) == (secret == nil):
            throw APIError.validation(
                "\(field) (type) needs selector and either text or secret", field: "\(field).selector")
        case "press" where key == nil: throw APIError.validation("\(field) (press) needs key", field: "\(field).key")
        case "wait_for" where selector == nil && self.text == nil && url == nil:
            throw APIError.validation("\(field) (wait_for) needs selector, text or url", field: field)
        default: break
        }
    }

    /// How the step reads in events and the result (a secret by name only).
    var shown: JSONValue {
        var o: [String: JSONValue] = ["action": .string(action)]
        for (k, v) in [("selector", selector), ("url", url), ("key", key), ("name", name), ("secret", secret)] {
            if let v { o[k] = .string(v) }
        }
        if let text, action != "type" { o["text"] = .string(text) }
        if action == "type", text != nil { o["text"] = .string("(\(text?.count ?? 0) characters)") }
        if let count { o["count"] = .int(count) }
        if let visible { o["visible"] = .bool(visible) }
        return .object(o)
    }
}

extension BrowserJob {
    /// Runs the steps in order from `url`; stops at the first that fails, with a screenshot of the
    /// page as it was then.
    func flow(
        _ page: PageSession, deadline: UInt64, _ base: [String: JSONValue]
    ) async throws
        -> (String, [String: JSONValue])
    {
        var result = base
        var reports: [JSONValue] = []
        if let navError = try await page.navigate(url, deadline: deadline) {
            result["error"] = .string("The page did not load: \(navError)")
            result["steps"] = .array([])
            return ("failed", result)
        }
        for (i, step) in steps.enumerated() {
            let started = kilnMonotonicNanos()
            var problem: String? = nil
            do {
                problem = try await perform(step, page, deadline: deadline)
            } catch {
                problem = redactor.redact("\(error)")
            }
            var report: [String: JSONValue] = [
                "index": .int(i), "step": step.shown, "ok": .bool(problem == nil),
                "duration_ms": .int(Int((kilnMonotonicNanos() &- started) / 1_000_000)),
            ]
            if let problem {
                report["error"] = .string(problem)
                if let png = try? await page.screenshot(width: viewport.width, height: viewport.height, mobile: false) {
                    report["screenshot"] = try await service.keep(png, runID: runID, name: "step \(i + 1) failed")
                }
            }
            reports.append(.object(report))
            await service.publish(runID, "browser.step", .object(report))
            if problem != nil {
                result["steps"] = .array(reports)
                result["failed_step"] = .int(i)
                result["error"] = .string("Step \(i + 1) (\(step.action)) failed: \(problem ?? "")")
                return ("failed", result)
            }
        }
        result["steps"] = .array(reports)
        result["final_url"] = (try? await page.evaluate("location.href")) ?? .null
        return ("passed", result)
    }

    /// Does one step; nil when it held, else why not.
    func perform(_ step: FlowStep, _ page: PageSession, deadline: UInt64) async throws -> String? {
        let wait = UInt64(step.timeoutMS ?? 5000) * 1_000_000
        let stepDeadline = min(deadline, kilnMonotonicNanos() &+ wait)
        switch step.action {
        case "goto":
            guard let target = URL(string: step.url ?? "", relativeTo: URL(string: url))?.absoluteString else {
                return "not a URL"
            }
            if let why = await gate.refusal(target) { return why }
            return try await page.navigate(target, deadline: deadline).map { "The page did not load: \($0)" }
        case "click":
            guard let point = try await page.center(of: step.selector ?? "") else {
                return "no visible element matches \(step.selector ?? "")"
            }
            try await page.click(x: point.0, y: point.1)
            await page.afterAction(deadline: deadline)
            return nil
        case "type":
            guard try await page.focus(step.selector ?? "") else { return "no element matches \(step.selector ?? "")" }
            let value = step.secret.flatMap { name in secrets.first { $0.name == name }?.value } ?? step.text ?? ""
            _ = try await page.send("Input.insertText", ["text": .string(value)])
            return nil
        case "press":
            try await page.press(step.key ?? "Enter")
            await page.afterAction(deadline: deadline)
            return nil
        case "wait_for":
            let check = Self.condition(selector: step.selector, text: step.text, url: step.url)
            while kilnMonotonicNanos() < stepDeadline {
                if try await page.evaluate(check) == .bool(true) { return nil }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            return "nothing matched within \(step.timeoutMS ?? 5000) ms"
        case "expect":
            return try await expect(step, page)
        default:
            let png = try await page.screenshot(width: viewport.width, height: viewport.height, mobile: false)
            _ = try await service.keep(png, runID: runID, name: step.name ?? "screenshot")
            return nil
        }
    }

    static func js(_ s: String) -> String { JSONValue.string(s).jsonText }

    static func condition(selector: String?, text: String?, url: String?) -> String {
        var parts: [String] = []
        if let selector { parts.append("document.querySelector(\(js(selector))) !== null") }
        if let text { parts.append("(document.body ? document.body.innerText : '').includes(\(js(text)))") }
        if let url { parts.append("location.href.includes(\(js(url)))") }
        return "(() => { try { return \(parts.joined(separator: " && ")); } catch (e) { return false; } })()"
    }

    func expect(_ step: FlowStep, _ page: PageSession) async throws -> String? {
        let sel = Self.js(step.selector ?? "")
        let found =
            try await page.evaluate(
                """
                (() => {
                  const all = [...document.querySelectorAll(\(sel))];
                  const el = all[0];
                  const shown = (e) => !!e && e.getClientRects().length > 0
                    && getComputedStyle(e).visibility !== 'hidden';
                  return { count: all.length, text: el ? el.innerText || el.textContent || '' : null,
                           visible: shown(el) };
                })()
                """
            ).objectValue ?? [:]
        let count = found["count"]?.intValue ?? 0
        if let want = step.count { return count == want ? nil : "\(count) elements match, not \(want)" }
        guard count > 0 else { return "no element matches \(step.selector ?? "")" }
        if let want = step.text {
            let got = found["text"]?.stringValue ?? ""
            return got.contains(want) ? nil : "the text is “\(redactor.redact(String(got.prefix(200))))”"
        }
        if let want = step.visible {
            let got = found["visible"] == .bool(true)
            return got == want ? nil : (got ? "the element is visible" : "the element is not visible")
        }
        return nil
    }
}

extension PageSession {
    /// The middle of the first element matching `selector`, scrolled into view (nil: none, or not shown).
    func center(of selector: String) async throws -> (Double, Double)? {
        let r = try await evaluate(
            """
            (() => {
              const el = document.querySelector(\(BrowserJob.js(selector)));
              if (!el) return null;
              el.scrollIntoView({ block: 'center', inline: 'center' });
              const b = el.getBoundingClientRect();
              if (b.width === 0 && b.height === 0) return null;
              return { x: b.left + b.width / 2, y: b.top + b.height / 2 };
            })()
            """
        ).objectValue
        guard let r, let x = r["x"].flatMap(Self.number), let y = r["y"].flatMap(Self.number) else { return nil }
        return (x, y)
    }

    func click(x: Double, y: Double) async throws {
        for type in ["mouseMoved", "mousePressed", "mouseReleased"] {
            _ = try await send(
                "Input.dispatchMouseEvent",
                ["type": .string(type), "x": .double(x), "y": .double(y), "button": "left", "clickCount": 1])
        }
    }

    func focus(_ selector: String) async throws -> Bool {
        try await evaluate(
            """
            (() => { const el = document.querySelector(\(BrowserJob.js(selector))); if (!el) return false;
              el.scrollIntoView({ block: 'center' }); el.focus(); return true; })()
            """) == .bool(true)
    }

    /// The keys a flow may press, with their DOM key codes.
    static let keys: [String: (code: String, keyCode: Int, text: String?)] = [
        "Enter": ("Enter", 13, "\r"), "Tab": ("Tab", 9, nil), "Escape": ("Escape", 27, nil),
        "Backspace": ("Backspace", 8, nil), "ArrowDown": ("ArrowDown", 40, nil), "ArrowUp": ("ArrowUp", 38, nil),
        "ArrowLeft": ("ArrowLeft", 37, nil), "ArrowRight": ("ArrowRight", 39, nil), "Space": ("Space", 32, " "),
    ]

    func press(_ key: String) async throws {
        guard let k = Self.keys[key] else {
            throw CDPConnection.Failure(
                description: "unknown key \(key); keys: \(Self.keys.keys.sorted().joined(separator: ", "))")
        }
        var down: [String: JSONValue] = [
            "type": k.text == nil ? "rawKeyDown" : "keyDown", "key": .string(key == "Space" ? " " : key),
            "code": .string(k.code), "windowsVirtualKeyCode": .int(k.keyCode),
        ]
        if let t = k.text { down["text"] = .string(t) }
        _ = try await send("Input.dispatchKeyEvent", down)
        _ = try await send(
            "Input.dispatchKeyEvent",
            [
                "type": "keyUp", "key": .string(key == "Space" ? " " : key), "code": .string(k.code),
                "windowsVirtualKeyCode": .int(k.keyCode),
            ])
    }

    /// After a click or a key: a moment for a navigation to begin, then its load and a quiet network.
    func afterAction(deadline: UInt64) async {
        try? await Task.sleep(nanoseconds: 150_000_000)
        await settle(deadline: min(deadline, kilnMonotonicNanos() &+ 10_000_000_000))
    }
}
