/*
 * internal-server - the example HTTPS service behind a private proxy
 * (SPEC section 6), fast enough never to be the bottleneck of a benchmark.
 *
 * Requests (HTTP/1.1, keep-alive; TLS 1.2 and 1.3, session tickets on):
 *   GET  any path      200 {"message": "success"}              application/json
 *   GET  /bytes/N      200 N bytes of the pattern below         application/octet-stream
 *   POST /sha256       200 lowercase hex SHA-256 of the body    text/plain (64 chars, no newline)
 *   POST any other     200 the body echoed, when it is one valid JSON value
 *                          (object, array, string, number, true/false/null);
 *                      400 {"message": "invalid JSON"} otherwise;
 *                      413 {"message": "body too large"} above IS_MAX_JSON.
 *   GET  /bytes/N with N not a decimal number <= IS_MAX_BYTES: 400 {"message": "invalid length"}.
 *   Other methods: 405 {"message": "method not allowed"}.  A body above
 *   IS_MAX_BODY: 413 from evhttp itself (HTML), connection closed.
 * Connections get TCP_NODELAY (replies are several TLS records) and a TLS
 * close_notify when evhttp closes them.
 *
 * The /bytes pattern: byte i of the stream (i counted from 0) is i mod 251,
 * that is the 251 bytes 0x00, 0x01, ... 0xfa repeated.  A prime period catches
 * lost or duplicated power-of-two sized blocks.  Generate it with
 *   python3 -c 'import sys; sys.stdout.buffer.write((bytes(range(251))*(N//251+1))[:N])'
 *
 * Memory: /bytes streams from one static buffer: each chunk of IS_CHUNK bytes
 * is queued by reference and the next one only when the previous one left the
 * output buffer (evhttp_send_reply_chunk_with_cb), so a 64 GiB answer costs a
 * few hundred KiB per connection.  Request bodies are buffered by evhttp
 * (libevent 2.1 offers no hook before a server request body is read), up to
 * IS_MAX_BODY per request (default 1 GiB, larger gets 413); /sha256 then
 * hashes the buffered chains in place with EVP and frees them as it goes.
 *
 * Threads: IS_THREADS event loops (default: one per CPU), each with its own
 * evhttp and its own listening socket bound with SO_REUSEPORT, so the kernel
 * spreads connections.  The main thread only waits for signals: SIGHUP
 * reads IS_CERT_FILE and IS_KEY_FILE again (new connections get the new
 * certificate, live ones keep theirs; a file that fails keeps the old one,
 * with a warning naming it), SIGINT/SIGTERM break every loop and exit 0.
 *
 * Environment: IS_BIND_ADDRESS (0.0.0.0:8888), IS_CERT_FILE
 * (settings/dev/certs/internal-server.crt of the repository the executable
 * was built in, found from /proc/self/exe; leaf then intermediate), IS_KEY_FILE
 * (likewise internal-server.key), IS_THREADS, IS_MAX_BODY,
 * IS_MAX_JSON (16 MiB), IS_MAX_BYTES (64 GiB), IS_TIMEOUT (60 s idle/read/write),
 * IS_LOG_LEVEL (info), IS_PROXY_PROTOCOL (off), IS_PROXY_PROTOCOL_TIMEOUT (5 s),
 * IS_PROXY_PROTOCOL_MAX_BYTES (536).
 *
 * PROXY protocol (IS_PROXY_PROTOCOL=v1|v2): every connection must start
 * with a header of that version (haproxy's proxy-protocol.txt; the server
 * never guesses whether one is there); without a valid one it is logged
 * and closed.  The header is read from the raw socket when OpenSSL starts
 * the handshake (info callback, SSL_CB_HANDSHAKE_START): peeked until it
 * is complete, then exactly its bytes are consumed, so the ClientHello
 * behind it stays in the socket.  That read blocks the worker for up to
 * IS_PROXY_PROTOCOL_TIMEOUT when the header is slow to come; the private
 * proxy writes it in one segment right after connecting.  With a header
 * that carries addresses, GET's success answer gains
 * "client": "address:port" (IPv6 as [address]:port).
 * Exit codes (as for proxy and hyper): 0 clean stop, 1 runtime failure (bind,
 * threads), 2 bad configuration (unreadable certificate or key, bad setting,
 * bad argument), each with one `error` line on stderr.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "log.h"
#include "proxyproto.h"
#include "tls.h"
#include "util.h"

#define IS_PERIOD	251			/* /bytes pattern period */
#define IS_CHUNK	(IS_PERIOD * 1024)	/* bytes queued per write callback */
#define IS_JSON_DEPTH	64

