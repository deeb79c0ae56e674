import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnTestSupport

final class Acks: Sendable {
    let list = Mutex<[String]>([])
    /// Writers that have stopped (all tokens used, or the server gone).
    let writersDone = Mutex(0)
}

/// kill -9 in the middle of a stream of acknowledged writes loses none of them.
@Suite struct DurabilityTests {
    @Test func killNineLosesNoAcknowledgedWrite() async throws {
        let dir = NSTemporaryDirectory() + "kiln-kill9-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Prepare accounts with one-time setup tokens; each redeemed token is one acknowledged write.
        var tokens: [(String, String)] = []
        do {
            let migrated = try Database(path: dir + "/kiln.db")
            try migrated.migrate(AuditLog.migrations + AuthMigrations.all)
            let auth = AuthService(db: migrated, clock: SystemClock())
            for i in 0..<400 {
                let (user, token) = try await auth.createUser(email: "u\(i)@example.com", name: "U\(i)")
                tokens.append((user.id, token))
            }
        }
        // The real server binary. Setup is rate-limited per client address: as a trusted proxy, the test
        // gives each write its own.
        let server = try #require(
            try await ServeProcess.start(["--data-dir", dir, "--log-level", "error", "--trusted-proxy", "127.0.0.1/32"]
            ),
            "kiln serve did not start")
        defer { server.stop(SIGKILL) }
        let (pid, port) = (server.pid, server.port)

        // Four writers; the server is killed once enough writes were acknowledged.
        let acked = Acks()
        let allTokens = tokens
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    defer { acked.writersDone.withLock { $0 += 1 } }
                    for i in stride(from: w, to: allTokens.count, by: 4) {
                        let (uid, token) = allTokens[i]
                        guard
                            let r = try? await http(
                                "POST", "http://127.0.0.1:\(port)/auth/setup",
                                headers: [
                                    "Content-Type": "application/json",
                                    "X-Forwarded-For": "10.0.\(i / 250).\(i % 250 + 1)",
                                ],
                                body: json(["token": token, "password": "password number \(i)"]))
                        else { return }
                        if r.status == 201 { acked.list.withLock { $0.append(uid) } } else { return }
                    }
                }
            }
            group.addTask {
                while acked.list.withLock({ $0.count }) < 40 && acked.writersDone.withLock({ $0 }) < 4 {
                    try? await Task.sleep(for: .milliseconds(5))
                }
                kill(pid, SIGKILL)
            }
        }
        let status = await offPool { server.stop(0) }
        #expect(status == 128 + SIGKILL)
        let acknowledged = acked.list.withLock { $0 }
        #expect(acknowledged.count >= 40)

        // Restart: every acknowledged write is there.
        let reopened = try Database(path: dir + "/kiln.db")
        let withPassword = Set(
            try reopened.readSync { tx in
                try tx.query("SELECT id FROM users WHERE password_hash IS NOT NULL").compactMap { $0.string("id") }
            })
        let lost = acknowledged.filter { !withPassword.contains($0) }
        #expect(lost.isEmpty, "lost \(lost.count) of \(acknowledged.count) acknowledged writes")
        #expect(withPassword.count < tokens.count, "the kill came too late to test anything")
        let integrity = try reopened.readSync { try $0.first("PRAGMA integrity_check")?.string("integrity_check") }
        #expect(integrity == "ok")
    }
}

@Suite struct EventBusTests {
    func bus() throws -> EventBus {
        let dir = NSTemporaryDirectory() + "kiln-bus-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let db = try Database(path: dir + "/kiln.db")
        try db.migrate(EventBus.migrations)
        return try EventBus(db: db)
    }

    @Test func replaysFromACursorThenDeliversLiveEvents() async throws {
        let b = try bus()
        for i in 1...5 { #expect(try await b.publish(topic: "job_1", type: "stdout", data: "{\"n\":\(i)}") == i) }
        try await b.publish(topic: "job_2", type: "other", data: "{}")
        let stream = b.subscribe(topic: "job_1", after: 3)
        var it = stream.makeAsyncIterator()
        #expect(try await it.next()?.seq == 4)
        #expect(try await it.next()?.data == "{\"n\":5}")
        #expect(b.subscriberCount == 1)
        Task { try await b.publish(topic: "job_1", type: "exit", data: "{\"code\":0}") }
        let live = try await it.next()
        #expect(live?.seq == 6 && live?.type == "exit")
        #expect(try await b.head(topic: "job_1") == 6)
    }

    @Test func eventsSurviveAReopen() async throws {
        let dir = NSTemporaryDirectory() + "kiln-bus2-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        do {
            let db = try Database(path: dir + "/kiln.db")
            try db.migrate(EventBus.migrations)
            let b = try EventBus(db: db)
            for i in 1...3 { try await b.publish(topic: "t", type: "e", data: "\(i)") }
        }
        let db = try Database(path: dir + "/kiln.db")
        let b = try EventBus(db: db)
        var seen: [Int] = []
        for try await e in b.subscribe(topic: "t", after: 0) {
            seen.append(e.seq)
            if seen.count == 3 { break }
        }
        #expect(seen == [1, 2, 3])
    }

    @Test func concurrentPublishersGetDistinctGaplessSequences() async throws {
        let b = try bus()
        let seqs = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<50 { group.addTask { try await b.publish(topic: "t", type: "e", data: "\(i)") } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(seqs.sorted() == Array(1...50))
    }
}
