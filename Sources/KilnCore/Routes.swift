import Foundation
import KilnHTTP

/// A query parameter a route documents.
public struct QueryParam: Sendable {
    public let name: String
    public let description: String
    public let required: Bool
    public init(_ name: String, _ description: String, required: Bool = false) {
        self.name = name
        self.description = description
        self.required = required
    }

    public static let wsID = QueryParam("ws_id", "the workspace", required: true)
    public static let wsIDOptional = QueryParam("ws_id", "the workspace (default: your most recent)")
    public static let projectID = QueryParam("project_id", "the project (default: your most recently opened)")
    public static let limit = QueryParam("limit", "1 to 200 (default 50)")
    public static let cursor = QueryParam("cursor", "next_cursor of the previous page")
    public static let paging = [limit, cursor]
}

/// What the OpenAPI document says about one route.
public struct RouteDoc: Sendable {
    public var method: String
    public var path: String
    public var permission: String
    public var summary: String
    public var tags: [String]
    public var query: [QueryParam]
    /// JSON schema of the request body (nil: no body); `bodyRequired` false when an empty body is fine.
    public var requestBody: JSONValue?
    public var bodyRequired: Bool
    public var successStatus: Int
    /// JSON schema of the success body (nil: described only).
    public var responseBody: JSONValue?
    public var responseContentType: String
}

/// How a route answers on success, for the document.
public struct Reply: Sendable {
    public var status: HTTPStatus
    public var schema: JSONValue?
    public var contentType: String

    public init(_ status: HTTPStatus = .ok, _ schema: JSONValue? = nil, contentType: String = "application/json") {
        self.status = status
        self.schema = schema
        self.contentType = contentType
    }

    public static func json(_ schema: JSONValue? = nil, status: HTTPStatus = .ok) -> Reply { Reply(status, schema) }
    public static func of<T: Decodable>(_ type: T.Type, status: HTTPStatus = .ok) -> Reply {
        Reply(status, Schema.of(type))
    }
    public static func page<T: Decodable>(of type: T.Type) -> Reply { Reply(.ok, Schema.page(Schema.of(type))) }
    public static let noContent = Reply(.noContent)
    /// An event stream (its events described in the summary); JSON clients get `schema` instead.
    public static func events(_ schema: JSONValue? = nil, status: HTTPStatus = .ok) -> Reply {
        Reply(status, schema, contentType: "text/event-stream")
    }
    public static let webSocket = Reply(HTTPStatus(101), nil, contentType: "application/octet-stream")
    public static let text = Reply(.ok, nil, contentType: "text/plain")
}

/// Whether a route's JSON body may be left out (then it decodes as `{}`).
public enum BodyPresence: Sendable { case required, optional }

/// The registration surface modules see: every route states its permission, body limit and reply,
/// and is documented from the same declaration. A permission no module registered is recorded as
/// a problem, and the application refuses to start (a typo must refuse access, never grant it).
public final class Routes: @unchecked Sendable {
    public let router: Router
    let catalog: PermissionCatalog
    public private(set) var docs: [RouteDoc] = []
    /// Declarations the application must refuse (unregistered permissions).
    public private(set) var problems: [String] = []

    public init(router: Router, catalog: PermissionCatalog) {
        self.router = router
        self.catalog = catalog
    }

    /// A view whose routes carry `tags` in the document.
    public func tagged(_ tags: String...) -> RouteTable { RouteTable(routes: self, tags: tags) }

    /// Registers a route whose handler reads the request itself.
    public func add(
        _ method: HTTPMethod, _ path: String, _ permission: Permission, _ summary: String, tags: [String],
        query: [QueryParam] = [], reply: Reply = .json(), bodyLimit: Int? = nil, streamBody: Bool = false,
        requestSchema: JSONValue? = nil, bodyRequired: Bool = true, _ handler: @escaping Handler
    ) {
        if !permission.isSpecial && catalog.permission(permission.name) == nil {
            problems.append(
                "\(method.rawValue) \(path) uses the permission '\(permission.name)', which no module registers")
        }
        router.on(
            method, path,
            RouteMetadata(
                permission: permission.name, bodyLimit: bodyLimit, streamBody: streamBody,
                summary: summary, tags: tags), handler)
        docs.append(
            RouteDoc(
                method: method.rawValue, path: path, permission: permission.name, summary: summary, tags: tags,
                query: query, requestBody: requestSchema, bodyRequired: bodyRequired,
                successStatus: reply.status.code, responseBody: reply.schema, responseContentType: reply.contentType))
    }
}

/// Routes of one module: the tag is given once.
public struct RouteTable: Sendable {
    let routes: Routes
    let tags: [String]

    /// A route without a JSON body.
    public func add(
        _ method: HTTPMethod, _ path: String, _ permission: Permission, _ summary: String,
        query: [QueryParam] = [], reply: Reply = .json(), _ handler: @escaping Handler
    ) {
        routes.add(method, path, permission, summary, tags: tags, query: query, reply: reply, handler)
    }

    /// A route with a JSON body of type `Body`, decoded (within `limit` bytes) before the handler
    /// runs; the document's request schema is read from the same type.
    public func add<Body: Decodable & Sendable>(
        _ method: HTTPMethod, _ path: String, _ permission: Permission, _ summary: String,
        query: [QueryParam] = [], limit: Int, body: BodyPresence = .required,
        reply: Reply = .json(),
        _ handler: @escaping @Sendable (Request, RequestContext, Body) async throws -> Response
    ) {
        let optional = body == .optional
        routes.add(
            method, path, permission, summary, tags: tags, query: query, reply: reply, bodyLimit: limit,
            requestSchema: Schema.of(Body.self), bodyRequired: !optional
        ) { req, ctx in
            try await handler(req, ctx, try await req.decode(Body.self, context: ctx, emptyAllowed: optional))
        }
    }
}