#define MSG_SUCCESS	"{\"message\": \"success\"}"
#define MSG_BAD_JSON	"{\"message\": \"invalid JSON\"}"
#define MSG_TOO_LARGE	"{\"message\": \"body too large\"}"
#define MSG_BAD_LENGTH	"{\"message\": \"invalid length\"}"

struct is_conf {
	const char	*ic_bind;
	const char	*ic_cert;
	const char	*ic_key;
	long		 ic_threads;
	uint64_t	 ic_max_body;
	uint64_t	 ic_max_json;
	uint64_t	 ic_max_bytes;
	long		 ic_timeout;	/* seconds */
	int		 ic_pp;		/* enum proxyproto_version */
	int		 ic_pp_timeout;	/* milliseconds */
	size_t		 ic_pp_max;	/* largest header accepted */
};

/* What the PROXY header of one connection said (SSL ex_data). */
struct is_pp {
	int		 pp_done;	/* read, or failed; never twice */
	char		 pp_client[INET6_ADDRSTRLEN + 8];	/* "" LOCAL/UNKNOWN */
};

struct is_worker {
	int			 w_id;
	int			 w_fd;		/* listening socket (SO_REUSEPORT) */
	pthread_t		 w_thread;
	struct event_base	*w_base;
	struct evhttp		*w_http;
};

/*
 * One GET /bytes/N answer in flight.  It lives from evhttp_send_reply_start
 * until either the last chunk left the output buffer (bytes_next ends it) or
 * the connection closed early (conn_closed ends it); exactly one of the two
 * frees it.
 */
struct is_stream {
	struct evhttp_request	*st_req;
	struct evhttp_connection *st_evcon;
	struct evbuffer		*st_buf;	/* reused for every chunk */
	uint64_t		 st_left;	/* bytes not yet queued */
	uint64_t		 st_off;	/* stream offset of the next byte */
};

static struct is_conf	 conf;
static SSL_CTX		*is_ssl_ctx;	/* swapped at SIGHUP, under is_ctx_lock */
static pthread_mutex_t	 is_ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static int		 is_pp_index = -1;	/* SSL ex_data of struct is_pp */
static uint8_t		 is_pattern[IS_CHUNK + IS_PERIOD];

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: internal-server [-h | --help] [-V | --version]\n"
	    "HTTPS example service (GET -> success, POST -> JSON echo,\n"
	    "GET /bytes/N -> N pattern bytes, POST /sha256 -> hex digest).\n"
	    "environment:\n"
	    "  IS_BIND_ADDRESS  listen address        (0.0.0.0:8888)\n"
	    "  IS_CERT_FILE     certificate chain PEM (settings/dev/certs/internal-server.crt\n"
	    "                   of the repository holding this executable)\n"
	    "  IS_KEY_FILE      private key PEM       (settings/dev/certs/internal-server.key)\n"
	    "  IS_THREADS       event loop threads    (number of CPUs)\n"
	    "  IS_MAX_BODY      max request body      (1073741824)\n"
	    "  IS_MAX_JSON      max JSON echo body    (16777216)\n"
	    "  IS_MAX_BYTES     max N of /bytes/N     (68719476736)\n"
	    "  IS_TIMEOUT       I/O timeout, seconds  (60)\n"
	    "  IS_LOG_LEVEL     error|warn|info|debug (info)\n"
	    "  IS_PROXY_PROTOCOL v2|v1|off: PROXY header required first (off)\n"
	    "  IS_PROXY_PROTOCOL_TIMEOUT   seconds to wait for it (5)\n"
	    "  IS_PROXY_PROTOCOL_MAX_BYTES largest v2 header accepted (536)\n"
	    "signals: SIGHUP re-reads IS_CERT_FILE and IS_KEY_FILE, SIGINT/SIGTERM stop\n"
	    "exit status: 0 clean stop, 1 runtime failure, 2 usage or configuration error\n");
}

/* Exit 2 with one line: the configuration cannot work. */
static void __attribute__((noreturn, format(printf, 1, 2)))
conf_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_errorx("%s", msg);
	exit(2);
}

