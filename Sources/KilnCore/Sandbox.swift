import Foundation
import Glibc
import KilnHTTP

/// The one way Kiln starts a process for a user (shell jobs, test runs, terminals, agent commands,
/// and every later kind). With bubblewrap the process gets its own pid, ipc, uts and user
/// namespaces, no capabilities, the system read-only, its project read-write at its own path, a
/// private HOME and /tmp per workspace (kept under `<data-dir>/sandbox/`, so caches survive), a
/// fresh /proc and a minimal /dev; the data dir, other projects, the server's home and other
/// processes are not there at all. The environment is always built, never inherited.
public struct Sandbox: Sendable {
    public enum Mode: String, Sendable, CaseIterable { case auto, bwrap, off }

    public static let modeFlag = "--sandbox"
    public static let networkFlag = "--sandbox-network"
    public static let mountFlag = "--sandbox-mount"
    public static let options: [Config.Option] = [
        .choice(
            modeFlag, env: "KILN_SANDBOX",
            help: "auto (bubblewrap when installed, else unsandboxed with a warning), bwrap (required) or off",
            ["auto", "bwrap", "off"]),
        .choice(
            networkFlag, env: "KILN_SANDBOX_NETWORK", help: "on (default) or off: network inside sandboxes",
            ["on", "off"]),
        .list(
            mountFlag, env: "KILN_SANDBOX_MOUNT",
            help: "another folder sandboxes see read-only (toolchains outside /usr and /opt); repeatable"),
    ]

    /// System folders every sandbox sees read-only (when present on the server).
    static let systemFolders = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"]
    /// Files and folders under the system folders that hold the machine's own secrets.
    static let masked = [
        "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssl/private", "/etc/sudoers",
        "/etc/sudoers.d", "/etc/ssh",
    ]

    public let mode: Mode
    /// The usable bubblewrap (nil: processes run without isolation).
    public let bwrap: String?
    public let network: Bool
    /// `<data-dir>/sandbox`: each workspace's HOME and /tmp.
    public let stateDir: String
    /// The data dir, hidden wherever a mount would otherwise show it.
    let dataDir: String
    let readOnly: [String]
    /// The account a sandboxed process runs as: the server's, or `nobody` when the server runs as root.
    let uid: UInt32
    let gid: UInt32
    public let user: String
    /// Why processes run without isolation although the mode asked for it (nil: all is well).
    public let problem: String?

    public init(
        mode: Mode, bwrap: String?, network: Bool, dataDir: String, extraMounts: [String] = [], problem: String? = nil
    ) {
        self.mode = mode
        self.bwrap = mode == .off ? nil : bwrap
        self.network = network
        self.dataDir = SafePath.real(dataDir) ?? dataDir
        stateDir = self.dataDir + "/sandbox"
        readOnly = Self.systemFolders + extraMounts
        let real = getuid()
        (uid, gid) = real == 0 ? (65534, 65534) : (real, getgid())
        user = Self.accountName(uid) ?? (real == 0 ? "nobody" : "kiln")
        self.problem = problem
    }

    /// The sandbox `config` asks for, after trying bubblewrap once (a kernel without unprivileged
    /// user namespaces has bwrap installed but unusable).
    public static func configured(_ config: Config, dataDir: String) -> Sandbox {
        let mode = config.string(modeFlag).flatMap(Mode.init(rawValue:)) ?? .auto
        let network = config.string(networkFlag) != "off"
        let mounts = config.strings(mountFlag).filter { $0.hasPrefix("/") }
        guard mode != .off else { return Sandbox(mode: .off, bwrap: nil, network: network, dataDir: dataDir) }
        guard let path = ProcessRunner.which("bwrap") else {
            return Sandbox(
                mode: mode, bwrap: nil, network: network, dataDir: dataDir, extraMounts: mounts,
                problem: "bubblewrap is not installed (apt-get install -y bubblewrap)")
        }
        let trial = Sandbox(mode: mode, bwrap: path, network: network, dataDir: dataDir, extraMounts: mounts)
        if let failure = trial.trial() {
            return Sandbox(
                mode: mode, bwrap: nil, network: network, dataDir: dataDir, extraMounts: mounts,
                problem: "bubblewrap cannot make a sandbox here: \(failure)")
        }
        return trial
    }

    /// Whether user processes are isolated.
    public var isolates: Bool { bwrap != nil }

    /// One line for the log, `kiln doctor` and `/readyz`.
    public var summary: String {
        if isolates { return "bubblewrap (\(bwrap!)), network \(network ? "on" : "off"), runs as \(user)" }
        if mode == .off { return "off (--sandbox off): user processes run as the server, seeing what it sees" }
        if mode == .bwrap { return "required but unusable: \(problem ?? "bubblewrap missing"); execution is refused" }
        return "UNSANDBOXED: \(problem ?? "bubblewrap missing"); user processes can read the data dir"
    }

