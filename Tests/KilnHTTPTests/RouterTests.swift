import Foundation
import Testing

@testable import KilnHTTP

@Suite struct RouterTests {
    func router() -> Router {
        let r = Router()
        r.get("/items") { _, _ in .text("list") }
        r.post("/items") { _, _ in .text("create") }
        r.get("/items/:id") { _, c in .text("item \(try c.parameter("id"))") }
        r.delete("/items/:id") { _, c in .text("delete \(try c.parameter("id"))") }
        r.get("/items/special") { _, _ in .text("special") }
        r.get("/items/:id/files/*rest") { _, c in .text("file \(c.parameters["id"]!) \(c.parameters["rest"]!)") }
        r.get("/static/*path") { _, c in .text("static \(c.parameters["path"]!)") }
        return r
    }

    func call(
        _ responder: RouterResponder, _ method: HTTPMethod, _ target: String
    ) async throws -> (Int, String, HTTPHeaders) {
        let res = await responder.handle(try Request(method: method, target: target))
        guard case .bytes(let b) = res.body else { return (res.status.code, "", res.headers) }
        return (res.status.code, String(decoding: b, as: UTF8.self), res.headers)
    }

    @Test func matchesStaticParamsAndRest() async throws {
        let r = router().responder()
        #expect(try await call(r, .GET, "/items").1 == "list")
        #expect(try await call(r, .POST, "/items").1 == "create")
        #expect(try await call(r, .GET, "/items/42").1 == "item 42")
        #expect(try await call(r, .GET, "/items/special").1 == "special")
        #expect(try await call(r, .GET, "/items/7/files/a/b/c.txt").1 == "file 7 a/b/c.txt")
        #expect(try await call(r, .GET, "/static/x/y").1 == "static x/y")
    }

    @Test func matchesOnDecodedSegments() async throws {
        let r = router().responder()
        #expect(try await call(r, .GET, "/items/a%20b").1 == "item a b")
        #expect(try await call(r, .GET, "/items/a%2Fb").1 == "item a/b")
        #expect(try await call(r, .GET, "/%69tems").1 == "list")
    }

    @Test func notFoundAndMethodNotAllowed() async throws {
        let r = router().responder()
        let (s404, body404, _) = try await call(r, .GET, "/nope")
        #expect(s404 == 404)
        #expect(body404.contains("\"code\":\"not_found\""))
        let (s405, body405, h405) = try await call(r, .PUT, "/items/1")
        #expect(s405 == 405)
        #expect(h405["Allow"] == "DELETE, GET, HEAD, OPTIONS")
        #expect(body405.contains("\"code\":\"method_not_allowed\""))
    }

    @Test func automaticHeadAndOptions() async throws {
        let r = router().responder()
        #expect(try await call(r, .HEAD, "/items").0 == 200)
        let (s, _, h) = try await call(r, .OPTIONS, "/items")
        #expect(s == 204)
        #expect(h["Allow"] == "GET, HEAD, OPTIONS, POST")
    }

    @Test func middlewareRunsInOrderAroundHandlersAnd404s() async throws {
        let r = router()
        r.add(
            middleware: ClosureMiddleware { req, ctx, next in
                var res = try await next(req, ctx)
                res.headers.add("X-Order", "outer")
                return res
            })
        r.add(
            middleware: ClosureMiddleware { req, ctx, next in
                var res = try await next(req, ctx)
                res.headers.add("X-Order", "inner")
                return res
            })
        let responder = r.responder()
        let res = await responder.handle(try Request(method: .GET, target: "/items"))
        #expect(res.headers.values("X-Order") == ["inner", "outer"])
        // Errors turn into responses inside the chain only at the end; middleware sees the throw.
        let seen = Flag()
        let r2 = Router()
        r2.add(
            middleware: ClosureMiddleware { req, ctx, next in
                do { return try await next(req, ctx) } catch {
                    seen.set()
                    throw error
                }
            })
        _ = await r2.responder().handle(try Request(method: .GET, target: "/missing"))
        #expect(seen.value)
    }

    @Test func routeMetadataIsEnumerable() {
        let r = Router()
        r.post("/upload", RouteMetadata(permission: "files:write", bodyLimit: 1024, summary: "Upload")) { _, _ in
            .noContent()
        }
        let route = try! #require(r.responder().routes.first)
        #expect(route.pattern == "/upload")
        #expect(route.metadata.permission == "files:write")
        #expect(route.metadata.bodyLimit == 1024)
        let (info, _) = r.responder().resolve(.POST, ["upload"])
        #expect(info?.metadata.bodyLimit == 1024)
    }

