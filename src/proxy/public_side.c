/* public_side.c - the public proxy's side-thread work (SPEC 4.1, 4.3):
 * incomingConnection through the own Hyper, the JSON-RPC methods
 * (announceConnections, withdrawConnections, getAnnouncements,
 * adminWithdrawConnections), their durable commits, the allowed_domains
 * re-checks, the expiry sweep and the directory poll.
 *
 * Thread: the side thread (control.h) only, except public_incoming_post
 * (loop thread: hands a call over) and public_recheck_directory at start
 * (main thread, before the side thread runs).  A failed call goes back to
 * the loop with loop_post (incoming_failed, public_client.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <bsd/string.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "directory.h"
#include "jsonrpc.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "side.h"
#include "ticket.h"
#include "util.h"
#include "public_int.h"

/* --- incomingConnection through the Hyper (side thread) ------------------- */

/* 502 (the Hyper, a peer or the private proxy unreachable, or the private
 * proxy stopping), 503 (a Hyper server stopping) and 504 (no answer in
 * time) may pass; anything else is a refusal. */
static int
incoming_transient(struct json_object *error)
{
	struct json_object *jc;
	int code;

	if (!json_object_object_get_ex(error, "code", &jc))
		return 0;
	code = json_object_get_int(jc);
	return code == HP_ERR_UNREACHABLE || code == HP_ERR_UNAVAILABLE ||
	    code == HP_ERR_TIMEOUT;
}

static void
incoming_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct incoming *in = arg;
	struct public *p = in->in_pub;

	if (error == NULL) {
		free(in);
		return;
	}
	in->in_transient = incoming_transient(error);
	/* A restart of the chain makes many of these, each retried (the
	 * client waits, public_client.c): a limited line for them. */
	if (in->in_transient && p->p_conf->pc_incoming_retry > 0)
		log_limited(&p->p_log_retry, LOG_LVL_INFO,
		    "%s.incomingConnection for %s failed: %s; trying again while the client "
		    "waits", in->in_operator, in->in_sni, json_object_to_json_string(error));
	else
		log_warnx("%s.incomingConnection for %s failed: %s", in->in_operator, in->in_sni,
		    json_object_to_json_string(error));
	/* Out of memory: the client is closed at accept_timeout instead. */
	if (loop_post(in->in_pub->p_loop, incoming_failed, in) < 0)
		free(in);
}

/* The "client" parameter: {"address", "port", "local_address", "local_port"}. */
static struct json_object *
incoming_client_add(struct json_object *o, const struct sockaddr_storage *ss,
    const char *akey, const char *pkey)
{
	char buf[INET6_ADDRSTRLEN] = "";
	int port;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s->sin_addr, buf, sizeof(buf));
		port = ntohs(s->sin_port);
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof(buf));
		port = ntohs(s->sin6_port);
	}
	json_object_object_add(o, akey, json_object_new_string(buf));
	json_object_object_add(o, pkey, json_object_new_int(port));
	return o;
}

static struct json_object *
incoming_client(const struct incoming *in)
{
	struct json_object *o = json_object_new_object();

	incoming_client_add(o, &in->in_peer, "address", "port");
	return incoming_client_add(o, &in->in_local, "local_address", "local_port");
}

static void
incoming_call(void *arg)
{
	struct incoming *in = arg;
	struct public *p = in->in_pub;
	struct json_object *params = json_object_new_object();
	char tok[64];

	b64_encode(in->in_token, TOKEN_LEN, tok);
	json_object_object_add(params, "domain", json_object_new_string(in->in_sni));
	json_object_object_add(params, "token", json_object_new_string(tok));
	json_object_object_add(params, "endpoint",
	    json_object_new_string(p->p_conf->pc_data_endpoint));
	if (in->in_have_addrs)
		json_object_object_add(params, "client", incoming_client(in));
	control_call(&p->p_ctl, in->in_operator, "incomingConnection", params,
	    incoming_reply, in);
	json_object_put(params);
}

/* Loop thread: a client is parked, its call goes to the side thread. */
void
public_incoming_post(struct public *p, struct incoming *in)
{
	control_post(&p->p_ctl, incoming_call, in);
}

