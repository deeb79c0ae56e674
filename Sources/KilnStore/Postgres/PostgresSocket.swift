import COpenSSL
import CShims
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking TCP connection to the database server, upgraded to TLS in place when the server
/// agrees (`SSLRequest`). Reads wait with poll() so a caller can give up on a slow answer (and
/// cancel the query) instead of blocking forever. One thread uses it at a time.
final class PostgresSocket {
    private(set) var fd: Int32
    private var ctx: OpaquePointer?
    private var ssl: OpaquePointer?
    private var buffer: [UInt8] = []
    private var start = 0

    /// Connects to the first address of `host` that accepts within `timeout`.
    init(host: String, port: Int, timeout: Double) throws {
        // SSL_write to a server that went away would raise SIGPIPE and end the process.
        kiln_ignore_sigpipe()
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            throw PostgresError.connection("cannot resolve the database host \(host)")
        }
        defer { freeaddrinfo(res) }
        var lastError = "the database server at \(host):\(port) refused the connection"
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
                if poll(&p, 1, Int32(timeout * 1000)) == 1 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len)
                    r = err == 0 ? 0 : -1
                } else {
                    lastError = "the database server at \(host):\(port) did not answer within \(Int(timeout)) s"
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
            // A write to a server that stopped reading fails instead of hanging the pool.
            var tv = timeval(tv_sec: 30, tv_usec: 0)
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            fd = s
            return
        }
        throw PostgresError.connection(lastError)
    }

    deinit { close() }

    var isTLS: Bool { ssl != nil }

    /// The negotiated protocol and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384"), nil without TLS.
    var tlsDescription: String? {
        guard let ssl else { return nil }
        return String(cString: SSL_get_version(ssl)) + " "
            + String(cString: SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)))
    }

    /// The TLS handshake after the server answered 'S' to SSLRequest. `verify`: check the chain
    /// (against `rootCert` or the system's roots) and, with `hostName`, the name too.
    func startTLS(hostName: String?, verify: Bool, rootCert: String?) throws {
        guard let c = SSL_CTX_new(TLS_client_method()) else { throw PostgresError.connection("TLS is not available") }
        ctx = c
        _ = kiln_ctx_set_min_proto(c, TLS1_2_VERSION)
        if verify {
            if let rootCert {
                guard SSL_CTX_load_verify_locations(c, rootCert, nil) == 1 else {
                    throw PostgresError.connection("cannot read the CA certificates in sslrootcert \(rootCert)")
                }
            } else {
                SSL_CTX_set_default_verify_paths(c)
            }
            SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nil)
        } else {
            SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nil)
        }
        guard let s = SSL_new(c) else { throw PostgresError.connection("TLS is not available") }
        ssl = s
        SSL_set_fd(s, fd)
        if let hostName {
            let param = SSL_get0_param(s)
            if hostName.contains(":") || hostName.allSatisfy({ $0.isNumber || $0 == "." }) {
                _ = X509_VERIFY_PARAM_set1_ip_asc(param, hostName)
            } else {
                _ = hostName.withCString { kiln_ssl_set_sni(s, $0) }
                _ = SSL_set1_host(s, hostName)
            }
        }
        guard SSL_connect(s) == 1 else {
            let result = SSL_get_verify_result(s)
            ERR_clear_error()
            if result != X509_V_OK {
                let why = String(cString: X509_verify_cert_error_string(result))
                throw PostgresError.connection("the database server's certificate was refused: \(why)")
            }
            throw PostgresError.connection("the TLS handshake with the database server failed")
        }
    }

    func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n: Int = bytes.withUnsafeBytes { b in
                if let ssl { return Int(SSL_write(ssl, b.baseAddress! + off, Int32(bytes.count - off))) }
                return Glibc.send(fd, b.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL))
            }
            if n < 0 && ssl == nil && errno == EINTR { continue }
            guard n > 0 else { throw PostgresError.connection("the connection to the database was lost") }
            off += n
        }
    }

    /// Whether bytes are waiting (or the peer closed): an idle pooled connection that has something
    /// to read was told by the server that it is going away.
    var hasPendingInput: Bool {
        if start < buffer.count { return true }
        if let ssl, SSL_pending(ssl) > 0 { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) != 0
    }

    /// Waits up to `timeout` seconds (nil: for ever) until input is there. False on timeout.
    func waitReadable(timeout: Double?) throws -> Bool {
        if start < buffer.count { return true }
        if let ssl, SSL_pending(ssl) > 0 { return true }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while true {
            let ms = deadline.map { max(0, Int32($0.timeIntervalSinceNow * 1000)) } ?? -1
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, ms)
            if r > 0 { return true }
            if r == 0 { return false }
            if errno != EINTR { throw PostgresError.connection("the connection to the database was lost") }
        }
    }

    /// Exactly `count` bytes (blocking).
    func read(_ count: Int) throws -> ArraySlice<UInt8> {
        while buffer.count - start < count { try fill() }
        defer { start += count }
        return buffer[start..<start + count]
    }

    func readByte() throws -> UInt8 { try read(1).first! }

    private func fill() throws {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 65536 {
            buffer.removeFirst(start)
            start = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n: Int = chunk.withUnsafeMutableBytes { b in
                if let ssl { return Int(SSL_read(ssl, b.baseAddress, 65536)) }
                return Glibc.recv(fd, b.baseAddress, 65536, 0)
            }
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
                return
            }
            if n < 0 && ssl == nil && errno == EINTR { continue }
            throw PostgresError.connection("the connection to the database was lost")
        }
    }

    func close() {
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
