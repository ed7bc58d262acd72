/* Tests for jsonrpc.c: a real server and client on 127.0.0.1 ephemeral ports,
 * plain HTTP and mutual TLS (throwaway CA made here with the OpenSSL API),
 * raw HTTP requests for the error paths. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "jsonrpc.h"
#include "util.h"

/* ---- event loop bounded in time ---- */

static struct event_base *base;
static struct event *guard;
static int timed_out;

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	timed_out = 1;
	event_base_loopbreak(base);
}

static void
loop_init(void)
{
	struct timeval tv = { 8, 0 };

	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	guard = evtimer_new(base, guard_cb, NULL);
	evtimer_add(guard, &tv);
	timed_out = 0;
}

static void
loop_fini(void)
{
	event_free(guard);
	event_base_free(base);
}

/* ---- test handler ---- */

struct later {
	struct jsonrpc_call *call;
	struct event *ev;
};

static struct jsonrpc_call *held;	/* "hold": kept for the test */

static void
later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;
	struct json_object *r = json_object_new_object();

	json_object_object_add(r, "late", json_object_new_boolean(1));
	jsonrpc_call_reply(l->call, r);
	event_free(l->ev);
	free(l);
}

static void
handler(void *arg, struct jsonrpc_call *c)
{
	struct event_base *b = arg;
	const char *m = jsonrpc_call_method(c);
	struct json_object *p = jsonrpc_call_params(c), *v;

	if (strcmp(m, "echo") == 0) {
		jsonrpc_call_reply(c, json_object_get(p));
	} else if (strcmp(m, "fail") == 0) {
		jsonrpc_call_error(c, HP_ERR_FORBIDDEN, "denied %s", "here");
	} else if (strcmp(m, "later") == 0) {
		struct later *l = calloc(1, sizeof(*l));
		int ms = json_object_object_get_ex(p, "ms", &v) ? json_object_get_int(v) : 100;
		struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

		l->call = c;
		l->ev = evtimer_new(b, later_cb, l);
		evtimer_add(l->ev, &tv);
	} else if (strcmp(m, "whoami") == 0) {
		SSL *ssl = jsonrpc_call_ssl(c);
		X509 *peer = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
		char cn[256] = "";

		if (peer != NULL)
			X509_NAME_get_text_by_NID(X509_get_subject_name(peer),
			    NID_commonName, cn, sizeof(cn));
		jsonrpc_call_reply(c, json_object_new_string(cn));
	} else if (strcmp(m, "hold") == 0) {
		held = c;
	} else {
		jsonrpc_call_error(c, JSONRPC_METHOD_NOT_FOUND, "method not found");
	}
}

static struct jsonrpc_server *
server_start(SSL_CTX *ctx, size_t max_body)
{
	struct jsonrpc_server_conf sc = {
		.bind_address = "127.0.0.1:0", .path = "/jsonrpc",
		.ssl_ctx = ctx, .max_body = max_body, .timeout = 5,
	};
	char err[256] = "";
	struct jsonrpc_server *s = jsonrpc_server_new(base, &sc, handler, base,
	    err, sizeof(err));

	cr_assert_not_null(s, "server: %s", err);
	cr_assert_gt(jsonrpc_server_port(s), 0);
	return s;
}

static struct jsonrpc_client *
client_start(const char *scheme, int port, SSL_CTX *ctx, const char *name,
    int pool, double call_timeout)
{
	char url[128], err[256] = "";
	struct jsonrpc_client_conf cc = {
		.url = url, .ssl_ctx = ctx, .server_name = name,
		.connect_timeout = 1, .call_timeout = call_timeout, .pool_size = pool,
	};
	struct jsonrpc_client *c;

	snprintf(url, sizeof(url), "%s://127.0.0.1:%d/jsonrpc", scheme, port);
	c = jsonrpc_client_new(base, &cc, err, sizeof(err));
	cr_assert_not_null(c, "client: %s", err);
	return c;
}

/* ---- one call, its outcome recorded ---- */

struct outcome {
	int calls;		/* times the callback ran */
	int code;		/* error code, 0 for a result */
	char text[512];		/* result or error message as JSON text */
	double at;		/* when it arrived */
	int stop;		/* break the loop when it arrives */
};

static void
record(void *arg, struct json_object *result, struct json_object *error)
{
	struct outcome *o = arg;
	struct json_object *v;

	o->calls++;
	o->at = now_mono();
	if (error != NULL) {
		o->code = json_object_object_get_ex(error, "code", &v) ? json_object_get_int(v) : -1;
		snprintf(o->text, sizeof(o->text), "%s",
		    json_object_object_get_ex(error, "message", &v) ? json_object_get_string(v) : "");
	} else {
		o->code = 0;
		snprintf(o->text, sizeof(o->text), "%s",
		    result ? json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN) : "null");
	}
	if (o->stop)
		event_base_loopbreak(base);
}

static void
call_and_wait(struct jsonrpc_client *c, const char *method, const char *params,
    struct outcome *o)
{
	struct json_object *p = params ? json_tokener_parse(params) : NULL;

