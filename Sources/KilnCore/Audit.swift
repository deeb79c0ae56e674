import Foundation
import KilnCrypto
import KilnHTTP
import KilnStore

/// One security-relevant event.
public struct AuditEvent: Sendable {
    public var action: String
    public var actorUserID: String?
    public var actorKeyID: String?
    public var wsID: String?
    public var resourceType: String?
    public var resourceID: String?
    public var ip: String?
    public var details: [String: JSONValue]

    public init(
        action: String, actorUserID: String? = nil, actorKeyID: String? = nil, wsID: String? = nil,
        resourceType: String? = nil, resourceID: String? = nil, ip: String? = nil, details: [String: JSONValue] = [:]
    ) {
        self.action = action
        self.actorUserID = actorUserID
        self.actorKeyID = actorKeyID
        self.wsID = wsID
        self.resourceType = resourceType
        self.resourceID = resourceID
        self.ip = ip
        self.details = details
    }
}

/// The append-only, hash-chained audit log: each row carries the SHA-256 of the previous row's
/// hash and its own canonical content, so changing or deleting any row breaks the chain.
public enum AuditLog {
    public static let genesis = String(repeating: "0", count: 64)

    public static let migrations = [
        Migration(
            module: "core.audit", version: 1, name: "audit log",
            sql: """
                CREATE TABLE audit_log (
                    seq INTEGER PRIMARY KEY,
                    at INTEGER NOT NULL,
                    actor_user_id TEXT,
                    actor_key_id TEXT,
                    ws_id TEXT,
                    action TEXT NOT NULL,
                    resource_type TEXT,
                    resource_id TEXT,
                    ip TEXT,
                    details TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                );
                CREATE INDEX audit_by_actor ON audit_log (actor_user_id, seq);
                CREATE INDEX audit_by_ws ON audit_log (ws_id, seq);
                """)
    ]

