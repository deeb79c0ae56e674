import Foundation
import KilnCore
import KilnHTTP

/// One headless Chromium for one run: started through the sandbox like every process Kiln starts for
/// a user, driven over a pipe (no debugging port), with a profile folder of its own that is removed
/// when the browser is gone. `stop` kills the whole sandbox (or process group), so no Chromium
/// process outlives its run.
final class ChromiumProcess: Sendable {
    let pid: pid_t
    let sandboxed: Bool
    let cdp: CDPConnection
    /// The profile folder as the server sees it.
    let profile: String
    private let exited = Exited()

    final class Exited: Sendable {
        /// Reaped, its pipes closed and its profile removed.
        let done = DispatchSemaphore(value: 0)
        /// And no process of it left at all (the kernel takes a sandbox's processes down a moment later).
        let gone = DispatchSemaphore(value: 0)
    }

    /// Chromium's own names on Debian, Ubuntu and elsewhere, tried in this order on PATH.
    static let names = ["chromium", "chromium-browser", "google-chrome", "headless_shell"]

    static func find(_ configured: String?) -> String? {
        if let configured { return ProcessRunner.which(configured) }
        return names.lazy.compactMap { ProcessRunner.which($0) }.first
    }

    /// `allowlist`: every connection of the browser to an origin not on it goes to a proxy that is
    /// not there, so it fails whatever made it (WebSockets and workers too, which the DevTools
    /// protocol cannot pause); the requests it can pause are checked and reported one by one.
    static func start(
        binary: String, sandbox: Sandbox, wsID: String, runID: String, viewport: (Int, Int), allowlist: Allowlist,
        pins: [(host: String, address: IPAddress)] = []
    ) throws -> ChromiumProcess {
        // The profile lives in the workspace's private home of the sandbox (its path inside is $HOME).
        let probe = try sandbox.launch(["true"], workspace: wsID, project: nil, cwd: nil)
        let insideHome = probe.environment["HOME"] ?? "/tmp"
        let profileName = ".kiln-browser/" + runID
        let profile = probe.cwd + "/" + profileName
        try FileManager.default.createDirectory(
            atPath: profile, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let argv =
            [
                binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", "--user-data-dir=\(insideHome)/\(profileName)", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                "--metrics-recording-only", "--password-store=basic", "--use-mock-keychain",
                "--window-size=\(viewport.0),\(viewport.1)", "--proxy-server=\(Self.nowhere)",
                "--proxy-bypass-list=\(Self.bypass(allowlist))",
            ] + (pins.isEmpty ? [] : ["--host-resolver-rules=\(Self.resolverRules(pins))"]) + ["about:blank"]
        let launch = try sandbox.launch(argv, workspace: wsID, project: nil, cwd: nil)
        let (commandsRead, commandsWrite) = try ProcessRunner.pipePair()
        let (answersRead, answersWrite) = try ProcessRunner.pipePair()
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer {
            close(commandsRead)
            close(answersWrite)
            if devnull >= 0 { close(devnull) }
        }
        let pid: pid_t
        do {
            pid = try ProcessRunner.spawn(
                launch, stdin: devnull, stdout: devnull, stderr: devnull, extra: [commandsRead, answersWrite])
        } catch {
            close(commandsWrite)
            close(answersRead)
            try? FileManager.default.removeItem(atPath: profile)
            throw error
        }
        let cdp = CDPConnection(toBrowser: commandsWrite, fromBrowser: answersRead)
        let browser = ChromiumProcess(
            pid: pid, sandboxed: sandbox.bwrap != nil && launch.path == sandbox.bwrap, cdp: cdp, profile: profile)
        let exited = browser.exited
        // Reaped on a thread of its own; then the pipes close and the profile goes.
        Thread {
            _ = ProcessRunner.wait(pid)
            cdp.close()
            close(commandsWrite)
            close(answersRead)
            ChromiumProcess.remove(profile)
            exited.done.signal()
            // The sandbox's end kills what ran in it, but the kernel takes those processes down a
            // moment later: the browser's slot is free once none of them is left.
            // (Reading a dying process's command line waits for it, so this also waits out the kernel.)
            for _ in 0..<300 where ChromiumProcess.lingering(runID) { usleep(10_000) }
            // Again, in case a process still dying had a file open in it the first time.
            ChromiumProcess.remove(profile)
            exited.gone.signal()
        }.start()
        return browser
    }

    /// Removes a profile folder, trying a few times while a dying process may still hold files in it.
    static func remove(_ profile: String) {
        for _ in 0..<10 {
            try? FileManager.default.removeItem(atPath: profile)
            if !FileManager.default.fileExists(atPath: profile) { return }
            usleep(20_000)
        }
    }

    /// A proxy that refuses every connection (the discard port of an address nothing listens on).
    static let nowhere = "http://127.0.0.1:9"

    /// Chromium's bypass list for the allowlist; `<-loopback>` first, so loopback addresses go to the
    /// proxy too unless an entry names them.
    static func bypass(_ allowlist: Allowlist) -> String {
        (["<-loopback>"]
            + allowlist.entries.map { e in
                e.scheme + "://" + e.host + (e.port.map { ":\($0)" } ?? "")
            }).joined(separator: ";")
    }

    /// `MAP host address` for each allowlisted name, so the browser connects to the very address the
    /// outbound guard checked (a name cannot answer differently a moment later: no DNS rebinding).
    static func resolverRules(_ pins: [(host: String, address: IPAddress)]) -> String {
        pins.map { "MAP \($0.host) " + ($0.address.isV4 ? "\($0.address)" : "[\($0.address)]") }.joined(separator: ",")
    }

    /// Whether any process still carries this run's profile on its command line. Read with plain
    /// system calls into one buffer: this runs every 10 ms while a browser is torn down.
    static func lingering(_ runID: String) -> Bool {
        let marker = Array(".kiln-browser/\(runID)".utf8)
        guard let dir = opendir("/proc") else { return false }
        defer { closedir(dir) }
        var buf = [UInt8](repeating: 0, count: 8192)
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let first = name.utf8.first, first >= 48, first <= 57 else { continue }
            let fd = open("/proc/\(name)/cmdline", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            close(fd)
            guard n >= marker.count else { continue }
            if (0...(n - marker.count)).contains(where: { i in
                buf[i] == marker[0] && buf[i..<i + marker.count].elementsEqual(marker)
            }) {
                return true
            }
        }
        return false
    }

    private init(pid: pid_t, sandboxed: Bool, cdp: CDPConnection, profile: String) {
        self.pid = pid
        self.sandboxed = sandboxed
        self.cdp = cdp
        self.profile = profile
    }

    /// Kills the browser and everything it started, and waits until it is reaped and its profile gone.
    func stop() async {
        if sandboxed {
            Sandbox.signal(pid, SIGKILL, sandboxed: true)
        }
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
        await Self.wait(exited.done)
    }

    /// Waits until no process of this browser is left (after `stop`).
    func gone() async { await Self.wait(exited.gone) }

    /// Waits for a one-time signal without holding a thread of the pool (and leaves it signalled).
    static func wait(_ s: DispatchSemaphore) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                s.wait()
                s.signal()
                c.resume()
            }
        }
    }
}
