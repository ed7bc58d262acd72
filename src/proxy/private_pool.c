/* private_pool.c - the private proxy's pool keepers (issue #16; README
 * "Pooled data connections").  Threads: see private_pool.h.
 *
 * Keeper (side thread), one per public proxy this proxy announces to whose
 * pool size (public_proxies[].pool_size, else pool_size) is not 0; made when
 * that proxy first accepts an announcement pass:
 *   - holds a stash of tickets, fetched pool_batch at a time with
 *     <proxy>.requestConnectionTickets through the Hyper;
 *   - holds the newest minting key of that proxy (ticket.h), asked for
 *     ("key": true) with a batch when it has none, and again, alone, once
 *     half its lifetime is over (k_fetch_timer).  While it holds a key, no
 *     batch is fetched: once the stash is used up every ticket is minted,
 *     and the Hyper sees one call per half key lifetime, however many
 *     connections are pooled.  Without a key (a public proxy with
 *     ticket_key_lifetime 0) a new batch is fetched once fewer than half a
 *     batch is left;
 *   - keeps k_live (connections handed to the loop and not yet reported
 *     back) at pool_size: each one that ends (used for a client, closed by
 *     the public proxy at the end of its idle lifetime, failed) is
 *     replaced by the next ticket, one for one: an issued one from the
 *     stash, or, when the stash is empty (a burst, or the Hyper away so
 *     that fetches fail), one minted with the key, so that refill goes on
 *     without the Hyper.  A key that expires within POOL_KEY_MARGIN or has
 *     used up its nonces is dropped;
 *   - after a failed dial (connect refused or timed out, the public proxy
 *     closing within a second of the ticket, a bad start frame) it waits
 *     (1 s doubling to 30 s) before the next dial; a closing within a
 *     second also drops the stash, and the key when the ticket was minted
 *     with it (the public proxy probably restarted and forgot both);
 *   - after a failed fetch it waits likewise before the next fetch
 *     (k_fetch_timer), minting meanwhile if it has a key;
 *   - asks <proxy>.getInstances every instances_interval (issue #12:
 *     several public instances on one Redis, each with a heartbeat).
 *     The keeper above is the home keeper: it pools to the instance that
 *     answers its batches (k_inst).  For every other live instance whose
 *     data endpoint is allowed it keeps an instance keeper (k_home set)
 *     that dials that instance with tickets minted from the home's key and
 *     bound to that instance (the public instances share their keys
 *     through Redis); an instance no longer listed loses its keeper's
 *     refill (k_gone).  When the home's own instance is no longer listed,
 *     the home's stash and key are dropped and nothing is dialed until
 *     the next batch, which a live instance answers: the pool moves within
 *     one interval of the heartbeat's end.
 *
 * Pooled connection (loop thread, struct pool_conn):
 *
 *   CONNECTING ──connected, ticket written──> WAITING ──start frame read, SNI announced──> (joined: pe_join)
 *       │                                       │
 *       └─refused, timeout ──> (gone)           ├─EOF or error (idle lifetime over, killed) ──> (gone)
 *                                               ├─bad frame, over 512 bytes, SNI not announced ──> (gone, logged)
 *                                               ├─no complete frame token_timeout after its first byte ──> (gone)
 *                                               └─shutdown ──> (gone)
 *   CLOSING  its fd closed, waiting for the final completion of its op.
 *
 * The frame is read exactly: each recv asks for frame_reader_want() bytes,
 * so the ClientHello behind it stays in the socket for the relay. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bsd/string.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "frame.h"
#include "jsonrpc.h"
#include "log.h"
#include "loop.h"
#include "proxy_conf.h"
#include "side.h"
#include "ticket.h"
#include "util.h"
#include "private_pool.h"

#define POOL_BACKOFF_MIN	1.0	/* seconds, after a first failure */
#define POOL_BACKOFF_MAX	30.0
#define POOL_QUICK_MS		1000	/* closed this soon after its ticket: refused */
#define POOL_TICKET_MARGIN	2.0	/* seconds: a ticket this close to expiry is not used */
#define POOL_KEY_MARGIN		5.0	/* seconds: a key this close to expiry is dropped */
#define POOL_FRAME_LIMIT	512	/* bytes a start frame may take (FRAME_MAX is less) */
#define POOL_KEEPIDLE		15	/* TCP keepalive: seconds idle before the first probe */
#define POOL_KEEPINTVL		5
#define POOL_KEEPCNT		3

/* ---- side thread ------------------------------------------------------------ */

struct pool_ticket {
	uint8_t			 pt_bytes[TICKET_LEN];
	double			 pt_expiry;	/* monotonic seconds */
};

struct keeper {
	LIST_ENTRY(keeper)	 k_link;
	struct private_pool	*k_pp;
	struct keeper		*k_home;	/* NULL: a home keeper; else an instance
						 * keeper, minting with k_home's key */
	char			 k_inst[TICKET_INSTANCE_MAX + 1];	/* the instance it dials;
						 * home: as its last batch named it ("" unknown) */
	int			 k_gone;	/* instance keeper: not listed live any more */
	int			 k_listed;	/* seen in the last getInstances */
	char			 k_proxy[ANNOUNCE_NAME_MAX];
	long			 k_size;	/* pool_size for this proxy */
	long			 k_live;	/* handed to the loop, not reported back */
	struct pool_ticket	*k_tickets;	/* the stash, k_first..k_nt */
	size_t			 k_first, k_nt, k_cap;
	int			 k_fetching;	/* requestConnectionTickets in flight */
	int			 k_waiting;	/* dial backoff timer armed */
	double			 k_backoff;	/* dials; 0: not failing */
	struct event		*k_timer;	/* dial backoff */
	int			 k_fetch_waiting;	/* fetch backoff timer armed */
	double			 k_fetch_backoff;	/* fetches; 0: not failing */
	struct event		*k_fetch_timer;	/* fetch backoff, else the key's refresh */
	int			 k_haskey;
	struct ticket_key	 k_key;		/* the newest minting key (tk_op: our name) */
	double			 k_key_skew;	/* the public proxy's wall clock minus ours */
	double			 k_key_life;	/* its ticket_lifetime: a minted ticket's */
	double			 k_key_refresh;	/* monotonic: ask for the next key from then */
	uint64_t		 k_minted;	/* minted since the last batch fetched */
	int			 k_mint_said;	/* "minting" logged since the last batch */
	struct sockaddr_storage	 k_ep;		/* the data endpoint, from the last batch */
	socklen_t		 k_eplen;
	char			 k_epname[64];
	char			 k_epstr[256];	/* as the batch named it */
	struct event		*k_inst_timer;	/* the next getInstances */
	int			 k_inst_off;	/* the public proxy lacks it */
};