/* --- JSON-RPC methods (side thread) ---------------------------------------- */

static struct json_object *
item_error(int code, const char *msg)
{
	return jsonrpc_error_new(code, "%s", msg);
}

/*
 * allowed_domains is checked when a domain is announced, and again: for
 * all of an operator's announcements at each of its calls (from the
 * `_client.entry` its Hyper sends), and, with a `directory` setting, for
 * everyone's at start (after the datastore replay) and whenever the
 * directory changes.  Without a directory, an operator whose
 * allowed_domains is narrowed keeps what it announced until its next call,
 * the expiry (at most ANNOUNCE_MAX_EXPIRY), or adminWithdrawConnections.
 */
struct recheck {
	const char              *rk_why;
	const char              *rk_op;          /* only its entries; NULL: all (rk_dir) */
	const char              *rk_self;        /* this proxy's operator name (item scope) */
	struct json_object      *rk_entry;       /* from a call (borrowed) or the directory */
	struct directory        *rk_dir;         /* NULL: rk_entry only */
	const char             **rk_allowed;
	int                      rk_nallowed;    /* -1: none */
	char                     rk_cached[ANNOUNCE_NAME_MAX];
};

static int
recheck_keep(void *arg, const struct announcement *a)
{
	struct recheck *rc = arg;
	int keep;

	if (rc->rk_dir == NULL) {
		if (strcmp(a->an_operator, rc->rk_op) != 0)
			return 1;
	} else if (strcmp(a->an_operator, rc->rk_cached) != 0) {
		/* the entries come sorted by domain: cache the last operator */
		free(rc->rk_allowed);
		rc->rk_allowed = NULL;
		if (rc->rk_entry)
			json_object_put(rc->rk_entry);
		rc->rk_entry = directory_client_entry(rc->rk_dir, a->an_operator);
		rc->rk_nallowed = rc->rk_entry == NULL ? -1 :
		    control_entry_allowed_domains(rc->rk_entry, rc->rk_self, &rc->rk_allowed);
		snprintf(rc->rk_cached, sizeof(rc->rk_cached), "%s", a->an_operator);
	}
	keep = rc->rk_nallowed >= 0 && announce_domain_allowed(a->an_domain,
	    rc->rk_allowed, (size_t)rc->rk_nallowed);
	if (!keep)
		log_warnx("announcement of %s by %s dropped: not in its allowed_domains (%s)",
		    a->an_domain, a->an_operator, rc->rk_why);
	return keep;
}

/* Drop what rc no longer allows, durably.  Returns how many, or -1. */
static int
public_recheck(struct public *p, struct recheck *rc)
{
	char err[256];
	int n;

	if ((n = datastore_filter(p->p_store, rc->rk_op, recheck_keep, rc, now_wall(),
	    err, sizeof(err))) < 0)
		log_warnx("dropping announcements (%s): %s", rc->rk_why, err);
	return n;
}

/* The caller's own announcements against the allowed_domains of its call. */
static void
public_recheck_caller(struct public *p, const char *caller, struct json_object *params)
{
	struct recheck rc;

	memset(&rc, 0, sizeof(rc));
	rc.rk_why = "its Hyper's directory entry at its call";
	rc.rk_op = caller;
	rc.rk_self = p->p_conf->pc_name;
	rc.rk_nallowed = control_allowed_domains(params, p->p_conf->pc_name, &rc.rk_allowed);
	public_recheck(p, &rc);
	free(rc.rk_allowed);
}

/* Everyone's announcements against the directory.  Returns how many were
 * dropped, or -1. */
int
public_recheck_directory(struct public *p, struct directory *dir, const char *why)
{
	struct recheck rc;
	int n;

	memset(&rc, 0, sizeof(rc));
	rc.rk_why = why;
	rc.rk_dir = dir;
	rc.rk_self = p->p_conf->pc_name;
	n = public_recheck(p, &rc);
	free(rc.rk_allowed);
	if (rc.rk_entry)
		json_object_put(rc.rk_entry);
	return n;
}

/* Side thread: expired announcements go away while running (lookups
 * already treat them as absent); the directory is polled for changes. */
