/* reload.c - a proxy re-reads its settings without a restart (reload.h).
 *
 * Threads: reload_request() from any thread (the loop's signal hook); the
 * reload itself on the side thread; the loop-thread values in a closure
 * posted to the loop.  Each live setting is written by the thread that
 * reads it, so the two threads still share nothing but posted closures. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <json-c/json.h>

#include "control.h"
#include "log.h"
#include "loop.h"
#include "proxy_conf.h"
#include "ratelimit.h"
#include "reload.h"
#include "settings.h"
#include "side.h"
#include "tls.h"
#include "util.h"

#define RELOAD_RATELIMIT_ENTRIES	65536	/* as public.c's tables */

struct reload {
	struct control		*r_ct;
	struct loop		*r_loop;
	struct proxy_conf	*r_pc;		/* live settings */
	struct reload_role	 r_role;
	struct proxy_conf	 r_file;	/* the file as last applied: the
						 * diff's baseline (r_pc holds
						 * values adjusted at start) */
	char			*r_paths;	/* PROXY_SETTINGS */
	int			 r_own_level;	/* log_level from the file (no --log-level) */
	struct event		 r_timer;	/* side: the next reload */
	double			 r_last;	/* monotonic time of the last reload */
	atomic_int		 r_posted;	/* a schedule closure is queued */
	int			 r_on;
};

static struct reload reload_state;

/* Loop-thread values of one reload, posted to the loop. */
struct reload_post {
	struct reload		*rp_r;
	double			 rp_hello, rp_accept, rp_token, rp_connect, rp_shutdown;
	struct rate_limit	*rp_limits, *rp_data_limits;	/* NULL: unchanged */
	int			 rp_nlimits, rp_ndata_limits;
};

static int
reload_streq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int
reload_strveq(char *const *a, char *const *b)
{
	for (; a != NULL && b != NULL && *a != NULL && *b != NULL; a++, b++)
		if (strcmp(*a, *b) != 0)
			return 0;
	return (a == NULL || *a == NULL) && (b == NULL || *b == NULL);
}

static int
reload_limitseq(const struct rate_limit *a, int na, const struct rate_limit *b, int nb)
{
	if (na != nb)
		return 0;
	for (int i = 0; i < na; i++)
		if (a[i].rl_window != b[i].rl_window || a[i].rl_limit != b[i].rl_limit)
			return 0;
	return 1;
}

static int
reload_announcementseq(const struct proxy_conf *o, const struct proxy_conf *n)
{
	if (o->pc_nannouncements != n->pc_nannouncements)
		return 0;
	for (int i = 0; i < o->pc_nannouncements; i++) {
		const struct static_announcement *a = &o->pc_announcements[i];
		const struct static_announcement *b = &n->pc_announcements[i];

		if (!reload_streq(a->sa_domain, b->sa_domain) ||
		    !reload_streq(a->sa_proxy, b->sa_proxy) ||
		    a->sa_expires_at != b->sa_expires_at ||
		    a->sa_proxy_protocol != b->sa_proxy_protocol)
			return 0;
	}
	return 1;
}

static int
reload_publicseq(const struct proxy_conf *o, const struct proxy_conf *n)
{
	if (o->pc_npublic_proxies != n->pc_npublic_proxies)
		return 0;
	for (int i = 0; i < o->pc_npublic_proxies; i++)
		if (!reload_streq(o->pc_public_proxies[i].pp_name, n->pc_public_proxies[i].pp_name) ||
		    !reload_strveq(o->pc_public_proxies[i].pp_data_endpoints,
		    n->pc_public_proxies[i].pp_data_endpoints) ||
		    o->pc_public_proxies[i].pp_pool_size != n->pc_public_proxies[i].pp_pool_size)
			return 0;
	return 1;
}

static void
reload_announcements_free(struct static_announcement *a, int n)
{
	for (int i = 0; i < n; i++) {
		free(a[i].sa_domain);
		free(a[i].sa_proxy);
	}
	free(a);
}