/* ---- loop thread ------------------------------------------------------------ */

enum pool_conn_state {
	PCN_CONNECTING,		/* loop_connect in flight */
	PCN_WAITING,		/* ticket written, reading the start frame */
	PCN_CLOSING,		/* fd closed; the op's final completion frees it */
};

/* How a pooled connection ended, for its keeper. */
enum pool_end {
	POOL_END_USED,		/* joined to a client */
	POOL_END_CLOSED,	/* closed after a while: replace it */
	POOL_END_FAILED,	/* failed: replace it after a backoff */
	POOL_END_REFUSED,	/* closed right after its ticket: drop the stash, back off */
};

struct pool_conn {
	TAILQ_ENTRY(pool_conn)	 pc_entry;	/* pp_conns until freed */
	struct private_pool	*pc_pp;
	enum pool_conn_state	 pc_state;
	enum pool_end		 pc_end;
	int			 pc_fd;
	struct loop_op		 pc_op;
	struct loop_timer	 pc_timer;	/* token_timeout, from the frame's first byte */
	struct frame_reader	 pc_reader;
	uint8_t			 pc_rbuf[FRAME_MAX];
	size_t			 pc_got;	/* frame bytes read */
	uint64_t		 pc_ready_ms;	/* when the ticket was written */
	int			 pc_draining;	/* a stop cancelled its recv */
	uint8_t			 pc_ticket[TICKET_LEN];
	int			 pc_minted;	/* pc_ticket was minted (its first bytes: the key id) */
	uint8_t			 pc_key_id[TICKET_KEY_ID_LEN];
	struct sockaddr_storage	 pc_sa;
	socklen_t		 pc_salen;
	struct keeper		*pc_keeper;	/* side thread's; only handed back */
	char			 pc_proxy[ANNOUNCE_NAME_MAX];
	char			 pc_epname[64];
};

/* A connection's end, posted to the side thread. */
struct pool_report {
	struct private_pool	*pr_pp;
	struct keeper		*pr_keeper;	/* keepers live until the side thread stops */
	enum pool_end		 pr_end;
	char			 pr_proxy[ANNOUNCE_NAME_MAX];
	int			 pr_minted;	/* its ticket was minted with key pr_key_id */
	uint8_t			 pr_key_id[TICKET_KEY_ID_LEN];
};

struct private_pool {
	struct private_pool_env	 pp_env;
	LIST_HEAD(, keeper)	 pp_keepers;	/* side thread */
	struct loop		*pp_loop;
	struct loop_timer_list	 pp_frame_timers;	/* loop thread */
	TAILQ_HEAD(, pool_conn)	 pp_conns;	/* loop thread */
	struct log_limit	 pp_log_fetch;	/* side thread */
	struct log_limit	 pp_log_conn;	/* loop thread */
};

static void	keeper_fill(struct keeper *);
static void	keeper_home_instance(struct keeper *, struct json_object *);
static void	pool_conn_recv_cb(struct loop_op *, int, unsigned);

static int
pool_stopping(struct private_pool *pp)
{
	return atomic_load(pp->pp_env.pe_stopping);
}

/* ---- keepers (side thread) --------------------------------------------------- */

static long
pool_size_for(struct private_pool *pp, const char *proxy)
{
	const struct proxy_conf *pc = pp->pp_env.pe_conf;

	for (int i = 0; i < pc->pc_npublic_proxies; i++)
		if (strcmp(pc->pc_public_proxies[i].pp_name, proxy) == 0 &&
		    pc->pc_public_proxies[i].pp_pool_size >= 0)
			return pc->pc_public_proxies[i].pp_pool_size;
	return pc->pc_pool_size;
}

static struct keeper *
keeper_find(struct private_pool *pp, const char *proxy)
{
	struct keeper *k;

	LIST_FOREACH(k, &pp->pp_keepers, k_link)
		if (k->k_home == NULL && strcmp(k->k_proxy, proxy) == 0)
			return k;
	return NULL;
}

/* An error answer that will not change by asking again: a public proxy
 * without the method, or a directory that does not grant it. */
static int
pool_error_permanent(struct json_object *error)
{
	struct json_object *jcode;
	int code = json_object_object_get_ex(error, "code", &jcode) ?
	    json_object_get_int(jcode) : 0;

	return code == JSONRPC_METHOD_NOT_FOUND || code == HP_ERR_FORBIDDEN ||
	    code == HP_ERR_NOT_FOUND;
}

/* Fill every instance keeper of home (its key came, or went). */
static void
keeper_fill_instances(struct keeper *home)
{
	struct keeper *k;

	LIST_FOREACH(k, &home->k_pp->pp_keepers, k_link)
		if (k->k_home == home)
			keeper_fill(k);
}

static void
keeper_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct keeper *k = arg;

	k->k_waiting = 0;
	keeper_fill(k);
}

static void
keeper_fetch_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct keeper *k = arg;

	k->k_fetch_waiting = 0;
	keeper_fill(k);
}

/* A failed fetch: wait before the next one (dials go on). */
static void
keeper_fetch_backoff(struct keeper *k)
{
	struct timeval tv;

	k->k_fetch_backoff = k->k_fetch_backoff == 0 ? POOL_BACKOFF_MIN :
	    k->k_fetch_backoff * 2;
	if (k->k_fetch_backoff > POOL_BACKOFF_MAX)
		k->k_fetch_backoff = POOL_BACKOFF_MAX;
	tv = tv_seconds(k->k_fetch_backoff);
	evtimer_add(k->k_fetch_timer, &tv);
	k->k_fetch_waiting = 1;
}

