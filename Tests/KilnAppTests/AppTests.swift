import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore
import Synchronization
import Testing

@testable import KilnApp
@testable import KilnTestSupport

@Suite struct ProbeTests {
    @Test func healthzAndReadyz() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let h = try await t.request("GET", "/healthz")
            #expect(h.status == 200 && h.text == #"{"status":"ok"}"#)
            #expect(h.headers["x-request-id"]?.hasPrefix("req_") == true)
            let r = try await t.request("GET", "/readyz")
            #expect(r.status == 200)
            let checks = r.json["checks"] as? [String: [String: Any]]
            #expect(Set(checks?.keys.map { $0 } ?? []) == ["database", "migrations", "data_dir", "disk", "sandbox"])
            #expect(checks?.values.allSatisfy { $0["ok"] as? Bool == true } == true)
            // The sandbox says whether it isolates, and warns when it fell back to running unsandboxed.
            let sandbox = try #require(checks?["sandbox"])
            #expect(sandbox["mode"] as? String == "auto" && sandbox["summary"] is String)
            #expect((sandbox["isolating"] as? Bool == true) == (sandbox["warning"] == nil))
        }
    }

    @Test func readyzIs503WithTheFailingCheck() async throws {
        let t = try TestApp { $0.minFreeDiskMB = 1 << 30 }
        try await using(t) { t in
            let r = try await t.request("GET", "/readyz")
            #expect(r.status == 503)
            let checks = r.json["checks"] as? [String: [String: Any]]
            #expect(checks?["disk"]?["ok"] as? Bool == false)
            #expect(checks?["database"]?["ok"] as? Bool == true)
            let err = r.json["error"] as? [String: Any]
            #expect(err?["code"] as? String == "unavailable")
            #expect((r.json["request_id"] as? String)?.hasPrefix("req_") == true)
        }
    }

    @Test func metricsExposeTheRequiredFamilies() async throws {
        let t = try TestApp()
        try await using(t) { t in
            _ = try await t.request("GET", "/healthz")
            _ = try await t.request("GET", "/api/nope")
            let m = try await t.request("GET", "/metrics")
            #expect(m.status == 200)
            #expect(m.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            for family in [
                "kiln_http_requests_total", "kiln_http_request_duration_seconds_bucket", "kiln_http_requests_in_flight",
                "kiln_http_open_connections", "kiln_sse_subscribers", "kiln_websocket_connections",
                "kiln_db_pool_readers",
                "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                "process_start_time_seconds",
            ] {
                #expect(m.text.contains("\n" + family) || m.text.hasPrefix(family), "\(family)")
            }
            #expect(m.text.contains(#"kiln_http_requests_total{method="GET",route="/healthz",status="200"} 1"#))
            #expect(m.text.contains(#"route="unmatched",status="404""#))
            if let promtool = which("promtool") {
                let file = t.dataDir + "/metrics.txt"
                try m.body.write(to: URL(fileURLWithPath: file))
                let (code, out, err) = await runProgram("/bin/sh", ["-c", "\(promtool) check metrics < \(file)"])
                #expect(code == 0, "\(out) \(err)")
            }
        }
    }
}