    /// Throws the 503 execution routes answer when the sandbox is required and unusable.
    public func requireUsable() throws {
        guard mode == .bwrap, !isolates else { return }
        throw HTTPError(
            .serviceUnavailable,
            message: "Execution needs the sandbox, and \(problem ?? "bubblewrap is missing"): install the bubblewrap "
                + "package (apt-get install -y bubblewrap) or start Kiln with --sandbox auto",
            details: ["program": "bubblewrap"])
    }

    // MARK: Launching

    /// What to execute for one user process.
    public struct Launch: Sendable {
        public let path: String
        /// Arguments after argv[0].
        public let arguments: [String]
        public let environment: [String: String]
        /// The folder to start in, as the server sees it.
        public let cwd: String

        public init(path: String, arguments: [String], environment: [String: String], cwd: String) {
            self.path = path
            self.arguments = arguments
            self.environment = environment
            self.cwd = cwd
        }
    }

    /// A user process of workspace `workspace`: `argv` run in `cwd` (a folder inside `project`, or
    /// nil for the private HOME), with `environment` added to the built one. `terminal`: the caller
    /// gives it a PTY (keeps the session, so job control works, and sets TERM).
    /// `extraReadOnly`: more folders this one process sees read-only (a notebook kernel's interpreter
    /// and its environment); never the data dir, which stays hidden under any of them.
    public func launch(
        _ argv: [String], workspace: String, project: String?, cwd: String?, environment extra: [String: String] = [:],
        terminal: Bool = false, extraReadOnly: [String] = []
    ) throws -> Launch {
        try requireUsable()
        // The owner is a workspace (or, for Kiln's git in a project folder, the project).
        guard IDs.isValid(workspace, prefix: "ws") || IDs.isValid(workspace, prefix: "prj"), let program = argv.first
        else {
            throw SandboxError(description: "a sandbox needs a workspace and a program")
        }
        if isolates, let cwd {
            guard let project, SafePath.isInside(cwd, root: project) else {
                throw SandboxError(description: "\(cwd) is not inside the project, so not visible in the sandbox")
            }
        }
        let (home, tmp) = try folders(workspace)
        let insideHome = isolates ? "/home/\(user)" : home
        var env = Self.environment(home: insideHome, user: user, terminal: terminal, path: searchPath)
        if !isolates { env["TMPDIR"] = tmp }
        for (k, v) in extra { env[k] = v }
        let resolved =
            program.contains("/") ? program : (Self.which(program, path: env["PATH"] ?? searchPath) ?? program)
        guard let bwrap else {
            return Launch(path: resolved, arguments: Array(argv.dropFirst()), environment: env, cwd: cwd ?? home)
        }
        let more = extraReadOnly.filter {
            $0.hasPrefix("/") && $0 != "/" && FileManager.default.fileExists(atPath: $0)
                && !visibleReadOnly.contains($0)
                && !SafePath.isInside($0, root: dataDir)
        }
        let args = Self.bubblewrapArguments(
            readOnly: visibleReadOnly + more, project: project, home: (home, insideHome), tmp: tmp,
            hide: [dataDir], cwd: cwd ?? insideHome, uid: uid, gid: gid, network: network, newSession: !terminal)
        return Launch(
            path: bwrap, arguments: args + ["--", resolved] + argv.dropFirst(), environment: env, cwd: cwd ?? home)
    }

    /// Signals a process Kiln started and what it started. For a sandboxed one a process group signal
    /// would reach only bubblewrap, whose death ends the sandbox at once (no grace); so the command's
    /// own group inside gets the signal, and SIGKILL also ends the sandbox's init, which takes every
    /// process in it along.
    public static func signal(_ pid: pid_t, _ sig: Int32, sandboxed: Bool) {
        if sandboxed {
            let inits = children(pid)
            for inner in inits {
                for command in children(inner) {
                    kill(-command, sig)
                    kill(command, sig)
                }
                if sig == SIGKILL { kill(inner, SIGKILL) }
            }
            // bubblewrap stays until the command ends, so its exit status is the command's.
            if sig != SIGKILL && !inits.isEmpty { return }
        }
        kill(-pid, sig)
    }

    /// The exit of a sandboxed command: bubblewrap reports a command killed by signal n as 128 + n.
    public static func commandStatus(code: Int?, signal: Int?) -> (code: Int?, signal: Int?) {
        if let code, code > 128, code <= 128 + 64 { return (nil, code - 128) }
        return (code, signal)
    }