static const char *
env_str(const char *name, const char *def)
{
	const char *v = getenv(name);

	return (v != NULL && *v != '\0') ? v : def;
}

static uint64_t
env_u64(const char *name, uint64_t def, uint64_t min, uint64_t max)
{
	const char *v = getenv(name);
	unsigned long long n;
	char *end;

	if (v == NULL || *v == '\0')
		return def;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0' || *v == '-' || n < min || n > max)
		conf_fail("%s=%s: expected an integer in [%" PRIu64 ", %" PRIu64 "]",
		    name, v, min, max);
	return n;
}

/*
 * Default certificate and key: the development ones of the repository this
 * executable was built in (bin/ or build/V/bin/ below its root), so the
 * program works from any working directory.  Not found: the variables are
 * required.
 */
static void
conf_dev_certs(void)
{
	static char cert[PATH_MAX + 64], key[PATH_MAX + 64];
	char exe[PATH_MAX], *slash;
	ssize_t n;

	if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) < 0)
		conf_fail("IS_CERT_FILE and IS_KEY_FILE are required (/proc/self/exe: %s)",
		    strerror(errno));
	exe[n] = '\0';
	for (int up = 0; up < 4 && (slash = strrchr(exe, '/')) != NULL; up++) {
		*slash = '\0';         /* exe is now the folder one level up */
		snprintf(cert, sizeof(cert), "%s/settings/dev/certs/internal-server.crt", exe);
		if (access(cert, F_OK) != 0)
			continue;
		snprintf(key, sizeof(key), "%s/settings/dev/certs/internal-server.key", exe);
		if (conf.ic_cert == NULL)
			conf.ic_cert = cert;
		if (conf.ic_key == NULL)
			conf.ic_key = key;
		return;
	}
	conf_fail("IS_CERT_FILE and IS_KEY_FILE are required: no "
	    "settings/dev/certs/internal-server.crt above the executable (make certs)");
}

static void
conf_load(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	const char *lvl = env_str("IS_LOG_LEVEL", "info");
	int l;

	if ((l = log_level_parse(lvl)) < 0)
		conf_fail("IS_LOG_LEVEL=%s: expected error, warn, info or debug", lvl);
	log_init("internal-server", l);
	conf.ic_bind = env_str("IS_BIND_ADDRESS", "0.0.0.0:8888");
	conf.ic_cert = env_str("IS_CERT_FILE", NULL);
	conf.ic_key = env_str("IS_KEY_FILE", NULL);
	if (conf.ic_cert == NULL || conf.ic_key == NULL)
		conf_dev_certs();
	conf.ic_threads = env_u64("IS_THREADS", ncpu > 0 ? ncpu : 1, 1, 1024);
	/* evhttp takes the body limit as ev_ssize_t. */
	conf.ic_max_body = env_u64("IS_MAX_BODY", 1ULL << 30, 0, SSIZE_MAX);
	/* json-c parses at most INT32_MAX bytes at once. */
	conf.ic_max_json = env_u64("IS_MAX_JSON", 16ULL << 20, 0, INT32_MAX - 1);
	conf.ic_max_bytes = env_u64("IS_MAX_BYTES", 64ULL << 30, 0, UINT64_MAX);
	conf.ic_timeout = env_u64("IS_TIMEOUT", 60, 1, 86400);
	lvl = env_str("IS_PROXY_PROTOCOL", "off");
	if ((conf.ic_pp = proxyproto_version_parse(lvl)) < 0)
		conf_fail("IS_PROXY_PROTOCOL=%s: expected v2, v1 or off", lvl);
	conf.ic_pp_timeout = (int)env_u64("IS_PROXY_PROTOCOL_TIMEOUT", 5, 1, 3600) * 1000;
	/* 536: the spec's advice (the smallest TCP segment carries any header). */
	conf.ic_pp_max = env_u64("IS_PROXY_PROTOCOL_MAX_BYTES", 536, 232, 4096);
}

