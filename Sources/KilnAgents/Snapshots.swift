import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP

/// Prior contents of files a run changed, under `<data-dir>/snapshots/<run_id>/`.
struct Snapshots: Sendable {
    let store: AgentStore
    let dir: String

    /// Saves the prior content (nil: the file did not exist) the first time a run changes `path`.
    func save(runID: String, path: String, prior: [UInt8]?) async throws {
        if try await store.hasSnapshot(runID: runID, path: path) { return }
        var file: String? = nil
        if let prior {
            let runDir = dir + "/" + runID
            try FileManager.default.createDirectory(
                atPath: runDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let name = IDs.randomBase62(16)
            guard
                FileManager.default.createFile(
                    atPath: runDir + "/" + name, contents: Data(prior), attributes: [.posixPermissions: 0o600])
            else {
                throw ToolFailure("cannot write the snapshot of \(path)")
            }
            file = name
        }
        let sha = prior.map { Crypto.hex(Crypto.sha256($0)) }
        try await store.insertSnapshot(runID: runID, path: path, existed: prior != nil, file: file, shaBefore: sha)
    }

    func read(runID: String, file: String) -> [UInt8]? {
        FileManager.default.contents(atPath: dir + "/" + runID + "/" + file).map(Array.init)
    }
}
