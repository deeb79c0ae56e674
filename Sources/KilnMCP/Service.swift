import Foundation
import KilnCore
import KilnHTTP
import Synchronization

/// Kiln as an MCP server over streamable HTTP (`POST /mcp`): the stateless `2026-07-28` revision
/// (every request carries its version and capabilities in `_meta`, `server/discover` advertises
/// the server) and, for older clients, `2025-11-25` with `initialize` and `Mcp-Session-Id`.
/// Answers are JSON (never a stream: every tool answers once).
public final class MCPServerService: Sendable {
    let toolbox: KilnToolbox
    let clock: any Clock
    /// Handshake-era sessions: id → who opened it and at which revision.
    struct Session: Sendable {
        let principalKey: String
        let version: String
        var lastUsed: Date
    }
    let sessions = Mutex<[String: Session]>([:])
    static let maxSessions = 10_000
    static let sessionIdle: TimeInterval = 3600
    static let serverInfo: JSONValue = ["name": "kiln", "title": "Kiln workspace", "version": "1.0.0"]
    static let instructions =
        "Kiln workspace tools: list_projects, then search, read_file, find_symbol and list_files in a project "
        + "(project_id, default: your most recent); edit_file and write_file change files; run_tests and run_command "
        + "run in the project's sandbox; start_agent_run, get_run and verify_receipts drive agent runs."

    init(toolbox: KilnToolbox, clock: any Clock) {
        self.toolbox = toolbox
        self.clock = clock
    }

    /// One HTTP exchange: the status, extra headers and the JSON body (nil: 202 with no body).
    struct Answer: Sendable {
        var status: HTTPStatus = .ok
        var headers: [(String, String)] = []
        var body: JSONValue?
    }

    /// A key for "the same caller": the API key (or session) that made the request.
    static func principalKey(_ p: Principal) -> String { p.apiKeyID ?? p.sessionID ?? p.userID }

    func handle(_ bytes: [UInt8], headers: HTTPHeaders, principal p: Principal) async -> Answer {
        let msg: RPCMessage
        switch RPCMessage.parse(bytes) {
        case .success(let m): msg = m
        case .failure(let f):
            return Answer(status: MCPWire.httpStatus(f.error.code), body: RPCReply.error(f.id, f.error))
        }
        let versionHeader = headers[MCPWire.versionHeader]
        let modern =
            versionHeader.map { MCPWire.modernVersions.contains($0) } ?? false
            || (headers[MCPWire.sessionHeader] == nil && msg.meta?[MCPWire.protocolVersionKey] != nil)
        if modern
            || (versionHeader != nil && !MCPWire.handshakeVersions.contains(versionHeader!)
                && headers[MCPWire.sessionHeader] == nil && msg.method != "initialize")
        {
            return await handleModern(msg, headers: headers, p)
        }
        return await handleLegacy(msg, headers: headers, p)
    }

    // MARK: 2026-07-28: stateless

    func handleModern(_ msg: RPCMessage, headers: HTTPHeaders, _ p: Principal) async -> Answer {
        if msg.isNotification {
            // No client-to-server notifications exist on this wire; accepted and dropped.
            if let v = headers[MCPWire.versionHeader], !MCPWire.modernVersions.contains(v) {
                return Answer(
                    status: .badRequest, body: RPCReply.error(.null, Self.unsupported(v)))
            }
            return Answer(status: .accepted, body: nil)
        }
        let id = msg.id ?? .null
        if let rejection = Self.classify(msg, headers) {
            return Answer(status: MCPWire.httpStatus(rejection.code), body: RPCReply.error(id, rejection))
        }
        do {
            let result = try await dispatch(msg, modern: true, p)
            return Answer(body: RPCReply.result(id, result))
        } catch let e as RPCError {
            return Answer(status: MCPWire.httpStatus(e.code), body: RPCReply.error(id, e))
        } catch {
            return Answer(body: RPCReply.error(id, RPCError(code: MCPWire.internalError, message: "Internal error")))
        }
    }