/* A copy of n's static announcements for the live settings; NULL with
 * *count 0 when there are none, NULL with *count > 0 when out of memory
 * (then the live settings keep the list they had: only private.c reads it,
 * at start). */
static struct static_announcement *
reload_announcements_dup(const struct proxy_conf *n, int *count)
{
	struct static_announcement *c;

	*count = n->pc_nannouncements;
	if (*count == 0)
		return NULL;
	if ((c = calloc((size_t)*count, sizeof(*c))) == NULL)
		return NULL;
	for (int i = 0; i < *count; i++) {
		c[i] = n->pc_announcements[i];
		c[i].sa_domain = c[i].sa_domain != NULL ? strdup(c[i].sa_domain) : NULL;
		c[i].sa_proxy = c[i].sa_proxy != NULL ? strdup(c[i].sa_proxy) : NULL;
		if ((n->pc_announcements[i].sa_domain != NULL && c[i].sa_domain == NULL) ||
		    (n->pc_announcements[i].sa_proxy != NULL && c[i].sa_proxy == NULL)) {
			reload_announcements_free(c, i + 1);
			return NULL;
		}
	}
	return c;
}

/*
 * The first key (below the role's section) whose change needs a restart, or
 * NULL.  These are bound to a socket, sized or opened at start, or
 * (public_proxies; static announcements when the role has no hook for
 * them) state the role builds once.
 */
