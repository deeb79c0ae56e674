import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnTestSupport
@testable import KilnWorkspaces

/// Workspaces on their own: roles as the access check reads them, and the last owner (no HTTP).
@Suite struct WorkspaceServiceTests {
    @Test func rolesAndTheLastOwner() async throws {
        try await withTestApp(.inProcess) { t in
            let service = try #require(t.app.module(WorkspacesModule.self)).service
            let owner = try await makeUser(t, "own@example.com")
            let other = try await makeUser(t, "oth@example.com")
            // Granting owner needs a recent step-up: this session confirmed itself a minute ago.
            let me = Principal(
                userID: owner.id, kind: .session(id: "ses_x"), mfaVerifiedAt: t.app.services.clock.now() - 60)
            let ws = try await service.create(name: "  Team  ", by: me, ip: "127.0.0.1")
            #expect(ws.name == "Team" && ws.role == .owner)
            #expect(try await service.role(userID: owner.id, wsID: ws.id) == .owner)
            #expect(try await service.role(userID: other.id, wsID: ws.id) == nil)
            _ = try await service.addMember(
                ws.id, email: other.email, userID: nil, role: .viewer, by: me, actorRole: .owner, ip: "")
            #expect(try await service.highestRole(userID: other.id) == .owner)  // their own workspace
            await #expect(throws: HTTPError.self) {
                _ = try await service.addMember(
                    ws.id, email: nil, userID: other.id, role: .owner, by: me, actorRole: .admin, ip: "")
            }
            await #expect(throws: HTTPError.self) {
                _ = try await service.changeRole(
                    ws.id, userID: owner.id, to: .member, by: me, actorRole: .owner, ip: "")
            }
            _ = try await service.changeRole(ws.id, userID: other.id, to: .owner, by: me, actorRole: .owner, ip: "")
            _ = try await service.changeRole(ws.id, userID: owner.id, to: .member, by: me, actorRole: .owner, ip: "")
            #expect(try await service.role(userID: owner.id, wsID: ws.id) == .member)
            // Without a fresh confirmation, granting owner is refused.
            let stale = Principal(userID: other.id, kind: .session(id: "ses_y"))
            await #expect(throws: HTTPError.self) {
                _ = try await service.changeRole(
                    ws.id, userID: owner.id, to: .owner, by: stale, actorRole: .owner, ip: "")
            }
            await #expect(throws: HTTPError.self) { _ = try await service.create(name: " \u{7}", by: me, ip: "") }
        }
    }
}
