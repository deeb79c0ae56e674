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

    /// The event on an SSE stream (`id` is the seq).
    var sseBytes: [UInt8] { SSEEvent(id: String(seq), event: type, data: data).encoded }
}

extension BusEvent {
    /// A stored event of `topic`: a row of `EventBus.replayPage` (an extension keeps the memberwise init).
    init(topic: String, row r: Row) {
        self.init(
            topic: topic, seq: r.int("seq") ?? 0, type: r.string("type") ?? "", data: r.string("data") ?? "null",
            createdAt: r.date("created_at") ?? Date())
    }
}

/// Who and where an event is about, given by its publisher so that observers (the activity feed)
/// can tell which workspace an event belongs to without reading every domain's tables.
/// Not stored with the event: replayed events carry none.
public struct EventScope: Sendable, Equatable {
    public let wsID: String
    /// The user who acted (nil: the system, a restart say).
    public let actorID: String?
    public let projectID: String?
    public init(wsID: String, actorID: String?, projectID: String? = nil) {
        self.wsID = wsID
        self.actorID = actorID
        self.projectID = projectID
    }
}

/// In-process pub/sub whose topics keep a persisted sequence: a subscriber resumes from any
/// cursor (after the producer finished, or after a restart) and then receives live events.
/// Each subscriber has a bounded buffer; one that falls too far behind is ended with
/// `SubscriberOverflow` and can resume from its cursor.
public final class EventBus: Sendable {
    public static let migrations = [
        Migration(
            module: "core.events", version: 1, name: "events",
            sql: """
                CREATE TABLE events (
                    topic TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    type TEXT NOT NULL,
                    data TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (topic, seq)
                ) WITHOUT ROWID;
                """)
    ]

    public struct SubscriberOverflow: Error {}

    final class Subscriber: Sendable {
        let id: Int
        let continuation: AsyncThrowingStream<BusEvent, any Error>.Continuation
        init(id: Int, continuation: AsyncThrowingStream<BusEvent, any Error>.Continuation) {
            self.id = id
            self.continuation = continuation
        }
    }

    /// An SSE response in the live phase: `publish` queues the event's bytes straight onto the
    /// client's connection (encoded once per event, no task per subscriber woken), in seq order.
    final class Sink: Sendable {
        enum Phase {
            /// Replaying from the store; live events wait here.
            case buffering([BusEvent])
            case pushing(last: Int)
            case ended(overflow: Bool)
        }
        let id: Int
        let writer: SSEWriter
        let endTypes: Set<String>
        let bufferLimit: Int
        /// Rewrites an event's data for this stream only (nil: every stream gets the shared bytes).
        let rewrite: (@Sendable (BusEvent) -> String)?
        let phase = Mutex<Phase>(.buffering([]))
        let waiter = Mutex<CheckedContinuation<Void, Never>?>(nil)
        /// Bytes a client may leave unread before it is cut off (it resumes with Last-Event-ID).
        static let backlogLimit = 8 << 20

        init(
            id: Int, writer: SSEWriter, endTypes: Set<String>, bufferLimit: Int,
            rewrite: (@Sendable (BusEvent) -> String)?
        ) {
            self.id = id
            self.writer = writer
            self.endTypes = endTypes
            self.bufferLimit = bufferLimit
            self.rewrite = rewrite
        }

        /// The event as this stream sends it.
        func wire(_ e: BusEvent, shared: [UInt8]? = nil) -> [UInt8] {
            guard let rewrite else { return shared ?? e.sseBytes }
            return SSEEvent(id: String(e.seq), event: e.type, data: rewrite(e)).encoded
        }

        /// Called by `publish` with the event's bytes.
        func deliver(_ e: BusEvent, _ wire: [UInt8]) {
            let ended = phase.withLock { p -> Bool in
                switch p {
                case .buffering(var list):
                    list.append(e)
                    p = list.count > bufferLimit ? .ended(overflow: true) : .buffering(list)
                case .pushing(let last):
                    guard e.seq > last else { return false }
                    p = push(e, self.wire(e, shared: wire))
                case .ended:
                    return false
                }
                if case .ended = p { return true }
                return false
            }
            if ended { wake() }
        }