	o->stop = 1;
	jsonrpc_client_call(c, method, p, record, o);
	json_object_put(p);
	cr_assert_eq(o->calls, 0, "callback ran inside jsonrpc_client_call");
	event_base_dispatch(base);
	cr_assert(!timed_out, "no answer in time");
	cr_assert_eq(o->calls, 1);
}

/* ---- throwaway PKI ---- */

struct pki {
	EVP_PKEY *ca_key, *srv_key, *cli_key;
	X509 *ca, *srv, *cli;
};

static X509 *
cert_make(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, int ca, int serial)
{
	X509 *x = X509_new();
	X509V3_CTX ctx;
	X509_EXTENSION *ex;
	char san[300];

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	ex = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
	    ca ? "critical,CA:TRUE" : "CA:FALSE");
	X509_add_ext(x, ex, -1);
	X509_EXTENSION_free(ex);
	if (!ca) {
		snprintf(san, sizeof(san), "DNS:%s", cn);
		ex = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
		X509_add_ext(x, ex, -1);
		X509_EXTENSION_free(ex);
	}
	cr_assert(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
	return x;
}

static void
pki_make(struct pki *p)
{
	p->ca_key = EVP_EC_gen("P-256");
	p->srv_key = EVP_EC_gen("P-256");
	p->cli_key = EVP_EC_gen("P-256");
	cr_assert(p->ca_key && p->srv_key && p->cli_key);
	p->ca = cert_make("Test CA", p->ca_key, NULL, NULL, 1, 1);
	p->srv = cert_make("server.test", p->srv_key, p->ca, p->ca_key, 0, 2);
	p->cli = cert_make("client.test", p->cli_key, p->ca, p->ca_key, 0, 3);
}

static void
pki_free(struct pki *p)
{
	X509_free(p->ca);
	X509_free(p->srv);
	X509_free(p->cli);
	EVP_PKEY_free(p->ca_key);
	EVP_PKEY_free(p->srv_key);
	EVP_PKEY_free(p->cli_key);
}

static SSL_CTX *
ctx_make(struct pki *p, int server, int with_cert)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	cr_assert_not_null(ctx);
	if (with_cert) {
		cr_assert_eq(SSL_CTX_use_certificate(ctx, server ? p->srv : p->cli), 1);
		cr_assert_eq(SSL_CTX_use_PrivateKey(ctx, server ? p->srv_key : p->cli_key), 1);
	}
	X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), p->ca);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
	    (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
	return ctx;
}

/* ---- raw HTTP against a server running in its own thread ---- */

struct srv_thread {
	pthread_t t;
	struct jsonrpc_server *s;
	struct event *poll;
	volatile int stop;
	int port;
};

static struct srv_thread st;

static void
st_poll(evutil_socket_t fd, short what, void *arg)
{
	if (st.stop)
		event_base_loopbreak(base);
}

static void *
st_main(void *arg)
{
	event_base_dispatch(base);
	return NULL;
}

static void
st_start(void)
{
	struct timeval tv = { 0, 10000 };

	loop_init();
	st.s = server_start(NULL, 1024);
	st.port = jsonrpc_server_port(st.s);
	st.stop = 0;
	st.poll = event_new(base, -1, EV_PERSIST, st_poll, NULL);
	evtimer_add(st.poll, &tv);
	cr_assert_eq(pthread_create(&st.t, NULL, st_main, NULL), 0);
}

static void
st_stop(void)
{
	st.stop = 1;
	pthread_join(st.t, NULL);
	event_free(st.poll);
	jsonrpc_server_free(st.s);
	loop_fini();
}

