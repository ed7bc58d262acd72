/* public_tickets.c - the public proxy's pool methods (issue #16):
 * requestConnectionTickets, getConnectionPools.
 *
 * Thread: the side thread only.  The ticket book (ticket.h) is shared with
 * the loop thread, which redeems tickets and keeps the pooled connections
 * (public_pool.c); the book has its own lock.
 *
 *   requestConnectionTickets {count, key?}  -> {tickets: [base64 of 32 bytes],
 *       data_endpoint, expires_at (RFC 3339), expires_in (seconds), key?}
 *     for the operators that may announce (allowed_domains in their
 *     directory entry, as announceConnections); count 1-256 (0 too with
 *     "key": true); fewer tickets when max_pooled_per_operator leaves less
 *     room, error 429 when none.  "key": true asks for a new minting key
 *     (ticket.h), answered as the member "key" (ticket_key_json) unless
 *     ticket_key_lifetime is 0.  The secret travels only in this answer,
 *     over the mutually authenticated Hyper path, and is never logged.
 *   getConnectionPools {}  -> [{operator, idle, outstanding, used, replaced,
 *       dead, closed, expired, minted, keys, key_expires_at?}]: every operator's pool for the own operator
 *       and admin_group, the caller's own one for anyone else. */
#include <bsd/string.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "control.h"
#include "datastore.h"
#include "jsonrpc.h"
#include "log.h"
#include "proxy_conf.h"
#include "ticket.h"
#include "util.h"
#include "public_int.h"

/* Refusals at the cap, at most about one line a second (side thread only). */
static struct log_limit tickets_cap_log;

/* Issue #12: a key made here goes to every instance on the same Redis
 * ({"share": "key", "operator", "id", "secret", "expiry"}), so that each
 * accepts the tickets minted with it and bound to itself. */
static void
public_share_key(struct public *p, const struct ticket_key *key)
{
	struct json_object *o;
	char id[16], secret[64], name[2 * TICKET_KEY_ID_LEN + 1];

	o = json_object_new_object();
	b64_encode(key->tk_id, TICKET_KEY_ID_LEN, id);
	b64_encode(key->tk_secret, TICKET_SECRET_LEN, secret);
	for (int i = 0; i < TICKET_KEY_ID_LEN; i++)
		snprintf(name + 2 * i, 3, "%02x", key->tk_id[i]);
	json_object_object_add(o, "share", json_object_new_string("key"));
	json_object_object_add(o, "operator", json_object_new_string(key->tk_op));
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "secret", json_object_new_string(secret));
	json_object_object_add(o, "expiry", json_object_new_int64(key->tk_expiry));
	if (datastore_share(p->p_store, name, json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN), (double)key->tk_expiry) < 0)
		log_warnx("minting key for %s not shared: out of memory", key->tk_op);
	explicit_bzero(secret, sizeof(secret));
	/* json-c's copy of the secret goes with the object */
	json_object_put(o);
}

