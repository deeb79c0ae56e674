import Foundation

/// A response: status, headers and a body that is bytes, a stream, or a protocol upgrade.
public struct Response: Sendable {
    public var status: HTTPStatus
    public var headers: HTTPHeaders
    public var body: ResponseBody

    public init(status: HTTPStatus = .ok, headers: HTTPHeaders = HTTPHeaders(), body: ResponseBody = .bytes([])) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(
        _ s: String, status: HTTPStatus = .ok, contentType: String = "text/plain; charset=utf-8"
    ) -> Response {
        Response(status: status, headers: ["Content-Type": contentType], body: .bytes(Array(s.utf8)))
    }

    public static func json<T: Encodable>(_ value: T, status: HTTPStatus = .ok) throws -> Response {
        Response(
            status: status, headers: ["Content-Type": "application/json; charset=utf-8"],
            body: .bytes(try JSONCoding.encode(value)))
    }

    /// A JSON document built as a `JSONValue` (keys exactly as written).
    public static func json(_ value: JSONValue, status: HTTPStatus = .ok) -> Response {
        json(raw: Array(value.jsonText.utf8), status: status)
    }

    public static func json(raw: [UInt8], status: HTTPStatus = .ok) -> Response {
        Response(status: status, headers: ["Content-Type": "application/json; charset=utf-8"], body: .bytes(raw))
    }

    public static func noContent() -> Response { Response(status: .noContent) }

    /// A streamed body; written chunked (HTTP/1.1) unless the handler sets `Content-Length`.
    public static func stream(
        status: HTTPStatus = .ok, headers: HTTPHeaders = HTTPHeaders(),
        _ producer: @escaping @Sendable (any ResponseBodyWriter) async throws -> Void
    ) -> Response {
        Response(status: status, headers: headers, body: .stream(producer))
    }

    /// Adds a `Set-Cookie` header.
    public mutating func setCookie(_ cookie: SetCookie) { headers.add("Set-Cookie", cookie.headerValue) }
}

public enum ResponseBody: Sendable {
    case bytes([UInt8])
    case stream(@Sendable (any ResponseBodyWriter) async throws -> Void)
    /// Switch the connection to WebSocket after the 101 response (see `WebSocketUpgrade`).
    case webSocket(WebSocketSettings, @Sendable (WebSocket) async throws -> Void)
}

/// Where a streamed response body goes. `write` waits when the client reads slower than the
/// producer writes (back-pressure) and throws once the client has gone.
public protocol ResponseBodyWriter: Sendable {
    func write(_ bytes: [UInt8]) async throws
    /// Queues bytes without waiting, from any thread (fan-out to many streams). False, with nothing
    /// queued, when the client is gone or more than `limit` pushed bytes still wait to be sent.
    func push(_ bytes: [UInt8], limit: Int) -> Bool
}

extension ResponseBodyWriter {
    public func write(_ s: String) async throws { try await write(Array(s.utf8)) }
}

/// Thrown to a producer whose client went away.
public struct ConnectionClosedError: Error, Sendable {}