/* The OpenSSL error queue as one line (the oldest error is the cause). */
static const char *
ssl_errstr(void)
{
	static char buf[256];
	unsigned long e = ERR_get_error();

	if (e == 0)
		return "unknown error";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* ---- PROXY protocol ------------------------------------------------------ */

/*
 * Read the PROXY header at the start of fd: peek until the parser has a
 * whole header, then consume exactly its bytes.  SO_RCVLOWAT makes poll
 * wait for the count the parser asked for instead of spinning on the
 * bytes already peeked.  0, or -1 with a reason in why.
 */
static int
pp_read(int fd, struct proxyproto_info *pi, char *why, size_t whylen)
{
	uint8_t buf[4096];
	uint64_t deadline = now_mono_ms() + (uint64_t)conf.ic_pp_timeout;
	size_t want = conf.ic_pp == PROXYPROTO_V1 ? PROXYPROTO_V1_MAX : PROXYPROTO_V2_FIXED;
	size_t used = 0;
	int lowat, rc = -1, eof = 0, one = 1;

	for (;;) {
		enum proxyproto_result r;
		struct pollfd pfd;
		ssize_t n;
		int64_t left;

		n = recv(fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0) {
			snprintf(why, whylen, "connection closed before a PROXY header");
			break;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			snprintf(why, whylen, "recv: %s", strerror(errno));
			break;
		}
		lowat = 1;
		if (n > 0) {
			r = proxyproto_parse(conf.ic_pp, buf, (size_t)n, conf.ic_pp_max, pi, &used);
			if (r == PROXYPROTO_OK) {
				/* The header only: the ClientHello stays for TLS. */
				if (recv(fd, buf, used, MSG_DONTWAIT) != (ssize_t)used) {
					snprintf(why, whylen, "recv of the header failed");
					break;
				}
				rc = 0;
				break;
			}
			if (r != PROXYPROTO_NEED_MORE) {
				snprintf(why, whylen, "bad PROXY %s header: %s",
				    proxyproto_version_str(conf.ic_pp), proxyproto_result_str(r));
				break;
			}
			if (eof) {
				snprintf(why, whylen, "connection closed inside the PROXY header");
				break;
			}
			/* v2 knows its length after 16 bytes; v1 peeks the most a line may be. */
			if (conf.ic_pp == PROXYPROTO_V2)
				want = used;
			lowat = (int)used;
		}
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
		if ((left = (int64_t)deadline - (int64_t)now_mono_ms()) <= 0) {
			snprintf(why, whylen, "no complete PROXY header within %d s",
			    conf.ic_pp_timeout / 1000);
			break;
		}
		pfd.fd = fd;
		pfd.events = POLLIN | POLLRDHUP;
		pfd.revents = 0;
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
			snprintf(why, whylen, "poll: %s", strerror(errno));
			break;
		}
		if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))
			eof = 1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	return rc;
}

/*
 * OpenSSL info callback: at the start of the handshake, before OpenSSL
 * reads a byte, take the PROXY header off the socket.  On failure the
 * socket is shut down, so the handshake ends with EOF and evhttp closes
 * the connection.
 */
static void
pp_info_cb(const SSL *cssl, int where, int ret)
{
	SSL *ssl = (SSL *)(uintptr_t)cssl;	/* ex_data wants a mutable SSL */
	struct proxyproto_info pi;
	struct is_pp *pp;
	char why[128], addr[INET6_ADDRSTRLEN], peer[64];
	int fd;

	if (!(where & SSL_CB_HANDSHAKE_START))
		return;
	if ((pp = SSL_get_ex_data(ssl, is_pp_index)) != NULL && pp->pp_done)
		return;
	fd = SSL_get_fd(ssl);
	if (pp == NULL) {
		if ((pp = calloc(1, sizeof(*pp))) == NULL || !SSL_set_ex_data(ssl, is_pp_index, pp)) {
			free(pp);
			log_warnx("PROXY header: out of memory; closing");
			(void)shutdown(fd, SHUT_RDWR);
			return;
		}
	}
	pp->pp_done = 1;
	if (pp_read(fd, &pi, why, sizeof(why)) < 0) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
			snprintf(peer, sizeof(peer), "?");
		else
			addr_str((struct sockaddr *)&ss, peer, sizeof(peer));
		log_warnx("connection from %s: %s; closing", peer, why);
		(void)shutdown(fd, SHUT_RDWR);
		return;
	}
	if (pi.pi_local)
		return;
	if (pi.pi_src.ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)&pi.pi_src;

		inet_ntop(AF_INET, &s->sin_addr, addr, sizeof(addr));
		snprintf(pp->pp_client, sizeof(pp->pp_client), "%s:%u", addr, ntohs(s->sin_port));
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&pi.pi_src;

		inet_ntop(AF_INET6, &s->sin6_addr, addr, sizeof(addr));
		snprintf(pp->pp_client, sizeof(pp->pp_client), "[%s]:%u", addr,
		    ntohs(s->sin6_port));
	}
	log_debug("PROXY header: client %s, authority %s", pp->pp_client,
	    pi.pi_authority[0] ? pi.pi_authority : "-");
}

