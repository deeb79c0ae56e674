import COpenSSL
import CShims
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking TCP client connection, upgraded to TLS in place when its protocol says so (an https
/// URL, SMTP's STARTTLS, PostgreSQL's SSLRequest): the one client socket under Kiln's outbound HTTP
/// client, its SMTP mailer and its PostgreSQL driver. Every wait is bounded — connecting by its
/// timeout, reads and writes by `deadline` when set, else by the socket's read and write timeouts —
/// or left to the caller, who polls with `waitReadable` first. One thread uses it at a time.
public final class ClientSocket {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        /// The wait ran out (connecting, or a deadline), rather than the peer failing.
        public let timedOut: Bool
        /// Why the peer's certificate was refused, when a TLS handshake failed on it.
        public let certificate: String?

        init(_ description: String, timedOut: Bool = false, certificate: String? = nil) {
            self.description = description
            self.timedOut = timedOut
            self.certificate = certificate
        }
    }

    public private(set) var fd: Int32 = -1
    private var ctx: OpaquePointer?
    private var ssl: OpaquePointer?
    private var buffer: [UInt8] = []
    private var start = 0
    /// When set, each read and write waits at most until then.
    public var deadline: Date?
    private let readTimeout: Double?
    private let writeTimeout: Double?

    /// Connects to the first address of `host` that accepts within `timeout` seconds. `numericHost`:
    /// `host` is an address already checked (by the outbound guard) and is not looked up again.
    /// `readTimeout`/`writeTimeout`: how long a read or write may block when no deadline is set
    /// (nil: as long as it takes; a reader then polls with `waitReadable`).
    public init(
        host: String, port: Int, timeout: Double, numericHost: Bool = false, readTimeout: Double? = nil,
        writeTimeout: Double? = 30, deadline: Date? = nil
    ) throws {
        self.readTimeout = readTimeout
        self.writeTimeout = writeTimeout
        self.deadline = deadline
        // SSL_write to a peer that went away would raise SIGPIPE and end the process.
        kiln_ignore_sigpipe()
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        if numericHost { hints.ai_flags = AI_NUMERICHOST }
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let first = res else {
            throw Failure("cannot resolve \(host)")
        }
        defer { freeaddrinfo(res) }
        let wait = min(timeout, deadline.map { max(0.001, $0.timeIntervalSinceNow) } ?? timeout)
        var failure = Failure("\(host):\(port) refused the connection")
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            // Close-on-exec from birth: a process started meanwhile must not inherit the connection.
            let s = socket(
                a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            guard s >= 0 else { continue }
            let flags = fcntl(s, F_GETFL)
            _ = fcntl(s, F_SETFL, flags | O_NONBLOCK)
            var r = connect(s, a.pointee.ai_addr, a.pointee.ai_addrlen)
            if r != 0 && errno == EINPROGRESS {
                var p = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, Int32(wait * 1000)) == 1 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len)
                    r = err == 0 ? 0 : -1
                } else {
                    failure = Failure("\(host):\(port) did not accept a connection within \(wait) s", timedOut: true)
                }
            }
            guard r == 0 else {
                Glibc.close(s)
                continue
            }
            _ = fcntl(s, F_SETFL, flags & ~O_NONBLOCK)
            _ = kiln_set_nodelay(s)
            var one: Int32 = 1
            setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
            fd = s
            setTimeouts()
            return
        }
        throw failure
    }

    deinit { close() }

    public var isTLS: Bool { ssl != nil }

    /// The negotiated protocol and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384"), nil without TLS.
    public var tlsDescription: String? {
        guard let ssl else { return nil }
        return String(cString: SSL_get_version(ssl)) + " "
            + String(cString: SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)))
    }

    /// The TLS handshake (TLS 1.2 at least). `verify`: check the chain against `rootCert` (a PEM
    /// bundle) or the system's roots and, with `hostName`, that the certificate names it (an address
    /// literal is checked as an address). `hostName` is also sent as SNI.
    public func startTLS(hostName: String?, verify: Bool, rootCert: String? = nil) throws {
        // Bytes that came before the handshake were sent in the clear by whoever sits in between,
        // to be read as if they came over TLS (CVE-2011-0411 for STARTTLS, CVE-2021-23222 for
        // PostgreSQL): refused, not kept.
        guard start == buffer.count else { throw Failure("the peer sent data before the TLS handshake") }
        guard let c = SSL_CTX_new(TLS_client_method()) else { throw Failure("TLS is not available") }
        ctx = c
        _ = kiln_ctx_set_min_proto(c, TLS1_2_VERSION)
        if verify {
            if let rootCert {
                guard SSL_CTX_load_verify_locations(c, rootCert, nil) == 1 else {
                    throw Failure("cannot read the CA certificates in \(rootCert)")
                }
            } else {
                SSL_CTX_set_default_verify_paths(c)
            }
            SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nil)
        } else {
            SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nil)
        }
        guard let s = SSL_new(c) else { throw Failure("TLS is not available") }
        ssl = s
        SSL_set_fd(s, fd)
        if let hostName {
            if hostName.contains(":") || hostName.allSatisfy({ $0.isNumber || $0 == "." }) {
                if verify { _ = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), hostName) }
            } else {
                _ = hostName.withCString { kiln_ssl_set_sni(s, $0) }
                if verify { _ = SSL_set1_host(s, hostName) }
            }
        }
        setTimeouts()
        guard SSL_connect(s) == 1 else {
            let result = SSL_get_verify_result(s)
            ERR_clear_error()
            if verify && result != X509_V_OK {
                let why = String(cString: X509_verify_cert_error_string(result))
                throw Failure("the certificate was refused: \(why)", certificate: why)
            }
            throw Failure("the TLS handshake failed", timedOut: deadline.map { $0.timeIntervalSinceNow <= 0 } ?? false)
        }
    }

    /// Sets the kernel's wait for one blocking read or write: until the deadline, else the timeouts.
    private func setTimeouts() {
        func set(_ option: Int32, _ seconds: Double?) {
            let s = max(0.001, seconds ?? 0)
            var tv = seconds == nil ? timeval() : timeval(tv_sec: Int(s), tv_usec: Int((s - Double(Int(s))) * 1e6))
            setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        if let deadline {
            let left = deadline.timeIntervalSinceNow
            set(SO_RCVTIMEO, left)
            set(SO_SNDTIMEO, left)
        } else {
            set(SO_RCVTIMEO, readTimeout)
            set(SO_SNDTIMEO, writeTimeout)
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            if let deadline, deadline.timeIntervalSinceNow <= 0 {
                throw Failure("the peer did not take the data in time", timedOut: true)
            }
            if deadline != nil { setTimeouts() }
            let n: Int = bytes.withUnsafeBytes { b in
                if let ssl { return Int(SSL_write(ssl, b.baseAddress! + off, Int32(bytes.count - off))) }
                return Glibc.send(fd, b.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL))
            }
            if n < 0 && ssl == nil && errno == EINTR { continue }
            guard n > 0 else {
                let late = errno == EAGAIN || errno == EWOULDBLOCK
                throw Failure(
                    late ? "the peer did not take the data in time" : "the connection was lost", timedOut: late)
            }
            off += n
        }
    }

    /// Whether bytes are waiting (or the peer closed): an idle pooled connection that has something
    /// to read was told by its server that it is going away.
    public var hasPendingInput: Bool {
        if start < buffer.count { return true }
        if let ssl, SSL_pending(ssl) > 0 { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) != 0
    }

    /// Waits up to `timeout` seconds (nil: for ever) until input is there. False on timeout.
    public func waitReadable(timeout: Double?) throws -> Bool {
        if start < buffer.count { return true }
        if let ssl, SSL_pending(ssl) > 0 { return true }
        let until = timeout.map { Date().addingTimeInterval($0) }
        while true {
            let ms = until.map { max(0, Int32($0.timeIntervalSinceNow * 1000)) } ?? -1
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, ms)
            if r > 0 { return true }
            if r == 0 { return false }
            if errno != EINTR { throw Failure("the connection was lost") }
        }
    }

    /// What arrives next, up to 64 KiB (what is buffered first); empty at the end of the stream; nil
    /// when the deadline (or the read timeout) passed first.
    public func receive() throws -> [UInt8]? {
        if start < buffer.count {
            defer {
                buffer.removeAll(keepingCapacity: true)
                start = 0
            }
            return Array(buffer[start...])
        }
        return try receiveFromSocket()
    }

    private func receiveFromSocket() throws -> [UInt8]? {
        while true {
            if let deadline {
                guard deadline.timeIntervalSinceNow > 0 else { return nil }
                setTimeouts()
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n: Int = chunk.withUnsafeMutableBytes { b in
                if let ssl { return Int(SSL_read(ssl, b.baseAddress, 65536)) }
                return Glibc.recv(fd, b.baseAddress, 65536, 0)
            }
            if n > 0 { return Array(chunk[0..<n]) }
            if n == 0 { return [] }
            if errno == EINTR && ssl == nil { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                if deadline != nil { continue }  // the check above decides
                return nil
            }
            // A TLS close without close_notify reads as the end.
            if ssl != nil { return [] }
            throw Failure("the connection was reset")
        }
    }

    /// Exactly `count` bytes.
    public func read(_ count: Int) throws -> ArraySlice<UInt8> {
        while buffer.count - start < count { try fill() }
        defer { start += count }
        return buffer[start..<start + count]
    }

    public func readByte() throws -> UInt8 { try read(1).first! }

    /// One line without its CRLF (or LF), at most `limit` bytes.
    public func readLine(limit: Int = 64 * 1024) throws -> String {
        while true {
            if let nl = buffer[start...].firstIndex(of: 0x0A) {
                var end = nl
                if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                let line = String(decoding: buffer[start..<end], as: UTF8.self)
                start = nl + 1
                return line
            }
            guard buffer.count - start <= limit else { throw Failure("a line longer than \(limit) bytes") }
            try fill()
        }
    }

    private func fill() throws {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 65536 {
            buffer.removeFirst(start)
            start = 0
        }
        guard let chunk = try receiveFromSocket() else {
            throw Failure("the peer did not answer in time", timedOut: true)
        }
        guard !chunk.isEmpty else { throw Failure("the connection was lost") }
        buffer += chunk
    }

    public func close() {
        if let ssl {
            SSL_shutdown(ssl)
            SSL_free(ssl)
            self.ssl = nil
        }
        if let ctx {
            SSL_CTX_free(ctx)
            self.ctx = nil
        }
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }
}