static const char *
reload_restart_key(const struct reload *r, const struct proxy_conf *o,
    const struct proxy_conf *n)
{
#define RESTART_IF(cond, key)	do { if (cond) return (key); } while (0)
	RESTART_IF(!reload_streq(o->pc_name, n->pc_name), "name");
	RESTART_IF(o->pc_reuse_port != n->pc_reuse_port, "reuse_port");
	RESTART_IF(!reload_streq(o->pc_instance_id, n->pc_instance_id), "instance_id");
	RESTART_IF(!reload_streq(o->pc_handover_socket, n->pc_handover_socket),
	    "handover_socket");
	RESTART_IF(!reload_streq(o->pc_rpc_server_bind, n->pc_rpc_server_bind),
	    "jsonrpc_server.bind_address");
	RESTART_IF(!reload_streq(o->pc_rpc_server_path, n->pc_rpc_server_path),
	    "jsonrpc_server.path");
	RESTART_IF(!reload_streq(o->pc_rpc_client_url, n->pc_rpc_client_url),
	    "jsonrpc_client.endpoint");
	RESTART_IF(!reload_streq(o->pc_rpc_client_tls.server_name,
	    n->pc_rpc_client_tls.server_name), "jsonrpc_client.tls.server_name");
	RESTART_IF(!reload_streq(o->pc_datastore_file, n->pc_datastore_file),
	    "datastore.settings.filename");
	RESTART_IF(o->pc_datastore_redis != n->pc_datastore_redis, "datastore.type");
	RESTART_IF(!reload_streq(o->pc_redis_address, n->pc_redis_address) ||
	    !reload_streq(o->pc_redis_prefix, n->pc_redis_prefix) ||
	    !reload_streq(o->pc_redis_password, n->pc_redis_password) ||
	    o->pc_redis_timeout != n->pc_redis_timeout, "datastore.settings");
	RESTART_IF(o->pc_relay_buffers != n->pc_relay_buffers, "relay_buffers");
	RESTART_IF(o->pc_relay_buffer_size != n->pc_relay_buffer_size, "relay_buffer_size");
	RESTART_IF(o->pc_splice_threshold != n->pc_splice_threshold, "splice_threshold");
	RESTART_IF(o->pc_pipe_size != n->pc_pipe_size, "pipe_size");
	RESTART_IF(o->pc_max_pipes != n->pc_max_pipes, "max_pipes");
	RESTART_IF(o->pc_max_connections != n->pc_max_connections, "max_connections");
	/* The relay re-arms a live pair's timers with the current value. */
	RESTART_IF(o->pc_idle_timeout != n->pc_idle_timeout, "idle_timeout");
	RESTART_IF(o->pc_stall_timeout != n->pc_stall_timeout, "stall_timeout");
	if (o->pc_role == PROXY_PUBLIC) {
		RESTART_IF(!reload_streq(o->pc_tls_bind, n->pc_tls_bind), "tls_bind_address");
		RESTART_IF(!reload_streq(o->pc_data_bind, n->pc_data_bind),
		    "internal_bind_address");
		RESTART_IF(!reload_streq(o->pc_data_endpoint, n->pc_data_endpoint),
		    "internal_endpoint");
		RESTART_IF(o->pc_hello_max_bytes != n->pc_hello_max_bytes, "hello_max_bytes");
		RESTART_IF(o->pc_max_per_source != n->pc_max_per_source,
		    "max_connections_per_source");
		RESTART_IF(o->pc_max_data_connections != n->pc_max_data_connections,
		    "max_data_connections");
		RESTART_IF(memcmp(&o->pc_rate_prefixes, &n->pc_rate_prefixes,
		    sizeof(o->pc_rate_prefixes)) != 0, "rate_limit_prefixes");
		RESTART_IF(o->pc_sweep_interval != n->pc_sweep_interval,
		    "announce_sweep_interval");
		RESTART_IF(!reload_strveq(o->pc_dir_paths, n->pc_dir_paths),
		    "directory.settings.path");
		RESTART_IF(o->pc_dir_poll != n->pc_dir_poll, "directory.settings.poll_interval");
		/* issue #16: read once into the ticket book and the pool's timers */
		RESTART_IF(o->pc_ticket_lifetime != n->pc_ticket_lifetime, "ticket_lifetime");
		RESTART_IF(o->pc_ticket_key_lifetime != n->pc_ticket_key_lifetime,
		    "ticket_key_lifetime");
		RESTART_IF(o->pc_max_pooled != n->pc_max_pooled, "max_pooled_per_operator");
		RESTART_IF(o->pc_pool_idle_lifetime != n->pc_pool_idle_lifetime,
		    "pool_idle_lifetime");
		/* the retry timer lists are made at start (public_client.c) */
		RESTART_IF(o->pc_incoming_retry != n->pc_incoming_retry,
		    "incoming_retry_backoff");
		RESTART_IF(o->pc_pool_wait != n->pc_pool_wait, "pool_wait");
	} else {
		RESTART_IF(!reload_streq(o->pc_internal_address, n->pc_internal_address),
		    "internal_endpoint.address");
		RESTART_IF(!reload_publicseq(o, n), "public_proxies");
		/* issue #16: the keepers and their timers are made once */
		RESTART_IF(o->pc_pool_size != n->pc_pool_size, "pool_size");
		RESTART_IF(o->pc_pool_batch != n->pc_pool_batch, "pool_batch");
		RESTART_IF(o->pc_frame_timeout != n->pc_frame_timeout, "token_timeout");
	}
	RESTART_IF(r->r_role.rr_announcements == NULL && !reload_announcementseq(o, n),
	    "announcements");
	return NULL;
#undef RESTART_IF
}

static void
reload_changed(char *buf, size_t len, const char *what)
{
	size_t n = strlen(buf);

	snprintf(buf + n, len - n, "%s%s", n > 0 ? ", " : "", what);
}