static void
public_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct public *p = arg;
	int n;

	if ((n = announce_expire(p->p_announce, now_wall())) > 0)
		log_info("%d expired announcement(s) dropped", n);
	ticket_sweep(p->p_tickets, now_wall());         /* issue #16 */
}

static void
public_dirpoll(evutil_socket_t fd, short what, void *arg)
{
	struct public *p = arg;
	struct directory *dir;

	/* a batch is being written: look again at the next tick */
	if (p->p_commit != NULL || directory_watch_poll(p->p_watch) != 1)
		return;
	log_info("directory reloaded: re-checking allowed_domains");
	dir = directory_watch_get(p->p_watch);
	public_recheck_directory(p, dir, "directory changed");
	directory_unref(dir);
}

/* Runs on the side thread: its base has no locks. */
/* --- metrics (side thread, at a scrape) ----------------------------------- */

METRIC_GAUGE(m_announcements, "announcements",
    "Unexpired announcements held, by the operator that made them.", "operator")

/* Count the table per operator; an operator whose announcements are all
 * gone reads 0 (its series stays). */
static void
public_metrics_collect(void *arg)
{
	struct public *p = arg;
	struct announcement *v;
	int64_t counts[METRIC_MAX_SERIES] = { 0 };
	int n;

	if ((n = announce_list(p->p_announce, NULL, now_wall(), &v)) < 0)
		return;         /* out of memory: the last values stay */
	/* sorted by domain: a domain held by several instances counts once */
	for (int i = 0; i < n; i++)
		if (i == 0 || strcmp(v[i].an_domain, v[i - 1].an_domain) != 0)
			counts[metric_series(&m_announcements,
			    METRIC_VALUES_(v[i].an_operator))]++;
	free(v);
	for (int i = 0; i < METRIC_MAX_SERIES; i++)
		if (metric_series_used(&m_announcements, i))
			metric_set_at(&m_announcements, i, counts[i]);
}

static void public_side_post(void *ctx, void (*fn)(void *), void *arg);

void
public_side_timers(void *arg)
{
	struct public *p = arg;
	struct event_base *base = control_base(&p->p_ctl);
	struct timeval tv;

	metrics_collector_add(public_metrics_collect, p);
	/* issue #12: tickets bound to this instance, keys shared with the
	 * others on the same Redis */
	ticket_book_set_instance(p->p_tickets, p->p_instance);
	datastore_on_share(p->p_store, public_key_shared, p);
	/* redis: its thread connects and loads the table from now on */
	datastore_start(p->p_store, public_side_post, p);
	tv = tv_seconds(p->p_conf->pc_sweep_interval);
	if ((p->p_sweep = event_new(base, -1, EV_PERSIST, public_sweep, p)) == NULL ||
	    event_add(p->p_sweep, &tv) == -1)
		log_warnx("cannot start the announcement sweep timer");
	if (p->p_watch == NULL)
		return;
	tv = tv_seconds(p->p_conf->pc_dir_poll);
	if ((p->p_dirpoll = event_new(base, -1, EV_PERSIST, public_dirpoll, p)) == NULL ||
	    event_add(p->p_dirpoll, &tv) == -1)
		log_warnx("cannot start the directory poll timer");
}

static struct commit *
commit_new(struct public *p, struct jsonrpc_call *call, const char *caller, int announce,
    int n)
{
	struct commit *cm;

	if ((cm = calloc(1, sizeof(*cm))) == NULL ||
	    (announce && (cm->cm_staged = calloc((size_t)n + 1,
	    sizeof(*cm->cm_staged))) == NULL)) {
		free(cm);
		return NULL;
	}
	cm->cm_pub = p;
	cm->cm_call = call;
	cm->cm_announce = announce;
	cm->cm_n = n;
	snprintf(cm->cm_caller, sizeof(cm->cm_caller), "%s", caller);
	return cm;
}

static void
commit_free(struct commit *cm)
{
	if (cm->cm_result)
		json_object_put(cm->cm_result);
	free(cm->cm_staged);
	free(cm);
}

