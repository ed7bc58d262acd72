/* private.c - `proxy run private` (SPEC 5): announce domains to public
 * proxies, dial back when one hands over a connection, relay it to the
 * internal server.
 *
 * Threads
 *   main  the io_uring loop (the skeleton's, proxy.h): dial jobs, the relay
 *         engine.
 *   side  the control plane (control.h): the JSON-RPC methods and the
 *         announcer.  It hands dial jobs to the loop with loop_post().
 *   Shared: the announcement table (its own lock) and pv_nsockets (atomic).
 *
 * Announcer (side thread), one target per public proxy:
 *   IDLE     timer armed: next pass at announce_interval, or after a backoff
 *            (1 s doubling to 30 s; 2 s at most until a first pass has been
 *            accepted, so a chain started in any order comes up quickly).
 *   CALLING  announceConnections in flight; a change meanwhile sets
 *            tg_again and the pass is repeated as soon as it answers.
 *   A withdrawal that fails and a later call to that proxy that succeeds
 *   trigger a pass at once (the proxy may have been restarted).
 *
 * incomingConnection (side thread) is honoured only for a caller this
 * proxy announces to (else 403), for a domain announced to that caller
 * (else 404), with a token of exactly 32 bytes and an endpoint that is one
 * of that caller's data endpoints (settings public_proxies, else
 * PROXY_DATA_ENDPOINT_DEFAULT) (else -32602).  Every address dialed comes
 * from the settings, resolved once at start (private_resolve), so the
 * side thread never waits for DNS and a public proxy cannot make this
 * proxy connect anywhere else.
 *
 * Dial job (loop thread), one per incomingConnection, two sides:
 *   CONNECTING -> CONNECTED | FAILED for both the public data endpoint and
 *   the internal server, in parallel, each within connect_timeout.  The
 *   public side writes the token as soon as it is connected; the internal
 *   side, when the announcement has proxy_protocol, its PROXY header.  Both
 *   connected: relay_join (the job lives on until the relay's report).
 *   Internal failed: the public side still connects and sends its token,
 *   then closes, so the public proxy drops the client at once instead of
 *   after accept_timeout.  Public failed: the internal side is cancelled
 *   or closed.  The job is freed when neither connect is in flight. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bsd/string.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "jsonrpc.h"
#include "log.h"
#include "loop.h"
#include "frame.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "proxyproto.h"
#include "private_pool.h"
#include "relay.h"
#include "reload.h"
#include "side.h"
#include "util.h"

#define PRIVATE_TOKEN_LEN	32
#define PRIVATE_BACKOFF_MIN	1.0	/* seconds, first retry of a failed pass */
#define PRIVATE_BACKOFF_MAX	30.0	/* after a pass has been accepted once */
#define PRIVATE_BACKOFF_START	2.0	/* cap until the first accepted pass */
#define PRIVATE_FORCED_MS	2000	/* closed relays get this long to report at a stop */

/* One data endpoint of a public proxy, as named in the settings and as
 * resolved at start. */
struct data_endpoint {
	const char		*de_name;	/* "host:port", owned by the settings */
	struct sockaddr_storage	 de_sa;
	socklen_t		 de_salen;
};

/* The data endpoints of one public proxy; read-only once the side thread runs. */
struct public_peer {
	const char		*pb_name;	/* NULL: every public proxy not listed */
	struct data_endpoint	*pb_eps;
	int			 pb_neps;
};

struct target {
	TAILQ_ENTRY(target)	 tg_entry;
	struct private		*tg_pv;
	char			 tg_proxy[ANNOUNCE_NAME_MAX];
	struct event		*tg_timer;
	int			 tg_calling;	/* announceConnections in flight */
	int			 tg_again;	/* changed while calling */
	int			 tg_accepted;	/* a pass was accepted once */
	int			 tg_failing;	/* the last call to this proxy failed */
	double			 tg_backoff;	/* next retry delay; 0: not failing */
};

enum dial_state {
	DIAL_CONNECTING,	/* loop_connect in flight */
	DIAL_CONNECTED,		/* connected (public: token written) */
	DIAL_FAILED,		/* refused, timed out, cancelled; fd closed */
};

struct dial_side {
	struct loop_op		 ds_op;
	int			 ds_fd;
	enum dial_state		 ds_state;
	struct sockaddr_storage	 ds_sa;
	socklen_t		 ds_salen;
};

struct dial {
	TAILQ_ENTRY(dial)	 dl_entry;	/* pv_dials until joined */
	struct private		*dl_pv;
	struct dial_side	 dl_pub;	/* the public proxy's data endpoint */
	struct dial_side	 dl_int;	/* the internal server */
	int			 dl_failed;	/* one side failed: no join */
	int			 dl_joined;
	int			 dl_pooled;	/* issue #16: dl_pub came from the pool */
	uint8_t			 dl_token[PRIVATE_TOKEN_LEN];
	size_t			 dl_pplen;	/* 0: proxy_protocol off */
	char			 dl_domain[ANNOUNCE_DOMAIN_MAX];
	char			 dl_endpoint[64];
	uint8_t			 dl_pp[];	/* dl_pplen bytes: the PROXY header,
						 * first to the internal server */
};

