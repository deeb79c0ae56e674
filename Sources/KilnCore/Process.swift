import CShims
import Foundation
import Glibc

/// Runs programs through the C shim's fork+exec (no Swift code between fork and exec, every Kiln fd
/// close-on-exec). Foundation's `Process.run()` is not used: on Linux it over-reads
/// `/proc/self/fd` entries and crashes intermittently, the more so the more fds are open
/// (swift-corelibs-foundation PR #5472), which a busy server always has.
public enum ProcessRunner {
    public struct Output: Sendable {
        public let status: Int32
        public let stdout: [UInt8]
        public let stderr: String
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    }

    public struct SpawnError: Error, CustomStringConvertible { public let description: String }

    /// The absolute path of `program` on PATH (or `program` itself when it has a slash).
    public static func which(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `program` to completion with its output captured (up to `maxOutput` bytes per stream);
    /// kills its process group after `timeout` seconds.
    public static func run(
        _ program: String, _ args: [String], stdin: [UInt8]? = nil, cwd: String? = nil,
        environment: [String: String]? = nil, timeout: Double = 60, maxOutput: Int = 64 << 20
    ) async throws -> Output {
        guard let path = which(program) else {
            throw SpawnError(description: "\(program) is not installed (not found on PATH)")
        }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Output, any Error>) in
            Thread {
                c.resume(
                    with: Result {
                        try runBlocking(
                            path, args, stdin: stdin, cwd: cwd, environment: environment, timeout: timeout,
                            maxOutput: maxOutput)
                    })
            }.start()
        }
    }

    /// Runs a sandbox launch to completion with its output captured (see `run`).
    public static func run(
        _ launch: Sandbox.Launch, stdin: [UInt8]? = nil, timeout: Double = 60, maxOutput: Int = 64 << 20
    ) async throws -> Output {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Output, any Error>) in
            Thread {
                c.resume(
                    with: Result {
                        try runBlocking(
                            launch.path, launch.arguments, stdin: stdin, cwd: launch.cwd,
                            environment: launch.environment, timeout: timeout, maxOutput: maxOutput)
                    })
            }.start()
        }
    }

    public static func pipePair() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard kiln_pipe_cloexec(&fds) == 0 else {
            throw SpawnError(description: "pipe failed: \(String(cString: strerror(errno)))")
        }
        return (fds[0], fds[1])
    }

    /// Starts `path` with the given fds as stdin/stdout/stderr (-1 keeps Kiln's own) in a new process group.
    /// `extra`: fds the child also gets, as 3, 4, … in that order.
    public static func spawn(
        _ path: String, _ args: [String], stdin: Int32 = -1, stdout: Int32 = -1, stderr: Int32 = -1,
        cwd: String? = nil, environment: [String: String]? = nil, extra: [Int32] = []
    ) throws -> pid_t {
        // Never the server's own environment: its KILN_* settings, provider keys and agent socket stay here.
        let env = (environment ?? Sandbox.toolEnvironment(home: ProcessInfo.processInfo.environment["HOME"] ?? "/"))
            .map { "\($0.key)=\($0.value)" }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                extra.withUnsafeBufferPointer { x in
                    kiln_spawn_fds(
                        path, a.baseAddress, e.baseAddress, cwd, stdin, stdout, stderr, 1, x.baseAddress,
                        Int32(x.count))
                }
            }
        }
        guard pid > 0 else { throw SpawnError(description: "cannot start \(path): \(String(cString: strerror(-pid)))") }
        return pid
    }

    /// Starts a sandbox launch with the given fds (see `spawn`).
    public static func spawn(
        _ launch: Sandbox.Launch, stdin: Int32 = -1, stdout: Int32 = -1, stderr: Int32 = -1, extra: [Int32] = []
    ) throws -> pid_t {
        try spawn(
            launch.path, launch.arguments, stdin: stdin, stdout: stdout, stderr: stderr, cwd: launch.cwd,
            environment: launch.environment, extra: extra)
    }

    /// Starts a sandbox launch on a new pseudo-terminal as its controlling terminal, in its own session.
    /// Returns the pid and the master side (non-blocking, close-on-exec).
    public static func spawnTerminal(
        _ launch: Sandbox.Launch, argv0: String, cols: Int, rows: Int
    ) throws -> (
        pid: pid_t, master: Int32
    ) {
        let envp = launch.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let argv = ([argv0] + launch.arguments).map { strdup($0) } + [nil]
        defer {
            envp.forEach { free($0) }
            argv.forEach { free($0) }
        }
        var master: Int32 = -1
        let pid = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                kiln_forkpty(&master, launch.path, a.baseAddress, e.baseAddress, launch.cwd, UInt16(cols), UInt16(rows))
            }
        }
        guard pid > 0 else {
            throw SpawnError(description: "cannot start a terminal: \(String(cString: strerror(-pid)))")
        }
        return (pid, master)
    }

    /// Waits for `pid`; the exit code, or 128 + the signal that ended it.
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    static func runBlocking(
        _ path: String, _ args: [String], stdin: [UInt8]?, cwd: String?, environment: [String: String]?,
        timeout: Double, maxOutput: Int
    ) throws -> Output {
        let (inR, inW) = try pipePair()
        let (outR, outW) = try pipePair()
        let (errR, errW) = try pipePair()
        let pid: pid_t
        do {
            pid = try spawn(path, args, stdin: inR, stdout: outW, stderr: errW, cwd: cwd, environment: environment)
        } catch {
            [inR, inW, outR, outW, errR, errW].forEach { close($0) }
            throw error
        }
        close(inR)
        close(outW)
        close(errW)
        let input = stdin ?? []
        let writer = Thread {
            var off = 0
            while off < input.count {
                let n = input.withUnsafeBytes { write(inW, $0.baseAddress! + off, input.count - off) }
                if n <= 0 { break }
                off += n
            }
            close(inW)
        }
        writer.start()
        var out: [UInt8] = []
        var err: [UInt8] = []
        var fds = [
            pollfd(fd: outR, events: Int16(POLLIN), revents: 0), pollfd(fd: errR, events: Int16(POLLIN), revents: 0),
        ]
        var open = 2
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        var killed = false
        while open > 0 {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 && !killed {
                kill(-pid, SIGKILL)
                killed = true
            }
            let r = poll(&fds, 2, Int32(max(10, min(1000, left * 1000))))
            if r < 0 && errno != EINTR { break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, 65536) }
                if n <= 0 {
                    close(fds[i].fd)
                    fds[i].fd = -1
                    open -= 1
                    continue
                }
                if i == 0 {
                    if out.count < maxOutput { out += buf[0..<n] }
                } else if err.count < maxOutput {
                    err += buf[0..<n]
                }
            }
        }
        let status = wait(pid)
        return Output(status: killed ? 124 : status, stdout: out, stderr: String(decoding: err, as: UTF8.self))
    }
}