/* Answer the call of cm: its batch is durable (rc 0) or was dropped. */
static void
commit_reply(struct commit *cm, int rc, const char *err)
{
	struct json_object *res;
	char domain[ANNOUNCE_DOMAIN_MAX];

	if (rc == DATASTORE_UNAVAILABLE) {
		/* redis: the whole call fails, so that the caller retries it */
		log_warnx("%s by %s refused: %s", cm->cm_announce ? "announcements" :
		    "withdrawal", cm->cm_caller, err);
		jsonrpc_call_error(cm->cm_call, PUBLIC_ERR_UNAVAILABLE, "%s", err);
		commit_free(cm);
		return;
	}
	if (!cm->cm_announce) {
		if (rc < 0) {
			/* the caller gets no path or errno of ours, the log does */
			log_warnx("withdrawal by %s not stored: %s", cm->cm_caller, err);
			jsonrpc_call_error(cm->cm_call, JSONRPC_INTERNAL_ERROR, "not stored");
		} else {
			res = json_object_new_object();
			json_object_object_add(res, "withdrawn",
			    json_object_new_int(cm->cm_removed));
			jsonrpc_call_reply(cm->cm_call, res);
		}
		commit_free(cm);
		return;
	}
	if (rc < 0)
		log_warnx("announcements by %s not stored: %s", cm->cm_caller, err);
	for (int i = 0; i < cm->cm_n; i++) {
		struct json_object *jd;

		if (!cm->cm_staged[i])
			continue;
		if (rc < 0) {
			json_object_array_put_idx(cm->cm_result, (size_t)i,
			    item_error(JSONRPC_INTERNAL_ERROR, "not stored"));
			continue;
		}
		/* redis: another public proxy gave it to another operator */
		if (cm->cm_staged[i] > 0 && datastore_op_result(cm->cm_pub->p_store,
		    (size_t)cm->cm_staged[i] - 1) == DATASTORE_TAKEN) {
			json_object_array_put_idx(cm->cm_result, (size_t)i,
			    item_error(HP_ERR_CONFLICT, ANNOUNCE_MSG_TAKEN));
			continue;
		}
		if (json_object_object_get_ex(json_object_array_get_idx(cm->cm_conns,
		    (size_t)i), "domain", &jd) &&
		    announce_check_domain(json_object_get_string(jd), domain) == 0)
			log_info("announced %s by %s", domain, cm->cm_caller);
	}
	jsonrpc_call_reply(cm->cm_call, cm->cm_result);
	cm->cm_result = NULL;           /* stolen */
	commit_free(cm);
}

static void public_dispatch(struct public *p, struct jsonrpc_call *call);

static void
public_side_post(void *ctx, void (*fn)(void *), void *arg)
{
	struct public *p = ctx;

	control_post(&p->p_ctl, fn, arg);
}

/* The datastore's thread wrote the batch (side thread again). */
static void
commit_done(void *arg, int rc, const char *err)
{
	struct commit *cm = arg;
	struct public *p = cm->cm_pub;
	struct rpc_wait *w;
	struct jsonrpc_call *call;

	p->p_commit = NULL;
	commit_reply(cm, rc, err);
	while (p->p_commit == NULL && (w = TAILQ_FIRST(&p->p_waiting)) != NULL) {
		TAILQ_REMOVE(&p->p_waiting, w, w_entry);
		call = w->w_call;
		free(w);
		public_dispatch(p, call);
	}
}

/* Make cm's staged batch durable, then answer: with nothing to write or
 * memory only at once, else when the datastore's thread is done. */
static void
public_commit(struct public *p, struct commit *cm)
{
	char err[256] = "";
	int r;

	r = datastore_commit_async(p->p_store, public_side_post, p, commit_done, cm);
	if (r == 1) {
		p->p_commit = cm;
		return;
	}
	/* 0: nothing to write; -1: no thread (or memory only), so commit here */
	commit_reply(cm, r == 0 ? 0 : datastore_commit(p->p_store, now_wall(), err,
	    sizeof(err)), err);
}

/* Item count of list key, or -1 (with the call answered) when it is no
 * list or longer than max_announce_items. */
