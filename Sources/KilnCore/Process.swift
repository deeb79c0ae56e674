import Foundation

/// Runs an optional program found on PATH, off the cooperative pool, with a time limit.
public enum ProcessRunner {
    public struct Output: Sendable { public let status: Int32; public let stdout: [UInt8]; public let stderr: String }

    /// The absolute path of `program` on PATH, if any.
    public static func which(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    public static func run(_ path: String, _ args: [String], stdin: [UInt8]? = nil, timeout: Double = 30) async throws -> Output {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Output, any Error>) in
            DispatchQueue.global().async {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: path)
                p.arguments = args
                let out = Pipe(), err = Pipe(), inp = Pipe()
                p.standardOutput = out; p.standardError = err; p.standardInput = inp
                do { try p.run() } catch { c.resume(throwing: error); return }
                if let stdin { inp.fileHandleForWriting.write(Data(stdin)) }
                try? inp.fileHandleForWriting.close()
                let timer = DispatchWorkItem { if p.isRunning { p.terminate() } }
                DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer)
                let errData = Mutex_Data()
                let errThread = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
                errThread.start()
                let o = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                timer.cancel()
                c.resume(returning: Output(status: p.terminationStatus, stdout: Array(o), stderr: String(decoding: errData.wait(), as: UTF8.self)))
            }
        }
    }
}

/// A one-shot box a reader thread fills.
final class Mutex_Data: @unchecked Sendable {
    private let cond = NSCondition()
    private var data: Data?
    func set(_ d: Data) { cond.lock(); data = d; cond.signal(); cond.unlock() }
    func wait() -> Data { cond.lock(); while data == nil { cond.wait() }; let d = data!; cond.unlock(); return d }
}
