/* route.c - routing one JSON-RPC call (SPEC 3.3, 3.4).
 *
 * Local ingress: the caller is this operator.  Method "<op>.<method>" (op is
 * everything before the last dot).  _client is overwritten, then:
 *   op unknown                -> 404 unknown operator
 *   op == self, "_ping"       -> answered here
 *   op == self, other "_..."  -> -32601
 *   op == self                -> local application, method = last segment
 *   op == other operator      -> that operator's peer_server, full method
 * Both ingress paths check the client certificate's binding again for every
 * request, against the current directory: the handshake checked it once, but
 * a keep-alive connection outlives a directory reload that removed it.
 * Peer ingress: the caller is the operator the peer's certificate is bound to;
 * op must be self; then the permission check (internal methods are open to
 * every authenticated peer), _client, and the same local delivery.
 *
 * A pending call is a struct route_call: created when the call leaves for
 * the application or a peer, freed when its reply callback runs. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "directory.h"
#include "hyper.h"
#include "route.h"
#include "jsonrpc.h"
#include "log.h"
#include "metrics.h"
#include "tls.h"
#include "util.h"

#define ROUTE_NAME_MAX 256

struct route_call {
	struct hyper        *rt_hyper;
	struct jsonrpc_call *rt_call;
	char                 rt_caller[ROUTE_NAME_MAX];
	char                 rt_target[ROUTE_NAME_MAX];
	char                 rt_method[128];
	const char          *rt_via;     /* "local" or "peer" */
	double               rt_start;
};

/* Counted once per call, where it is logged (route_log).  via: local or
 * peer; method: the method without the operator (label sets capped, see
 * metrics.h); code: "ok" or the JSON-RPC error code. */
METRIC_COUNTER(m_calls, "route_calls_total", "Calls routed, by ingress and method.",
    "via", "method")
METRIC_COUNTER(m_outcomes, "route_outcomes_total",
    "Calls routed, by ingress and outcome (ok or the error code).", "via", "code")
static const double route_bounds[] = METRIC_LATENCY_BOUNDS;
METRIC_HISTOGRAM(m_duration, "route_duration_seconds",
    "Time from a call's arrival to its answer, by ingress.", route_bounds, "via")

int
route_split(const char *full, char *op, size_t oplen, const char **method)
{
	const char *dot;
	size_t n;

	if (full == NULL || (dot = strrchr(full, '.')) == NULL)
		return -1;
	n = (size_t)(dot - full);
	if (n == 0 || n >= oplen || dot[1] == '\0')
		return -1;
	memcpy(op, full, n);
	op[n] = '\0';
	*method = dot + 1;
	return 0;
}

static void
route_log(const struct route_call *rc, struct json_object *error)
{
	double secs = now_mono() - rc->rt_start, ms = secs * 1000.0;
	struct json_object *code;
	char codestr[24];

	if (error == NULL)
		snprintf(codestr, sizeof(codestr), "ok");
	else if (json_object_object_get_ex(error, "code", &code))
		snprintf(codestr, sizeof(codestr), "%" PRId64, json_object_get_int64(code));
	else
		snprintf(codestr, sizeof(codestr), "unknown");
	metric_inc(&m_calls, rc->rt_via, rc->rt_method);
	metric_inc(&m_outcomes, rc->rt_via, codestr);
	metric_observe(&m_duration, secs, rc->rt_via);
	if (error == NULL)
		log_debug("%s call %s -> %s.%s: ok (%.1f ms)", rc->rt_via, rc->rt_caller,
		    rc->rt_target, rc->rt_method, ms);
	else
		log_warnx("%s call %s -> %s.%s: error %s (%.1f ms)", rc->rt_via,
		    rc->rt_caller, rc->rt_target, rc->rt_method,
		    json_object_to_json_string_ext(error, JSON_C_TO_STRING_PLAIN), ms);
}

