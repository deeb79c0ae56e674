import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// A registered external MCP server as the client needs it.
struct RemoteServer: Sendable {
    let id: String
    let wsID: String
    let name: String
    let transport: String
    let url: String?
    let command: String?
    let args: [String]
    /// Environment for a stdio server: only these (workspace secrets by name), never the server's own.
    let environment: [String: String]
    /// Credential headers (from the server's token), sent to an HTTP server.
    let headers: [(String, String)]
    let timeout: Double
}

/// Why a call to an external server failed, safe to show.
struct RemoteFailure: Error, CustomStringConvertible, Sendable {
    let description: String
    var timedOut = false
}

/// Speaks MCP to external servers: over HTTP through the outbound guard, or over stdio to a process
/// started through the sandbox. The revision is chosen per server by what it answers to
/// `server/discover` (2026-07-28), else the `initialize` handshake (2025-11-25), and remembered.
final class MCPClient: Sendable {
    enum Era: Sendable, Equatable {
        case modern
        case legacy(version: String, session: String?)
    }
    let http: OutboundHTTP
    let sandbox: Sandbox
    let eras = Mutex<[String: Era]>([:])
    let stdio = Mutex<[String: StdioSession]>([:])
    let nextID = Atomic<Int>(1)
    static let clientInfo: JSONValue = ["name": "kiln", "version": "1.0.0"]
    static let maxResponseBytes = 4 << 20

    init(http: OutboundHTTP, sandbox: Sandbox) {
        self.http = http
        self.sandbox = sandbox
    }

    /// Forgets what was negotiated with a server (it changed, or was removed) and stops its process.
    func forget(_ serverID: String) {
        eras.withLock { $0[serverID] = nil }
        stdio.withLock { $0.removeValue(forKey: serverID) }?.stop()
    }

    func stopAll() {
        let all = stdio.withLock { s -> [StdioSession] in
            defer { s.removeAll() }
            return Array(s.values)
        }
        for s in all { s.stop() }
    }

    /// One request's result; a JSON-RPC error becomes `RPCError`, a transport problem `RemoteFailure`.
    func request(_ server: RemoteServer, _ method: String, _ params: [String: JSONValue]) async throws -> JSONValue {
        let era = try await negotiate(server)
        do {
            return try await send(server, era, method, params)
        } catch let e as RemoteFailure where e.description == Self.sessionGone {
            // The server forgot the session (it restarted): handshake again, once.
            eras.withLock { $0[server.id] = nil }
            return try await send(server, try await negotiate(server), method, params)
        }
    }

    static let sessionGone = "the server ended the session"

    /// The revision to speak with `server`, probed once.
    func negotiate(_ server: RemoteServer) async throws -> Era {
        if let e = eras.withLock({ $0[server.id] }) { return e }
        var era: Era
        do {
            let discovered = try await send(server, .modern, "server/discover", [:])
            let versions = discovered.objectValue?["supportedVersions"]
            if case .array(let vs)? = versions, vs.contains(.string(MCPWire.modern)) {
                era = .modern
            } else {
                era = try await handshake(server)
            }
        } catch is RPCError {
            era = try await handshake(server)
        } catch let e as RemoteFailure where !e.timedOut && e.description.hasPrefix("HTTP ") {
            era = try await handshake(server)
        }
        let settled = era
        eras.withLock { $0[server.id] = settled }
        return settled
    }

    /// `initialize`, then `notifications/initialized`.
    func handshake(_ server: RemoteServer) async throws -> Era {
        let params: [String: JSONValue] = [
            "protocolVersion": .string(MCPWire.latestHandshake), "capabilities": [:], "clientInfo": Self.clientInfo,
        ]
        let (result, session) = try await exchange(
            server, .legacy(version: MCPWire.latestHandshake, session: nil), "initialize", params)
        let version = result.objectValue?["protocolVersion"]?.stringValue ?? MCPWire.latestHandshake
        guard MCPWire.handshakeVersions.contains(version) else {
            throw RemoteFailure(description: "the server speaks MCP \(version.prefix(20)), which Kiln does not")
        }
        let era = Era.legacy(version: version, session: session)
        try await notify(server, era, "notifications/initialized")
        return era
    }

    func send(
        _ server: RemoteServer, _ era: Era, _ method: String, _ params: [String: JSONValue]
    ) async throws -> JSONValue {
        try await exchange(server, era, method, params).0
    }

