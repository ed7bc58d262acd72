/* jsonrpc.c - JSON-RPC 2.0 over HTTP/1.1 POST on libevent evhttp, with TLS
 * through bufferevent_openssl.  Server and client each live on one
 * event_base and are used from that base's thread only.
 *
 * Server call life (struct jsonrpc_call):
 *   evhttp reads a whole request and calls server_request(); a valid one
 *   becomes a call handed to the handler.  evhttp disables reading while a
 *   request waits for its reply, so a peer that goes away is only noticed
 *   when the reply is written (the write fails and evhttp frees the
 *   connection itself).  The connection's close callback (server_conn_closed)
 *   fires when evhttp frees the connection while the call is pending
 *   (evhttp_free, or an error event): jc_req is then cleared unless evhttp
 *   detached the request from the connection first (it does that on EOF and
 *   timeouts, and the detached request is freed by evhttp_send_reply).  The
 *   close callback is removed before the reply is sent, so it never points
 *   at a freed call.
 *
 * Connections of a TLS server (struct server_conn, one per accepted socket,
 * attached to its SSL as ex_data and freed with it): at most max_connections
 * are served at once; one more is accepted and shut down at the next loop
 * turn (a rate-limited warning says so).  Each must finish its TLS handshake
 * within handshake_timeout of the accept, however slowly it trickles bytes
 * (the idle timeout alone would let it hold a slot for ever); the deadline
 * shuts the socket down, so evhttp sees EOF and frees the connection itself.
 * The slot is given back when evhttp's bufferevent frees the SSL.
 *
 * Limits: a request body over max_body (declared or chunked) is refused by
 * evhttp itself before server_request() runs: HTTP 413 with evhttp's own
 * small HTML body, then the connection is closed; the server goes on serving
 * other connections.  evhttp offers no hook to put a JSON-RPC error there.
 *
 * Client connection states (struct rpc_conn, one request in flight at most):
 *   CONN_BUSY   a request is in flight (the first one also connects)
 *   CONN_IDLE   connected, keep-alive, free for the next call
 *   CONN_DEAD   closed or failed; freed by client_run().  An evhttp
 *               connection over bufferevent_openssl cannot reconnect, so a
 *               closed connection is never reused.
 * Only one request is ever queued on an evhttp_connection: evhttp retries the
 * remaining queue on a failed connection by reconnecting it, which is the
 * case that breaks with TLS.  Calls wait in the client's own queue instead.
 *
 * Client call states (struct rpc_req):
 *   RQ_QUEUED   waiting for a connection (c->cl_queue)
 *   RQ_SENT     in flight on rq_conn
 *   RQ_DONE     answered or failed, callback pending (c->cl_done)
 * Callbacks only run from client_run() (an event of the client) or from
 * jsonrpc_client_free(), never from inside jsonrpc_client_call() or a
 * libevent callback, so a callback may free the client. */
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "jsonrpc.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define JSONRPC_MAX_HEADERS	(16 * 1024)	/* request/response header bytes */
#define JSONRPC_MAX_METHOD	200		/* method name length */
#define JSONRPC_MAX_ID		1024		/* string id length */
#define JSONRPC_JSON_DEPTH	64		/* nesting limit of a body */
#define JSONRPC_MAX_CONNS	1024		/* default max_connections */

/* Server: TLS connections accepted within max_connections or refused over
 * it.  Client: connections opened and open now; calls by method (as sent,
 * "<operator>.<method>"; label sets capped, see metrics.h) and outcome (ok
 * or the JSON-RPC error code), and their latency from the call to the
 * callback. */
METRIC_COUNTER(m_srv_conns, "jsonrpc_server_connections_total",
    "JSON-RPC server connections, by result (accepted, refused: max_connections).", "result")
METRIC_GAUGE(m_srv_open, "jsonrpc_server_connections",
    "JSON-RPC server connections open within max_connections.")
METRIC_COUNTER(m_cli_conns, "jsonrpc_client_connections_total",
    "JSON-RPC client connections opened.")
METRIC_GAUGE(m_cli_open, "jsonrpc_client_connections", "JSON-RPC client connections open.")
METRIC_COUNTER(m_cli_calls, "jsonrpc_client_calls_total",
    "JSON-RPC calls made, by method and outcome (ok or the error code).", "method", "outcome")
static const double jsonrpc_bounds[] = METRIC_LATENCY_BOUNDS;
METRIC_HISTOGRAM(m_cli_latency, "jsonrpc_client_call_duration_seconds",
    "Time from a JSON-RPC call to its answer (or error), by method.", jsonrpc_bounds, "method")
/* Server: calls answered, by method (as received) and outcome, and the time
 * from the request's arrival to its answer. */
METRIC_COUNTER(m_srv_calls, "jsonrpc_server_calls_total",
    "JSON-RPC calls answered by a server, by method and outcome (ok or the error code).",
    "method", "outcome")
METRIC_HISTOGRAM(m_srv_latency, "jsonrpc_server_call_duration_seconds",
    "Time from a JSON-RPC request's arrival to its answer, by method.", jsonrpc_bounds,
    "method")
#define JSONRPC_HANDSHAKE	10.0		/* default handshake_timeout, s */
#define JSONRPC_WARN_EVERY	10.0		/* s between "over the cap" warnings */

/* ---- shared helpers ---- */

struct json_object *
jsonrpc_error_new(int code, const char *fmt, ...)
{
	struct json_object *e;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e = json_object_new_object();
	json_object_object_add(e, "code", json_object_new_int(code));
	json_object_object_add(e, "message", json_object_new_string(msg));
	return e;
}

static double
jsonrpc_default(double v, double def)
{
	return v > 0 ? v : def;
}


/* One JSON value filling the whole buffer (trailing white space allowed),
 * parsed strictly; NULL when it is not valid JSON. */
static struct json_object *
jsonrpc_parse(const char *buf, size_t len, int *ok)
{
	struct json_tokener *tok;
	struct json_object *o;
	size_t end;

	*ok = 0;
	if (len == 0 || len > INT32_MAX)
		return NULL;
	if ((tok = json_tokener_new_ex(JSONRPC_JSON_DEPTH)) == NULL)
		return NULL;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, buf, (int)len);
	if (json_tokener_get_error(tok) == json_tokener_success) {
		end = json_tokener_get_parse_end(tok);
		while (end < len && strchr(" \t\r\n", buf[end]) != NULL && buf[end] != '\0')
			end++;
		*ok = end == len;
	}
	json_tokener_free(tok);
	if (!*ok) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static const char *