struct private {
	struct proxy_conf	*pv_conf;
	struct announce_table	*pv_table;
	struct datastore	*pv_store;	/* NULL: memory only; side thread */
	struct control		 pv_ctl;
	atomic_int		 pv_stopping;
	struct public_peer	*pv_publics;	/* settings, then the default last */
	int			 pv_npublics;
	struct sockaddr_storage	 pv_int_sa;	/* the internal server, resolved at start */
	socklen_t		 pv_int_salen;
	atomic_long		 pv_nsockets;	/* reserved by the side, freed by the loop */

	/* side thread */
	TAILQ_HEAD(, target)	 pv_targets;

	/* loop thread */
	struct loop		*pv_loop;
	struct relay		*pv_relay;
	TAILQ_HEAD(, dial)	 pv_dials;

	struct private_pool	*pv_pool;	/* issue #16: private_pool.h */
};

static void	private_announce(struct target *);

/* ---- helpers ------------------------------------------------------------- */

static const char *
param_string(struct json_object *params, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(params, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* expires_at may be absent, null or an RFC 3339 string. */
static int
param_expires(struct json_object *params, const char **out)
{
	struct json_object *v;

	*out = NULL;
	if (!json_object_object_get_ex(params, "expires_at", &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return -1;
	*out = json_object_get_string(v);
	return 0;
}

static struct json_object *
private_ok(void)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "message", json_object_new_string("ok"));
	return o;
}

/* ---- announcer (side thread) --------------------------------------------- */

static struct target *
private_target(struct private *pv, const char *proxy)
{
	struct target *tg;

	TAILQ_FOREACH(tg, &pv->pv_targets, tg_entry)
		if (strcmp(tg->tg_proxy, proxy) == 0)
			return tg;
	return NULL;
}

static void
private_target_fire(evutil_socket_t fd, short what, void *arg)
{
	private_announce(arg);
}

static struct target *
private_target_get(struct private *pv, const char *proxy)
{
	struct target *tg;

	if ((tg = private_target(pv, proxy)) != NULL)
		return tg;
	if ((tg = calloc(1, sizeof(*tg))) == NULL)
		return NULL;
	tg->tg_pv = pv;
	strlcpy(tg->tg_proxy, proxy, sizeof(tg->tg_proxy));
	tg->tg_timer = evtimer_new(side_base(pv->pv_ctl.ct_side), private_target_fire, tg);
	if (tg->tg_timer == NULL) {
		free(tg);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&pv->pv_targets, tg, tg_entry);
	return tg;
}

static void
private_target_schedule(struct target *tg, double seconds)
{
	struct timeval tv = tv_seconds(seconds);

	evtimer_add(tg->tg_timer, &tv);
}

/* Announce now (or as soon as the call in flight has answered). */
static void
private_target_kick(struct private *pv, const char *proxy)
{
	struct target *tg = private_target_get(pv, proxy);

	if (tg == NULL) {
		log_warnx("announce to %s: out of memory", proxy);
		return;
	}
	if (tg->tg_calling)
		tg->tg_again = 1;
	else
		private_announce(tg);
}

/* A call to tg's proxy answered: note failures, and re-announce at once
 * when the proxy answers again after a failure. */
static void
private_target_health(struct target *tg, int failed)
{
	if (failed) {
		tg->tg_failing = 1;
		return;
	}
	if (tg->tg_failing && !tg->tg_calling) {
		tg->tg_failing = 0;
		private_announce(tg);
	}
}

struct announce_call {
	struct private	*ac_pv;		/* outlives ac_tg at stop */
	struct target	*ac_tg;
	int		 ac_n;
	char		 (*ac_domains)[ANNOUNCE_DOMAIN_MAX];
};

static void
private_announce_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct announce_call *ac = arg;
	struct private *pv = ac->ac_pv;
	struct target *tg;
	struct json_object *code = NULL, *msg = NULL;
	double cap;
	int rejected = 0;

	/* At stop the targets are freed before the client fails its calls. */
	if (atomic_load(&pv->pv_stopping))
		goto done;
	tg = ac->ac_tg;
	tg->tg_calling = 0;
	if (error != NULL) {
		cap = tg->tg_accepted ? PRIVATE_BACKOFF_MAX : PRIVATE_BACKOFF_START;
		tg->tg_backoff = tg->tg_backoff == 0 ? PRIVATE_BACKOFF_MIN : tg->tg_backoff * 2;
		if (tg->tg_backoff > cap)
			tg->tg_backoff = cap;
		json_object_object_get_ex(error, "code", &code);
		json_object_object_get_ex(error, "message", &msg);
		log_warnx("announce %d domain(s) to %s: error %d %s; retry in %.0f s", ac->ac_n,
		    tg->tg_proxy, json_object_get_int(code),
		    msg ? json_object_get_string(msg) : "(no message)",
		    tg->tg_backoff);
		tg->tg_failing = 1;
		private_target_schedule(tg, tg->tg_backoff);
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
	if (tg->tg_backoff != 0 || !tg->tg_accepted)
		log_info("announced %d domain(s) to %s (%d refused)", ac->ac_n - rejected,
		    tg->tg_proxy, rejected);
	tg->tg_accepted = 1;
	tg->tg_failing = 0;
	tg->tg_backoff = 0;
	private_pool_announced(pv->pv_pool, tg->tg_proxy);     /* issue #16 */
	if (tg->tg_again) {
		tg->tg_again = 0;
		private_announce(tg);
	} else
		private_target_schedule(tg, pv->pv_conf->pc_announce_interval);
done:
	free(ac->ac_domains);
	free(ac);
}

/* One pass: every unexpired announcement to tg's proxy, in one call. */
static void
private_announce(struct target *tg)
{
	struct private *pv = tg->tg_pv;
	struct announcement *list = NULL;
	struct announce_call *ac = NULL;
	struct json_object *params, *conns;
	double now = now_wall();
	char ts[32];
	int n, k = 0;

	evtimer_del(tg->tg_timer);
	tg->tg_again = 0;
	announce_expire(pv->pv_table, now);
	if ((n = announce_list(pv->pv_table, NULL, now, &list)) < 0 ||
	    (ac = calloc(1, sizeof(*ac))) == NULL ||
	    (ac->ac_domains = calloc((size_t)n + 1, sizeof(*ac->ac_domains))) == NULL) {
		log_warnx("announce to %s: out of memory", tg->tg_proxy);
		free(ac);
		free(list);
		private_target_schedule(tg, PRIVATE_BACKOFF_MIN);
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
		free(ac->ac_domains);
		free(ac);
		private_target_schedule(tg, pv->pv_conf->pc_announce_interval);
		return;
	}
	json_object_object_add(params, "connections", conns);
	ac->ac_pv = pv;
	ac->ac_tg = tg;
	ac->ac_n = k;
	tg->tg_calling = 1;
	log_debug("announcing %d domain(s) to %s", k, tg->tg_proxy);
	control_call(&pv->pv_ctl, tg->tg_proxy, "announceConnections", params,
	    private_announce_reply, ac);
	json_object_put(params);
}

/* First closure on the side thread: one target per proxy, announce all. */
static void
private_announce_start(void *arg)
{
	struct private *pv = arg;
	struct announcement *list = NULL;
	int n;

	if ((n = announce_list(pv->pv_table, NULL, now_wall(), &list)) < 0)
		n = 0;
	for (int i = 0; i < n; i++)
		if (private_target(pv, list[i].an_proxy) == NULL)
			private_target_kick(pv, list[i].an_proxy);
	free(list);
}

struct withdraw_call {
	struct private	*wc_pv;
	char		 wc_proxy[ANNOUNCE_NAME_MAX];
	char		 wc_domain[ANNOUNCE_DOMAIN_MAX];
};

static void
private_withdraw_reply(void *arg, struct json_object *result, struct json_object *error)
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
	if ((tg = private_target(wc->wc_pv, wc->wc_proxy)) != NULL)
		private_target_health(tg, error != NULL);
done:
	free(wc);
}

/* ---- dial jobs (loop thread) --------------------------------------------- */

static void
private_drained(struct private *pv)
{
	if (atomic_load(&pv->pv_stopping) && atomic_load(&pv->pv_nsockets) == 0)
		loop_stop(pv->pv_loop);
}

static void
dial_free(struct dial *d)
{
	struct private *pv = d->dl_pv;

	if (d->dl_pub.ds_fd >= 0)
		close(d->dl_pub.ds_fd);
	if (d->dl_int.ds_fd >= 0)
		close(d->dl_int.ds_fd);
	if (!d->dl_joined)
		TAILQ_REMOVE(&pv->pv_dials, d, dl_entry);
	free(d);
	atomic_fetch_sub(&pv->pv_nsockets, 2);
	private_drained(pv);
}

static void
dial_done(const struct relay_report *rep, void *arg)
{
	struct dial *d = arg;
	struct private *pv = d->dl_pv;

	log_info("connection %s via %s: %.3f s, %llu bytes in, %llu bytes out, %s%s via=%s",
	    d->dl_domain, d->dl_endpoint, rep->duration, (unsigned long long)rep->bytes_ab,
	    (unsigned long long)rep->bytes_ba, rep->reason_str,
	    rep->spliced ? " (spliced)" : "", d->dl_pooled ? "pool" : "dial");
	free(d);
	atomic_fetch_sub(&pv->pv_nsockets, 2);
	private_drained(pv);
}

static void
dial_close(struct dial_side *s)
{
	if (s->ds_fd >= 0)
		close(s->ds_fd);
	s->ds_fd = -1;
}

/* Both connects are over: join, or give up. */
static void
dial_check(struct dial *d)
{
	struct private *pv = d->dl_pv;
	int pub, in;

	if (d->dl_pub.ds_op.lo_busy || d->dl_int.ds_op.lo_busy)
		return;
	if (d->dl_failed || atomic_load(&pv->pv_stopping)) {
		dial_free(d);
		return;
	}
	pub = d->dl_pub.ds_fd;
	in = d->dl_int.ds_fd;
	d->dl_pub.ds_fd = d->dl_int.ds_fd = -1;
	TAILQ_REMOVE(&pv->pv_dials, d, dl_entry);
	d->dl_joined = 1;
	log_debug("connection %s via %s: joined", d->dl_domain, d->dl_endpoint);
	if (relay_join(pv->pv_relay, pub, in, "public", "internal", dial_done, d) == NULL) {
		/* relay_join closed both sockets and will not call back. */
		log_warnx("connection %s via %s: cannot join: out of memory", d->dl_domain,
		    d->dl_endpoint);
		free(d);
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		private_drained(pv);
	}
}

static void
dial_fail(struct dial *d, struct dial_side *s, int err)
{
	char abuf[64];
	int first = !d->dl_failed;

	s->ds_state = DIAL_FAILED;
	dial_close(s);
	d->dl_failed = 1;
	if (s == &d->dl_pub) {
		if (first)
			log_warnx("connection %s: public endpoint %s: %s; internal side closed",
			    d->dl_domain, d->dl_endpoint, strerror(err));
		/* Nothing to relay: drop the internal side, connected or not. */
		if (d->dl_int.ds_state == DIAL_CONNECTING)
			loop_cancel(d->dl_pv->pv_loop, &d->dl_int.ds_op);
		else
			dial_close(&d->dl_int);
		return;
	}
	if (first)
		log_warnx("connection %s via %s: internal server %s: %s; public data connection "
		    "closed", d->dl_domain, d->dl_endpoint,
		    addr_str((struct sockaddr *)&d->dl_int.ds_sa, abuf, sizeof(abuf)),
		    strerror(err));
	/* The public side closes right after its token (dial_pub_cb), so the
	 * public proxy drops the waiting client now, not after accept_timeout. */
	if (d->dl_pub.ds_state == DIAL_CONNECTED)
		dial_close(&d->dl_pub);
}

static void
dial_pub_cb(struct loop_op *op, int res, unsigned flags)
{
	struct dial *d = LOOP_CONTAINER_OF(op, struct dial, dl_pub.ds_op);
	ssize_t n;

	if (res < 0) {
		dial_fail(d, &d->dl_pub, -res);
		dial_check(d);
		return;
	}
	/* A fresh connection has an empty send buffer: 32 bytes go at once;
	 * anything short means the peer is gone. */
	n = send(d->dl_pub.ds_fd, d->dl_token, sizeof(d->dl_token), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(d->dl_token)) {
		dial_fail(d, &d->dl_pub, n < 0 ? errno : EIO);
		dial_check(d);
		return;
	}
	d->dl_pub.ds_state = DIAL_CONNECTED;
	/* The internal side failed already: the token told the public proxy
	 * which client to drop; closing now makes it do so at once. */
	if (d->dl_failed)
		dial_close(&d->dl_pub);
	dial_check(d);
}

static void
dial_int_cb(struct loop_op *op, int res, unsigned flags)
{
	struct dial *d = LOOP_CONTAINER_OF(op, struct dial, dl_int.ds_op);
	ssize_t n;

	if (res < 0) {
		dial_fail(d, &d->dl_int, -res);
		dial_check(d);
		return;
	}
	/* proxy_protocol: the header goes first, before the relay carries a
	 * byte.  The socket is fresh, its send buffer empty: the few hundred
	 * bytes go at once, and a short write means the server is gone. */
	if (d->dl_pplen > 0 && !d->dl_failed) {
		n = send(d->dl_int.ds_fd, d->dl_pp, d->dl_pplen, MSG_NOSIGNAL);
		if (n != (ssize_t)d->dl_pplen) {
			dial_fail(d, &d->dl_int, n < 0 ? errno : EIO);
			dial_check(d);
			return;
		}
	}
	d->dl_int.ds_state = DIAL_CONNECTED;
	if (d->dl_failed)
		dial_close(&d->dl_int);
	dial_check(d);
}

static int
dial_socket(struct dial_side *s)
{
	int one = 1;

	s->ds_fd = socket(s->ds_sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* The relay forwards whole chunks: Nagle would only delay them. */
	if (s->ds_fd >= 0)
		(void)setsockopt(s->ds_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return s->ds_fd;
}

/* Posted by the side thread: start both connects. */
static void
dial_start(void *arg)
{
	struct dial *d = arg;
	struct private *pv = d->dl_pv;
	unsigned ms = (unsigned)(pv->pv_conf->pc_connect_timeout * 1000);

	TAILQ_INSERT_TAIL(&pv->pv_dials, d, dl_entry);
	if (atomic_load(&pv->pv_stopping)) {
		dial_free(d);
		return;
	}
	if (ms == 0)
		ms = 1;
	/* a pooled dl_pub is connected already (issue #16) */
	if ((!d->dl_pooled && dial_socket(&d->dl_pub) < 0) || dial_socket(&d->dl_int) < 0) {
		/* EMFILE and the like: the public proxy times the client out. */
		log_warn("connection %s via %s: socket", d->dl_domain, d->dl_endpoint);
		dial_free(d);
		return;
	}
	loop_op_init(&d->dl_pub.ds_op, dial_pub_cb);
	loop_op_init(&d->dl_int.ds_op, dial_int_cb);
	if (!d->dl_pooled)
		loop_connect(pv->pv_loop, &d->dl_pub.ds_op, d->dl_pub.ds_fd,
		    (struct sockaddr *)&d->dl_pub.ds_sa, d->dl_pub.ds_salen, ms);
	loop_connect(pv->pv_loop, &d->dl_int.ds_op, d->dl_int.ds_fd,
	    (struct sockaddr *)&d->dl_int.ds_sa, d->dl_int.ds_salen, ms);
}

/* ---- JSON-RPC methods (side thread) -------------------------------------- */

static const struct data_endpoint *private_data_endpoint(struct private *, const char *,
    const char *);

/* issue #16 (private_pool.h, pe_endpoint; side thread) */
static const struct sockaddr_storage *
private_pool_endpoint(struct private *pv, const char *proxy, const char *endpoint,
    socklen_t *len)
{
	const struct data_endpoint *de = private_data_endpoint(pv, proxy, endpoint);

	if (de == NULL)
		return NULL;
	*len = de->de_salen;
	return &de->de_sa;
}

/* issue #16 (private_pool.h, pe_join; loop thread): a pooled connection
 * read its start frame f: dial the internal server and join, as a
 * dial-back does.  fd and one socket of pv_nsockets are ours. */
static void
private_pool_join(struct private *pv, int fd, const struct announcement *an,
    const struct frame *f, const char *endpoint)
{
	struct proxyproto_info pi;
	uint8_t pp[PROXYPROTO_WRITE_MAX];
	ssize_t pplen = 0;
	struct dial *d;

	atomic_fetch_add(&pv->pv_nsockets, 1);  /* the internal side */
	memset(&pi, 0, sizeof(pi));
	pi.pi_src = f->fr_client;
	pi.pi_dst = f->fr_local;
	pi.pi_local = f->fr_client.ss_family != f->fr_local.ss_family;
	if (an->an_proxy_protocol != PROXYPROTO_OFF) {
		strlcpy(pi.pi_authority, f->fr_sni, sizeof(pi.pi_authority));
		pplen = proxyproto_write(an->an_proxy_protocol, &pi, pp, sizeof(pp));
	}
	if (pplen < 0 || (d = calloc(1, sizeof(*d) + (size_t)pplen)) == NULL) {
		log_warnx("connection %s via %s: %s", f->fr_sni, endpoint, pplen < 0 ?
		    "cannot write the PROXY header" : "out of memory");
		close(fd);
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		private_drained(pv);
		return;
	}
	d->dl_pv = pv;
	d->dl_pooled = 1;
	d->dl_pub.ds_fd = fd;
	d->dl_pub.ds_state = DIAL_CONNECTED;
	d->dl_int.ds_fd = -1;
	memcpy(d->dl_pp, pp, (size_t)pplen);
	d->dl_pplen = (size_t)pplen;
	strlcpy(d->dl_domain, f->fr_sni, sizeof(d->dl_domain));
	strlcpy(d->dl_endpoint, endpoint, sizeof(d->dl_endpoint));
	memcpy(&d->dl_int.ds_sa, &pv->pv_int_sa, pv->pv_int_salen);
	d->dl_int.ds_salen = pv->pv_int_salen;
	dial_start(d);
}

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
		if (strcasecmp(pb->pb_eps[i].de_name, endpoint) == 0 || (numeric &&
		    addr_equal((struct sockaddr *)&ss, (struct sockaddr *)&pb->pb_eps[i].de_sa)))
			return &pb->pb_eps[i];
	return NULL;
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

/* Refuse one incomingConnection: one warning, one error reply. */
static void
rpc_incoming_refuse(struct jsonrpc_call *call, const char *domain, const char *caller,
    int code, const char *msg, const char *why)
{
	log_warnx("incomingConnection for %s from %s refused: %s", domain ? domain : "?",
	    caller ? caller : "?", why);
	jsonrpc_call_error(call, code, "%s", msg);
}

static void
rpc_incoming(struct private *pv, struct jsonrpc_call *call, struct json_object *params)
{
	const char *domain, *token, *endpoint, *caller, *cwhy = NULL;
	const struct data_endpoint *de;
	char dom[ANNOUNCE_DOMAIN_MAX], why[128];
	uint8_t tok[PRIVATE_TOKEN_LEN];
	struct proxyproto_info pi;
	struct announcement an;
	uint8_t pp[PROXYPROTO_WRITE_MAX];
	ssize_t pplen = 0;
	struct dial *d;
	long limit = pv->pv_conf->pc_max_connections;

	domain = param_string(params, "domain");
	token = param_string(params, "token");
	endpoint = param_string(params, "endpoint");
	caller = control_caller(params);
	if (domain == NULL || token == NULL || endpoint == NULL) {
		rpc_incoming_refuse(call, domain, caller, JSONRPC_INVALID_PARAMS,
		    "domain, token and endpoint must be strings", "missing parameters");
		return;
	}
	if (caller == NULL) {
		rpc_incoming_refuse(call, domain, caller, JSONRPC_INVALID_PARAMS,
		    "missing _client", "missing _client");
		return;
	}
	/* Only the public proxies this proxy announces to may hand it a connection. */
	if (!private_announces_to(pv, caller)) {
		rpc_incoming_refuse(call, domain, caller, HP_ERR_FORBIDDEN,
		    "not a public proxy of this private proxy", "nothing is announced to it");
		return;
	}
	/* the client's name: concrete, never a pattern */
	if (announce_check_domain(domain, dom) < 0 || dom[0] == '*') {
		rpc_incoming_refuse(call, domain, caller, JSONRPC_INVALID_PARAMS,
		    "invalid domain", "invalid domain");
		return;
	}
	/* the exact announcement, else the wildcard one of its parent */
	if (announce_match(pv->pv_table, dom, caller, now_wall(), &an) < 0) {
		rpc_incoming_refuse(call, dom, caller, HP_ERR_NOT_FOUND,
		    "no matching connection found", "the domain is not announced to it");
		return;
	}
	/* b64_decode refuses anything that does not fit tok: exactly 32 bytes. */
	if (b64_decode(token, tok, sizeof(tok)) != PRIVATE_TOKEN_LEN) {
		rpc_incoming_refuse(call, dom, caller, JSONRPC_INVALID_PARAMS,
		    "token must be base64 of 32 bytes", "token is not base64 of 32 bytes");
		return;
	}
	if ((de = private_data_endpoint(pv, caller, endpoint)) == NULL) {
		snprintf(why, sizeof(why), "endpoint %.64s is not one of its data_endpoints",
		    endpoint);
		rpc_incoming_refuse(call, dom, caller, JSONRPC_INVALID_PARAMS,
		    "endpoint is not a data endpoint of this public proxy", why);
		return;
	}
	if (rpc_client_param(params, &pi, &cwhy) < 0) {
		rpc_incoming_refuse(call, dom, caller, JSONRPC_INVALID_PARAMS, cwhy, cwhy);
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
		rpc_incoming_refuse(call, dom, caller, JSONRPC_INTERNAL_ERROR,
		    "cannot write the PROXY header", "cannot write the PROXY header");
		return;
	}
	if ((d = calloc(1, sizeof(*d) + (size_t)pplen)) == NULL) {
		explicit_bzero(tok, sizeof(tok));
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	d->dl_pv = pv;
	d->dl_pub.ds_fd = d->dl_int.ds_fd = -1;
	memcpy(d->dl_token, tok, sizeof(d->dl_token));
	explicit_bzero(tok, sizeof(tok));
	memcpy(d->dl_pp, pp, (size_t)pplen);
	d->dl_pplen = (size_t)pplen;
	strlcpy(d->dl_domain, dom, sizeof(d->dl_domain));
	memcpy(&d->dl_pub.ds_sa, &de->de_sa, de->de_salen);
	d->dl_pub.ds_salen = de->de_salen;
	addr_str((struct sockaddr *)&d->dl_pub.ds_sa, d->dl_endpoint, sizeof(d->dl_endpoint));
	memcpy(&d->dl_int.ds_sa, &pv->pv_int_sa, pv->pv_int_salen);
	d->dl_int.ds_salen = pv->pv_int_salen;
	/* Refuse with an error reply, so the public proxy drops the client now. */
	if (atomic_fetch_add(&pv->pv_nsockets, 2) + 2 > limit) {
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		free(d);
		log_warnx("connection %s from %s refused: max_connections (%ld) reached", dom,
		    caller, limit);
		jsonrpc_call_error(call, HP_ERR_UNREACHABLE, "too many connections");
		return;
	}
	/* Logged before the post: from then on d belongs to the loop thread,
	 * which may free it before this thread runs again. */
	log_debug("incomingConnection %s from %s: dialing %s", dom, caller, d->dl_endpoint);
	if (loop_post(pv->pv_loop, dial_start, d) < 0) {
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		free(d);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	jsonrpc_call_reply(call, private_ok());
}

/* Checks shared by announceConnection and withdrawConnection. */
static int
rpc_check_operator(struct private *pv, struct jsonrpc_call *call, struct json_object *params,
    char dom[ANNOUNCE_DOMAIN_MAX], const char **proxy, const char **caller)
{
	const char *domain, **allowed = NULL, *why = NULL;
	int n;

	domain = param_string(params, "domain");
	*proxy = param_string(params, "proxy");
	*caller = control_caller(params);
	if (domain == NULL || *proxy == NULL || **proxy == '\0') {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "domain and proxy must be strings");
		return -1;
	}
	if (*caller == NULL) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "missing _client");
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
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, "not authorized");
		return -1;
	}
	if (announce_check_name(domain, dom, &why) < 0) {
		free(allowed);
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "%s", why);
		return -1;
	}
	if (!announce_domain_allowed(dom, allowed, (size_t)n)) {
		free(allowed);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, "not allowed");
		return -1;
	}
	free(allowed);
	return 0;
}