    @Test func handlerErrorsBecomeSharedErrorJSON() async throws {
        let r = Router()
        struct Secret: Error {}
        r.get("/boom") { _, _ in throw Secret() }
        r.get("/bad") { _, _ in throw HTTPError.badRequest("nope", field: "name") }
        let res = await r.responder().handle(try Request(method: .GET, target: "/boom"), requestID: "req_test1234")
        #expect(res.status.code == 500)
        guard case .bytes(let b) = res.body else {
            Issue.record("no body")
            return
        }
        let text = String(decoding: b, as: UTF8.self)
        #expect(
            text
                == #"{"error":{"code":"internal","message":"Internal server error (request req_test1234)","details":{}},"request_id":"req_test1234"}"#
        )
        #expect(!text.contains("Secret"))
        let bad = await r.responder().handle(try Request(method: .GET, target: "/bad"), requestID: "req_x")
        guard case .bytes(let bb) = bad.body else { return }
        #expect(String(decoding: bb, as: UTF8.self).contains(#""details":{"field":"name"}"#))
    }

    @Test func targetParsing() throws {
        let p = try RequestTarget.parse("/a/./b//c?x=1&y=a+b&z=%41&empty")
        #expect(p.segments == ["a", "b", "c"])
        #expect(p.query["x"] == "1")
        #expect(p.query["y"] == "a b")
        #expect(p.query["z"] == "A")
        #expect(p.query["empty"] == "")
        #expect(try RequestTarget.parse("http://example.com/x?q=1").segments == ["x"])
        for bad in ["/a%zz", "/a%2", "/a%", "/%00", "/x?q=%zz", "/a/../b", "/%2e%2e/etc", "relative", "/%ff"] {
            #expect(throws: HTTPError.self, "\(bad)") { try RequestTarget.parse(bad) }
        }
    }
}

final class Flag: @unchecked Sendable {
    private var v = false
    func set() { v = true }
    var value: Bool { v }
}

@Suite struct CookieAndHeaderTests {
    @Test func parsesCookies() {
        let c = Cookies.parse(["a=1; b=\"two\"; c=", "a=ignored; d=4"])
        #expect(c == ["a": "1", "b": "two", "c": "", "d": "4"])
    }

    @Test func setCookieHasAllAttributes() {
        let c = SetCookie(
            name: "kiln_session", value: "abc", expires: Date(timeIntervalSince1970: 0), maxAge: 3600,
            domain: "example.com", path: "/", secure: true, httpOnly: true, sameSite: .lax)
        #expect(
            c.headerValue
                == "kiln_session=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=3600; Domain=example.com; Path=/; Secure; HttpOnly; SameSite=Lax"
        )
        #expect(c.isValid)
        #expect(!SetCookie(name: "a b", value: "x").isValid)
        #expect(!SetCookie(name: "a", value: "x;y").isValid)
        #expect(SetCookie(name: "a", value: "x", sameSite: SetCookie.SameSite.none).headerValue.contains("Secure"))
    }

    @Test func headersAreCaseInsensitiveAndMultiValued() {
        var h = HTTPHeaders()
        h.add("Accept", "a")
        h.add("accept", "b, c")
        #expect(h["ACCEPT"] == "a")
        #expect(h.values("Accept") == ["a", "b, c"])
        #expect(h.listValues("accept") == ["a", "b", "c"])
        h["Accept"] = "z"
        #expect(h.values("accept") == ["z"])
        h.remove("ACCEPT")
        #expect(!h.contains("accept"))
    }

    @Test func datesRoundTrip() {
        let d = Date(timeIntervalSince1970: 1_768_471_200.123)
        #expect(HTTPDate.iso8601(d) == "2026-01-15T10:00:00.123Z")
        #expect(HTTPDate.parseISO8601("2026-01-15T10:00:00.123Z")!.timeIntervalSince1970 == 1_768_471_200.123)
        #expect(HTTPDate.parseISO8601("2026-01-15T10:00:00Z")!.timeIntervalSince1970 == 1_768_471_200)
        #expect(HTTPDate.parseISO8601("2026-13-15T10:00:00Z") == nil)
        #expect(HTTPDate.format(epochSeconds: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT")?.timeIntervalSince1970 == 784_111_777)
    }

    @Test func jsonConventions() throws {
        struct Thing: Codable, Equatable {
            var createdAt: Date
            var userName: String
        }
        let t = Thing(createdAt: Date(timeIntervalSince1970: 1_768_471_200), userName: "ann")
        let json = String(decoding: try JSONCoding.encode(t), as: UTF8.self)
        #expect(json.contains(#""created_at":"2026-01-15T10:00:00.000Z""#))
        #expect(json.contains(#""user_name":"ann""#))
        #expect(try JSONCoding.decode(Thing.self, from: Array(json.utf8)) == t)
        do {
            _ = try JSONCoding.decode(Thing.self, from: Array(#"{"created_at":"2026-01-15T10:00:00.000Z"}"#.utf8))
            Issue.record("decoded without user_name")
        } catch let e as HTTPError {
            #expect(e.status.code == 400)
            #expect(e.details["field"] == .string("user_name"))
            #expect(e.message.contains("user_name"))
        }
    }
}

@Suite struct NullEncodingTests {
    struct Model: NullEncoding {
        let userName: String
        let avatarUrl: String?
        let count: Int?
        let nested: [Int]?
    }
    @Test func absentOptionalsAreNull() throws {
        let json = try JSONDecoder().decode(
            JSONValue.self,
            from: Data(try JSONCoding.encode(Model(userName: "a", avatarUrl: nil, count: 3, nested: nil))))
        #expect(json == ["user_name": "a", "avatar_url": .null, "count": 3, "nested": .null])
    }
}