static void
keeper_drop_key(struct keeper *k, const char *why)
{
	if (!k->k_haskey)
		return;
	log_info("pool of %s: minting key dropped: %s", k->k_proxy, why);
	explicit_bzero(k->k_key.tk_secret, sizeof(k->k_key.tk_secret));
	memset(&k->k_key, 0, sizeof(k->k_key));
	k->k_haskey = 0;
}

/* A key from a fetch's answer: the newest replaces the one held. */
static void
keeper_take_key(struct keeper *k, struct json_object *jkey)
{
	struct private_pool *pp = k->k_pp;
	struct ticket_key key;
	double life, skew, now = now_wall(), in;
	char err[128];

	if (ticket_key_parse(jkey, pp->pp_env.pe_conf->pc_name, now, &key, &life, &skew, err,
	    sizeof(err)) < 0) {
		log_limited(&pp->pp_log_fetch, LOG_LVL_WARN,
		    "pool of %s: requestConnectionTickets: %s: key ignored", k->k_proxy, err);
		return;
	}
	in = (double)key.tk_expiry - (now + skew);
	explicit_bzero(k->k_key.tk_secret, sizeof(k->k_key.tk_secret));
	k->k_key = key;
	explicit_bzero(&key, sizeof(key));
	k->k_haskey = 1;
	k->k_key_skew = skew;
	k->k_key_life = life;
	/* the next one at half its lifetime: the rest covers an outage */
	k->k_key_refresh = now_mono() + in / 2;
	log_debug("pool of %s: minting key, expires in %.0f s (clock difference %.1f s)",
	    k->k_proxy, in, skew);
}

/* A failed dial: wait before the next one. */
static void
keeper_backoff(struct keeper *k)
{
	struct timeval tv;

	k->k_backoff = k->k_backoff == 0 ? POOL_BACKOFF_MIN : k->k_backoff * 2;
	if (k->k_backoff > POOL_BACKOFF_MAX)
		k->k_backoff = POOL_BACKOFF_MAX;
	tv = tv_seconds(k->k_backoff);
	evtimer_add(k->k_timer, &tv);
	k->k_waiting = 1;
}

static size_t
keeper_stash(const struct keeper *k)
{
	return k->k_nt - k->k_first;
}

/* Tickets that expire too soon to be redeemed are dropped from the front
 * (the stash is in the order they were issued). */
static void
keeper_drop_expired(struct keeper *k)
{
	double limit = now_mono() + POOL_TICKET_MARGIN;

	while (k->k_first < k->k_nt && k->k_tickets[k->k_first].pt_expiry <= limit) {
		explicit_bzero(&k->k_tickets[k->k_first], sizeof(k->k_tickets[0]));
		k->k_first++;
	}
}

static void
keeper_drop_all(struct keeper *k)
{
	if (k->k_tickets != NULL)
		explicit_bzero(k->k_tickets, k->k_cap * sizeof(*k->k_tickets));
	k->k_first = k->k_nt = 0;
}

struct fetch_call {
	struct private_pool	*fc_pp;
	char			 fc_proxy[ANNOUNCE_NAME_MAX];
	int			 fc_count;	/* tickets asked for (0: only a key) */
};

static void
keeper_fetch_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct fetch_call *fc = arg;
	struct private_pool *pp = fc->fc_pp;
	struct json_object *jt, *je, *jx, *jkey;
	const struct sockaddr_storage *sa;
	struct keeper *k;
	socklen_t salen = 0;
	double now = now_mono(), life;
	size_t n, added = 0;

	/* At stop the keepers are freed before the client fails its calls. */
	if (pool_stopping(pp) || (k = keeper_find(pp, fc->fc_proxy)) == NULL)
		goto done;
	k->k_fetching = 0;
	if (error != NULL) {
		/* a public proxy without the pool, or a directory that does
		 * not grant the method: ask again only now and then */
		if (pool_error_permanent(error))
			k->k_fetch_backoff = POOL_BACKOFF_MAX;
		log_limited(&pp->pp_log_fetch, LOG_LVL_WARN,
		    "pool of %s: requestConnectionTickets failed: %s%s%s", k->k_proxy,
		    json_object_to_json_string(error), k->k_fetch_backoff == POOL_BACKOFF_MAX ?
		    "; asking again every 30 s" : "", k->k_haskey ?
		    "; minting tickets with the key meanwhile" :
		    "; brokering by incomingConnection once the stash is empty");
		keeper_fetch_backoff(k);
		goto done;
	}
	if (!json_object_object_get_ex(result, "tickets", &jt) ||
	    !json_object_is_type(jt, json_type_array) ||
	    !json_object_object_get_ex(result, "data_endpoint", &je) ||
	    !json_object_is_type(je, json_type_string) ||
	    !json_object_object_get_ex(result, "expires_in", &jx) ||
	    !(json_object_is_type(jx, json_type_double) || json_object_is_type(jx, json_type_int))) {
		log_limited(&pp->pp_log_fetch, LOG_LVL_WARN,
		    "pool of %s: requestConnectionTickets: malformed result", k->k_proxy);
		keeper_fetch_backoff(k);
		goto done;
	}
	/* Only an address of its data_endpoints setting is dialed. */
	if ((sa = pp->pp_env.pe_endpoint(pp->pp_env.pe_pv, k->k_proxy,
	    json_object_get_string(je), &salen)) == NULL) {
		log_limited(&pp->pp_log_fetch, LOG_LVL_WARN,
		    "pool of %s: data endpoint %.64s is not one of its data_endpoints", k->k_proxy,
		    json_object_get_string(je));
		keeper_fetch_backoff(k);
		goto done;
	}
	memcpy(&k->k_ep, sa, salen);
	k->k_eplen = salen;
	addr_str((const struct sockaddr *)sa, k->k_epname, sizeof(k->k_epname));
	strlcpy(k->k_epstr, json_object_get_string(je), sizeof(k->k_epstr));
	keeper_home_instance(k, result);
	life = json_object_get_double(jx);
	n = json_object_array_length(jt);
	/* compact the stash, then append */
	if (k->k_first > 0) {
		memmove(k->k_tickets, k->k_tickets + k->k_first,
		    keeper_stash(k) * sizeof(*k->k_tickets));
		k->k_nt -= k->k_first;
		k->k_first = 0;
	}
	if (k->k_nt + n > k->k_cap) {
		struct pool_ticket *t = realloc(k->k_tickets, (k->k_nt + n) * sizeof(*t));

		if (t == NULL) {
			keeper_fetch_backoff(k);
			goto done;
		}
		k->k_tickets = t;
		k->k_cap = k->k_nt + n;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *v = json_object_array_get_idx(jt, i);
		struct pool_ticket *t = &k->k_tickets[k->k_nt];

		if (!json_object_is_type(v, json_type_string) ||
		    b64_decode(json_object_get_string(v), t->pt_bytes, TICKET_LEN) != TICKET_LEN)
			continue;
		t->pt_expiry = now + life;
		k->k_nt++;
		added++;
	}
	if (json_object_object_get_ex(result, "key", &jkey))
		keeper_take_key(k, jkey);
	log_debug("pool of %s: %zu ticket(s) fetched, data endpoint %s", k->k_proxy, added,
	    k->k_epname);
	if (added == 0 && fc->fc_count > 0) {
		keeper_fetch_backoff(k);
		goto done;
	}
	if (k->k_fetch_backoff > 0)
		log_info("pool of %s: requestConnectionTickets answers again: %zu ticket(s); "
		    "%llu minted meanwhile", k->k_proxy, added, (unsigned long long)k->k_minted);
	else if (k->k_minted > 0)
		log_debug("pool of %s: %llu ticket(s) minted since the last batch", k->k_proxy,
		    (unsigned long long)k->k_minted);
	k->k_fetch_backoff = 0;
	k->k_minted = 0;
	k->k_mint_said = 0;
	keeper_fill(k);
	keeper_fill_instances(k);
