/* private_announcer.c - the private proxy's announcer (SPEC 5): every
 * announcement goes to its public proxy with announceConnections, grouped
 * per proxy, retried with backoff until accepted, then every
 * announce_interval; withdrawals are told with withdrawConnections.  One
 * machine per public proxy, struct target (its diagram: private_int.h).
 *
 * Thread: the side thread (control.h) only.  The targets' timers are on
 * its event base; at a stop they are freed once it is joined
 * (private_targets_free), before the JSON-RPC client fails its calls in
 * flight, so a reply arriving then must not touch its target (pv_stopping). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <bsd/string.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "log.h"
#include "metrics.h"
#include "private_pool.h"
#include "proxy_conf.h"
#include "util.h"
#include "private_int.h"

static void	target_pass(struct target *);

/* One per answered pass: ok, partial (some items refused), error. */
METRIC_COUNTER(m_announce_calls, "private_announce_calls_total",
    "announceConnections passes answered, by result (ok, partial, error).", "result")

static struct target *
target_find(struct private *pv, const char *proxy)
{
	struct target *tg;

	TAILQ_FOREACH(tg, &pv->pv_targets, tg_entry)
		if (strcmp(tg->tg_proxy, proxy) == 0)
			return tg;
	return NULL;
}

static void
target_fire(evutil_socket_t fd, short what, void *arg)
{
	target_pass(arg);
}

static struct target *
target_get(struct private *pv, const char *proxy)
{
	struct target *tg;

	if ((tg = target_find(pv, proxy)) != NULL)
		return tg;
	if ((tg = calloc(1, sizeof(*tg))) == NULL)
		return NULL;
	tg->tg_pv = pv;
	tg->tg_state = TG_IDLE;
	strlcpy(tg->tg_proxy, proxy, sizeof(tg->tg_proxy));
	tg->tg_timer = evtimer_new(control_base(&pv->pv_ctl), target_fire, tg);
	if (tg->tg_timer == NULL) {
		free(tg);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&pv->pv_targets, tg, tg_entry);
	return tg;
}

static void
target_schedule(struct target *tg, double seconds)
{
	struct timeval tv = tv_seconds(seconds);

	evtimer_add(tg->tg_timer, &tv);
}

static int
target_calling(const struct target *tg)
{
	return tg->tg_state == TG_CALLING || tg->tg_state == TG_CALLING_AGAIN;
}

void
private_target_kick(struct private *pv, const char *proxy)
{
	struct target *tg = target_get(pv, proxy);

	if (tg == NULL) {
		log_warnx("announce to %s: out of memory", proxy);
		return;
	}
	if (target_calling(tg))
		tg->tg_state = TG_CALLING_AGAIN;
	else
		target_pass(tg);
}

/* A call other than a pass (a withdrawal) to tg's proxy answered: note a
 * failure, and announce at once when the proxy answers again after one. */
static void
target_answered(struct target *tg, int failed)
{
	if (failed) {
		/* In flight, the pass's own answer decides the state. */
		if (tg->tg_state == TG_IDLE)
			tg->tg_state = TG_FAILING;
		return;
	}
	if (tg->tg_state == TG_FAILING)
		target_pass(tg);
}

/* One pass in flight; ac_domains[i] is item i of the call. */
struct announce_call {
	struct private	*ac_pv;		/* outlives ac_tg at stop */
	struct target	*ac_tg;
	int		 ac_n;
	char		 (*ac_domains)[ANNOUNCE_DOMAIN_MAX];
};

static void
announce_call_free(struct announce_call *ac)
{
	if (ac != NULL)
		free(ac->ac_domains);
	free(ac);
}

/* The pass failed as a whole: FAILING, retry after the next backoff. */
static void
target_failed(struct target *tg, int n, struct json_object *error)
{
	struct json_object *code = NULL, *msg = NULL;
	double cap = tg->tg_accepted ? PRIVATE_BACKOFF_MAX : PRIVATE_BACKOFF_START;

	tg->tg_backoff = tg->tg_backoff == 0 ? PRIVATE_BACKOFF_MIN : tg->tg_backoff * 2;
	if (tg->tg_backoff > cap)
		tg->tg_backoff = cap;
	json_object_object_get_ex(error, "code", &code);
	json_object_object_get_ex(error, "message", &msg);
	log_warnx("announce %d domain(s) to %s: error %d %s; retry in %.0f s", n, tg->tg_proxy,
	    json_object_get_int(code), msg ? json_object_get_string(msg) : "(no message)",
	    tg->tg_backoff);
	tg->tg_state = TG_FAILING;
	target_schedule(tg, tg->tg_backoff);
}