static void
rpc_announce(struct private *pv, struct jsonrpc_call *call, struct json_object *params)
{
	const char *proxy, *caller, *exp, *why;
	char dom[ANNOUNCE_DOMAIN_MAX], err[256];
	struct announcement a, old;
	struct json_object *v;
	double now = now_wall(), expires;
	int pp = PROXYPROTO_OFF;

	if (rpc_check_operator(pv, call, params, dom, &proxy, &caller) < 0)
		return;
	/* proxy_protocol: absent, null, "v2", "v1" or "off". */
	if (json_object_object_get_ex(params, "proxy_protocol", &v) && v != NULL &&
	    (!json_object_is_type(v, json_type_string) ||
	    (pp = proxyproto_version_parse(json_object_get_string(v))) < 0)) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS,
		    "proxy_protocol must be \"v2\", \"v1\" or \"off\"");
		return;
	}
	if (param_expires(params, &exp) < 0) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "expires_at must be a string");
		return;
	}
	if (announce_check_expiry(exp, now, ANNOUNCE_MAX_EXPIRY, &expires, &why) < 0) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "expires_at: %s", why);
		return;
	}
	if (announce_lookup(pv->pv_table, dom, proxy, now, &old) == 0 &&
	    strcmp(old.an_operator, caller) != 0) {
		jsonrpc_call_error(call, HP_ERR_CONFLICT, "already taken");
		return;
	}
	if (announce_make(&a, dom, caller, proxy, expires) < 0) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "invalid announcement");
		return;
	}
	a.an_proxy_protocol = pp;
	if (pv->pv_store != NULL) {
		if (datastore_announce(pv->pv_store, &a, err, sizeof(err)) < 0) {
			log_warnx("announceConnection %s: datastore: %s", dom, err);
			jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "cannot store: %s", err);
			return;
		}
	} else if (announce_put(pv->pv_table, &a) < 0) {
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	log_info("%s announced %s to %s", caller, dom, proxy);
	/* params (and proxy with them) are freed by the reply. */
	private_target_kick(pv, a.an_proxy);
	jsonrpc_call_reply(call, json_object_new_string("ok"));
}

