/// An error that knows its HTTP response: status, a stable machine-readable code, a message
/// safe to show to the client, and optional details (the offending field for validation errors).
public protocol HTTPResponseError: Error {
    var status: HTTPStatus { get }
    var code: String { get }
    var message: String { get }
    var details: [String: JSONValue] { get }
    /// Extra response headers (`Allow`, `Retry-After`, …).
    var headers: HTTPHeaders { get }
}

extension HTTPResponseError {
    public var details: [String: JSONValue] { [:] }
    public var headers: HTTPHeaders { HTTPHeaders() }
}

/// The engine's concrete error type; domains may throw it or their own `HTTPResponseError`.
public struct HTTPError: HTTPResponseError, Sendable, CustomStringConvertible {
    public var status: HTTPStatus
    public var code: String
    public var message: String
    public var details: [String: JSONValue]
    public var headers: HTTPHeaders

    public init(
        _ status: HTTPStatus, code: String? = nil, message: String? = nil,
        details: [String: JSONValue] = [:], headers: HTTPHeaders = HTTPHeaders()
    ) {
        self.status = status
        self.code = code ?? HTTPError.defaultCode(for: status)
        self.message = message ?? status.reason
        self.details = details
        self.headers = headers
    }

    public var description: String { "HTTPError(\(status.code) \(code): \(message))" }

    /// The shared error codes (DESIGN.md) by status.
    public static func defaultCode(for status: HTTPStatus) -> String {
        switch status.code {
        case 401: "unauthenticated"
        case 402: "budget_exceeded"
        case 403: "forbidden"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 408: "timeout"
        case 409: "conflict"
        case 412: "precondition_failed"
        case 413: "payload_too_large"
        case 415: "unsupported_media_type"
        case 421: "misdirected"
        case 429: "rate_limited"
        case 503: "unavailable"
        case 504: "timeout"
        case 400..<500: "validation_failed"
        default: "internal"
        }
    }

    public static func badRequest(_ message: String, field: String? = nil) -> HTTPError {
        HTTPError(
            .badRequest, code: "validation_failed", message: message,
            details: field.map { ["field": .string($0)] } ?? [:])
    }
    public static func notFound(_ message: String = "Not found") -> HTTPError { HTTPError(.notFound, message: message) }
    public static func forbidden(_ message: String = "Forbidden") -> HTTPError {
        HTTPError(.forbidden, message: message)
    }
    public static func unavailable(_ message: String) -> HTTPError { HTTPError(.serviceUnavailable, message: message) }
}

/// Renders the shared error document:
/// `{"error":{"code":"…","message":"…","details":{…}},"request_id":"req_…"}`.
public func errorBody(code: String, message: String, details: [String: JSONValue], requestID: String) -> [UInt8] {
    var out = "{\"error\":{\"code\":"
    JSONValue.writeString(code, to: &out)
    out += ",\"message\":"
    JSONValue.writeString(message, to: &out)
    out += ",\"details\":"
    JSONValue.object(details).write(to: &out)
    out += "},\"request_id\":"
    JSONValue.writeString(requestID, to: &out)
    out += "}"
    return Array(out.utf8)
}

/// Not a failure: an answer decided deep inside a service (an action parked for an approval → 202),
/// thrown so that the routes it passes through need not know about it.
public protocol EarlyResponse: Error {
    var response: Response { get }
}

/// An error that a middleware passes on with headers its answer must carry (rate-limit counters…).
public struct ErrorWithHeaders: Error {
    public let error: any Error
    public let headers: HTTPHeaders
    public init(error: any Error, headers: HTTPHeaders) {
        self.error = error
        self.headers = headers
    }

    /// The error underneath any wrapping.
    public static func unwrap(_ error: any Error) -> any Error {
        var e = error
        while let w = e as? ErrorWithHeaders { e = w.error }
        return e
    }
}

extension Response {
    /// The shared error response for `error` (unknown errors become 500 `internal`, no detail leaked).
    public static func error(_ error: any Error, requestID: String) -> Response {
        if let early = error as? any EarlyResponse { return early.response }
        if let wrapped = error as? ErrorWithHeaders {
            var res = Response.error(wrapped.error, requestID: requestID)
            for f in wrapped.headers.fields { res.headers.replace(f.name, f.value) }
            return res
        }
        let e: any HTTPResponseError
        if let he = error as? any HTTPResponseError {
            e = he
        } else if error is DecodingError {
            e = decodingFailure(error as! DecodingError)
        } else {
            e = HTTPError(
                .internalServerError, code: "internal", message: "Internal server error (request \(requestID))")
        }
        var headers = e.headers
        headers["Content-Type"] = "application/json; charset=utf-8"
        return Response(
            status: e.status, headers: headers,
            body: .bytes(errorBody(code: e.code, message: e.message, details: e.details, requestID: requestID)))
    }
}

/// A `DecodingError` as a 400 naming the offending field by its coding path, in the snake_case
/// the client sent (Swift property names are camelCase).
func decodingFailure(_ error: DecodingError) -> HTTPError {
    func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? snakeCase($0.stringValue) }.joined(separator: ".")
            .replacingOccurrences(of: ".[", with: "[")
    }
    switch error {
    case .keyNotFound(let key, let ctx):
        let field = path(ctx.codingPath + [key])
        return .badRequest("Missing field '\(field)'", field: field)
    case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx):
        let field = path(ctx.codingPath)
        return .badRequest("Field '\(field)' has the wrong type", field: field)
    case .dataCorrupted(let ctx):
        let field = path(ctx.codingPath)
        return field.isEmpty
            ? .badRequest("Body is not valid JSON")
            : .badRequest("Field '\(field)' is invalid: \(ctx.debugDescription)", field: field)
    @unknown default:
        return .badRequest("Body could not be decoded")
    }
}

/// `userName` → `user_name` (what JSONEncoder's convertToSnakeCase does for simple names).
func snakeCase(_ s: String) -> String {
    var out = ""
    for (i, c) in s.enumerated() {
        if c.isUppercase {
            if i > 0 { out += "_" }
            out += c.lowercased()
        } else {
            out.append(c)
        }
    }
    return out
}
