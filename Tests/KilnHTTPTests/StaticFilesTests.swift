import Foundation
import Testing

@testable import KilnHTTP

@Suite struct StaticFilesTests {
    let dir: String
    let files: StaticFiles

    init() throws {
        dir = NSTemporaryDirectory() + "kiln-static-\(UUID().uuidString)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/public/assets", withIntermediateDirectories: true)
        try "<h1>app</h1>".write(toFile: dir + "/public/index.html", atomically: true, encoding: .utf8)
        try "0123456789".write(toFile: dir + "/public/assets/digits.txt", atomically: true, encoding: .utf8)
        try "body{}".write(toFile: dir + "/public/assets/app.css", atomically: true, encoding: .utf8)
        try "secret".write(toFile: dir + "/secret.txt", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: dir + "/public/escape.txt", withDestinationPath: dir + "/secret.txt")
        try fm.createSymbolicLink(
            atPath: dir + "/public/inside.txt", withDestinationPath: dir + "/public/assets/digits.txt")
        try "<h1>workspace</h1>".write(toFile: dir + "/public/workspace.html", atomically: true, encoding: .utf8)
        // A hashed vendor file and its precompressed copy: real gzip bytes of that text (made once with
        // Python's gzip module, level 9). No process is started here: Foundation's Process, run by
        // several suites' initialisers at once, once crashed the test process.
        try fm.createDirectory(atPath: dir + "/public/vendor", withIntermediateDirectories: true)
        let js = String(repeating: "console.log('kiln');\n", count: 200)
        try js.write(toFile: dir + "/public/vendor/lib.0123abcdef.js", atomically: true, encoding: .utf8)
        let gz = try #require(
            Data(
                base64Encoded:
                    "H4sIAAAAAAACA+3IsQnAIBAAwD6LGBsXcBwJQXz8IvuDM6S/K2/k/jKeFvneZc3YpfZrSCmllFJKKaWUUv7PA+Qj8YpoEAAA"))
        try gz.write(to: URL(fileURLWithPath: dir + "/public/vendor/lib.0123abcdef.js.gz"))
        files = try #require(StaticFiles(root: dir + "/public", pages: ["w": "workspace.html"]))
    }

    func get(
        _ target: String, _ headers: HTTPHeaders = HTTPHeaders(), method: HTTPMethod = .GET
    ) async -> (Int, String, HTTPHeaders) {
        let router = Router()
        router.fallback = files.handler
        guard let req = try? Request(method: method, target: target, headers: headers) else {
            return (400, "", HTTPHeaders())
        }
        let res = await router.responder().handle(req)
        if case .bytes(let b) = res.body { return (res.status.code, String(decoding: b, as: UTF8.self), res.headers) }
        return (res.status.code, "", res.headers)
    }

    @Test func servesFilesWithTypesAndValidators() async {
        let (s, body, h) = await get("/assets/app.css")
        #expect(s == 200)
        #expect(body == "body{}")
        #expect(h["Content-Type"] == "text/css; charset=utf-8")
        #expect(h["ETag"]?.hasPrefix("\"") == true)
        #expect(h["Last-Modified"] != nil)
        #expect(h["Cache-Control"] == "public, max-age=3600")
        let (si, bi, _) = await get("/")
        #expect(si == 200 && bi == "<h1>app</h1>")
    }

    @Test func conditionalRequests() async {
        let (_, _, h) = await get("/assets/app.css")
        let etag = h["ETag"]!
        #expect(await get("/assets/app.css", ["If-None-Match": etag]).0 == 304)
        #expect(await get("/assets/app.css", ["If-None-Match": "\"other\", \(etag)"]).0 == 304)
        #expect(await get("/assets/app.css", ["If-None-Match": "\"other\""]).0 == 200)
        #expect(await get("/assets/app.css", ["If-Modified-Since": h["Last-Modified"]!]).0 == 304)
        #expect(await get("/assets/app.css", ["If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"]).0 == 200)
    }

    @Test func ranges() async {
        var r = await get("/assets/digits.txt", ["Range": "bytes=2-4"])
        #expect(r.0 == 206 && r.1 == "234" && r.2["Content-Range"] == "bytes 2-4/10")
        r = await get("/assets/digits.txt", ["Range": "bytes=7-"])
        #expect(r.0 == 206 && r.1 == "789")
        r = await get("/assets/digits.txt", ["Range": "bytes=-3"])
        #expect(r.0 == 206 && r.1 == "789")
        r = await get("/assets/digits.txt", ["Range": "bytes=5-100"])
        #expect(r.0 == 206 && r.1 == "56789")
        r = await get("/assets/digits.txt", ["Range": "bytes=20-30"])
        #expect(r.0 == 416 && r.2["Content-Range"] == "bytes */10")
        r = await get("/assets/digits.txt", ["Range": "bytes=0-1,3-4"])
        #expect(r.0 == 200 && r.1 == "0123456789")
        r = await get("/assets/digits.txt", ["Range": "bytes=2-4", "If-Range": "\"stale\""])
        #expect(r.0 == 200)
    }

    @Test func traversalAndSymlinkEscapeAreRefused() async {
        #expect(await get("/../secret.txt").0 == 400)
        #expect(await get("/%2e%2e/secret.txt").0 == 400)
        #expect(await get("/assets/..%2f..%2fsecret.txt").0 == 404)
        #expect(await get("/escape.txt").0 == 403)
        #expect(await get("/inside.txt").1 == "0123456789")
        #expect(await get("/.hidden").0 == 404)
    }

    @Test func spaFallbackForPagesNotForAPIOrAssets() async {
        let page = await get("/projects/42")
        #expect(page.0 == 200 && page.1 == "<h1>app</h1>")
        #expect(await get("/api/unknown").0 == 404)
        #expect(await get("/assets/missing.js").0 == 404)
        #expect(await get("/projects/42", method: .POST).0 == 404)
    }

    @Test func mimeTypes() {
        #expect(StaticFiles.mimeType(for: "/a/b.JS") == "text/javascript; charset=utf-8")
        #expect(StaticFiles.mimeType(for: "/a/b.wasm") == "application/wasm")
        #expect(StaticFiles.mimeType(for: "/a.b/c") == "application/octet-stream")
    }

    /// Hashed names are immutable; the gzip copy answers only clients that accept it, never a range.
    @Test func precompressedAndImmutable() async throws {
        let plain = await get("/vendor/lib.0123abcdef.js")
        #expect(plain.0 == 200 && plain.1.hasPrefix("console.log"))
        #expect(plain.2["Content-Encoding"] == nil && plain.2["Vary"] == "Accept-Encoding")
        #expect(plain.2["Cache-Control"] == "public, max-age=31536000, immutable")
        let router = Router()
        router.fallback = files.handler
        let req = try Request(
            method: .GET, target: "/vendor/lib.0123abcdef.js", headers: ["Accept-Encoding": "br, gzip"])
        let res = await router.responder().handle(req)
        guard case .bytes(let bytes) = res.body else {
            Issue.record("no body")
            return
        }
        #expect(res.headers["Content-Encoding"] == "gzip")
        #expect(res.headers["Content-Type"] == "text/javascript; charset=utf-8")
        #expect(bytes.prefix(2) == [0x1f, 0x8b] && bytes.count < 200)
        #expect(res.headers["ETag"] != plain.2["ETag"])
        #expect(await get("/vendor/lib.0123abcdef.js", ["Accept-Encoding": "gzip;q=0"]).2["Content-Encoding"] == nil)
        let ranged = await get("/vendor/lib.0123abcdef.js", ["Accept-Encoding": "gzip", "Range": "bytes=0-6"])
        #expect(ranged.0 == 206 && ranged.1 == "console" && ranged.2["Content-Encoding"] == nil)
        // Edited after compressing: the stale .gz is not used.
        let path = dir + "/public/vendor/lib.0123abcdef.js"
        let later = Date().addingTimeInterval(60)
        try FileManager.default.setAttributes([.modificationDate: later], ofItemAtPath: path)
        let stale = await get("/vendor/lib.0123abcdef.js", ["Accept-Encoding": "gzip"])
        #expect(stale.2["Content-Encoding"] == nil && stale.1.hasPrefix("console.log"))
        #expect(await get("/assets/app.css").2["Cache-Control"] == "public, max-age=3600")
        #expect(await get("/index.html").2["Cache-Control"] == "no-cache")
    }

    @Test func acceptEncodingParsing() {
        #expect(StaticFiles.acceptsGzip("gzip"))
        #expect(StaticFiles.acceptsGzip("deflate, gzip;q=0.5"))
        #expect(StaticFiles.acceptsGzip("*"))
        #expect(!StaticFiles.acceptsGzip("gzip;q=0, *"))
        #expect(!StaticFiles.acceptsGzip("br"))
        #expect(!StaticFiles.acceptsGzip(nil))
        #expect(!StaticFiles.acceptsGzip("*;q=0"))
    }

    /// Every path under a page's prefix is that page, whatever follows.
    @Test func appPagesOwnTheirPrefix() async {
        #expect(await get("/w/ws_1/p/prj_2/file/Sources/a.swift").1 == "<h1>workspace</h1>")
        #expect(await get("/w").1 == "<h1>workspace</h1>")
        #expect(await get("/elsewhere").1 == "<h1>app</h1>")
    }
}
