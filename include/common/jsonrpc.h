/* jsonrpc.h - JSON-RPC 2.0 over HTTP/1.1 POST on libevent (evhttp +
 * bufferevent_openssl), server and client, one event_base per thread.
 *
 * Wire rules (SPEC 3, go-original 1.2): one request object per POST,
 * Content-Type application/json, keep-alive.  Replies: HTTP 200 with
 * "result", HTTP 400 with "error" (Go compatible); the client accepts any
 * status whose body is a JSON-RPC response. */
#ifndef HP_JSONRPC_H
#define HP_JSONRPC_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct event_base;
struct json_object;

/* Error codes used across the system. */
#define JSONRPC_PARSE_ERROR      -32700
#define JSONRPC_INVALID_REQUEST  -32600
#define JSONRPC_METHOD_NOT_FOUND -32601
#define JSONRPC_INVALID_PARAMS   -32602
#define JSONRPC_INTERNAL_ERROR   -32603
#define HP_ERR_BAD_REQUEST       400
#define HP_ERR_FORBIDDEN         403
#define HP_ERR_NOT_FOUND         404
#define HP_ERR_CONFLICT          409
#define HP_ERR_UNREACHABLE       502
#define HP_ERR_UNAVAILABLE       503     /* a Hyper server that is stopping */
#define HP_ERR_TIMEOUT           504

/* A new event base for JSON-RPC traffic: epoll with a change list, so the
 * add/delete pairs of one loop iteration cost one epoll_ctl, not several. */
struct event_base *jsonrpc_base_new(void);

/* New {"code": code, "message": msg} object. */
struct json_object *jsonrpc_error_new(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- server ---- */
struct jsonrpc_server;
struct jsonrpc_call;

struct jsonrpc_server_conf {
	const char *bind_address;   /* host:port; port 0 picks a free one */
	const char *path;           /* "/jsonrpc" */
	SSL_CTX    *ssl_ctx;        /* NULL: plain HTTP (tests only) */
	size_t      max_body;       /* request size limit, default 1 MiB */
	double      timeout;        /* idle/read timeout of a connection, default 30 s */
	int         reuse_port;     /* SO_REUSEPORT on the listener (hand-over) */
	int         max_connections;/* TLS connections served at once, default 1024 */
	double      handshake_timeout; /* from accept to the end of the TLS
	                                * handshake, default 10 s */
};

/* Handler for one valid request.  It must eventually answer with exactly one
 * of jsonrpc_call_reply / jsonrpc_call_error (now or later, same thread). */
typedef void (*jsonrpc_handler_fn)(void *arg, struct jsonrpc_call *call);

struct jsonrpc_server *jsonrpc_server_new(struct event_base *base,
	const struct jsonrpc_server_conf *conf, jsonrpc_handler_fn fn, void *arg,
	char *err, size_t errlen);
int  jsonrpc_server_port(const struct jsonrpc_server *s);
/* New settings for connections accepted from now on (context, limits,
 * timeouts; bind_address, path and reuse_port are ignored).  Live
 * connections keep theirs.  The context is referenced, not stolen. */
void jsonrpc_server_update(struct jsonrpc_server *s, const struct jsonrpc_server_conf *conf);
void jsonrpc_server_free(struct jsonrpc_server *s);

const char         *jsonrpc_call_method(const struct jsonrpc_call *c);
struct json_object *jsonrpc_call_params(const struct jsonrpc_call *c);  /* borrowed, an object */
SSL                *jsonrpc_call_ssl(const struct jsonrpc_call *c);     /* NULL on plain HTTP */
/* result is stolen (may be NULL for JSON null). */
void jsonrpc_call_reply(struct jsonrpc_call *c, struct json_object *result);
/* error object {"code","message"[,"data"]} is stolen. */
void jsonrpc_call_reply_error(struct jsonrpc_call *c, struct json_object *error);
void jsonrpc_call_error(struct jsonrpc_call *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- client ---- */
struct jsonrpc_client;

struct jsonrpc_client_conf {
	const char *url;            /* https://host:port/path (http:// for tests) */
	SSL_CTX    *ssl_ctx;        /* client context; NULL for http:// */
	const char *server_name;    /* name to verify; default: host of url */
	double      connect_timeout;/* default 2 s */
	double      call_timeout;   /* default 10 s */
	int         pool_size;      /* keep-alive connections, default 4 */
	size_t      max_body;       /* response size limit, default 4 MiB */
};

/* error != NULL: the call failed (error is {"code","message"[,"data"]}).
 * Otherwise result is the result (NULL for a JSON null result).  Both are
 * borrowed for the duration of the callback.  Transport failures arrive as error 502
 * "operator unreachable: <reason>", timeouts as 504 "timeout: <reason>". */
typedef void (*jsonrpc_reply_fn)(void *arg, struct json_object *result,
	struct json_object *error);

struct jsonrpc_client *jsonrpc_client_new(struct event_base *base,
	const struct jsonrpc_client_conf *conf, char *err, size_t errlen);
/* params is borrowed.  The callback always runs later from the event loop,
 * never from inside this call. */
void jsonrpc_client_call(struct jsonrpc_client *c, const char *method,
	struct json_object *params, jsonrpc_reply_fn fn, void *arg);
/* New context, timeouts and pool size (url, server_name and max_body are
 * ignored).  Another context than the current one: calls in flight finish
 * on their connection, which is then closed; idle connections are closed
 * now; the context is referenced.  The same context: only the timeouts and
 * the pool size change, the connections stay. */
void jsonrpc_client_update(struct jsonrpc_client *c, const struct jsonrpc_client_conf *conf);
/* Cancels pending calls (their callbacks run with 502 "client closed"). */
void jsonrpc_client_free(struct jsonrpc_client *c);

/* ---- for tests and fuzzing: the body checks the server and client use ---- */

/* Parses a request body (one strict JSON value filling len bytes) and checks
 * it is a JSON-RPC 2.0 request: "jsonrpc" "2.0", "method" a string of 1 to
 * 200 characters, "id" absent, null, an integer or a string of at most 1024
 * bytes, "params" absent, null or an object.  Returns NULL when valid, else
 * the error message with *code its JSON-RPC error code.  Either way
 * *request is the parsed value (own reference; NULL when it is not JSON) and
 * *id its id when that is a string or an integer (borrowed from *request),
 * else NULL. */
const char *jsonrpc_parse_request(const char *body, size_t len,
	struct json_object **request, struct json_object **id, int *code);

/* Parses a response body to the request numbered id.  Returns
 *    0  a result: *response is the parsed object (own reference), the
 *       result is its "result" member;
 *    1  an error response: *error is its "error" object (own reference),
 *       which has an integer "code";
 *   -1  not a JSON-RPC 2.0 response;
 *   -2  a result for another id.
 * *response and *error are NULL unless set as above. */
int jsonrpc_parse_response(const char *body, size_t len, int64_t id,
	struct json_object **response, struct json_object **error);

#endif
