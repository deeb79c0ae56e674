import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnAccount
@testable import KilnApp
@testable import KilnTestSupport

/// API keys on their own: made, resolved to a principal with their scopes, revoked (no HTTP).
@Suite struct AccountServiceTests {
    @Test func keysResolveToTheirScopesUntilRevoked() async throws {
        try await withTestApp(.inProcess) { t in
            let account = try #require(t.app.module(AccountModule.self)).service
            let user = try await makeUser(t, "keys@example.com")
            let (key, token) = try await account.createKey(
                userID: user.id,
                APIKeyInput(
                    name: "ci", scopes: ["project:read", "project:read"],
                    expiresInDays: 1), ip: "")
            #expect(
                key.scopes == ["project:read"] && token.hasPrefix("kf_") && token.utf8.count == 43
                    && key.prefix == String(token.prefix(7)))
            let p = try #require(try await account.resolve(token: token, ip: "10.0.0.1"))
            #expect(
                p.userID == user.id && p.apiKeyID == key.id && p.scopeAllows("project:read")
                    && !p.scopeAllows("shell:run"))
            #expect(try await account.resolve(token: "kf_" + String(repeating: "A", count: 40), ip: "") == nil)
            #expect(try await account.resolve(token: token + "x", ip: "") == nil)
            await #expect(throws: HTTPError.self) {
                _ = try await account.createKey(
                    userID: user.id, APIKeyInput(name: "x", scopes: ["no:such"], expiresInDays: nil), ip: "")
            }
            #expect(try await account.keys(userID: user.id, page: PageRequest()).items.map(\.id) == [key.id])
            try await account.revokeKey(userID: user.id, id: key.id, ip: "")
            #expect(try await account.resolve(token: token, ip: "") == nil)
            await #expect(throws: HTTPError.self) { try await account.revokeKey(userID: user.id, id: key.id, ip: "") }
        }
    }
}