static int
raw_connect(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval tv = { 3, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Sends req on a new connection and reads one response into out. */
static void
raw_http(const char *req, char *out, size_t outlen)
{
	int fd = raw_connect(st.port);
	size_t got = 0, want = 0;
	ssize_t n;
	char *end, *cl;

	cr_assert_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	while (got < outlen - 1) {
		n = recv(fd, out + got, outlen - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		out[got] = '\0';
		if (want == 0 && (end = strstr(out, "\r\n\r\n")) != NULL) {
			cl = strcasestr(out, "Content-Length:");
			want = (size_t)(end + 4 - out) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
		}
		if (want != 0 && got >= want)
			break;
	}
	out[got] = '\0';
	close(fd);
}

static void
raw_post(const char *path, const char *ctype, const char *body, char *out, size_t outlen)
{
	char req[4096];

	snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\n\r\n%s", path, ctype, strlen(body), body);
	raw_http(req, out, outlen);
}

/* The server still answers a valid request. */
static void
raw_assert_serving(void)
{
	char out[4096];

	raw_post("/jsonrpc", "application/json",
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"ok\":1},\"id\":7}",
	    out, sizeof(out));
	cr_assert(strncmp(out, "HTTP/1.1 200", 12) == 0, "got: %s", out);
	cr_assert_not_null(strstr(out, "{\"jsonrpc\":\"2.0\",\"result\":{\"ok\":1},\"id\":7}"),
	    "got: %s", out);
}

static void
raw_assert_error(const char *out, const char *status, int code, const char *msg)
{
	char want[128];

	cr_assert(strncmp(out, status, strlen(status)) == 0, "got: %s", out);
	cr_assert_not_null(strcasestr(out, "Content-Type: application/json"), "got: %s", out);
	snprintf(want, sizeof(want), "\"code\":%d", code);
	cr_assert_not_null(strstr(out, want), "got: %s", out);
	cr_assert_not_null(strstr(out, msg), "got: %s", out);
}

/* ---- round trips ---- */

Test(jsonrpc, plain_http_round_trip_returns_the_result)
{
	struct outcome o = { 0 };

	loop_init();
	struct jsonrpc_server *s = server_start(NULL, 0);
	struct jsonrpc_client *c = client_start("http", jsonrpc_server_port(s), NULL, NULL, 2, 2);
	call_and_wait(c, "echo", "{\"a\":[1,\"two\"]}", &o);
	cr_assert_eq(o.code, 0, "error: %s", o.text);
	cr_assert_str_eq(o.text, "{\"a\":[1,\"two\"]}");
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	loop_fini();
}

Test(jsonrpc, error_reply_reaches_the_caller_unchanged)
{
	struct outcome o = { 0 };

	loop_init();
	struct jsonrpc_server *s = server_start(NULL, 0);
	struct jsonrpc_client *c = client_start("http", jsonrpc_server_port(s), NULL, NULL, 2, 2);
	call_and_wait(c, "fail", NULL, &o);
	cr_assert_eq(o.code, HP_ERR_FORBIDDEN);
	cr_assert_str_eq(o.text, "denied here");
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	loop_fini();
}

Test(jsonrpc, tls_mutual_round_trip_exposes_the_client_certificate)
{
	struct outcome o = { 0 };
	struct pki p;

	loop_init();
	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	struct jsonrpc_server *s = server_start(sctx, 0);
	struct jsonrpc_client *c = client_start("https", jsonrpc_server_port(s), cctx,
	    "server.test", 2, 2);
	call_and_wait(c, "whoami", NULL, &o);
	cr_assert_eq(o.code, 0, "error: %s", o.text);
	cr_assert_str_eq(o.text, "\"client.test\"");
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

Test(jsonrpc, tls_wrong_server_name_is_unreachable)
{
	struct outcome o = { 0 };
	struct pki p;

	loop_init();
	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	struct jsonrpc_server *s = server_start(sctx, 0);
	struct jsonrpc_client *c = client_start("https", jsonrpc_server_port(s), cctx,
	    "other.test", 2, 2);
	call_and_wait(c, "whoami", NULL, &o);
	cr_assert_eq(o.code, HP_ERR_UNREACHABLE);
	cr_assert_not_null(strstr(o.text, "operator unreachable"), "%s", o.text);
	cr_assert_not_null(strstr(o.text, "TLS"), "%s", o.text);
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

Test(jsonrpc, tls_client_without_certificate_is_refused)
{
	struct outcome o = { 0 };
	struct pki p;

	loop_init();
	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 0);
	struct jsonrpc_server *s = server_start(sctx, 0);
	struct jsonrpc_client *c = client_start("https", jsonrpc_server_port(s), cctx,
	    "server.test", 2, 2);
	call_and_wait(c, "whoami", NULL, &o);
	cr_assert_eq(o.code, HP_ERR_UNREACHABLE, "%d %s", o.code, o.text);
	cr_assert_not_null(strstr(o.text, "operator unreachable"), "%s", o.text);
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

Test(jsonrpc, asynchronous_reply_after_a_timer)
{
	struct outcome o = { 0 };
	double t0;

	loop_init();
	struct jsonrpc_server *s = server_start(NULL, 0);
	struct jsonrpc_client *c = client_start("http", jsonrpc_server_port(s), NULL, NULL, 2, 2);
	t0 = now_mono();
	call_and_wait(c, "later", "{\"ms\":150}", &o);
	cr_assert_eq(o.code, 0, "error: %s", o.text);
	cr_assert_str_eq(o.text, "{\"late\":true}");
	cr_assert_geq(o.at - t0, 0.14);
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	loop_fini();
}

Test(jsonrpc, ipv6_loopback_round_trip)
{
	struct jsonrpc_server_conf sc = { .bind_address = "[::1]:0", .path = "/rpc" };
	struct jsonrpc_client_conf cc = { .connect_timeout = 1, .call_timeout = 2 };
	struct outcome o = { 0 };
	char url[128], err[256] = "";

	loop_init();
	struct jsonrpc_server *s = jsonrpc_server_new(base, &sc, handler, base, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	snprintf(url, sizeof(url), "http://[::1]:%d/rpc", jsonrpc_server_port(s));
	cc.url = url;
	struct jsonrpc_client *c = jsonrpc_client_new(base, &cc, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	call_and_wait(c, "echo", "{\"v\":6}", &o);
	cr_assert_str_eq(o.text, "{\"v\":6}");
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	loop_fini();
}

Test(jsonrpc, client_rejects_bad_urls_and_mismatched_tls)
{
	struct jsonrpc_client_conf cc = { .url = "ftp://x/y" };
	char err[256] = "";

	loop_init();
	cr_assert_null(jsonrpc_client_new(base, &cc, err, sizeof(err)));
	cr_assert_neq(err[0], '\0');
	cc.url = "https://127.0.0.1:1/jsonrpc";	/* https without a context */
	err[0] = '\0';
	cr_assert_null(jsonrpc_client_new(base, &cc, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "TLS"), "%s", err);
	cc.url = "not a url";
	cr_assert_null(jsonrpc_client_new(base, &cc, err, sizeof(err)));
	loop_fini();
}

Test(jsonrpc, server_bind_error_is_reported)
{
	struct jsonrpc_server_conf sc = { .bind_address = "256.1.1.1:0", .path = "/jsonrpc" };
	char err[256] = "";

	loop_init();
	cr_assert_null(jsonrpc_server_new(base, &sc, handler, base, err, sizeof(err)));
	cr_assert_neq(err[0], '\0');
	loop_fini();
}

Test(jsonrpc, reply_larger_than_max_body_is_unreachable)
{
	struct jsonrpc_client_conf cc = { .connect_timeout = 1, .call_timeout = 2,
	    .max_body = 256 };
	struct outcome o = { 0 };
	char url[128], err[256] = "", big[1100];

	loop_init();
	struct jsonrpc_server *s = server_start(NULL, 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/jsonrpc", jsonrpc_server_port(s));
	cc.url = url;
	struct jsonrpc_client *c = jsonrpc_client_new(base, &cc, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	snprintf(big, sizeof(big), "{\"pad\":\"%01000d\"}", 0);
	call_and_wait(c, "echo", big, &o);
	cr_assert_eq(o.code, HP_ERR_UNREACHABLE, "%d %s", o.code, o.text);
	cr_assert_not_null(strstr(o.text, "larger than 256"), "%s", o.text);
	memset(&o, 0, sizeof(o));
	call_and_wait(c, "echo", "{\"small\":1}", &o);	/* a new connection works */
	cr_assert_eq(o.code, 0, "%s", o.text);
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	loop_fini();
}

Test(jsonrpc, tls_connection_closed_by_the_server_is_replaced)
{
	struct jsonrpc_server_conf sc = { .bind_address = "127.0.0.1:0", .path = "/jsonrpc",
	    .timeout = 0.2 };
	struct outcome o1 = { 0 }, o2 = { 0 };
	struct timeval tv = { 0, 500000 };
	char err[256] = "";
	struct pki p;

	loop_init();
	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	sc.ssl_ctx = sctx;
	struct jsonrpc_server *s = jsonrpc_server_new(base, &sc, handler, base, err, sizeof(err));
	cr_assert_not_null(s, "%s", err);
	struct jsonrpc_client *c = client_start("https", jsonrpc_server_port(s), cctx,
	    "server.test", 1, 2);
	call_and_wait(c, "echo", NULL, &o1);
	cr_assert_eq(o1.code, 0, "%s", o1.text);
	/* The server's 0.2 s idle timeout closes the kept-alive connection. */
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	call_and_wait(c, "echo", "{\"again\":1}", &o2);
	cr_assert_eq(o2.code, 0, "%s", o2.text);
	cr_assert_str_eq(o2.text, "{\"again\":1}");
	cr_assert_eq(SSL_CTX_sess_accept_good(sctx), 2);
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

static int freed_in_callback;

static void
free_in_callback(void *arg, struct json_object *result, struct json_object *error)
{
	freed_in_callback++;
	jsonrpc_client_free(arg);
	event_base_loopbreak(base);
}

Test(jsonrpc, a_callback_may_free_its_client)
{
	struct outcome other = { 0 };

	loop_init();
	struct jsonrpc_server *s = server_start(NULL, 0);
	struct jsonrpc_client *c = client_start("http", jsonrpc_server_port(s), NULL, NULL, 1, 2);
	jsonrpc_client_call(c, "echo", NULL, free_in_callback, c);
	jsonrpc_client_call(c, "later", NULL, record, &other);
	event_base_dispatch(base);
	cr_assert(!timed_out);
	cr_assert_eq(freed_in_callback, 1);
	cr_assert_eq(other.calls, 1);
	cr_assert_str_eq(other.text, "client closed");
	jsonrpc_server_free(s);
	loop_fini();
}

/* ---- keep-alive and load ---- */

struct chain {
	struct jsonrpc_client *c;
	int left, ok;
};

static void
chain_next(void *arg, struct json_object *result, struct json_object *error)
{
	struct chain *ch = arg;

	if (error == NULL)
		ch->ok++;
	if (--ch->left == 0 || error != NULL) {
		event_base_loopbreak(base);
		return;
	}
	jsonrpc_client_call(ch->c, "echo", NULL, chain_next, ch);
}

Test(jsonrpc, sequential_calls_reuse_keep_alive_connections)
{
	struct chain ch = { .left = 30 };
	struct pki p;
	double t0;

	loop_init();
	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	struct jsonrpc_server *s = server_start(sctx, 0);
	ch.c = client_start("https", jsonrpc_server_port(s), cctx, "server.test", 2, 2);
	t0 = now_mono();
	jsonrpc_client_call(ch.c, "echo", NULL, chain_next, &ch);
	event_base_dispatch(base);
	cr_assert(!timed_out);
	cr_assert_eq(ch.ok, 30);
	/* No Nagle/delayed-ACK stall (40 ms per call without TCP_NODELAY). */
	cr_assert_lt(now_mono() - t0, 1.0);
	/* Each TLS handshake is one accepted connection. */
	cr_assert_geq(SSL_CTX_sess_accept_good(sctx), 1);
	cr_assert_leq(SSL_CTX_sess_accept_good(sctx), 2, "handshakes: %ld",
	    SSL_CTX_sess_accept_good(sctx));
	jsonrpc_client_free(ch.c);
	jsonrpc_server_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

struct many {
	int answered, right, n;
};

struct many_one {
	struct many *m;
	int i;
};

static void
many_cb(void *arg, struct json_object *result, struct json_object *error)
{
	struct many_one *one = arg;
	struct json_object *v;

	one->m->answered++;
	if (error == NULL && json_object_object_get_ex(result, "i", &v) &&
	    json_object_get_int(v) == one->i)
		one->m->right++;
	if (one->m->answered == one->m->n)
		event_base_loopbreak(base);
}

Test(jsonrpc, many_concurrent_calls_are_all_answered)
{
	enum { N = 200 };
	static struct many_one ones[N];
	struct many m = { .n = N };
	struct pki p;

	loop_init();
	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	struct jsonrpc_server *s = server_start(sctx, 0);
	struct jsonrpc_client *c = client_start("https", jsonrpc_server_port(s), cctx,
	    "server.test", 4, 5);
	for (int i = 0; i < N; i++) {
		struct json_object *params = json_object_new_object();

		json_object_object_add(params, "i", json_object_new_int(i));
		ones[i].m = &m;
		ones[i].i = i;
		jsonrpc_client_call(c, "echo", params, many_cb, &ones[i]);
		json_object_put(params);
	}
	event_base_dispatch(base);
	cr_assert(!timed_out);
	cr_assert_eq(m.answered, N);
	cr_assert_eq(m.right, N);
	cr_assert_leq(SSL_CTX_sess_accept_good(sctx), 4);
	jsonrpc_client_free(c);
	jsonrpc_server_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

/* ---- transport failures ---- */

Test(jsonrpc, closed_port_gives_502_within_the_connect_timeout)
{
	struct outcome o = { 0 };
	char err[128];
	double t0;
	int fd, port;

	loop_init();
	fd = listen_tcp("127.0.0.1:0", 1, err, sizeof(err));
	cr_assert_geq(fd, 0);
	port = sock_port(fd);
	close(fd);	/* nothing listens there any more */
	struct jsonrpc_client *c = client_start("http", port, NULL, NULL, 2, 5);
	t0 = now_mono();
	call_and_wait(c, "echo", NULL, &o);
	cr_assert_eq(o.code, HP_ERR_UNREACHABLE);
	cr_assert_not_null(strstr(o.text, "operator unreachable"), "%s", o.text);
	cr_assert_lt(o.at - t0, 1.0);
	jsonrpc_client_free(c);
	loop_fini();
}

Test(jsonrpc, silent_server_gives_504_after_the_call_timeout)
{
	struct outcome o = { 0 };
	char err[128];
	double t0;
	int fd;

	loop_init();
	/* The kernel completes the TCP handshake; nobody ever reads. */
	fd = listen_tcp("127.0.0.1:0", 4, err, sizeof(err));
	cr_assert_geq(fd, 0);
	struct jsonrpc_client *c = client_start("http", sock_port(fd), NULL, NULL, 2, 0.4);
	t0 = now_mono();
	call_and_wait(c, "echo", NULL, &o);
	cr_assert_eq(o.code, HP_ERR_TIMEOUT, "%d %s", o.code, o.text);
	cr_assert(strncmp(o.text, "timeout: ", 9) == 0, "%s", o.text);
	cr_assert_geq(o.at - t0, 0.39);
	cr_assert_lt(o.at - t0, 0.8);
	jsonrpc_client_free(c);
	close(fd);
	loop_fini();
}

Test(jsonrpc, silent_tls_server_gives_504_after_the_connect_timeout)
{
	struct outcome o = { 0 };
	struct pki p;
	char err[128];
	double t0;
	int fd;

	loop_init();
	pki_make(&p);
	SSL_CTX *cctx = ctx_make(&p, 0, 1);
	fd = listen_tcp("127.0.0.1:0", 4, err, sizeof(err));
	cr_assert_geq(fd, 0);
	/* connect_timeout 1 s, call_timeout 3 s: the handshake never ends. */
	struct jsonrpc_client *c = client_start("https", sock_port(fd), cctx, "server.test", 2, 3);
	t0 = now_mono();
	call_and_wait(c, "echo", NULL, &o);
	cr_assert_eq(o.code, HP_ERR_TIMEOUT, "%d %s", o.code, o.text);
	cr_assert_not_null(strstr(o.text, "connecting"), "%s", o.text);
	cr_assert_geq(o.at - t0, 0.99);
	cr_assert_lt(o.at - t0, 1.5);
	jsonrpc_client_free(c);
	close(fd);
	SSL_CTX_free(cctx);
	pki_free(&p);
	loop_fini();
}

static void
free_client_cb(evutil_socket_t fd, short what, void *arg)
{
	jsonrpc_client_free(arg);
	event_base_loopbreak(base);
}

Test(jsonrpc, freeing_the_client_calls_back_pending_calls_once_with_502)
{
	struct outcome in_flight = { 0 }, queued = { 0 };
	struct timeval tv = { 0, 100000 };
	struct event *ev;

	loop_init();
	struct jsonrpc_server *s = server_start(NULL, 0);
	struct jsonrpc_client *c = client_start("http", jsonrpc_server_port(s), NULL, NULL, 1, 5);
	jsonrpc_client_call(c, "later", NULL, record, &in_flight);	/* 100 ms... */
	jsonrpc_client_call(c, "echo", NULL, record, &queued);	/* ...waits for it */
	tv.tv_usec = 50000;
	ev = evtimer_new(base, free_client_cb, c);
	evtimer_add(ev, &tv);
	event_base_dispatch(base);
	cr_assert(!timed_out);
	cr_assert_eq(in_flight.calls, 1);
	cr_assert_eq(queued.calls, 1);
	cr_assert_eq(in_flight.code, HP_ERR_UNREACHABLE);
	cr_assert_str_eq(in_flight.text, "client closed");
	cr_assert_eq(queued.code, HP_ERR_UNREACHABLE);
	/* The server's late reply to a gone client must not hurt anyone. */
	tv.tv_usec = 200000;
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	cr_assert_eq(in_flight.calls, 1);
	event_free(ev);
	jsonrpc_server_free(s);
	loop_fini();
}

Test(jsonrpc, freeing_the_server_with_a_pending_call_is_safe)
{
	struct outcome o = { 0 };

	loop_init();
	held = NULL;
	struct jsonrpc_server *s = server_start(NULL, 0);
	struct jsonrpc_client *c = client_start("http", jsonrpc_server_port(s), NULL, NULL, 1, 2);
	o.stop = 1;
	jsonrpc_client_call(c, "hold", NULL, record, &o);
	for (int i = 0; i < 200 && held == NULL; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	cr_assert_not_null(held);
	jsonrpc_server_free(s);
	cr_assert_null(jsonrpc_call_ssl(held));
	jsonrpc_call_reply(held, json_object_new_int(1));	/* only frees it */
	event_base_dispatch(base);
	cr_assert(!timed_out);
	cr_assert_eq(o.calls, 1);
	cr_assert_eq(o.code, HP_ERR_UNREACHABLE, "%d %s", o.code, o.text);
	jsonrpc_client_free(c);
	loop_fini();
}

/* ---- bad requests, raw HTTP ---- */

Test(jsonrpc, malformed_json_gets_a_parse_error, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/jsonrpc", "application/json", "{\"jsonrpc\":\"2.0\",", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_PARSE_ERROR, "parse error");
	raw_assert_serving();
}

Test(jsonrpc, array_body_is_rejected_as_invalid_request, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/jsonrpc", "application/json",
	    "[{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}]", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_INVALID_REQUEST, "batch");
	raw_assert_serving();
}

Test(jsonrpc, wrong_content_type_requires_json, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/jsonrpc", "text/plain",
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_PARSE_ERROR, "JSON required");
	raw_post("/jsonrpc", "Application/JSON; charset=utf-8",
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}", out, sizeof(out));
	cr_assert(strncmp(out, "HTTP/1.1 200", 12) == 0, "parameters allowed: %s", out);
	raw_assert_serving();
}

Test(jsonrpc, missing_method_is_an_invalid_request, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/jsonrpc", "application/json", "{\"jsonrpc\":\"2.0\",\"id\":\"abc\"}",
	    out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_INVALID_REQUEST, "method");
	cr_assert_not_null(strstr(out, "\"id\":\"abc\""), "caller id echoed: %s", out);
	raw_assert_serving();
}

Test(jsonrpc, params_array_and_bad_version_are_rejected, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/jsonrpc", "application/json",
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[1],\"id\":1}", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_INVALID_PARAMS, "params");
	raw_post("/jsonrpc", "application/json",
	    "{\"jsonrpc\":\"1.0\",\"method\":\"echo\",\"id\":1}", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_INVALID_REQUEST, "jsonrpc");
	raw_post("/jsonrpc", "application/json",
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1.5}", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 400", JSONRPC_INVALID_REQUEST, "id");
	raw_assert_serving();
}

Test(jsonrpc, request_without_id_is_answered_with_null_id, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/jsonrpc", "application/json", "{\"jsonrpc\":\"2.0\",\"method\":\"echo\"}",
	    out, sizeof(out));
	cr_assert(strncmp(out, "HTTP/1.1 200", 12) == 0, "got: %s", out);
	cr_assert_not_null(strstr(out, "{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":null}"),
	    "got: %s", out);
}

Test(jsonrpc, wrong_path_is_404_not_found, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_post("/other", "application/json",
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}", out, sizeof(out));
	cr_assert(strncmp(out, "HTTP/1.1 404", 12) == 0, "got: %s", out);
	cr_assert_not_null(strstr(out, "{\"message\":\"not found\"}"), "got: %s", out);
	raw_assert_serving();
}

Test(jsonrpc, get_is_405_method_not_allowed, .init = st_start, .fini = st_stop)
{
	char out[4096];

	raw_http("GET /jsonrpc HTTP/1.1\r\nHost: x\r\n\r\n", out, sizeof(out));
	raw_assert_error(out, "HTTP/1.1 405", JSONRPC_INVALID_REQUEST, "POST");
	raw_assert_serving();
}

Test(jsonrpc, oversize_body_is_413_and_the_server_keeps_serving, .init = st_start,
    .fini = st_stop)
{
	char out[4096];

	/* max_body is 1024: the declared length alone is refused, by evhttp
	 * itself (its own HTML body), and the connection is closed. */
	raw_http("POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	    "Content-Length: 2000\r\n\r\n", out, sizeof(out));
	cr_assert(strncmp(out, "HTTP/1.1 413", 12) == 0, "got: %s", out);
	raw_assert_serving();
}

Test(jsonrpc, reply_to_a_client_that_went_away_is_dropped, .init = st_start, .fini = st_stop)
{
	const char *body = "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"params\":{\"ms\":100}}";
	char req[512];
	int fd = raw_connect(st.port);

	snprintf(req, sizeof(req), "POST /jsonrpc HTTP/1.1\r\nHost: x\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    strlen(body), body);
	cr_assert_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	usleep(20000);
	close(fd);	/* gone before the 100 ms reply */
	usleep(200000);
	raw_assert_serving();
}

/* ---- the pure body checks ---- */

static const char *
parse_req(const char *body, int *code, char *id, size_t idlen)
{
	struct json_object *o, *v;
	const char *why;

	why = jsonrpc_parse_request(body, strlen(body), &o, &v, code);
	snprintf(id, idlen, "%s", v != NULL ? json_object_to_json_string(v) : "-");
	json_object_put(o);
	return why;
}

Test(jsonrpc, request_parser_gives_the_code_and_the_echoable_id)
{
	char id[64];
	int code;

	cr_assert_null(parse_req("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":7} \r\n",
	    &code, id, sizeof(id)));
	cr_assert_str_eq(id, "7");
	cr_assert_not_null(parse_req("{\"jsonrpc\":\"2.0\"} x", &code, id, sizeof(id)));
	cr_assert_eq(code, JSONRPC_PARSE_ERROR);
	cr_assert_str_eq(id, "-");
	cr_assert_not_null(parse_req("\"x\"", &code, id, sizeof(id)));
	cr_assert_eq(code, JSONRPC_INVALID_REQUEST);
	cr_assert_not_null(parse_req("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":\"a\","
	    "\"params\":[1]}", &code, id, sizeof(id)));
	cr_assert_eq(code, JSONRPC_INVALID_PARAMS);
	cr_assert_str_eq(id, "\"a\"");
	cr_assert_not_null(parse_req("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1.5}",
	    &code, id, sizeof(id)));
	cr_assert_eq(code, JSONRPC_INVALID_REQUEST);
	cr_assert_str_eq(id, "-", "a fractional id is never echoed");
}

static int
parse_resp(const char *body, int64_t id, int *code)
{
	struct json_object *o, *e, *c;
	int rv;

	*code = 0;
	rv = jsonrpc_parse_response(body, strlen(body), id, &o, &e);
	cr_assert((rv == 0) == (o != NULL) && (rv == 1) == (e != NULL));
	if (e != NULL && json_object_object_get_ex(e, "code", &c))
		*code = json_object_get_int(c);
	json_object_put(o);
	json_object_put(e);
	return rv;
}

Test(jsonrpc, response_parser_classifies_bodies)
{
	int code;

	cr_assert_eq(parse_resp("{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":3}", 3, &code), 0);
	cr_assert_eq(parse_resp("{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":4}", 3, &code), -2);
	cr_assert_eq(parse_resp("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":409,"
	    "\"message\":\"x\"},\"id\":null}", 3, &code), 1);
	cr_assert_eq(code, 409);
	cr_assert_eq(parse_resp("{\"jsonrpc\":\"2.0\",\"error\":{\"message\":\"x\"}}", 3,
	    &code), -1);
	cr_assert_eq(parse_resp("{\"jsonrpc\":\"1.0\",\"result\":1,\"id\":3}", 3, &code), -1);
	cr_assert_eq(parse_resp("<html>", 3, &code), -1);
	cr_assert_eq(parse_resp("", 3, &code), -1);
}

/* ---- connection cap and TLS handshake deadline (review finding L5) ---- */

static void
tls_st_start(SSL_CTX *sctx, int max_connections, double handshake_timeout)
{
	struct jsonrpc_server_conf sc = {
		.bind_address = "127.0.0.1:0", .path = "/jsonrpc", .ssl_ctx = sctx,
		.timeout = 5, .max_connections = max_connections,
		.handshake_timeout = handshake_timeout,
	};
	struct timeval tv = { 0, 10000 };
	char err[256] = "";

	loop_init();
	st.s = jsonrpc_server_new(base, &sc, handler, base, err, sizeof(err));
	cr_assert_not_null(st.s, "server: %s", err);
	st.port = jsonrpc_server_port(st.s);
	st.stop = 0;
	st.poll = event_new(base, -1, EV_PERSIST, st_poll, NULL);
	evtimer_add(st.poll, &tv);
	cr_assert_eq(pthread_create(&st.t, NULL, st_main, NULL), 0);
}

/* A blocking TLS client connection (3 s receive timeout); NULL when the
 * handshake fails. */
static SSL *
tls_open(SSL_CTX *cctx)
{
	int fd = raw_connect(st.port);
	SSL *ssl = SSL_new(cctx);

	cr_assert_not_null(ssl);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "server.test");
	if (SSL_connect(ssl) != 1) {
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	return ssl;
}

static void
tls_close(SSL *ssl)
{
	int fd = SSL_get_fd(ssl);

	SSL_free(ssl);
	close(fd);
}

/* One echo request on ssl: 1 when it is answered with HTTP 200. */
static int
tls_echo(SSL *ssl)
{
	static const char body[] = "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{},\"id\":1}";
	char req[512], out[1024], *end, *cl;
	size_t got = 0, want = 0;
	int n;

	snprintf(req, sizeof(req), "POST /jsonrpc HTTP/1.1\r\nHost: x\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    sizeof(body) - 1, body);
	if (SSL_write(ssl, req, (int)strlen(req)) <= 0)
		return 0;
	/* The whole response, so the next request starts on a clean stream. */
	while (want == 0 || got < want) {
		if (got >= sizeof(out) - 1 ||
		    (n = SSL_read(ssl, out + got, (int)(sizeof(out) - 1 - got))) <= 0)
			return 0;
		got += (size_t)n;
		out[got] = '\0';
		if (want == 0 && (end = strstr(out, "\r\n\r\n")) != NULL) {
			cl = strcasestr(out, "Content-Length:");
			want = (size_t)(end + 4 - out) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
		}
	}
	return strncmp(out, "HTTP/1.1 200", 12) == 0;
}

/* Seconds until the server closes fd (recv gives EOF or a reset); a byte
 * of a TLS record header is sent every 100 ms when drip is set.  -1 when
 * still open after 4 s. */
static double
closed_after(int fd, int drip)
{
	static const unsigned char hdr[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01 };
	double t0 = now_mono();
	char c;

	for (int i = 0; now_mono() - t0 < 4; i++) {
		if (drip && i < (int)sizeof(hdr) && send(fd, &hdr[i], 1, MSG_NOSIGNAL) != 1)
			return now_mono() - t0;
		usleep(100000);
		ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return now_mono() - t0;
	}
	return -1;
}

Test(jsonrpc, tls_connection_over_max_connections_is_closed_at_once)
{
	struct pki p;
	SSL *a, *b, *c = NULL;
	double t0, secs;

	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	tls_st_start(sctx, 2, 5);
	cr_assert_not_null(a = tls_open(cctx));
	cr_assert_not_null(b = tls_open(cctx));
	cr_assert(tls_echo(a) && tls_echo(b), "two connections are served");

	/* The third is accepted, then closed before it is served. */
	t0 = now_mono();
	c = tls_open(cctx);
	cr_assert(c == NULL || !tls_echo(c), "a third connection is not served");
	secs = now_mono() - t0;
	cr_assert_lt(secs, 2, "closed at once, not at a timeout (%.2f s)", secs);
	if (c != NULL)
		tls_close(c);
	cr_assert(tls_echo(a), "the first two keep being served");

	/* A freed slot is taken by the next connection. */
	tls_close(b);
	c = NULL;
	for (int i = 0; i < 30 && c == NULL; i++) {
		if ((c = tls_open(cctx)) != NULL && !tls_echo(c)) {
			tls_close(c);
			c = NULL;
		}
		if (c == NULL)
			usleep(100000);
	}
	cr_assert_not_null(c, "a connection is served again once one closed");
	tls_close(c);
	tls_close(a);
	st_stop();
	cr_assert(!timed_out);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
}

Test(jsonrpc, tls_client_not_done_with_its_handshake_is_closed_at_the_deadline)
{
	struct pki p;
	double silent, drip;
	SSL *ok;
	int fd;

	pki_make(&p);
	SSL_CTX *sctx = ctx_make(&p, 1, 1), *cctx = ctx_make(&p, 0, 1);
	/* handshake_timeout 0.5 s, idle timeout 5 s */
	tls_st_start(sctx, 16, 0.5);
	cr_assert_not_null(ok = tls_open(cctx));

	fd = raw_connect(st.port);
	silent = closed_after(fd, 0);
	close(fd);
	fd = raw_connect(st.port);
	drip = closed_after(fd, 1);
	close(fd);
	cr_assert(silent >= 0.4 && silent < 2, "a silent client: closed after %.2f s", silent);
	cr_assert(drip >= 0.4 && drip < 2, "a trickling client: closed after %.2f s", drip);
	cr_assert(tls_echo(ok), "a finished handshake outlives the deadline");
	tls_close(ok);
	st_stop();
	cr_assert(!timed_out);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	pki_free(&p);
}
