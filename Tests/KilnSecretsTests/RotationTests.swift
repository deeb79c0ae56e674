import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Testing

@testable import KilnApp
@testable import KilnAuth
@testable import KilnSecrets
@testable import KilnTestSupport

/// Master key rotation: everything sealed (secrets' data keys, MFA secrets) opens with the new key;
/// only an instance admin who stepped up may rotate; a kill -9 anywhere leaves every secret readable.
@Suite struct RotationTests {
    @Test func rotationReSealsSecretsAndMFA() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_800_000_000))
        let t = try TestApp(.inProcess, clock: clock)
        try await using(t) { t in
            _ = try await makeAdmin(t, "root@example.com")
            _ = try await makeUser(t, "plain@example.com")
            let a = Agent(t)
            try await a.login("root@example.com", "a long enough password")
            let ws = try await workspaceOf(a)
            // MFA on, so its sealed secret must survive the rotation too.
            let setup = try await a.call("POST", "/api/auth/mfa-setup")
            let secret = try #require(setup.json["secret"] as? String)
            func code() -> String { TOTP.code(secret: Base32.decode(secret)!, time: clock.now().timeIntervalSince1970) }
            #expect(try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code()]).status == 200)
            let values = ["ALPHA_KEY": "alpha-value-1", "BETA_KEY": "beta-value-22", "GAMMA_KEY": "gamma-value-333"]
            for (k, v) in values { _ = try await a.call("POST", "/api/secrets/\(k)", json: ["ws_id": ws, "value": v]) }
            _ = try await a.call("POST", "/api/secrets/ALPHA_KEY", json: ["ws_id": ws, "value": "alpha-value-2"])
            let before = t.app.services.masterKey.id
            let file = t.dataDir + "/master.key"
            let oldText = try String(contentsOfFile: file, encoding: .utf8)

            // Not for a non-admin, nor an API key.
            let plain = Agent(t)
            try await plain.login("plain@example.com", "a long enough password")
            #expect(try await plain.call("POST", "/api/secrets/rotate-master").status == 403)

            let r = try await a.call("POST", "/api/secrets/rotate-master")
            #expect(r.status == 200, "\(r.text)")
            #expect(r.json["resealed"] as? Int == 4)
            let after = try #require(r.json["key_id"] as? String)
            #expect(after != before && after == t.app.services.masterKey.id)
            let newText = try String(contentsOfFile: file, encoding: .utf8)
            #expect(try newText != oldText && MasterKey.fingerprint(MasterKey.read(file)) == after)
            #expect(!FileManager.default.fileExists(atPath: file + ".next"))
            #expect(try MasterKey.recorded(t.app.services.db) == after)

            for (k, v) in values {
                let shown = try await a.call("GET", "/api/secrets/\(k)?ws_id=\(ws)")
                #expect(
                    shown.json["value"] as? String == (k == "ALPHA_KEY" ? "alpha-value-2" : v), "\(k): \(shown.text)")
            }
            // The MFA secret opens with the new key: sign in again with a code.
            #expect(try await a.call("POST", "/auth/logout").status == 200)
            #expect(
                try await a.login("root@example.com", "a long enough password").json["mfa_required"] as? Bool == true)
            clock.advance(by: 30)
            let verified = try await a.call("POST", "/api/auth/mfa-verify", json: ["code": code()])
            #expect(verified.json["status"] as? String == "login_completed", "\(verified.text)")
            // A stale session must step up first.
            clock.advance(by: 16 * 60)
            let stale = try await a.call("POST", "/api/secrets/rotate-master")
            #expect(stale.status == 401 && errorCode(stale) == "step_up_required")
        }
    }

    /// The real binary, killed (SIGKILL) at ten different steps of a rotation; after each restart
    /// every secret still reads back, and no `.next` file is left.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: TestApp.kilnBinary)))
    func killNineAnywhereLeavesEverySecretReadable() async throws {
        let dir = NSTemporaryDirectory() + "kiln-rotate-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let password = "a long enough password"
        var values: [String: String] = [:]
        var admin: Agent? = nil
        var ws = ""
        var lastKey = ""
        // Crash points of one rotation with 6 kept versions: file ×2, 6 data keys, hooks, before
        // and after commit, after the rename = 12; ten of them, in random order.
        let points = Array((1...12).shuffled().prefix(10))
        for (round, point) in ([nil] + points.map { Optional($0) }).enumerated() {
            let data = ["--data-dir", dir, "--log-level", "error"]
            if round == 0 {
                // First start: the admin (the setup link) and six secret versions.
                let first = try await ServeProcess.start(data)
                try #require(first != nil, "kiln serve did not start")
                first?.stop()
                let db = try Database(path: dir + "/kiln.db")
                let auth = AuthService(db: db, clock: SystemClock())
                let token = try #require(try auth.makeOwnerSetupToken())
                _ = try await auth.completeSetup(
                    SetupInput(token: token, email: "root@example.com", name: "Root", password: password))
                continue
            }
            // A rotation that is killed at `point`.
            let crashing = try #require(
                try await ServeProcess.start(data + ["--test-crash-at", "\(point!)"]), "kiln serve did not start")
            defer { crashing.stop(SIGKILL) }
            let a = Agent(crashing.base)
            try await a.login("root@example.com", password)
            if admin == nil {
                // (Made on the bare database above, the account has no workspace yet.)
                let made = try await a.call("POST", "/api/workspaces", json: ["name": "Rotation"])
                ws = try #require(made.json["id"] as? String, "\(made.text)")
                for (i, name) in ["ONE_KEY", "TWO_KEY", "THREE_KEY", "ONE_KEY", "TWO_KEY", "ONE_KEY"].enumerated() {
                    let v = "\(name.lowercased())-value-\(i)"
                    #expect(
                        try await a.call("POST", "/api/secrets/\(name)", json: ["ws_id": ws, "value": v]).status < 300)
                    values[name] = v
                }
                admin = a
            }
            let keyBefore = MasterKey.fingerprint(try MasterKey.read(dir + "/master.key"))
            // Killed at the crash point: no answer ever comes.
            let answer = try? await a.call("POST", "/api/secrets/rotate-master")
            #expect(answer == nil, "crash point \(point!): the rotation answered \(answer?.status ?? 0)")
            // Reaped; when it did not crash, stopped anyway (never a wait for ever).
            crashing.stop(answer == nil ? 0 : SIGKILL)

            // Restart: everything reads back.
            let again = try #require(
                try await ServeProcess.start(data), "round \(round) (crash point \(point!)): no restart")
            defer { again.stop() }
            let b = Agent(again.base)
            try await b.login("root@example.com", password)
            for (k, v) in values {
                let shown = try await b.call("GET", "/api/secrets/\(k)?ws_id=\(ws)")
                #expect(
                    shown.json["value"] as? String == v, "crash point \(point!): \(k) → \(shown.status) \(shown.text)")
            }
            #expect(!FileManager.default.fileExists(atPath: dir + "/master.key.next"), "crash point \(point!)")
            let key = MasterKey.fingerprint(try MasterKey.read(dir + "/master.key"))
            #expect(try MasterKey.recorded(try Database(path: dir + "/kiln.db")) == key, "crash point \(point!)")
            // Points 1-10 come before the commit (the old key stays), 11 and 12 after it (the new one).
            #expect((key != keyBefore) == (point! >= 11), "crash point \(point!): key \(keyBefore) → \(key)")
            lastKey = key
        }
        #expect(!lastKey.isEmpty)
    }
}
