/* private.c - `proxy run private` (SPEC 5): the thin role file.
 *
 * Plugs the private proxy's pieces into the skeleton (proxy.h): the
 * JSON-RPC server, the announcement table with its datastore and the
 * static announcements, the addresses resolved at start, the drain.  The
 * machines and the methods live in private_announcer.c (side thread),
 * private_dial.c (loop thread) and private_rpc.c (side thread); their
 * state: private_int.h.
 *
 * Threads: main (the io_uring loop) for everything here; private_started
 * posts the announcer's first pass to the side thread, and
 * private_side_stopped runs once that thread is joined. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "log.h"
#include "loop.h"
#include "private_pool.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "reload.h"
#include "util.h"
#include "private_int.h"

/* ---- start ---------------------------------------------------------------- */

/* One static announcement of the settings into a; -1 (logged) when it
 * cannot be served.  At start and at a reload (private_static_reload). */
int
private_static_make(struct private *pv, const struct static_announcement *sa,
    struct announcement *a)
{
	const char *name = pv->pv_conf->pc_name;

	if (strcmp(sa->sa_proxy, name) == 0) {
		log_warnx("announcement %s: proxy is this proxy's own name; skipped",
		    sa->sa_domain);
		return -1;
	}
	if (announce_make(a, sa->sa_domain, name, sa->sa_proxy, sa->sa_expires_at) < 0) {
		log_warnx("announcement %s to %s: invalid; skipped", sa->sa_domain,
		    sa->sa_proxy);
		return -1;
	}
	a->an_proxy_protocol = sa->sa_proxy_protocol;
	if (sa->sa_expires_at != 0 && sa->sa_expires_at <= now_wall())
		log_warnx("announcement %s to %s: expired already", sa->sa_domain,
		    sa->sa_proxy);
	return 0;
}

/* Static announcements from the settings, after the stored ones, so the
 * settings win for the same (domain, proxy). */
static void
private_load_static(struct private *pv)
{
	struct proxy_conf *pc = pv->pv_conf;
	struct announcement a;

	for (int i = 0; i < pc->pc_nannouncements; i++)
		if (private_static_make(pv, &pc->pc_announcements[i], &a) == 0 &&
		    announce_put(pv->pv_table, &a) < 0)
			fatalx("out of memory");
}

/*
 * Resolve every address this proxy will dial, once, here on the main
 * thread before the side thread starts: the internal server and the data
 * endpoints of each public proxy (public_proxies, plus the default list
 * for any other).  incomingConnection then only compares and copies.
 * Resolving at start rather than per call with evdns_getaddrinfo: the
 * names come only from the settings, so there is nothing to look up per
 * call, and the control thread never waits for a resolver.  The price is
 * that a DNS change of one of these names needs a restart.
 */
static int
private_resolve(struct private *pv, char *err, size_t errlen)
{
	struct proxy_conf *pc = pv->pv_conf;
	static const char *const defaults[] = { PROXY_DATA_ENDPOINT_DEFAULT, NULL };
	char e[256];

	if (addr_parse(pc->pc_internal_address, &pv->pv_int_sa, &pv->pv_int_salen, e,
	    sizeof(e)) < 0) {
		snprintf(err, errlen, "internal_endpoint: %s", e);
		return -1;
	}
	pv->pv_npublics = pc->pc_npublic_proxies + 1;
	if ((pv->pv_publics = calloc((size_t)pv->pv_npublics, sizeof(*pv->pv_publics))) == NULL)
		fatal("calloc");
	for (int i = 0; i < pv->pv_npublics; i++) {
		struct public_peer *pb = &pv->pv_publics[i];
		const char *const *eps = i < pc->pc_npublic_proxies ?
		    (const char *const *)pc->pc_public_proxies[i].pp_data_endpoints : defaults;

		pb->pb_name = i < pc->pc_npublic_proxies ? pc->pc_public_proxies[i].pp_name : NULL;
		while (eps[pb->pb_neps] != NULL)
			pb->pb_neps++;
		if ((pb->pb_eps = calloc((size_t)pb->pb_neps, sizeof(*pb->pb_eps))) == NULL)
			fatal("calloc");
		for (int j = 0; j < pb->pb_neps; j++) {
			struct data_endpoint *de = &pb->pb_eps[j];

			de->ep_name = eps[j];
			if (addr_parse(eps[j], &de->ep_sa, &de->ep_salen, e, sizeof(e)) < 0) {
				snprintf(err, errlen, "data endpoint of %s: %s",
				    pb->pb_name ? pb->pb_name : "public proxies not in public_proxies",
				    e);
				return -1;
			}
		}
	}
	return 0;
}

static void
private_publics_free(struct private *pv)
{
	for (int i = 0; i < pv->pv_npublics; i++)
		free(pv->pv_publics[i].pb_eps);
	free(pv->pv_publics);
	pv->pv_publics = NULL;
	pv->pv_npublics = 0;
}

/* proxy_hooks: the skeleton's start and stop (proxy.h). */
static int
private_bind(struct proxy *px, char *err, size_t errlen)
{
	struct private *pv = px->px_role;

	return control_bind(&pv->pv_ctl, private_rpc, pv, err, errlen);
}