    /// One request; returns its result and the session id an `initialize` answer carried.
    func exchange(
        _ server: RemoteServer, _ era: Era, _ method: String, _ params: [String: JSONValue]
    ) async throws -> (JSONValue, String?) {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        var p = params
        if era == .modern {
            p["_meta"] = [
                MCPWire.protocolVersionKey: .string(MCPWire.modern), MCPWire.clientCapabilitiesKey: [:],
                MCPWire.clientInfoKey: Self.clientInfo,
            ]
        }
        let message: JSONValue = ["jsonrpc": "2.0", "id": .int(id), "method": .string(method), "params": .object(p)]
        let (reply, session): (JSONValue, String?)
        if server.transport == "stdio" {
            reply = try await stdioSession(server).request(message, id: id, timeout: server.timeout)
            session = nil
        } else {
            (reply, session) = try await post(server, era, message, id: id, method: method, params: p)
        }
        guard case .object(let o) = reply else {
            throw RemoteFailure(description: "the server's answer is not JSON-RPC")
        }
        if case .object(let e)? = o["error"] {
            throw RPCError(
                code: e["code"]?.intValue ?? MCPWire.internalError,
                message: String((e["message"]?.stringValue ?? "error").prefix(500)), data: e["data"])
        }
        guard let result = o["result"] else { throw RemoteFailure(description: "the server's answer has no result") }
        return (result, session)
    }

    func notify(_ server: RemoteServer, _ era: Era, _ method: String) async throws {
        let message: JSONValue = ["jsonrpc": "2.0", "method": .string(method)]
        if server.transport == "stdio" {
            try stdioSession(server).write(message)
            return
        }
        var headers =
            server.headers + [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]
        if case .legacy(let version, let session) = era {
            headers.append((MCPWire.versionHeader, version))
            if let session { headers.append((MCPWire.sessionHeader, session)) }
        }
        _ = try? await http.send(
            OutboundHTTP.Request(
                url: server.url ?? "", headers: headers, body: Array(message.jsonText.utf8), timeout: server.timeout,
                maxResponseBytes: 64 * 1024))
    }

    /// A POST to an HTTP server; the answer as JSON or from an SSE stream.
    func post(
        _ server: RemoteServer, _ era: Era, _ message: JSONValue, id: Int, method: String, params: [String: JSONValue]
    ) async throws -> (JSONValue, String?) {
        var headers =
            server.headers + [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]
        switch era {
        case .modern:
            headers.append((MCPWire.versionHeader, MCPWire.modern))
            headers.append((MCPWire.methodHeader, method))
            if let key = MCPWire.nameBearing[method], let v = params[key]?.stringValue {
                headers.append((MCPWire.nameHeader, MCPWire.encodeHeader(v)))
            }
        case .legacy(let version, let session):
            if method != "initialize" { headers.append((MCPWire.versionHeader, version)) }
            if let session { headers.append((MCPWire.sessionHeader, session)) }
        }
        let response: OutboundHTTP.Response
        do {
            response = try await http.send(
                OutboundHTTP.Request(
                    url: server.url ?? "", headers: headers, body: Array(message.jsonText.utf8),
                    timeout: server.timeout,
                    maxResponseBytes: Self.maxResponseBytes, enough: { Self.sseAnswer(in: $0, id: id) != nil }))
        } catch let f as OutboundHTTP.Failure {
            throw RemoteFailure(description: f.description, timedOut: f.timedOut)
        }
        if response.status == 404, case .legacy(_, let s) = era, s != nil {
            throw RemoteFailure(description: Self.sessionGone)
        }
        let type = response.header("Content-Type")?.lowercased() ?? ""
        let reply: JSONValue?
        if type.hasPrefix("text/event-stream") {
            reply = Self.sseAnswer(in: response.body, id: id)
        } else {
            reply = try? JSONDecoder().decode(JSONValue.self, from: Data(response.body))
        }
        guard let reply, reply.objectValue?["jsonrpc"] != nil else {
            throw RemoteFailure(description: "HTTP \(response.status) without a JSON-RPC answer")
        }
        return (reply, response.header(MCPWire.sessionHeader))
    }

    /// The JSON-RPC answer to `id` among an SSE stream's events, once it has come.
    static func sseAnswer(in bytes: [UInt8], id: Int) -> JSONValue? {
        let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        for event in text.components(separatedBy: "\n\n") {
            let data = event.split(separator: "\n").filter { $0.hasPrefix("data:") }.map {
                $0.dropFirst(5).trimmingCharacters(in: .whitespaces)
            }.joined(separator: "\n")
            guard !data.isEmpty, let v = try? JSONDecoder().decode(JSONValue.self, from: Data(data.utf8)),
                case .object(let o) = v, o["id"] == .int(id), o["result"] != nil || o["error"] != nil
            else { continue }
            return v
        }
        return nil
    }

    /// The live stdio process of a server, started on first use.
    func stdioSession(_ server: RemoteServer) throws -> StdioSession {
        if let s = stdio.withLock({ $0[server.id] }), s.isAlive { return s }
        guard let command = server.command else { throw RemoteFailure(description: "the server has no command") }
        let launch: Sandbox.Launch
        do {
            launch = try sandbox.launch(
                [command] + server.args, workspace: server.wsID, project: nil, cwd: nil, environment: server.environment
            )
        } catch let e as HTTPError {
            throw RemoteFailure(description: e.message)
        }
        let session = try StdioSession.start(launch)
        stdio.withLock { $0[server.id] = session }
        return session
    }
}