static int
rpc_items(struct public *p, struct jsonrpc_call *call, struct json_object *params,
    const char *key, struct json_object **list)
{
	size_t n;

	if (!json_object_object_get_ex(params, key, list) ||
	    !json_object_is_type(*list, json_type_array)) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "%s: expected a list", key);
		return -1;
	}
	n = json_object_array_length(*list);
	if (n > (size_t)p->p_conf->pc_max_announce_items) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
		    "%s: %zu items, at most %ld per call (max_announce_items)", key, n,
		    p->p_conf->pc_max_announce_items);
		return -1;
	}
	return (int)n;
}

/* The optional "instance" of an announcement or withdrawal call: which of
 * the operator's private proxies makes it (each keeps its own entries, so
 * one's withdrawal or expiry leaves another's standing).  Absent or null:
 * "".  0, or -1 with the call answered. */
static int
rpc_instance(struct jsonrpc_call *call, struct json_object *params,
    char out[ANNOUNCE_NAME_MAX])
{
	struct json_object *v;

	out[0] = '\0';
	if (!json_object_object_get_ex(params, "instance", &v) || v == NULL)
		return 0;
	/* a NUL inside the string would hide the rest from the check */
	if (!json_object_is_type(v, json_type_string) ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v) ||
	    !proxy_instance_id_valid(json_object_get_string(v))) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
		    "instance: expected 1 to %d letters, digits or . _ : -",
		    PROXY_INSTANCE_ID_MAX);
		return -1;
	}
	strlcpy(out, json_object_get_string(v), ANNOUNCE_NAME_MAX);
	return 0;
}

static void
rpc_announce(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct public *p = arg;
	struct json_object *conns, *result;
	struct commit *cm;
	const char **allowed;
	char inst[ANNOUNCE_NAME_MAX];
	int nallowed, n;
	size_t held;
	double now = now_wall();

	if (rpc_instance(call, params, inst) < 0)
		return;
	if ((nallowed = control_allowed_domains(params, p->p_conf->pc_name, &allowed)) < 0) {
		/* Before the answer: answering frees the call, its params
		 * and the caller's name in them. */
		public_recheck_caller(p, caller, params);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, ANNOUNCE_MSG_NOT_AUTHORIZED);
		return;
	}
	if ((n = rpc_items(p, call, params, "connections", &conns)) < 0) {
		free(allowed);
		return;
	}
	if ((cm = commit_new(p, call, caller, 1, n)) == NULL) {
		free(allowed);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	public_recheck_caller(p, caller, params);
	held = announce_count_operator(p->p_announce, caller, now);
	cm->cm_conns = conns;
	cm->cm_result = result = json_object_new_array();
	for (int i = 0; i < n; i++) {
		struct json_object *item = json_object_array_get_idx(conns, (size_t)i);
		char domain[ANNOUNCE_DOMAIN_MAX];
		struct announcement a, cur;
		const char *why = NULL;
		double exp = 0;
		size_t op;
		int rc;

		if ((rc = announce_item_domain(item, allowed, (size_t)nallowed, domain,
		    &why)) != 0 || (rc = announce_item_expiry(item, now, &exp, &why)) != 0) {
			json_object_array_add(result, item_error(rc, why));
			continue;
		}
		/* no expires_at: the longest allowed, in whole seconds (the
		 * store keeps whole seconds); re-announcing extends it */
		exp = announce_effective_expiry(exp, now);
		if (announce_lookup(p->p_announce, domain, NULL, now, &cur) == 0) {
			/* held already: by another operator, or not a new domain */
			if (strcmp(cur.an_operator, caller) != 0) {
				json_object_array_add(result, item_error(HP_ERR_CONFLICT,
				    ANNOUNCE_MSG_TAKEN));
				continue;
			}
		} else if (announce_find(p->p_announce, domain, NULL, NULL, &cur) == 0 &&
		    strcmp(cur.an_operator, caller) != 0 &&
		    datastore_stage_withdraw(p->p_store, domain, NULL, cur.an_operator) < 0) {
			/* another operator's expired entries go first: a domain
			 * has one operator in the table */
			json_object_array_add(result, item_error(JSONRPC_INTERNAL_ERROR,
			    "not stored"));
			continue;
		} else if (held >= (size_t)p->p_conf->pc_max_per_operator) {
			char msg[128];

			snprintf(msg, sizeof(msg), "too many announcements: at most %ld per "
			    "operator (max_announcements_per_operator)",
			    p->p_conf->pc_max_per_operator);
			json_object_array_add(result, item_error(PUBLIC_ERR_TOO_MANY, msg));
			continue;
		} else
			held++;
		if (announce_make(&a, domain, caller, inst, exp) < 0) {
			json_object_array_add(result, item_error(JSONRPC_INVALID_PARAMS,
			    "invalid announcement"));
			continue;
		}
		op = datastore_staged(p->p_store);
		if ((rc = datastore_stage_announce(p->p_store, &a)) < 0) {
			log_warnx("announcement of %s by %s not stored: out of memory",
			    domain, caller);
			json_object_array_add(result, item_error(JSONRPC_INTERNAL_ERROR,
			    "not stored"));
			continue;
		}
		cm->cm_staged[i] = rc == 0 ? (int)op + 1 : -1;
		json_object_array_add(result, NULL);
	}
	free(allowed);
	/* one write and one fdatasync for the whole call */
	public_commit(p, cm);
}