static void
rpc_withdraw(struct private *pv, struct jsonrpc_call *call, struct json_object *params)
{
	const char *proxy, *caller;
	char dom[ANNOUNCE_DOMAIN_MAX], err[256];
	struct withdraw_call *wc;
	struct json_object *p, *domains;
	int n;

	if (rpc_check_operator(pv, call, params, dom, &proxy, &caller) < 0)
		return;
	if (pv->pv_store != NULL)
		n = datastore_withdraw(pv->pv_store, dom, proxy, caller, err, sizeof(err));
	else
		n = announce_remove(pv->pv_table, dom, proxy, caller);
	if (n < 0) {
		log_warnx("withdrawConnection %s: datastore: %s", dom, err);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "cannot store: %s", err);
		return;
	}
	if (n == 0) {
		jsonrpc_call_error(call, HP_ERR_NOT_FOUND, "no matching connection found");
		return;
	}
	log_info("%s withdrew %s from %s", caller, dom, proxy);
	if ((wc = calloc(1, sizeof(*wc))) == NULL) {
		jsonrpc_call_reply(call, json_object_new_string("ok"));
		return;
	}
	wc->wc_pv = pv;
	strlcpy(wc->wc_proxy, proxy, sizeof(wc->wc_proxy));
	strlcpy(wc->wc_domain, dom, sizeof(wc->wc_domain));
	p = json_object_new_object();
	domains = json_object_new_array();
	json_object_array_add(domains, json_object_new_string(dom));
	json_object_object_add(p, "domains", domains);
	control_call(&pv->pv_ctl, wc->wc_proxy, "withdrawConnections", p, private_withdraw_reply,
	    wc);
	json_object_put(p);
	jsonrpc_call_reply(call, json_object_new_string("ok"));
}

