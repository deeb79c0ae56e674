import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Accepts a well-formed `X-Request-Id` from the client or keeps the generated one; echoes it.
/// `--trusted-proxy CIDR`: a request from a trusted proxy comes from the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy (the nearest hop the proxies did not add).
/// From anyone else the header is ignored: a client may write anything in it.
struct ClientAddressMiddleware: Middleware {
    let trusted: [CIDR]

    func isTrusted(_ address: String) -> Bool {
        guard let ip = IPAddress(address) else { return false }
        return trusted.contains { $0.contains(ip) || ip.embeddedV4.map($0.contains) == true }
    }

    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        guard !trusted.isEmpty, isTrusted(request.remoteAddress) else { return try await next(request, context) }
        let hops = request.headers.values("X-Forwarded-For").flatMap { $0.split(separator: ",") }.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        var client = request.remoteAddress
        for hop in hops.reversed() {
            guard let ip = IPAddress(hop) else { break }
            client = ip.description
            if !isTrusted(client) { break }
        }
        var forwarded = request
        forwarded.remoteAddress = client
        return try await next(forwarded, context)
    }
}

struct RequestIDMiddleware: Middleware {
    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        var ctx = context
        if let incoming = request.headers["X-Request-Id"], RequestID.isWellFormed(incoming) { ctx.requestID = incoming }
        var res = try await next(request, ctx)
        res.headers["X-Request-Id"] = ctx.requestID
        return res
    }
}

/// The one place errors become responses: the shared error JSON for every error a handler or the
/// access check throws; unknown ones are logged with detail, server-side only, and answered 500.
/// A store error a domain did not handle says what it can without detail: a value the database
/// refuses (PostgreSQL's data exceptions: text with NUL characters, a number out of range) is 400,
/// a duplicate 409, an unreachable database 503.
struct ErrorMiddleware: Middleware {
    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        do { return try await next(request, context) } catch {
            let inner = ErrorWithHeaders.unwrap(error)
            if let store = inner as? StoreError, let shown = Self.shown(store) {
                return Response.error(shown, requestID: context.requestID)
            }
            if !(inner is any HTTPResponseError) && !(inner is DecodingError) && !(inner is any EarlyResponse) {
                ServerLog.error(
                    "internal error",
                    [
                        "request_id": .string(context.requestID), "route": .string(context.route?.pattern ?? ""),
                        "error": .string(String(reflecting: inner)),
                    ])
            }
            return Response.error(error, requestID: context.requestID)
        }
    }

    static func shown(_ e: StoreError) -> HTTPError? {
        if e.sqlstate?.hasPrefix("22") == true {
            return .badRequest("A value is not acceptable (text with NUL characters, or a number out of range)")
        }
        if e.isUniqueViolation { return .conflict("That exists already") }
        if e.isUnavailable { return HTTPError(.serviceUnavailable, message: "The database is unavailable; try again") }
        return nil
    }
}

/// One JSON line per request, and the request metrics. Never logs query strings or bodies.
struct AccessLogMiddleware: Middleware {
    let metrics: HTTPMetrics

    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        let res = try await next(request, context)
        let seconds = Double(kilnMonotonicNanos() &- context.startNanos) / 1e9
        let route = context.route?.pattern.isEmpty == false ? context.route!.pattern : "unmatched"
        metrics.record(method: request.method.rawValue, route: route, status: res.status.code, seconds: seconds)
        if ServerLog.isEnabled(.info) {
            var bytes: JSONValue = .null
            if case .bytes(let b) = res.body { bytes = .int(b.count) }
            ServerLog.info(
                "request",
                [
                    "method": .string(request.method.rawValue), "route": .string(route),
                    "status": .int(res.status.code),
                    "bytes": bytes, "duration_ms": .double((seconds * 1e5).rounded() / 100),
                    "request_id": .string(context.requestID),
                    "principal": context[PrincipalKey.self].map { .string($0.logLabel) } ?? .null,
                    "remote": .string(request.remoteAddress),
                ])
        }
        return res
    }
}

/// Headers every answer carries: pages get a Content-Security-Policy (no inline script, no framing,
/// no plugins), and every response says not to sniff types; under TLS (or behind a TLS proxy,
/// `--secure-cookies`) browsers are told to use HTTPS only.
struct SecurityHeadersMiddleware: Middleware {
    let strictTransport: Bool

    static let contentSecurityPolicy =
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; object-src 'none'; base-uri 'none'; form-action 'self'"

    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        var res = try await next(request, context)
        if res.headers["X-Content-Type-Options"] == nil { res.headers["X-Content-Type-Options"] = "nosniff" }
        if (res.headers["Content-Type"] ?? "").hasPrefix("text/html") {
            res.headers["Content-Security-Policy"] = Self.contentSecurityPolicy
            res.headers["X-Frame-Options"] = "DENY"
            res.headers["Referrer-Policy"] = "no-referrer"
        }
        if strictTransport { res.headers["Strict-Transport-Security"] = "max-age=31536000" }
        return res
    }
}