jsonrpc_str(struct json_object *o)
{
	return json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ---- server ---- */

struct server_conn;

struct jsonrpc_server {
	struct event_base	*js_base;
	struct evhttp		*js_http;
	SSL_CTX			*js_ssl_ctx;
	char			*js_path;
	char			*js_name;	/* bind address, for the log */
	int			 js_port;
	jsonrpc_handler_fn	 js_fn;
	void			*js_arg;
	TAILQ_HEAD(, jsonrpc_call) js_calls;	/* handed to the handler */
	TAILQ_HEAD(, server_conn) js_conns;	/* every live TLS connection */
	int			 js_nconn;	/* of them, those within the cap */
	int			 js_maxconn;
	struct timeval		 js_handshake;
	double			 js_warned;	/* last "over the cap" warning */
	unsigned long		 js_refused;	/* refused since then */
};

/* One accepted TLS connection; owned by its SSL (ex_data), freed with it. */
struct server_conn {
	TAILQ_ENTRY(server_conn) sc_entry;
	struct jsonrpc_server	*sc_server;	/* NULL once the server is freed */
	SSL			*sc_ssl;
	struct event		*sc_deadline;	/* handshake deadline, or now when over */
	int			 sc_over;	/* over the cap: shut down at once */
};

struct jsonrpc_call {
	TAILQ_ENTRY(jsonrpc_call) jc_entry;
	struct jsonrpc_server	*jc_server;	/* NULL once the server is freed */
	struct evhttp_request	*jc_req;	/* NULL once evhttp freed it */
	struct evhttp_connection *jc_evcon;	/* NULL once closed */
	struct json_object	*jc_request;	/* parsed body; owns the rest */
	struct json_object	*jc_id;		/* borrowed; NULL for none */
	struct json_object	*jc_params;	/* own reference */
	const char		*jc_method;
	double			 jc_start;	/* now_mono() at arrival */
};

static void
server_send(struct evhttp_request *req, int code, const char *reason,
    struct json_object *body)
{
	struct evbuffer *buf;
	const char *s = jsonrpc_str(body);

	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json");
	if ((buf = evbuffer_new()) == NULL || evbuffer_add(buf, s, strlen(s)) < 0) {
		/* Out of memory: evhttp still answers and frees the request. */
		if (buf != NULL)
			evbuffer_free(buf);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_send_reply(req, code, reason, buf);
	evbuffer_free(buf);
}

/* {"jsonrpc":"2.0",<key>:val,"id":id}; val is stolen, id borrowed. */
static struct json_object *
server_envelope(const char *key, struct json_object *val, struct json_object *id)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(o, key, val);
	json_object_object_add(o, "id", json_object_get(id));
	return o;
}

static void
server_send_error(struct evhttp_request *req, int http, const char *reason,
    struct json_object *id, int code, const char *msg)
{
	struct json_object *o;

	o = server_envelope("error", jsonrpc_error_new(code, "%s", msg), id);
	server_send(req, http, reason, o);
	json_object_put(o);
}

/* "application/json", any case, optionally followed by parameters. */
static int
server_is_json(const char *ct)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;

	if (ct == NULL)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, want, n) != 0)
		return 0;
	ct += n;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

/* Checks the request object; returns NULL or the reason it is invalid, with
 * *code the JSON-RPC error code. */
static const char *
server_validate(struct json_object *o, int *code)
{
	struct json_object *v;
	size_t n;

	*code = JSONRPC_INVALID_REQUEST;
	if (json_object_is_type(o, json_type_array))
		return "invalid request: batch requests are not supported";
	if (!json_object_is_type(o, json_type_object))
		return "invalid request: not a JSON object";
	if (!json_object_object_get_ex(o, "jsonrpc", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), "2.0") != 0)
		return "invalid request: jsonrpc must be \"2.0\"";
	if (json_object_object_get_ex(o, "id", &v) && v != NULL) {
		if (json_object_is_type(v, json_type_string)) {
			if (json_object_get_string_len(v) > JSONRPC_MAX_ID)
				return "invalid request: id too long";
		} else if (!json_object_is_type(v, json_type_int))
			return "invalid request: id must be a string or an integer";
	}
	if (!json_object_object_get_ex(o, "method", &v) ||
	    !json_object_is_type(v, json_type_string))
		return "invalid request: method must be a string";
	n = (size_t)json_object_get_string_len(v);
	if (n == 0 || n > JSONRPC_MAX_METHOD || strlen(json_object_get_string(v)) != n)
		return "invalid request: method must have 1 to 200 characters";
	if (json_object_object_get_ex(o, "params", &v) && v != NULL &&
	    !json_object_is_type(v, json_type_object)) {
		*code = JSONRPC_INVALID_PARAMS;
		return "invalid params: params must be an object";
	}
	return NULL;
}

const char *
jsonrpc_parse_request(const char *body, size_t len, struct json_object **request,
    struct json_object **id, int *code)
{
	struct json_object *o;
	int ok;

	*request = NULL;
	*id = NULL;
	*code = JSONRPC_PARSE_ERROR;
	o = jsonrpc_parse(body, len, &ok);
	if (!ok)
		return "parse error";
	*request = o;
	if (json_object_is_type(o, json_type_object) &&
	    json_object_object_get_ex(o, "id", id) &&
	    !json_object_is_type(*id, json_type_string) &&
	    !json_object_is_type(*id, json_type_int))
		*id = NULL;	/* never echo an id of the wrong type */
	return server_validate(o, code);
}

static void
server_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct jsonrpc_call *c = arg;

	/* evhttp frees the requests still queued on the connection right after
	 * this callback; a request it detached first stays ours to answer. */
	if (c->jc_req != NULL && evhttp_request_get_connection(c->jc_req) == evcon)
		c->jc_req = NULL;
	c->jc_evcon = NULL;
}

