import Foundation
import Synchronization

/// One NOTIFY the server delivered.
public struct PostgresNotification: Sendable, Equatable {
    public let channel: String
    public let payload: String
    public let processID: Int32
}

/// One connection speaking the PostgreSQL frontend/backend protocol 3.0: start-up with TLS
/// (SSLRequest) and SCRAM-SHA-256 or md5, the extended query protocol with parameters and
/// statements prepared once per connection, cancel requests for queries past their time, and
/// NOTIFY delivery. Blocking; one thread at a time (the pool hands it out).
public final class PostgresConnection: @unchecked Sendable {
    public let config: PostgresConfig
    private let socket: PostgresSocket
    public private(set) var processID: Int32 = 0
    private var secretKey: Int32 = 0
    public private(set) var parameters: [String: String] = [:]
    /// 'I' idle, 'T' in a transaction, 'E' in a failed transaction.
    public private(set) var transactionStatus = UInt8(ascii: "I")
    /// Set once the connection cannot be trusted any more (lost, out of step): the pool drops it.
    public private(set) var isBroken = false
    private var statements: [String: PreparedStatement] = [:]
    private var statementCounter = 0
    private var pendingNotifications: [PostgresNotification] = []
    static let maxCachedStatements = 256

    private struct PreparedStatement {
        let name: String
        var columns: [String]
        var types: [Int32]
    }

    public var serverVersion: String { parameters["server_version"] ?? "?" }
    public var tlsDescription: String? { socket.tlsDescription }

    public init(config: PostgresConfig) throws {
        self.config = config
        socket = try PostgresConnection.open(config)
        do {
            try startUp()
        } catch {
            socket.close()
            throw error
        }
    }

    deinit {
        if !isBroken { try? socket.write(FrontendMessage(UInt8(ascii: "X")).finished) }
        socket.close()
    }

    /// TCP, then TLS as the sslmode asks.
    private static func open(_ config: PostgresConfig) throws -> PostgresSocket {
        let socket = try PostgresSocket(
            host: config.hostAddress ?? config.host, port: config.port, timeout: config.connectTimeout)
        guard config.sslMode != .disable else { return socket }
        var request = FrontendMessage(nil)
        request.int32(80_877_103)
        try socket.write(request.finished)
        guard try socket.waitReadable(timeout: config.connectTimeout) else {
            throw PostgresError.connection("the database server did not answer the TLS request")
        }
        switch try socket.readByte() {
        case UInt8(ascii: "S"):
            let verify = config.sslMode == .verifyCA || config.sslMode == .verifyFull
            try socket.startTLS(
                hostName: config.sslMode == .verifyFull ? config.host : nil, verify: verify,
                rootCert: config.sslRootCert)
        case UInt8(ascii: "N") where config.sslMode == .prefer:
            break
        case UInt8(ascii: "N"):
            throw PostgresError.connection(
                "the database server does not offer TLS (sslmode=\(config.sslMode.rawValue) requires it)")
        default:
            throw PostgresError.protocolViolation("an answer to SSLRequest that is neither S nor N")
        }
        return socket
    }

    // MARK: Start-up and authentication

