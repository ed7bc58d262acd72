/* private_rpc.c - the private proxy's JSON-RPC methods (SPEC 5), called
 * by its Hyper: incomingConnection (a public proxy hands over a client:
 * checked here, then a dial job is posted to the loop), and
 * announceConnection, withdrawConnection, getAnnouncements (other
 * operators announcing through this proxy).
 *
 * incomingConnection is honoured only for a caller this proxy announces to
 * (else 403), for a domain announced to that caller (else 404), with a
 * token of exactly 32 bytes and an endpoint that is one of that caller's
 * data endpoints (settings public_proxies, else PROXY_DATA_ENDPOINT_DEFAULT)
 * (else -32602).  Every address dialed comes from the settings, resolved
 * once at start (private.c), so this thread never waits for DNS and a
 * public proxy cannot make this proxy connect anywhere else.
 *
 * Thread: the side thread (control.h) only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <bsd/string.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "jsonrpc.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "proxyproto.h"
#include "util.h"
#include "private_int.h"

/* ---- parameters ---------------------------------------------------------- */

static const char *
param_string(struct json_object *params, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(params, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static struct json_object *
private_ok(void)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "message", json_object_new_string("ok"));
	return o;
}
/* ---- incomingConnection -------------------------------------------------- */

/* 1 when an unexpired announcement is addressed to proxy. */
static int
private_announces_to(struct private *pv, const char *proxy)
{
	struct announcement *list = NULL;
	int n, found = 0;

	if ((n = announce_list(pv->pv_table, NULL, now_wall(), &list)) < 0)
		return 0;
	for (int i = 0; i < n && !found; i++)
		found = strcmp(list[i].an_proxy, proxy) == 0;
	free(list);
	return found;
}

/* The data endpoint of proxy that endpoint names, or NULL.  It matches a
 * settings entry by its text ("localhost:9999"), or, when it is an IP
 * literal, by the address the entry resolved to at start; nothing here
 * asks DNS. */
static const struct data_endpoint *
private_data_endpoint(struct private *pv, const char *proxy, const char *endpoint)
{
	const struct public_peer *pb = &pv->pv_publics[pv->pv_npublics - 1];
	struct sockaddr_storage ss;
	socklen_t len;
	int numeric;

	for (int i = 0; i < pv->pv_npublics - 1; i++)
		if (strcmp(pv->pv_publics[i].pb_name, proxy) == 0) {
			pb = &pv->pv_publics[i];
			break;
		}
	numeric = addr_parse_numeric(endpoint, &ss, &len) == 0;
	for (int i = 0; i < pb->pb_neps; i++)
		if (strcasecmp(pb->pb_eps[i].ep_name, endpoint) == 0 || (numeric &&
		    addr_equal((struct sockaddr *)&ss, (struct sockaddr *)&pb->pb_eps[i].ep_sa)))
			return &pb->pb_eps[i];
	return NULL;
}

const struct sockaddr_storage *
private_pool_endpoint(struct private *pv, const char *proxy, const char *endpoint,
    socklen_t *len)
{
	const struct data_endpoint *ep = private_data_endpoint(pv, proxy, endpoint);

	if (ep == NULL)
		return NULL;
	*len = ep->ep_salen;
	return &ep->ep_sa;
}

/* One IP literal and port of the "client" parameter into ss (v4-mapped
 * IPv6 becomes IPv4).  -1 with why when either is missing or malformed. */
static int
rpc_client_addr(struct json_object *cl, const char *akey, const char *pkey,
    struct sockaddr_storage *ss, const char **why)
{
	struct json_object *v;
	const char *s;
	int64_t port;

	memset(ss, 0, sizeof(*ss));
	if (!json_object_object_get_ex(cl, akey, &v) || !json_object_is_type(v, json_type_string)) {
		*why = "client address must be an IP address string";
		return -1;
	}
	s = json_object_get_string(v);
	if (!json_object_object_get_ex(cl, pkey, &v) || !json_object_is_type(v, json_type_int) ||
	    (port = json_object_get_int64(v)) < 1 || port > 65535) {
		*why = "client port must be an integer of 1-65535";
		return -1;
	}
	{
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)port);
		} else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
			if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
				struct in_addr a4;

				memcpy(&a4, &sin6->sin6_addr.s6_addr[12], 4);
				memset(ss, 0, sizeof(*ss));
				sin->sin_family = AF_INET;
				sin->sin_addr = a4;
				sin->sin_port = htons((uint16_t)port);
			} else {
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = htons((uint16_t)port);
			}
		} else {
			*why = "client address must be an IP address string";
			return -1;
		}
	}
	return 0;
}

