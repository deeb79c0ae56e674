import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnProjects
@testable import KilnTestSupport

/// Projects as other domains see them, through `ProjectDirectory` (no HTTP).
@Suite struct ProjectDirectoryTests {
    @Test func resolveLookupListAndSearch() async throws {
        let roots = NSTemporaryDirectory() + "kiln-dir-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: roots + "/demo/src", withIntermediateDirectories: true)
        try "func greet() { print(\"hello there\") }\n".write(
            toFile: roots + "/demo/src/a.swift", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: roots) }
        try await withTestApp(.inProcess, configure: { $0.moduleValues["--projects-root"] = [roots] }) { t in
            let service = try #require(t.app.module(ProjectsModule.self)).service
            let projects: any ProjectDirectory = service
            let access = WorkspaceAccess(wsID: "ws_demo", role: .member)
            // Nothing opened yet: no default project.
            await #expect(throws: HTTPError.self) {
                _ = try await projects.resolve(nil, access: access, userID: "usr_a")
            }
            let (p, created) = try await service.load(
                LoadInput(wsId: "ws_demo", path: "demo", gitUrl: nil, name: nil), access: access,
                userID: "usr_a")
            #expect(created && p.name == "demo")
            let ref = try await projects.resolve(nil, access: access, userID: "usr_a")
            #expect(ref.id == p.id && ref.wsID == "ws_demo" && ref.root.hasSuffix("/demo") && ref.vcs == "none")
            #expect(try await projects.lookup(p.id) == ref)
            #expect(try await projects.lookup("prj_nope") == nil)
            // Another workspace does not see it.
            await #expect(throws: HTTPError.self) {
                _ = try await projects.resolve(
                    p.id, access: WorkspaceAccess(wsID: "ws_other", role: .owner), userID: "usr_a")
            }
            #expect(try await projects.list(ref, path: "").map(\.path) == ["src"])
            let (hits, total) = try await projects.search(
                ref, q: "hello there", regex: false, caseSensitive: false, pathGlob: nil, limit: 10)
            #expect(hits.map(\.path) == ["src/a.swift"] && hits.first?.line == 1 && total == 1)
            let (none, all) = try await projects.search(
                ref, q: "hello there", regex: false, caseSensitive: false, pathGlob: nil, limit: 0)
            #expect(none.isEmpty && all == 1)
            #expect(try await projects.symbols(ref, q: "greet", kind: nil, limit: 5).first?.name == "greet")
        }
    }
}
