/// A registered route.
public struct Route: Sendable {
    public let method: HTTPMethod
    /// The pattern as registered: `/api/items/:id`, `/files/*rest`.
    public let pattern: String
    public let metadata: RouteMetadata
    let handler: Handler
}

/// Routes by method and path on decoded segments, with `:param` and trailing `*rest` segments.
/// Mutable while the app registers routes; `responder()` freezes it.
public final class Router: @unchecked Sendable {
    final class Node {
        var statics: [String: Node] = [:]
        var param: (name: String, node: Node)?
        var catchAll: (name: String, routes: [HTTPMethod: Route])?
        var routes: [HTTPMethod: Route] = [:]
    }

    let root = Node()
    public private(set) var routes: [Route] = []
    public private(set) var middlewares: [any Middleware] = []
    /// Answers GET/HEAD requests that match no route (static files, SPA fallback); 404 otherwise.
    public var fallback: Handler?

    public init() {}

    public func add(middleware: any Middleware) { middlewares.append(middleware) }

    /// Registers `handler` for `method` on `pattern`. Registering the same method and pattern twice is a programming error.
    public func on(
        _ method: HTTPMethod, _ pattern: String, _ metadata: RouteMetadata = RouteMetadata(),
        _ handler: @escaping Handler
    ) {
        let route = Route(method: method, pattern: pattern, metadata: metadata, handler: handler)
        var node = root
        let parts = pattern.split(separator: "/", omittingEmptySubsequences: true)
        for (i, part) in parts.enumerated() {
            if part.hasPrefix("*") {
                precondition(i == parts.count - 1, "*rest must be the last segment in \(pattern)")
                var c = node.catchAll ?? (name: String(part.dropFirst()), routes: [:])
                precondition(c.routes[method] == nil, "duplicate route \(method) \(pattern)")
                c.routes[method] = route
                node.catchAll = c
                routes.append(route)
                return
            } else if part.hasPrefix(":") {
                let name = String(part.dropFirst())
                if let p = node.param {
                    precondition(p.name == name, "conflicting parameter names at \(pattern)")
                    node = p.node
                } else {
                    let n = Node()
                    node.param = (name, n)
                    node = n
                }
            } else {
                let key = String(part)
                if let n = node.statics[key] {
                    node = n
                } else {
                    let n = Node()
                    node.statics[key] = n
                    node = n
                }
            }
        }
        precondition(node.routes[method] == nil, "duplicate route \(method) \(pattern)")
        node.routes[method] = route
        routes.append(route)
    }

    public func get(_ p: String, _ m: RouteMetadata = RouteMetadata(), _ h: @escaping Handler) { on(.GET, p, m, h) }
    public func post(_ p: String, _ m: RouteMetadata = RouteMetadata(), _ h: @escaping Handler) { on(.POST, p, m, h) }
    public func put(_ p: String, _ m: RouteMetadata = RouteMetadata(), _ h: @escaping Handler) { on(.PUT, p, m, h) }
    public func patch(_ p: String, _ m: RouteMetadata = RouteMetadata(), _ h: @escaping Handler) { on(.PATCH, p, m, h) }
    public func delete(_ p: String, _ m: RouteMetadata = RouteMetadata(), _ h: @escaping Handler) {
        on(.DELETE, p, m, h)
    }

    public enum Match {
        case found(Route, [String: String])
        /// A route exists at this path for other methods.
        case methodNotAllowed(allow: [String])
        /// OPTIONS on a path with routes and no explicit OPTIONS handler.
        case options(allow: [String])
        case notFound
    }

    /// Finds the route for `method` and decoded path `segments`.
    func match(_ method: HTTPMethod, _ segments: [String]) -> Match {
        var params: [String: String] = [:]
        guard let methods = find(root, segments, 0, &params) else { return .notFound }
        if let r = methods[method] { return .found(r, params) }
        if method == .HEAD, let r = methods[.GET] { return .found(r, params) }
        var allow = Set(methods.keys.map(\.rawValue))
        if allow.contains("GET") { allow.insert("HEAD") }
        allow.insert("OPTIONS")
        let sorted = allow.sorted()
        return method == .OPTIONS ? .options(allow: sorted) : .methodNotAllowed(allow: sorted)
    }