static void
announce_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct announce_call *ac = arg;
	struct private *pv = ac->ac_pv;
	struct target *tg;
	struct json_object *code = NULL, *msg = NULL;
	int rejected = 0, again;

	/* At stop the targets are freed before the client fails its calls. */
	if (atomic_load(&pv->pv_stopping))
		goto done;
	tg = ac->ac_tg;
	if (error != NULL) {
		metric_inc(&m_announce_calls, "error");
		target_failed(tg, ac->ac_n, error);
		goto done;
	}
	/* Per item: null, or {code, message} for the domain at that index. */
	for (int i = 0; i < ac->ac_n; i++) {
		struct json_object *it = NULL;

		if (json_object_is_type(result, json_type_array) &&
		    (size_t)i < json_object_array_length(result))
			it = json_object_array_get_idx(result, (size_t)i);
		if (it == NULL || !json_object_is_type(it, json_type_object))
			continue;
		json_object_object_get_ex(it, "code", &code);
		json_object_object_get_ex(it, "message", &msg);
		log_warnx("announce %s to %s: refused: %d %s", ac->ac_domains[i], tg->tg_proxy,
		    json_object_get_int(code), msg ? json_object_get_string(msg) : "");
		rejected++;
	}
	metric_inc(&m_announce_calls, rejected > 0 ? "partial" : "ok");
	if (tg->tg_backoff != 0 || !tg->tg_accepted)
		log_info("announced %d domain(s) to %s (%d refused)", ac->ac_n - rejected,
		    tg->tg_proxy, rejected);
	again = tg->tg_state == TG_CALLING_AGAIN;
	tg->tg_state = TG_IDLE;
	tg->tg_accepted = 1;
	tg->tg_backoff = 0;
	private_pool_announced(pv->pv_pool, tg->tg_proxy);     /* issue #16 */
	if (again)
		target_pass(tg);
	else
		target_schedule(tg, pv->pv_conf->pc_announce_interval);
done:
	announce_call_free(ac);
}

/* One pass: every unexpired announcement to tg's proxy, in one call. */
static void
target_pass(struct target *tg)
{
	struct private *pv = tg->tg_pv;
	struct announcement *list = NULL;
	struct announce_call *ac = NULL;
	struct json_object *params, *conns;
	double now = now_wall();
	char ts[32];
	int n, k = 0;

	evtimer_del(tg->tg_timer);
	announce_expire(pv->pv_table, now);
	if ((n = announce_list(pv->pv_table, NULL, now, &list)) < 0 ||
	    (ac = calloc(1, sizeof(*ac))) == NULL ||
	    (ac->ac_domains = calloc((size_t)n + 1, sizeof(*ac->ac_domains))) == NULL) {
		log_warnx("announce to %s: out of memory", tg->tg_proxy);
		announce_call_free(ac);
		free(list);
		target_schedule(tg, PRIVATE_BACKOFF_MIN);
		return;
	}
	params = json_object_new_object();
	conns = json_object_new_array();
	for (int i = 0; i < n; i++) {
		struct json_object *c;

		if (strcmp(list[i].an_proxy, tg->tg_proxy) != 0)
			continue;
		c = json_object_new_object();
		json_object_object_add(c, "domain", json_object_new_string(list[i].an_domain));
		if (list[i].an_expires_at != 0)
			json_object_object_add(c, "expires_at", json_object_new_string(
			    rfc3339_format(list[i].an_expires_at, ts, sizeof(ts))));
		json_object_array_add(conns, c);
		memcpy(ac->ac_domains[k++], list[i].an_domain, ANNOUNCE_DOMAIN_MAX);
	}
	free(list);
	if (k == 0) {
		/* Nothing left for this proxy: look again at the next interval. */
		json_object_put(params);
		json_object_put(conns);
		announce_call_free(ac);
		target_schedule(tg, pv->pv_conf->pc_announce_interval);
		return;
	}
	json_object_object_add(params, "connections", conns);
	json_object_object_add(params, "instance", json_object_new_string(pv->pv_instance));
	ac->ac_pv = pv;
	ac->ac_tg = tg;
	ac->ac_n = k;
	tg->tg_state = TG_CALLING;
	log_debug("announcing %d domain(s) to %s", k, tg->tg_proxy);
	control_call(&pv->pv_ctl, tg->tg_proxy, "announceConnections", params, announce_reply,
	    ac);
	json_object_put(params);
}

void
private_announce_start(void *arg)
{
	struct private *pv = arg;
	struct announcement *list = NULL;
	int n;

	if ((n = announce_list(pv->pv_table, NULL, now_wall(), &list)) < 0)
		n = 0;
	for (int i = 0; i < n; i++)
		if (target_find(pv, list[i].an_proxy) == NULL)
			private_target_kick(pv, list[i].an_proxy);
	free(list);
}

/* A withdrawal in flight. */
struct withdraw_call {
	struct private	*wc_pv;
	char		 wc_proxy[ANNOUNCE_NAME_MAX];
	char		 wc_domain[ANNOUNCE_DOMAIN_MAX];
};