    private func startUp() throws {
        var m = FrontendMessage(nil)
        m.int32(196_608)
        for (k, v) in [
            ("user", config.user), ("database", config.database), ("application_name", config.applicationName),
            ("client_encoding", "UTF8"), ("DateStyle", "ISO"), ("TimeZone", "UTC"),
        ] {
            m.cString(k)
            m.cString(v)
        }
        m.raw([0])
        try socket.write(m.finished)
        var scram: SCRAMClient?
        while true {
            guard try socket.waitReadable(timeout: config.connectTimeout) else {
                throw PostgresError.connection("the database server did not finish the login in time")
            }
            let (type, body) = try readMessage()
            var r = BackendReader(body)
            switch type {
            case UInt8(ascii: "R"):
                let code = try r.int32()
                switch code {
                case 0: break
                case 3: try sendPassword(try requirePassword())
                case 5:
                    let salt = try r.bytes(4)
                    try sendPassword(
                        SCRAMClient.md5Response(user: config.user, password: try requirePassword(), salt: salt))
                case 10:
                    var mechanisms: [String] = []
                    while !r.atEnd {
                        let name = try r.cString()
                        if name.isEmpty { break }
                        mechanisms.append(name)
                    }
                    guard mechanisms.contains("SCRAM-SHA-256") else {
                        throw PostgresError.authentication(
                            "the database server offers only \(mechanisms.joined(separator: ", ")), not SCRAM-SHA-256")
                    }
                    let client = SCRAMClient(password: try requirePassword())
                    scram = client
                    var msg = FrontendMessage(UInt8(ascii: "p"))
                    msg.cString("SCRAM-SHA-256")
                    let first = Array(client.clientFirst.utf8)
                    msg.int32(Int32(first.count))
                    msg.raw(first)
                    try socket.write(msg.finished)
                case 11:
                    guard var client = scram else { throw PostgresError.protocolViolation("SCRAM out of order") }
                    let final = try client.clientFinal(serverFirst: String(decoding: r.rest, as: UTF8.self))
                    scram = client
                    var msg = FrontendMessage(UInt8(ascii: "p"))
                    msg.raw(Array(final.utf8))
                    try socket.write(msg.finished)
                case 12:
                    guard let client = scram else { throw PostgresError.protocolViolation("SCRAM out of order") }
                    try client.verify(serverFinal: String(decoding: r.rest, as: UTF8.self))
                default:
                    throw PostgresError.authentication(
                        "the database server asks for an authentication method Kiln does not speak (\(code))")
                }
            case UInt8(ascii: "K"):
                processID = try r.int32()
                secretKey = try r.int32()
            case UInt8(ascii: "Z"):
                transactionStatus = try r.byte()
                return
            case UInt8(ascii: "E"):
                let e = try r.errorFields()
                if e.sqlstate == "28P01" || e.sqlstate == "28000" {
                    throw PostgresError.authentication("the database refused the login of \(config.user): \(e.message)")
                }
                throw PostgresError.server(e)
            default:
                try handleAsync(type, body)
            }
        }
    }

    private func requirePassword() throws -> String {
        guard let p = config.password else {
            throw PostgresError.authentication(
                "the database server asks for a password: put it in the URL or KILN_DATABASE_PASSWORD")
        }
        return p
    }

    private func sendPassword(_ p: String) throws {
        var msg = FrontendMessage(UInt8(ascii: "p"))
        msg.cString(p)
        try socket.write(msg.finished)
    }

    // MARK: Messages

    private func readMessage() throws -> (UInt8, ArraySlice<UInt8>) {
        do {
            let type = try socket.readByte()
            var header = BackendReader(try socket.read(4))
            let len = Int(try header.int32())
            guard len >= 4, len < 1 << 30 else { throw PostgresError.protocolViolation("a message of length \(len)") }
            return (type, try socket.read(len - 4))
        } catch {
            isBroken = true
            throw error
        }
    }

    /// Messages that may come at any time: NOTIFY, notices, parameter changes.
    private func handleAsync(_ type: UInt8, _ body: ArraySlice<UInt8>) throws {
        var r = BackendReader(body)
        switch type {
        case UInt8(ascii: "A"):
            let pid = try r.int32()
            let channel = try r.cString()
            pendingNotifications.append(
                PostgresNotification(channel: channel, payload: try r.cString(), processID: pid))
        case UInt8(ascii: "S"):
            let name = try r.cString()
            parameters[name] = try r.cString()
        case UInt8(ascii: "N"):
            break
        default:
            isBroken = true
            throw PostgresError.protocolViolation("message '\(Character(UnicodeScalar(type)))' out of place")
        }
    }

    // MARK: Queries

    /// Runs statements without parameters through the simple query protocol (DDL, several
    /// statements at once, LISTEN, transaction control). Returns the last statement's rows.
    @discardableResult
    public func simpleQuery(_ sql: String, timeout: Double? = nil) throws -> PostgresResult {
        var m = FrontendMessage(UInt8(ascii: "Q"))
        m.cString(sql)
        try send(m.finished)
        return try readResults(columns: nil, timeout: timeout).get()
    }