static void
server_request(struct evhttp_request *req, void *arg)
{
	struct jsonrpc_server *s = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct json_object *o, *id = NULL, *params;
	struct jsonrpc_call *c;
	const char *why;
	size_t len;
	int code;

	if (s->js_ssl_ctx != NULL &&
	    bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(evcon)) == NULL) {
		/* server_bev() could not make a TLS bufferevent: never serve
		 * plain text on a TLS port. */
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (path == NULL || strcmp(path, s->js_path) != 0) {
		o = json_object_new_object();
		json_object_object_add(o, "message", json_object_new_string("not found"));
		server_send(req, HTTP_NOTFOUND, "Not Found", o);
		json_object_put(o);
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
		server_send_error(req, 405, "Method Not Allowed", NULL,
		    JSONRPC_INVALID_REQUEST, "invalid request: HTTP method must be POST");
		return;
	}
	if (!server_is_json(evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type"))) {
		server_send_error(req, HTTP_BADREQUEST, "Bad Request", NULL,
		    JSONRPC_PARSE_ERROR, "JSON required");
		return;
	}
	len = evbuffer_get_length(in);
	if ((why = jsonrpc_parse_request((const char *)evbuffer_pullup(in, -1), len,
	    &o, &id, &code)) != NULL) {
		server_send_error(req, HTTP_BADREQUEST, "Bad Request", id, code, why);
		json_object_put(o);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		server_send_error(req, HTTP_INTERNAL, "Internal Server Error", id,
		    JSONRPC_INTERNAL_ERROR, "out of memory");
		json_object_put(o);
		return;
	}
	c->jc_server = s;
	c->jc_req = req;
	c->jc_evcon = evcon;
	c->jc_request = o;
	c->jc_id = id;
	c->jc_method = json_object_get_string(json_object_object_get(o, "method"));
	c->jc_start = now_mono();
	if (json_object_object_get_ex(o, "params", &params) && params != NULL)
		c->jc_params = json_object_get(params);
	else
		c->jc_params = json_object_new_object();
	TAILQ_INSERT_TAIL(&s->js_calls, c, jc_entry);
	evhttp_connection_set_closecb(evcon, server_conn_closed, c);
	s->js_fn(s->js_arg, c);
}

static int server_conn_idx = -1;
static pthread_once_t server_conn_once = PTHREAD_ONCE_INIT;

/* ex_data free hook: runs for every SSL freed in the process; ptr is NULL
 * but for the server connections. */
static void
server_conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	struct server_conn *sc = ptr;
	struct jsonrpc_server *s;

	if (sc == NULL)
		return;
	if ((s = sc->sc_server) != NULL) {
		TAILQ_REMOVE(&s->js_conns, sc, sc_entry);
		if (!sc->sc_over) {
			s->js_nconn--;
			metric_dec(&m_srv_open);
		}
	}
	if (sc->sc_deadline != NULL)
		event_free(sc->sc_deadline);
	free(sc);
}

static void
server_conn_init(void)
{
	server_conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, server_conn_free);
}

/* Handshake deadline, or the turn after an accept over the cap.  The socket
 * is shut down, not closed: evhttp owns it and frees the connection on the
 * EOF that follows. */
static void
server_conn_deadline(evutil_socket_t unused, short what, void *arg)
{
	struct server_conn *sc = arg;
	int fd;

	if (!sc->sc_over && SSL_is_init_finished(sc->sc_ssl))
		return;
	if ((fd = SSL_get_fd(sc->sc_ssl)) < 0)
		return;
	if (!sc->sc_over)
		log_debug("jsonrpc server %s: TLS handshake not done in time, closing",
		    sc->sc_server != NULL ? sc->sc_server->js_name : "?");
	shutdown(fd, SHUT_RDWR);
}

/* Registers a new connection on ssl; -1 when out of memory. */
static int
server_conn_new(struct jsonrpc_server *s, SSL *ssl)
{
	static const struct timeval now = { 0, 0 };
	struct server_conn *sc;
	double t;

	if (server_conn_idx < 0 || (sc = calloc(1, sizeof(*sc))) == NULL)
		return -1;
	sc->sc_server = s;
	sc->sc_ssl = ssl;
	sc->sc_over = s->js_nconn >= s->js_maxconn;
	if ((sc->sc_deadline = evtimer_new(s->js_base, server_conn_deadline, sc)) == NULL ||
	    !SSL_set_ex_data(ssl, server_conn_idx, sc)) {
		if (sc->sc_deadline != NULL)
			event_free(sc->sc_deadline);
		free(sc);
		return -1;
	}
	TAILQ_INSERT_TAIL(&s->js_conns, sc, sc_entry);
	metric_inc(&m_srv_conns, sc->sc_over ? "refused" : "accepted");
	if (!sc->sc_over) {
		s->js_nconn++;
		metric_inc(&m_srv_open);
	} else {
		s->js_refused++;
		t = now_mono();
		if (s->js_warned == 0 || t - s->js_warned >= JSONRPC_WARN_EVERY) {
			log_warnx("jsonrpc server %s: %d connections (max_connections), "
			    "refused %lu new ones", s->js_name, s->js_nconn, s->js_refused);
			s->js_warned = t;
			s->js_refused = 0;
		}
	}
	evtimer_add(sc->sc_deadline, sc->sc_over ? &now : &s->js_handshake);
	return 0;
}