        /// Ends buffering: queues the buffered events newer than `last` (under the lock, so no live
        /// event can overtake them), then pushes live.
        func startPushing(after last: Int) {
            let ended = phase.withLock { p -> Bool in
                guard case .buffering(let list) = p else { return true }
                p = .pushing(last: last)
                for e in list where e.seq > last {
                    p = push(e, wire(e))
                    if case .ended = p { return true }
                }
                return false
            }
            if ended { wake() }
        }

        private func push(_ e: BusEvent, _ wire: [UInt8]) -> Phase {
            guard writer.push(encoded: wire, limit: Sink.backlogLimit) else { return .ended(overflow: true) }
            return endTypes.contains(e.type) ? .ended(overflow: false) : .pushing(last: e.seq)
        }

        func end() {
            phase.withLock { p in
                if case .ended = p { return }
                p = .ended(overflow: false)
            }
            wake()
        }

        private func wake() {
            waiter.withLock { w -> CheckedContinuation<Void, Never>? in
                defer { w = nil }
                return w
            }?.resume()
        }

        /// Waits until the stream is over; true when it ended because the client fell behind.
        func wait() async -> Bool {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let over = phase.withLock { p -> Bool in
                    if case .ended = p { return true }
                    waiter.withLock { $0 = c }
                    return false
                }
                if over { c.resume() }
            }
            return phase.withLock {
                if case .ended(let overflow) = $0 { return overflow }
                return false
            }
        }
    }

    let db: Database
    let clock: any Clock
    let bufferLimit: Int
    /// Called with every scoped event once it is stored, in publish order per topic (feeds, notifications).
    private let observers = Mutex<[@Sendable (BusEvent, EventScope) -> Void]>([])
    private let subscribers = Mutex<(next: Int, byTopic: [String: [Subscriber]], sinks: [String: [Sink]])>(
        (0, [:], [:]))
    /// On PostgreSQL, events reach this instance's subscribers through NOTIFY (see `relay`).
    private let listener = Mutex<PostgresListener?>(nil)
    /// The last seq relayed per topic that has subscribers here.
    private let relayed = Mutex<[String: Int]>([:])
    /// On PostgreSQL, the last seq this instance published per watched topic, until its listener has
    /// relayed it (`settle`).
    private let unrelayed = Mutex<[String: Int]>([:])
    static let channel = "kiln_events"

    public init(db: Database, clock: any Clock = SystemClock(), bufferLimit: Int = 1024) throws {
        self.db = db
        self.clock = clock
        self.bufferLimit = bufferLimit
        let l = try db.listen(
            channel: EventBus.channel, onNotify: { [weak self] n in self?.relay(n.payload) },
            onReconnect: { [weak self] in self?.catchUp() })
        listener.withLock { $0 = l }
    }

    /// Stops following other instances' events.
    public func close() { listener.withLock { $0?.stop() } }

    /// Waits (at most `timeout` seconds) until the events this instance published have reached its own
    /// subscribers. On SQLite they reach them within `publish`; on PostgreSQL through the listener, a
    /// moment later: a shutdown ending the streams right after the last events were published would
    /// cut them off before those events.
    public func settle(timeout: Double) async {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let relayedNow = relayed.withLock { $0 }
            let watched = subscribers.withLock { Set($0.byTopic.keys).union($0.sinks.keys) }
            let pending = unrelayed.withLock { u -> Bool in
                u = u.filter { topic, seq in (relayedNow[topic] ?? 0) < seq && watched.contains(topic) }
                return !u.isEmpty
            }
            if !pending { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Several instances on one PostgreSQL: an event is stored and announced with NOTIFY in the
    /// same transaction, and every instance (the publisher too) hands it to its subscribers from
    /// its listener, one thread, in commit order, which per topic is seq order. The announcement
    /// carries the event when it fits (8000 bytes is NOTIFY's limit), else only topic and seq; a
    /// subscriber past a gap (a reconnect lost announcements) is fed from the table first.
    private func relay(_ payload: String) {
        guard let v = (try? JSONValue(parsing: payload))?.objectValue, let topic = v["t"]?.stringValue,
            let seq = v["s"]?.intValue
        else { return }
        let watched = subscribers.withLock { $0.byTopic[topic] != nil || $0.sinks[topic] != nil }
        guard watched else {
            relayed.withLock { $0[topic] = nil }
            unrelayed.withLock { $0[topic] = nil }
            return
        }
        let last = relayed.withLock { $0[topic] }
        if let last, seq <= last { return }
        if let type = v["y"]?.stringValue, let data = v["d"]?.stringValue, last == nil || last! + 1 == seq {
            let at = Date(timeIntervalSince1970: Double(v["c"]?.intValue ?? 0) / 1000)
            relayed.withLock { $0[topic] = seq }
            deliver(BusEvent(topic: topic, seq: seq, type: type, data: data, createdAt: at))
            return
        }
        feed(topic, after: last ?? seq - 1)
    }

    /// Delivers `topic`'s stored events after `cursor` (from the listener thread).
    private func feed(_ topic: String, after cursor: Int) {
        var after = cursor
        while let page = try? db.readSync({ tx in try tx.query(EventBus.replayPage, topic, after) }), !page.isEmpty {
            for r in page {
                let e = BusEvent(topic: topic, row: r)
                after = e.seq
                relayed.withLock { $0[topic] = e.seq }
                deliver(e)
            }
            if page.count < 500 { break }
        }
    }

    /// After the listener reconnected: what was announced meanwhile, from the table.
    private func catchUp() {
        for (topic, last) in relayed.withLock({ $0 }) { feed(topic, after: last) }
    }

    /// The NOTIFY payload of an event (see `relay`).
    static func announcement(_ e: BusEvent) -> String {
        var o: [String: JSONValue] = ["t": .string(e.topic), "s": .int(e.seq)]
        let full = JSONValue.object(
            o.merging(
                ["y": .string(e.type), "d": .string(e.data), "c": .int(Int(e.createdAt.timeIntervalSince1970 * 1000))]
            ) { a, _ in a }
        ).jsonText
        if full.utf8.count < 7900 { return full }
        o["big"] = .bool(true)
        return JSONValue.object(o).jsonText
    }

    /// Live subscriber count (for /metrics).
    public var subscriberCount: Int {
        subscribers.withLock {
            $0.byTopic.values.reduce(0) { $0 + $1.count } + $0.sinks.values.reduce(0) { $0 + $1.count }
        }
    }

    /// Registers a function called (synchronously, so it must only hand the event on) with each
    /// event published with a scope.
    public func observe(_ f: @escaping @Sendable (BusEvent, EventScope) -> Void) {
        observers.withLock { $0.append(f) }
    }

    /// Appends an event to `topic` (durably) and delivers it to live subscribers. Returns its seq.
    /// A `scope` (the workspace and the actor) hands the event to the observers as well.
    @discardableResult
    public func publish(topic: String, type: String, data: String, scope: EventScope? = nil) async throws -> Int {
        let now = clock.now()
        let seq = try await db.write { tx -> Int in
            let next = (try tx.first("SELECT MAX(seq) AS m FROM events WHERE topic = ?", topic)?.int("m") ?? 0) + 1
            try tx.run(
                "INSERT INTO events (topic, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)", topic, next, type,
                data, now)
            if tx.isPostgres {
                let e = BusEvent(topic: topic, seq: next, type: type, data: data, createdAt: now)
                _ = try tx.query("SELECT pg_notify(?, ?)", EventBus.channel, EventBus.announcement(e))
            }
            return next
        }
        let event = BusEvent(topic: topic, seq: seq, type: type, data: data, createdAt: now)
        if db.kind == .sqlite {
            deliver(event)
        } else if subscribers.withLock({ $0.byTopic[topic] != nil || $0.sinks[topic] != nil }),
            relayed.withLock({ ($0[topic] ?? 0) < seq })
        {
            // (Unless the listener was quicker; an entry it passes meanwhile goes at the next `settle`.)
            unrelayed.withLock { $0[topic] = max($0[topic] ?? 0, seq) }
        }
        if let scope { for f in observers.withLock({ $0 }) { f(event, scope) } }
        return seq
    }

    @discardableResult
    public func publish<T: Encodable>(
        topic: String, type: String, value: T, scope: EventScope? = nil
    ) async throws
        -> Int
    {
        try await publish(
            topic: topic, type: type, data: String(decoding: try JSONCoding.encode(value), as: UTF8.self), scope: scope)
    }

    private func deliver(_ e: BusEvent) {
        if db.kind != .sqlite {
            unrelayed.withLock { u in if let last = u[e.topic], last <= e.seq { u[e.topic] = nil } }
        }
        let (subs, sinks) = subscribers.withLock { ($0.byTopic[e.topic] ?? [], $0.sinks[e.topic] ?? []) }
        for s in subs {
            if case .dropped = s.continuation.yield(e) {
                s.continuation.finish(throwing: SubscriberOverflow())
            }
        }
        guard !sinks.isEmpty else { return }
        let wire = e.sseBytes
        for s in sinks { s.deliver(e, wire) }
    }

    /// Events of `topic` after `cursor` (0 = from the start): the stored ones, then live ones,
    /// in seq order without gaps or duplicates.
    public func subscribe(topic: String, after cursor: Int) -> AsyncThrowingStream<BusEvent, any Error> {
        let (live, liveCont) = AsyncThrowingStream<BusEvent, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(bufferLimit))
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
                        try tx.query(EventBus.replayPage, topic, after)
                    }
                    for r in page {
                        let e = BusEvent(topic: topic, row: r)
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
            self?.subscribers.withLock { s in
                s.byTopic[topic]?.removeAll { $0.id == id }
                if s.byTopic[topic]?.isEmpty == true { s.byTopic[topic] = nil }
            }
        }
        return out
    }

    /// The stored events of `topic` after `cursor`, at most `limit` (for reading a finished stream).
    public func stored(topic: String, after cursor: Int = 0, limit: Int = 500) async throws -> [BusEvent] {
        try await db.read { tx in
            try tx.query(EventBus.replayPage, topic, cursor)
        }.prefix(limit).map { BusEvent(topic: topic, row: $0) }
    }

    /// The newest seq of `topic` (0 when empty).
    public func head(topic: String) async throws -> Int {
        try await db.read { try $0.first("SELECT MAX(seq) AS m FROM events WHERE topic = ?", topic)?.int("m") ?? 0 }
    }

    /// One page of a topic's stored events after a cursor (replayed before live ones).
    static let replayPage = """
        SELECT seq, type, data, created_at FROM events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT 500
        """

    /// An SSE response streaming `topic` from the request's cursor (`Last-Event-ID` or `?cursor=`);
    /// ends after an event whose type is in `endTypes` (a finished job, say). Stored events are
    /// replayed first; live ones are then pushed by `publish` itself (see `Sink`).
    /// `rewrite` changes an event's data for this stream (a client that asked for another encoding).
    public func sse(
        topic: String, request: Request, endTypes: Set<String> = [], startingAt start: Int = 0,
        rewrite: (@Sendable (BusEvent) -> String)? = nil
    ) throws -> Response {
        let cursor = try SSE.resumeCursor(request) ?? start
        return Response.sse { sse in
            let sink = self.subscribers.withLock { s -> Sink in
                s.next += 1
                let sink = Sink(
                    id: s.next, writer: sse, endTypes: endTypes, bufferLimit: self.bufferLimit, rewrite: rewrite)
                s.sinks[topic, default: []].append(sink)
                return sink
            }
            defer {
                sink.end()
                self.subscribers.withLock { s in
                    s.sinks[topic]?.removeAll { $0.id == sink.id }
                    if s.sinks[topic]?.isEmpty == true { s.sinks[topic] = nil }
                }
            }
            var last = cursor
            // Replay in pages, so a long history never sits in memory at once.
            while true {
                let after = last
                let page = try await self.db.read { tx in
                    try tx.query(EventBus.replayPage, topic, after)
                }
                for r in page {
                    let e = BusEvent(topic: topic, row: r)
                    last = e.seq
                    try await sse.send(id: String(last), event: e.type, data: rewrite?(e) ?? e.data)
                    if endTypes.contains(e.type) { return }
                }
                if page.count < 500 { break }
            }
            sink.startPushing(after: last)
            let overflow = await withTaskCancellationHandler {
                await sink.wait()
            } onCancel: {
                sink.end()
            }
            if overflow { throw SubscriberOverflow() }
        }
    }
}