done:
	free(fc);
}

/* Ask for count tickets (0: none) and, when want_key, a new key. */
static void
keeper_fetch(struct keeper *k, int count, int want_key)
{
	struct private_pool *pp = k->k_pp;
	struct json_object *params;
	struct fetch_call *fc;

	if ((fc = calloc(1, sizeof(*fc))) == NULL)
		return;
	fc->fc_pp = pp;
	fc->fc_count = count;
	strlcpy(fc->fc_proxy, k->k_proxy, sizeof(fc->fc_proxy));
	k->k_fetching = 1;
	params = json_object_new_object();
	json_object_object_add(params, "count", json_object_new_int(count));
	if (want_key)
		json_object_object_add(params, "key", json_object_new_boolean(1));
	control_call(pp->pp_env.pe_ctl, k->k_proxy, "requestConnectionTickets", params,
	    keeper_fetch_reply, fc);
	json_object_put(params);
}

static void pool_conn_start(void *arg);

/* The next ticket for c: the stash's oldest, else one minted with the key.
 * 0, or -1 when there is none. */
static int
keeper_ticket(struct keeper *k, struct pool_conn *c)
{
	struct keeper *h = k->k_home != NULL ? k->k_home : k;
	double now;

	if (k->k_home == NULL && keeper_stash(k) > 0) {
		memcpy(c->pc_ticket, k->k_tickets[k->k_first].pt_bytes, TICKET_LEN);
		explicit_bzero(&k->k_tickets[k->k_first], sizeof(k->k_tickets[0]));
		k->k_first++;
		return 0;
	}
	if (!h->k_haskey)
		return -1;
	/* the public proxy's clock, as well as we know it */
	now = now_wall() + h->k_key_skew;
	if ((double)h->k_key.tk_expiry - now < POOL_KEY_MARGIN) {
		keeper_drop_key(h, "expired");
		return -1;
	}
	/* bound to the instance dialed (any instance that shares the key
	 * would otherwise take it too) */
	if (ticket_mint(&h->k_key, k->k_inst[0] != '\0' ? k->k_inst : NULL, now, h->k_key_life,
	    c->pc_ticket) < 0) {
		keeper_drop_key(h, "nonces used up");
		return -1;
	}
	c->pc_minted = 1;
	memcpy(c->pc_key_id, h->k_key.tk_id, TICKET_KEY_ID_LEN);
	if (k->k_home != NULL)
		return 0;
	if (++k->k_minted == 1)
		log_debug("pool of %s: stash empty, minting", k->k_proxy);
	if (k->k_fetch_backoff > 0 && !k->k_mint_said) {
		k->k_mint_said = 1;
		log_info("pool of %s: no issued ticket left and requestConnectionTickets failing: "
		    "minting tickets with the key (expires in %.0f s)", k->k_proxy,
		    (double)k->k_key.tk_expiry - now);
	}
	return 0;
}

/* Dial while the pool is short and tickets are left (issued or minted);
 * fetch when the stash runs low or the key is due for renewal. */
static void
keeper_fill(struct keeper *k)
{
	struct private_pool *pp = k->k_pp;
	long max = pp->pp_env.pe_conf->pc_max_connections;
	int batch = (int)pp->pp_env.pe_conf->pc_pool_batch, low, key_due;
	struct keeper *h = k->k_home != NULL ? k->k_home : k;
	struct pool_conn *c;
	struct timeval tv;

	if (pool_stopping(pp))
		return;
	keeper_drop_expired(h);
	while (!k->k_waiting && !k->k_gone && k->k_eplen > 0 && k->k_live < k->k_size &&
	    ((k->k_home == NULL && keeper_stash(k) > 0) || h->k_haskey)) {
		/* one socket each (a dial-back reserves two) */
		if (atomic_fetch_add(pp->pp_env.pe_nsockets, 1) + 1 > max) {
			atomic_fetch_sub(pp->pp_env.pe_nsockets, 1);
			break;
		}
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			atomic_fetch_sub(pp->pp_env.pe_nsockets, 1);
			break;
		}
		c->pc_pp = pp;
		c->pc_fd = -1;
		if (keeper_ticket(k, c) < 0) {
			atomic_fetch_sub(pp->pp_env.pe_nsockets, 1);
			free(c);
			break;
		}
		memcpy(&c->pc_sa, &k->k_ep, k->k_eplen);
		c->pc_salen = k->k_eplen;
		c->pc_keeper = k;
		strlcpy(c->pc_proxy, k->k_proxy, sizeof(c->pc_proxy));
		strlcpy(c->pc_epname, k->k_epname, sizeof(c->pc_epname));
		if (loop_post(pp->pp_loop, pool_conn_start, c) < 0) {
			atomic_fetch_sub(pp->pp_env.pe_nsockets, 1);
			explicit_bzero(c, sizeof(*c));
			free(c);
			break;
		}
		k->k_live++;
	}
	/* fetching is the home keeper's */
	if (k->k_home != NULL || k->k_fetching || k->k_fetch_waiting)
		return;
	/* with a key, the stash is only what is left of the first batch */
	low = !k->k_haskey && keeper_stash(k) * 2 < (size_t)batch;
	/* only a proxy that gave a key before is asked for one alone */
	key_due = k->k_haskey && now_mono() >= k->k_key_refresh;
	if (low || key_due)
		keeper_fetch(k, low ? batch : 0, !k->k_haskey || key_due);
	else if (k->k_haskey) {
		/* nothing due: wake up when the key is */
		tv = tv_seconds(k->k_key_refresh - now_mono());
		evtimer_add(k->k_fetch_timer, &tv);
	}
}

