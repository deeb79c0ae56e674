import Foundation
import KilnHTTP
import KilnStore
import Synchronization

/// One persisted event of a topic; `seq` counts from 1 per topic.
public struct BusEvent: Sendable, Equatable {
    public let topic: String
    public let seq: Int
    public let type: String
    /// JSON text.
    public let data: String
    public let createdAt: Date
}

/// In-process pub/sub whose topics keep a persisted sequence: a subscriber resumes from any
/// cursor (after the producer finished, or after a restart) and then receives live events.
/// Each subscriber has a bounded buffer; one that falls too far behind is ended with
/// `SubscriberOverflow` and can resume from its cursor.
public final class EventBus: Sendable {
    public static let migrations = [
        Migration(module: "core.events", version: 1, name: "events", sql: """
            CREATE TABLE events (
                topic TEXT NOT NULL,
                seq INTEGER NOT NULL,
                type TEXT NOT NULL,
                data TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                PRIMARY KEY (topic, seq)
            ) WITHOUT ROWID;
            """),
    ]

    public struct SubscriberOverflow: Error {}

    final class Subscriber: Sendable {
        let id: Int
        let continuation: AsyncThrowingStream<BusEvent, any Error>.Continuation
        init(id: Int, continuation: AsyncThrowingStream<BusEvent, any Error>.Continuation) { self.id = id; self.continuation = continuation }
    }

    let db: Database
    let clock: any Clock
    let bufferLimit: Int
    private let subscribers = Mutex<(next: Int, byTopic: [String: [Subscriber]])>((0, [:]))

    public init(db: Database, clock: any Clock = SystemClock(), bufferLimit: Int = 1024) {
        self.db = db; self.clock = clock; self.bufferLimit = bufferLimit
    }

    /// Live subscriber count (for /metrics).
    public var subscriberCount: Int { subscribers.withLock { $0.byTopic.values.reduce(0) { $0 + $1.count } } }

    /// Appends an event to `topic` (durably) and delivers it to live subscribers. Returns its seq.
    @discardableResult
    public func publish(topic: String, type: String, data: String) async throws -> Int {
        let now = clock.now()
        let seq = try await db.write { tx -> Int in
            let next = (try tx.first("SELECT MAX(seq) AS m FROM events WHERE topic = ?", topic)?.int("m") ?? 0) + 1
            try tx.run("INSERT INTO events (topic, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)", topic, next, type, data, now)
            return next
        }
        deliver(BusEvent(topic: topic, seq: seq, type: type, data: data, createdAt: now))
        return seq
    }

    @discardableResult
    public func publish<T: Encodable>(topic: String, type: String, value: T) async throws -> Int {
        try await publish(topic: topic, type: type, data: String(decoding: try JSONCoding.encode(value), as: UTF8.self))
    }

    private func deliver(_ e: BusEvent) {
        let subs = subscribers.withLock { $0.byTopic[e.topic] ?? [] }
        for s in subs {
            if case .dropped = s.continuation.yield(e) {
                s.continuation.finish(throwing: SubscriberOverflow())
            }
        }
    }

    /// Events of `topic` after `cursor` (0 = from the start): the stored ones, then live ones,
    /// in seq order without gaps or duplicates.
    public func subscribe(topic: String, after cursor: Int) -> AsyncThrowingStream<BusEvent, any Error> {
        let (live, liveCont) = AsyncThrowingStream<BusEvent, any Error>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        let id = subscribers.withLock { s -> Int in
            s.next += 1
            s.byTopic[topic, default: []].append(Subscriber(id: s.next, continuation: liveCont))
            return s.next
        }
        let (out, outCont) = AsyncThrowingStream<BusEvent, any Error>.makeStream(bufferingPolicy: .unbounded)
        let db = self.db
        let task = Task {
            var last = cursor
            do {
                // Replay in pages, so a long history never sits in memory at once.
                while true {
                    let after = last
                    let page = try await db.read { tx in
                        try tx.query("SELECT seq, type, data, created_at FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT 500", topic, after)
                    }
                    for r in page {
                        let e = BusEvent(topic: topic, seq: r.int("seq") ?? 0, type: r.string("type") ?? "", data: r.string("data") ?? "null",
                                         createdAt: r.date("created_at") ?? Date())
                        last = e.seq
                        outCont.yield(e)
                    }
                    if page.count < 500 { break }
                }
                for try await e in live where e.seq > last {
                    last = e.seq
                    outCont.yield(e)
                }
                outCont.finish()
            } catch {
                outCont.finish(throwing: error)
            }
        }
        outCont.onTermination = { [weak self] _ in
            task.cancel()
            liveCont.finish()
            self?.subscribers.withLock { s in s.byTopic[topic]?.removeAll { $0.id == id }; if s.byTopic[topic]?.isEmpty == true { s.byTopic[topic] = nil } }
        }
        return out
    }

    /// The newest seq of `topic` (0 when empty).
    public func head(topic: String) async throws -> Int {
        try await db.read { try $0.first("SELECT MAX(seq) AS m FROM events WHERE topic = ?", topic)?.int("m") ?? 0 }
    }

    /// An SSE response streaming `topic` from the request's cursor (`Last-Event-ID` or `?cursor=`);
    /// ends after an event whose type is in `endTypes` (a finished job, say).
    public func sse(topic: String, request: Request, endTypes: Set<String> = []) throws -> Response {
        let cursor = try SSE.resumeCursor(request) ?? 0
        return Response.sse { sse in
            for try await e in self.subscribe(topic: topic, after: cursor) {
                try await sse.send(id: String(e.seq), event: e.type, data: e.data)
                if endTypes.contains(e.type) { return }
            }
        }
    }
}