    /// The canonical text hashed for a row: its fields as sorted-key JSON, after the previous hash.
    static func rowHash(prev: String, seq: Int, at: Int64, e: AuditEvent) -> String {
        func opt(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
        let canonical = JSONValue.object([
            "seq": .int(seq), "at": .int(Int(at)), "actor_user_id": opt(e.actorUserID),
            "actor_key_id": opt(e.actorKeyID),
            "ws_id": opt(e.wsID), "action": .string(e.action), "resource_type": opt(e.resourceType),
            "resource_id": opt(e.resourceID), "ip": opt(e.ip), "details": .object(e.details),
        ]).jsonText
        return Crypto.sha256Hex(Array((prev + "\n" + canonical).utf8))
    }

    /// Appends inside the caller's write transaction, so the event commits with the action it records.
    @discardableResult
    public static func append(_ tx: Transaction, _ e: AuditEvent, at date: Date) throws -> Int {
        let last = try tx.first("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        let seq = (last?.int("seq") ?? 0) + 1
        let prev = last?.string("hash") ?? genesis
        let at = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let hash = rowHash(prev: prev, seq: seq, at: at, e: e)
        try tx.run(
            """
            INSERT INTO audit_log (seq, at, actor_user_id, actor_key_id, ws_id, action, resource_type, resource_id, ip, details, prev_hash, hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, seq, at, e.actorUserID, e.actorKeyID, e.wsID, e.action, e.resourceType, e.resourceID, e.ip,
            JSONValue.object(e.details).jsonText, prev, hash)
        return seq
    }

    public struct Verification: Sendable, Equatable {
        public let rows: Int
        /// The first row whose hash or link does not match, if any.
        public let brokenAt: Int?
        public let reason: String?
    }

    /// Walks the whole chain and recomputes every hash.
    public static func verify(_ db: Database) throws -> Verification {
        var prev = genesis
        var expectedSeq = 1
        var count = 0
        var after = 0
        while true {
            let rows = try db.readSync { tx in
                try tx.query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT 1000", after)
            }
            for r in rows {
                let seq = r.int("seq") ?? 0
                count += 1
                if seq != expectedSeq {
                    return Verification(rows: count, brokenAt: expectedSeq, reason: "row \(expectedSeq) is missing")
                }
                let details: [String: JSONValue]
                if let d = r.string("details"), let v = try? JSONDecoder().decode(JSONValue.self, from: Data(d.utf8)),
                    case .object(let o) = v
                {
                    details = o
                } else {
                    return Verification(rows: count, brokenAt: seq, reason: "details are not a JSON object")
                }
                let e = AuditEvent(
                    action: r.string("action") ?? "", actorUserID: r.string("actor_user_id"),
                    actorKeyID: r.string("actor_key_id"),
                    wsID: r.string("ws_id"), resourceType: r.string("resource_type"),
                    resourceID: r.string("resource_id"),
                    ip: r.string("ip"), details: details)
                if r.string("prev_hash") != prev {
                    return Verification(rows: count, brokenAt: seq, reason: "prev_hash does not match row \(seq - 1)")
                }
                let h = rowHash(prev: prev, seq: seq, at: r.int64("at") ?? 0, e: e)
                if r.string("hash") != h {
                    return Verification(rows: count, brokenAt: seq, reason: "row \(seq) was changed")
                }
                prev = h
                expectedSeq += 1
                after = seq
            }
            if rows.count < 1000 { break }
        }
        return Verification(rows: count, brokenAt: nil, reason: nil)
    }
}

/// An audit row as the API shows it.
public struct AuditEntry: Codable, Sendable {
    public let seq: Int
    public let at: Date
    public let action: String
    public let actorUserId: String?
    public let actorKeyId: String?
    public let wsId: String?
    public let resourceType: String?
    public let resourceId: String?
    public let ip: String?
    public let details: JSONValue
    public let hash: String
}

extension AuditLog {
    public struct Filter: Sendable {
        public var actor: String?
        public var wsID: String?
        public var action: String?
        public var resource: String?
        public var since: Date?
        public var until: Date?
        public init(
            actor: String? = nil, wsID: String? = nil, action: String? = nil, resource: String? = nil,
            since: Date? = nil, until: Date? = nil
        ) {
            self.actor = actor
            self.wsID = wsID
            self.action = action
            self.resource = resource
            self.since = since
            self.until = until
        }

        /// `actor`, `action`, `resource` (type or id), `since`, `until` (ISO 8601) from the query string.
        public init(query q: QueryParameters) throws {
            actor = q["actor"]
            action = q["action"]
            resource = q["resource"]
            func date(_ name: String) throws -> Date? {
                guard let v = q[name], !v.isEmpty else { return nil }
                guard let d = HTTPDate.parseISO8601(v) else {
                    throw APIError.validation(
                        "\(name) must be an ISO 8601 UTC time like 2026-01-15T10:00:00.000Z", field: name)
                }
                return d
            }
            since = try date("since")
            until = try date("until")
        }
    }

    /// Newest first, paged by seq.
    public static func list(_ db: Database, _ f: Filter, page: PageRequest) async throws -> Page<AuditEntry> {
        var q = Query("SELECT * FROM audit_log WHERE 1 = 1")
        q.and("actor_user_id = ?", ifGiven: f.actor)
        q.and("ws_id = ?", ifGiven: f.wsID)
        q.and("action = ?", ifGiven: f.action)
        if let r = f.resource { q.and("(resource_id = ? OR resource_type = ?)", r, r) }
        q.and("at >= ?", ifGiven: f.since)
        q.and("at < ?", ifGiven: f.until)
        if let c = page.cursor {
            guard let seq = Int(c) else {
                throw APIError.validation("cursor is not one this server issued", field: "cursor")
            }
            q.and("seq < ?", seq)
        }
        q.append("ORDER BY seq DESC LIMIT ?", page.limit + 1)
        let query = q
        let rows = try await db.read { tx in try query.rows(tx) }
        let entries = rows.map { r in
            AuditEntry(
                seq: r.int("seq") ?? 0, at: r.date("at") ?? Date(timeIntervalSince1970: 0),
                action: r.string("action") ?? "",
                actorUserId: r.string("actor_user_id"), actorKeyId: r.string("actor_key_id"), wsId: r.string("ws_id"),
                resourceType: r.string("resource_type"), resourceId: r.string("resource_id"), ip: r.string("ip"),
                details: (try? JSONDecoder().decode(JSONValue.self, from: Data((r.string("details") ?? "{}").utf8)))
                    ?? .object([:]),
                hash: r.string("hash") ?? "")
        }
        return Page(fetched: entries, limit: page.limit, cursorOf: { String($0.seq) })
    }
}