/* A pooled connection ended (posted by the loop thread). */
static void
keeper_report(void *arg)
{
	struct pool_report *r = arg;
	struct private_pool *pp = r->pr_pp;
	struct keeper *k;

	if (pool_stopping(pp) || (k = r->pr_keeper) == NULL) {
		free(r);
		return;
	}
	k->k_live--;
	if (k->k_home != NULL && r->pr_end == POOL_END_REFUSED)
		/* an instance that has not learned the key yet, or restarted:
		 * the home's key stays, this keeper waits */
		r->pr_end = POOL_END_FAILED;
	switch (r->pr_end) {
	case POOL_END_USED:
		k->k_backoff = 0;
		keeper_fill(k);
		break;
	case POOL_END_CLOSED:
		keeper_fill(k);
		break;
	case POOL_END_REFUSED:
		keeper_drop_all(k);
		if (r->pr_minted && k->k_haskey &&
		    memcmp(r->pr_key_id, k->k_key.tk_id, TICKET_KEY_ID_LEN) == 0)
			keeper_drop_key(k, "a ticket minted with it was refused");
		/* FALLTHROUGH */
	case POOL_END_FAILED:
		if (!k->k_waiting)
			keeper_backoff(k);
		break;
	}
	free(r);
}

/* ---- instances (issue #12) ---------------------------------------------------- */

/* The home keeper's instance, as its batch names it; an instance keeper
 * for that instance stops (the home covers it now). */
static void
keeper_home_instance(struct keeper *k, struct json_object *result)
{
	struct json_object *ji;
	struct keeper *x;
	const char *id = "";

	if (json_object_object_get_ex(result, "instance", &ji) &&
	    json_object_is_type(ji, json_type_string) &&
	    json_object_get_string_len(ji) <= TICKET_INSTANCE_MAX)
		id = json_object_get_string(ji);
	if (strcmp(id, k->k_inst) == 0)
		return;
	strlcpy(k->k_inst, id, sizeof(k->k_inst));
	LIST_FOREACH(x, &k->k_pp->pp_keepers, k_link)
		if (x->k_home == k && strcmp(x->k_inst, id) == 0)
			x->k_gone = 1;
}

/* The instance keeper of home for instance id at endpoint: made when new,
 * woken when it was gone; filled.  An endpoint outside data_endpoints is
 * never dialed. */
static void
keeper_instance(struct keeper *home, const char *id, const char *endpoint)
{
	struct private_pool *pp = home->k_pp;
	const struct sockaddr_storage *sa;
	struct keeper *k;
	socklen_t salen = 0;

	LIST_FOREACH(k, &pp->pp_keepers, k_link)
		if (k->k_home == home && strcmp(k->k_inst, id) == 0)
			break;
	if (k != NULL && strcmp(k->k_epstr, endpoint) == 0) {
		if (k->k_gone)
			log_info("pool of %s: instance %s (%s) is back", home->k_proxy, id,
			    endpoint);
		goto fill;
	}
	/* new, or at another endpoint */
	if ((sa = pp->pp_env.pe_endpoint(pp->pp_env.pe_pv, home->k_proxy, endpoint,
	    &salen)) == NULL) {
		log_limited(&pp->pp_log_fetch, LOG_LVL_WARN,
		    "pool of %s: instance %s: data endpoint %.64s is not one of its "
		    "data_endpoints: not pooled", home->k_proxy, id, endpoint);
		return;
	}
	if (k == NULL) {
		if ((k = calloc(1, sizeof(*k))) == NULL)
			return;
		k->k_pp = pp;
		k->k_home = home;
		k->k_size = home->k_size;
		strlcpy(k->k_proxy, home->k_proxy, sizeof(k->k_proxy));
		strlcpy(k->k_inst, id, sizeof(k->k_inst));
		if ((k->k_timer = evtimer_new(side_base(pp->pp_env.pe_ctl->ct_side),
		    keeper_timer_cb, k)) == NULL) {
			free(k);
			return;
		}
		LIST_INSERT_HEAD(&pp->pp_keepers, k, k_link);
		log_info("pool of %s: instance %s at %s: keeping %ld data connection(s) there "
		    "too", home->k_proxy, id, endpoint, k->k_size);
	}
	memcpy(&k->k_ep, sa, salen);
	k->k_eplen = salen;
	addr_str((const struct sockaddr *)sa, k->k_epname, sizeof(k->k_epname));
	strlcpy(k->k_epstr, endpoint, sizeof(k->k_epstr));
fill:
	k->k_listed = 1;
	k->k_gone = 0;
	keeper_fill(k);
}

struct inst_call {
	struct private_pool	*ic_pp;
	char			 ic_proxy[ANNOUNCE_NAME_MAX];
};

static void
keeper_instances_arm(struct keeper *k)
{
	struct timeval tv;
	double every = k->k_pp->pp_env.pe_conf->pc_instances_interval;

	if (every <= 0 || k->k_inst_off)
		return;
	tv = tv_seconds(every);
	evtimer_add(k->k_inst_timer, &tv);
}

