#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>

/* Macros Swift cannot import. */
static inline long kiln_ssl_set_mode(SSL *ssl, long mode) { return SSL_set_mode(ssl, mode); }
static inline long kiln_ctx_set_options(SSL_CTX *ctx, long opts) { return SSL_CTX_set_options(ctx, opts); }
static inline int kiln_ctx_set_min_proto(SSL_CTX *ctx, int v) { return SSL_CTX_set_min_proto_version(ctx, v); }
static inline int kiln_ctx_set_max_proto(SSL_CTX *ctx, int v) { return SSL_CTX_set_max_proto_version(ctx, v); }
static inline long kiln_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }

static inline long kiln_ssl_server_options(void) {
    return SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET * 0;
}
static inline long kiln_ssl_partial_write_modes(void) {
    return SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS;
}
static int kiln_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    static const unsigned char protos[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };
    if (SSL_select_next_proto((unsigned char **)out, outlen, protos, sizeof protos, in, inlen) == OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}
static inline void kiln_ctx_use_alpn_http11(SSL_CTX *ctx) { SSL_CTX_set_alpn_select_cb(ctx, kiln_alpn_select, NULL); }

#include <openssl/core_names.h>
#include <openssl/params.h>

/* HMAC through EVP_MAC (no deprecated API) with digest "SHA256" or "SHA1". Returns 1 on success;
 * out gets outlen bytes (32 or 20). */
static inline int kiln_hmac(const char *digest_name, const unsigned char *key, size_t keylen,
                            const unsigned char *data, size_t datalen, unsigned char *out, size_t outlen) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac) return 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    int ok = 0;
    if (ctx) {
        OSSL_PARAM params[2] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest_name, 0),
                                 OSSL_PARAM_construct_end() };
        size_t written = 0;
        static const unsigned char empty = 0;
        ok = EVP_MAC_init(ctx, keylen ? key : &empty, keylen, params) == 1
            && EVP_MAC_update(ctx, data, datalen) == 1
            && EVP_MAC_final(ctx, out, &written, outlen) == 1 && written == outlen;
        EVP_MAC_CTX_free(ctx);
    }
    EVP_MAC_free(mac);
    return ok;
}

/* AES-256-GCM. Encrypt: out gets ciphertext (len bytes) and tag (16). Decrypt returns 1 only when the tag verifies. */
static inline int kiln_aes256gcm(int encrypt, const unsigned char *key, const unsigned char *iv, size_t ivlen,
                                 const unsigned char *aad, size_t aadlen, const unsigned char *in, size_t len,
                                 unsigned char *out, unsigned char *tag) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return 0;
    int ok = 0, outl = 0;
    do {
        if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) != 1) break;
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)ivlen, NULL) != 1) break;
        if (EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, encrypt) != 1) break;
        if (aadlen && EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1) break;
        if (len && EVP_CipherUpdate(ctx, out, &outl, in, (int)len) != 1) break;
        if (!encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1) break;
        if (EVP_CipherFinal_ex(ctx, out + outl, &outl) != 1) break;
        if (encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1) break;
        ok = 1;
    } while (0);
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

/* Ed25519: public key from a 32-byte seed; sign; verify. */
static inline int kiln_ed25519_public(const unsigned char *seed, unsigned char *pub) {
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    if (!k) return 0;
    size_t len = 32;
    int ok = EVP_PKEY_get_raw_public_key(k, pub, &len) == 1 && len == 32;
    EVP_PKEY_free(k);
    return ok;
}

static inline int kiln_ed25519_sign(const unsigned char *seed, const unsigned char *msg, size_t msglen, unsigned char *sig) {
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    if (!k) return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = 64;
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) == 1
        && EVP_DigestSign(ctx, sig, &siglen, msg, msglen) == 1 && siglen == 64;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return ok;
}

static inline int kiln_ed25519_verify(const unsigned char *pub, const unsigned char *msg, size_t msglen, const unsigned char *sig) {
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    if (!k) return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) == 1
        && EVP_DigestVerify(ctx, sig, 64, msg, msglen) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return ok;
}

static inline long kiln_ssl_set_sni(SSL *ssl, const char *name) { return SSL_set_tlsext_host_name(ssl, name); }