    /// One statement with `$1…` parameters through the extended protocol; the statement is parsed
    /// once per connection and kept (up to 256). `timeout`: past it, the query is cancelled on the
    /// server and the call fails with SQLSTATE 57014.
    public func query(_ sql: String, _ args: [SQLValue], timeout: Double? = nil) throws -> PostgresResult {
        if PostgresConnection.typedStatements.withLock({ $0.contains(sql) }) {
            return try execute(sql, args, types: args.map(PostgresConnection.declaredType), timeout: timeout)
        }
        let inferred = args.map(PostgresConnection.inferredType)
        do {
            return try execute(sql, args, types: inferred, timeout: timeout)
        } catch let e as PostgresError where (e.sqlstate == "42P18" || e.sqlstate == "42P08") && inferred.contains(0) {
            // "could not determine data type of parameter": from now on this statement says what
            // each parameter is. Outside a transaction block at once; inside one the block is
            // aborted already, so the error goes up and the store runs the transaction again.
            PostgresConnection.typedStatements.withLock { _ = $0.insert(sql) }
            guard transactionStatus == UInt8(ascii: "I") else { throw e }
            return try execute(sql, args, types: args.map(PostgresConnection.declaredType), timeout: timeout)
        }
    }

    /// Statements whose text and NULL parameters the server cannot type from context.
    private static let typedStatements = Mutex<Set<String>>([])  // architecture: process-wide

    private func execute(_ sql: String, _ args: [SQLValue], types: [Int32], timeout: Double?) throws -> PostgresResult {
        let key = types.map(String.init).joined(separator: ",") + "|" + sql
        var out: [UInt8] = []
        let cached = statements[key]
        let name: String
        if let cached {
            name = cached.name
        } else {
            if statements.count >= PostgresConnection.maxCachedStatements { try closeAllStatements() }
            statementCounter += 1
            name = "k\(statementCounter)"
            var parse = FrontendMessage(UInt8(ascii: "P"))
            parse.cString(name)
            parse.cString(sql)
            parse.int16(Int16(types.count))
            for t in types { parse.int32(t) }
            out += parse.finished
            var describe = FrontendMessage(UInt8(ascii: "D"))
            describe.raw([UInt8(ascii: "S")])
            describe.cString(name)
            out += describe.finished
        }
        out += PostgresConnection.bind(statement: name, args)
        var exec = FrontendMessage(UInt8(ascii: "E"))
        exec.cString("")
        exec.int32(0)
        out += exec.finished
        out += FrontendMessage(UInt8(ascii: "S")).finished
        try send(out)
        let outcome = try readResults(columns: cached?.columns, types: cached?.types, timeout: timeout)
        if cached == nil && outcome.result.parsed {
            statements[key] = PreparedStatement(
                name: name, columns: outcome.result.columns, types: outcome.result.types)
        }
        return try outcome.get()
    }

    private static func bind(statement name: String, _ args: [SQLValue]) -> [UInt8] {
        var bind = FrontendMessage(UInt8(ascii: "B"))
        bind.cString("")
        bind.cString(name)
        let binary = args.contains { if case .blob = $0 { true } else { false } }
        if binary {
            bind.int16(Int16(args.count))
            for a in args {
                if case .blob = a { bind.int16(1) } else { bind.int16(0) }
            }
        } else {
            bind.int16(0)
        }
        bind.int16(Int16(args.count))
        for a in args {
            switch a {
            case .null: bind.int32(-1)
            case .integer(let n):
                let s = Array(String(n).utf8)
                bind.int32(Int32(s.count))
                bind.raw(s)
            case .real(let d):
                let s = Array(PostgresConnection.text(d).utf8)
                bind.int32(Int32(s.count))
                bind.raw(s)
            case .text(let t):
                let s = Array(t.utf8)
                bind.int32(Int32(s.count))
                bind.raw(s)
            case .blob(let b):
                bind.int32(Int32(b.count))
                bind.raw(b)
            }
        }
        bind.int16(0)  // all results as text
        return bind.finished
    }

