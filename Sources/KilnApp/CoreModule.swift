import Foundation
import Glibc
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// The server's own routes: probes, metrics, the OpenAPI document and the permission list.
struct CoreModule: Sendable {
    let app: Application

    /// The core tables: the event store, the audit log and the readiness probe's row.
    static var migrations: [Migration] {
        EventBus.migrations + AuditLog.migrations + MasterKey.migrations + [
            Migration(
                module: "core", version: 1, name: "readiness probe row",
                sql: """
                    CREATE TABLE core_probe (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at INTEGER NOT NULL);
                    """)
        ]
    }

    static let ok = Array(#"{"status":"ok"}"#.utf8)

    func register(_ routes: Routes) {
        let r = routes.tagged("probes")
        r.add(
            .GET, "/healthz", .publicAccess, "Liveness: the process answers",
            reply: .json(Schema.object(["status": Schema.string])), healthz)
        r.add(
            .GET, "/readyz", .publicAccess,
            "Readiness: database reachable and writable, migrations current, data dir writable, free disk above the floor",
            readyz)
        r.add(
            .GET, "/metrics", .publicAccess, "Prometheus metrics (text exposition format 0.0.4)", reply: .text, metrics)
        let meta = routes.tagged("meta")
        meta.add(.GET, "/api/openapi.json", .publicAccess, "This API as an OpenAPI 3.1 document", openapi)
        meta.add(
            .GET, "/api/permissions", .publicAccess, "Every permission with what it allows",
            reply: .json(Schema.object(["items": Schema.array(Schema.any)])), permissions)
    }

    @Sendable func healthz(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(raw: CoreModule.ok)
    }

    @Sendable func readyz(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let checks = await app.readinessChecks()
        let ok = checks.values.allSatisfy {
            if case .object(let o) = $0 { return o["ok"] == .bool(true) } else { return false }
        }
        if ok { return .json(JSONValue.object(["status": "ready", "checks": .object(checks)])) }
        let body = JSONValue.object([
            "error": ["code": "unavailable", "message": "Not ready", "details": ["checks": .object(checks)]],
            "request_id": .string(ctx.requestID), "status": "not_ready", "checks": .object(checks),
        ]).jsonText
        return .json(raw: Array(body.utf8), status: .serviceUnavailable)
    }

    @Sendable func metrics(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .text(app.renderMetrics(), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }

    @Sendable func openapi(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        .json(app.openAPIDocument())
    }

    @Sendable func permissions(_ req: Request, _ ctx: RequestContext) async throws -> Response {
        let catalog = app.services.catalog
        let items = app.permissions.map { p -> JSONValue in
            .object([
                "name": .string(p.name), "description": .string(p.description),
                "scope": .string(p.workspaceScoped ? "workspace" : "user"),
                "roles": .array(catalog.roles(granting: p.name).map { .string($0.rawValue) }),
            ])
        }
        return .json(Page(all: items).json)
    }
}

extension Application {
    /// Each readiness check with `ok` and a reason when it fails.
    /// The last probe's checks, probing again (a write to the database and the data dir) at most
    /// every 5 seconds: a load balancer asking many times a second causes no writes of its own.
    func readinessChecks() async -> [String: JSONValue] {
        // On the application's clock (tests move it); a clock set back probes again at once.
        let now = services.clock.now()
        if let last = readiness.withLock({ $0 }), now >= last.at, now.timeIntervalSince(last.at) < 5 {
            return last.checks
        }
        let checks = await probeReadiness()
        readiness.withLock { $0 = (services.clock.now(), checks) }
        return checks
    }

    func probeReadiness() async -> [String: JSONValue] {
        var checks: [String: JSONValue] = [:]
        let now = services.clock.now()
        do {
            _ = try await services.db.write { tx in
                try tx.run(
                    "INSERT INTO core_probe (id, checked_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                    now)
            }
            checks["database"] = ["ok": true]
        } catch {
            checks["database"] = ["ok": false, "reason": "database is not writable"]
        }
        do {
            let pending = try services.db.pending(allMigrations)
            checks["migrations"] =
                pending.isEmpty
                ? ["ok": true]
                : ["ok": false, "reason": .string("\(pending.count) migration(s) pending; run kiln migrate")]
        } catch {
            checks["migrations"] = ["ok": false, "reason": "cannot read schema_migrations"]
        }
        let probe = services.dataDir + "/.ready-probe-\(getpid())"
        if FileManager.default.createFile(atPath: probe, contents: Data("ok".utf8)) {
            try? FileManager.default.removeItem(atPath: probe)
            checks["data_dir"] = ["ok": true]
        } else {
            checks["data_dir"] = ["ok": false, "reason": "data dir is not writable"]
        }
        var st = statvfs()
        if statvfs(services.dataDir, &st) == 0 {
            let freeMB = Int(UInt64(st.f_bavail) * UInt64(st.f_frsize) / (1024 * 1024))
            checks["disk"] =
                freeMB >= services.config.minFreeDiskMB
                ? ["ok": true, "free_mb": .int(freeMB)]
                : [
                    "ok": false, "free_mb": .int(freeMB),
                    "reason": .string("less than \(services.config.minFreeDiskMB) MB free"),
                ]
        } else {
            checks["disk"] = ["ok": false, "reason": "cannot stat the data dir"]
        }
        let sandbox = services.sandbox
        var sb: [String: JSONValue] = [
            "ok": .bool(sandbox.isolates || sandbox.mode != .bwrap), "mode": .string(sandbox.mode.rawValue),
            "isolating": .bool(sandbox.isolates), "summary": .string(sandbox.summary),
        ]
        if !sandbox.isolates && sandbox.mode == .auto { sb["warning"] = .string(sandbox.summary) }
        if !sandbox.isolates && sandbox.mode == .bwrap { sb["reason"] = .string(sandbox.summary) }
        checks["sandbox"] = .object(sb)
        return checks
    }

    func renderMetrics() -> String {
        var out = ""
        metrics.render(into: &out)
        if let s = server?.stats {
            let engine: [(String, String, String, Int)] = [
                (
                    "kiln_http_requests_in_flight", "gauge", "Requests being handled now.",
                    s.inFlightRequests.load(ordering: .relaxed)
                ),
                (
                    "kiln_http_open_connections", "gauge", "Open client connections.",
                    s.openConnections.load(ordering: .relaxed)
                ),
                (
                    "kiln_http_connections_accepted_total", "counter", "Connections accepted since start.",
                    s.acceptedConnections.load(ordering: .relaxed)
                ),
                (
                    "kiln_http_connections_rejected_total", "counter", "Connections refused at the connection limit.",
                    s.rejectedConnections.load(ordering: .relaxed)
                ),
                (
                    "kiln_http_protocol_errors_total", "counter", "Requests refused by the HTTP parser.",
                    s.protocolErrors.load(ordering: .relaxed)
                ),
                (
                    "kiln_http_streaming_responses", "gauge", "Streamed responses (SSE, downloads) in progress.",
                    s.streamingResponses.load(ordering: .relaxed)
                ),
                (
                    "kiln_websocket_connections", "gauge", "Open WebSocket connections.",
                    s.webSocketConnections.load(ordering: .relaxed)
                ),
            ]
            for (name, type, help, value) in engine {
                prometheusMetric(&out, name: name, type: type, help: help, value: Double(value))
            }
        }
        prometheusMetric(
            &out, name: "kiln_sse_subscribers", type: "gauge",
            help: "Event-bus subscribers (SSE streams following a topic).",
            value: Double(services.bus.subscriberCount))
        let pool = services.db.poolStats
        if let pg = services.db.postgresPool {
            for (name, type, help, value) in [
                ("kiln_db_pg_connections_open", "gauge", "PostgreSQL connections open in the pool.", pg.open),
                ("kiln_db_pg_connections_busy", "gauge", "PostgreSQL connections in use.", pg.busy),
                ("kiln_db_pg_connections_opened_total", "counter", "PostgreSQL connections opened.", pg.opened),
                (
                    "kiln_db_pg_connections_dropped_total", "counter",
                    "PostgreSQL connections dropped as broken (server restart, network).", pg.dropped
                ),
            ] {
                prometheusMetric(&out, name: name, type: type, help: help, value: Double(value))
            }
        }
        prometheusMetric(
            &out, name: "kiln_db_pool_readers", type: "gauge", help: "Reader connections in the SQLite pool.",
            value: Double(pool.readers))
        prometheusMetric(
            &out, name: "kiln_db_pool_readers_busy", type: "gauge", help: "Reader connections in use.",
            value: Double(pool.busyReaders))
        prometheusMetric(
            &out, name: "kiln_db_write_transactions_total", type: "counter", help: "Write transactions run.",
            value: Double(pool.writes))
        prometheusMetric(
            &out, name: "kiln_db_read_transactions_total", type: "counter", help: "Read transactions run.",
            value: Double(pool.reads))
        prometheusMetric(
            &out, name: "kiln_background_jobs", type: "gauge", help: "Background jobs and tasks running.",
            value: Double(services.jobs.activeCount))
        out += "# HELP kiln_build_info Build facts (value is always 1).\n# TYPE kiln_build_info gauge\n"
        out += "kiln_build_info{version=\"\(KilnVersion.version)\",sqlite=\"\(Database.sqliteVersion)\"} 1\n"
        // Process figures, with the standard names.
        let rss = Double(kiln_rss_bytes_public())
        prometheusMetric(
            &out, name: "process_resident_memory_bytes", type: "gauge", help: "Resident memory size in bytes.",
            value: rss)
        var ru = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
        let cpu =
            Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) / 1e6 + Double(ru.ru_stime.tv_sec) + Double(
                ru.ru_stime.tv_usec) / 1e6
        prometheusMetric(
            &out, name: "process_cpu_seconds_total", type: "counter",
            help: "User and system CPU time spent in seconds.", value: cpu)
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        prometheusMetric(
            &out, name: "process_open_fds", type: "gauge", help: "Number of open file descriptors.", value: Double(fds))
        var rl = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        prometheusMetric(
            &out, name: "process_max_fds", type: "gauge", help: "Maximum number of open file descriptors.",
            value: Double(rl.rlim_cur))
        prometheusMetric(
            &out, name: "process_start_time_seconds", type: "gauge",
            help: "Start time of the process since unix epoch in seconds.",
            value: startedAt.timeIntervalSince1970.rounded())
        return out
    }
}
