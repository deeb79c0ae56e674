import Foundation
import KilnCore
import KilnCrypto
import KilnHTTP
import KilnStore

/// The workspace's tool registry: external MCP servers (registered, refreshed, checked), their
/// credentials (sealed with the master key, never shown again), one catalogue of every tool a
/// workspace may use (Kiln's own as `kiln.<tool>`, each server's as `<server>.<tool>`), and calls
/// into it, validated, judged by the policy (`mcp.<server>.<tool>`) and audited.
public final class MCPRegistryService: Sendable {
    let store: MCPStore
    let client: MCPClient
    let toolbox: KilnToolbox
    let clock: any Clock
    let masterKey: MasterKey
    let policy: (any PolicyEngine)?
    let secrets: (any SecretProvider)?

    init(
        services: Services, toolbox: KilnToolbox, policy: (any PolicyEngine)?, secrets: (any SecretProvider)?
    ) {
        store = MCPStore(db: services.db)
        client = MCPClient(http: OutboundHTTP(outbound: services.outbound), sandbox: services.sandbox)
        self.toolbox = toolbox
        clock = services.clock
        masterKey = services.masterKey
        self.policy = policy
        self.secrets = secrets
    }

    static let namePattern = #"^[a-z0-9_-]{1,32}$"#

    // MARK: Servers

    func servers(wsID: String) async throws -> [JSONValue] {
        var out: [JSONValue] = []
        for row in try await store.servers(wsID: wsID) { out.append(try await Self.server(row, tools: store)) }
        return out
    }