static struct bufferevent *
server_bev(struct event_base *base, void *arg)
{
	struct jsonrpc_server *s = arg;
	struct bufferevent *bev;
	SSL *ssl;

	if ((ssl = SSL_new(s->js_ssl_ctx)) == NULL || server_conn_new(s, ssl) == -1) {
		log_warnx("jsonrpc server: SSL_new failed");
		SSL_free(ssl);
		/* evhttp then uses a plain bufferevent, refused in
		 * server_request(). */
		return NULL;
	}
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);		/* frees its server_conn too */
		return NULL;
	}
	/* A client closing without close_notify is ordinary, not an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

struct jsonrpc_server *
jsonrpc_server_new(struct event_base *base, const struct jsonrpc_server_conf *conf,
    jsonrpc_handler_fn fn, void *arg, char *err, size_t errlen)
{
	struct jsonrpc_server *s;
	struct timeval tv;
	int fd, one = 1;

	/* A peer closing mid-write must give EPIPE, not kill the process. */
	signal(SIGPIPE, SIG_IGN);
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	TAILQ_INIT(&s->js_calls);
	TAILQ_INIT(&s->js_conns);
	s->js_base = base;
	s->js_fn = fn;
	s->js_arg = arg;
	s->js_maxconn = conf->max_connections > 0 ? conf->max_connections : JSONRPC_MAX_CONNS;
	s->js_handshake = tv_seconds(jsonrpc_default(conf->handshake_timeout, JSONRPC_HANDSHAKE));
	pthread_once(&server_conn_once, server_conn_init);
	if ((s->js_path = strdup(conf->path != NULL ? conf->path : "/jsonrpc")) == NULL ||
	    (s->js_name = strdup(conf->bind_address != NULL ? conf->bind_address : "?")) == NULL ||
	    (s->js_http = evhttp_new(base)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((fd = listen_tcp_opt(conf->bind_address, 128, conf->reuse_port, err, errlen)) < 0)
		goto fail;
	s->js_port = sock_port(fd);
	/* Accepted sockets inherit it: a TLS reply is several records, and
	 * Nagle would hold the last one for the peer's delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (evhttp_accept_socket_with_handle(s->js_http, fd) == NULL) {
		snprintf(err, errlen, "%s: cannot accept", conf->bind_address);
		close(fd);
		goto fail;
	}
	if (conf->ssl_ctx != NULL) {
		SSL_CTX_up_ref(conf->ssl_ctx);
		s->js_ssl_ctx = conf->ssl_ctx;
		evhttp_set_bevcb(s->js_http, server_bev, s);
	}
	evhttp_set_max_body_size(s->js_http,
	    (ev_ssize_t)(conf->max_body > 0 ? conf->max_body : 1024 * 1024));
	evhttp_set_max_headers_size(s->js_http, JSONRPC_MAX_HEADERS);
	tv = tv_seconds(jsonrpc_default(conf->timeout, 30));
	evhttp_set_timeout_tv(s->js_http, &tv);
	/* Every method reaches server_request(), which answers 404 or 405
	 * itself instead of evhttp's 501. */
	evhttp_set_allowed_methods(s->js_http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	evhttp_set_gencb(s->js_http, server_request, s);
	return s;
fail:
	jsonrpc_server_free(s);
	return NULL;
}

int
jsonrpc_server_port(const struct jsonrpc_server *s)
{
	return s->js_port;
}

void
jsonrpc_server_update(struct jsonrpc_server *s, const struct jsonrpc_server_conf *conf)
{
	struct timeval tv;

	/* evhttp copies the body limit and the timeout into each connection
	 * it creates, and server_bev() takes the context per connection: live
	 * connections keep what they started with. */
	if (conf->ssl_ctx != NULL && s->js_ssl_ctx != NULL) {
		SSL_CTX_up_ref(conf->ssl_ctx);
		SSL_CTX_free(s->js_ssl_ctx);
		s->js_ssl_ctx = conf->ssl_ctx;
	}
	s->js_maxconn = conf->max_connections > 0 ? conf->max_connections : JSONRPC_MAX_CONNS;
	s->js_handshake = tv_seconds(jsonrpc_default(conf->handshake_timeout, JSONRPC_HANDSHAKE));
	evhttp_set_max_body_size(s->js_http,
	    (ev_ssize_t)(conf->max_body > 0 ? conf->max_body : 1024 * 1024));
	tv = tv_seconds(jsonrpc_default(conf->timeout, 30));
	evhttp_set_timeout_tv(s->js_http, &tv);
}

void
jsonrpc_server_free(struct jsonrpc_server *s)
{
	struct jsonrpc_call *c;
	struct server_conn *sc;

	if (s == NULL)
		return;
	/* Pending calls lose their connection (evhttp_free frees it with its
	 * request); the handler may still answer them, which only frees them. */
	while ((c = TAILQ_FIRST(&s->js_calls)) != NULL) {
		TAILQ_REMOVE(&s->js_calls, c, jc_entry);
		if (c->jc_evcon != NULL) {
			evhttp_connection_set_closecb(c->jc_evcon, NULL, NULL);
			server_conn_closed(c->jc_evcon, c);
		}
		c->jc_server = NULL;
	}
	/* libevent frees a bufferevent, hence its SSL, from a later loop turn
	 * (or event_base_free): cut the connections loose first. */
	while ((sc = TAILQ_FIRST(&s->js_conns)) != NULL) {
		TAILQ_REMOVE(&s->js_conns, sc, sc_entry);
		event_free(sc->sc_deadline);
		sc->sc_deadline = NULL;
		sc->sc_server = NULL;
	}
	if (s->js_http != NULL)
		evhttp_free(s->js_http);
	SSL_CTX_free(s->js_ssl_ctx);
	free(s->js_path);
	free(s->js_name);
	free(s);
}

const char *
jsonrpc_call_method(const struct jsonrpc_call *c)
{
	return c->jc_method;
}

struct json_object *
jsonrpc_call_params(const struct jsonrpc_call *c)
{
	return c->jc_params;
}

SSL *
jsonrpc_call_ssl(const struct jsonrpc_call *c)
{
	if (c->jc_evcon == NULL || c->jc_server == NULL || c->jc_server->js_ssl_ctx == NULL)
		return NULL;
	return bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(c->jc_evcon));
}

/* Sends the envelope (stolen) if the request still exists, frees the call. */
static void
call_finish(struct jsonrpc_call *c, int http, const char *reason, struct json_object *o)
{
	if (c->jc_evcon != NULL)
		evhttp_connection_set_closecb(c->jc_evcon, NULL, NULL);
	/* A detached request (jc_evcon NULL) is freed by evhttp_send_reply. */
	if (c->jc_req != NULL)
		server_send(c->jc_req, http, reason, o);
	else
		log_debug("jsonrpc server: %s: client gone, reply dropped", c->jc_method);
	json_object_put(o);
	if (c->jc_server != NULL)
		TAILQ_REMOVE(&c->jc_server->js_calls, c, jc_entry);
	json_object_put(c->jc_params);
	json_object_put(c->jc_request);
	free(c);
}

/* A call is answered: outcome "ok" or its error code. */
static void
call_count(const struct jsonrpc_call *c, const char *outcome)
{
	const char *method = c->jc_method != NULL ? c->jc_method : "";

	metric_inc(&m_srv_calls, method, outcome);
	metric_observe(&m_srv_latency, now_mono() - c->jc_start, method);
}

void
jsonrpc_call_reply(struct jsonrpc_call *c, struct json_object *result)
{
	call_count(c, "ok");
	call_finish(c, HTTP_OK, "OK", server_envelope("result", result, c->jc_id));
}

void
jsonrpc_call_reply_error(struct jsonrpc_call *c, struct json_object *error)
{
	char code[24];

	if (error == NULL)
		error = jsonrpc_error_new(JSONRPC_INTERNAL_ERROR, "internal error");
	snprintf(code, sizeof(code), "%d",
	    json_object_get_int(json_object_object_get(error, "code")));
	call_count(c, code);
	call_finish(c, HTTP_BADREQUEST, "Bad Request",
	    server_envelope("error", error, c->jc_id));
}

void
jsonrpc_call_error(struct jsonrpc_call *c, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	jsonrpc_call_reply_error(c, jsonrpc_error_new(code, "%s", msg));
}

/* ---- client ---- */

enum rpc_conn_state { CONN_BUSY, CONN_IDLE, CONN_DEAD };
enum rpc_req_state { RQ_QUEUED, RQ_SENT, RQ_DONE };

struct rpc_req;

struct rpc_conn {
	TAILQ_ENTRY(rpc_conn)	 rc_entry;
	struct jsonrpc_client	*rc_client;
	struct evhttp_connection *rc_evcon;
	SSL			*rc_ssl;	/* owned by the bufferevent */
	struct event		*rc_connect_ev;	/* connect deadline */
	struct evbuffer_cb_entry *rc_output_cb;	/* conn_output() */
	struct rpc_req		*rc_req;	/* in flight, or NULL */
	enum rpc_conn_state	 rc_state;
	int			 rc_connected;	/* TCP and TLS handshake done */
	unsigned		 rc_gen;	/* client settings it was made with */
};

struct rpc_req {
	TAILQ_ENTRY(rpc_req)	 rq_entry;	/* cl_queue or cl_done */
	struct jsonrpc_client	*rq_client;
	struct rpc_conn		*rq_conn;	/* RQ_SENT */
	struct evhttp_request	*rq_http;	/* RQ_SENT, owned by evhttp */
	struct event		*rq_timer;	/* call deadline */
	int64_t			 rq_id;
	char			*rq_body;
	jsonrpc_reply_fn	 rq_fn;
	void			*rq_arg;
	struct json_object	*rq_reply;	/* RQ_DONE: parsed response */
	struct json_object	*rq_error;	/* RQ_DONE: error, or NULL */
	int			 rq_httperr;	/* evhttp error, -1 for none */
	int			 rq_errno;
	enum rpc_req_state	 rq_state;
	double			 rq_start;	/* metrics: latency */
	char			 rq_method[METRIC_LABEL_MAX];
};

struct jsonrpc_client {
	struct event_base	*cl_base;
	SSL_CTX			*cl_ssl_ctx;
	char			*cl_host;	/* for connecting, no brackets */
	char			*cl_hostport;	/* Host header and messages */
	char			*cl_uri;	/* path and query */
	char			*cl_name;	/* TLS name to verify */
	int			 cl_port;
	double			 cl_connect_timeout;
	double			 cl_call_timeout;
	int			 cl_pool_size;
	unsigned		 cl_gen;	/* bumped by jsonrpc_client_update() */
	size_t			 cl_max_body;
	int64_t			 cl_next_id;
	struct event		*cl_run_ev;	/* client_run() */
	int			 cl_running;	/* inside client_run() */
	int			 cl_dying;	/* freed during client_run() */
	int			 cl_nconns;
	TAILQ_HEAD(, rpc_conn)	 cl_conns;
	TAILQ_HEAD(, rpc_req)	 cl_queue;
	TAILQ_HEAD(, rpc_req)	 cl_done;
};

static void
client_kick(struct jsonrpc_client *c)
{
	event_active(c->cl_run_ev, EV_TIMEOUT, 0);
}

/* Ends a call with either a parsed response or an error (both stolen);
 * the callback runs from client_run(). */
static void
req_done(struct rpc_req *r, struct json_object *reply, struct json_object *error)
{
	struct jsonrpc_client *c = r->rq_client;

	if (r->rq_state == RQ_QUEUED)
		TAILQ_REMOVE(&c->cl_queue, r, rq_entry);
	if (r->rq_state == RQ_DONE) {
		json_object_put(reply);
		json_object_put(error);
		return;
	}
	evtimer_del(r->rq_timer);
	r->rq_state = RQ_DONE;
	r->rq_conn = NULL;
	r->rq_http = NULL;
	r->rq_reply = reply;
	r->rq_error = error;
	TAILQ_INSERT_TAIL(&c->cl_done, r, rq_entry);
	client_kick(c);
}

static void
req_free(struct rpc_req *r)
{
	if (r->rq_timer != NULL)
		event_free(r->rq_timer);
	json_object_put(r->rq_reply);
	json_object_put(r->rq_error);
	free(r->rq_body);
	free(r);
}

/* Runs the callback of a finished call and frees it. */
static void
req_deliver(struct rpc_req *r)
{
	struct json_object *result = NULL, *code;
	char outcome[24];

	if (r->rq_error == NULL)
		json_object_object_get_ex(r->rq_reply, "result", &result);
	if (r->rq_error == NULL)
		snprintf(outcome, sizeof(outcome), "ok");
	else if (json_object_object_get_ex(r->rq_error, "code", &code))
		snprintf(outcome, sizeof(outcome), "%" PRId64, json_object_get_int64(code));
	else
		snprintf(outcome, sizeof(outcome), "unknown");
	metric_inc(&m_cli_calls, r->rq_method, outcome);
	metric_observe(&m_cli_latency, now_mono() - r->rq_start, r->rq_method);
	r->rq_fn(r->rq_arg, result, r->rq_error);
	req_free(r);
}

/* Frees a connection now; never from inside one of its evhttp callbacks. */
static void
conn_free(struct rpc_conn *rc)
{
	struct jsonrpc_client *c = rc->rc_client;

	/* evhttp frees a request still queued without calling back. */
	evhttp_connection_set_closecb(rc->rc_evcon, NULL, NULL);
	evbuffer_remove_cb_entry(bufferevent_get_output(
	    evhttp_connection_get_bufferevent(rc->rc_evcon)), rc->rc_output_cb);
	evhttp_connection_free(rc->rc_evcon);
	event_free(rc->rc_connect_ev);
	TAILQ_REMOVE(&c->cl_conns, rc, rc_entry);
	c->cl_nconns--;
	metric_dec(&m_cli_open);
	free(rc);
}

/* The output buffer drains only into an established connection (for TLS,
 * after the handshake): that is how we learn the connection came up.  evhttp
 * never holds output while connecting, so its drain on reset does not count. */
static void
conn_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct rpc_conn *rc = arg;

	if (info->n_deleted > 0)
		rc->rc_connected = 1;
}

