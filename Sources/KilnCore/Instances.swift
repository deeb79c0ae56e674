import Foundation
import KilnHTTP
import KilnStore
import Synchronization

/// This process among the Kiln instances sharing one store (several on PostgreSQL, one on SQLite).
/// Each registers with its URL and, on PostgreSQL, beats every `heartbeat` seconds. Work a live process holds
/// (jobs, agent runs, browser runs, parked approvals) is stored with the holder's instance id;
/// when a holder stops beating for `timeout`, a survivor marks it lost once (a conditional
/// UPDATE decides who) and every domain's recoverer ends that work as `lost`. At start the same
/// recoverers end what a previous process of this data dir left (on SQLite: everything not ours).
/// Background chores that must run once per cluster take a lease (`lease`).
public final class Instances: Sendable {
    public static let migrations = [
        Migration(
            module: "core.instances", version: 1, name: "instances and leases",
            sql: """
                CREATE TABLE instances (
                    id TEXT PRIMARY KEY,
                    url TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    heartbeat_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    lost INTEGER NOT NULL DEFAULT 0
                );
                CREATE TABLE leases (
                    name TEXT PRIMARY KEY,
                    holder TEXT NOT NULL,
                    expires_at INTEGER NOT NULL
                );
                """)
    ]

    public let id: String
    let db: Database
    let clock: any Clock
    public let heartbeat: Double
    public let timeout: Double
    private let recoverers = Mutex<[(String, @Sendable (Set<String>) async throws -> Void)]>([])

    public init(db: Database, clock: any Clock, heartbeat: Double = 2, timeout: Double = 15) {
        id = IDs.ordered("inst", at: clock.now())
        self.db = db
        self.clock = clock
        self.heartbeat = heartbeat
        self.timeout = timeout
    }

    /// Registers what ends a domain's work whose instance is not among `alive` (idempotent: it
    /// may run on several survivors at once; each row changes once).
    public func onRecover(_ name: String, _ f: @escaping @Sendable (_ alive: Set<String>) async throws -> Void) {
        recoverers.withLock { $0.append((name, f)) }
    }

    /// Registers this instance, recovers what is left over, then beats and watches the others
    /// until `jobs` shuts down.
    public func start(url: String, jobs: JobRunner) async throws {
        let now = clock.now()
        let id = self.id
        _ = try await db.write { tx in
            try tx.run(
                "INSERT INTO instances (id, url, started_at, heartbeat_at) VALUES (?, ?, ?, ?)", id, url, now, now)
        }
        try await recover()
        // One process owns a SQLite file: nobody to beat for or to watch.
        guard db.kind == .postgres else { return }
        jobs.run("instances") { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(heartbeat * 1e9))
                if Task.isCancelled { break }
                try? await beat()
                if (try? await sweep()) == true { try? await recover() }
            }
        }
    }

    /// A clean stop: the others need not wait for the timeout.
    public func end() async {
        let id = self.id
        let now = clock.now()
        _ = try? await db.write { tx in try tx.run("UPDATE instances SET ended_at = ? WHERE id = ?", now, id) }
    }

    private func beat() async throws {
        let id = self.id
        let now = clock.now()
        try await db.write { tx in
            _ = try tx.run("UPDATE instances SET heartbeat_at = ? WHERE id = ? AND ended_at IS NULL", now, id)
        }
    }

    /// Marks instances silent past the timeout as lost; true when this call marked any.
    private func sweep() async throws -> Bool {
        let cutoff = clock.now().addingTimeInterval(-timeout)
        let now = clock.now()
        return try await db.write { tx in
            try tx.run(
                "UPDATE instances SET ended_at = ?, lost = 1 WHERE ended_at IS NULL AND heartbeat_at < ?", now, cutoff)
        } > 0
    }

    /// Instances whose work is theirs to keep: beating, not ended. On SQLite only this one (the
    /// file belongs to one process; an earlier process of it is gone whatever its row says).
    public func alive() async throws -> Set<String> {
        guard db.kind == .postgres else { return [id] }
        let cutoff = clock.now().addingTimeInterval(-timeout)
        let rows = try await db.read { tx in
            try tx.query("SELECT id FROM instances WHERE ended_at IS NULL AND heartbeat_at >= ?", cutoff)
        }
        return Set(rows.compactMap { $0.string("id") }).union([id])
    }

    private func recover() async throws {
        let alive = try await self.alive()
        for (name, f) in recoverers.withLock({ $0 }) {
            do { try await f(alive) } catch {
                ServerLog.error("recovery failed", ["part": .string(name), "error": .string("\(error)")])
            }
        }
    }

    /// The URL of `instance` while it is alive (nil: ended, lost or unknown).
    public func url(of instance: String) async throws -> String? {
        let cutoff = clock.now().addingTimeInterval(-timeout)
        return try await db.read { tx in
            try tx.first(
                "SELECT url FROM instances WHERE id = ? AND ended_at IS NULL AND heartbeat_at >= ?", instance, cutoff)
        }?.string("url")
    }

    /// 421 for an action on a live process another instance holds, naming it, so a load balancer
    /// (or the client) can send the request there; 409 when the holder is gone (the work is being
    /// marked lost).
    public func misdirected(_ what: String, holder: String?) async throws -> HTTPError {
        guard let holder, holder != id, let url = try await url(of: holder) else {
            return .conflict("\(what) is not running on any live instance")
        }
        return HTTPError(
            HTTPStatus(421), code: "misdirected",
            message: "\(what) runs on instance \(holder) at \(url); send the request there",
            details: ["instance": .string(holder), "instance_url": .string(url)])
    }

    /// `jobs.every`, run by one instance of the cluster at a time: the holder of the lease `name`
    /// (a chore such as a purge or a mail batch, which two instances must not both do).
    public func everyOnce(
        _ jobs: JobRunner, _ interval: Double, name: String, _ body: @escaping @Sendable () async throws -> Void
    ) {
        jobs.every(interval, name: name) { [self] in
            guard try await lease(name, for: interval * 3) else { return }
            try await body()
        }
    }

    /// Takes or renews the lease `name` for `seconds`; true while this instance holds it. A chore
    /// that runs once per cluster (purges, mail batches) runs only while it holds its lease.
    public func lease(_ name: String, for seconds: Double) async throws -> Bool {
        let id = self.id
        let now = clock.now()
        let until = now.addingTimeInterval(seconds)
        return try await db.write { tx in
            try tx.run(
                """
                INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE leases.holder = excluded.holder OR leases.expires_at < ?
                """, name, id, until, now)
        } > 0
    }

    /// Gives up the lease `name` if this instance holds it.
    public func release(_ name: String) async throws {
        let id = self.id
        try await db.write { tx in _ = try tx.run("DELETE FROM leases WHERE name = ? AND holder = ?", name, id) }
    }
}
