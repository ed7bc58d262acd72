/* tls.c - OpenSSL 3 contexts from a settings TLS block, and operator identity
 * (SPEC 2 and 3.2).
 *
 * Both sides allow TLS 1.2 and 1.3 only.  TLS 1.2 is limited to ECDHE key
 * exchange with AEAD ciphers (forward secrecy); TLS 1.3 suites are all
 * forward-secret and stay at the library defaults.
 *
 * A server context may carry an identity hook.  It runs inside the verify
 * callback on the verified leaf, so a refused identity aborts the handshake
 * with an alert instead of surfacing later as an application error. */
#include <arpa/inet.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "directory.h"
#include "settings.h"
#include "tls.h"

#define TLS12_CIPHERS	"ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLS_SESSION_ID	"hyper-proxy"

struct tls_hook {
	tls_identity_fn	 th_fn;
	void		*th_arg;
};

static int		tls_hook_idx = -1;
static pthread_once_t	tls_hook_once = PTHREAD_ONCE_INIT;

static void
tls_hook_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	free(ptr);
}

static void
tls_hook_init(void)
{
	tls_hook_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_hook_free);
}

/* ---- settings ------------------------------------------------------------ */

int
tls_conf_read(struct cfg *c, const char *key, int required, struct tls_conf *out)
{
	struct cfg sub;

	memset(out, 0, sizeof(*out));
	out->verify_client = 1;
	if (cfg_section(c, key, required, &sub) == -1)
		return -1;
	if (sub.obj == NULL)
		return 0;
	cfg_strv(&sub, "ca_certificate_files", 0, &out->ca_files);
	cfg_string(&sub, "certificate_file", NULL, 0, &out->cert_file);
	cfg_string(&sub, "key_file", NULL, 0, &out->key_file);
	cfg_string(&sub, "server_name", NULL, 0, &out->server_name);
	cfg_bool(&sub, "verify_client", 1, &out->verify_client);
	if (out->cert_file != NULL && out->key_file == NULL)
		cfg_error(&sub, "key_file", "required with certificate_file");
	if (out->key_file != NULL && out->cert_file == NULL)
		cfg_error(&sub, "certificate_file", "required with key_file");
	if (cfg_done(&sub) == -1) {
		tls_conf_free(out);
		return -1;
	}
	return 0;
}

void
tls_conf_free(struct tls_conf *t)
{
	if (t == NULL)
		return;
	cfg_strv_free(t->ca_files);
	free(t->cert_file);
	free(t->key_file);
	free(t->server_name);
	memset(t, 0, sizeof(*t));
	t->verify_client = 1;
}

/* ---- contexts ------------------------------------------------------------ */

const char *
tls_errstr(void)
{
	static __thread char buf[256];
	unsigned long e, last = 0;

	/* The first error is usually the root cause; drain the rest. */
	while ((e = ERR_get_error()) != 0)
		if (last == 0)
			last = e;
	if (last == 0)
		return "unknown TLS error";
	ERR_error_string_n(last, buf, sizeof(buf));
	return buf;
}

static SSL_CTX *
tls_ctx_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *what, const char *file)
{
	snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
	    tls_errstr());
	SSL_CTX_free(ctx);
	return NULL;
}

/* A file OpenSSL cannot open gives a library error code; say why instead. */
static int
tls_file_unreadable(SSL_CTX *ctx, char *err, size_t errlen, const char *what,
    const char *file)
{
	FILE *f;

	if ((f = fopen(file, "r")) != NULL) {
		fclose(f);
		return 0;
	}
	snprintf(err, errlen, "%s %s: %s", what, file, strerror(errno));
	SSL_CTX_free(ctx);
	return 1;
}

static SSL_CTX *
tls_ctx_common(const SSL_METHOD *method, const struct tls_conf *t, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(method)) == NULL)
		return tls_ctx_fail(NULL, err, errlen, "SSL_CTX_new", NULL);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS))
		return tls_ctx_fail(ctx, err, errlen, "TLS parameters", NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	for (size_t i = 0; t->ca_files != NULL && t->ca_files[i] != NULL; i++) {
		if (tls_file_unreadable(ctx, err, errlen, "ca_certificate_files", t->ca_files[i]))
			return NULL;
		if (!SSL_CTX_load_verify_locations(ctx, t->ca_files[i], NULL))
			return tls_ctx_fail(ctx, err, errlen, "ca_certificate_files",
			    t->ca_files[i]);
	}
	if (t->cert_file != NULL) {
		if (tls_file_unreadable(ctx, err, errlen, "certificate_file", t->cert_file) ||
		    (t->key_file != NULL &&
		    tls_file_unreadable(ctx, err, errlen, "key_file", t->key_file)))
			return NULL;
		if (!SSL_CTX_use_certificate_chain_file(ctx, t->cert_file))
			return tls_ctx_fail(ctx, err, errlen, "certificate_file", t->cert_file);
		if (t->key_file == NULL) {
			snprintf(err, errlen, "certificate_file %s: no key_file", t->cert_file);
			SSL_CTX_free(ctx);
			return NULL;
		}
		if (!SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM))
			return tls_ctx_fail(ctx, err, errlen, "key_file", t->key_file);
		if (!SSL_CTX_check_private_key(ctx))
			return tls_ctx_fail(ctx, err, errlen, "key_file does not match",
			    t->cert_file);
	}
	return ctx;
}