/* issue #16 (private_pool.h, pe_drained; loop thread) */
static void
private_pool_drained(struct private *pv)
{
	proxy_drained(&pv->pv_px);
}

static int
private_open(struct proxy *px)
{
	struct private *pv = px->px_role;
	char err[512];

	if ((pv->pv_table = announce_table_new()) == NULL)
		fatalx("out of memory");
	/* no filename: memory only (datastore.h) */
	pv->pv_store = datastore_open(pv->pv_conf->pc_datastore_file, pv->pv_table, now_wall(),
	    err, sizeof(err));
	if (pv->pv_store == NULL) {
		log_errorx("private.datastore.settings.filename: %s", err);
		return -1;
	}
	private_load_static(pv);
	proxy_instance_id(pv->pv_conf, pv->pv_instance);
	if (private_resolve(pv, err, sizeof(err)) < 0) {
		log_warnx("%s", err);
		return -1;
	}
	/* issue #16 */
	if ((pv->pv_pool = private_pool_new(&(struct private_pool_env){
	    .pe_pv = pv, .pe_conf = pv->pv_conf, .pe_ctl = &pv->pv_ctl,
	    .pe_table = pv->pv_table, .pe_nsockets = &pv->pv_nsockets,
	    .pe_stopping = &pv->pv_stopping, .pe_endpoint = private_pool_endpoint,
	    .pe_join = private_pool_join, .pe_drained = private_pool_drained })) == NULL)
		fatalx("out of memory");
	return 0;
}

static void
private_start(struct proxy *px)
{
	struct private *pv = px->px_role;

	pv->pv_loop = px->px_loop;
	pv->pv_relay = px->px_relay;
	private_pool_start(pv->pv_pool, pv->pv_loop);   /* issue #16 */
	reload_init(&pv->pv_ctl, pv->pv_loop, pv->pv_conf, &(struct reload_role){
	    .rr_announcements = private_static_reload, .rr_arg = pv });
}

static void
private_started(struct proxy *px)
{
	struct private *pv = px->px_role;
	struct proxy_conf *pc = pv->pv_conf;

	log_info("%s: instance %s, JSON-RPC on %s, internal server %s, %zu announcement(s), "
	    "io_uring %s", pc->pc_name, pv->pv_instance, pc->pc_rpc_server_bind,
	    pc->pc_internal_address, announce_count(pv->pv_table), loop_mode(pv->pv_loop));
	control_post(&pv->pv_ctl, private_announce_start, pv);
}

/* Stop: the idle pooled connections first (their public proxy drops them
 * from its pool as their FIN arrives), then no more RPC (incomingConnection
 * answers 502 "shutting down" until the side thread stops right after, so
 * the public proxy tries again and its client waits); the dial jobs already
 * posted (each answered "ok") and the relays may finish. */
static void
private_drain(struct proxy *px)
{
	struct private *pv = px->px_role;

	atomic_store(&pv->pv_stopping, 1);
	private_pool_drain(pv->pv_pool);        /* issue #16: idle pooled ones first */
}

/* shutdown_timeout is over: the dial jobs still connecting go too. */
static void
private_force(struct proxy *px)
{
	private_dials_cancel(px->px_role);
}

static long
private_held(struct proxy *px)
{
	struct private *pv = px->px_role;

	return atomic_load(&pv->pv_nsockets);
}

/* The targets' timers belong to the side thread's base; the client fails
 * its calls in control_stop, after them (see announce_reply in
 * private_announcer.c). */
static void
private_side_stopped(struct proxy *px)
{
	struct private *pv = px->px_role;

	atomic_store(&pv->pv_stopping, 1);
	private_targets_free(pv);
	private_pool_side_stopped(pv->pv_pool); /* issue #16 */
}

static void
private_free(struct proxy *px)
{
	struct private *pv = px->px_role;

	datastore_close(pv->pv_store);
	if (pv->pv_table)
		announce_table_free(pv->pv_table);
	private_publics_free(pv);
	private_pool_free(pv->pv_pool);         /* issue #16 */
}

static const struct proxy_hooks private_hooks = {
	.ph_bind = private_bind,
	.ph_open = private_open,
	.ph_start = private_start,
	.ph_started = private_started,
	.ph_drain = private_drain,
	.ph_force = private_force,
	.ph_held = private_held,
	.ph_side_stopped = private_side_stopped,
	.ph_free = private_free,
	.ph_forced_ms = PRIVATE_FORCED_MS,
	.ph_side_first = 1,
};

int
private_run(struct proxy_conf *pc)
{
	struct private pv;

	memset(&pv, 0, sizeof(pv));
	pv.pv_conf = pc;
	TAILQ_INIT(&pv.pv_targets);
	TAILQ_INIT(&pv.pv_dials);
	if (pc->pc_internal_address == NULL &&
	    (pc->pc_internal_address = strdup("localhost:8888")) == NULL)
		fatal("strdup");
	return proxy_run(&pv.pv_px, pc, &pv.pv_ctl, &private_hooks, &pv);
}
