/// What travels beside a request through middleware to the handler: request id, the matched
/// route, path parameters, and typed values that middleware adds (the authenticated principal…).
public struct RequestContext: Sendable {
    public var requestID: String
    /// The route that matched, if any (its pattern and metadata).
    public var route: RouteInfo?
    public var parameters: [String: String]
    /// Monotonic start time of the request, in nanoseconds.
    public var startNanos: UInt64
    private var values: [ObjectIdentifier: any Sendable] = [:]

    public init(requestID: String, route: RouteInfo? = nil, parameters: [String: String] = [:], startNanos: UInt64 = 0)
    {
        self.requestID = requestID
        self.route = route
        self.parameters = parameters
        self.startNanos = startNanos
    }

    /// A path parameter, or 400 naming it when absent.
    public func parameter(_ name: String) throws -> String {
        guard let v = parameters[name] else {
            throw HTTPError.badRequest("Missing path parameter '\(name)'", field: name)
        }
        return v
    }

    /// Typed storage keyed by a key type, for values middleware hands to handlers.
    public subscript<K: ContextKey>(_ key: K.Type) -> K.Value? {
        get { values[ObjectIdentifier(key)] as? K.Value }
        set { values[ObjectIdentifier(key)] = newValue }
    }
}

/// A key for `RequestContext` storage.
public protocol ContextKey {
    associatedtype Value: Sendable
}

/// The public face of a matched route.
public struct RouteInfo: Sendable {
    public let method: HTTPMethod
    public let pattern: String
    public let metadata: RouteMetadata
    enum Automatic: Sendable { case options, methodNotAllowed }
    let handler: Handler?
    let automatic: Automatic?
    /// The `Allow` value for automatic OPTIONS and 405 answers.
    let allow: String
}

/// What a route declares about itself; the app enumerates it (route table, OpenAPI, permissions).
public struct RouteMetadata: Sendable {
    /// The permission the route requires (`area:verb`), `nil` for public routes.
    public var permission: String?
    /// Request body limit in bytes; nil uses the server default.
    public var bodyLimit: Int?
    /// Hand the body to the handler as a stream instead of collecting it first.
    public var streamBody: Bool
    public var summary: String
    public var tags: [String]
    /// Free-form extras for other layers (OpenAPI schemas, rate-limit class…).
    public var extra: [String: String]

    public init(
        permission: String? = nil, bodyLimit: Int? = nil, streamBody: Bool = false, summary: String = "",
        tags: [String] = [], extra: [String: String] = [:]
    ) {
        self.permission = permission
        self.bodyLimit = bodyLimit
        self.streamBody = streamBody
        self.summary = summary
        self.tags = tags
        self.extra = extra
    }
}

public typealias Handler = @Sendable (Request, RequestContext) async throws -> Response

/// Wraps the handlers: request ids, logging, metrics, auth, rate limits… Built into a chain once.
public protocol Middleware: Sendable {
    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response
}

/// A middleware from a closure.
public struct ClosureMiddleware: Middleware {
    let body: @Sendable (Request, RequestContext, Handler) async throws -> Response
    public init(_ body: @escaping @Sendable (Request, RequestContext, Handler) async throws -> Response) {
        self.body = body
    }
    public func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        try await body(request, context, next)
    }
}