    static func children(_ pid: pid_t) -> [pid_t] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8) else {
            return []
        }
        return text.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The tools Kiln itself runs outside the sandbox for a user (git, ssh, scp) get this built
    /// environment rather than the server's: `home` as HOME, nothing of Kiln's settings or keys.
    public static func toolEnvironment(home: String, extra: [String: String] = [:]) -> [String: String] {
        let server = ProcessInfo.processInfo.environment
        var env = environment(
            home: home, user: accountName(getuid()) ?? "kiln", terminal: false,
            path: server["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
        for (k, v) in extra { env[k] = v }
        return env
    }

    static func environment(home: String, user: String, terminal: Bool, path: String) -> [String: String] {
        let server = ProcessInfo.processInfo.environment
        let lang = server["LANG"].flatMap { $0.isEmpty ? nil : $0 } ?? "C.UTF-8"
        var env = ["PATH": path, "HOME": home, "USER": user, "LOGNAME": user, "LANG": lang]
        env["TERM"] = terminal ? "xterm-256color" : "dumb"
        if terminal { env["COLORTERM"] = "truecolor" }
        return env
    }

    /// The server's PATH, less the folders a sandbox does not show.
    var searchPath: String {
        let server = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        guard isolates else { return server }
        let visible = server.split(separator: ":").map(String.init).filter { dir in
            readOnly.contains { dir == $0 || dir.hasPrefix($0 + "/") }
        }
        return visible.isEmpty ? "/usr/local/bin:/usr/bin:/bin" : visible.joined(separator: ":")
    }

    /// The read-only folders that exist here.
    var visibleReadOnly: [String] {
        readOnly.filter { FileManager.default.fileExists(atPath: $0) }
    }

    /// `<state>/<ws>/home` and `<state>/<ws>/tmp`, made 0700 on first use.
    func folders(_ workspace: String) throws -> (String, String) {
        let base = stateDir + "/" + workspace
        for dir in [stateDir, base, base + "/home", base + "/tmp"] {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw SandboxError(description: "cannot make \(dir): \(String(cString: strerror(errno)))")
            }
        }
        return (base + "/home", base + "/tmp")
    }

    public struct SandboxError: Error, CustomStringConvertible {
        public let description: String
    }

    /// The bubblewrap command line (a pure function of its inputs, so tests can read it). Mounts
    /// go shallowest first: a project under /tmp is bound after the private /tmp, not hidden by it.
    static func bubblewrapArguments(
        readOnly: [String], project: String?, home: (outside: String, inside: String), tmp: String, hide: [String],
        cwd: String, uid: UInt32, gid: UInt32, network: Bool, newSession: Bool
    ) -> [String] {
        var args = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if !network { args.append("--unshare-net") }
        args += ["--uid", String(uid), "--gid", String(gid), "--hostname", "kiln", "--cap-drop", "ALL"]
        args.append("--die-with-parent")
        if newSession { args.append("--new-session") }
        // (destination depth, arguments): system folders, masks, /tmp, HOME, the project.
        var mounts: [(String, [String])] = []
        for dir in readOnly {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir) {
                mounts.append((dir, ["--symlink", target, dir]))
            } else {
                mounts.append((dir, ["--ro-bind", dir, dir]))
            }
        }
        // /etc/resolv.conf may point into /run, which a sandbox does not show.
        if let resolv = SafePath.real("/etc/resolv.conf"), resolv != "/etc/resolv.conf",
            !readOnly.contains(where: { resolv.hasPrefix($0 + "/") })
        {
            mounts.append((resolv, ["--ro-bind", resolv, resolv]))
        }
        mounts.append(("/tmp", ["--bind", tmp, "/tmp"]))
        mounts.append((home.inside, ["--bind", home.outside, home.inside]))
        if let project { mounts.append((project, ["--bind", project, project])) }
        let depth = { (p: String) in p.split(separator: "/").count }
        mounts.sort { depth($0.0) < depth($1.0) }
        for (_, m) in mounts { args += m }
        // Masks go last, over whatever mount would show them (the private /tmp and HOME show nothing
        // of the server's).
        let shown = readOnly + (project.map { [$0] } ?? [])
        for path in masked + hide where shown.contains(where: { path == $0 || path.hasPrefix($0 + "/") }) {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { continue }
            args += isDir.boolValue ? ["--tmpfs", path] : ["--ro-bind", "/dev/null", path]
        }
        args += ["--proc", "/proc", "--dev", "/dev", "--chdir", cwd]
        return args
    }

    /// Runs `true` in a sandbox once; the failure text, or nil when it worked.
    func trial() -> String? {
        let dir = NSTemporaryDirectory() + "kiln-sandbox-trial-" + IDs.randomBase62(8)
        guard mkdir(dir, 0o700) == 0 else { return "cannot make a trial folder" }
        defer { rmdir(dir) }
        let args = Self.bubblewrapArguments(
            readOnly: visibleReadOnly, project: nil, home: (dir, "/home/\(user)"), tmp: dir, hide: [dataDir],
            cwd: "/", uid: uid, gid: gid, network: network, newSession: true)
        guard let bwrap else { return "no bubblewrap" }
        let out = try? ProcessRunner.runBlocking(
            bwrap, args + ["--", "/bin/sh", "-c", "exit 0"], stdin: nil, cwd: "/",
            environment: ["PATH": "/usr/bin:/bin"], timeout: 10, maxOutput: 4096)
        guard let out else { return "bubblewrap did not start" }
        guard out.status == 0 else {
            return String(out.stderr.trimmingCharacters(in: .whitespacesAndNewlines).prefix(200))
        }
        return nil
    }

    static func which(_ program: String, path: String) -> String? {
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(program)") {
            return "\(dir)/\(program)"
        }
        return nil
    }

    static func accountName(_ uid: UInt32) -> String? {
        guard let pw = getpwuid(uid), let name = pw.pointee.pw_name else { return nil }
        return String(validatingCString: name)
    }
}