/* The pool's instance is gone: start over from a live one. */
static void
keeper_move(struct keeper *k)
{
	log_info("pool of %s: no live instance at %s (its heartbeat ended): its tickets and "
	    "key dropped, the pool moves to a live instance", k->k_proxy, k->k_epstr);
	keeper_drop_all(k);
	keeper_drop_key(k, "its instance is gone");
	k->k_eplen = 0;
	k->k_epstr[0] = '\0';
	if (k->k_waiting)
		evtimer_del(k->k_timer);
	k->k_waiting = 0;
	k->k_backoff = 0;
	if (k->k_fetch_waiting)
		evtimer_del(k->k_fetch_timer);
	k->k_fetch_waiting = 0;
	k->k_fetch_backoff = 0;
	keeper_fill(k);
}

static void
keeper_instances_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct inst_call *ic = arg;
	struct private_pool *pp = ic->ic_pp;
	struct json_object *jl;
	struct keeper *k, *x;
	size_t n, live = 0;
	int found = 0;

	if (pool_stopping(pp) || (k = keeper_find(pp, ic->ic_proxy)) == NULL)
		goto done;
	if (error != NULL) {
		/* an older public proxy, or a directory without the method */
		if (pool_error_permanent(error)) {
			k->k_inst_off = 1;
			log_info("pool of %s: getInstances not available (%s): its instances "
			    "are not followed", k->k_proxy, json_object_to_json_string(error));
		}
		goto rearm;
	}
	if (!json_object_object_get_ex(result, "instances", &jl) ||
	    !json_object_is_type(jl, json_type_array)) {
		log_limited(&pp->pp_log_fetch, LOG_LVL_WARN,
		    "pool of %s: getInstances: malformed result", k->k_proxy);
		goto rearm;
	}
	n = json_object_array_length(jl);
	LIST_FOREACH(x, &pp->pp_keepers, k_link)
		if (x->k_home == k)
			x->k_listed = 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(jl, i), *je, *jid;
		const char *id = NULL;

		if (!json_object_object_get_ex(o, "data_endpoint", &je) ||
		    !json_object_is_type(je, json_type_string))
			continue;
		if (json_object_object_get_ex(o, "id", &jid) &&
		    json_object_is_type(jid, json_type_string))
			id = json_object_get_string(jid);
		live++;
		if (strcmp(json_object_get_string(je), k->k_epstr) == 0 ||
		    (id != NULL && strcmp(id, k->k_inst) == 0)) {
			found = 1;
			continue;
		}
		/* another instance: pool to it too, once the home instance is
		 * known (its id tells the two apart) */
		if (id != NULL && k->k_inst[0] != '\0')
			keeper_instance(k, id, json_object_get_string(je));
	}
	LIST_FOREACH(x, &pp->pp_keepers, k_link)
		if (x->k_home == k && !x->k_listed && !x->k_gone) {
			x->k_gone = 1;
			log_info("pool of %s: instance %s (%s) is gone: no more refill", k->k_proxy,
			    x->k_inst, x->k_epstr);
		}
	if (live > 0 && k->k_epstr[0] != '\0' && !found)
		keeper_move(k);
rearm:
	keeper_instances_arm(k);
done:
	free(ic);
}

static void
keeper_instances_cb(evutil_socket_t fd, short what, void *arg)
{
	struct keeper *k = arg;
	struct private_pool *pp = k->k_pp;
	struct json_object *params;
	struct inst_call *ic;

	if (pool_stopping(pp) || (ic = calloc(1, sizeof(*ic))) == NULL)
		return;
	ic->ic_pp = pp;
	strlcpy(ic->ic_proxy, k->k_proxy, sizeof(ic->ic_proxy));
	params = json_object_new_object();
	control_call(pp->pp_env.pe_ctl, k->k_proxy, "getInstances", params,
	    keeper_instances_reply, ic);
	json_object_put(params);
}

void
private_pool_announced(struct private_pool *pp, const char *proxy)
{
	struct keeper *k;
	long size;

	if (pp == NULL || pool_stopping(pp))
		return;
	if ((k = keeper_find(pp, proxy)) == NULL) {
		if ((size = pool_size_for(pp, proxy)) == 0)
			return;         /* pool off: every connection is dialed back */
		if ((k = calloc(1, sizeof(*k))) == NULL)
			return;
		k->k_pp = pp;
		k->k_size = size;
		strlcpy(k->k_proxy, proxy, sizeof(k->k_proxy));
		if ((k->k_timer = evtimer_new(side_base(pp->pp_env.pe_ctl->ct_side),
		    keeper_timer_cb, k)) == NULL) {
			free(k);
			return;
		}
		if ((k->k_fetch_timer = evtimer_new(side_base(pp->pp_env.pe_ctl->ct_side),
		    keeper_fetch_timer_cb, k)) == NULL) {
			event_free(k->k_timer);
			free(k);
			return;
		}
		if ((k->k_inst_timer = evtimer_new(side_base(pp->pp_env.pe_ctl->ct_side),
		    keeper_instances_cb, k)) == NULL) {
			event_free(k->k_timer);
			event_free(k->k_fetch_timer);
			free(k);
			return;
		}
		LIST_INSERT_HEAD(&pp->pp_keepers, k, k_link);
		keeper_instances_arm(k);
		log_info("pool of %s: keeping %ld data connection(s)", proxy, size);
	}
	/* a new pass accepted (maybe a restarted public proxy): try now */
	if (k->k_waiting && k->k_backoff > POOL_BACKOFF_MIN) {
		evtimer_del(k->k_timer);
		k->k_waiting = 0;
	}
	if (k->k_fetch_waiting && k->k_fetch_backoff > POOL_BACKOFF_MIN) {
		evtimer_del(k->k_fetch_timer);
		k->k_fetch_waiting = 0;
	}
	keeper_fill(k);
}

/* ---- pooled connections (loop thread) ------------------------------------------ */

static void
pool_conn_free(struct pool_conn *c)
{
	struct private_pool *pp = c->pc_pp;

	TAILQ_REMOVE(&pp->pp_conns, c, pc_entry);
	explicit_bzero(c->pc_ticket, sizeof(c->pc_ticket));
	free(c);
}