    /// The stateless revision's checks, first failure wins: the `_meta` envelope, then the routing
    /// headers against the body, then the version.
    static func classify(_ msg: RPCMessage, _ headers: HTTPHeaders) -> RPCError? {
        guard let meta = msg.meta else {
            return .invalidParams(
                "params._meta must be an object carrying '\(MCPWire.protocolVersionKey)' and "
                    + "'\(MCPWire.clientCapabilitiesKey)'")
        }
        let missing = [MCPWire.protocolVersionKey, MCPWire.clientCapabilitiesKey].filter { meta[$0] == nil }
        if !missing.isEmpty {
            return .invalidParams("params._meta is missing \(missing.joined(separator: ", "))")
        }
        let version = meta[MCPWire.protocolVersionKey]?.stringValue
        guard let header = headers[MCPWire.versionHeader], header == version else {
            return RPCError(
                code: MCPWire.headerMismatch,
                message: "\(MCPWire.versionHeader) header does not match the request's protocol version")
        }
        guard headers[MCPWire.methodHeader] == msg.method else {
            return RPCError(
                code: MCPWire.headerMismatch, message: "\(MCPWire.methodHeader) header does not match the method")
        }
        if let key = MCPWire.nameBearing[msg.method], let value = msg.params[key]?.stringValue,
            MCPWire.decodeHeader(headers[MCPWire.nameHeader]) != value
        {
            return RPCError(
                code: MCPWire.headerMismatch, message: "\(MCPWire.nameHeader) header does not match params.\(key)")
        }
        guard let version else { return .invalidParams("the protocol version must be a string") }
        guard MCPWire.modernVersions.contains(version) else { return unsupported(version) }
        return nil
    }

    static func unsupported(_ requested: String) -> RPCError {
        RPCError(
            code: MCPWire.unsupportedVersion, message: "Unsupported protocol version",
            data: [
                "supported": .array((MCPWire.modernVersions + [MCPWire.latestHandshake]).map { .string($0) }),
                "requested": .string(requested),
            ])
    }

    // MARK: 2025-11-25: initialize and sessions

    func handleLegacy(_ msg: RPCMessage, headers: HTTPHeaders, _ p: Principal) async -> Answer {
        let id = msg.id ?? .null
        if msg.method == "initialize" {
            guard !msg.isNotification else { return Answer(status: .accepted) }
            let requested = msg.params["protocolVersion"]?.stringValue ?? ""
            let version = MCPWire.handshakeVersions.contains(requested) ? requested : MCPWire.latestHandshake
            let sid = IDs.randomBase62(32)
            let now = clock.now()
            let full = sessions.withLock { s -> Bool in
                if s.count >= Self.maxSessions {
                    for (k, v) in s where now.timeIntervalSince(v.lastUsed) > Self.sessionIdle { s[k] = nil }
                }
                guard s.count < Self.maxSessions else { return true }
                s[sid] = Session(principalKey: Self.principalKey(p), version: version, lastUsed: now)
                return false
            }
            if full {
                return Answer(
                    status: .serviceUnavailable,
                    body: RPCReply.error(id, RPCError(code: MCPWire.internalError, message: "Too many MCP sessions")))
            }
            let result: JSONValue = [
                "protocolVersion": .string(version), "capabilities": Self.capabilities,
                "serverInfo": Self.serverInfo, "instructions": .string(Self.instructions),
            ]
            return Answer(headers: [(MCPWire.sessionHeader, sid)], body: RPCReply.result(id, result))
        }
        guard let sid = headers[MCPWire.sessionHeader], !sid.isEmpty else {
            return Answer(
                status: .badRequest,
                body: RPCReply.error(
                    id,
                    RPCError(
                        code: MCPWire.invalidRequest,
                        message: "Missing \(MCPWire.sessionHeader): initialize first, or send "
                            + "\(MCPWire.versionHeader): \(MCPWire.modern) with the request's _meta")))
        }
        let key = Self.principalKey(p)
        let now = clock.now()
        let session = sessions.withLock { s -> Session? in
            guard var found = s[sid], found.principalKey == key,
                now.timeIntervalSince(found.lastUsed) <= Self.sessionIdle
            else { return nil }
            found.lastUsed = now
            s[sid] = found
            return found
        }
        guard let session else {
            return Answer(
                status: .notFound,
                body: RPCReply.error(id, RPCError(code: MCPWire.sessionNotFound, message: "Session not found")))
        }
        if let v = headers[MCPWire.versionHeader], v != session.version {
            return Answer(
                status: .badRequest,
                body: RPCReply.error(
                    id,
                    RPCError(
                        code: MCPWire.invalidRequest,
                        message: "\(MCPWire.versionHeader) \(v) is not this session's version (\(session.version))")))
        }
        if msg.isNotification { return Answer(status: .accepted) }
        do {
            return Answer(body: RPCReply.result(id, try await dispatch(msg, modern: false, p)))
        } catch let e as RPCError {
            return Answer(body: RPCReply.error(id, e))
        } catch {
            return Answer(body: RPCReply.error(id, RPCError(code: MCPWire.internalError, message: "Internal error")))
        }
    }