/* Answer with an error we produce ourselves. */
static void
route_fail(struct route_call *rc, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
route_fail(struct route_call *rc, int code, const char *fmt, ...)
{
	struct json_object *e;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e = jsonrpc_error_new(code, "%s", msg);
	route_log(rc, e);
	jsonrpc_call_reply_error(rc->rt_call, e);
}

static void
route_done(void *arg, struct json_object *result, struct json_object *error)
{
	struct route_call *rc = arg;

	route_log(rc, error);
	/* Both are borrowed for the callback; the reply steals a reference. */
	if (error != NULL)
		jsonrpc_call_reply_error(rc->rt_call, json_object_get(error));
	else
		jsonrpc_call_reply(rc->rt_call, json_object_get(result));
	rc->rt_hyper->h_inflight--;
	free(rc);
}

/* params._client = {"name": caller, "entry": directory view}, always. */
static void
route_inject_client(struct hyper *h, struct json_object *params, const char *caller)
{
	struct json_object *client;

	client = json_object_new_object();
	json_object_object_add(client, "name", json_object_new_string(caller));
	json_object_object_add(client, "entry", directory_client_entry(h->h_dir, caller));
	json_object_object_add(params, "_client", client);
}

static void
route_ping(struct route_call *rc)
{
	struct json_object *r;
	char stamp[40];

	r = json_object_new_object();
	json_object_object_add(r, "name", json_object_new_string(rc->rt_hyper->h_name));
	json_object_object_add(r, "version", json_object_new_string(HP_VERSION));
	json_object_object_add(r, "timestamp",
	    json_object_new_string(rfc3339_format(now_wall(), stamp, sizeof(stamp))));
	route_log(rc, NULL);
	jsonrpc_call_reply(rc->rt_call, r);
}

/* Send rc on through client c; rc is owned by the callback from now on. */
static void
route_send(struct route_call *rc, struct jsonrpc_client *c, const char *method,
    struct json_object *params)
{
	rc->rt_hyper->h_inflight++;
	jsonrpc_client_call(c, method, params, route_done, rc);
}

/* A call addressed to this operator (after identity and permission checks). */
static void
route_deliver(struct route_call *rc, struct json_object *params)
{
	struct hyper *h = rc->rt_hyper;

	if (rc->rt_method[0] == '_') {
		if (strcmp(rc->rt_method, "_ping") == 0)
			route_ping(rc);
		else
			route_fail(rc, JSONRPC_METHOD_NOT_FOUND, "method not found");
		free(rc);
		return;
	}
	if (h->h_app == NULL) {
		route_fail(rc, HP_ERR_UNREACHABLE, "operator unreachable: no jsonrpc_client "
		    "channel for local delivery");
		free(rc);
		return;
	}
	route_send(rc, h->h_app, rc->rt_method, params);
}

/* The pool towards target, (re)made when its directory address changed. */
static struct jsonrpc_client *
route_peer_client(struct hyper *h, const char *target, const char *address,
    char *err, size_t errlen)
{
	struct hyper_peer *p, **pp;
	struct jsonrpc_client_conf cc;
	char url[512];

	for (pp = &h->h_peers; (p = *pp) != NULL; pp = &p->hp_next)
		if (strcmp(p->hp_name, target) == 0)
			break;
	if (p != NULL && strcmp(p->hp_address, address) == 0)
		return p->hp_client;
	if (p != NULL) {
		/* Address moved: calls still pending on the old pool end with 502. */
		log_info("operator %s moved to %s", target, address);
		*pp = p->hp_next;
		jsonrpc_client_free(p->hp_client);
		free(p->hp_name);
		free(p->hp_address);
		free(p);
	}
	snprintf(url, sizeof(url), "https://%s/jsonrpc", address);
	memset(&cc, 0, sizeof(cc));
	cc.url = url;
	cc.ssl_ctx = h->h_peers_ctx;
	cc.server_name = target;
	cc.connect_timeout = h->h_conf->peers.connect_timeout;
	cc.call_timeout = h->h_conf->peers.call_timeout;
	cc.pool_size = (int)h->h_conf->peers.pool_size;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->hp_name = strdup(target)) == NULL ||
	    (p->hp_address = strdup(address)) == NULL ||
	    (p->hp_client = jsonrpc_client_new(h->h_base, &cc, err, errlen)) == NULL) {
		if (p != NULL) {
			free(p->hp_name);
			free(p->hp_address);
		}
		free(p);
		return NULL;
	}
	p->hp_next = h->h_peers;
	h->h_peers = p;
	return p->hp_client;
}

void
route_peers_free(struct hyper *h)
{
	struct hyper_peer *p;

	while ((p = h->h_peers) != NULL) {
		h->h_peers = p->hp_next;
		jsonrpc_client_free(p->hp_client);
		free(p->hp_name);
		free(p->hp_address);
		free(p);
	}
}

/* Common start of both ingress paths: NULL when the call was answered. */
static struct route_call *
route_begin(struct hyper *h, struct jsonrpc_call *call, const char *via)
{
	struct route_call *rc;

	if (h->h_stopping) {
		jsonrpc_call_error(call, HP_ERR_UNAVAILABLE, "server shutting down");
		return NULL;
	}
	if ((rc = calloc(1, sizeof(*rc))) == NULL) {
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return NULL;
	}
	rc->rt_hyper = h;
	rc->rt_call = call;
	rc->rt_via = via;
	rc->rt_start = now_mono();
	snprintf(rc->rt_target, sizeof(rc->rt_target), "?");
	snprintf(rc->rt_caller, sizeof(rc->rt_caller), "?");
	return rc;
}