/* Tell the keeper (unless stopping: nobody replaces anything then). */
static void
pool_conn_report(struct pool_conn *c, enum pool_end end)
{
	struct private_pool *pp = c->pc_pp;
	struct pool_report *r;

	if (pool_stopping(pp) || (r = calloc(1, sizeof(*r))) == NULL)
		return;
	r->pr_pp = pp;
	r->pr_keeper = c->pc_keeper;
	r->pr_end = end;
	strlcpy(r->pr_proxy, c->pc_proxy, sizeof(r->pr_proxy));
	r->pr_minted = c->pc_minted;
	memcpy(r->pr_key_id, c->pc_key_id, TICKET_KEY_ID_LEN);
	side_post(pp->pp_env.pe_ctl->ct_side, keeper_report, r);
}

/* End c: close its socket (unless joined), report, free once its op is over. */
static void
pool_conn_end(struct pool_conn *c, enum pool_end end, int joined)
{
	struct private_pool *pp = c->pc_pp;

	if (c->pc_state == PCN_CLOSING)
		return;
	c->pc_state = PCN_CLOSING;
	loop_timer_disarm(&pp->pp_frame_timers, &c->pc_timer);
	if (c->pc_op.lo_busy)
		loop_cancel(pp->pp_loop, &c->pc_op);
	if (c->pc_fd >= 0 && !joined) {
		close(c->pc_fd);
		atomic_fetch_sub(pp->pp_env.pe_nsockets, 1);
		if (pp->pp_env.pe_drained)
			pp->pp_env.pe_drained(pp->pp_env.pe_pv);
	}
	c->pc_fd = -1;
	pool_conn_report(c, end);
	if (!c->pc_op.lo_busy)
		pool_conn_free(c);
}

static void
pool_conn_frame_expired(struct loop_timer *t, void *arg)
{
	struct pool_conn *c = LOOP_CONTAINER_OF(t, struct pool_conn, pc_timer);

	log_limited(&c->pc_pp->pp_log_conn, LOG_LVL_WARN,
	    "pooled connection to %s (%s): no complete start frame within token_timeout: closed",
	    c->pc_proxy, c->pc_epname);
	pool_conn_end(c, POOL_END_FAILED, 0);
}

static void
pool_conn_read(struct pool_conn *c)
{
	loop_recv(c->pc_pp->pp_loop, &c->pc_op, c->pc_fd, c->pc_rbuf,
	    frame_reader_want(&c->pc_reader), -1);
}

/* The start frame is complete: is its name one announced to this proxy? */
static void
pool_conn_frame(struct pool_conn *c, const struct frame *f)
{
	struct private_pool *pp = c->pc_pp;
	struct announcement an;
	int fd = c->pc_fd;

	if (announce_match(pp->pp_env.pe_table, f->fr_sni, c->pc_proxy, now_wall(), &an) < 0) {
		log_limited(&pp->pp_log_conn, LOG_LVL_WARN, "pooled connection to %s (%s): start "
		    "frame for %s, which is not announced to it: closed", c->pc_proxy,
		    c->pc_epname, f->fr_sni);
		/* a failure: a public proxy that keeps doing it must not make us spin */
		pool_conn_end(c, POOL_END_FAILED, 0);
		return;
	}
	log_debug("pooled connection to %s: start frame %016llx for %s", c->pc_proxy,
	    (unsigned long long)f->fr_conn_id, f->fr_sni);
	/* The socket and its count go to the dial job. */
	c->pc_fd = -1;
	pp->pp_env.pe_join(pp->pp_env.pe_pv, fd, &an, f, c->pc_epname);
	pool_conn_end(c, POOL_END_USED, 1);
}