@Suite struct ConventionTests {
    @Test func everyRouteDeclaresAPermissionAndIsDocumented() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let known = Set(t.app.permissions.map(\.name))
            for route in t.app.responder.routes {
                let p = try #require(route.metadata.permission, "\(route.method) \(route.pattern) has no permission")
                #expect(
                    [
                        Permission.publicAccess.name, Permission.session.name, Permission.authenticated.name,
                        Permission.anonymous.name,
                    ].contains(p) || known.contains(p), "\(route.pattern): unknown permission \(p)")
            }
            // OpenAPI documents exactly the registered routes.
            let doc = try await t.request("GET", "/api/openapi.json")
            #expect(doc.status == 200)
            #expect(doc.json["openapi"] as? String == "3.1.0")
            let paths = try #require(doc.json["paths"] as? [String: [String: Any]])
            var documented = Set<String>()
            for (path, ops) in paths { for m in ops.keys { documented.insert("\(m.uppercased()) \(path)") } }
            let registered = Set(
                t.app.responder.routes.map { "\($0.method.rawValue) \(Application.openAPIPath($0.pattern).0)" })
            #expect(documented == registered)
        }
    }

    @Test func routesCommandCountEqualsOpenAPIOperations() async throws {
        let (code, out, err) = await runProgram(TestApp.kilnBinary, ["routes"])
        try #require(code == 0, "kiln routes failed: \(err)")
        let lines = out.split(separator: "\n")
        let count = Int(lines.last!.split(separator: " ")[0])!
        #expect(count == lines.count - 1)
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let doc = try await t.request("GET", "/api/openapi.json")
            let paths = try #require(doc.json["paths"] as? [String: [String: Any]])
            #expect(paths.values.reduce(0) { $0 + $1.count } == count)
        }
    }

    @Test func errorsUseTheSharedShape() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let nf = try await t.request("GET", "/api/does-not-exist")
            #expect(nf.status == 404)
            let e = try #require(nf.json["error"] as? [String: Any])
            #expect(e["code"] as? String == "not_found")
            #expect(e["message"] is String && e["details"] is [String: Any])
            #expect(nf.json["request_id"] as? String == nf.headers["x-request-id"])
            let na = try await t.request("DELETE", "/healthz")
            #expect(na.status == 405)
            #expect(na.headers["allow"] == "GET, HEAD, OPTIONS")
            #expect((na.json["error"] as? [String: Any])?["code"] as? String == "method_not_allowed")
            let media = try await t.request(
                "POST", "/auth/setup", headers: ["Content-Type": "text/plain"], body: Data("x".utf8))
            #expect(media.status == 415)
            let bad = try await t.request(
                "POST", "/auth/setup", headers: ["Content-Type": "application/json"], body: Data("{".utf8))
            #expect(bad.status == 400)
            #expect((bad.json["error"] as? [String: Any])?["code"] as? String == "validation_failed")
        }
    }

    @Test func requestIDsAreAcceptedWhenWellFormed() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let good = try await t.request("GET", "/healthz", headers: ["X-Request-Id": "trace-1234-abcd"])
            #expect(good.headers["x-request-id"] == "trace-1234-abcd")
            let bad = try await t.request(
                "GET", "/healthz", headers: ["X-Request-Id": "no spaces allowed <script>"])
            #expect(bad.headers["x-request-id"]?.hasPrefix("req_") == true)
        }
    }

    @Test func webUIAndSPAFallback() async throws {
        let t = try TestApp(.inProcess)
        try await using(t) { t in
            let index = try await t.request("GET", "/")
            #expect(index.status == 200 && index.text.contains("<title>Kiln</title>"))
            let setup = try await t.request("GET", "/setup?token=abc")
            #expect(setup.status == 200 && setup.text.contains("setup-form"))
            let js = try await t.request("GET", "/app.js")
            #expect(js.headers["content-type"] == "text/javascript; charset=utf-8")
        }
    }

    @Test func configPrecedenceFlagsOverEnvironmentOverDefaults() throws {
        let (d, _) = try Config.load(arguments: [], environment: [:], options: Application.configOptions)
        #expect(d.port == 8080 && d.host == "127.0.0.1" && d.dataDir == "./.kiln")
        let (e, _) = try Config.load(
            arguments: [], environment: ["KILN_PORT": "9000", "KILN_DATA_DIR": "/tmp/x"],
            options: Application.configOptions)
        #expect(e.port == 9000 && e.dataDir == "/tmp/x")
        let (f, rest) = try Config.load(
            arguments: ["--port", "9100", "--data-dir=/tmp/y", "file.db"], environment: ["KILN_PORT": "9000"],
            options: Application.configOptions)
        #expect(f.port == 9100 && f.dataDir == "/tmp/y" && rest == ["file.db"])
        #expect(throws: Config.ConfigError.self) {
            try Config.load(arguments: ["--port", "x"], environment: [:], options: Application.configOptions)
        }
        #expect(throws: Config.ConfigError.self) {
            try Config.load(arguments: ["--bogus"], environment: [:], options: Application.configOptions)
        }
        #expect(throws: Config.ConfigError.self) {
            try Config.load(arguments: ["--tls-cert", "a.pem"], environment: [:], options: Application.configOptions)
        }
        #expect(throws: Config.ConfigError.self) {
            try Config.load(arguments: [], environment: ["KILN_LOG_LEVEL": "loud"], options: Application.configOptions)
        }
    }

    @Test func masterKeyIsMadeOnceWithMode0600() throws {
        let t = try TestApp(.inProcess)
        let path = t.dataDir + "/master.key"
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let first = try String(contentsOfFile: path, encoding: .utf8)
        let again = try Application.loadMasterKey(dataDir: t.dataDir)
        #expect(first.trimmingCharacters(in: .whitespacesAndNewlines).count == 64)
        #expect(again.bytes == t.app.services.masterKey.bytes)
    }
}

/// Values one engine stores and the other refuses are a client's mistake, not a server error.
@Suite struct StoreErrorAnswerTests {
    @Test func refusedValuesAre400DuplicatesAre409() async throws {
        #expect(
            ErrorMiddleware.shown(StoreError(code: 1, message: "NUL", sql: nil, sqlstate: "22021"))?.status.code == 400)
        #expect(
            ErrorMiddleware.shown(StoreError(code: 2067, message: "dup", sql: nil, sqlstate: "23505"))?.status.code
                == 409)
        #expect(ErrorMiddleware.shown(StoreError(code: 1, message: "other", sql: nil)) == nil)
        // An address with a NUL character never reaches the store (PostgreSQL text cannot hold one).
        try await withTestApp(.inProcess) { t in
            let r = try await t.request(
                "POST", "/auth/forgot", headers: ["Content-Type": "application/json"],
                body: Data(#"{"email":"a\u0000b@example.com"}"#.utf8))
            #expect(r.status == 400)
        }
    }
}
