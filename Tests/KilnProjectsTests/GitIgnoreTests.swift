import Foundation
import KilnCore
import Testing

@testable import KilnAuth
@testable import KilnProjects

@Suite struct GitIgnoreTests {
    @Test(arguments: [
        ("*.log", "a/b/x.log", true), ("*.log", "x.log.txt", false), ("/build", "build", true),
        ("/build", "src/build", false),
        ("doc/*.txt", "doc/a.txt", true), ("doc/*.txt", "doc/x/a.txt", false), ("**/foo", "a/b/foo", true),
        ("**/foo", "foo", true),
        ("a/**/b", "a/b", true), ("a/**/b", "a/x/y/b", true), ("abc/**", "abc/x/y", true), ("a?c", "abc", true),
        ("a?c", "a/c", false),
        ("[a-c]x", "bx", true), ("[!a-c]x", "bx", false), ("[!a-c]x", "dx", true), ("\\#keep", "#keep", true),
    ])
    func wildmatch(_ pattern: String, _ path: String, _ want: Bool) {
        var g = GitIgnore()
        g.add(pattern, base: "")
        #expect(g.isIgnored(path, isDirectory: false) == want, "\(pattern) vs \(path)")
    }

    @Test(.enabled(if: ProcessRunner.which("git") != nil)) func agreesWithGitOnARealTree() async throws {
        let root = NSTemporaryDirectory() + "kiln-gi-\(UUID().uuidString)"
        let fm = FileManager.default
        let files = [
            "README.md", "app.log", "keep.log", "build/out.o", "src/main.swift", "src/gen/x.swift",
            "src/gen/keep.swift",
            "src/debug.log", "docs/a.txt", "docs/deep/b.txt", "docs/notes.md", "vendor/lib/a.c", "vendor/lib/b.h",
            "tmp/x", "node_modules/p/index.js", "a/b/c/secret.key", "a/b/c/public.key", "data/x.csv", "data/keep/y.csv",
            "sub/.gitignore", "sub/ignored.txt", "sub/kept.txt", "sub/inner/ignored.txt", "sub/inner/other.md",
            "space name.txt", "trail.txt", "[br].txt", "deep/1/2/3/target.bin", "deep/1/keep.bin",
        ]
        for f in files {
            let p = root + "/" + f
            try fm.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if !f.hasSuffix(".gitignore") { try Data("x".utf8).write(to: URL(fileURLWithPath: p)) }
        }
        try """
        # comment
        *.log
        !keep.log
        /build/
        src/gen/*
        !src/gen/keep.swift
        docs/**/*.txt
        vendor/
        !vendor/lib/a.c
        tmp
        node_modules/
        a/**/secret.key
        data/*
        !data/keep/
        trail.txt   
        \\[br].txt
        deep/**/target.bin
        """.write(toFile: root + "/.gitignore", atomically: true, encoding: .utf8)
        try "ignored.txt\n!inner/ignored.txt\n".write(
            toFile: root + "/sub/.gitignore", atomically: true, encoding: .utf8)
        _ = try await ProcessRunner.run("git", ["init", "-q", root])
        let out = try await ProcessRunner.run("git", ["-C", root, "ls-files", "--others", "--exclude-standard"])
        let gitKept = Set(out.stdoutText.split(separator: "\n").map(String.init))

        var g = GitIgnore()
        g.add(try String(contentsOfFile: root + "/.gitignore", encoding: .utf8), base: "")
        g.add(try String(contentsOfFile: root + "/sub/.gitignore", encoding: .utf8), base: "sub")
        let all = files + [".gitignore"]
        let ours = Set(all.filter { !g.isIgnored($0, isDirectory: false) })
        #expect(
            ours == gitKept,
            "only ours: \(ours.subtracting(gitKept).sorted()), only git: \(gitKept.subtracting(ours).sorted())")
    }
}