static void
conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct rpc_conn *rc = arg;

	/* Inside evhttp: only mark it; client_run() frees it. */
	rc->rc_state = CONN_DEAD;
	client_kick(rc->rc_client);
}

/* TCP_NODELAY once the socket exists (the handshake starts on a connected
 * socket): TLS writes a request as several records, and Nagle would hold the
 * last one for the server's delayed ACK. */
static void
conn_tls_info(const SSL *ssl, int where, int ret)
{
	int fd, one = 1;

	if ((where & SSL_CB_HANDSHAKE_START) && (fd = SSL_get_fd(ssl)) >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Text of the first TLS error of the connection, or NULL. */
static const char *
conn_tls_error(struct rpc_conn *rc, char *buf, size_t len)
{
	struct bufferevent *bev;
	unsigned long e, first = 0;
	long v;

	if (rc->rc_ssl == NULL)
		return NULL;
	v = SSL_get_verify_result(rc->rc_ssl);
	if (v != X509_V_OK) {
		snprintf(buf, len, "TLS: certificate verify failed: %s",
		    X509_verify_cert_error_string(v));
		return buf;
	}
	bev = evhttp_connection_get_bufferevent(rc->rc_evcon);
	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (first == 0)
			first = e;
	/* libevent also queues SSL_get_error() codes (SSL_ERROR_SYSCALL on a
	 * refused or reset connect): no reason string, the socket error says
	 * more than "TLS". */
	if (first == 0 || ERR_reason_error_string(first) == NULL)
		return NULL;
	snprintf(buf, len, "TLS: %s", ERR_reason_error_string(first));
	return buf;
}

/* The error of a call whose HTTP exchange failed. */
static struct json_object *
req_transport_error(struct rpc_req *r, struct rpc_conn *rc)
{
	struct jsonrpc_client *c = r->rq_client;
	char tls[256];
	const char *why;

	switch (r->rq_httperr) {
	case EVREQ_HTTP_TIMEOUT:
		return jsonrpc_error_new(HP_ERR_TIMEOUT, "timeout: no reply from %s",
		    c->cl_hostport);
	case EVREQ_HTTP_DATA_TOO_LONG:
		return jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: reply from %s larger than %zu bytes",
		    c->cl_hostport, c->cl_max_body);
	case EVREQ_HTTP_INVALID_HEADER:
		return jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: invalid HTTP reply from %s", c->cl_hostport);
	default:
		break;
	}
	if ((why = conn_tls_error(rc, tls, sizeof(tls))) != NULL)
		return jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: %s: %s", c->cl_hostport, why);
	switch (r->rq_errno) {
	case ECONNREFUSED: case ECONNRESET: case ECONNABORTED: case EPIPE:
	case ETIMEDOUT: case EHOSTUNREACH: case ENETUNREACH: case EADDRNOTAVAIL:
		return jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: %s: %s", c->cl_hostport, strerror(r->rq_errno));
	default:
		break;
	}
	/* evhttp reports a failed connect without its reason (it closes the
	 * socket first, errno is then ENOTCONN). */
	return jsonrpc_error_new(HP_ERR_UNREACHABLE, "operator unreachable: %s: %s",
	    c->cl_hostport, rc->rc_connected ? "connection closed" :
	    "connection failed (refused or unreachable)");
}

int
jsonrpc_parse_response(const char *body, size_t len, int64_t id,
    struct json_object **response, struct json_object **error)
{
	struct json_object *o, *v, *e, *code;
	int ok, rv = -1;

	*response = NULL;
	*error = NULL;
	o = jsonrpc_parse(body, len, &ok);
	if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "jsonrpc", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), "2.0") != 0)
		goto done;
	if (json_object_object_get_ex(o, "error", &e) && e != NULL) {
		if (!json_object_is_type(e, json_type_object) ||
		    !json_object_object_get_ex(e, "code", &code) ||
		    !json_object_is_type(code, json_type_int))
			goto done;
		*error = json_object_get(e);
		rv = 1;
		goto done;
	}
	if (!json_object_object_get_ex(o, "result", &v))
		goto done;
	if (!json_object_object_get_ex(o, "id", &v) ||
	    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) != id) {
		rv = -2;
		goto done;
	}
	*response = o;
	return 0;