/* Chain verification is OpenSSL's; we add the identity hook on the leaf. */
static int
tls_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl;
	struct tls_hook *h;

	if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl == NULL)
		return ok;
	h = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_hook_idx);
	if (h == NULL || h->th_fn == NULL)
		return ok;
	if (!h->th_fn(h->th_arg, X509_STORE_CTX_get_current_cert(xs))) {
		X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

SSL_CTX *
tls_server_ctx(const struct tls_conf *t, tls_identity_fn id, void *arg, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names;
	struct tls_hook *h;
	SSL_CTX *ctx;

	pthread_once(&tls_hook_once, tls_hook_init);
	if (t->cert_file == NULL) {
		snprintf(err, errlen, "tls: certificate_file is required for a server");
		return NULL;
	}
	/* Where the caller checks identities, an unverified client would be
	 * taken for whoever it claims to be (the Go system's W20). */
	if (id != NULL && !t->verify_client) {
		snprintf(err, errlen, "tls: verify_client must be true here: clients are identified "
		    "by their certificate");
		return NULL;
	}
	if (t->verify_client && (t->ca_files == NULL || t->ca_files[0] == NULL)) {
		snprintf(err, errlen, "tls: verify_client needs ca_certificate_files");
		return NULL;
	}
	if ((ctx = tls_ctx_common(TLS_server_method(), t, err, errlen)) == NULL)
		return NULL;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Required for session resumption once client certificates are used. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SESSION_ID,
	    sizeof(TLS_SESSION_ID) - 1);
	if (!t->verify_client)
		return ctx;

	if ((names = sk_X509_NAME_new_null()) == NULL)
		return tls_ctx_fail(ctx, err, errlen, "client CA list", NULL);
	for (size_t i = 0; t->ca_files[i] != NULL; i++)
		if (!SSL_add_file_cert_subjects_to_stack(names, t->ca_files[i])) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			return tls_ctx_fail(ctx, err, errlen, "ca_certificate_files",
			    t->ca_files[i]);
		}
	SSL_CTX_set_client_CA_list(ctx, names);
	if (id != NULL) {
		if ((h = calloc(1, sizeof(*h))) == NULL) {
			snprintf(err, errlen, "tls: out of memory");
			SSL_CTX_free(ctx);
			return NULL;
		}
		h->th_fn = id;
		h->th_arg = arg;
		if (!SSL_CTX_set_ex_data(ctx, tls_hook_idx, h)) {
			free(h);
			return tls_ctx_fail(ctx, err, errlen, "identity hook", NULL);
		}
		/* A resumed session skips certificate verification, hence the
		 * hook: no resumption, so every connection is checked against
		 * the current directory. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, tls_verify_cb);
	return ctx;
}

SSL_CTX *
tls_client_ctx(const struct tls_conf *t, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if ((ctx = tls_ctx_common(TLS_client_method(), t, err, errlen)) == NULL)
		return NULL;
	/* Without a CA list, the system's trust store. */
	if ((t->ca_files == NULL || t->ca_files[0] == NULL) &&
	    !SSL_CTX_set_default_verify_paths(ctx))
		return tls_ctx_fail(ctx, err, errlen, "default CA store", NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

int
tls_client_prepare(SSL *ssl, const char *server_name)
{
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	unsigned char ip[16];

	if (server_name == NULL || *server_name == '\0')
		return -1;
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	/* An address is checked against IP SANs and never sent as SNI (RFC 6066). */
	if (inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(vp, server_name) ? 0 : -1;
	if (!SSL_set_tlsext_host_name(ssl, server_name) || !SSL_set1_host(ssl, server_name))
		return -1;
	return 0;
}

/* ---- identity ------------------------------------------------------------ */

/* One field of a digest: its length first, so that fields cannot run into
 * each other ("ab" + "c" differs from "a" + "bc"). */
static int
tls_digest_field(EVP_MD_CTX *md, const void *p, size_t n)
{
	uint64_t len = n;

	return EVP_DigestUpdate(md, &len, sizeof(len)) == 1 &&
	    (n == 0 || EVP_DigestUpdate(md, p, n) == 1) ? 0 : -1;
}

static int
tls_digest_file(EVP_MD_CTX *md, const char *path)
{
	unsigned char buf[8192];
	FILE *f;
	size_t n;
	int rc = 0;

	if (path == NULL)
		return tls_digest_field(md, "", 0);
	if (tls_digest_field(md, path, strlen(path)) == -1 || (f = fopen(path, "re")) == NULL)
		return -1;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (EVP_DigestUpdate(md, buf, n) != 1)
			rc = -1;
	if (ferror(f))
		rc = -1;
	fclose(f);
	return rc;
}

int
tls_conf_digest(const struct tls_conf *t, unsigned char out[TLS_DIGEST_LEN])
{
	EVP_MD_CTX *md;
	unsigned int len = 0;
	int rc = -1, flag = t->verify_client;

	if ((md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		goto done;
	for (char **p = t->ca_files; p != NULL && *p != NULL; p++)
		if (tls_digest_file(md, *p) == -1)
			goto done;
	if (tls_digest_field(md, "|", 1) == -1 || tls_digest_file(md, t->cert_file) == -1 ||
	    tls_digest_file(md, t->key_file) == -1 ||
	    tls_digest_field(md, t->server_name ? t->server_name : "",
	    t->server_name ? strlen(t->server_name) : 0) == -1 ||
	    tls_digest_field(md, &flag, sizeof(flag)) == -1 ||
	    EVP_DigestFinal_ex(md, out, &len) != 1 || len != TLS_DIGEST_LEN)
		goto done;
	rc = 0;
done:
	EVP_MD_CTX_free(md);
	return rc;
}

void
tls_fingerprint(X509 *leaf, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	out[0] = '\0';
	if (leaf == NULL || !X509_digest(leaf, EVP_sha256(), md, &n) || n != 32)
		return;
	for (unsigned int i = 0; i < n; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[64] = '\0';
}

/* An ASN1 string equal to name, ignoring case; embedded NULs never match. */
static int
asn1_name_eq(const ASN1_STRING *s, const char *name)
{
	const unsigned char *p = ASN1_STRING_get0_data(s);
	int len = ASN1_STRING_length(s);

	return p != NULL && len >= 0 && (size_t)len == strlen(name) &&
	    memchr(p, '\0', (size_t)len) == NULL &&
	    strncasecmp((const char *)p, name, (size_t)len) == 0;
}

int
tls_cert_has_name(X509 *leaf, const char *name)
{
	X509_NAME *subj;
	X509_NAME_ENTRY *ne;
	GENERAL_NAMES *sans;
	GENERAL_NAME *gn;
	unsigned char *utf8;
	int i = -1, n, found = 0;

	if (leaf == NULL || name == NULL || *name == '\0')
		return 0;
	subj = X509_get_subject_name(leaf);
	while (!found && (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0) {
		ne = X509_NAME_get_entry(subj, i);
		/* CN may be any string type: compare its UTF-8 form. */
		if ((n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(ne))) < 0)
			continue;
		found = (size_t)n == strlen(name) && memchr(utf8, '\0', (size_t)n) == NULL &&
		    strncasecmp((char *)utf8, name, (size_t)n) == 0;
		OPENSSL_free(utf8);
	}
	if (found)
		return 1;
	sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	for (i = 0; sans != NULL && !found && i < sk_GENERAL_NAME_num(sans); i++) {
		gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type == GEN_DNS && asn1_name_eq(gn->d.dNSName, name))
			found = 1;
	}
	GENERAL_NAMES_free(sans);
	return found;
}

struct tls_ident {
	X509	*ti_leaf;
	char	*ti_name;
	size_t	 ti_len;
	int	 ti_found;
};

static void
tls_identity_cb(void *arg, const char *name)
{
	struct tls_ident *ti = arg;

	if (ti->ti_found || !tls_cert_has_name(ti->ti_leaf, name))
		return;
	if ((size_t)snprintf(ti->ti_name, ti->ti_len, "%s", name) < ti->ti_len)
		ti->ti_found = 1;
}

int
tls_identity(const struct directory *d, X509 *leaf, char *name, size_t len)
{
	struct tls_ident ti = { leaf, name, len, 0 };
	char fp[65];

	if (d == NULL || leaf == NULL || name == NULL || len == 0)
		return -1;
	tls_fingerprint(leaf, fp);
	if (fp[0] == '\0')
		return -1;
	/* Operators listing this fingerprint, in name order; the first one the
	 * certificate also names wins. */
	directory_foreach_fingerprint(d, fp, tls_identity_cb, &ti);
	return ti.ti_found ? 0 : -1;
}

void
tls_ctx_fingerprint(SSL_CTX *ctx, char out[65])
{
	X509 *leaf = ctx != NULL ? SSL_CTX_get0_certificate(ctx) : NULL;

	out[0] = '\0';
	if (leaf != NULL)
		tls_fingerprint(leaf, out);
}