static void
pp_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	free(ptr);
}

/* The client address the connection's PROXY header gave, or NULL. */
static const char *
pp_client(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
	SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
	struct is_pp *pp;

	if (conf.ic_pp == PROXYPROTO_OFF || ssl == NULL ||
	    (pp = SSL_get_ex_data(ssl, is_pp_index)) == NULL || pp->pp_client[0] == '\0')
		return NULL;
	return pp->pp_client;
}

/*
 * A server context from IS_CERT_FILE and IS_KEY_FILE: at start, and again
 * at each SIGHUP (is_reload).  NULL with the variable, the file and the
 * reason in err.
 */
static SSL_CTX *
tls_build(char *err, size_t errlen)
{
	SSL_CTX *ctx;
	FILE *f;

	/* Check readability first so the one-line reason names the file. */
	if ((f = fopen(conf.ic_cert, "r")) == NULL) {
		snprintf(err, errlen, "IS_CERT_FILE: certificate %s: %s", conf.ic_cert,
		    strerror(errno));
		return NULL;
	}
	fclose(f);
	if ((f = fopen(conf.ic_key, "r")) == NULL) {
		snprintf(err, errlen, "IS_KEY_FILE: key %s: %s", conf.ic_key, strerror(errno));
		return NULL;
	}
	fclose(f);

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "SSL_CTX_new: %s", ssl_errstr());
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/* Session tickets stay on (OpenSSL default); the cache serves TLS 1.2 ids. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"internal-server", 15);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (conf.ic_pp != PROXYPROTO_OFF)
		SSL_CTX_set_info_callback(ctx, pp_info_cb);
	if (SSL_CTX_use_certificate_chain_file(ctx, conf.ic_cert) != 1)
		snprintf(err, errlen, "IS_CERT_FILE: certificate %s: %s", conf.ic_cert,
		    ssl_errstr());
	else if (SSL_CTX_use_PrivateKey_file(ctx, conf.ic_key, SSL_FILETYPE_PEM) != 1)
		snprintf(err, errlen, "IS_KEY_FILE: key %s: %s", conf.ic_key, ssl_errstr());
	else if (SSL_CTX_check_private_key(ctx) != 1)
		snprintf(err, errlen, "IS_KEY_FILE: key %s does not match certificate %s",
		    conf.ic_key, conf.ic_cert);
	else
		return ctx;
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * Main thread, at SIGHUP: read the certificate and key files again.  New
 * connections get the new context; live ones keep theirs (each SSL holds a
 * reference to the context it was made from).  A file that cannot be read
 * or does not match keeps the old context.
 */
static void
is_reload(void)
{
	SSL_CTX *ctx, *old;
	char err[1024], fp_old[65], fp_new[65];

	if ((ctx = tls_build(err, sizeof(err))) == NULL) {
		log_warnx("reload failed, keeping the old certificate: %s", err);
		return;
	}
	tls_ctx_fingerprint(ctx, fp_new);
	pthread_mutex_lock(&is_ctx_lock);
	old = is_ssl_ctx;
	is_ssl_ctx = ctx;
	pthread_mutex_unlock(&is_ctx_lock);
	tls_ctx_fingerprint(old, fp_old);
	SSL_CTX_free(old);
	if (strcmp(fp_old, fp_new) == 0)
		log_info("reloaded certificate: unchanged (%s)", conf.ic_cert);
	else
		log_info("reloaded certificate: %s, leaf SHA-256 %s", conf.ic_cert, fp_new);
}

static void
reply(struct evhttp_request *req, int code, const char *reason, const char *type,
    const void *body, size_t len)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	evbuffer_add(out, body, len);
	evhttp_send_reply(req, code, reason, NULL);
}

#define reply_json(req, code, reason, msg) \
	reply((req), (code), (reason), "application/json", (msg), sizeof(msg) - 1)

/*
 * Every connection that served a request ends here (evhttp's close callback,
 * set per request), with arg the /bytes answer still in flight or NULL.
 */