/*
 * The optional "client" parameter of incomingConnection: {"address",
 * "port", "local_address", "local_port"}, the client's address and the
 * one it connected to on the public proxy.  Absent or null: pi_local
 * (the PROXY header says LOCAL / UNKNOWN).  Anything else malformed, an
 * unknown key, or two addresses of different families: -1 with why.
 */
static int
rpc_client_param(struct json_object *params, struct proxyproto_info *pi, const char **why)
{
	struct json_object *cl;

	memset(pi, 0, sizeof(*pi));
	if (!json_object_object_get_ex(params, "client", &cl) || cl == NULL) {
		pi->pi_local = 1;
		return 0;
	}
	if (!json_object_is_type(cl, json_type_object)) {
		*why = "client must be an object";
		return -1;
	}
	json_object_object_foreach(cl, key, val) {
		(void)val;
		if (strcmp(key, "address") != 0 && strcmp(key, "port") != 0 &&
		    strcmp(key, "local_address") != 0 && strcmp(key, "local_port") != 0) {
			*why = "client has an unknown key";
			return -1;
		}
	}
	if (rpc_client_addr(cl, "address", "port", &pi->pi_src, why) < 0 ||
	    rpc_client_addr(cl, "local_address", "local_port", &pi->pi_dst, why) < 0)
		return -1;
	if (pi->pi_src.ss_family != pi->pi_dst.ss_family) {
		*why = "client address and local_address are of different families";
		return -1;
	}
	return 0;
}

/*
 * Every incomingConnection answered, by result: ok (the dial job is
 * posted), or the refusal: bad_params (domain, token or endpoint missing),
 * unknown_caller (nothing is announced to the caller: 403), bad_domain,
 * not_announced (404), bad_token, bad_endpoint (not one of the caller's
 * data_endpoints), bad_client (the client parameter), limit
 * (max_connections), error (the PROXY header cannot be written, out of
 * memory, the loop unreachable), stopping.
 */
METRIC_COUNTER(m_incoming, "private_incoming_total",
    "incomingConnection calls answered, by result (ok, or why it was refused).", "result")

/* Refuse one incomingConnection: one warning, one error reply, one count. */
static void
rpc_incoming_refuse(struct jsonrpc_call *call, const char *domain, const char *caller,
    const char *result, int code, const char *msg, const char *why)
{
	log_warnx("incomingConnection for %s from %s refused: %s", domain ? domain : "?",
	    caller ? caller : "?", why);
	metric_inc(&m_incoming, result);
	jsonrpc_call_error(call, code, "%s", msg);
}

