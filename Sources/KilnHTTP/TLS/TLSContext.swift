import COpenSSL
import Foundation

/// A server TLS context: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers, ALPN `http/1.1`.
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    public init(certificateChainPath: String, privateKeyPath: String) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw HTTPServerError.tls("cannot create context") }
        self.ctx = ctx
        _ = kiln_ctx_set_min_proto(ctx, TLS1_2_VERSION)
        _ = kiln_ctx_set_max_proto(ctx, TLS1_3_VERSION)
        _ = kiln_ctx_set_options(ctx, kiln_ssl_server_options())
        _ = kiln_ctx_set_mode(ctx, kiln_ssl_partial_write_modes())
        guard SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") == 1 else {
            throw HTTPServerError.tls("cipher list rejected")
        }
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateChainPath) == 1 else {
            throw HTTPServerError.tls(
                "cannot load certificate chain from \(certificateChainPath): \(TLSContext.lastError())")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, privateKeyPath, SSL_FILETYPE_PEM) == 1 else {
            throw HTTPServerError.tls("cannot load private key from \(privateKeyPath): \(TLSContext.lastError())")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw HTTPServerError.tls("private key does not match the certificate")
        }
        kiln_ctx_use_alpn_http11(ctx)
    }

    deinit { SSL_CTX_free(ctx) }

    static func lastError() -> String {
        let e = ERR_get_error()
        ERR_clear_error()
        guard e != 0 else { return "unknown error" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(e, &buf, buf.count)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
