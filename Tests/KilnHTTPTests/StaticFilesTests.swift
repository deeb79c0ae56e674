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
        files = try #require(StaticFiles(root: dir + "/public"))
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
}
