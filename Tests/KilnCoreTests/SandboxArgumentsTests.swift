import Foundation
import Testing

@testable import KilnCore

@Suite struct SandboxArgumentsTests {
    func args(project: String? = "/tmp/roots/proj", network: Bool = true, newSession: Bool = true) -> [String] {
        Sandbox.bubblewrapArguments(
            readOnly: ["/usr", "/etc"], project: project, home: ("/data/sandbox/ws_1/home", "/home/kiln"),
            tmp: "/data/sandbox/ws_1/tmp", hide: ["/tmp/roots/proj/.kiln"], cwd: "/tmp/roots/proj", uid: 1000,
            gid: 1000, network: network, newSession: newSession)
    }

    func index(_ a: [String], _ flag: String, _ dest: String) -> Int? {
        a.indices.first { a[$0] == flag && a.indices.contains($0 + 2) && a[$0 + 2] == dest }
    }

    @Test func namespacesCapabilitiesAndSession() {
        let a = args()
        for flag in ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"] {
            #expect(a.contains(flag), "\(flag)")
        }
        #expect(a.firstIndex(of: "--cap-drop").map { a[$0 + 1] } == "ALL")
        #expect(a.contains("--new-session") && !args(newSession: false).contains("--new-session"))
        #expect(!a.contains("--unshare-net") && args(network: false).contains("--unshare-net"))
        #expect(a.suffix(6) == ["--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp/roots/proj"])
    }

    /// The private /tmp goes on before a project that lives under /tmp, or it would hide it.
    @Test func mountsGoShallowestFirstAndTheProjectIsWritable() throws {
        let a = args()
        let tmp = try #require(index(a, "--bind", "/tmp"))
        let project = try #require(index(a, "--bind", "/tmp/roots/proj"))
        let usr = try #require(index(a, "--ro-bind", "/usr"))
        #expect(usr < tmp && tmp < project)
        #expect(a[tmp + 1] == "/data/sandbox/ws_1/tmp")
        #expect(index(a, "--bind", "/home/kiln").map { a[$0 + 1] } == "/data/sandbox/ws_1/home")
        #expect(index(a, "--ro-bind", "/etc") != nil && index(a, "--bind", "/etc") == nil)
        // Nothing of the data dir is bound.
        #expect(!a.contains { $0.hasPrefix("/data") && !$0.hasPrefix("/data/sandbox/ws_1/") })
        let noProject = args(project: nil)
        #expect(index(noProject, "--bind", "/tmp/roots/proj") == nil)
    }

    @Test func secretsUnderTheSystemFoldersAreMasked() {
        let a = Sandbox.bubblewrapArguments(
            readOnly: ["/etc"], project: nil, home: ("/h", "/home/kiln"), tmp: "/t", hide: [], cwd: "/home/kiln",
            uid: 1, gid: 1, network: true, newSession: true)
        if FileManager.default.fileExists(atPath: "/etc/shadow") {
            #expect(index(a, "--ro-bind", "/etc/shadow").map { a[$0 + 1] } == "/dev/null")
            #expect(index(a, "--ro-bind", "/etc/shadow")! > index(a, "--ro-bind", "/etc")!)
        }
    }

    @Test func theEnvironmentIsBuiltNotInherited() {
        setenv("KILN_MASTER_TEST", "secret", 1)
        setenv("SSH_AUTH_SOCK", "/tmp/agent.sock", 1)
        let env = Sandbox.environment(home: "/home/kiln", user: "kiln", terminal: true, path: "/usr/bin:/bin")
        #expect(Set(env.keys) == ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TERM", "COLORTERM"])
        #expect(env["TERM"] == "xterm-256color")
        let tool = Sandbox.toolEnvironment(home: "/x")
        #expect(tool["KILN_MASTER_TEST"] == nil && tool["SSH_AUTH_SOCK"] == nil && tool["HOME"] == "/x")
        unsetenv("SSH_AUTH_SOCK")
    }

    @Test func aRequiredSandboxThatIsMissingRefusesWith503() {
        let s = Sandbox(
            mode: .bwrap, bwrap: nil, network: true, dataDir: "/tmp", problem: "bubblewrap is not installed")
        #expect(throws: (any Error).self) { try s.requireUsable() }
        #expect(throws: Never.self) {
            try Sandbox(mode: .off, bwrap: nil, network: true, dataDir: "/tmp").requireUsable()
        }
        #expect(s.summary.contains("refused"))
    }
}
