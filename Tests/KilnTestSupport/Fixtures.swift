import Foundation
import Glibc
import KilnApp
import KilnCore
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnAuth

/// Makes a verified account with a password, through the service (the setup-link path).
func makeUser(_ t: TestApp, _ email: String, password: String = "a long enough password") async throws -> User {
    let auth = try #require(t.app.module(AuthModule.self)).service
    let (_, token) = try await auth.createUser(email: email, name: String(email.split(separator: "@")[0]))
    return try await auth.completeSetup(SetupInput(token: token, email: nil, name: nil, password: password))
}

/// The instance's first account (the setup link): its owner and first instance admin.
func makeAdmin(
    _ t: TestApp, _ email: String = "admin@example.com", password: String = "a long enough password"
)
    async throws -> User
{
    let auth = try #require(t.app.module(AuthModule.self)).service
    let token = try #require(try auth.makeOwnerSetupToken())
    return try await auth.completeSetup(SetupInput(token: token, email: email, name: "Admin", password: password))
}

func workspaceOf(_ a: Agent) async throws -> String {
    let r = try await a.call("GET", "/api/workspaces")
    return try #require(((r.json["items"] as? [[String: Any]])?.first)?["id"] as? String)
}

func errorCode(_ r: HTTPResult) -> String? { (r.json["error"] as? [String: Any])?["code"] as? String }

/// A project tree made by the test: a git repository with history, ignores, symlinks, binaries.
func makeRepo(_ root: String) async throws -> String {
    let repo = root + "/app"
    let fm = FileManager.default
    func write(_ rel: String, _ text: String) throws {
        let p = repo + "/" + rel
        try fm.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: p))
    }
    try write("README.md", "# App\nline two\nline three\n")
    try write("src/main.swift", "func main() {\n    print(\"hi\")\n}\n")
    try write("src/util.swift", "struct Util {}\n")
    try write("build/out.o", "obj")
    try write("logs/a.log", "log")
    try write("logs/keep.log", "keep")
    try write("src/gen/.gitignore", "*.gen\n")
    try write("src/gen/x.gen", "generated")
    try write(".gitignore", "build/\n*.log\n!keep.log\n")
    try Data([0, 1, 2, 255, 0]).write(to: URL(fileURLWithPath: repo + "/image.bin"))
    try Data([0x63, 0x61, 0x66, 0xE9, 0x0A]).write(to: URL(fileURLWithPath: repo + "/latin1.txt"))  // "café" in Latin-1
    try Data(repeating: 0x61, count: 20 << 20).write(to: URL(fileURLWithPath: repo + "/big.txt"))
    try fm.createSymbolicLink(atPath: repo + "/inside-link", withDestinationPath: repo + "/src")
    try fm.createSymbolicLink(atPath: repo + "/outside-link", withDestinationPath: "/etc")
    try fm.createSymbolicLink(atPath: repo + "/passwd-link", withDestinationPath: "/etc/passwd")
    // A file name that is not UTF-8.
    let bad = repo + "/name-\u{FFFD}"
    _ = bad
    var name: [CChar] = Array((repo + "/bad-").utf8CString.dropLast()) + [CChar(bitPattern: 0xFF), 0]
    let fd = open(&name, O_CREAT | O_WRONLY, 0o644)
    close(fd)
    for args in [
        ["init", "-q", "-b", "main"],
        ["-c", "user.email=t@example.com", "-c", "user.name=T", "add", "README.md", "src", ".gitignore"],
        ["-c", "user.email=t@example.com", "-c", "user.name=T", "commit", "-qm", "first"],
    ] {
        let r = try await ProcessRunner.run("git", ["-C", repo] + args)
        try #require(r.status == 0, "git \(args): \(r.stderr)")
    }
    try write("README.md", "# App\nline two changed\nline three\n")
    try write("notes.txt", "untracked")
    return repo
}

/// A project (not a git repository) holding a copy of this package's sources, a vendored second copy
/// of one module (files of identical content), plus test files.
func makeSourceTree(_ roots: String) throws -> String {
    let dir = roots + "/tree"
    let fm = FileManager.default
    try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try fm.copyItem(atPath: TestApp.packageRoot + "/Sources", toPath: dir + "/Sources")
    try fm.createDirectory(atPath: dir + "/vendor", withIntermediateDirectories: true)
    try fm.copyItem(atPath: TestApp.packageRoot + "/Sources/KilnHTTP", toPath: dir + "/vendor/KilnHTTP")
    let files: [String: String] = [
        "poly/app.py":
            "MAX_RETRIES = 3\n\nclass Parser:\n    def parse_line(self, line):\n        return line\n\ndef main():\n    pass\n",
        "poly/main.go":
            "package main\n\nconst Version = \"1\"\n\ntype Server struct{}\n\ntype Handler interface {\n\tServe()\n}\n\nfunc (s *Server) Start() {}\n\nfunc main() {}\n",
        "poly/lib.rs":
            "pub const LIMIT: usize = 10;\n\npub struct Engine {}\n\npub trait Runner {}\n\nimpl Engine {\n    pub fn run_engine(&self) {}\n}\n\nfn helper() {}\n",
        "poly/web.js":
            "export const API_ROOT = '/api';\n\nexport class Widget {\n  render(props) {\n    return props;\n  }\n}\n\nexport function mountWidget() {}\n",
        "poly/App.java":
            "public class App {\n    public static final int PORT = 8080;\n    public static void main(String[] args) {}\n}\n\ninterface Greeter {}\n",
        "poly/net.c":
            "#define BUFFER_SIZE 64\n\nstruct conn {\n    int fd;\n};\n\nint open_conn(const char *host)\n{\n    return 0;\n}\n",
        "poly/Model.swift":
            "public protocol Storable {}\n\npublic struct Invoice: Storable {\n    public let TAX_RATE = 0\n    func total() -> Int { 0 }\n}\n\nfunc formatInvoice(_ i: Invoice) -> String { \"\" }\n",
        "secrets/config.py":
            "AWS_KEY = \"AKIAIOSFODNN7EXAMPLE\"\napi_key = \"9f8e7d6c5b4a39281706f5e4d3c2b1a0\"\n# TODO: rotate\n",
        "secrets/id_rsa": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
        "secrets/merge.txt": "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> topic\n",
        "ignored/skip.txt": "zqxjkw-ignored-marker\n",
        ".gitignore": "ignored/\n",
    ]
    for (rel, text) in files {
        let p = dir + "/" + rel
        try fm.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
    }
    try Data([0, 1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/poly/blob.bin"))
    return dir
}

/// The account id behind an email address.
func workspaceOwnerID(_ t: TestApp, _ email: String) async throws -> String {
    let auth = try #require(t.app.module(AuthModule.self)).service
    return try #require(try await auth.user(email: email)?.id)
}