void
public_key_shared(void *arg, const char *line)
{
	struct public *p = arg;
	struct json_object *o, *v;
	struct ticket_key key;
	enum ticket_why w;
	const char *op;

	if ((o = json_tokener_parse(line)) == NULL)
		return;
	memset(&key, 0, sizeof(key));
	if (!json_object_object_get_ex(o, "share", &v) ||
	    strcmp(json_object_get_string(v), "key") != 0 ||
	    !json_object_object_get_ex(o, "operator", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    strlen(op = json_object_get_string(v)) > TICKET_OP_MAX ||
	    !json_object_object_get_ex(o, "id", &v) ||
	    b64_decode(json_object_get_string(v), key.tk_id, TICKET_KEY_ID_LEN) !=
	    TICKET_KEY_ID_LEN ||
	    !json_object_object_get_ex(o, "secret", &v) ||
	    b64_decode(json_object_get_string(v), key.tk_secret, TICKET_SECRET_LEN) !=
	    TICKET_SECRET_LEN ||
	    !json_object_object_get_ex(o, "expiry", &v) ||
	    !json_object_is_type(v, json_type_int)) {
		log_warnx("datastore: a shared line that is not a minting key: ignored");
		goto done;
	}
	strlcpy(key.tk_op, op, sizeof(key.tk_op));
	key.tk_expiry = (uint32_t)json_object_get_int64(v);
	if ((w = ticket_key_add(p->p_tickets, &key, now_wall())) != TICKET_OK &&
	    w != TICKET_EXPIRED)
		log_warnx("datastore: shared minting key for %s refused: %s", key.tk_op,
		    ticket_why_str(w));
done:
	explicit_bzero(&key, sizeof(key));
	json_object_put(o);
}

static void
rpc_tickets(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	uint8_t (*t)[TICKET_LEN] = NULL;
	struct json_object *jc, *jk, *res, *list, *jkey = NULL;
	const char **allowed = NULL;
	struct ticket_key key;
	enum ticket_why w;
	double now = now_wall(), expiry = now + p->p_conf->pc_ticket_lifetime;
	size_t issued = 0;
	int64_t count;
	int want_key = 0;
	char b64[64], ts[32];

	if (control_allowed_domains(params, p->p_conf->pc_name, &allowed) < 0) {
		log_warnx("requestConnectionTickets refused to %s: not authorized", caller);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, "not authorized");
		return;
	}
	free(allowed);
	if (json_object_object_get_ex(params, "key", &jk)) {
		if (!json_object_is_type(jk, json_type_boolean)) {
			jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
			    "key: expected a boolean");
			return;
		}
		want_key = json_object_get_boolean(jk);
	}
	if (!json_object_object_get_ex(params, "count", &jc) ||
	    !json_object_is_type(jc, json_type_int) ||
	    (count = json_object_get_int64(jc)) < (want_key ? 0 : 1) ||
	    count > TICKET_BATCH_MAX) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
		    "count: expected an integer of 1-%d (0 with \"key\": true)", TICKET_BATCH_MAX);
		return;
	}
	if (count > 0) {
		if ((t = calloc((size_t)count, TICKET_LEN)) == NULL) {
			jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
			return;
		}
		w = ticket_issue(p->p_tickets, caller, (size_t)count, now, t, &issued, &expiry);
		if (w != TICKET_OK) {
			free(t);
			if (w == TICKET_CAP) {
				log_limited(&tickets_cap_log, LOG_LVL_INFO,
				    "requestConnectionTickets by %s: at max_pooled_per_operator (%ld)",
				    caller, p->p_conf->pc_max_pooled);
				jsonrpc_call_error(call, PUBLIC_ERR_TOO_MANY,
				    "too many tickets and pooled connections: at most %ld per "
				    "operator (max_pooled_per_operator)", p->p_conf->pc_max_pooled);
			} else
				jsonrpc_call_error(call, w == TICKET_INVALID ?
				    JSONRPC_INVALID_PARAMS : JSONRPC_INTERNAL_ERROR, "%s",
				    ticket_why_str(w));
			return;
		}
	}
	/* ticket_key_lifetime 0: no keys, the answer simply has none */
	if (want_key && p->p_conf->pc_ticket_key_lifetime > 0) {
		if ((w = ticket_key(p->p_tickets, caller, now, &key)) != TICKET_OK) {
			log_warnx("requestConnectionTickets by %s: no key: %s", caller,
			    ticket_why_str(w));
		} else {
			jkey = ticket_key_json(&key, now, p->p_conf->pc_ticket_lifetime);
			public_share_key(p, &key);
			explicit_bzero(&key, sizeof(key));
		}
	}
	res = json_object_new_object();
	list = json_object_new_array();
	for (size_t i = 0; i < issued; i++) {
		b64_encode(t[i], TICKET_LEN, b64);
		json_object_array_add(list, json_object_new_string(b64));
	}
	if (t != NULL) {
		explicit_bzero(t, (size_t)count * TICKET_LEN);
		free(t);
	}
	json_object_object_add(res, "tickets", list);
	json_object_object_add(res, "data_endpoint",
	    json_object_new_string(p->p_conf->pc_data_endpoint));
	json_object_object_add(res, "instance", json_object_new_string(p->p_instance));
	json_object_object_add(res, "expires_at",
	    json_object_new_string(rfc3339_format(expiry, ts, sizeof(ts))));
	json_object_object_add(res, "expires_in", json_object_new_double(expiry - now));
	if (jkey != NULL)
		json_object_object_add(res, "key", jkey);
	log_debug("%zu ticket(s)%s issued to %s", issued, jkey != NULL ? " and a key" : "",
	    caller);
	jsonrpc_call_reply(call, res);
}