done:
	json_object_put(o);
	return rv;
}

static void
req_http_error(enum evhttp_request_error e, void *arg)
{
	struct rpc_req *r = arg;

	r->rq_errno = errno;	/* evhttp restores the socket error for us */
	r->rq_httperr = (int)e;
}

static void
req_http_done(struct evhttp_request *http, void *arg)
{
	struct rpc_req *r = arg;
	struct rpc_conn *rc = r->rq_conn;
	struct json_object *o, *err;
	struct evbuffer *in;
	int status = http != NULL ? evhttp_request_get_response_code(http) : 0;

	if (r->rq_errno == 0)
		r->rq_errno = errno;
	rc->rc_req = NULL;
	r->rq_http = NULL;	/* evhttp frees it after this callback */
	if (status == 0) {
		rc->rc_state = CONN_DEAD;
		req_done(r, NULL, req_transport_error(r, rc));
		client_kick(rc->rc_client);
		return;
	}
	rc->rc_connected = 1;
	/* Made with settings that were replaced since: not reused. */
	if (rc->rc_state != CONN_DEAD)
		rc->rc_state = rc->rc_gen == rc->rc_client->cl_gen ? CONN_IDLE : CONN_DEAD;
	in = evhttp_request_get_input_buffer(http);
	switch (jsonrpc_parse_response((const char *)evbuffer_pullup(in, -1),
	    evbuffer_get_length(in), r->rq_id, &o, &err)) {
	case 0:		/* a result */
	case 1:		/* an error object */
		break;
	case -2:
		err = jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: %s answered another request id",
		    r->rq_client->cl_hostport);
		break;
	default:
		/* Not a JSON-RPC peer: do not trust the connection further. */
		rc->rc_state = CONN_DEAD;
		err = jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: %s: HTTP %d without a JSON-RPC response",
		    r->rq_client->cl_hostport, status);
		break;
	}
	req_done(r, o, err);
}

static void
req_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct rpc_req *r = arg;
	struct jsonrpc_client *c = r->rq_client;

	if (r->rq_state == RQ_SENT) {
		/* Closing the connection is the only way to abandon an HTTP/1.1
		 * request; evhttp frees it without calling back. */
		r->rq_conn->rc_req = NULL;
		conn_free(r->rq_conn);
	}
	req_done(r, NULL, jsonrpc_error_new(HP_ERR_TIMEOUT,
	    "timeout: no reply from %s within %.3g s", c->cl_hostport, c->cl_call_timeout));
}

static void
conn_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct rpc_conn *rc = arg;
	struct jsonrpc_client *c = rc->rc_client;
	struct rpc_req *r = rc->rc_req;

	if (rc->rc_state == CONN_DEAD || rc->rc_connected)
		return;
	rc->rc_req = NULL;
	conn_free(rc);
	if (r != NULL)
		req_done(r, NULL, jsonrpc_error_new(HP_ERR_TIMEOUT,
		    "timeout: connecting to %s took more than %.3g s",
		    c->cl_hostport, c->cl_connect_timeout));
	client_kick(c);
}

