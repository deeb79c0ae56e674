import Foundation
import Glibc
import KilnCrypto
import KilnStore
import Synchronization

/// The server's master key, held once and shared by every domain that seals with it (MFA secrets,
/// workspace secrets' data keys). Rotation replaces it in place, after the database has been
/// re-sealed under the new key in one transaction.
///
/// Crash safety of a rotation: the new key is written to `master.key.next` (and synced) before the
/// transaction; the transaction re-seals everything and records the new key's id in
/// `master_key_state`; only then is `master.key.next` renamed over `master.key`. On start, a left-over
/// `.next` file is either finished (the database already names its key) or discarded (it does not),
/// so every sealed value opens with the key the server then uses.
public final class MasterKey: Sendable {
    private let key: Mutex<[UInt8]>
    /// `<data-dir>/master.key` (nil for an in-memory key).
    public let path: String?
    /// Given in `KILN_MASTER_KEY`: Kiln cannot rotate it (the operator owns where it lives).
    public let fromEnvironment: Bool

    public init(_ bytes: [UInt8], path: String?, fromEnvironment: Bool = false) {
        key = Mutex(bytes)
        self.path = path
        self.fromEnvironment = fromEnvironment
    }

    public var bytes: [UInt8] { key.withLock { $0 } }
    public var id: String { Self.fingerprint(bytes) }
    public var nextPath: String? { path.map { $0 + ".next" } }

    /// A short public fingerprint of a key (which key sealed what; `kiln doctor` shows it).
    public static func fingerprint(_ key: [UInt8]) -> String {
        String(Crypto.hex(Crypto.sha256(Array("kiln-master-key-id/".utf8) + key)).prefix(16))
    }

    public func replace(_ new: [UInt8]) { key.withLock { $0 = new } }

    /// Set while this process rotates the key: its new key is in memory before the database names it.
    private let rotatingHere = Mutex(false)

    /// Starts this process's rotation; false when one runs here already.
    public func beginRotation() -> Bool {
        rotatingHere.withLock { busy in
            if busy { return false }
            busy = true
            return true
        }
    }

    public func endRotation() { rotatingHere.withLock { $0 = false } }

    /// The key to seal and open with inside `tx`: the one the database names. Another instance
    /// sharing this database and data dir may have rotated the key since this process read it; the
    /// data dir then holds the new key (`master.key`, or still `master.key.next` just after the
    /// commit), which is taken up here. Sealing with the key held in memory instead would store values
    /// under a key the cluster has dropped. While this process rotates, its own new key.
    public func bytes(in tx: Transaction) throws -> [UInt8] {
        if rotatingHere.withLock({ $0 }) { return bytes }
        return try named(in: tx)
    }

    /// The key the database names in `tx`, taken up from the data dir when it is not the one held.
    public func named(in tx: Transaction) throws -> [UInt8] {
        let held = bytes
        guard !fromEnvironment, let path, let next = nextPath,
            let recorded = try tx.first("SELECT key_id FROM master_key_state WHERE id = 1")?.string("key_id"),
            recorded != Self.fingerprint(held)
        else { return held }
        for file in [path, next] {
            if let k = try? Self.read(file), Self.fingerprint(k) == recorded {
                replace(k)
                return k
            }
        }
        throw APIError.unavailable(
            "The database's values are sealed under master key \(recorded), which this server does not have "
                + "(instances sharing a database must share the data dir's master.key)")
    }

    public static let migrations = [
        Migration(
            module: "core_keys", version: 1, name: "master key state",
            sql: """
                CREATE TABLE master_key_state (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    key_id TEXT NOT NULL,
                    rotated_at INTEGER
                );
                """)
    ]

    /// Inside a rotation's transaction: the database now belongs to `keyID`.
    public static func record(_ tx: Transaction, keyID: String, rotatedAt: Date?) throws {
        try tx.run(
            """
            INSERT INTO master_key_state (id, key_id, rotated_at) VALUES (1, ?, ?)
            ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, rotated_at = excluded.rotated_at
            """, keyID, rotatedAt)
    }

    public static func recorded(_ db: Database) throws -> String? {
        try db.readSync { tx in try tx.first("SELECT key_id FROM master_key_state WHERE id = 1")?.string("key_id") }
    }

