import Foundation

/// What went wrong talking to PostgreSQL. `server` carries the server's own error fields; its
/// SQLSTATE says what kind (23505 unique violation, 40001 serialization failure, 57014 cancelled).
public enum PostgresError: Error, CustomStringConvertible, Sendable {
    case connection(String)
    case authentication(String)
    case server(ServerError)
    case protocolViolation(String)

    public struct ServerError: Sendable {
        public let sqlstate: String
        public let severity: String
        public let message: String
        public let detail: String?
        public let constraint: String?
    }

    public var sqlstate: String? {
        if case .server(let e) = self { return e.sqlstate }
        return nil
    }

    /// Nothing was sent or the connection is gone: the connection must not be reused.
    public var isConnectionLoss: Bool {
        switch self {
        case .connection, .protocolViolation: true
        // admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away.
        case .server(let e): e.sqlstate.hasPrefix("57P") || e.sqlstate.hasPrefix("08")
        case .authentication: false
        }
    }

    public var description: String {
        switch self {
        case .connection(let m), .authentication(let m): m
        case .protocolViolation(let m): "the database server sent something unexpected: \(m)"
        case .server(let e):
            "PostgreSQL \(e.severity) \(e.sqlstate): \(e.message)" + (e.detail.map { " (\($0))" } ?? "")
        }
    }
}

/// A frontend message being built: type byte, length placeholder, then the fields.
struct FrontendMessage {
    var bytes: [UInt8]
    private let lengthAt: Int

    /// A typed message ('Q', 'P', 'B'…); `nil` for the untyped start-up packets.
    init(_ type: UInt8?) {
        bytes = []
        bytes.reserveCapacity(64)
        if let type { bytes.append(type) }
        lengthAt = bytes.count
        bytes += [0, 0, 0, 0]
    }

    mutating func int32(_ v: Int32) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func int16(_ v: Int16) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func cString(_ s: String) {
        bytes += s.utf8
        bytes.append(0)
    }
    mutating func raw(_ b: [UInt8]) { bytes += b }

    /// The finished message, its length (which counts itself, not the type byte) written in.
    var finished: [UInt8] {
        var out = bytes
        let len = UInt32(out.count - lengthAt)
        for i in 0..<4 { out[lengthAt + i] = UInt8(truncatingIfNeeded: len >> (24 - 8 * i)) }
        return out
    }
}

/// Reads the fields of one backend message body.
struct BackendReader {
    let body: ArraySlice<UInt8>
    var at: Int

    init(_ body: ArraySlice<UInt8>) {
        self.body = body
        at = body.startIndex
    }

    var atEnd: Bool { at >= body.endIndex }

    mutating func int32() throws -> Int32 {
        guard at + 4 <= body.endIndex else { throw PostgresError.protocolViolation("a message ended early") }
        defer { at += 4 }
        return Int32(
            bitPattern: UInt32(body[at]) << 24 | UInt32(body[at + 1]) << 16 | UInt32(body[at + 2]) << 8
                | UInt32(body[at + 3]))
    }

    mutating func int16() throws -> Int16 {
        guard at + 2 <= body.endIndex else { throw PostgresError.protocolViolation("a message ended early") }
        defer { at += 2 }
        return Int16(bitPattern: UInt16(body[at]) << 8 | UInt16(body[at + 1]))
    }

    mutating func byte() throws -> UInt8 {
        guard at < body.endIndex else { throw PostgresError.protocolViolation("a message ended early") }
        defer { at += 1 }
        return body[at]
    }

    mutating func cString() throws -> String {
        guard let end = body[at...].firstIndex(of: 0) else {
            throw PostgresError.protocolViolation("a string without its end")
        }
        defer { at = end + 1 }
        return String(decoding: body[at..<end], as: UTF8.self)
    }

    mutating func bytes(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, at + n <= body.endIndex else { throw PostgresError.protocolViolation("a message ended early") }
        defer { at += n }
        return body[at..<at + n]
    }

    var rest: ArraySlice<UInt8> { body[at...] }

    /// ErrorResponse / NoticeResponse fields.
    mutating func errorFields() throws -> PostgresError.ServerError {
        var fields: [UInt8: String] = [:]
        while true {
            let code = try byte()
            if code == 0 { break }
            fields[code] = try cString()
        }
        return PostgresError.ServerError(
            sqlstate: fields[UInt8(ascii: "C")] ?? "XX000",
            severity: fields[UInt8(ascii: "V")] ?? fields[UInt8(ascii: "S")] ?? "ERROR",
            message: fields[UInt8(ascii: "M")] ?? "unknown error", detail: fields[UInt8(ascii: "D")],
            constraint: fields[UInt8(ascii: "n")])
    }
}