static void
rpc_incoming(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct private *pv = arg;
	const char *domain, *token, *endpoint, *cwhy = NULL;
	const struct data_endpoint *de;
	char dom[ANNOUNCE_DOMAIN_MAX], why[128];
	uint8_t tok[TOKEN_LEN];
	struct proxyproto_info pi;
	struct announcement an;
	uint8_t pp[PROXYPROTO_WRITE_MAX];
	ssize_t pplen = 0;
	struct dial *d;
	long limit = pv->pv_conf->pc_max_connections;

	domain = param_string(params, "domain");
	token = param_string(params, "token");
	endpoint = param_string(params, "endpoint");
	if (domain == NULL || token == NULL || endpoint == NULL) {
		rpc_incoming_refuse(call, domain, caller, "bad_params", JSONRPC_INVALID_PARAMS,
		    "domain, token and endpoint must be strings", "missing parameters");
		return;
	}
	/* Only the public proxies this proxy announces to may hand it a connection. */
	if (!private_announces_to(pv, caller)) {
		rpc_incoming_refuse(call, domain, caller, "unknown_caller", HP_ERR_FORBIDDEN,
		    "not a public proxy of this private proxy", "nothing is announced to it");
		return;
	}
	/* the client's name: concrete, never a pattern */
	if (announce_check_domain(domain, dom) < 0 || dom[0] == '*') {
		rpc_incoming_refuse(call, domain, caller, "bad_domain", JSONRPC_INVALID_PARAMS,
		    "invalid domain", "invalid domain");
		return;
	}
	/* the exact announcement, else the wildcard one of its parent */
	if (announce_match(pv->pv_table, dom, caller, now_wall(), &an) < 0) {
		rpc_incoming_refuse(call, dom, caller, "not_announced", HP_ERR_NOT_FOUND,
		    ANNOUNCE_MSG_NO_MATCH, "the domain is not announced to it");
		return;
	}
	/* b64_decode refuses anything that does not fit tok: exactly 32 bytes. */
	if (b64_decode(token, tok, sizeof(tok)) != TOKEN_LEN) {
		rpc_incoming_refuse(call, dom, caller, "bad_token", JSONRPC_INVALID_PARAMS,
		    "token must be base64 of 32 bytes", "token is not base64 of 32 bytes");
		return;
	}
	if ((de = private_data_endpoint(pv, caller, endpoint)) == NULL) {
		snprintf(why, sizeof(why), "endpoint %.64s is not one of its data_endpoints",
		    endpoint);
		rpc_incoming_refuse(call, dom, caller, "bad_endpoint", JSONRPC_INVALID_PARAMS,
		    "endpoint is not a data endpoint of this public proxy", why);
		return;
	}
	if (rpc_client_param(params, &pi, &cwhy) < 0) {
		rpc_incoming_refuse(call, dom, caller, "bad_client", JSONRPC_INVALID_PARAMS, cwhy,
		    cwhy);
		return;
	}
	if (an.an_proxy_protocol != PROXYPROTO_OFF) {
		/* The name the client asked for travels in PP2_TYPE_AUTHORITY (v2). */
		strlcpy(pi.pi_authority, dom, sizeof(pi.pi_authority));
	}
	/* The header is kept only by a dial that needs one: the job lives as
	 * long as its relay, and most announcements have none. */
	if (an.an_proxy_protocol != PROXYPROTO_OFF &&
	    (pplen = proxyproto_write(an.an_proxy_protocol, &pi, pp, sizeof(pp))) < 0) {
		explicit_bzero(tok, sizeof(tok));
		rpc_incoming_refuse(call, dom, caller, "error", JSONRPC_INTERNAL_ERROR,
		    "cannot write the PROXY header", "cannot write the PROXY header");
		return;
	}
	d = dial_new(pv, tok, dom, an.an_operator, pi.pi_local ? NULL : &pi.pi_src, de, pp,
	    (size_t)pplen);
	explicit_bzero(tok, sizeof(tok));
	if (d == NULL) {
		rpc_incoming_refuse(call, dom, caller, "error", JSONRPC_INTERNAL_ERROR,
		    "out of memory", "out of memory");
		return;
	}
	/* Refuse with an error reply, so the public proxy drops the client now. */
	if (atomic_fetch_add(&pv->pv_nsockets, 2) + 2 > limit) {
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		free(d);
		snprintf(why, sizeof(why), "max_connections (%ld) reached", limit);
		rpc_incoming_refuse(call, dom, caller, "limit", HP_ERR_UNREACHABLE,
		    "too many connections", why);
		return;
	}
	/* Logged before the post: from then on d belongs to the loop thread,
	 * which may free it before this thread runs again. */
	log_debug("incomingConnection %s from %s: dialing %s", dom, caller, d->dl_endpoint);
	if (loop_post(pv->pv_loop, dial_start, d) < 0) {
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		free(d);
		rpc_incoming_refuse(call, dom, caller, "error", JSONRPC_INTERNAL_ERROR,
		    "out of memory", "the loop cannot be reached");
		return;
	}
	metric_inc(&m_incoming, "ok");
	jsonrpc_call_reply(call, private_ok());
}

/* ---- announceConnection, withdrawConnection, getAnnouncements ------------ */

/* Checks shared by announceConnection and withdrawConnection: the item's
 * domain (announce_item_domain) under the caller's allowed_domains, and a
 * proxy that is not this one.  -1: the call is answered. */
static int
rpc_check_operator(struct private *pv, struct jsonrpc_call *call, struct json_object *params,
    char dom[ANNOUNCE_DOMAIN_MAX], const char **proxy)
{
	const char **allowed = NULL, *why = NULL;
	int n, code;

	*proxy = param_string(params, "proxy");
	if (*proxy == NULL || **proxy == '\0') {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "proxy must be a string");
		return -1;
	}
	if (strcmp(*proxy, pv->pv_conf->pc_name) == 0) {
		jsonrpc_call_error(call, HP_ERR_BAD_REQUEST,
		    "trying to announce with private proxy name");
		return -1;
	}
	if (strlen(*proxy) >= ANNOUNCE_NAME_MAX) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "proxy name too long");
		return -1;
	}
	if ((n = control_allowed_domains(params, pv->pv_conf->pc_name, &allowed)) < 0) {
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, ANNOUNCE_MSG_NOT_AUTHORIZED);
		return -1;
	}
	code = announce_item_domain(params, allowed, (size_t)n, dom, &why);
	free(allowed);
	if (code != 0) {
		jsonrpc_call_error(call, code, "%s", why);
		return -1;
	}
	return 0;
}