static void
withdraw_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct withdraw_call *wc = arg;
	struct json_object *msg;
	struct target *tg;

	if (atomic_load(&wc->wc_pv->pv_stopping))
		goto done;
	if (error != NULL) {
		if (!json_object_object_get_ex(error, "message", &msg) || msg == NULL)
			log_warnx("withdraw %s from %s: error without a message", wc->wc_domain,
			    wc->wc_proxy);
		else
			log_warnx("withdraw %s from %s: %s", wc->wc_domain, wc->wc_proxy,
			    json_object_get_string(msg));
	} else
		log_info("withdrew %s from %s", wc->wc_domain, wc->wc_proxy);
	if ((tg = target_find(wc->wc_pv, wc->wc_proxy)) != NULL)
		target_answered(tg, error != NULL);
done:
	free(wc);
}

void
private_withdraw_send(struct private *pv, const char *proxy, const char *domain)
{
	struct withdraw_call *wc;
	struct json_object *p, *domains;

	if ((wc = calloc(1, sizeof(*wc))) == NULL)
		return;		/* the next pass leaves it out anyway */
	wc->wc_pv = pv;
	strlcpy(wc->wc_proxy, proxy, sizeof(wc->wc_proxy));
	strlcpy(wc->wc_domain, domain, sizeof(wc->wc_domain));
	p = json_object_new_object();
	domains = json_object_new_array();
	json_object_array_add(domains, json_object_new_string(wc->wc_domain));
	json_object_object_add(p, "domains", domains);
	json_object_object_add(p, "instance", json_object_new_string(pv->pv_instance));
	control_call(&pv->pv_ctl, wc->wc_proxy, "withdrawConnections", p, withdraw_reply, wc);
	json_object_put(p);
}

/* ---- static announcements at a reload ------------------------------------ */

/* The entry of pc's static announcements for (domain, proxy) that the
 * table holds: the last one (a later entry replaces an earlier one), or
 * NULL.  The settings normalized the domains. */
static const struct static_announcement *
static_find(const struct proxy_conf *pc, const char *domain, const char *proxy)
{
	for (int i = pc->pc_nannouncements - 1; i >= 0; i--)
		if (strcmp(pc->pc_announcements[i].sa_domain, domain) == 0 &&
		    strcmp(pc->pc_announcements[i].sa_proxy, proxy) == 0)
			return &pc->pc_announcements[i];
	return NULL;
}

void
private_static_reload(void *arg, const struct proxy_conf *o, const struct proxy_conf *n)
{
	struct private *pv = arg;
	const char *name = pv->pv_conf->pc_name;
	const struct static_announcement *sa, *was;
	struct announcement a;
	char err[256];

	if (atomic_load(&pv->pv_stopping))
		return;
	/* Removed: in o, not in n.  Only this proxy's own entry leaves; an
	 * announceConnection of another operator for the same name stays. */
	for (int i = 0; i < o->pc_nannouncements; i++) {
		sa = &o->pc_announcements[i];
		if (static_find(o, sa->sa_domain, sa->sa_proxy) != sa ||
		    static_find(n, sa->sa_domain, sa->sa_proxy) != NULL ||
		    announce_find(pv->pv_table, sa->sa_domain, sa->sa_proxy, name, NULL) < 0)
			continue;
		/* Durably: a compaction may have written it to the file. */
		if (datastore_withdraw(pv->pv_store, sa->sa_domain, sa->sa_proxy, name, err,
		    sizeof(err)) < 0) {
			log_warnx("announcement %s to %s: removed from the settings, but kept: "
			    "datastore: %s", sa->sa_domain, sa->sa_proxy, err);
			continue;
		}
		log_info("announcement %s to %s: removed from the settings, withdrawing it",
		    sa->sa_domain, sa->sa_proxy);
		private_withdraw_send(pv, sa->sa_proxy, sa->sa_domain);
	}
	/* Added, or changed (expires_at, proxy_protocol): into the table, where
	 * the next incomingConnection or start frame reads it; announced at
	 * once unless only proxy_protocol changed (the public proxy does not
	 * know it). */
	for (int i = 0; i < n->pc_nannouncements; i++) {
		sa = &n->pc_announcements[i];
		if (static_find(n, sa->sa_domain, sa->sa_proxy) != sa)
			continue;
		was = static_find(o, sa->sa_domain, sa->sa_proxy);
		if (was != NULL && was->sa_expires_at == sa->sa_expires_at &&
		    was->sa_proxy_protocol == sa->sa_proxy_protocol)
			continue;
		if (private_static_make(pv, sa, &a) < 0)
			continue;
		if (announce_put(pv->pv_table, &a) < 0) {
			log_warnx("announcement %s to %s: out of memory; not added",
			    sa->sa_domain, sa->sa_proxy);
			continue;
		}
		log_info("announcement %s to %s: %s by the settings", sa->sa_domain,
		    sa->sa_proxy, was == NULL ? "added" : "changed");
		if (was == NULL || was->sa_expires_at != sa->sa_expires_at)
			private_target_kick(pv, sa->sa_proxy);
	}
}

void
private_targets_free(struct private *pv)
{
	struct target *tg;

	while ((tg = TAILQ_FIRST(&pv->pv_targets)) != NULL) {
		TAILQ_REMOVE(&pv->pv_targets, tg, tg_entry);
		event_free(tg->tg_timer);
		free(tg);
	}
}