static void
conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	struct is_stream *st = arg;
	SSL *ssl;

	if (st != NULL) {
		log_debug("/bytes: connection closed with %" PRIu64 " bytes left",
		    st->st_left);
		/*
		 * A write error detached the request from the connection
		 * (libevent keeps it for us); ending it frees it.  On a server
		 * shutdown the request is still attached and the connection
		 * frees it.
		 */
		if (evhttp_request_get_connection(st->st_req) == NULL)
			evhttp_send_reply_end(st->st_req);
		evbuffer_free(st->st_buf);
		free(st);
		return;
	}
	/*
	 * evhttp closes without a TLS close_notify; send one so a client
	 * reading to EOF sees a clean end.  The socket is non-blocking and
	 * idle here, so this never waits; a failure (peer gone) is harmless,
	 * but its errors must not stay queued for the next connection.
	 */
	ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
	if (ssl != NULL && SSL_is_init_finished(ssl) &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		SSL_shutdown(ssl);
	ERR_clear_error();
}

/* The previous chunk left the output buffer: queue the next one, or finish. */
static void
bytes_next(struct evhttp_connection *evcon, void *arg)
{
	struct is_stream *st = arg;
	struct evhttp_request *req = st->st_req;
	size_t n;

	if (st->st_left == 0) {
		evhttp_connection_set_closecb(st->st_evcon, conn_closed, NULL);
		evbuffer_free(st->st_buf);
		free(st);
		evhttp_send_reply_end(req);
		return;
	}
	n = st->st_left < IS_CHUNK ? st->st_left : IS_CHUNK;
	/* By reference: the static pattern is never copied into the evbuffer. */
	evbuffer_add_reference(st->st_buf, is_pattern + st->st_off % IS_PERIOD, n, NULL, NULL);
	st->st_left -= n;
	st->st_off += n;
	/* Moves st_buf's contents to the output; bytes_next runs again once it drained. */
	evhttp_send_reply_chunk_with_cb(req, st->st_buf, bytes_next, st);
}

static void
handle_bytes(struct evhttp_request *req, const char *arg)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	struct is_stream *st;
	unsigned long long n;
	char *end, len[32];

	errno = 0;
	n = strtoull(arg, &end, 10);
	if (*arg < '0' || *arg > '9' || *end != '\0' || errno != 0 || n > conf.ic_max_bytes) {
		reply_json(req, 400, "Bad Request", MSG_BAD_LENGTH);
		return;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL || (st->st_buf = evbuffer_new()) == NULL) {
		free(st);
		reply_json(req, 503, "Service Unavailable", "{\"message\": \"out of memory\"}");
		return;
	}
	st->st_req = req;
	st->st_evcon = evhttp_request_get_connection(req);
	st->st_left = n;
	/* A Content-Length keeps evhttp from using chunked encoding. */
	snprintf(len, sizeof(len), "%llu", n);
	evhttp_add_header(hdr, "Content-Type", "application/octet-stream");
	evhttp_add_header(hdr, "Content-Length", len);
	evhttp_connection_set_closecb(st->st_evcon, conn_closed, st);
	evhttp_send_reply_start(req, 200, "OK");
	bytes_next(st->st_evcon, st);
}

static void
handle_sha256(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	unsigned char md[EVP_MAX_MD_SIZE];
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	ev_ssize_t n;

	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		reply_json(req, 503, "Service Unavailable", "{\"message\": \"digest failed\"}");
		return;
	}
	/* Hash chain by chain without linearising; draining frees memory early. */
	while ((n = evbuffer_get_contiguous_space(in)) > 0) {
		EVP_DigestUpdate(ctx, evbuffer_pullup(in, n), n);
		evbuffer_drain(in, n);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	reply(req, 200, "OK", "text/plain", hex, 2 * mdlen);
}

/* 1 when buf[0..len) is exactly one JSON value, optionally padded by whitespace. */
static int
json_valid(const char *buf, size_t len)
{
	struct json_tokener *tok;
	struct json_object *obj;
	size_t end;
	int ok = 0;

	if ((tok = json_tokener_new_ex(IS_JSON_DEPTH)) == NULL)
		return 0;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	/* len + 1 passes the terminating NUL: numbers have no other end. */
	obj = json_tokener_parse_ex(tok, buf, (int)len + 1);
	/* The JSON literal null parses to a NULL object: the error code decides. */
	if (json_tokener_get_error(tok) == json_tokener_success) {
		end = json_tokener_get_parse_end(tok);
		while (end < len && strchr(" \t\r\n", buf[end]) != NULL && buf[end] != '\0')
			end++;
		ok = end >= len;
	}
	json_object_put(obj);
	json_tokener_free(tok);
	return ok;
}