/* Stage the withdrawal of (domain, op) by instance (NULL: every instance's
 * entry).  1 or 0 (nothing to withdraw), -1 out of memory. */
static int
public_withdraw_one(struct public *p, const char *domain, const char *inst, const char *op)
{
	return datastore_stage_withdraw(p->p_store, domain, inst, op);
}

/* Answer {"withdrawn": removed} once the staged withdrawals are durable. */
static void
public_withdraw_commit(struct public *p, struct jsonrpc_call *call, const char *who,
    int removed)
{
	struct commit *cm;

	if ((cm = commit_new(p, call, who, 0, 0)) == NULL) {
		datastore_abort(p->p_store);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	cm->cm_removed = removed;
	public_commit(p, cm);
}

static void
rpc_withdraw(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct public *p = arg;
	struct json_object *domains;
	char inst[ANNOUNCE_NAME_MAX];
	int removed = 0, n, k;

	if (rpc_instance(call, params, inst) < 0)
		return;
	public_recheck_caller(p, caller, params);
	if ((n = rpc_items(p, call, params, "domains", &domains)) < 0)
		return;
	for (int i = 0; i < n; i++) {
		struct json_object *jd = json_object_array_get_idx(domains, (size_t)i);
		char domain[ANNOUNCE_DOMAIN_MAX];

		if (!json_object_is_type(jd, json_type_string) ||
		    announce_check_domain(json_object_get_string(jd), domain) < 0)
			continue;
		/* without "instance": every entry of the caller (SPEC 4.3) */
		if ((k = public_withdraw_one(p, domain, inst[0] != '\0' ? inst : NULL,
		    caller)) < 0) {
			datastore_abort(p->p_store);
			jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
			return;
		}
		removed += k;
	}
	public_withdraw_commit(p, call, caller, removed);
}

/* adminWithdrawConnections {domains: [...]} and/or {operator}: withdraw
 * anyone's announcements.  For the own operator's applications and for
 * callers in admin_group (the Hyper checks the directory's permissions
 * first; this is the proxy's own check). */
static void
rpc_admin_withdraw(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct public *p = arg;
	struct json_object *domains = NULL, *jop = NULL;
	struct announcement cur, *list;
	int removed = 0, n = 0, k;

	if (strcmp(caller, p->p_conf->pc_name) != 0 &&
	    !control_caller_in_group(params, p->p_conf->pc_admin_group)) {
		log_warnx("adminWithdrawConnections refused to %s: not in group %s", caller,
		    p->p_conf->pc_admin_group);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, ANNOUNCE_MSG_NOT_AUTHORIZED);
		return;
	}
	if (json_object_object_get_ex(params, "operator", &jop) &&
	    (!json_object_is_type(jop, json_type_string) ||
	    json_object_get_string_len(jop) == 0)) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "operator: expected a name");
		return;
	}
	if (json_object_object_get_ex(params, "domains", &domains) &&
	    (n = rpc_items(p, call, params, "domains", &domains)) < 0)
		return;
	if (jop == NULL && domains == NULL) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
		    "expected domains (a list) or operator");
		return;
	}
	for (int i = 0; i < n; i++) {
		struct json_object *jd = json_object_array_get_idx(domains, (size_t)i);
		char domain[ANNOUNCE_DOMAIN_MAX];

		if (!json_object_is_type(jd, json_type_string) ||
		    announce_check_domain(json_object_get_string(jd), domain) < 0 ||
		    announce_find(p->p_announce, domain, NULL,
		    jop ? json_object_get_string(jop) : NULL, &cur) < 0)
			continue;
		if ((k = public_withdraw_one(p, domain, NULL, cur.an_operator)) < 0)
			goto nomem;
		if (k > 0)
			log_info("announcement of %s by %s withdrawn by %s (admin)", domain,
			    cur.an_operator, caller);
		removed += k;
	}
	if (jop != NULL && domains == NULL) {
		/* every announcement of the operator, expired ones too */
		if ((n = announce_list(p->p_announce, json_object_get_string(jop), 0,
		    &list)) < 0)
			goto nomem;
		for (int i = 0; i < n; i++) {
			if ((k = public_withdraw_one(p, list[i].an_domain, NULL,
			    list[i].an_operator)) < 0) {
				free(list);
				goto nomem;
			}
			if (k > 0)
				log_info("announcement of %s by %s withdrawn by %s (admin)",
				    list[i].an_domain, list[i].an_operator, caller);
			removed += k;
		}
		free(list);
	}
	public_withdraw_commit(p, call, caller, removed);
	return;