    static func server(_ r: Row, tools store: MCPStore) async throws -> JSONValue {
        func json(_ k: String) -> JSONValue {
            r.string(k).flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) } ?? .array([])
        }
        func text(_ k: String) -> JSONValue { r.string(k).map { .string($0) } ?? .null }
        func date(_ k: String) -> JSONValue { r.date(k).map { .string(HTTPDate.iso8601($0)) } ?? .null }
        let id = r.string("id") ?? ""
        return [
            "id": .string(id), "ws_id": text("ws_id"), "name": text("name"), "transport": text("transport"),
            "url": text("url"), "command": text("command"), "args": json("args"), "env_names": json("env_names"),
            "token_id": text("token_id"), "enabled": .bool(r.bool("enabled") ?? false),
            "timeout_s": .int(r.int("timeout_s") ?? MCPLimits.defaultTimeout),
            "protocol_version": text("protocol_version"), "refreshed_at": date("refreshed_at"),
            "last_error": text("last_error"), "tool_count": .int(try await store.toolCount(id)),
            "created_at": date("created_at"), "updated_at": date("updated_at"), "created_by": text("created_by"),
        ]
    }

    /// The server in `wsID` (404 otherwise).
    func row(_ id: String, wsID: String) async throws -> Row {
        guard IDs.isValid(id, prefix: "mcs"), let r = try await store.server(id), r.string("ws_id") == wsID else {
            throw APIError.notFound("No such MCP server")
        }
        return r
    }

    func get(_ id: String, wsID: String) async throws -> JSONValue {
        try await Self.server(try await row(id, wsID: wsID), tools: store)
    }

    /// Checks a server's settings, merged over `current` for a change.
    func fields(_ i: ServerInput, over current: ServerFields?) throws -> ServerFields {
        var f =
            current
            ?? ServerFields(
                name: "", transport: "", url: nil, command: nil, args: [], envNames: [], tokenID: nil, enabled: true,
                timeout: MCPLimits.defaultTimeout)
        if let n = i.name { f.name = n }
        guard f.name.range(of: Self.namePattern, options: .regularExpression) != nil else {
            throw APIError.validation("name must be 1-32 of a-z, 0-9, _ and -", field: "name")
        }
        if let t = i.transport { f.transport = t }
        guard f.transport == "http" || f.transport == "stdio" else {
            throw APIError.validation("transport must be http or stdio", field: "transport")
        }
        if let u = i.url { f.url = u.isEmpty ? nil : u }
        if let c = i.command { f.command = c.isEmpty ? nil : c }
        if let a = i.args { f.args = a }
        if let e = i.envNames { f.envNames = e }
        if let t = i.tokenId { f.tokenID = t.isEmpty ? nil : t }
        if let e = i.enabled { f.enabled = e }
        if let t = i.timeoutS { f.timeout = t }
        guard (1...300).contains(f.timeout) else {
            throw APIError.validation("timeout_s must be from 1 to 300", field: "timeout_s")
        }
        if f.transport == "http" {
            guard let url = f.url else { throw APIError.validation("an http server needs url", field: "url") }
            do { _ = try OutboundHTTP.target(url) } catch let e as OutboundHTTP.Failure {
                throw APIError.validation("url: \(e.description)", field: "url")
            }
            guard f.command == nil, f.args.isEmpty, f.envNames.isEmpty else {
                throw APIError.validation("an http server takes url, not command, args or env_names", field: "command")
            }
        } else {
            guard let c = f.command, !c.isEmpty, c.utf8.count <= 4096, !c.contains("\0") else {
                throw APIError.validation(
                    "a stdio server needs command (a program name or absolute path)", field: "command")
            }
            guard f.url == nil else { throw APIError.validation("a stdio server takes command, not url", field: "url") }
            guard f.args.count <= 64, f.args.allSatisfy({ $0.utf8.count <= 4096 && !$0.contains("\0") }) else {
                throw APIError.validation("args: at most 64, each under 4 KiB without NUL", field: "args")
            }
            guard f.envNames.count <= 32,
                f.envNames.allSatisfy({ $0.range(of: #"^[A-Z_][A-Z0-9_]{0,127}$"#, options: .regularExpression) != nil }
                )
            else {
                throw APIError.validation("env_names: at most 32 secret names (A-Z, 0-9, _)", field: "env_names")
            }
        }
        return f
    }

    static func fields(of r: Row) -> ServerFields {
        func list(_ k: String) -> [String] {
            (try? JSONDecoder().decode([String].self, from: Data((r.string(k) ?? "[]").utf8))) ?? []
        }
        return ServerFields(
            name: r.string("name") ?? "", transport: r.string("transport") ?? "", url: r.string("url"),
            command: r.string("command"), args: list("args"), envNames: list("env_names"),
            tokenID: r.string("token_id"),
            enabled: r.bool("enabled") ?? true, timeout: r.int("timeout_s") ?? MCPLimits.defaultTimeout)
    }

    func create(_ i: ServerInput, wsID: String, userID: String, ip: String) async throws -> JSONValue {
        let f = try fields(i, over: nil)
        let id = IDs.make("mcs")
        let now = clock.now()
        try await store.db.write { [store] tx in
            guard try store.server(tx, wsID: wsID, name: f.name) == nil else {
                throw APIError.conflict("This workspace has an MCP server named \(f.name) already")
            }
            guard try store.serverCount(tx, wsID: wsID) < MCPLimits.maxServersPerWorkspace
            else {
                throw APIError.conflict("A workspace may register at most \(MCPLimits.maxServersPerWorkspace) servers")
            }
            try Self.checkToken(tx, store, f.tokenID, wsID: wsID)
            try store.insertServer(tx, f, id: id, wsID: wsID, userID: userID, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mcp.server.created", actorUserID: userID, wsID: wsID, resourceType: "mcp_server",
                    resourceID: id, ip: ip, details: ["name": .string(f.name), "transport": .string(f.transport)]),
                at: now)
        }
        return try await get(id, wsID: wsID)
    }

    static func checkToken(_ tx: Transaction, _ store: MCPStore, _ tokenID: String?, wsID: String) throws {
        guard let tokenID else { return }
        guard try store.workspaceOfToken(tx, tokenID) == wsID else {
            throw APIError.validation("No token \(tokenID.prefix(40)) in this workspace", field: "token_id")
        }
    }

    func patch(_ id: String, _ i: ServerInput, wsID: String, userID: String, ip: String) async throws -> JSONValue {
        let current = try await row(id, wsID: wsID)
        let f = try fields(i, over: Self.fields(of: current))
        let now = clock.now()
        try await store.db.write { [store] tx in
            if let other = try store.server(tx, wsID: wsID, name: f.name), other.string("id") != id {
                throw APIError.conflict("This workspace has an MCP server named \(f.name) already")
            }
            try Self.checkToken(tx, store, f.tokenID, wsID: wsID)
            try store.updateServer(tx, f, id: id, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mcp.server.updated", actorUserID: userID, wsID: wsID, resourceType: "mcp_server",
                    resourceID: id, ip: ip, details: ["name": .string(f.name), "enabled": .bool(f.enabled)]), at: now)
        }
        client.forget(id)
        return try await get(id, wsID: wsID)
    }

    func delete(_ id: String, wsID: String, userID: String, ip: String) async throws {
        _ = try await row(id, wsID: wsID)
        let now = clock.now()
        try await store.db.write { [store] tx in
            guard try store.deleteServer(tx, id) else { throw APIError.notFound("No such MCP server") }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mcp.server.deleted", actorUserID: userID, wsID: wsID, resourceType: "mcp_server",
                    resourceID: id, ip: ip), at: now)
        }
        client.forget(id)
    }

    /// What the client needs to reach a server: its credential headers opened, its secrets by name.
    func remote(_ r: Row, userID: String) async throws -> RemoteServer {
        let f = Self.fields(of: r)
        var headers: [(String, String)] = []
        if let tokenID = f.tokenID {
            let master = masterKey
            let sealed = try await store.db.read { [store] tx -> (box: [UInt8], key: [UInt8])? in
                guard let box = try store.sealedToken(tx, tokenID) else { return nil }
                return (box, try master.bytes(in: tx))
            }
            if let sealed { headers = try Self.openHeaders(sealed.box, id: tokenID, key: sealed.key) }
        }
        var env: [String: String] = [:]
        if !f.envNames.isEmpty {
            guard let secrets else { throw APIError.unavailable("Secrets are not available on this server") }
            for s in try await secrets.use(
                f.envNames, wsID: r.string("ws_id") ?? "", userID: userID, purpose: "mcp.server")
            {
                env[s.name] = s.value
            }
        }
        return RemoteServer(
            id: r.string("id") ?? "", wsID: r.string("ws_id") ?? "", name: f.name, transport: f.transport, url: f.url,
            command: f.command, args: f.args, environment: env, headers: headers, timeout: Double(f.timeout))
    }

    /// A transport problem or an error from the server, as an answer to the caller (502/504).
    static func upstream(_ error: any Error, server name: String) -> HTTPError {
        switch error {
        case let e as RemoteFailure:
            return HTTPError(
                e.timedOut ? HTTPStatus(504) : HTTPStatus(502), code: e.timedOut ? "timeout" : "unavailable",
                message: "MCP server \(name): \(e.description)", details: ["server": .string(name)])
        case let e as RPCError:
            return HTTPError(
                HTTPStatus(502), code: "unavailable",
                message: "MCP server \(name) answered error \(e.code): \(e.message)",
                details: ["server": .string(name), "rpc_code": .int(e.code)])
        case let e as HTTPError:
            return e
        default:
            return HTTPError(HTTPStatus(502), code: "unavailable", message: "MCP server \(name) could not be reached")
        }
    }

    /// Lists the server's tools (following `nextCursor`) and stores them.
    func refresh(_ id: String, wsID: String, userID: String) async throws -> JSONValue {
        let r = try await row(id, wsID: wsID)
        let server = try await remote(r, userID: userID)
        var tools: [RemoteTool] = []
        var cursor: String? = nil
        do {
            for _ in 0..<MCPLimits.maxPages {
                var params: [String: JSONValue] = [:]
                if let cursor { params["cursor"] = .string(cursor) }
                let result = try await client.request(server, "tools/list", params)
                guard case .array(let list)? = result.objectValue?["tools"] else {
                    throw RemoteFailure(description: "tools/list answered without tools")
                }
                for case .object(let t) in list {
                    guard let name = t["name"]?.stringValue,
                        name.range(of: #"^[A-Za-z0-9_.-]{1,128}$"#, options: .regularExpression) != nil
                    else { continue }
                    tools.append(
                        RemoteTool(
                            name: name, description: t["description"]?.stringValue.map { String($0.prefix(4000)) },
                            inputSchema: t["inputSchema"] ?? ["type": "object"], outputSchema: t["outputSchema"]))
                }
                guard tools.count <= MCPLimits.maxToolsPerServer else {
                    throw RemoteFailure(description: "the server lists more than \(MCPLimits.maxToolsPerServer) tools")
                }
                cursor = result.objectValue?["nextCursor"]?.stringValue
                if cursor == nil { break }
            }
        } catch {
            let e = Self.upstream(error, server: server.name)
            try? await store.setError(id, e.message)
            throw e
        }
        let version =
            client.eras.withLock { $0[id] }.map { era -> String in
                if case .legacy(let v, _) = era { return v }
                return MCPWire.modern
            } ?? ""
        try await store.replaceTools(id, tools, version: version, at: clock.now())
        return ["server_id": .string(id), "tools": .int(tools.count), "protocol_version": .string(version)]
    }

    /// Whether the server answers: its revision and the time a request took.
    func health(_ id: String, wsID: String, userID: String) async throws -> JSONValue {
        let r = try await row(id, wsID: wsID)
        let server = try await remote(r, userID: userID)
        let start = kilnMonotonicNanos()
        do {
            let era = try await client.negotiate(server)
            let probe = kilnMonotonicNanos()
            switch era {
            case .modern: _ = try await client.request(server, "server/discover", [:])
            case .legacy: _ = try await client.request(server, "ping", [:])
            }
            let ms = Double(kilnMonotonicNanos() &- probe) / 1e6
            var version = MCPWire.modern
            if case .legacy(let v, _) = era { version = v }
            return [
                "ok": true, "protocol_version": .string(version), "latency_ms": .double((ms * 100).rounded() / 100),
                "connect_ms": .double((Double(probe &- start) / 1e4).rounded() / 100),
            ]
        } catch {
            return ["ok": false, "error": .string(Self.upstream(error, server: server.name).message)]
        }
    }

    // MARK: Tokens

    func tokens(wsID: String) async throws -> [JSONValue] {
        try await store.tokens(wsID: wsID).map(Self.token)
    }

    static func token(_ r: Row) -> JSONValue {
        [
            "id": .string(r.string("id") ?? ""), "ws_id": .string(r.string("ws_id") ?? ""),
            "name": .string(r.string("name") ?? ""), "kind": .string(r.string("kind") ?? ""),
            "created_at": r.date("created_at").map { .string(HTTPDate.iso8601($0)) } ?? .null,
            "created_by": r.string("created_by").map { .string($0) } ?? .null,
        ]
    }

    static func aad(_ id: String) -> [UInt8] { Array("mcp-token:\(id)".utf8) }

    static func openHeaders(_ sealed: [UInt8], id: String, key: [UInt8]) throws -> [(String, String)] {
        let plain = try Crypto.open(sealed, key: key, aad: aad(id))
        let pairs = (try? JSONDecoder().decode([[String]].self, from: Data(plain))) ?? []
        return pairs.compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
    }

    func createToken(_ i: TokenInput, wsID: String, userID: String, ip: String) async throws -> JSONValue {
        guard i.name.range(of: Self.namePattern, options: .regularExpression) != nil else {
            throw APIError.validation("name must be 1-32 of a-z, 0-9, _ and -", field: "name")
        }
        var pairs: [[String]] = []
        let kind: String
        switch (i.token, i.headers) {
        case (let t?, nil):
            guard !t.isEmpty, t.utf8.count <= 8192, !t.contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw APIError.validation("token must be 1 to 8192 characters on one line", field: "token")
            }
            pairs = [["Authorization", "Bearer " + t]]
            kind = "bearer"
        case (nil, let h?):
            guard !h.isEmpty, h.count <= 16 else {
                throw APIError.validation("headers: 1 to 16 name → value pairs", field: "headers")
            }
            for (k, v) in h.sorted(by: { $0.key < $1.key }) {
                guard k.range(of: #"^[A-Za-z0-9-]{1,64}$"#, options: .regularExpression) != nil,
                    !["host", "content-length", "content-type", "connection", "transfer-encoding"].contains(
                        k.lowercased()),
                    !k.lowercased().hasPrefix("mcp-"), v.utf8.count <= 8192,
                    !v.contains(where: { $0 == "\r" || $0 == "\n" })
                else { throw APIError.validation("header \(k.prefix(64)) may not be set", field: "headers") }
                pairs.append([k, v])
            }
            kind = "headers"
        default:
            throw APIError.validation("give either token (a bearer token) or headers", field: "token")
        }
        let id = IDs.make("mct")
        let plain = Array(try JSONEncoder().encode(pairs))
        let now = clock.now()
        let master = masterKey
        try await store.db.write { [store] tx in
            guard try store.tokenNamed(tx, wsID: wsID, name: i.name) == nil else {
                throw APIError.conflict("This workspace has a token named \(i.name) already")
            }
            // Sealed inside the write, with the key the database names: a rotation re-seals what it finds.
            let sealed = try Crypto.seal(plain, key: try master.bytes(in: tx), aad: Self.aad(id))
            try store.insertToken(
                tx, id: id, wsID: wsID, name: i.name, kind: kind, sealed: sealed, userID: userID, at: now)
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mcp.token.created", actorUserID: userID, wsID: wsID, resourceType: "mcp_token",
                    resourceID: id, ip: ip, details: ["name": .string(i.name), "kind": .string(kind)]), at: now)
        }
        guard let row = try await store.token(id) else { throw APIError.notFound("No such token") }
        return Self.token(row)
    }

    func deleteToken(_ id: String, wsID: String, userID: String, ip: String) async throws {
        guard IDs.isValid(id, prefix: "mct"), try await store.workspaceOfToken(id) == wsID else {
            throw APIError.notFound("No such token")
        }
        let now = clock.now()
        try await store.db.write { [store] tx in
            guard try store.deleteToken(tx, id) else { throw APIError.notFound("No such token") }
            try AuditLog.append(
                tx,
                AuditEvent(
                    action: "mcp.token.deleted", actorUserID: userID, wsID: wsID, resourceType: "mcp_token",
                    resourceID: id, ip: ip), at: now)
        }
    }

    /// Re-seals every token under a new master key (inside the rotation's transaction).
    static func reseal(_ tx: Transaction, store: MCPStore, old: [UInt8], new: [UInt8]) throws {
        for r in try store.sealedTokens(tx) {
            guard let id = r.string("id"), let sealed = r.blob("sealed") else { continue }
            try store.setSealed(
                tx, id, try Crypto.seal(try Crypto.open(sealed, key: old, aad: aad(id)), key: new, aad: aad(id)))
        }
    }
}
