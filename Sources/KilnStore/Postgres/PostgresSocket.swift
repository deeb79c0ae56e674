import Foundation
import KilnHTTP

/// The driver's connection to the database server: Kiln's one client socket (KilnHTTP
/// ClientSocket: TCP, upgraded to TLS in place after `SSLRequest`), its failures read as the
/// driver's connection errors. Reads wait with `waitReadable` first, so a caller can give up on a
/// slow answer (and cancel the query) instead of blocking for ever.
final class PostgresSocket {
    private let socket: ClientSocket

    /// Connects to the first address of `host` that accepts within `timeout`.
    init(host: String, port: Int, timeout: Double) throws {
        socket = try Self.mapped("cannot reach the database server at \(host):\(port)") {
            // A write to a server that stopped reading fails after 30 s instead of hanging the pool.
            try ClientSocket(host: host, port: port, timeout: timeout, readTimeout: nil, writeTimeout: 30)
        }
    }

    var fd: Int32 { socket.fd }
    var isTLS: Bool { socket.isTLS }
    var tlsDescription: String? { socket.tlsDescription }
    var hasPendingInput: Bool { socket.hasPendingInput }

    /// The TLS handshake after the server answered 'S' to SSLRequest. `verify`: check the chain
    /// (against `rootCert` or the system's roots) and, with `hostName`, the name too.
    func startTLS(hostName: String?, verify: Bool, rootCert: String?) throws {
        try Self.mapped("TLS with the database server") {
            try socket.startTLS(hostName: hostName, verify: verify, rootCert: rootCert)
        }
    }

    func write(_ bytes: [UInt8]) throws { try Self.mapped(Self.lost) { try socket.write(bytes) } }

    func waitReadable(timeout: Double?) throws -> Bool {
        try Self.mapped(Self.lost) { try socket.waitReadable(timeout: timeout) }
    }

    /// Exactly `count` bytes (blocking).
    func read(_ count: Int) throws -> ArraySlice<UInt8> { try Self.mapped(Self.lost) { try socket.read(count) } }

    func readByte() throws -> UInt8 { try Self.mapped(Self.lost) { try socket.readByte() } }

    func close() { socket.close() }

    static let lost = "the connection to the database was lost"

    /// A socket failure as the driver's: a refused certificate says so (the pool does not retry it).
    private static func mapped<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let f as ClientSocket.Failure {
            if let why = f.certificate {
                throw PostgresError.connection("the database server's certificate was refused: \(why)")
            }
            throw PostgresError.connection(what == lost ? lost : "\(what): \(f.description)")
        }
    }
}
