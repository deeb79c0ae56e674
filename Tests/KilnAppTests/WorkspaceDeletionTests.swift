import Foundation
import KilnCore
import Testing

@testable import KilnApp
@testable import KilnTestSupport

/// Deleting a workspace takes what the domains kept for it along, in the same transaction: its
/// secrets and MCP credentials (sealed values that must not outlive it), policies, browser
/// allowlist, invitations, activity, budget limits and default agent preferences. Another workspace's
/// stay; the audit log keeps the deletion.
@Suite struct WorkspaceDeletionTests {
    @Test func aDeletedWorkspaceTakesItsSecretsCredentialsAndSettingsAlong() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let other = try await f.a.call("POST", "/api/workspaces", json: ["name": "keeps its own"])
            let kept = try #require(other.json["id"] as? String, "\(other.text)")
            for ws in [f.ws, kept] {
                let made: [(String, String, [String: Any])] = [
                    ("POST", "/api/secrets/DEPLOY_TOKEN", ["ws_id": ws, "value": "a secret value 123"]),
                    ("POST", "/api/mcp/tokens", ["ws_id": ws, "name": "remote", "token": "not-a-real-token"]),
                    (
                        "PUT", "/api/policies",
                        ["ws_id": ws, "rules": [["id": "no-rm", "action": "shell.run", "effect": "deny"]]]
                    ),
                    ("PUT", "/api/browser/allowlist", ["ws_id": ws, "entries": [["pattern": "https://example.com"]]]),
                    ("PUT", "/api/budget/limits", ["ws_id": ws, "daily_usd_micros": 5_000_000]),
                    ("POST", "/api/collab/invite", ["ws_id": ws, "email": "guest@example.com", "role": "member"]),
                    ("POST", "/api/agent/prefs", ["ws_id": ws, "scope": "workspace", "max_steps": 7]),
                ]
                for (method, path, body) in made {
                    let r = try await f.a.call(method, path, json: body)
                    #expect((200..<300).contains(r.status), "\(method) \(path): \(r.text)")
                }
            }
            let tables = [
                ("secrets", "ws_id"), ("secret_versions", "ws_id"), ("mcp_tokens", "ws_id"),
                ("policy_versions", "ws_id"), ("browser_allowlist", "ws_id"), ("budget_limits", "ws_id"),
                ("ws_invitations", "ws_id"), ("activity", "ws_id"), ("agent_prefs", "scope_id"),
            ]
            func rows(_ ws: String) async throws -> [String: Int] {
                try await f.t.app.services.db.read { tx in
                    var out: [String: Int] = [:]
                    for (table, column) in tables {
                        out[table] = try tx.first("SELECT COUNT(*) AS n FROM \(table) WHERE \(column) = ?", ws)?
                            .int("n")
                    }
                    return out
                }
            }
            let before = try await rows(f.ws)
            for (table, _) in tables where table != "activity" {
                #expect((before[table] ?? 0) > 0, "\(table) holds nothing of the workspace to begin with")
            }

            #expect(try await f.a.call("DELETE", "/api/workspaces/\(f.ws)").status == 204)
            let after = try await rows(f.ws)
            #expect(after.values.allSatisfy { $0 == 0 }, "left behind: \(after.filter { $0.value > 0 })")
            let untouched = try await rows(kept)
            for (table, _) in tables where table != "activity" {
                #expect((untouched[table] ?? 0) > 0, "\(table) lost the other workspace's rows")
            }
            let audit = try await f.t.app.services.db.read { tx in
                try tx.first("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'workspace.deleted'")?.int("n")
            }
            #expect(audit == 1)
        }
    }
}