struct pools_list {
	struct json_object	*pl_res;
	const char		*pl_only;	/* NULL: every operator */
};

static void
pools_add(void *arg, const char *op, const struct ticket_stats *st)
{
	struct pools_list *pl = arg;
	struct json_object *o;

	if (pl->pl_only != NULL && strcmp(pl->pl_only, op) != 0)
		return;
	o = json_object_new_object();
	json_object_object_add(o, "operator", json_object_new_string(op));
	json_object_object_add(o, "idle", json_object_new_int64((int64_t)st->ts_idle));
	json_object_object_add(o, "outstanding",
	    json_object_new_int64((int64_t)st->ts_outstanding));
	json_object_object_add(o, "used", json_object_new_int64((int64_t)st->ts_used));
	json_object_object_add(o, "replaced", json_object_new_int64((int64_t)st->ts_replaced));
	json_object_object_add(o, "dead", json_object_new_int64((int64_t)st->ts_dead));
	json_object_object_add(o, "closed", json_object_new_int64((int64_t)st->ts_closed));
	json_object_object_add(o, "expired", json_object_new_int64((int64_t)st->ts_expired));
	json_object_object_add(o, "minted", json_object_new_int64((int64_t)st->ts_minted));
	json_object_object_add(o, "keys", json_object_new_int64((int64_t)st->ts_keys));
	if (st->ts_key_expiry > 0) {
		char ts[32];

		json_object_object_add(o, "key_expires_at", json_object_new_string(
		    rfc3339_format(st->ts_key_expiry, ts, sizeof(ts))));
	}
	json_object_array_add(pl->pl_res, o);
}

static void
rpc_pools(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct pools_list pl;

	pl.pl_res = json_object_new_array();
	pl.pl_only = strcmp(caller, p->p_conf->pc_name) == 0 ||
	    control_caller_in_group(params, p->p_conf->pc_admin_group) ? NULL : caller;
	ticket_foreach(p->p_tickets, pools_add, &pl);
	jsonrpc_call_reply(call, pl.pl_res);
}

/* getInstances (issue #12): the live instances of this public proxy, each
 * with the data endpoint its incomingConnection and ticket batches name,
 * so that a private proxy stops dialing one whose heartbeat ended.  The
 * same callers as requestConnectionTickets.  Without Redis (or before it
 * answered) only this instance. */
static void
rpc_instances(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct datastore_instance *v = NULL;
	struct json_object *res, *list, *o;
	const char **allowed = NULL;
	int n, self = 0;

	if (strcmp(caller, p->p_conf->pc_name) != 0 &&
	    !control_caller_in_group(params, p->p_conf->pc_admin_group) &&
	    control_allowed_domains(params, p->p_conf->pc_name, &allowed) < 0) {
		log_warnx("getInstances refused to %s: not authorized", caller);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, "not authorized");
		return;
	}
	free(allowed);
	res = json_object_new_object();
	list = json_object_new_array();
	n = datastore_instances(p->p_store, &v);
	for (int i = 0; i < n; i++) {
		o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(v[i].di_id));
		json_object_object_add(o, "data_endpoint",
		    json_object_new_string(v[i].di_endpoint));
		json_object_array_add(list, o);
		self |= strcmp(v[i].di_id, p->p_instance) == 0;
	}
	free(v);
	/* not shared (file store), or not seen yet: this one is live */
	if (!self) {
		o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(p->p_instance));
		json_object_object_add(o, "data_endpoint",
		    json_object_new_string(p->p_conf->pc_data_endpoint));
		json_object_array_add(list, o);
	}
	json_object_object_add(res, "instance", json_object_new_string(p->p_instance));
	json_object_object_add(res, "shared", json_object_new_boolean(n >= 0));
	json_object_object_add(res, "instances", list);
	jsonrpc_call_reply(call, res);
}

int
public_tickets_rpc(struct public *p, struct jsonrpc_call *call, const char *method,
    const char *caller, struct json_object *params)
{
	if (strcmp(method, "requestConnectionTickets") == 0)
		rpc_tickets(p, call, caller, params);
	else if (strcmp(method, "getConnectionPools") == 0)
		rpc_pools(p, call, caller, params);
	else if (strcmp(method, "getInstances") == 0)
		rpc_instances(p, call, caller, params);
	else
		return 0;
	return 1;
}
