import Foundation
import Glibc
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnTestSupport

/// Hygiene of the whole server: response headers, readiness without writes, file modes.
@Suite struct HardeningTests {
    @Test func pagesCarryAContentSecurityPolicyAndNoFraming() async throws {
        try await withTestApp(.inProcess) { t in
            let page = try await t.request("GET", "/login.html")
            #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)
            let csp = try #require(page.headers["content-security-policy"])
            for part in ["default-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"] {
                #expect(csp.contains(part), "\(part)")
            }
            #expect(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"))
            #expect(page.headers["x-frame-options"] == "DENY" && page.headers["referrer-policy"] == "no-referrer")
            #expect(page.headers["x-content-type-options"] == "nosniff")
            let api = try await t.request("GET", "/healthz")
            #expect(api.headers["content-security-policy"] == nil && api.headers["x-content-type-options"] == "nosniff")
            #expect(api.headers["strict-transport-security"] == nil)  // plain HTTP, no --secure-cookies
        }
        try await withTestApp(.inProcess, configure: { $0.secureCookies = true }) { t in
            let r = try await t.request("GET", "/healthz")
            #expect(r.headers["strict-transport-security"]?.hasPrefix("max-age=") == true)
        }
    }

    /// On a manual clock, so a slow machine cannot stretch the twenty calls past the window.
    @Test func readinessIsProbedAtMostEveryFiveSeconds() async throws {
        let clock = ManualClock(Date())
        let t = try TestApp(.inProcess, clock: clock)
        try await using(t) { t in
            func probedAt() async throws -> Int64? {
                try await t.app.services.db.read { tx in
                    try tx.first("SELECT checked_at FROM core_probe WHERE id = 1")?.int64("checked_at")
                }
            }
            #expect(try await t.request("GET", "/readyz").status == 200)
            let first = try #require(try await probedAt())
            for _ in 0..<20 { #expect(try await t.request("GET", "/readyz").status == 200) }
            clock.advance(by: 4.9)
            #expect(try await t.request("GET", "/readyz").status == 200)
            #expect(try await probedAt() == first)
            clock.advance(by: 0.2)
            #expect(try await t.request("GET", "/readyz").status == 200)
            #expect(try await probedAt() != first)
        }
    }

    @Test func theDataDirAndItsSecretsAreTheServersOwn() async throws {
        try await withTestApp(.socket) { t in
            _ = try await makeUser(t, "modes@example.com")  // a write, so the WAL exists
            func mode(_ f: String) -> mode_t? {
                var st = stat()
                return stat(t.dataDir + f, &st) == 0 ? st.st_mode & 0o777 : nil
            }
            #expect(mode("") == 0o700)
            let store = t.databaseURL == nil ? ["/kiln.db", "/kiln.db-wal"] : []  // PostgreSQL: no file here
            for f in store + ["/master.key", "/receipt.key"] { #expect(mode(f) == 0o600, "\(f)") }
            #expect(Doctor.fileModes(dataDir: t.dataDir).1)
            chmod(t.dataDir + "/master.key", 0o644)
            let (lines, ok) = Doctor.fileModes(dataDir: t.dataDir)
            #expect(!ok && lines.contains { $0.contains("master.key") && $0.hasPrefix("FAIL") })
        }
    }

    /// Integers 0 and 1 are integers (JSON numbers were once read as booleans on Linux).
    @Test func budgetCapsOfZeroAndOneAreIntegers() async throws {
        try await withTestApp(.inProcess) { t in
            _ = try await makeUser(t, "caps@example.com")
            let a = Agent(t)
            try await a.login("caps@example.com", "a long enough password")
            let ws = try await workspaceOf(a)
            for v in [1, 0] {
                let r = try await a.call("PUT", "/api/budget/limits", json: ["ws_id": ws, "daily_usd_micros": v])
                #expect(r.status == 200 && r.json["daily_usd_micros"] as? Int == v, "\(v): \(r.text)")
            }
            let cleared = try await a.call(
                "PUT", "/api/budget/limits", json: ["ws_id": ws, "daily_usd_micros": NSNull()])
            #expect(cleared.json["daily_usd_micros"] is NSNull)
            #expect(
                try await a.call("PUT", "/api/budget/limits", json: ["ws_id": ws, "daily_usd_micros": true]).status
                    == 400)
            #expect(
                try await a.call("PUT", "/api/budget/limits", json: ["ws_id": ws, "daily_usd_micros": -1]).status == 400
            )
        }
    }
}