/* Loop thread: the values the loop reads. */
static void
reload_apply_loop(void *arg)
{
	struct reload_post *rp = arg;
	struct reload *r = rp->rp_r;
	struct proxy_conf *pc = r->r_pc;
	const struct reload_role *role = &r->r_role;
	struct ratelimit *rl;

	pc->pc_hello_timeout = rp->rp_hello;
	pc->pc_accept_timeout = rp->rp_accept;
	pc->pc_token_timeout = rp->rp_token;
	pc->pc_connect_timeout = rp->rp_connect;
	pc->pc_shutdown_timeout = rp->rp_shutdown;
	/* Timers armed before keep their deadline; new ones get the new
	 * duration (a shorter one may fire late by at most the difference,
	 * since a list is kept in arming order). */
	if (role->rr_hello_timers != NULL)
		role->rr_hello_timers->tl_ms = (uint64_t)(rp->rp_hello * 1000);
	if (role->rr_park_timers != NULL)
		role->rr_park_timers->tl_ms = (uint64_t)(rp->rp_accept * 1000);
	if (role->rr_token_timers != NULL)
		role->rr_token_timers->tl_ms = (uint64_t)(rp->rp_token * 1000);
	/* New limits start with full buckets. */
	if (rp->rp_limits != NULL && role->rr_limits != NULL &&
	    (rl = ratelimit_new(rp->rp_limits, rp->rp_nlimits, &pc->pc_rate_prefixes,
	    RELOAD_RATELIMIT_ENTRIES)) != NULL) {
		ratelimit_free(*role->rr_limits);
		*role->rr_limits = rl;
		free(pc->pc_rate_limits);
		pc->pc_rate_limits = rp->rp_limits;
		pc->pc_nrate_limits = rp->rp_nlimits;
		rp->rp_limits = NULL;
	}
	if (rp->rp_data_limits != NULL && role->rr_data_limits != NULL &&
	    (rl = ratelimit_new(rp->rp_data_limits, rp->rp_ndata_limits,
	    &pc->pc_rate_prefixes, RELOAD_RATELIMIT_ENTRIES)) != NULL) {
		ratelimit_free(*role->rr_data_limits);
		*role->rr_data_limits = rl;
		free(pc->pc_data_rate_limits);
		pc->pc_data_rate_limits = rp->rp_data_limits;
		pc->pc_ndata_rate_limits = rp->rp_ndata_limits;
		rp->rp_data_limits = NULL;
	}
	free(rp->rp_limits);
	free(rp->rp_data_limits);
	free(rp);
}

static struct rate_limit *
reload_limits_dup(const struct rate_limit *a, int n)
{
	struct rate_limit *c = calloc((size_t)(n > 0 ? n : 1), sizeof(*c));

	if (c != NULL && n > 0)
		memcpy(c, a, sizeof(*c) * (size_t)n);
	return c;
}

/* The file and key of a reload error, from a fresh read of the files. */
static void
reload_error(struct reload *r, const char *key, const char *why, char *err, size_t errlen)
{
	const char *sec = r->r_pc->pc_role == PROXY_PUBLIC ? "public" : "private";
	struct json_object *tree;
	char path[256], e[64];

	snprintf(path, sizeof(path), "%s.%s", sec, key);
	tree = settings_load(r->r_paths, e, sizeof(e));
	snprintf(err, errlen, "%s: %s: %s", tree != NULL ? settings_origin_at(tree, path) : "?",
	    path, why);
	if (tree != NULL)
		json_object_put(tree);
}

/* A TLS block that cannot be built: the key of the file it names when the
 * reason starts with one ("key_file PATH: reason"), else the block's. */
static void
reload_tls_error(struct reload *r, const char *block, const char *why, char *err,
    size_t errlen)
{
	static const char *const files[] = { "certificate_file", "key_file",
	    "ca_certificate_files" };
	char key[128];
	size_t n;

	snprintf(key, sizeof(key), "%s", block);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		n = strlen(files[i]);
		if (strncmp(why, files[i], n) == 0 && (why[n] == ' ' || why[n] == ':')) {
			snprintf(key, sizeof(key), "%s.%s", block, files[i]);
			break;
		}
	}
	reload_error(r, key, why, err, errlen);
}

