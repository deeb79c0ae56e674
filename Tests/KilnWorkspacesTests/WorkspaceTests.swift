import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnTestSupport
@testable import KilnWorkspaces

@Suite struct WorkspaceTests {
    @Test func membersRolesAndTheLastOwner() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            _ = try await makeUser(t, "o@example.com")
            let bob = try await makeUser(t, "bob@example.com")
            let o = Agent(t)
            let b = Agent(t)
            try await o.login("o@example.com", "a long enough password")
            try await b.login("bob@example.com", "a long enough password")
            let created = try await o.call("POST", "/api/workspaces", json: ["name": "Team"])
            #expect(created.status == 201 && created.json["role"] as? String == "owner")
            let ws = try #require(created.json["id"] as? String)
            #expect(
                try await o.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": "bob@example.com", "role": "admin"]
                ).status == 201)
            #expect(
                try await o.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": "bob@example.com", "role": "admin"]
                ).status == 409)
            #expect(
                try await o.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": "nobody@example.com", "role": "admin"]
                ).status == 404)
            #expect(
                try await o.call(
                    "POST", "/api/workspaces/\(ws)/members", json: ["email": "bob@example.com", "role": "king"]
                ).status == 400)
            // An admin may rename but not delete, and may not make owners.
            #expect(try await b.call("PATCH", "/api/workspaces/\(ws)", json: ["name": "Team 2"]).status == 200)
            #expect(try await b.call("DELETE", "/api/workspaces/\(ws)").status == 403)
            let me = try await workspaceOwnerID(t, "o@example.com")
            #expect(
                try await b.call("PATCH", "/api/workspaces/\(ws)/members/\(me)", json: ["role": "viewer"]).status == 403
            )
            // The last owner stays.
            #expect(
                try await o.call("PATCH", "/api/workspaces/\(ws)/members/\(me)", json: ["role": "admin"]).status == 409)
            #expect(
                try await o.call("PATCH", "/api/workspaces/\(ws)/members/\(bob.id)", json: ["role": "owner"]).status
                    == 200)
            #expect(
                try await o.call("PATCH", "/api/workspaces/\(ws)/members/\(me)", json: ["role": "admin"]).status == 200)
            let members = try await b.call("GET", "/api/workspaces/\(ws)/members")
            #expect((members.json["items"] as? [[String: Any]])?.count == 2)
            let audit = try await b.call("GET", "/api/audit?ws_id=\(ws)&action=member.role_changed")
            #expect((audit.json["items"] as? [[String: Any]])?.count == 2)
            #expect(try await b.call("GET", "/api/audit?ws_id=\(ws)&since=yesterday").status == 400)
            #expect(try await b.call("DELETE", "/api/workspaces/\(ws)").status == 204)
            #expect(try await b.call("GET", "/api/workspaces/\(ws)").status == 404)
        }
    }
}
