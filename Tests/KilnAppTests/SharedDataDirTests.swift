import Foundation
import Glibc
import KilnCore
import KilnCrypto
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnReceipts

/// Servers starting together on one empty data dir agree on one master key and one receipt key (the
/// second used to fail with "cannot create master.key", and two receipt keys could overwrite each
/// other). Real threads race on a real folder.
@Suite struct SharedDataDirTests {
    static func race<T: Sendable>(_ n: Int, _ body: @escaping @Sendable () throws -> T) -> [Result<T, any Error>] {
        let results = Mutex<[Result<T, any Error>]>([])
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for _ in 0..<n {
            group.enter()
            Thread {
                start.wait()
                let r = Result { try body() }
                results.withLock { $0.append(r) }
                group.leave()
            }.start()
        }
        for _ in 0..<n { start.signal() }
        group.wait()
        return results.withLock { $0 }
    }

    @Test func manyStartingTogetherAgreeOnOneMasterKeyAndOneReceiptKey() throws {
        for _ in 0..<20 {
            let dir = NSTemporaryDirectory() + "kiln-shared-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let masters = Self.race(8) { try Application.loadMasterKey(dataDir: dir).bytes }
            let keys = try masters.map { try $0.get() }
            #expect(Set(keys.map { Crypto.hex($0) }).count == 1, "every server has the key in the file")
            #expect(try MasterKey.read(dir + "/master.key") == keys[0])
            let receipts = Self.race(8) { try ReceiptChain.loadKey(dataDir: dir, create: true)?.publicKey ?? [] }
            let publics = try receipts.map { try $0.get() }
            #expect(Set(publics.map { Crypto.hex($0) }).count == 1 && !publics[0].isEmpty)
            let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".new-") }
            #expect(left.isEmpty, "temporary files left: \(left)")
        }
    }
}