static struct rpc_conn *
conn_new(struct jsonrpc_client *c)
{
	struct rpc_conn *rc;
	struct bufferevent *bev;
	struct in6_addr a6;
	struct timeval tv;
	SSL *ssl = NULL;
	int is_ip;

	if ((rc = calloc(1, sizeof(*rc))) == NULL)
		return NULL;
	rc->rc_client = c;
	rc->rc_gen = c->cl_gen;
	if (c->cl_ssl_ctx != NULL) {
		if ((ssl = SSL_new(c->cl_ssl_ctx)) == NULL)
			goto fail;
		/* SNI only for names (RFC 6066); SSL_set1_host checks an IP
		 * literal against the IP SANs instead of the DNS names. */
		is_ip = inet_pton(AF_INET6, c->cl_name, &a6) == 1 ||
		    inet_pton(AF_INET, c->cl_name, &a6) == 1;
		if ((!is_ip && SSL_set_tlsext_host_name(ssl, c->cl_name) != 1) ||
		    SSL_set1_host(ssl, c->cl_name) != 1) {
			SSL_free(ssl);
			goto fail;
		}
		SSL_set_verify(ssl, SSL_VERIFY_PEER,
		    SSL_CTX_get_verify_callback(c->cl_ssl_ctx));
		SSL_set_info_callback(ssl, conn_tls_info);
		bev = bufferevent_openssl_socket_new(c->cl_base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (bev == NULL) {
			SSL_free(ssl);
			goto fail;
		}
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else if ((bev = bufferevent_socket_new(c->cl_base, -1,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)) == NULL)
		goto fail;
	rc->rc_ssl = ssl;
	rc->rc_evcon = evhttp_connection_base_bufferevent_new(c->cl_base, NULL, bev,
	    c->cl_host, (unsigned short)c->cl_port);
	if (rc->rc_evcon == NULL) {
		bufferevent_free(bev);
		goto fail;
	}
	if ((rc->rc_connect_ev = evtimer_new(c->cl_base, conn_connect_timeout, rc)) == NULL) {
		evhttp_connection_free(rc->rc_evcon);
		goto fail;
	}
	/* evhttp's own I/O timeout stays behind the exact per-call timer. */
	tv = tv_seconds(c->cl_call_timeout + 1);
	evhttp_connection_set_timeout_tv(rc->rc_evcon, &tv);
	evhttp_connection_set_retries(rc->rc_evcon, 0);
	evhttp_connection_set_max_body_size(rc->rc_evcon, (ev_ssize_t)c->cl_max_body);
	evhttp_connection_set_max_headers_size(rc->rc_evcon, JSONRPC_MAX_HEADERS);
	evhttp_connection_set_closecb(rc->rc_evcon, conn_closed, rc);
	if ((rc->rc_output_cb = evbuffer_add_cb(bufferevent_get_output(bev),
	    conn_output, rc)) == NULL) {
		evhttp_connection_free(rc->rc_evcon);
		event_free(rc->rc_connect_ev);
		goto fail;
	}
	tv = tv_seconds(c->cl_connect_timeout);
	evtimer_add(rc->rc_connect_ev, &tv);
	rc->rc_state = CONN_IDLE;
	TAILQ_INSERT_TAIL(&c->cl_conns, rc, rc_entry);
	c->cl_nconns++;
	metric_inc(&m_cli_conns);
	metric_inc(&m_cli_open);
	return rc;
fail:
	free(rc);
	return NULL;
}

/* Sends r (first in the queue) on rc; on failure r is done at once. */
static void
conn_send(struct rpc_conn *rc, struct rpc_req *r)
{
	struct jsonrpc_client *c = r->rq_client;
	struct evhttp_request *http;
	struct evkeyvalq *h;

	TAILQ_REMOVE(&c->cl_queue, r, rq_entry);
	r->rq_state = RQ_SENT;
	if ((http = evhttp_request_new(req_http_done, r)) == NULL) {
		req_done(r, NULL, jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: out of memory"));
		return;
	}
	evhttp_request_set_error_cb(http, req_http_error);
	h = evhttp_request_get_output_headers(http);
	evhttp_add_header(h, "Host", c->cl_hostport);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Accept", "application/json");
	evbuffer_add(evhttp_request_get_output_buffer(http), r->rq_body, strlen(r->rq_body));
	r->rq_conn = rc;
	r->rq_http = http;
	r->rq_httperr = -1;
	r->rq_errno = 0;
	rc->rc_req = r;
	rc->rc_state = CONN_BUSY;
	/* May call req_http_done() before returning (a connect that fails at
	 * once), which leaves r done and rc dead. */
	if (evhttp_make_request(rc->rc_evcon, http, EVHTTP_REQ_POST, c->cl_uri) < 0 &&
	    r->rq_state == RQ_SENT) {
		/* Only on allocation or socket setup failures; evhttp has
		 * either freed the request or left it on the connection. */
		rc->rc_req = NULL;
		rc->rc_state = CONN_DEAD;
		req_done(r, NULL, jsonrpc_error_new(HP_ERR_UNREACHABLE,
		    "operator unreachable: %s: cannot send request", c->cl_hostport));
	}
}

static void
client_dispatch(struct jsonrpc_client *c)
{
	struct rpc_conn *rc, *idle;
	struct rpc_req *r;

	while ((r = TAILQ_FIRST(&c->cl_queue)) != NULL) {
		idle = NULL;
		TAILQ_FOREACH(rc, &c->cl_conns, rc_entry)
			if (rc->rc_state == CONN_IDLE) {
				idle = rc;
				break;
			}
		if (idle == NULL && c->cl_nconns < c->cl_pool_size &&
		    (idle = conn_new(c)) == NULL) {
			req_done(r, NULL, jsonrpc_error_new(HP_ERR_UNREACHABLE,
			    "operator unreachable: %s: cannot create connection",
			    c->cl_hostport));
			continue;
		}
		if (idle == NULL)
			return;	/* all busy: a reply or a close kicks us */
		conn_send(idle, r);
	}
}

static void client_destroy(struct jsonrpc_client *);

static void
client_run(evutil_socket_t fd, short what, void *arg)
{
	struct jsonrpc_client *c = arg;
	struct rpc_conn *rc, *next;
	struct rpc_req *r;

	for (rc = TAILQ_FIRST(&c->cl_conns); rc != NULL; rc = next) {
		next = TAILQ_NEXT(rc, rc_entry);
		if (rc->rc_state == CONN_DEAD && rc->rc_req == NULL)
			conn_free(rc);
	}
	client_dispatch(c);
	c->cl_running = 1;
	while (!c->cl_dying && (r = TAILQ_FIRST(&c->cl_done)) != NULL) {
		TAILQ_REMOVE(&c->cl_done, r, rq_entry);
		req_deliver(r);
	}
	c->cl_running = 0;
	if (c->cl_dying)
		client_destroy(c);
}

struct jsonrpc_client *
jsonrpc_client_new(struct event_base *base, const struct jsonrpc_client_conf *conf,
    char *err, size_t errlen)
{
	struct jsonrpc_client *c;
	struct evhttp_uri *u;
	const char *scheme, *host, *path, *query;
	size_t hl, ul;
	int port, tls;

	signal(SIGPIPE, SIG_IGN);	/* EPIPE instead of death on a closed peer */
	if (conf->url == NULL || (u = evhttp_uri_parse_with_flags(conf->url, 0)) == NULL) {
		snprintf(err, errlen, "invalid URL \"%s\"", conf->url ? conf->url : "");
		return NULL;
	}
	scheme = evhttp_uri_get_scheme(u);
	host = evhttp_uri_get_host(u);
	tls = scheme != NULL && strcasecmp(scheme, "https") == 0;
	if (scheme == NULL || (!tls && strcasecmp(scheme, "http") != 0) ||
	    host == NULL || *host == '\0') {
		snprintf(err, errlen, "%s: URL must be http(s)://host[:port]/path", conf->url);
		evhttp_uri_free(u);
		return NULL;
	}
	if (tls != (conf->ssl_ctx != NULL)) {
		snprintf(err, errlen, "%s: %s", conf->url, tls ?
		    "https URL without a TLS context" : "TLS context for an http URL");
		evhttp_uri_free(u);
		return NULL;
	}
	if ((port = evhttp_uri_get_port(u)) < 0)
		port = tls ? 443 : 80;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		evhttp_uri_free(u);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	TAILQ_INIT(&c->cl_conns);
	TAILQ_INIT(&c->cl_queue);
	TAILQ_INIT(&c->cl_done);
	c->cl_base = base;
	c->cl_port = port;
	c->cl_next_id = 1;
	/* evhttp keeps the brackets of an IPv6 literal. */
	hl = strlen(host);
	if (host[0] == '[' && hl > 2)
		c->cl_host = strndup(host + 1, hl - 2);
	else
		c->cl_host = strdup(host);
	path = evhttp_uri_get_path(u);
	query = evhttp_uri_get_query(u);
	if (path == NULL || *path == '\0')
		path = "/";
	ul = strlen(path) + (query != NULL ? strlen(query) + 1 : 0) + 1;
	if ((c->cl_uri = malloc(ul)) != NULL)
		snprintf(c->cl_uri, ul, "%s%s%s", path, query ? "?" : "", query ? query : "");
	if (asprintf(&c->cl_hostport, "%s:%d", host, port) < 0)
		c->cl_hostport = NULL;
	c->cl_name = strdup(conf->server_name != NULL && *conf->server_name ?
	    conf->server_name : c->cl_host != NULL ? c->cl_host : "");
	evhttp_uri_free(u);
	c->cl_connect_timeout = jsonrpc_default(conf->connect_timeout, 2);
	c->cl_call_timeout = jsonrpc_default(conf->call_timeout, 10);
	c->cl_pool_size = conf->pool_size > 0 ? conf->pool_size : 4;
	c->cl_max_body = conf->max_body > 0 ? conf->max_body : 4 * 1024 * 1024;
	c->cl_run_ev = event_new(base, -1, 0, client_run, c);
	if (c->cl_host == NULL || c->cl_uri == NULL || c->cl_hostport == NULL ||
	    c->cl_name == NULL || c->cl_run_ev == NULL) {
		snprintf(err, errlen, "out of memory");
		client_destroy(c);
		return NULL;
	}
	if (conf->ssl_ctx != NULL) {
		SSL_CTX_up_ref(conf->ssl_ctx);
		c->cl_ssl_ctx = conf->ssl_ctx;
	}
	return c;
}

void
jsonrpc_client_call(struct jsonrpc_client *c, const char *method,
    struct json_object *params, jsonrpc_reply_fn fn, void *arg)
{
	struct json_object *o;
	struct rpc_req *r;
	struct timeval tv;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		fatalx("jsonrpc client: out of memory");
	r->rq_client = c;
	r->rq_fn = fn;
	r->rq_arg = arg;
	r->rq_id = c->cl_next_id++;
	r->rq_httperr = -1;
	r->rq_start = now_mono();
	snprintf(r->rq_method, sizeof(r->rq_method), "%s", method);
	o = json_object_new_object();
	json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(o, "method", json_object_new_string(method));
	json_object_object_add(o, "params", params != NULL ?
	    json_object_get(params) : json_object_new_object());
	json_object_object_add(o, "id", json_object_new_int64(r->rq_id));
	r->rq_body = strdup(jsonrpc_str(o));
	json_object_put(o);
	if (r->rq_body == NULL ||
	    (r->rq_timer = evtimer_new(c->cl_base, req_timeout, r)) == NULL)
		fatalx("jsonrpc client: out of memory");
	r->rq_state = RQ_QUEUED;
	TAILQ_INSERT_TAIL(&c->cl_queue, r, rq_entry);
	if (c->cl_dying) {
		/* Called from a callback run by jsonrpc_client_free(). */
		return;
	}
	tv = tv_seconds(c->cl_call_timeout);
	evtimer_add(r->rq_timer, &tv);
	client_kick(c);
}

static void
client_destroy(struct jsonrpc_client *c)
{
	if (c->cl_run_ev != NULL)
		event_free(c->cl_run_ev);
	SSL_CTX_free(c->cl_ssl_ctx);
	free(c->cl_host);
	free(c->cl_hostport);
	free(c->cl_uri);
	free(c->cl_name);
	free(c);
}

void
jsonrpc_client_update(struct jsonrpc_client *c, const struct jsonrpc_client_conf *conf)
{
	struct rpc_conn *rc;
	int renew = 0;

	if (conf->ssl_ctx != NULL && c->cl_ssl_ctx != NULL && conf->ssl_ctx != c->cl_ssl_ctx) {
		SSL_CTX_up_ref(conf->ssl_ctx);
		SSL_CTX_free(c->cl_ssl_ctx);
		c->cl_ssl_ctx = conf->ssl_ctx;
		renew = 1;
	}
	c->cl_connect_timeout = jsonrpc_default(conf->connect_timeout, 2);
	c->cl_call_timeout = jsonrpc_default(conf->call_timeout, 10);
	c->cl_pool_size = conf->pool_size > 0 ? conf->pool_size : 4;
	/* A new context: idle connections go now, busy ones after their
	 * reply, so the next call connects with the new certificate.  The
	 * same one (only timeouts changed): the pool stays. */
	if (renew) {
		c->cl_gen++;
		TAILQ_FOREACH(rc, &c->cl_conns, rc_entry)
			if (rc->rc_state == CONN_IDLE)
				rc->rc_state = CONN_DEAD;
	}
	client_kick(c);
}

void
jsonrpc_client_free(struct jsonrpc_client *c)
{
	struct rpc_conn *rc;
	struct rpc_req *r;

	if (c == NULL || c->cl_dying)
		return;
	c->cl_dying = 1;
	/* Calls in flight are dropped by evhttp with their connection. */
	while ((rc = TAILQ_FIRST(&c->cl_conns)) != NULL) {
		if ((r = rc->rc_req) != NULL) {
			rc->rc_req = NULL;
			r->rq_state = RQ_QUEUED;
			TAILQ_INSERT_TAIL(&c->cl_queue, r, rq_entry);
		}
		conn_free(rc);
	}
	/* Callbacks may start new calls; those end here too. */
	for (;;) {
		if ((r = TAILQ_FIRST(&c->cl_done)) != NULL) {
			TAILQ_REMOVE(&c->cl_done, r, rq_entry);
		} else if ((r = TAILQ_FIRST(&c->cl_queue)) != NULL) {
			TAILQ_REMOVE(&c->cl_queue, r, rq_entry);
			evtimer_del(r->rq_timer);
			json_object_put(r->rq_reply);
			r->rq_reply = NULL;
			r->rq_error = jsonrpc_error_new(HP_ERR_UNREACHABLE,
			    "client closed");
		} else
			break;
		req_deliver(r);
	}
	if (!c->cl_running)
		client_destroy(c);
}

struct event_base *
jsonrpc_base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	if (cfg == NULL)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}
