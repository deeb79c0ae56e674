/// One server-sent event.
public struct SSEEvent: Sendable, Equatable {
    public var id: String?
    public var event: String?
    public var data: String
    public var retryMillis: Int?
    public init(id: String? = nil, event: String? = nil, data: String, retryMillis: Int? = nil) {
        self.id = id
        self.event = event
        self.data = data
        self.retryMillis = retryMillis
    }

    /// The wire form: `id:`, `event:`, one `data:` line per line of data, blank line.
    public var encoded: [UInt8] {
        // The usual event (one-line JSON data, plain id and type) is built without splitting.
        if retryMillis == nil, !SSEEvent.hasLineBreak(data), !SSEEvent.hasLineBreak(id ?? ""),
            !SSEEvent.hasLineBreak(event ?? "")
        {
            var out: [UInt8] = []
            out.reserveCapacity(data.utf8.count + (event?.utf8.count ?? 0) + 32)
            if let id {
                out += "id: ".utf8
                out += id.utf8
                out.append(10)
            }
            if let event {
                out += "event: ".utf8
                out += event.utf8
                out.append(10)
            }
            out += "data: ".utf8
            out += data.utf8
            out.append(10)
            out.append(10)
            return out
        }
        var s = ""
        if let id { s += "id: \(SSEEvent.oneLine(id))\n" }
        if let event { s += "event: \(SSEEvent.oneLine(event))\n" }
        if let retryMillis { s += "retry: \(retryMillis)\n" }
        var lines = data.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.isEmpty { lines = [""] }
        for l in lines { s += "data: \(l.replacingOccurrences(of: "\r", with: ""))\n" }
        s += "\n"
        return Array(s.utf8)
    }

    static func oneLine(_ s: String) -> String { s.filter { $0 != "\n" && $0 != "\r" } }
    static func hasLineBreak(_ s: String) -> Bool { s.utf8.contains { $0 == 10 || $0 == 13 } }
}

/// Writes events to an SSE response; each `send` is flushed as one write.
public struct SSEWriter: Sendable {
    let writer: any ResponseBodyWriter
    public func send(_ event: SSEEvent) async throws { try await writer.write(event.encoded) }
    /// Queues an encoded event without waiting (see `ResponseBodyWriter.push`).
    public func push(encoded bytes: [UInt8], limit: Int) -> Bool { writer.push(bytes, limit: limit) }
    public func send(id: String? = nil, event: String? = nil, data: String) async throws {
        try await send(SSEEvent(id: id, event: event, data: data))
    }
    /// A comment line (`: text`), ignored by clients; keeps proxies from timing out.
    public func comment(_ text: String) async throws {
        try await writer.write(Array(": \(SSEEvent.oneLine(text))\n\n".utf8))
    }
}

public enum SSE {
    /// The cursor a reconnecting client asks to resume after: `Last-Event-ID` or `?cursor=`.
    /// 400 when present but not a non-negative integer.
    public static func resumeCursor(_ request: Request) throws -> Int? {
        let raw = request.headers["Last-Event-ID"] ?? request.query["cursor"]
        guard let raw, !raw.isEmpty else { return nil }
        guard let n = Int(raw), n >= 0 else {
            throw HTTPError.badRequest("cursor must be a non-negative integer", field: "cursor")
        }
        return n
    }
}

extension Response {
    /// An SSE response: `producer` sends events; a heartbeat comment goes out every `heartbeat`;
    /// when the client goes away the producer's task is cancelled.
    public static func sse(
        headers: HTTPHeaders = HTTPHeaders(), heartbeat: Duration = .seconds(15),
        _ producer: @escaping @Sendable (SSEWriter) async throws -> Void
    ) -> Response {
        var h = headers
        h["Content-Type"] = "text/event-stream; charset=utf-8"
        h["Cache-Control"] = "no-cache"
        h["X-Accel-Buffering"] = "no"
        return Response(
            status: .ok, headers: h,
            body: .stream { writer in
                let sse = SSEWriter(writer: writer)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await producer(sse) }
                    group.addTask {
                        while true {
                            try await Task.sleep(for: heartbeat)
                            try await sse.comment("heartbeat")
                        }
                    }
                    defer { group.cancelAll() }
                    try await group.next()
                }
            })
    }
}
