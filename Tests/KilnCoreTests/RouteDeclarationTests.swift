import Foundation
import KilnHTTP
import Testing

@testable import KilnCore

/// The declarations a route is built from: schemas read from its Decodable types, partial updates,
/// the permission check at registration, and module options.
@Suite struct RouteDeclarationTests {
    enum Colour: String, Decodable, SchemaEnum { case red, green }
    struct Inner: Decodable, Sendable { let depth: Int }
    struct Body: Decodable, Sendable, SchemaRequiredFields {
        static let requiredFields = ["ws_id"]
        let wsId: String?
        let name: String
        let count: Int?
        let ratio: Double
        let enabled: Bool?
        let tags: [String]
        let colour: Colour
        let inner: Inner?
        let env: [String: String]?
        let at: Date
        let extra: JSONValue?
        let cap: Patch<Int>
    }

    func props(_ s: JSONValue) -> [String: JSONValue] {
        guard case .object(let o) = s, case .object(let p)? = o["properties"] else { return [:] }
        return p
    }

    func required(_ s: JSONValue) -> [String] {
        guard case .object(let o) = s, case .array(let r)? = o["required"] else { return [] }
        return r.compactMap { if case .string(let x) = $0 { x } else { nil } }
    }

    @Test func schemasAreReadFromTheDecodableType() {
        let s = Schema.of(Body.self)
        let p = props(s)
        #expect(
            Set(p.keys) == [
                "ws_id", "name", "count", "ratio", "enabled", "tags", "colour", "inner", "env", "at", "extra", "cap",
            ])
        // Non-optional fields are required (and ws_id, which the type asks to document as required).
        #expect(Set(required(s)) == ["ws_id", "name", "ratio", "tags", "colour", "at"])
        #expect(p["name"] == Schema.string && p["ratio"] == Schema.number && p["ws_id"] == Schema.string)
        #expect(p["count"] == ["type": ["integer", "null"]] && p["enabled"] == ["type": ["boolean", "null"]])
        #expect(p["tags"] == Schema.array(Schema.string))
        #expect(p["colour"] == ["type": "string", "enum": ["red", "green"]])
        #expect(p["at"] == Schema.dateTime && p["extra"] == Schema.any)
        #expect(p["env"] == ["type": ["object", "null"], "additionalProperties": Schema.string])
        #expect(p["cap"] == ["type": ["integer", "null"]])
        #expect(props(p["inner"] ?? .null)["depth"] == Schema.integer && required(p["inner"] ?? .null) == ["depth"])
        #expect(Schema.of(Role.self) == ["type": "string", "enum": ["viewer", "member", "admin", "owner"]])
    }

    @Test func patchTellsAbsentFromNull() throws {
        struct Caps: Decodable {
            let daily: Patch<Int>
            let monthly: Patch<Int>
            let yearly: Patch<Int>
        }
        let c = try JSONCoding.decode(Caps.self, from: Array(#"{"daily": 0, "monthly": null}"#.utf8))
        #expect(c.daily.applied(to: 5) == 0)
        #expect(c.monthly.applied(to: 5) == nil)
        #expect(c.yearly.applied(to: 5) == 5)
        #expect(throws: HTTPError.self) { try JSONCoding.decode(Caps.self, from: Array(#"{"daily": true}"#.utf8)) }
    }

    @Test func aPermissionNoModuleRegisteredIsAProblem() {
        let catalog = PermissionCatalog()
        let known = Permission("thing:read", "See things")
        catalog.register(known)
        let routes = Routes(router: Router(), catalog: catalog)
        let r = routes.tagged("things")
        r.add(.GET, "/api/things", known, "List") { _, _ in .noContent() }
        r.add(.GET, "/api/open", .publicAccess, "Open") { _, _ in .noContent() }
        #expect(routes.problems.isEmpty)
        r.add(.POST, "/api/things", Permission("thing:wrte", "a typo"), "Make") { _, _ in .noContent() }
        #expect(routes.problems.count == 1 && routes.problems[0].contains("thing:wrte"))
        #expect(routes.docs.count == 3)
    }

    @Test func theBodyIsDecodedWithinTheRoutesLimit() async throws {
        struct Input: Decodable, Sendable { let name: String }
        let catalog = PermissionCatalog()
        let router = Router()
        let routes = Routes(router: router, catalog: catalog)
        routes.tagged("t").add(.POST, "/x", .publicAccess, "Echo", limit: 64, body: .optional) {
            (_: Request, _: RequestContext, input: Input) in
            .text(input.name.isEmpty ? "-" : input.name)
        }
        #expect(routes.docs[0].requestBody == Schema.object(["name": Schema.string], required: ["name"]))
        #expect(routes.docs[0].bodyRequired == false)
        func post(_ body: String, type: String? = "application/json") async throws -> Response {
            var h = HTTPHeaders()
            if let type { h.add("Content-Type", type) }
            return await router.responder().handle(
                try Request(method: .POST, target: "/x", headers: h, body: Array(body.utf8)))
        }
        #expect(try await post(#"{"name":"a"}"#).status == .ok)
        #expect(try await post(#"{"nam":"a"}"#).status == .badRequest)
        #expect(try await post(#"{"name":"a"}"#, type: "text/plain").status == .unsupportedMediaType)
        // An empty body stands for `{}` on a route whose body is optional: here `name` is still missing.
        #expect(try await post("", type: nil).status == .badRequest)
    }

    @Test func moduleOptionsParseValidateAndRepeat() throws {
        let options =
            Config.coreOptions + [
                Config.Option.int("--grace", env: "KILN_GRACE", help: "", range: 0...10),
                .list("--root", env: "KILN_ROOT", help: ""),
                .choice("--kind", env: "KILN_KIND", help: "", ["a", "b"]),
                .text("--url", env: "KILN_URL", help: ""),
            ]
        let (c, rest) = try Config.load(
            arguments: ["--grace", "4", "--root=/x", "--root", "/y:/z", "pos"],
            environment: ["KILN_ROOT": "/env", "KILN_KIND": "b", "KILN_URL": ""], options: options)
        #expect(c.int("--grace") == 4 && c.strings("--root") == ["/x", "/y", "/z"] && c.string("--kind") == "b")
        #expect(c.string("--url") == nil && rest == ["pos"])
        #expect(
            try Config.load(arguments: [], environment: ["KILN_ROOT": "/a:/b"], options: options).0.strings("--root")
                == ["/a", "/b"])
        #expect(throws: Config.ConfigError.self) {
            try Config.load(arguments: ["--grace", "11"], environment: [:], options: options)
        }
        #expect(throws: Config.ConfigError.self) {
            try Config.load(arguments: ["--kind", "c"], environment: [:], options: options)
        }
    }
}