static void
handle_echo(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body;

	if (len > conf.ic_max_json) {
		reply_json(req, 413, "Payload Too Large", MSG_TOO_LARGE);
		return;
	}
	/* A NUL after the body lets json-c see the end of input. */
	if (evbuffer_add(in, "", 1) != 0 ||
	    (body = (const char *)evbuffer_pullup(in, -1)) == NULL) {
		reply_json(req, 503, "Service Unavailable", "{\"message\": \"out of memory\"}");
		return;
	}
	if (len == 0 || !json_valid(body, len)) {
		reply_json(req, 400, "Bad Request", MSG_BAD_JSON);
		return;
	}
	evbuffer_remove_buffer(in, evhttp_request_get_output_buffer(req), len);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "application/json");
	evhttp_send_reply(req, 200, "OK", NULL);
}

static void
handle_request(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL, *client;

	if (path == NULL)
		path = "/";
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), conn_closed, NULL);
	log_debug("%s %s", evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" :
	    evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "other", path);
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		if (strncmp(path, "/bytes/", 7) == 0)
			handle_bytes(req, path + 7);
		else if ((client = pp_client(req)) != NULL) {
			char msg[128];

			int n = snprintf(msg, sizeof(msg),
			    "{\"message\": \"success\", \"client\": \"%s\"}", client);

			reply(req, 200, "OK", "application/json", msg, (size_t)n);
		} else
			reply_json(req, 200, "OK", MSG_SUCCESS);
		break;
	case EVHTTP_REQ_POST:
		if (strcmp(path, "/sha256") == 0)
			handle_sha256(req);
		else
			handle_echo(req);
		break;
	default:
		/* Only GET and POST exist here. */
		reply_json(req, 405, "Method Not Allowed", "{\"message\": \"method not allowed\"}");
		break;
	}
}