/* The caller's own announcements; the own operator sees every one. */
static void
rpc_list(struct private *pv, struct jsonrpc_call *call, struct json_object *params)
{
	const char *caller = control_caller(params);
	struct announcement *list = NULL;
	struct json_object *res;
	char ts[32];
	int n, own;

	if (caller == NULL) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "missing _client");
		return;
	}
	own = strcmp(caller, pv->pv_conf->pc_name) == 0;
	if ((n = announce_list(pv->pv_table, own ? NULL : caller, now_wall(), &list)) < 0) {
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	res = json_object_new_array();
	for (int i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "domain", json_object_new_string(list[i].an_domain));
		json_object_object_add(o, "proxy", json_object_new_string(list[i].an_proxy));
		json_object_object_add(o, "expires_at", list[i].an_expires_at == 0 ? NULL :
		    json_object_new_string(rfc3339_format(list[i].an_expires_at, ts, sizeof(ts))));
		if (list[i].an_proxy_protocol != PROXYPROTO_OFF)
			json_object_object_add(o, "proxy_protocol", json_object_new_string(
			    proxyproto_version_str(list[i].an_proxy_protocol)));
		if (own)
			json_object_object_add(o, "operator",
			    json_object_new_string(list[i].an_operator));
		json_object_array_add(res, o);
	}
	free(list);
	jsonrpc_call_reply(call, res);
}