/* Parse the method into rt_target/rt_method; 0, or -1 after answering. */
static int
route_parse(struct route_call *rc)
{
	const char *full = jsonrpc_call_method(rc->rt_call), *m;

	if (route_split(full, rc->rt_target, sizeof(rc->rt_target), &m) == -1 ||
	    strlen(m) >= sizeof(rc->rt_method)) {
		snprintf(rc->rt_method, sizeof(rc->rt_method), "%.100s", full ? full : "");
		route_fail(rc, JSONRPC_METHOD_NOT_FOUND,
		    "invalid method: expected <operator>.<method>");
		return -1;
	}
	snprintf(rc->rt_method, sizeof(rc->rt_method), "%s", m);
	return 0;
}

void
route_local(void *arg, struct jsonrpc_call *call)
{
	struct hyper *h = arg;
	struct route_call *rc;
	struct json_object *params = jsonrpc_call_params(call);
	struct jsonrpc_client *c;
	const char *address;
	char why[256];
	SSL *ssl;
	X509 *leaf;

	if ((rc = route_begin(h, call, "local")) == NULL)
		return;
	snprintf(rc->rt_caller, sizeof(rc->rt_caller), "%s", h->h_name);
	ssl = jsonrpc_call_ssl(call);
	leaf = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
	if (leaf == NULL || !hyper_identity_local(h, leaf)) {
		snprintf(rc->rt_caller, sizeof(rc->rt_caller), "?");
		route_fail(rc, HP_ERR_FORBIDDEN, "client certificate is not bound to this operator");
		goto done;
	}
	if (route_parse(rc) == -1)
		goto done;
	route_inject_client(h, params, h->h_name);
	if (directory_entry(h->h_dir, rc->rt_target) == NULL) {
		route_fail(rc, HP_ERR_NOT_FOUND, "unknown operator");
		goto done;
	}
	if (strcmp(rc->rt_target, h->h_name) == 0) {
		route_deliver(rc, params);
		return;
	}
	if (h->h_peers_ctx == NULL) {
		route_fail(rc, HP_ERR_UNREACHABLE, "operator unreachable: no peer_client channel");
		goto done;
	}
	if ((address = directory_peer_address(h->h_dir, rc->rt_target)) == NULL) {
		route_fail(rc, HP_ERR_UNREACHABLE, "operator unreachable: no peer_server "
		    "address in the directory");
		goto done;
	}
	if ((c = route_peer_client(h, rc->rt_target, address, why, sizeof(why))) == NULL) {
		route_fail(rc, HP_ERR_UNREACHABLE, "operator unreachable: %s", why);
		goto done;
	}
	route_send(rc, c, jsonrpc_call_method(call), params);
	return;
done:
	free(rc);
}

void
route_peer(void *arg, struct jsonrpc_call *call)
{
	struct hyper *h = arg;
	struct route_call *rc;
	SSL *ssl;
	X509 *leaf;

	if ((rc = route_begin(h, call, "peer")) == NULL)
		return;
	ssl = jsonrpc_call_ssl(call);
	leaf = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
	/* The handshake already checked the binding; the directory may have
	 * changed since, so look the name up again for this request. */
	if (leaf == NULL || tls_identity(h->h_dir, leaf, rc->rt_caller,
	    sizeof(rc->rt_caller)) == -1) {
		snprintf(rc->rt_caller, sizeof(rc->rt_caller), "?");
		route_fail(rc, HP_ERR_FORBIDDEN, "client certificate is not bound to an operator");
		goto done;
	}
	if (route_parse(rc) == -1)
		goto done;
	if (strcmp(rc->rt_target, h->h_name) != 0) {
		route_fail(rc, HP_ERR_BAD_REQUEST, "not for this operator");
		goto done;
	}
	if (rc->rt_method[0] != '_' &&
	    !directory_can_call(h->h_dir, rc->rt_caller, h->h_name, rc->rt_method)) {
		route_fail(rc, HP_ERR_FORBIDDEN, "permission denied for method '%s' and client '%s'",
		    rc->rt_method, rc->rt_caller);
		goto done;
	}
	route_inject_client(h, jsonrpc_call_params(call), rc->rt_caller);
	route_deliver(rc, jsonrpc_call_params(call));
	return;
done:
	free(rc);
}