/* evhttp asks for each accepted connection's bufferevent: a TLS server side. */
static struct bufferevent *
tls_bevcb(struct event_base *base, void *arg)
{
	struct bufferevent *bev;
	SSL *ssl;

	/* The lock only spans SSL_new, which takes its own reference to the
	 * context: a reload may free the old one right after. */
	pthread_mutex_lock(&is_ctx_lock);
	ssl = SSL_new(is_ssl_ctx);
	pthread_mutex_unlock(&is_ctx_lock);
	if (ssl == NULL) {
		log_warnx("SSL_new: %s", ssl_errstr());
		return NULL;
	}
	/* fd -1: evhttp sets the accepted socket right after this returns. */
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* Clients often close without close_notify; that is not an error here. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static void *
worker_main(void *arg)
{
	struct is_worker *w = arg;

	log_debug("worker %d running", w->w_id);
	event_base_dispatch(w->w_base);
	evhttp_free(w->w_http);		/* closes the listener and every connection */
	/*
	 * Freed bufferevents that still had a deferred callback queued keep a
	 * reference until it runs: one last pass lets them go.
	 */
	event_base_loop(w->w_base, EVLOOP_NONBLOCK);
	log_debug("worker %d stopped", w->w_id);
	return NULL;
}

static void
worker_setup(struct is_worker *w, const char *hostport)
{
	struct timeval tv = { conf.ic_timeout, 0 };
	char err[256];
	int one = 1;

	if ((w->w_fd = listen_tcp_opt(hostport, 1024, 1, err, sizeof(err))) < 0)
		fatalx("IS_BIND_ADDRESS: cannot listen on %s", err);
	/*
	 * Accepted sockets inherit TCP_NODELAY from the listener on Linux;
	 * without it a reply written as two TLS records waits for the
	 * client's delayed ACK (about 40 ms per keep-alive request).
	 */
	if (setsockopt(w->w_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_warn("setsockopt TCP_NODELAY");
	if ((w->w_base = event_base_new()) == NULL || (w->w_http = evhttp_new(w->w_base)) == NULL)
		fatalx("event_base_new/evhttp_new failed");
	/* Every method reaches handle_request, which answers 405 in JSON. */
	evhttp_set_allowed_methods(w->w_http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
	    EVHTTP_REQ_PATCH);
	evhttp_set_max_body_size(w->w_http, (ev_ssize_t)conf.ic_max_body);
	evhttp_set_max_headers_size(w->w_http, 64 * 1024);
	evhttp_set_timeout_tv(w->w_http, &tv);
	evhttp_set_bevcb(w->w_http, tls_bevcb, NULL);
	evhttp_set_gencb(w->w_http, handle_request, NULL);
	if (evhttp_accept_socket(w->w_http, w->w_fd) != 0)
		fatalx("evhttp_accept_socket failed");
}

/*
 * SO_REUSEPORT would let us silently share the port with a stale server of
 * the same user: a plain bind first proves the port is ours.  Port 0 always is.
 */
static int
sock_port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void
bind_probe(const char *hostport)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char err[256];
	int fd, one = 1;

	if (addr_parse(hostport, &ss, &sl, err, sizeof(err)) < 0)
		conf_fail("IS_BIND_ADDRESS=%s: %s", hostport, err);
	if (sock_port_of(&ss) == 0)
		return;
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		fatal("socket");
	/* SO_REUSEADDR still refuses a port someone listens on; it only skips TIME_WAIT. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0)
		fatalx("IS_BIND_ADDRESS: cannot listen on %s: %s", hostport,
		    errno == EADDRINUSE ? "address already in use" : strerror(errno));
	close(fd);
}

/*
 * The address every worker binds: the configured one, except that port 0
 * becomes the port the first worker got, so all of them share it.
 */
static void
bind_resolved(const char *hostport, int port, char *out, size_t len)
{
	const char *colon = strrchr(hostport, ':');
	int hostlen = colon != NULL ? (int)(colon - hostport) : (int)strlen(hostport);

	snprintf(out, len, "%.*s:%d", hostlen, hostport, port);
}

int
main(int argc, char *argv[])
{
	struct is_worker *workers;
	char hostport[300];
	sigset_t set;
	int sig, port;

	log_init("internal-server", LOG_LVL_INFO);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("internal-server %s\n", HP_VERSION);
			return 0;
		}
		conf_fail("unknown argument %s (see --help)", argv[i]);
	}
	conf_load();
	if (conf.ic_pp != PROXYPROTO_OFF &&
	    (is_pp_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, pp_ex_free)) < 0)
		conf_fail("SSL_get_ex_new_index: %s", ssl_errstr());
	{
		char err[1024];

		if ((is_ssl_ctx = tls_build(err, sizeof(err))) == NULL)
			conf_fail("%s", err);
	}
	for (size_t i = 0; i < sizeof(is_pattern); i++)
		is_pattern[i] = (uint8_t)(i % IS_PERIOD);

	/* Writing to a peer that vanished must give EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	/* Block the stop and reload signals in every thread; main waits for
	 * them below. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (evthread_use_pthreads() != 0)
		fatalx("evthread_use_pthreads failed");

	if ((workers = calloc(conf.ic_threads, sizeof(*workers))) == NULL)
		fatal("calloc");
	bind_probe(conf.ic_bind);
	snprintf(hostport, sizeof(hostport), "%s", conf.ic_bind);
	for (long i = 0; i < conf.ic_threads; i++) {
		workers[i].w_id = i;
		worker_setup(&workers[i], hostport);
		if (i == 0) {
			if ((port = sock_port(workers[0].w_fd)) < 0)
				fatal("getsockname");
			bind_resolved(conf.ic_bind, port, hostport, sizeof(hostport));
		}
	}
	for (long i = 0; i < conf.ic_threads; i++)
		if ((errno = pthread_create(&workers[i].w_thread, NULL, worker_main,
		    &workers[i])) != 0)
			fatal("pthread_create");
	log_info("listening on %s (%ld threads, TLS 1.2-1.3)", hostport, conf.ic_threads);

	/* SIGHUPs that arrive during a reload are pending once: a storm costs
	 * a reload at a time, never a queue of them. */
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			break;
		is_reload();
	}
	log_info("stopping on %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
	for (long i = 0; i < conf.ic_threads; i++)
		event_base_loopbreak(workers[i].w_base);
	for (long i = 0; i < conf.ic_threads; i++) {
		pthread_join(workers[i].w_thread, NULL);
		event_base_free(workers[i].w_base);
	}
	free(workers);
	SSL_CTX_free(is_ssl_ctx);
	libevent_global_shutdown();
	return 0;
}
