import Foundation
import Glibc
import KilnCore
import KilnTestClients
import Synchronization

/// `kiln serve` as a real process on a port of its own choosing (`--port 0`), found from the line it
/// prints. A port found free and handed to the server could be taken meanwhile by another test's
/// server, which then answers in its place.
final class ServeProcess: Sendable {
    let pid: pid_t
    let port: Int
    private let reaped = Mutex(false)

    init(pid: pid_t, port: Int) {
        self.pid = pid
        self.port = port
    }

    var base: String { "http://127.0.0.1:\(port)" }

    /// Starts `kiln serve <arguments> --port 0`; nil when it exits or prints no address within `timeout`
    /// seconds (generous: under the whole suite a debug build can take seconds to start).
    static func start(_ arguments: [String], timeout: Double = 120) async throws -> ServeProcess? {
        let (reader, writer) = try ProcessRunner.pipePair()
        let devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { close(devnull) }
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(
                TestApp.kilnBinary, ["serve"] + arguments + ["--port", "0"], stdout: writer, stderr: devnull)
        } catch {
            close(reader)
            close(writer)
            throw error
        }
        close(writer)
        // The read blocks, so it runs on a thread of its own; the rest of the output is drained there
        // until the process ends (a full pipe would stop the server).
        let port = await offPool { () -> Int? in
            var text = ""
            var found: Int? = nil
            var poller = [pollfd(fd: reader, events: Int16(POLLIN), revents: 0)]
            let deadline = Date().addingTimeInterval(timeout)
            var buf = [UInt8](repeating: 0, count: 4096)
            while found == nil, Date() < deadline {
                guard poll(&poller, 1, 200) >= 0 || errno == EINTR else { break }
                if poller[0].revents == 0 { continue }
                let n = buf.withUnsafeMutableBytes { read(reader, $0.baseAddress, 4096) }
                if n <= 0 { break }
                text += String(decoding: buf[0..<n], as: UTF8.self)
                if let r = text.range(of: "listening on http://127.0.0.1:") {
                    let digits = text[r.upperBound...].prefix { $0.isNumber }
                    if text[r.upperBound...].dropFirst(digits.count).first != nil { found = Int(digits) }
                }
            }
            Thread {
                var rest = [UInt8](repeating: 0, count: 4096)
                while (rest.withUnsafeMutableBytes { read(reader, $0.baseAddress, 4096) }) > 0 {}
                close(reader)
            }.start()
            return found
        }
        guard let port else {
            kill(pid, SIGKILL)
            _ = ProcessRunner.wait(pid)
            return nil
        }
        return ServeProcess(pid: pid, port: port)
    }

    /// SIGTERM (a graceful stop) or another signal (0: none, it is ending by itself), waits for the
    /// process and gives its exit status (128 + n for signal n). Once only: a second call does nothing
    /// and gives nil (the pid may be another process's by then).
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32? {
        guard
            reaped.withLock({ r in
                defer { r = true }
                return !r
            })
        else { return nil }
        if signal != 0 { kill(pid, signal) }
        return ProcessRunner.wait(pid)
    }
}
