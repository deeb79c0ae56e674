import Foundation
import KilnCore
import KilnHTTP

/// Accepts a well-formed `X-Request-Id` from the client or keeps the generated one; echoes it.
struct RequestIDMiddleware: Middleware {
    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        var ctx = context
        if let incoming = request.headers["X-Request-Id"], RequestID.isWellFormed(incoming) { ctx.requestID = incoming }
        do {
            var res = try await next(request, ctx)
            res.headers["X-Request-Id"] = ctx.requestID
            return res
        } catch {
            var res = Self.map(error, ctx)
            res.headers["X-Request-Id"] = ctx.requestID
            return res
        }
    }

    /// Any error becomes the shared error JSON; unknown ones are logged with detail, server-side only.
    static func map(_ error: any Error, _ ctx: RequestContext) -> Response {
        if !(error is any HTTPResponseError) && !(error is DecodingError) {
            ServerLog.error("internal error", ["request_id": .string(ctx.requestID), "route": .string(ctx.route?.pattern ?? ""),
                                               "error": .string(String(reflecting: error))])
        }
        return Response.error(error, requestID: ctx.requestID)
    }
}

/// One JSON line per request, and the request metrics. Never logs query strings or bodies.
struct AccessLogMiddleware: Middleware {
    let metrics: HTTPMetrics

    func handle(_ request: Request, context: RequestContext, next: Handler) async throws -> Response {
        let res: Response
        do { res = try await next(request, context) } catch { res = RequestIDMiddleware.map(error, context) }
        let seconds = Double(kilnMonotonicNanos() &- context.startNanos) / 1e9
        let route = context.route?.pattern.isEmpty == false ? context.route!.pattern : "unmatched"
        metrics.record(method: request.method.rawValue, route: route, status: res.status.code, seconds: seconds)
        if ServerLog.isEnabled(.info) {
            var bytes: JSONValue = .null
            if case .bytes(let b) = res.body { bytes = .int(b.count) }
            ServerLog.info("request", [
                "method": .string(request.method.rawValue), "route": .string(route), "status": .int(res.status.code),
                "bytes": bytes, "duration_ms": .double((seconds * 1e5).rounded() / 100), "request_id": .string(context.requestID),
                "principal": context[PrincipalKey.self].map { .string($0.logLabel) } ?? .null,
                "remote": .string(request.remoteAddress),
            ])
        }
        return res
    }
}
