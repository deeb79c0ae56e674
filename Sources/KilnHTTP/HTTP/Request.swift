import Foundation

/// A parsed HTTP request as handlers see it.
public struct Request: Sendable {
    public let method: HTTPMethod
    /// The request-target exactly as received.
    public let target: String
    /// The path part of the target, still percent-encoded.
    public let path: String
    /// The path split on `/` and percent-decoded (empty segments dropped).
    public let pathSegments: [String]
    public let query: QueryParameters
    public let version: HTTPVersion
    public var headers: HTTPHeaders
    public var body: RequestBody
    /// The client's IP address: the peer's, or behind a trusted proxy the address it forwarded for
    /// (set once, by the application's first middleware).
    public var remoteAddress: String
    /// True when the request came over TLS.
    public let isSecure: Bool

    public init(
        method: HTTPMethod, target: String, path: String, pathSegments: [String], query: QueryParameters,
        version: HTTPVersion = .http1_1, headers: HTTPHeaders = HTTPHeaders(), body: RequestBody = .buffer([]),
        remoteAddress: String = "", isSecure: Bool = false
    ) {
        self.method = method
        self.target = target
        self.path = path
        self.pathSegments = pathSegments
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
        self.isSecure = isSecure
    }

    /// Builds a request from a target string (for in-process tests and internal dispatch).
    public init(method: HTTPMethod, target: String, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) throws {
        let parts = try RequestTarget.parse(target)
        self.init(
            method: method, target: target, path: parts.path, pathSegments: parts.segments, query: parts.query,
            headers: headers, body: .buffer(body), remoteAddress: "127.0.0.1")
    }

    /// Cookies sent with the request (`Cookie` header), first value per name.
    public var cookies: [String: String] { Cookies.parse(headers.values("Cookie")) }

    /// The media type of the body (`Content-Type` without parameters), lowercased.
    public var mediaType: String? {
        headers["Content-Type"].map {
            $0.split(separator: ";", maxSplits: 1)[0].trimmingCharacters(in: .whitespaces).lowercased()
        }
    }

    /// True when the client asked for JSON rather than an event stream (`Accept: application/json`):
    /// routes that can stream answer such clients at once with an id to follow later.
    public var prefersJSON: Bool {
        let accept = headers["Accept"] ?? ""
        return accept.contains("application/json") && !accept.contains("text/event-stream")
    }

    /// The whole body as bytes, within the route's body limit (a streamed body is collected up to it).
    public func bodyBytes(context: RequestContext) async throws -> [UInt8] {
        switch body {
        case .buffer(let b): return b
        case .stream(let s): return try await s.collect(upTo: context.route?.metadata.bodyLimit ?? 10 << 20)
        }
    }

    /// Decodes the JSON body (read within the route's body limit): 415 when the Content-Type is not
    /// JSON, 400 naming the field when it does not decode. With `emptyAllowed`, no body at all
    /// decodes as `{}` (for routes whose every field is optional).
    public func decode<T: Decodable>(
        _ type: T.Type, context: RequestContext, emptyAllowed: Bool = false
    ) async throws -> T {
        let bytes = try await bodyBytes(context: context)
        if bytes.isEmpty && emptyAllowed { return try JSONCoding.decode(type, from: Array("{}".utf8)) }
        guard let mt = mediaType, mt == "application/json" || mt.hasSuffix("+json") else {
            throw HTTPError(.unsupportedMediaType, message: "Content-Type must be application/json")
        }
        if bytes.isEmpty { throw HTTPError.badRequest("Request body is empty; a JSON object is required") }
        return try JSONCoding.decode(type, from: bytes)
    }
}

/// A request body: already collected (the default) or streamed for routes that ask for it.
public enum RequestBody: Sendable {
    case buffer([UInt8])
    case stream(RequestBodyStream)
}

/// Query parameters in order; values percent-decoded with `+` as space.
public struct QueryParameters: Sendable, Sequence {
    public private(set) var items: [(name: String, value: String)]
    public init(_ items: [(name: String, value: String)] = []) { self.items = items }
    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { items.makeIterator() }
    public subscript(name: String) -> String? { items.first { $0.name == name }?.value }
    public func all(_ name: String) -> [String] { items.filter { $0.name == name }.map(\.value) }
    public var isEmpty: Bool { items.isEmpty }

    /// Parses `a=1&b=x+y`; nil when a percent-escape is invalid or decodes to invalid UTF-8.
    public static func parse(_ raw: Substring) -> QueryParameters? {
        var items: [(String, String)] = []
        for part in raw.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = percentDecode(kv[0], plusAsSpace: true) else { return nil }
            let v = kv.count > 1 ? percentDecode(kv[1], plusAsSpace: true) : ""
            guard let v else { return nil }
            items.append((k, v))
        }
        return QueryParameters(items)
    }
}

/// Percent-decodes `s`; nil on an invalid escape, a NUL byte, or bytes that are not UTF-8.
public func percentDecode(_ s: Substring, plusAsSpace: Bool = false) -> String? {
    let u = s.utf8
    if !u.contains(37) && !(plusAsSpace && u.contains(43)) {
        return u.contains(0) ? nil : String(s)
    }
    var out = [UInt8]()
    out.reserveCapacity(u.count)
    var i = u.startIndex
    while i < u.endIndex {
        let c = u[i]
        if c == 37 {
            let h = u.index(after: i)
            guard h < u.endIndex, u.index(after: h) < u.endIndex,
                let hi = hexValue(u[h]), let lo = hexValue(u[u.index(after: h)])
            else { return nil }
            let b = hi << 4 | lo
            if b == 0 { return nil }
            out.append(b)
            i = u.index(h, offsetBy: 2)
        } else {
            out.append(plusAsSpace && c == 43 ? 32 : c)
            i = u.index(after: i)
        }
    }
    return String(validating: out, as: UTF8.self)
}

/// Splits a request-target into path, decoded segments and query.
public enum RequestTarget {
    public struct Parts: Sendable {
        public var path: String
        public var segments: [String]
        public var query: QueryParameters
    }

    public static func parse(_ target: String) throws(HTTPError) -> Parts {
        var t = Substring(target)
        if t.hasPrefix("http://") || t.hasPrefix("https://") {
            // absolute-form: drop scheme and authority
            let afterScheme = t[t.index(t.firstIndex(of: ":")!, offsetBy: 3)...]
            t = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }).map { afterScheme[$0...] } ?? "/"
            if t.hasPrefix("?") { t = "/" + t }
        }
        if t == "*" { return Parts(path: "*", segments: [], query: QueryParameters()) }
        guard t.hasPrefix("/") else { throw HTTPError.badRequest("Invalid request target") }
        var pathPart = t
        var queryPart: Substring = ""
        if let q = t.firstIndex(of: "?") {
            pathPart = t[..<q]
            queryPart = t[t.index(after: q)...]
        }
        if let h = queryPart.firstIndex(of: "#") { queryPart = queryPart[..<h] }
        var segments: [String] = []
        for raw in pathPart.split(separator: "/", omittingEmptySubsequences: true) {
            guard let seg = percentDecode(raw) else { throw HTTPError.badRequest("Invalid percent-encoding in path") }
            if seg == "." { continue }
            if seg == ".." { throw HTTPError.badRequest("Path may not contain '..' segments") }
            segments.append(seg)
        }
        guard let query = QueryParameters.parse(queryPart) else {
            throw HTTPError.badRequest("Invalid percent-encoding in query")
        }
        return Parts(path: String(pathPart), segments: segments, query: query)
    }
}
