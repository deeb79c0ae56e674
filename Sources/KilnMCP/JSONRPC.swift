import Foundation
import KilnCore
import KilnHTTP

/// The Model Context Protocol's wire vocabulary as Kiln speaks it: JSON-RPC 2.0 messages, the two
/// protocol revisions (the stateless `2026-07-28` and the handshake-era `2025-11-25`), their
/// headers, `_meta` keys and error codes.
enum MCPWire {
    static let modern = "2026-07-28"
    static let modernVersions = [modern]
    /// Revisions reachable through `initialize`, newest last.
    static let handshakeVersions = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
    static let latestHandshake = "2025-11-25"

    static let protocolVersionKey = "io.modelcontextprotocol/protocolVersion"
    static let clientCapabilitiesKey = "io.modelcontextprotocol/clientCapabilities"
    static let clientInfoKey = "io.modelcontextprotocol/clientInfo"
    static let serverInfoKey = "io.modelcontextprotocol/serverInfo"

    static let versionHeader = "MCP-Protocol-Version"
    static let methodHeader = "Mcp-Method"
    static let nameHeader = "Mcp-Name"
    static let sessionHeader = "Mcp-Session-Id"
    /// The params field each name-bearing method mirrors in `Mcp-Name`.
    static let nameBearing = ["tools/call": "name", "prompts/get": "name", "resources/read": "uri"]

    // JSON-RPC and MCP error codes.
    static let parseError = -32700
    static let invalidRequest = -32600
    static let methodNotFound = -32601
    static let invalidParams = -32602
    static let internalError = -32603
    static let headerMismatch = -32020
    static let missingCapability = -32021
    static let unsupportedVersion = -32022
    static let sessionNotFound = -32001

    /// The HTTP status a stateless-revision error travels with (the rest: 200).
    static func httpStatus(_ code: Int) -> HTTPStatus {
        switch code {
        case parseError, invalidRequest, invalidParams, headerMismatch, missingCapability, unsupportedVersion:
            .badRequest
        case methodNotFound: .notFound
        default: .ok
        }
    }

    /// A header value as the sender wrote it: plain, or `=?base64?…?=` for what would not survive
    /// as a header (nil for a malformed sentinel, so it never matches by accident).
    static func decodeHeader(_ value: String?) -> String? {
        guard let value else { return nil }
        guard value.hasPrefix("=?base64?"), value.hasSuffix("?="), value.count >= 11 else { return value }
        let payload = String(value.dropFirst(9).dropLast(2))
        guard let data = Data(base64Encoded: payload), data.base64EncodedString() == payload,
            let s = String(data: data, encoding: .utf8)
        else { return nil }
        return s
    }

    /// `value` made safe for a header (what `decodeHeader` reads back).
    static func encodeHeader(_ value: String) -> String {
        let printable = value.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value <= 0x7e }
        if printable && value == value.trimmingCharacters(in: .whitespaces) && !value.hasPrefix("=?base64?") {
            return value
        }
        return "=?base64?" + Data(value.utf8).base64EncodedString() + "?="
    }
}

/// A JSON-RPC error as MCP sends it: `{code, message, data?}`.
struct RPCError: Error, Sendable {
    let code: Int
    let message: String
    var data: JSONValue? = nil

    var json: JSONValue {
        var o: [String: JSONValue] = ["code": .int(code), "message": .string(message)]
        if let data { o["data"] = data }
        return .object(o)
    }

    static func invalidParams(_ m: String) -> RPCError { RPCError(code: MCPWire.invalidParams, message: m) }
}

/// One decoded JSON-RPC message posted to `/mcp`.
struct RPCMessage: Sendable {
    /// nil for a notification.
    let id: JSONValue?
    let method: String
    let params: [String: JSONValue]

    var isNotification: Bool { id == nil }

    /// The `_meta` object of the params, if any.
    var meta: [String: JSONValue]? {
        if case .object(let m)? = params["_meta"] { return m }
        return nil
    }

    /// Parses one request or notification; an `RPCError` for anything else (the id when one was read).
    static func parse(_ bytes: [UInt8]) -> Result<RPCMessage, RPCFailure> {
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)) else {
            return .failure(RPCFailure(id: .null, error: RPCError(code: MCPWire.parseError, message: "Parse error")))
        }
        guard case .object(let o) = value else {
            let what = {
                if case .array = value { "a batch (send one message per request)" } else { "not an object" }
            }()
            return .failure(
                RPCFailure(
                    id: .null,
                    error: RPCError(
                        code: MCPWire.invalidRequest,
                        message: "The body must be a single JSON-RPC request or notification, not \(what)")))
        }
        var id: JSONValue? = nil
        if let raw = o["id"] {
            switch raw {
            case .string, .int: id = raw
            case .double(let d) where d == d.rounded() && abs(d) < 9e15: id = .int(Int(d))
            default:
                return .failure(
                    RPCFailure(
                        id: .null,
                        error: RPCError(code: MCPWire.invalidRequest, message: "id must be a string or an integer")))
            }
        }
        guard case .string("2.0")? = o["jsonrpc"] else {
            return .failure(
                RPCFailure(
                    id: id ?? .null, error: RPCError(code: MCPWire.invalidRequest, message: "jsonrpc must be \"2.0\"")))
        }
        guard case .string(let method)? = o["method"], !method.isEmpty else {
            return .failure(
                RPCFailure(
                    id: id ?? .null,
                    error: RPCError(
                        code: MCPWire.invalidRequest,
                        message: "A request needs a method (this server sends no requests)")))
        }
        var params: [String: JSONValue] = [:]
        switch o["params"] {
        case nil, .null: break
        case .object(let p): params = p
        default:
            return .failure(
                RPCFailure(
                    id: id ?? .null, error: RPCError(code: MCPWire.invalidParams, message: "params must be an object")))
        }
        return .success(RPCMessage(id: id, method: method, params: params))
    }
}

/// A message that could not be taken, with the id to answer under (null when none was read).
struct RPCFailure: Error, Sendable {
    let id: JSONValue
    let error: RPCError
}

/// The JSON-RPC answers.
enum RPCReply {
    static func result(_ id: JSONValue, _ result: JSONValue) -> JSONValue {
        ["jsonrpc": "2.0", "id": id, "result": result]
    }
    static func error(_ id: JSONValue, _ e: RPCError) -> JSONValue {
        ["jsonrpc": "2.0", "id": id, "error": e.json]
    }
}