static void
private_rpc(void *arg, struct jsonrpc_call *call)
{
	struct private *pv = arg;
	const char *method = jsonrpc_call_method(call);
	struct json_object *params = jsonrpc_call_params(call);

	if (atomic_load(&pv->pv_stopping))
		jsonrpc_call_error(call, HP_ERR_UNREACHABLE, "shutting down");
	else if (strcmp(method, "incomingConnection") == 0)
		rpc_incoming(pv, call, params);
	else if (strcmp(method, "announceConnection") == 0)
		rpc_announce(pv, call, params);
	else if (strcmp(method, "withdrawConnection") == 0)
		rpc_withdraw(pv, call, params);
	else if (strcmp(method, "getAnnouncements") == 0)
		rpc_list(pv, call, params);
	else
		jsonrpc_call_error(call, JSONRPC_METHOD_NOT_FOUND, "method '%s' not found", method);
}

/* ---- life cycle (main thread) -------------------------------------------- */

/* Static announcements from the settings, after the stored ones, so the
 * settings win for the same (domain, proxy). */
static void
private_load_static(struct private *pv)
{
	struct proxy_conf *pc = pv->pv_conf;
	struct announcement a;
	double now = now_wall();

	for (int i = 0; i < pc->pc_nannouncements; i++) {
		struct static_announcement *sa = &pc->pc_announcements[i];

		if (strcmp(sa->sa_proxy, pc->pc_name) == 0) {
			log_warnx("announcement %s: proxy is this proxy's own name; skipped",
			    sa->sa_domain);
			continue;
		}
		if (announce_make(&a, sa->sa_domain, pc->pc_name, sa->sa_proxy,
		    sa->sa_expires_at) < 0) {
			log_warnx("announcement %s to %s: invalid; skipped", sa->sa_domain,
			    sa->sa_proxy);
			continue;
		}
		a.an_proxy_protocol = sa->sa_proxy_protocol;
		if (sa->sa_expires_at != 0 && sa->sa_expires_at <= now)
			log_warnx("announcement %s to %s: expired already", sa->sa_domain,
			    sa->sa_proxy);
		if (announce_put(pv->pv_table, &a) < 0)
			fatalx("out of memory");
	}
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

			de->de_name = eps[j];
			if (addr_parse(eps[j], &de->de_sa, &de->de_salen, e, sizeof(e)) < 0) {
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

static void
private_targets_free(struct private *pv)
{
	struct target *tg;

	while ((tg = TAILQ_FIRST(&pv->pv_targets)) != NULL) {
		TAILQ_REMOVE(&pv->pv_targets, tg, tg_entry);
		event_free(tg->tg_timer);
		free(tg);
	}
}

/* proxy_hooks: the skeleton's start and stop (proxy.h). */
static int
private_bind(struct proxy *px, char *err, size_t errlen)
{
	struct private *pv = px->px_role;

	return control_bind(&pv->pv_ctl, private_rpc, pv, err, errlen);
}

static int
private_open(struct proxy *px)
{
	struct private *pv = px->px_role;
	char err[512];

	if ((pv->pv_table = announce_table_new()) == NULL)
		fatalx("out of memory");
	if (pv->pv_conf->pc_datastore_file != NULL) {
		pv->pv_store = datastore_open(pv->pv_conf->pc_datastore_file, pv->pv_table,
		    now_wall(), err, sizeof(err));
		if (pv->pv_store == NULL) {
			log_errorx("private.datastore.settings.filename: %s", err);
			return -1;
		}
	}
	private_load_static(pv);
	if (private_resolve(pv, err, sizeof(err)) < 0) {
		log_warnx("%s", err);
		return -1;
	}
	/* issue #16 */
	if ((pv->pv_pool = private_pool_new(&(struct private_pool_env){
	    .pe_pv = pv, .pe_conf = pv->pv_conf, .pe_ctl = &pv->pv_ctl,
	    .pe_table = pv->pv_table, .pe_nsockets = &pv->pv_nsockets,
	    .pe_stopping = &pv->pv_stopping, .pe_endpoint = private_pool_endpoint,
	    .pe_join = private_pool_join, .pe_drained = private_drained })) == NULL)
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
	reload_init(&pv->pv_ctl, pv->pv_loop, pv->pv_conf, &(struct reload_role){ NULL });
}

static void
private_started(struct proxy *px)
{
	struct private *pv = px->px_role;
	struct proxy_conf *pc = pv->pv_conf;

	log_info("%s: JSON-RPC on %s, internal server %s, %zu announcement(s), io_uring %s",
	    pc->pc_name, pc->pc_rpc_server_bind, pc->pc_internal_address,
	    announce_count(pv->pv_table), loop_mode(pv->pv_loop));
	side_post(pv->pv_ctl.ct_side, private_announce_start, pv);
}

/* Stop: no more RPC (the side thread stops right after), no new dial jobs,
 * the relays may finish. */
static void
private_drain(struct proxy *px)
{
	struct private *pv = px->px_role;
	struct dial *d;

	atomic_store(&pv->pv_stopping, 1);
	private_pool_drain(pv->pv_pool);        /* issue #16: idle pooled ones first */
	TAILQ_FOREACH(d, &pv->pv_dials, dl_entry) {
		loop_cancel(pv->pv_loop, &d->dl_pub.ds_op);
		loop_cancel(pv->pv_loop, &d->dl_int.ds_op);
	}
}

static long
private_held(struct proxy *px)
{
	struct private *pv = px->px_role;

	return atomic_load(&pv->pv_nsockets);
}

/* The targets' timers belong to the side thread's base; the client fails
 * its calls in control_stop, after them (see private_announce_reply). */
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

	if (pv->pv_store)
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
	struct proxy px;

	memset(&pv, 0, sizeof(pv));
	pv.pv_conf = pc;
	TAILQ_INIT(&pv.pv_targets);
	TAILQ_INIT(&pv.pv_dials);
	if (pc->pc_internal_address == NULL &&
	    (pc->pc_internal_address = strdup("localhost:8888")) == NULL)
		fatal("strdup");
	return proxy_run(&px, pc, &pv.pv_ctl, &private_hooks, &pv);
}