static void
rpc_announce(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct private *pv = arg;
	const char *proxy, *why;
	char dom[ANNOUNCE_DOMAIN_MAX], err[256];
	struct announcement a, old;
	struct json_object *v;
	double now = now_wall(), expires;
	int pp = PROXYPROTO_OFF, code;

	if (rpc_check_operator(pv, call, params, dom, &proxy) < 0)
		return;
	if ((code = announce_item_expiry(params, now, &expires, &why)) != 0) {
		jsonrpc_call_error(call, code, "%s", why);
		return;
	}
	/* proxy_protocol: absent, null, "v2", "v1" or "off". */
	if (json_object_object_get_ex(params, "proxy_protocol", &v) && v != NULL &&
	    (!json_object_is_type(v, json_type_string) ||
	    (pp = proxyproto_version_parse(json_object_get_string(v))) < 0)) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
		    "proxy_protocol must be \"v2\", \"v1\" or \"off\"");
		return;
	}
	if (announce_lookup(pv->pv_table, dom, proxy, now, &old) == 0 &&
	    strcmp(old.an_operator, caller) != 0) {
		jsonrpc_call_error(call, HP_ERR_CONFLICT, ANNOUNCE_MSG_TAKEN);
		return;
	}
	if (announce_make(&a, dom, caller, proxy, expires) < 0) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "invalid announcement");
		return;
	}
	a.an_proxy_protocol = pp;
	if (datastore_announce(pv->pv_store, &a, err, sizeof(err)) < 0) {
		log_warnx("announceConnection %s: datastore: %s", dom, err);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "cannot store: %s", err);
		return;
	}
	log_info("%s announced %s to %s", caller, dom, proxy);
	/* params (and proxy with them) are freed by the reply. */
	private_target_kick(pv, a.an_proxy);
	jsonrpc_call_reply(call, json_object_new_string("ok"));
}

static void
rpc_withdraw(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct private *pv = arg;
	const char *proxy;
	char dom[ANNOUNCE_DOMAIN_MAX], err[256];
	int n;

	if (rpc_check_operator(pv, call, params, dom, &proxy) < 0)
		return;
	if ((n = datastore_withdraw(pv->pv_store, dom, proxy, caller, err, sizeof(err))) < 0) {
		log_warnx("withdrawConnection %s: datastore: %s", dom, err);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "cannot store: %s", err);
		return;
	}
	if (n == 0) {
		jsonrpc_call_error(call, HP_ERR_NOT_FOUND, ANNOUNCE_MSG_NO_MATCH);
		return;
	}
	log_info("%s withdrew %s from %s", caller, dom, proxy);
	private_withdraw_send(pv, proxy, dom);
	jsonrpc_call_reply(call, json_object_new_string("ok"));
}

/* The caller's own announcements; the own operator sees every one. */
static void
rpc_list(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct private *pv = arg;
	struct announcement *list = NULL;
	struct json_object *res;
	int n, own;

	own = strcmp(caller, pv->pv_conf->pc_name) == 0;
	if ((n = announce_list(pv->pv_table, own ? NULL : caller, now_wall(), &list)) < 0) {
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	res = json_object_new_array();
	for (int i = 0; i < n; i++)
		json_object_array_add(res, announce_item_json(&list[i], own));
	free(list);
	jsonrpc_call_reply(call, res);
}

static const struct control_method private_methods[] = {
	{ "incomingConnection", rpc_incoming },
	{ "announceConnection", rpc_announce },
	{ "withdrawConnection", rpc_withdraw },
	{ "getAnnouncements", rpc_list },
	{ NULL, NULL },
};

void
private_rpc(void *arg, struct jsonrpc_call *call)
{
	struct private *pv = arg;

	if (atomic_load(&pv->pv_stopping)) {
		if (strcmp(jsonrpc_call_method(call), "incomingConnection") == 0)
			metric_inc(&m_incoming, "stopping");
		jsonrpc_call_error(call, HP_ERR_UNREACHABLE, "shutting down");
	} else
		control_dispatch(private_methods, pv, call);
}
