/* Tests for tls.c: real handshakes over socketpairs with the development PKI
 * that scripts/make-certs.sh generates once per run of this binary. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "directory.h"
#include "settings.h"
#include "tls.h"

#define ENV_CERTS	"HP_TEST_TLS_DIR"

static char pki_dir[PATH_MAX];

/* Runs once, in the runner process; the tests inherit the environment. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	char exe[PATH_MAX], cmd[3 * PATH_MAX];
	ssize_t n;

	(void)set;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		abort();
	exe[n] = '\0';
	/* build/<variant>/tests/test_tls -> repository root */
	char *root = dirname(dirname(dirname(dirname(exe))));
	snprintf(pki_dir, sizeof(pki_dir), "/tmp/hp-test-tls.XXXXXX");
	if (mkdtemp(pki_dir) == NULL)
		abort();
	snprintf(cmd, sizeof(cmd), "'%s/scripts/make-certs.sh' '%s' >/dev/null", root, pki_dir);
	if (system(cmd) != 0)
		abort();
	setenv(ENV_CERTS, pki_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	char cmd[PATH_MAX + 16];

	(void)stats;
	if (pki_dir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", pki_dir);
}

/* ---- helpers -------------------------------------------------------------- */

static char *
pki(const char *file)
{
	static char buf[4][PATH_MAX];
	static int i;
	const char *d = getenv(ENV_CERTS);

	cr_assert_not_null(d, "PKI not generated");
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", d, file);
	return buf[i];
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	cr_assert_not_null(fp, "%s", path);
	fputs(text, fp);
	cr_assert_eq(fclose(fp), 0);
}

static X509 *
read_leaf(const char *name)
{
	char f[PATH_MAX];
	FILE *fp;
	X509 *x;

	snprintf(f, sizeof(f), "%s.crt", name);
	fp = fopen(pki(f), "r");
	cr_assert_not_null(fp);
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	cr_assert_not_null(x);
	return x;
}

static void
fingerprint_of(const char *name, char fp[65])
{
	X509 *x = read_leaf(name);

	tls_fingerprint(x, fp);
	X509_free(x);
}

/* The directory the generated fingerprint records describe. */
static struct directory *
load_generated_directory(void)
{
	char err[512], *paths[] = { NULL, NULL };
	struct directory *d;

	paths[0] = pki("directory");
	d = directory_load(paths, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	return d;
}

/* A directory of one file with a certificates record per (name, fp). */
static struct directory *
load_directory_with(const char *n1, const char *fp1, const char *n2, const char *fp2)
{
	char text[2048], err[512], *paths[] = { NULL, NULL };
	struct directory *d;

	snprintf(text, sizeof(text),
	    "{\"records\": ["
	    "{\"name\": \"%s\", \"section\": \"certificates\", \"created_at\": \"x\","
	    " \"data\": [{\"fingerprint\": \"%s\", \"key_usage\": \"encryption\"}]},"
	    "{\"name\": \"%s\", \"section\": \"certificates\", \"created_at\": \"x\","
	    " \"data\": [{\"fingerprint\": \"%s\", \"key_usage\": \"encryption\"}]}]}",
	    n1, fp1, n2, fp2);
	write_file(pki("custom.json"), text);
	paths[0] = pki("custom.json");
	d = directory_load(paths, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	return d;
}

static void
conf_for(struct tls_conf *t, const char *name, int with_cert)
{
	static char crt[PATH_MAX], key[PATH_MAX];
	static char *cas[2];

	memset(t, 0, sizeof(*t));
	cas[0] = pki("certs/root.crt");
	t->ca_files = cas;
	if (with_cert) {
		snprintf(crt, sizeof(crt), "%s", pki(name));
		strcat(crt, ".crt");
		snprintf(key, sizeof(key), "%s", pki(name));
		strcat(key, ".key");
		t->cert_file = crt;
		t->key_file = key;
	}
	t->verify_client = 1;
}

/* Identity check as a Hyper does it: bound name, optionally a required one. */
struct want {
	struct directory	*d;
	const char		*name;	/* NULL: any bound operator */
	char			 got[256];
	int			 calls;
};

static int
identity_hook(void *arg, X509 *leaf)
{
	struct want *w = arg;

	w->calls++;
	if (tls_identity(w->d, leaf, w->got, sizeof(w->got)) == -1)
		return 0;
	return w->name == NULL || strcmp(w->got, w->name) == 0;
}

struct server_side {
	SSL_CTX	*ctx;
	int	 fd;
	int	 ok;
};

static void *
server_run(void *arg)
{
	struct server_side *s = arg;
	SSL *ssl = SSL_new(s->ctx);

	SSL_set_fd(ssl, s->fd);
	if (SSL_accept(ssl) == 1 && SSL_write(ssl, "ok", 2) == 2) {
		s->ok = 1;
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	close(s->fd);
	return NULL;
}

/* One handshake plus a two-byte message, server in a thread.  Both sockets
 * time out after 5 s so a failure can never hang the test. */
static SSL_SESSION *resume_with;	/* offered by the next client handshake */
static SSL_SESSION *last_session;	/* session of the last client handshake */
static int last_reused;

static void
handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *server_name, int *server_ok, int *client_ok,
    int *version)
{
	struct timeval tv = { 5, 0 };
	struct server_side s = { sctx, -1, 0 };
	pthread_t th;
	int sv[2];
	char buf[2];
	SSL *ssl;

	/* A peer that hung up after an alert must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	s.fd = sv[0];
	cr_assert_eq(pthread_create(&th, NULL, server_run, &s), 0);
	ssl = SSL_new(cctx);
	SSL_set_fd(ssl, sv[1]);
	cr_assert_eq(tls_client_prepare(ssl, server_name), 0);
	if (resume_with != NULL)
		SSL_set_session(ssl, resume_with);
	*client_ok = SSL_connect(ssl) == 1 && SSL_read(ssl, buf, 2) == 2 &&
	    memcmp(buf, "ok", 2) == 0;
	/* A clean shutdown keeps the session resumable. */
	if (*client_ok)
		SSL_shutdown(ssl);
	SSL_SESSION_free(last_session);
	last_session = SSL_get1_session(ssl);
	last_reused = SSL_session_reused(ssl);
	if (version != NULL)
		*version = SSL_version(ssl);
	SSL_free(ssl);
	close(sv[1]);
	pthread_join(th, NULL);
	*server_ok = s.ok;
}

static SSL_CTX *
server_ctx(const char *name, struct want *w)
{
	struct tls_conf t;
	char err[512];
	SSL_CTX *ctx;

	conf_for(&t, name, 1);
	ctx = tls_server_ctx(&t, w ? identity_hook : NULL, w, err, sizeof(err));
	cr_assert_not_null(ctx, "%s", err);
	return ctx;
}

static SSL_CTX *
client_ctx(const char *name, int with_cert)
{
	struct tls_conf t;
	char err[512];
	SSL_CTX *ctx;

	conf_for(&t, name, with_cert);
	ctx = tls_client_ctx(&t, err, sizeof(err));
	cr_assert_not_null(ctx, "%s", err);
	return ctx;
}

/* ---- identity binding ------------------------------------------------------ */

Test(tls, bound_client_certificate_is_accepted_and_named)
{
	struct want w = { load_generated_directory(), NULL, "", 0 };
	SSL_CTX *s = server_ctx("certs/public-proxy-1.ga", &w);
	SSL_CTX *c = client_ctx("certs/private-proxy-1.ga", 1);
	int sok, cok;

	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(sok && cok);
	cr_assert_str_eq(w.got, "private-proxy-1.ga");
	SSL_CTX_free(s);
	SSL_CTX_free(c);
	directory_unref(w.d);
}

Test(tls, other_operators_certificate_is_refused_where_own_name_is_required)
{
	/* The local jsonrpc_server accepts only its own operator. */
	struct want w = { load_generated_directory(), "public-proxy-1.ga", "", 0 };
	SSL_CTX *s = server_ctx("certs/public-proxy-1.ga", &w);
	SSL_CTX *c = client_ctx("certs/private-proxy-1.ga", 1);
	SSL_CTX *own = client_ctx("certs/public-proxy-1.ga", 1);
	int sok, cok;

	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(!sok && !cok);
	cr_assert_gt(w.calls, 0);
	handshake(s, own, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(sok && cok);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
	SSL_CTX_free(own);
	directory_unref(w.d);
}

Test(tls, certificate_whose_fingerprint_is_not_in_the_directory_is_refused)
{
	char fa[65], fb[65];
	struct want w = { NULL, NULL, "", 0 };
	SSL_CTX *s, *c;
	int sok, cok;

	fingerprint_of("certs/public-proxy-1.ga", fa);
	fingerprint_of("certs/private-proxy-1.ga", fb);
	w.d = load_directory_with("public-proxy-1.ga", fa, "private-proxy-1.ga", fb);
	s = server_ctx("certs/public-proxy-1.ga", &w);
	c = client_ctx("certs/hd-1", 1);	/* valid chain, not listed */
	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(!sok && !cok);
	cr_assert_gt(w.calls, 0, "refused by the identity hook, not the chain");
	SSL_CTX_free(s);
	SSL_CTX_free(c);
	directory_unref(w.d);
}

Test(tls, fingerprint_listed_under_a_name_the_certificate_lacks_is_not_an_identity)
{
	char fh[65], name[256];
	struct want w = { NULL, NULL, "", 0 };
	X509 *leaf = read_leaf("certs/hd-1");
	SSL_CTX *s, *c;
	int sok, cok;

	/* hd-1's certificate listed under public-proxy-1.ga only. */
	fingerprint_of("certs/hd-1", fh);
	w.d = load_directory_with("public-proxy-1.ga", fh, "x", fh);
	cr_assert_eq(tls_identity(w.d, leaf, name, sizeof(name)), -1);
	s = server_ctx("certs/public-proxy-1.ga", &w);
	c = client_ctx("certs/hd-1", 1);
	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(!sok && !cok);
	X509_free(leaf);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
	directory_unref(w.d);
}

Test(tls, identity_hook_runs_on_every_connection_without_resumption)
{
	struct want w = { load_generated_directory(), NULL, "", 0 };
	SSL_CTX *s = server_ctx("certs/public-proxy-1.ga", &w);
	SSL_CTX *plain = server_ctx("certs/public-proxy-1.ga", NULL);
	SSL_CTX *c = client_ctx("certs/private-proxy-1.ga", 1);
	int sok, cok;

	/* Control: without a hook, the session is resumed. */
	handshake(plain, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(sok && cok);
	resume_with = last_session;
	last_session = NULL;
	handshake(plain, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(sok && cok && last_reused, "resumption works without a hook");
	SSL_SESSION_free(resume_with);
	resume_with = NULL;

	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(sok && cok);
	resume_with = last_session;
	last_session = NULL;
	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(sok && cok);
	cr_assert(!last_reused);
	cr_assert_geq(w.calls, 2, "the hook ran for both connections");
	SSL_SESSION_free(resume_with);
	resume_with = NULL;
	SSL_CTX_free(s);
	SSL_CTX_free(plain);
	SSL_CTX_free(c);
	directory_unref(w.d);
}

Test(tls, client_without_certificate_is_refused)
{
	struct want w = { load_generated_directory(), NULL, "", 0 };
	SSL_CTX *s = server_ctx("certs/public-proxy-1.ga", &w);
	SSL_CTX *c = client_ctx(NULL, 0);
	int sok, cok;

	handshake(s, c, "public-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(!sok && !cok);
	cr_assert_eq(w.calls, 0);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
	directory_unref(w.d);
}

Test(tls, server_without_client_verification_accepts_anonymous_clients)
{
	struct tls_conf t;
	char err[512];
	SSL_CTX *s, *c = client_ctx(NULL, 0);
	int sok, cok;

	conf_for(&t, "certs/internal-server", 1);
	t.verify_client = 0;
	s = tls_server_ctx(&t, NULL, NULL, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	handshake(s, c, "test.internal-server.local", &sok, &cok, NULL);
	cr_assert(sok && cok);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
}

static int
accept_any(void *arg, X509 *leaf)
{
	return 1;
}

Test(tls, identity_checked_server_refuses_verify_client_false)
{
	struct tls_conf t;
	char err[512];

	conf_for(&t, "certs/public-proxy-1.ga", 1);
	t.verify_client = 0;
	cr_assert_null(tls_server_ctx(&t, accept_any, NULL, err, sizeof(err)));
	cr_assert(strstr(err, "verify_client") != NULL, "%s", err);
}

/* ---- chain and name verification ------------------------------------------ */

Test(tls, chain_needs_the_intermediate_sent_by_the_server)
{
	char text[8192];
	struct tls_conf t;
	char err[512];
	SSL_CTX *s, *c = client_ctx("certs/private-proxy-1.ga", 1);
	FILE *fp;
	size_t n;
	char *end;
	int sok, cok;

	/* A certificate file with the leaf only. */
	fp = fopen(pki("certs/hd-1.crt"), "r");
	cr_assert_not_null(fp);
	n = fread(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	text[n] = '\0';
	end = strstr(text, "-----END CERTIFICATE-----");
	cr_assert_not_null(end);
	end[strlen("-----END CERTIFICATE-----")] = '\0';
	strcat(text, "\n");
	write_file(pki("leaf-only.crt"), text);

	conf_for(&t, "certs/hd-1", 1);
	t.cert_file = pki("leaf-only.crt");
	t.verify_client = 0;
	s = tls_server_ctx(&t, NULL, NULL, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	handshake(s, c, "hd-1", &sok, &cok, NULL);
	cr_assert(!cok, "leaf without intermediate must not verify");
	SSL_CTX_free(s);

	s = server_ctx("certs/hd-1", NULL);
	handshake(s, c, "hd-1", &sok, &cok, NULL);
	cr_assert(cok && sok, "leaf + intermediate verifies against the root");
	SSL_CTX_free(s);
	SSL_CTX_free(c);
}

Test(tls, client_refuses_a_server_with_another_name)
{
	struct want w = { load_generated_directory(), NULL, "", 0 };
	SSL_CTX *s = server_ctx("certs/public-proxy-1.ga", &w);
	SSL_CTX *c = client_ctx("certs/private-proxy-1.ga", 1);
	int sok, cok;

	handshake(s, c, "private-proxy-1.ga", &sok, &cok, NULL);
	cr_assert(!cok && !sok);
	handshake(s, c, "x.public-proxy-1.ga.local", &sok, &cok, NULL);
	cr_assert(cok && sok, "the wildcard SAN covers one label");
	SSL_CTX_free(s);
	SSL_CTX_free(c);
	directory_unref(w.d);
}

/* ---- protocol versions and suites ------------------------------------------ */

Test(tls, tls12_with_forward_secret_aead_suite_works)
{
	SSL_CTX *s = server_ctx("certs/hd-1", NULL);
	SSL_CTX *c = client_ctx("certs/private-proxy-1.ga", 1);
	int sok, cok, version;

	SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
	cr_assert(SSL_CTX_set_cipher_list(c, "ECDHE-ECDSA-AES128-GCM-SHA256"));
	handshake(s, c, "hd-1", &sok, &cok, &version);
	cr_assert(sok && cok);
	cr_assert_eq(version, TLS1_2_VERSION);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
}

Test(tls, tls12_cbc_suite_is_refused)
{
	SSL_CTX *s = server_ctx("certs/hd-1", NULL);
	SSL_CTX *c = client_ctx("certs/private-proxy-1.ga", 1);
	int sok, cok;

	SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
	cr_assert(SSL_CTX_set_cipher_list(c, "ECDHE-ECDSA-AES128-SHA"));
	handshake(s, c, "hd-1", &sok, &cok, NULL);
	cr_assert(!sok && !cok);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
}

Test(tls, tls11_client_is_refused)
{
	SSL_CTX *s = server_ctx("certs/hd-1", NULL);
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	int sok, cok;

	SSL_CTX_set_security_level(c, 0);
	SSL_CTX_set_min_proto_version(c, TLS1_VERSION);
	SSL_CTX_set_max_proto_version(c, TLS1_1_VERSION);
	handshake(s, c, "hd-1", &sok, &cok, NULL);
	cr_assert(!sok && !cok);
	SSL_CTX_free(s);
	SSL_CTX_free(c);
}

/* ---- certificate helpers --------------------------------------------------- */

Test(tls, fingerprint_matches_the_openssl_command_line)
{
	struct json_object *top, *recs, *r;
	char fp[65];
	int checked = 0;

	top = json_object_from_file(pki("directory/90-certificates.json"));
	cr_assert_not_null(top);
	cr_assert(json_object_object_get_ex(top, "records", &recs));
	for (size_t i = 0; i < json_object_array_length(recs); i++) {
		char file[300];
		const char *name, *want;

		r = json_object_array_get_idx(recs, i);
		name = json_object_get_string(json_object_object_get(r, "name"));
		want = json_object_get_string(json_object_object_get(
		    json_object_array_get_idx(json_object_object_get(r, "data"), 0), "fingerprint"));
		snprintf(file, sizeof(file), "certs/%s", name);
		fingerprint_of(file, fp);
		cr_assert_str_eq(fp, want, "%s", name);
		checked++;
	}
	cr_assert_eq(checked, 4);
	json_object_put(top);
}

Test(tls, certificate_names_are_cn_or_dns_san_exactly)
{
	X509 *x = read_leaf("certs/internal-server");

	cr_assert(tls_cert_has_name(x, "internal-server"));
	cr_assert(tls_cert_has_name(x, "Internal-Server"));
	cr_assert(tls_cert_has_name(x, "*.internal-server.local"));
	cr_assert(!tls_cert_has_name(x, "test.internal-server.local"));
	cr_assert(!tls_cert_has_name(x, "internal-serve"));
	cr_assert(!tls_cert_has_name(x, "internal-server.x"));
	cr_assert(!tls_cert_has_name(x, ""));
	X509_free(x);
}

Test(tls, identity_of_each_generated_certificate)
{
	static const char *names[] = { "public-proxy-1.ga", "private-proxy-1.ga", "hd-1" };
	struct directory *d = load_generated_directory();
	char f[300], got[256];

	for (size_t i = 0; i < 3; i++) {
		snprintf(f, sizeof(f), "certs/%s", names[i]);
		X509 *x = read_leaf(f);
		cr_assert_eq(tls_identity(d, x, got, sizeof(got)), 0);
		cr_assert_str_eq(got, names[i]);
		X509_free(x);
	}
	directory_unref(d);
}

/* ---- settings ------------------------------------------------------------- */

static int
read_conf(const char *json, struct tls_conf *t, char *err, size_t errlen)
{
	struct json_object *o = json_tokener_parse(json);
	struct cfg c;
	int rc;

	cr_assert_not_null(o, "test JSON");
	cr_assert_eq(cfg_root(&c, o), 0);
	rc = tls_conf_read(&c, "tls", 1, t);
	if (rc == 0)
		rc = cfg_done(&c);
	snprintf(err, errlen, "%s", cfg_errstr(&c));
	json_object_put(o);
	return rc;
}

Test(tls, conf_reads_every_key_with_verify_client_default_true)
{
	struct tls_conf t;
	char err[512];

	cr_assert_eq(read_conf("{\"tls\": {\"ca_certificate_files\": [\"a.crt\", \"b.crt\"],"
	    " \"certificate_file\": \"c.crt\", \"key_file\": \"c.key\","
	    " \"server_name\": \"hd-1\"}}", &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(t.ca_files[0], "a.crt");
	cr_assert_str_eq(t.ca_files[1], "b.crt");
	cr_assert_null(t.ca_files[2]);
	cr_assert_str_eq(t.cert_file, "c.crt");
	cr_assert_str_eq(t.key_file, "c.key");
	cr_assert_str_eq(t.server_name, "hd-1");
	cr_assert_eq(t.verify_client, 1);
	tls_conf_free(&t);
}

Test(tls, conf_accepts_a_single_ca_file_and_verify_client_false)
{
	struct tls_conf t;
	char err[512];

	cr_assert_eq(read_conf("{\"tls\": {\"ca_certificate_files\": \"root.crt\","
	    " \"verify_client\": false}}", &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(t.ca_files[0], "root.crt");
	cr_assert_null(t.ca_files[1]);
	cr_assert_eq(t.verify_client, 0);
	tls_conf_free(&t);
}

Test(tls, conf_rejects_unknown_keys_and_a_certificate_without_key)
{
	struct tls_conf t;
	char err[512];

	cr_assert_eq(read_conf("{\"tls\": {\"validate_client\": true}}", &t, err, sizeof(err)), -1);
	cr_assert(strstr(err, "validate_client") != NULL, "%s", err);
	cr_assert_eq(read_conf("{\"tls\": {\"certificate_file\": \"c.crt\"}}", &t, err,
	    sizeof(err)), -1);
	cr_assert(strstr(err, "key_file") != NULL, "%s", err);
	cr_assert_eq(read_conf("{\"x\": 1}", &t, err, sizeof(err)), -1);
	cr_assert(strstr(err, "tls") != NULL, "%s", err);
}

Test(tls, server_ctx_names_the_unreadable_file)
{
	struct tls_conf t;
	char err[512], missing[] = "/nonexistent/x.crt";

	conf_for(&t, "certs/hd-1", 1);
	t.cert_file = missing;
	cr_assert_null(tls_server_ctx(&t, NULL, NULL, err, sizeof(err)));
	cr_assert(strstr(err, "/nonexistent/x.crt") != NULL, "%s", err);
	conf_for(&t, "certs/hd-1", 1);
	t.ca_files = NULL;
	cr_assert_null(tls_server_ctx(&t, NULL, NULL, err, sizeof(err)));
	cr_assert(strstr(err, "ca_certificate_files") != NULL, "%s", err);
	conf_for(&t, "certs/hd-1", 1);
	t.key_file = pki("certs/root.key");
	cr_assert_null(tls_server_ctx(&t, NULL, NULL, err, sizeof(err)));
	cr_assert(strstr(err, "key_file") != NULL, "%s", err);
}

/* ---- tls_conf_digest: what a reload compares ------------------------------ */

static void
copy_file(const char *from, const char *to)
{
	char buf[8192];
	FILE *in = fopen(from, "r"), *out = fopen(to, "w");
	size_t n;

	cr_assert_not_null(in, "%s", from);
	cr_assert_not_null(out, "%s", to);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		cr_assert_eq(fwrite(buf, 1, n, out), n);
	fclose(in);
	cr_assert_eq(fclose(out), 0);
}

Test(tls_digest, same_files_same_digest_and_a_changed_byte_changes_it)
{
	/* pki() returns one of 4 rotating buffers: keep copies */
	char key[PATH_MAX], root[PATH_MAX], cert[PATH_MAX], *ca[] = { root, NULL };
	struct tls_conf t = { .ca_files = ca, .cert_file = cert, .key_file = key,
	    .verify_client = 1 };
	unsigned char a[TLS_DIGEST_LEN], b[TLS_DIGEST_LEN];

	snprintf(root, sizeof(root), "%s", pki("certs/root.crt"));
	snprintf(cert, sizeof(cert), "%s", pki("certs/public-proxy-1.ga.crt"));
	snprintf(key, sizeof(key), "%s", pki("certs/digest-test.key"));
	copy_file(pki("certs/public-proxy-1.ga.key"), key);
	cr_assert_eq(tls_conf_digest(&t, a), 0);
	cr_assert_eq(tls_conf_digest(&t, b), 0);
	cr_assert_eq(memcmp(a, b, sizeof(a)), 0, "the same files give the same digest");

	/* another key in the same file (a rotation keeps the paths) */
	copy_file(pki("certs/private-proxy-1.ga.key"), key);
	cr_assert_eq(tls_conf_digest(&t, b), 0);
	cr_assert_neq(memcmp(a, b, sizeof(a)), 0, "new file content, new digest");

	/* the settings count too */
	copy_file(pki("certs/public-proxy-1.ga.key"), key);
	t.verify_client = 0;
	cr_assert_eq(tls_conf_digest(&t, b), 0);
	cr_assert_neq(memcmp(a, b, sizeof(a)), 0, "verify_client is part of it");
	t.verify_client = 1;
	cr_assert_eq(tls_conf_digest(&t, b), 0);
	cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
	unlink(key);
}

Test(tls_digest, a_file_that_cannot_be_read_has_none)
{
	struct tls_conf t = { .cert_file = pki("certs/public-proxy-1.ga.crt"),
	    .key_file = pki("certs/no-such.key"), .verify_client = 1 };
	unsigned char d[TLS_DIGEST_LEN];

	cr_assert_eq(tls_conf_digest(&t, d), -1);
}