/* Side thread: one reload. */
static void
reload_run(evutil_socket_t fd, short ev, void *arg)
{
	struct reload *r = arg;
	struct proxy_conf *pc = r->r_pc, *o = &r->r_file, nc;
	struct reload_post *rp;
	struct static_announcement *anns;
	const char *key;
	int nanns;
	char err[1024], why[512], changed[512], fp_old[2][65], fp_new[2][65], *s;
	int lvl;

	r->r_last = now_mono();
	changed[0] = '\0';
	if (proxy_conf_load(r->r_paths, pc->pc_role, &nc, err, sizeof(err)) == -1) {
		log_warnx("reload failed, keeping the old settings: %s", err);
		return;
	}
	if ((key = reload_restart_key(r, o, &nc)) != NULL) {
		reload_error(r, key, "cannot change without a restart", err, sizeof(err));
		goto fail;
	}
	if ((rp = calloc(1, sizeof(*rp))) == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	tls_ctx_fingerprint(r->r_ct->ct_server_ctx, fp_old[0]);
	tls_ctx_fingerprint(r->r_ct->ct_client_ctx, fp_old[1]);
	if (control_reload(r->r_ct, &nc, &key, why, sizeof(why)) == -1) {
		reload_tls_error(r, key, why, err, sizeof(err));
		free(rp);
		goto fail;
	}

	/* From here on nothing fails: apply. */
	tls_ctx_fingerprint(r->r_ct->ct_server_ctx, fp_new[0]);
	tls_ctx_fingerprint(r->r_ct->ct_client_ctx, fp_new[1]);
	if (strcmp(fp_old[0], fp_new[0]) != 0)
		reload_changed(changed, sizeof(changed), "jsonrpc_server certificate");
	if (strcmp(fp_old[1], fp_new[1]) != 0)
		reload_changed(changed, sizeof(changed), "jsonrpc_client certificate");
	if (o->pc_rpc_connect_timeout != nc.pc_rpc_connect_timeout ||
	    o->pc_rpc_timeout != nc.pc_rpc_timeout)
		reload_changed(changed, sizeof(changed), "jsonrpc_client timeouts");
	pc->pc_rpc_connect_timeout = nc.pc_rpc_connect_timeout;
	pc->pc_rpc_timeout = nc.pc_rpc_timeout;

	/* Side-thread values. */
	if (!reload_streq(o->pc_admin_group, nc.pc_admin_group) &&
	    (s = nc.pc_admin_group != NULL ? strdup(nc.pc_admin_group) : NULL) != NULL) {
		free(pc->pc_admin_group);
		pc->pc_admin_group = s;
		reload_changed(changed, sizeof(changed), "admin_group");
	}
	if (o->pc_max_announce_items != nc.pc_max_announce_items ||
	    o->pc_max_per_operator != nc.pc_max_per_operator)
		reload_changed(changed, sizeof(changed), "announcement limits");
	pc->pc_max_announce_items = nc.pc_max_announce_items;
	pc->pc_max_per_operator = nc.pc_max_per_operator;
	if (o->pc_announce_interval != nc.pc_announce_interval)
		reload_changed(changed, sizeof(changed), "announce_interval");
	pc->pc_announce_interval = nc.pc_announce_interval;
	if (o->pc_reload_interval != nc.pc_reload_interval)
		reload_changed(changed, sizeof(changed), "reload_interval");
	pc->pc_reload_interval = nc.pc_reload_interval;
	if (!reload_announcementseq(o, &nc) && r->r_role.rr_announcements != NULL) {
		/* The role diffs the two lists against its table; the live
		 * settings then hold the new list. */
		r->r_role.rr_announcements(r->r_role.rr_arg, o, &nc);
		reload_changed(changed, sizeof(changed), "announcements");
		if ((anns = reload_announcements_dup(&nc, &nanns)) != NULL || nanns == 0) {
			reload_announcements_free(pc->pc_announcements, pc->pc_nannouncements);
			pc->pc_announcements = anns;
			pc->pc_nannouncements = nanns;
		}
	}
	if (!reload_streq(o->pc_log_level, nc.pc_log_level)) {
		reload_changed(changed, sizeof(changed), "log_level");
		if (r->r_own_level && (lvl = log_level_parse(nc.pc_log_level)) >= 0)
			log_init(pc->pc_role == PROXY_PUBLIC ? "proxy-public" : "proxy-private",
			    (enum log_level)lvl);
	}

	/* Loop-thread values. */
	rp->rp_r = r;
	rp->rp_hello = nc.pc_hello_timeout;
	rp->rp_accept = nc.pc_accept_timeout;
	rp->rp_token = nc.pc_token_timeout;
	rp->rp_connect = nc.pc_connect_timeout;
	rp->rp_shutdown = nc.pc_shutdown_timeout;
	if (o->pc_hello_timeout != nc.pc_hello_timeout ||
	    o->pc_accept_timeout != nc.pc_accept_timeout ||
	    o->pc_token_timeout != nc.pc_token_timeout ||
	    o->pc_connect_timeout != nc.pc_connect_timeout ||
	    o->pc_shutdown_timeout != nc.pc_shutdown_timeout)
		reload_changed(changed, sizeof(changed), "timeouts");
	if (!reload_limitseq(o->pc_rate_limits, o->pc_nrate_limits, nc.pc_rate_limits,
	    nc.pc_nrate_limits)) {
		rp->rp_limits = reload_limits_dup(nc.pc_rate_limits, nc.pc_nrate_limits);
		rp->rp_nlimits = nc.pc_nrate_limits;
		reload_changed(changed, sizeof(changed), "tcp_rate_limits");
	}
	if (!reload_limitseq(o->pc_data_rate_limits, o->pc_ndata_rate_limits,
	    nc.pc_data_rate_limits, nc.pc_ndata_rate_limits)) {
		rp->rp_data_limits = reload_limits_dup(nc.pc_data_rate_limits,
		    nc.pc_ndata_rate_limits);
		rp->rp_ndata_limits = nc.pc_ndata_rate_limits;
		reload_changed(changed, sizeof(changed), "data_rate_limits");
	}
	if (loop_post(r->r_loop, reload_apply_loop, rp) == -1) {
		free(rp->rp_limits);
		free(rp->rp_data_limits);
		free(rp);
		log_warnx("reload: the timeouts and rate limits could not reach the loop");
	}
	proxy_conf_free(o);
	*o = nc;
	log_info("reloaded settings: %s", changed[0] != '\0' ? changed : "nothing changed");
	return;
fail:
	proxy_conf_free(&nc);
	log_warnx("reload failed, keeping the old settings: %s", err);
}

/* Side thread: one reload soon; a storm is one reload per interval. */
static void
reload_schedule(void *arg)
{
	struct reload *r = arg;
	struct timeval tv;
	double wait;

	atomic_store(&r->r_posted, 0);
	if (evtimer_pending(&r->r_timer, NULL))
		return;
	wait = r->r_last + r->r_pc->pc_reload_interval - now_mono();
	tv = tv_seconds(wait > 0 ? wait : 0);
	evtimer_add(&r->r_timer, &tv);
}

void
reload_request(void)
{
	struct reload *r = &reload_state;

	if (!r->r_on || atomic_exchange(&r->r_posted, 1))
		return;
	side_post(r->r_ct->ct_side, reload_schedule, r);
}

int
reload_init(struct control *ct, struct loop *loop, struct proxy_conf *pc,
    const struct reload_role *role)
{
	struct reload *r = &reload_state;
	const char *paths = getenv("PROXY_SETTINGS");
	char err[1024];
	struct event_base *base = side_base(ct->ct_side);

	r->r_ct = ct;
	r->r_loop = loop;
	r->r_pc = pc;
	r->r_role = *role;
	r->r_last = 0;
	if (paths == NULL || (r->r_paths = strdup(paths)) == NULL ||
	    proxy_conf_load(r->r_paths, pc->pc_role, &r->r_file, err, sizeof(err)) == -1) {
		free(r->r_paths);
		r->r_paths = NULL;
		log_warnx("reload: off (%s)", paths == NULL ? "PROXY_SETTINGS is not set" :
		    "the settings changed since the start");
		return -1;
	}
	r->r_own_level = log_level_parse(pc->pc_log_level) == (int)log_get_level();
	/* Static storage: the side base frees nothing of it, and a proxy runs
	 * one role, so one state per process. */
	event_assign(&r->r_timer, base, -1, 0, reload_run, r);
	r->r_on = 1;
	return 0;
}
