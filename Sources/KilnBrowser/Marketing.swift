import Foundation
import KilnCore
import KilnHTTP

extension BrowserJob {
    /// The three widths a landing page is looked at.
    static let marketingViewports: [(name: String, width: Int, height: Int, mobile: Bool)] = [
        ("desktop", 1440, 900, false), ("tablet", 834, 1112, true), ("phone", 390, 844, true),
    ]

    static let pageFacts = """
        (() => {
          const meta = (n) => document.querySelector(`meta[name="${n}"]`)?.getAttribute('content') ?? null;
          const og = (p) => document.querySelector(`meta[property="${p}"]`)?.getAttribute('content') ?? null;
          return {
            title: document.title, description: meta('description'),
            canonical: document.querySelector('link[rel="canonical"]')?.href ?? null,
            og_title: og('og:title'), og_description: og('og:description'), og_image: og('og:image'),
            h1_count: document.querySelectorAll('h1').length, lang: document.documentElement.getAttribute('lang'),
            images_without_alt: [...document.images].filter((i) => !i.hasAttribute('alt'))
              .map((i) => i.currentSrc || i.src).slice(0, 100),
            links: [...new Set([...document.links].map((a) => a.href).filter((h) => /^https?:/.test(h))
              .map((h) => h.split('#')[0]))].slice(0, 100),
          };
        })()
        """

    /// Three widths with a screenshot each, and the checks a landing page is held to: the title's
    /// length, a meta description, a canonical link, Open Graph title, description and image, one
    /// `<h1>`, a `lang`, images without `alt`, and every link on the page (within the allowlist)
    /// fetched, broken ones listed.
    func marketing(
        _ page: PageSession, deadline: UInt64, _ base: [String: JSONValue]
    ) async throws
        -> (String, [String: JSONValue])
    {
        var result = base
        var shots: [JSONValue] = []
        for v in Self.marketingViewports {
            try await page.setViewport(v.width, v.height, mobile: v.mobile)
            if let navError = try await page.navigate(url, deadline: deadline) {
                result["error"] = .string("The page did not load: \(navError)")
                return ("failed", result)
            }
            let png = try await page.screenshot(width: v.width, height: v.height, mobile: v.mobile)
            var shot = try await service.keep(png, runID: runID, name: v.name).objectValue ?? [:]
            shot["viewport"] = ["width": .int(v.width), "height": .int(v.height)]
            shots.append(.object(shot))
        }
        result["screenshots"] = .array(shots)
        result["http_status"] = page.state.withLock { $0.mainStatus }.map { .int($0) } ?? .null
        let facts = try await page.evaluate(Self.pageFacts).objectValue ?? [:]
        func str(_ k: String) -> String? { facts[k]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } }
        var checks: [JSONValue] = []
        func check(_ name: String, _ ok: Bool, _ detail: String) {
            checks.append(["check": .string(name), "ok": .bool(ok), "detail": .string(detail)])
        }
        let title = str("title") ?? ""
        check(
            "title", (10...60).contains(title.count),
            title.isEmpty ? "no <title>" : "\(title.count) characters (10 to 60 read well in results)")
        let description = str("description")
        check(
            "meta_description", description.map { (50...160).contains($0.count) } ?? false,
            description.map { "\($0.count) characters (50 to 160 read well)" } ?? "no meta description")
        check("canonical", str("canonical") != nil, str("canonical") ?? "no <link rel=canonical>")
        for k in ["og_title", "og_description", "og_image"] {
            check(k, str(k) != nil, str(k) ?? "no \(k.replacingOccurrences(of: "_", with: ":"))")
        }
        let h1 = facts["h1_count"]?.intValue ?? 0
        check("one_h1", h1 == 1, "\(h1) <h1> element\(h1 == 1 ? "" : "s")")
        check("lang", str("lang") != nil, str("lang").map { "lang=\($0)" } ?? "no lang on <html>")
        let noAlt = facts["images_without_alt"]?.arrayValue ?? []
        check("images_alt", noAlt.isEmpty, noAlt.isEmpty ? "every image has alt" : "\(noAlt.count) without alt")
        let links = (facts["links"]?.arrayValue ?? []).compactMap(\.stringValue)
        let linkResults = await checkLinks(links)
        let broken = linkResults.filter { $0.objectValue?["broken"] == .bool(true) }
        check("links", broken.isEmpty, "\(links.count) checked, \(broken.count) broken")
        result["checks"] = .array(checks)
        result["images_without_alt"] = .array(noAlt)
        result["links"] = .array(linkResults)
        result["broken_links"] = .array(broken)
        result["title"] = .string(title)
        let failed = checks.filter { $0.objectValue?["ok"] == .bool(false) }.count
        result["findings"] = .int(failed)
        return (failed == 0 ? "passed" : "failed", result)
    }

    /// Each link fetched (HEAD, then GET when HEAD is not allowed), eight at a time; one off the
    /// allowlist or refused by the outbound guard is skipped, not broken.
    func checkLinks(_ links: [String]) async -> [JSONValue] {
        let http = OutboundHTTP(outbound: gate.guardian)
        var out: [JSONValue] = []
        for batch in stride(from: 0, to: links.count, by: 8).map({ Array(links[$0..<min(links.count, $0 + 8)]) }) {
            await withTaskGroup(of: (Int, JSONValue).self) { group in
                for (i, link) in batch.enumerated() {
                    group.addTask {
                        if let why = await gate.refusal(link) {
                            return (i, ["url": .string(link), "skipped": .string(why), "broken": false])
                        }
                        for method in ["HEAD", "GET"] {
                            do {
                                let r = try await http.send(
                                    OutboundHTTP.Request(
                                        method: method, url: link, timeout: 5, maxResponseBytes: 256 << 10))
                                if method == "HEAD" && [405, 501].contains(r.status) { continue }
                                return (
                                    i,
                                    ["url": .string(link), "status": .int(r.status), "broken": .bool(r.status >= 400)]
                                )
                            } catch {
                                return (i, ["url": .string(link), "error": .string("\(error)"), "broken": true])
                            }
                        }
                        return (i, ["url": .string(link), "broken": true])
                    }
                }
                var got: [(Int, JSONValue)] = []
                for await r in group { got.append(r) }
                out += got.sorted { $0.0 < $1.0 }.map(\.1)
            }
        }
        return out
    }
}