    /// After migrations: finishes or discards an interrupted rotation, and records the key on first
    /// start. Returns what it did, for the log (nil: nothing to do).
    @discardableResult
    public func recover(_ db: Database) throws -> String? {
        let recorded = try Self.recorded(db)
        if let next = nextPath, let path, FileManager.default.fileExists(atPath: next) {
            let candidate = try Self.read(next)
            if recorded == Self.fingerprint(candidate) {
                guard rename(next, path) == 0 else { throw Config.ConfigError("cannot rename \(next) to \(path)") }
                Self.syncFolder(of: path)
                replace(candidate)
                return "finished an interrupted master key rotation (key \(id))"
            }
            unlink(next)
            Self.syncFolder(of: path)
            if recorded == nil { try db.writeSync { tx in try Self.record(tx, keyID: id, rotatedAt: nil) } }
            return "discarded an unfinished master key rotation; the key stays \(id)"
        }
        if recorded == nil {
            try db.writeSync { tx in try Self.record(tx, keyID: id, rotatedAt: nil) }
        } else if recorded != id {
            return "the database names master key \(recorded!), but this key is \(id): sealed values will not open"
        }
        return nil
    }

    /// Reads a key file: 64 hex characters.
    public static func read(_ path: String) throws -> [UInt8] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Config.ConfigError("cannot read \(path)")
        }
        guard let key = Crypto.fromHex(text.trimmingCharacters(in: .whitespacesAndNewlines)), key.count == 32 else {
            throw Config.ConfigError("\(path) is damaged: expected 64 hex characters")
        }
        return key
    }

    /// Writes a key file (0600, synced, and its folder synced); refuses to overwrite.
    public static func write(_ key: [UInt8], to path: String, replace: Bool = false) throws {
        if replace { unlink(path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Config.ConfigError("cannot create \(path)") }
        let hex = Array((Crypto.hex(key) + "\n").utf8)
        let written = hex.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == hex.count, synced else { throw Config.ConfigError("cannot write \(path)") }
        syncFolder(of: path)
    }

    /// Makes `path` with `contents` (0600, synced) unless it exists, atomically: the contents go to a
    /// file of this process's own first and are then linked into place, which fails when another
    /// process got there first, so two servers starting together on one data dir end with the same
    /// file, complete, and neither overwrites the other. True when this call made it.
    @discardableResult
    public static func createOnce(_ path: String, contents: [UInt8]) throws -> Bool {
        if FileManager.default.fileExists(atPath: path) { return false }
        let tmp = path + ".new-\(getpid())-\(IDs.randomBase62(8))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Config.ConfigError("cannot create \(tmp)") }
        defer { unlink(tmp) }
        let written = contents.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == contents.count, synced else { throw Config.ConfigError("cannot write \(tmp)") }
        if link(tmp, path) != 0 {
            guard errno == EEXIST else { throw Config.ConfigError("cannot create \(path)") }
            return false
        }
        syncFolder(of: path)
        return true
    }

    static func syncFolder(of path: String) {
        let fd = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    /// Renames the synced `.next` file over `master.key` (the last step of a rotation).
    public func commitNext() throws {
        guard let next = nextPath, let path else { return }
        guard rename(next, path) == 0 else { throw Config.ConfigError("cannot rename \(next) to \(path)") }
        Self.syncFolder(of: path)
    }
}

/// Test-only crash points (debug builds): `--test-crash-at N` makes the N-th point passed SIGKILL the
/// process, so tests can stop a multi-step operation anywhere and check what a restart finds.
public final class CrashPoints: Sendable {
    private let remaining: Mutex<Int?>
    public init(_ n: Int?) { remaining = Mutex(n) }

    public func pass(_ label: @autoclosure () -> String) {
        #if DEBUG
            let hit = remaining.withLock { r -> Bool in
                guard let n = r else { return false }
                r = n - 1
                return n - 1 == 0
            }
            if hit {
                FileHandle.standardError.write(Data("crash point: \(label())\n".utf8))
                kill(getpid(), SIGKILL)
            }
        #endif
    }
}