    /// `DELETE /mcp`: ends a handshake-era session (only its own caller may).
    func endSession(_ sid: String?, principal p: Principal) -> Bool {
        guard let sid else { return false }
        let key = Self.principalKey(p)
        return sessions.withLock { s in
            guard s[sid]?.principalKey == key else { return false }
            s[sid] = nil
            return true
        }
    }

    // MARK: Methods

    static let capabilities: JSONValue = ["tools": ["listChanged": false], "resources": ["listChanged": false]]

    func dispatch(_ msg: RPCMessage, modern: Bool, _ p: Principal) async throws -> JSONValue {
        var result: [String: JSONValue]
        /// Lists a client may cache: for this caller only, and not for long.
        let cacheable: [String: JSONValue] = modern ? ["ttlMs": 0, "cacheScope": "private"] : [:]
        switch msg.method {
        case "server/discover" where modern:
            result = [
                "supportedVersions": .array(MCPWire.modernVersions.map { .string($0) }),
                "capabilities": Self.capabilities, "instructions": .string(Self.instructions),
                "_meta": [MCPWire.serverInfoKey: Self.serverInfo],
            ].merging(cacheable) { a, _ in a }
        case "ping" where !modern:
            return [:]
        case "tools/list":
            if let c = msg.params["cursor"], c != .null {
                throw RPCError.invalidParams("Unknown cursor (the tool list has one page)")
            }
            result = ["tools": .array(toolbox.visible(to: p).map(\.listed))].merging(cacheable) { a, _ in a }
        case "tools/call":
            guard let name = msg.params["name"]?.stringValue else {
                throw RPCError.invalidParams("params.name is required")
            }
            guard let tool = toolbox.visible(to: p).first(where: { $0.name == name }) else {
                throw RPCError.invalidParams("Unknown tool: \(name.prefix(100))")
            }
            var args: [String: JSONValue] = [:]
            switch msg.params["arguments"] {
            case nil, .null: break
            case .object(let a): args = a
            default: throw RPCError.invalidParams("params.arguments must be an object")
            }
            if let problem = SchemaCheck.problem(JSONValue.object(args), against: tool.input) {
                throw RPCError(
                    code: MCPWire.invalidParams, message: "Invalid arguments for \(name): \(problem.message)",
                    data: ["path": .string(problem.path)])
            }
            return await toolbox.call(tool, args, as: p).json(modern: modern)
        case "resources/list":
            let page = try await resources(cursor: msg.params["cursor"]?.stringValue, p)
            result = page.merging(cacheable) { a, _ in a }
        case "resources/templates/list":
            result = ["resourceTemplates": []].merging(cacheable) { a, _ in a }
        case "resources/read":
            guard let uri = msg.params["uri"]?.stringValue else {
                throw RPCError.invalidParams("params.uri is required")
            }
            result = ["contents": .array([try await readResource(uri, p)])]
        default:
            throw RPCError(code: MCPWire.methodNotFound, message: "Method not found: \(msg.method.prefix(100))")
        }
        if modern { result["resultType"] = "complete" }
        return .object(result)
    }
}
