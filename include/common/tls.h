/* tls.h - OpenSSL 3 contexts from a settings TLS block, and operator identity
 * (SPEC 2 and 3.2). */
#ifndef HP_TLS_H
#define HP_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

struct cfg;
struct directory;

struct tls_conf {
	char  **ca_files;          /* ca_certificate_files (NULL-terminated) */
	char   *cert_file;         /* certificate_file: leaf then intermediates */
	char   *key_file;
	char   *server_name;       /* client side: the name to verify */
	int     verify_client;     /* server side, default 1 */
};

/* Read a TLS block at c.key.  Returns 0, or -1 with the error in c's root. */
int  tls_conf_read(struct cfg *c, const char *key, int required, struct tls_conf *out);
void tls_conf_free(struct tls_conf *t);

/* Identity hook: called during the handshake with the verified leaf.  Return
 * 1 to accept, 0 to refuse the handshake. */
typedef int (*tls_identity_fn)(void *arg, X509 *leaf);

/* Server context: TLS >= 1.2, forward-secret suites only, chain from
 * cert_file; with verify_client, a verified client certificate is required
 * and, when id is set, id(arg, leaf) must also accept it. */
SSL_CTX *tls_server_ctx(const struct tls_conf *t, tls_identity_fn id, void *arg,
	     char *err, size_t errlen);
/* Client context: verifies the server chain against ca_files and presents
 * cert_file/key_file when set.  The caller sets the name to verify per
 * connection with tls_client_prepare(). */
SSL_CTX *tls_client_ctx(const struct tls_conf *t, char *err, size_t errlen);
/* Set SNI and hostname verification on a fresh client SSL. */
int  tls_client_prepare(SSL *ssl, const char *server_name);

/* SHA-256 over a TLS block: its settings and the bytes of every file it
 * names (CA files, certificate, key), so that a reload can tell that a
 * context built from it would be the same as before.  0, or -1 when a file
 * cannot be read (then build the context: its error says why). */
#define TLS_DIGEST_LEN	32
int  tls_conf_digest(const struct tls_conf *t, unsigned char out[TLS_DIGEST_LEN]);

/* Lower-case hex SHA-256 of the leaf's DER (65 bytes buffer). */
void tls_fingerprint(X509 *leaf, char out[65]);
/* The same for the leaf a context presents ("" when it has none). */
void tls_ctx_fingerprint(SSL_CTX *ctx, char out[65]);
/* The operator name the leaf is bound to in the directory (SPEC 3.2): a name
 * that is the subject CN or a DNS SAN of leaf AND lists leaf's fingerprint
 * under its certificates.  Returns 0 and fills name, or -1. */
int  tls_identity(const struct directory *d, X509 *leaf, char *name, size_t len);
/* Does leaf carry name as CN or DNS SAN? */
int  tls_cert_has_name(X509 *leaf, const char *name);

/* Last OpenSSL error as text (for messages). */
const char *tls_errstr(void);

#endif