    private static func text(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d > 0 ? "Infinity" : "-Infinity" }
        return "\(d)"
    }

    /// Parameter types left to the server where it can tell from context (text and NULL).
    private static func inferredType(_ v: SQLValue) -> Int32 {
        switch v {
        case .integer: 20
        case .real: 701
        case .blob: 17
        case .text, .null: 0
        }
    }

    private static func declaredType(_ v: SQLValue) -> Int32 {
        switch v {
        case .text, .null: 25
        default: inferredType(v)
        }
    }

    private func closeAllStatements() throws {
        var out: [UInt8] = []
        for s in statements.values {
            var close = FrontendMessage(UInt8(ascii: "C"))
            close.raw([UInt8(ascii: "S")])
            close.cString(s.name)
            out += close.finished
        }
        statements.removeAll()
        try send(out + FrontendMessage(UInt8(ascii: "S")).finished)
        _ = try readResults(columns: nil, timeout: nil).get()
    }

    private func send(_ bytes: [UInt8]) throws {
        guard !isBroken else { throw PostgresError.connection("the connection to the database was lost") }
        do {
            try socket.write(bytes)
        } catch {
            isBroken = true
            throw error
        }
    }

    /// What the server answered up to ReadyForQuery: the result, and the first error if any.
    private struct Outcome {
        var result: PostgresResult
        var failure: PostgresError?
        func get() throws -> PostgresResult {
            if let failure { throw failure }
            return result
        }
    }

    /// Reads until ReadyForQuery (server errors come back in the outcome, once the server is ready
    /// again). Past `timeout` the query is cancelled; 5 s later without an answer the connection
    /// is given up.
    private func readResults(
        columns known: [String]?, types knownTypes: [Int32]? = nil, timeout: Double?
    ) throws
        -> Outcome
    {
        var result = PostgresResult(columns: known ?? [], types: knownTypes ?? [])
        var failure: PostgresError?
        var deadline = timeout.map { Date().addingTimeInterval($0) }
        var cancelled = false
        while true {
            if let d = deadline, !(try socket.waitReadable(timeout: max(0, d.timeIntervalSinceNow))) {
                guard !cancelled else {
                    isBroken = true
                    socket.close()
                    throw PostgresError.connection("the database server did not answer a cancelled query")
                }
                cancelled = true
                try? cancelRunningQuery()
                deadline = Date().addingTimeInterval(5)
                continue
            }
            let (type, body) = try readMessage()
            var r = BackendReader(body)
            switch type {
            case UInt8(ascii: "1"):
                result.parsed = true
            case UInt8(ascii: "2"), UInt8(ascii: "3"), UInt8(ascii: "n"), UInt8(ascii: "t"), UInt8(ascii: "I"),
                UInt8(ascii: "s"):
                break
            case UInt8(ascii: "T"):
                let n = Int(try r.int16())
                var names: [String] = []
                var oids: [Int32] = []
                for _ in 0..<n {
                    names.append(try r.cString())
                    _ = try r.bytes(6)
                    oids.append(try r.int32())
                    _ = try r.bytes(8)
                }
                result.columns = names
                result.types = oids
            case UInt8(ascii: "D"):
                let n = Int(try r.int16())
                var values: [SQLValue] = []
                values.reserveCapacity(n)
                for i in 0..<n {
                    let len = Int(try r.int32())
                    if len < 0 {
                        values.append(.null)
                    } else {
                        let raw = try r.bytes(len)
                        values.append(
                            PostgresConnection.decode(raw, type: i < result.types.count ? result.types[i] : 25))
                    }
                }
                result.rows.append(Row(columns: result.columns, values: values))
            case UInt8(ascii: "C"):
                result.tag = try r.cString()
                if let last = result.tag.split(separator: " ").last, let n = Int(last) { result.affected += n }
            case UInt8(ascii: "E"):
                let e = PostgresError.server(try r.errorFields())
                if failure == nil { failure = e }
                if e.isConnectionLoss {
                    isBroken = true
                    throw e
                }
            case UInt8(ascii: "Z"):
                transactionStatus = try r.byte()
                return Outcome(result: result, failure: failure)
            default:
                try handleAsync(type, body)
            }
        }
    }

    /// Asks the server, on a connection of its own, to cancel what this one is running.
    public func cancelRunningQuery() throws {
        let side = try PostgresConnection.open(config)
        defer { side.close() }
        var m = FrontendMessage(nil)
        m.int32(80_877_102)
        m.int32(processID)
        m.int32(secretKey)
        try side.write(m.finished)
        // The server closes the connection when it has read the request.
        _ = try? side.waitReadable(timeout: 2)
    }

    // MARK: LISTEN / NOTIFY

    /// Notifications delivered since the last call, waiting up to `timeout` for the first one.
    public func notifications(timeout: Double) throws -> [PostgresNotification] {
        if pendingNotifications.isEmpty, try socket.waitReadable(timeout: timeout) {
            repeat {
                let (type, body) = try readMessage()
                if type == UInt8(ascii: "E") {
                    var r = BackendReader(body)
                    isBroken = true
                    throw PostgresError.server(try r.errorFields())
                }
                try handleAsync(type, body)
            } while socket.hasPendingInput
        }
        defer { pendingNotifications.removeAll() }
        return pendingNotifications
    }

    /// Whether an idle connection looks usable: nothing unread (a server going away sends an
    /// error and closes), not marked broken. Costs no round trip.
    public var looksHealthy: Bool { !isBroken && !socket.hasPendingInput }

    public func close() {
        if !isBroken { try? socket.write(FrontendMessage(UInt8(ascii: "X")).finished) }
        isBroken = true
        socket.close()
    }

    /// Decodes one text-format value by its type: integers, floats and booleans as numbers (Kiln's
    /// rows read them as SQLite gives them), bytea from its hex form, everything else as text.
    static func decode(_ raw: ArraySlice<UInt8>, type: Int32) -> SQLValue {
        switch type {
        case 20, 21, 23, 26:
            let s = String(decoding: raw, as: UTF8.self)
            return Int64(s).map(SQLValue.integer) ?? .text(s)
        case 700, 701:
            return Double(String(decoding: raw, as: UTF8.self)).map(SQLValue.real) ?? .null
        case 1700:
            let s = String(decoding: raw, as: UTF8.self)
            if let n = Int64(s) { return .integer(n) }
            return Double(s).map(SQLValue.real) ?? .text(s)
        case 16:
            return .integer(raw.first == UInt8(ascii: "t") ? 1 : 0)
        case 17:
            return .blob(decodeByteaHex(raw))
        default:
            return .text(String(decoding: raw, as: UTF8.self))
        }
    }

    private static func decodeByteaHex(_ raw: ArraySlice<UInt8>) -> [UInt8] {
        guard raw.count >= 2, raw.first == UInt8(ascii: "\\"), raw[raw.startIndex + 1] == UInt8(ascii: "x") else {
            return Array(raw)
        }
        func nibble(_ c: UInt8) -> UInt8 {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: 0
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity((raw.count - 2) / 2)
        var i = raw.startIndex + 2
        while i + 1 < raw.endIndex {
            out.append(nibble(raw[i]) << 4 | nibble(raw[i + 1]))
            i += 2
        }
        return out
    }
}

/// What one statement returned.
public struct PostgresResult: Sendable {
    public var columns: [String]
    public var types: [Int32]
    public var rows: [Row] = []
    /// The command tag ("INSERT 0 1", "UPDATE 3", "SELECT 2").
    public var tag = ""
    /// Rows the statement changed (from the tag).
    public var affected = 0
    /// The server parsed the statement (ParseComplete): it exists under its name even if the
    /// execution then failed.
    var parsed = false

    init(columns: [String], types: [Int32]) {
        self.columns = columns
        self.types = types
    }
}