    private func find(
        _ node: Node, _ segs: [String], _ i: Int, _ params: inout [String: String]
    ) -> [HTTPMethod: Route]? {
        if i == segs.count {
            if !node.routes.isEmpty { return node.routes }
            return nil
        }
        let seg = segs[i]
        if let n = node.statics[seg], let r = find(n, segs, i + 1, &params) { return r }
        if let p = node.param {
            if let r = find(p.node, segs, i + 1, &params) {
                params[p.name] = seg
                return r
            }
        }
        if let c = node.catchAll, !c.routes.isEmpty {
            params[c.name] = segs[i...].joined(separator: "/")
            return c.routes
        }
        return nil
    }

    /// Freezes the table and builds the middleware chain once.
    public func responder() -> RouterResponder { RouterResponder(router: self) }
}

/// The frozen router plus its middleware chain; what the server calls for every request.
public struct RouterResponder: Sendable {
    let router: Router
    let chain: Handler

    init(router: Router) {
        self.router = router
        let fallback = router.fallback
        let dispatch: Handler = { request, context in
            guard let route = context.route else {
                if request.method == .OPTIONS && request.path == "*" {
                    return Response(
                        status: .noContent, headers: ["Allow": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"])
                }
                if let fallback, request.method == .GET || request.method == .HEAD {
                    return try await fallback(request, context)
                }
                throw HTTPError(.notFound, message: "No route for \(request.method) \(request.path)")
            }
            switch route.automatic {
            case .options:
                return Response(status: .noContent, headers: ["Allow": route.allow])
            case .methodNotAllowed:
                throw HTTPError(
                    .methodNotAllowed, message: "Method \(request.method) is not allowed here",
                    details: ["allow": .string(route.allow)], headers: ["Allow": route.allow])
            case nil:
                guard let handler = route.handler else { throw HTTPError(.notFound) }
                return try await handler(request, context)
            }
        }
        var next = dispatch
        for m in router.middlewares.reversed() {
            let inner = next
            next = { req, ctx in try await m.handle(req, context: ctx, next: inner) }
        }
        chain = next
    }

    /// Every registered route (for the route table and OpenAPI).
    public var routes: [Route] { router.routes }

    /// Resolves method and path to what the connection needs before reading the body.
    public func resolve(_ method: HTTPMethod, _ segments: [String]) -> (RouteInfo?, [String: String]) {
        switch router.match(method, segments) {
        case .found(let r, let params):
            return (
                RouteInfo(
                    method: r.method, pattern: r.pattern, metadata: r.metadata, handler: r.handler, automatic: nil,
                    allow: ""), params
            )
        case .methodNotAllowed(let allow):
            return (
                RouteInfo(
                    method: method, pattern: "(405)", metadata: RouteMetadata(), handler: nil,
                    automatic: .methodNotAllowed, allow: allow.joined(separator: ", ")), [:]
            )
        case .options(let allow):
            return (
                RouteInfo(
                    method: method, pattern: "(options)", metadata: RouteMetadata(), handler: nil,
                    automatic: .options, allow: allow.joined(separator: ", ")), [:]
            )
        case .notFound:
            return (nil, [:])
        }
    }

    /// Runs the chain; never throws: errors become the shared error response.
    public func respond(_ request: Request, context: RequestContext) async -> Response {
        do { return try await chain(request, context) } catch {
            let inner = ErrorWithHeaders.unwrap(error)
            if !(inner is any HTTPResponseError) && !(inner is DecodingError) && !(inner is CancellationError)
                && !(inner is any EarlyResponse)
            {
                ServerLog.error(
                    "unhandled error",
                    ["request_id": .string(context.requestID), "error": .string(String(describing: error))])
            }
            return Response.error(error, requestID: context.requestID)
        }
    }

    /// In-process dispatch (tests, internal calls): resolves, builds a context and responds.
    public func handle(_ request: Request, requestID: String = RequestID.make()) async -> Response {
        let (route, params) = resolve(request.method, request.pathSegments)
        let ctx = RequestContext(requestID: requestID, route: route, parameters: params, startNanos: monotonicNanos())
        return await respond(request, context: ctx)
    }
}