static void
pool_conn_recv_cb(struct loop_op *op, int res, unsigned flags)
{
	struct pool_conn *c = LOOP_CONTAINER_OF(op, struct pool_conn, pc_op);
	struct private_pool *pp = c->pc_pp;
	enum frame_result r;
	struct frame f;
	size_t taken;

	if (c->pc_state == PCN_CLOSING) {
		pool_conn_free(c);
		return;
	}
	if (c->pc_draining && res == -ECANCELED) {
		char b;

		/* A stop cancelled the recv: served only when the public proxy
		 * has written its frame meanwhile (a client waits behind it). */
		if (recv(c->pc_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) {
			pool_conn_end(c, POOL_END_CLOSED, 0);
			return;
		}
		if (c->pc_got == 0)
			loop_timer_arm(&pp->pp_frame_timers, &c->pc_timer);
		pool_conn_read(c);
		return;
	}
	if (c->pc_draining && c->pc_got == 0 && res > 0)
		log_info("pooled connection to %s: a start frame arrived during the stop: served",
		    c->pc_proxy);
	if (res <= 0) {
		int quick = c->pc_got == 0 &&
		    loop_now_ms(pp->pp_loop) - c->pc_ready_ms < POOL_QUICK_MS;

		if (quick)
			log_limited(&pp->pp_log_conn, LOG_LVL_WARN,
			    "pooled connection to %s (%s) closed right after its ticket "
			    "(refused?): backing off", c->pc_proxy, c->pc_epname);
		else if (c->pc_got > 0)
			log_limited(&pp->pp_log_conn, LOG_LVL_WARN,
			    "pooled connection to %s (%s) closed in its start frame", c->pc_proxy,
			    c->pc_epname);
		else
			log_debug("pooled connection to %s closed by its peer: %s", c->pc_proxy,
			    res == 0 ? "EOF" : strerror(-res));
		pool_conn_end(c, quick ? POOL_END_REFUSED : c->pc_got > 0 ? POOL_END_FAILED :
		    POOL_END_CLOSED, 0);
		return;
	}
	if (c->pc_got == 0)
		loop_timer_arm(&pp->pp_frame_timers, &c->pc_timer);
	c->pc_got += (size_t)res;
	r = frame_reader_feed(&c->pc_reader, c->pc_rbuf, (size_t)res, &taken, &f);
	if (r == FRAME_NEED_MORE && c->pc_got < POOL_FRAME_LIMIT) {
		pool_conn_read(c);
		return;
	}
	if (r != FRAME_OK) {
		log_limited(&pp->pp_log_conn, LOG_LVL_WARN,
		    "pooled connection to %s (%s): bad start frame: %s: closed", c->pc_proxy,
		    c->pc_epname, r == FRAME_NEED_MORE ? "too long" : frame_result_str(r));
		pool_conn_end(c, POOL_END_FAILED, 0);
		return;
	}
	pool_conn_frame(c, &f);
}

static void
pool_conn_connect_cb(struct loop_op *op, int res, unsigned flags)
{
	struct pool_conn *c = LOOP_CONTAINER_OF(op, struct pool_conn, pc_op);
	struct private_pool *pp = c->pc_pp;
	ssize_t n;

	if (c->pc_state == PCN_CLOSING) {
		pool_conn_free(c);
		return;
	}
	if (res < 0) {
		log_limited(&pp->pp_log_conn, LOG_LVL_WARN,
		    "pooled connection to %s (%s): %s", c->pc_proxy, c->pc_epname,
		    strerror(-res));
		pool_conn_end(c, POOL_END_FAILED, 0);
		return;
	}
	/* A fresh socket's send buffer is empty: 32 bytes go at once. */
	n = send(c->pc_fd, c->pc_ticket, TICKET_LEN, MSG_NOSIGNAL);
	explicit_bzero(c->pc_ticket, sizeof(c->pc_ticket));
	if (n != TICKET_LEN) {
		pool_conn_end(c, POOL_END_FAILED, 0);
		return;
	}
	c->pc_state = PCN_WAITING;
	c->pc_ready_ms = loop_now_ms(pp->pp_loop);
	loop_op_init(&c->pc_op, pool_conn_recv_cb);
	frame_reader_init(&c->pc_reader);
	pool_conn_read(c);
}

/* Posted by a keeper: dial one pooled connection. */
static void
pool_conn_start(void *arg)
{
	struct pool_conn *c = arg;
	struct private_pool *pp = c->pc_pp;
	unsigned ms = (unsigned)(pp->pp_env.pe_conf->pc_connect_timeout * 1000);
	int one = 1, idle = POOL_KEEPIDLE, intvl = POOL_KEEPINTVL, cnt = POOL_KEEPCNT;

	TAILQ_INSERT_TAIL(&pp->pp_conns, c, pc_entry);
	c->pc_state = PCN_CONNECTING;
	loop_op_init(&c->pc_op, pool_conn_connect_cb);
	if (pool_stopping(pp) || (c->pc_fd = socket(c->pc_sa.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
		if (!pool_stopping(pp))
			log_warn("pooled connection to %s: socket", c->pc_proxy);
		atomic_fetch_sub(pp->pp_env.pe_nsockets, 1);
		c->pc_fd = -1;
		pool_conn_end(c, POOL_END_FAILED, 0);
		if (pp->pp_env.pe_drained)
			pp->pp_env.pe_drained(pp->pp_env.pe_pv);
		return;
	}
	(void)setsockopt(c->pc_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* It may wait idle for long: keepalive finds a vanished peer. */
	(void)setsockopt(c->pc_fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)setsockopt(c->pc_fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(c->pc_fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(c->pc_fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	loop_connect(pp->pp_loop, &c->pc_op, c->pc_fd, (struct sockaddr *)&c->pc_sa,
	    c->pc_salen, ms ? ms : 1);
}

/* ---- life cycle ------------------------------------------------------------------ */

struct private_pool *
private_pool_new(const struct private_pool_env *env)
{
	struct private_pool *pp;

	if ((pp = calloc(1, sizeof(*pp))) == NULL)
		return NULL;
	pp->pp_env = *env;
	LIST_INIT(&pp->pp_keepers);
	TAILQ_INIT(&pp->pp_conns);
	return pp;
}

void
private_pool_start(struct private_pool *pp, struct loop *loop)
{
	pp->pp_loop = loop;
	loop_timer_list_init(loop, &pp->pp_frame_timers,
	    (uint64_t)(pp->pp_env.pe_conf->pc_frame_timeout * 1000), pool_conn_frame_expired, pp);
}

/*
 * Stop: the idle pooled connections go first, so that the public proxy
 * drops them from its pool as their FIN arrives.  A WAITING connection's
 * recv is cancelled, not its socket closed: the public proxy may have taken
 * it already, and the recv may even have completed with the start frame
 * (the completion not yet reaped).  pool_conn_recv_cb decides: the frame
 * arrived, it is served as usual; nothing came, it is closed.
 */
void
private_pool_drain(struct private_pool *pp)
{
	struct pool_conn *c, *next;
	int n = 0;

	if (pp == NULL)
		return;
	for (c = TAILQ_FIRST(&pp->pp_conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, pc_entry);
		if (c->pc_state == PCN_CLOSING)
			continue;
		n++;
		if (c->pc_state == PCN_WAITING && c->pc_op.lo_busy) {
			c->pc_draining = 1;
			loop_cancel(pp->pp_loop, &c->pc_op);
		} else
			pool_conn_end(c, POOL_END_CLOSED, 0);
	}
	if (n > 0)
		log_info("%d pooled connection(s) closed", n);
}

void
private_pool_side_stopped(struct private_pool *pp)
{
	struct keeper *k;

	if (pp == NULL)
		return;
	while ((k = LIST_FIRST(&pp->pp_keepers)) != NULL) {
		LIST_REMOVE(k, k_link);
		event_free(k->k_timer);
		if (k->k_fetch_timer != NULL)	/* home keepers only */
			event_free(k->k_fetch_timer);
		if (k->k_inst_timer != NULL)
			event_free(k->k_inst_timer);
		keeper_drop_all(k);
		explicit_bzero(&k->k_key, sizeof(k->k_key));
		free(k->k_tickets);
		free(k);
	}
}

void
private_pool_free(struct private_pool *pp)
{
	struct pool_conn *c;

	if (pp == NULL)
		return;
	private_pool_side_stopped(pp);
	while ((c = TAILQ_FIRST(&pp->pp_conns)) != NULL) {
		if (c->pc_fd >= 0)
			close(c->pc_fd);
		pool_conn_free(c);
	}
	free(pp);
}