nomem:
	datastore_abort(p->p_store);
	jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
}

static void
rpc_get(void *arg, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct public *p = arg;
	struct announcement *list;
	struct json_object *res;
	int n;

	public_recheck_caller(p, caller, params);
	res = json_object_new_array();
	n = announce_list(p->p_announce, caller, now_wall(), &list);
	/* the effective expiry: a missing expires_at was stored as the maximum */
	for (int i = 0; i < n; i++) {
		struct announcement a = list[i];
		struct json_object *item;

		/* the public side keeps the announcing instance in an_proxy */
		a.an_proxy[0] = '\0';
		item = announce_item_json(&a, 0);
		if (list[i].an_proxy[0] != '\0')
			json_object_object_add(item, "instance",
			    json_object_new_string(list[i].an_proxy));
		json_object_array_add(res, item);
	}
	free(list);
	jsonrpc_call_reply(call, res);
}

static const struct control_method public_methods[] = {
	{ "announceConnections", rpc_announce },
	{ "withdrawConnections", rpc_withdraw },
	{ "getAnnouncements", rpc_get },
	{ "adminWithdrawConnections", rpc_admin_withdraw },
	{ NULL, NULL },
};

static void
public_dispatch(struct public *p, struct jsonrpc_call *call)
{
	struct json_object *params = jsonrpc_call_params(call);
	const char *caller = control_caller(params);

	/* issue #16: the pool's methods */
	if (caller != NULL &&
	    public_tickets_rpc(p, call, jsonrpc_call_method(call), caller, params))
		return;
	control_dispatch(public_methods, p, call);
}

void
public_rpc(void *arg, struct jsonrpc_call *call)
{
	struct public *p = arg;
	struct rpc_wait *w;

	if (p->p_commit == NULL) {
		public_dispatch(p, call);
		return;
	}
	/* a batch is being written: after it, in order */
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	w->w_call = call;
	TAILQ_INSERT_TAIL(&p->p_waiting, w, w_entry);
}

void
public_side_free(struct public *p)
{
	struct rpc_wait *w;

	metrics_collector_remove(public_metrics_collect, p);
	if (p->p_sweep)
		event_free(p->p_sweep);
	if (p->p_dirpoll)
		event_free(p->p_dirpoll);
	p->p_sweep = p->p_dirpoll = NULL;
	/* join the datastore's thread before the side goes: its completion
	 * is posted there (and dropped, unrun) */
	datastore_close(p->p_store);
	p->p_store = NULL;
	if (p->p_commit)
		commit_free(p->p_commit);
	p->p_commit = NULL;
	while ((w = TAILQ_FIRST(&p->p_waiting)) != NULL) {
		TAILQ_REMOVE(&p->p_waiting, w, w_entry);
		free(w);
	}
}
