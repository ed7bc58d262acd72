/* public.c - `proxy run public` (SPEC section 4): the thin role file.
 *
 * Plugs the public proxy's pieces into the skeleton (proxy.h): binding,
 * the tables, the listeners, the drain; and holds its socket accounting
 * and admission, public_admit().  The machines and the side thread's
 * methods live in public_client.c, public_data.c and public_side.c (their
 * state: public_int.h).
 *
 * Threads: main (the io_uring loop) for everything here, except
 * public_side_stopped, which runs once the side thread is joined, and the
 * pool metrics' collector (side thread, at a scrape). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "directory.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "ratelimit.h"
#include "relay.h"
#include "reload.h"
#include "srccap.h"
#include "ticket.h"
#include "token.h"
#include "util.h"
#include "public_int.h"

/* --- socket accounting and admission --------------------------------------- */

/* max_connections refuses nothing: the listeners pause (the kernel's
 * backlog holds the rest), and these say how often and whether now. */
METRIC_COUNTER(m_pauses, "public_listener_pauses_total",
    "Times a listener of the public proxy paused accepting (tls: max_connections "
    "reached; data: max_connections plus the parked clients).", "listener")
METRIC_GAUGE(m_paused, "public_listener_paused", "1 while the listener is paused.",
    "listener")

static void public_data_close_posted(void *);

static void
public_listener_pause(struct loop_listener *l, const char *which)
{
	loop_listener_pause(l);
	metric_inc(&m_pauses, which);
	metric_set(&m_paused, 1, which);
}

static void
public_listener_resume(struct loop_listener *l, const char *which)
{
	loop_listener_resume(l);
	metric_set(&m_paused, 0, which);
}

/*
 * Every change of the sockets held, as an event.  max_connections: the TLS
 * listener pauses while the sockets held reach it (clients, and the data
 * sockets joined to them; a data connection waiting for its token is not
 * counted here, see dconn_admit).  The data listener pauses only past it by
 * the number of parked clients: each of them still needs its data
 * connection, and a full proxy that refused those would hold its parked
 * clients until accept_timeout.  While stopping, the TLS listener is
 * closed; the data listener and the pool stay while a client accepted
 * before the stop may still need a data connection (HELLO or PARKED), then
 * close too (public_data_close): the drain ends when nothing is held any
 * more.
 */
void
public_admit(struct public *p, enum public_event ev)
{
	long max = p->p_conf->pc_max_connections;
	int tls_full, data_full;

	switch (ev) {
	case PE_CLIENT_ACCEPTED:
		p->p_nconns++;
		break;
	case PE_CLIENT_PARKED:          /* one more data connection to admit */
		break;
	case PE_CLIENT_CLOSED:
		p->p_nconns--;
		break;
	case PE_DATA_ACCEPTED:
		p->p_ndata++;
		break;
	case PE_DATA_CLOSED:
		p->p_ndata--;
		break;
	case PE_PAIR_JOINED:            /* counted with its client now, unparked */
		p->p_ndata--;
		p->p_nconns++;
		break;
	case PE_PAIR_CLOSED:
		p->p_nconns -= 2;
		break;
	case PE_LISTENER_CLOSED:
		p->p_nlisteners--;
		break;
	case PE_POOL_ADDED:             /* issue #16: out of the token budget, pooled */
		p->p_ndata--;
		p->p_npooled++;
		break;
	case PE_POOL_CLOSED:
		p->p_npooled--;
		break;
	case PE_POOL_JOINED:            /* counted with its client now */
		p->p_npooled--;
		p->p_nconns++;
		break;
	}
	if (p->p_px.px_state != PS_RUNNING) {
		/* Not from here: the caller may be in the middle of a data
		 * connection or a pooled one that the close would free. */
		if (!p->p_data_closing && !p->p_data_close_posted && !public_clients_waiting(p) &&
		    loop_post(p->p_loop, public_data_close_posted, p) == 0)
			p->p_data_close_posted = 1;
		proxy_drained(&p->p_px);
		return;         /* the listeners are closed or closing */
	}
	if (ev == PE_DATA_ACCEPTED || ev == PE_DATA_CLOSED || ev == PE_POOL_ADDED ||
	    ev == PE_POOL_CLOSED)
		return;         /* not counted in max_connections */
	tls_full = p->p_nconns >= max;
	data_full = p->p_nconns >= max + (long)token_count(p->p_tokens);
	if (tls_full && !p->p_tls_paused) {
		/* Under a flood this flips often: one line per 10 s is enough. */
		if (now_mono() - p->p_full_logged >= 10 || p->p_full_logged == 0) {
			log_warnx("max_connections (%ld) reached: accepting paused", max);
			p->p_full_logged = now_mono();
		}
		public_listener_pause(&p->p_tls_listener, "tls");
	} else if (!tls_full && p->p_tls_paused)
		public_listener_resume(&p->p_tls_listener, "tls");
	if (data_full && !p->p_data_paused)
		public_listener_pause(&p->p_data_listener, "data");
	else if (!data_full && p->p_data_paused)
		public_listener_resume(&p->p_data_listener, "data");
	p->p_tls_paused = tls_full;
	p->p_data_paused = data_full;
}

static void
public_listener_closed(struct loop_listener *l)
{
	public_admit(l->ll_arg, PE_LISTENER_CLOSED);
}

/* Stopping, and no client waits for a data connection any more: the data
 * listener, the data connections still without a token and the idle pooled
 * connections go.  Once. */
static void
public_data_close(struct public *p)
{
	if (p->p_data_closing)
		return;
	p->p_data_closing = 1;
	loop_listener_stop(&p->p_data_listener, public_listener_closed);
	public_data_drain(p);
	public_pool_drain(p);
}

static void
public_data_close_posted(void *arg)
{
	struct public *p = arg;

	p->p_data_close_posted = 0;
	if (!public_clients_waiting(p))
		public_data_close(p);
}

/* A dual-stack listener ([::]) reports IPv4 clients as ::ffff:a.b.c.d:
 * log them (and key the rate limits) as the IPv4 addresses they are. */
void
public_unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;

	if (ss->ss_family != AF_INET6)
		return;
	memcpy(&s6, ss, sizeof(s6));
	if (!IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr))
		return;
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = s6.sin6_port;
	memcpy(&s4.sin_addr, &s6.sin6_addr.s6_addr[12], 4);
	memcpy(ss, &s4, sizeof(s4));
}

/* --- start and stop -------------------------------------------------------- */

/*
 * Every socket held is a descriptor: raise the soft RLIMIT_NOFILE to the
 * hard one and, when max_connections does not fit with a reserve for the
 * listeners, the ring, the RPC thread and the relay's pipes, lower it.
 */
static void
public_fd_limit(struct proxy_conf *pc)
{
	struct rlimit rl;
	long avail;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);  /* keep what we have */
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		return;
	avail = (long)rl.rlim_cur - PUBLIC_FD_RESERVE - 2 * pc->pc_max_pipes;
	/* data connections waiting for a token have their own budget */
	if (pc->pc_max_data_connections > avail / 4 && avail >= 64) {
		/* Only a value the operator chose is worth a warning. */
		if (pc->pc_max_data_connections_set)
			log_warnx("max_data_connections %ld does not fit RLIMIT_NOFILE %llu: "
			    "using %ld", pc->pc_max_data_connections,
			    (unsigned long long)rl.rlim_cur, avail / 4);
		else
			log_info("max_data_connections %ld (from RLIMIT_NOFILE %llu)", avail / 4,
			    (unsigned long long)rl.rlim_cur);
		pc->pc_max_data_connections = avail / 4;
	}
	avail -= pc->pc_max_data_connections;
	if (avail < 16)
		avail = 16;     /* tiny limit: EMFILE backoff does the rest */
	if (pc->pc_max_connections <= avail)
		return;
	/* Only a value the operator chose is worth a warning. */
	if (pc->pc_max_connections_set)
		log_warnx("max_connections %ld does not fit RLIMIT_NOFILE %llu: using %ld",
		    pc->pc_max_connections, (unsigned long long)rl.rlim_cur, avail);
	else
		log_info("max_connections %ld (from RLIMIT_NOFILE %llu)", avail,
		    (unsigned long long)rl.rlim_cur);
	pc->pc_max_connections = avail;
}

/* Bind one listener (not started yet); -1 with the reason in err. */
/* --- pool metrics (issue #16; side thread, at a scrape) ------------------------ */

/* Per operator, from the ticket book (its own lock), as getConnectionPools
 * reports them. */
METRIC_GAUGE(m_pooled, "public_pooled",
    "Idle pooled data connections held now, by operator.", "operator")
METRIC_GAUGE(m_pool_tickets, "public_pool_tickets",
    "Tickets issued and not yet redeemed or expired, by operator.", "operator")
METRIC_COUNTER(m_pool_leaves, "public_pool_leaves_total",
    "Pooled data connections that left the pool, by operator and reason (used: "
    "joined to a client; replaced: pool_idle_lifetime over; dead: found dead at use; "
    "closed: by the peer or at a stop).", "operator", "reason")
METRIC_COUNTER(m_pool_expired, "public_pool_tickets_expired_total",
    "Issued tickets that expired unused, by operator.", "operator")

static void
public_pool_metric(void *arg, const char *op, const struct ticket_stats *st)
{
	(void)arg;
	metric_set(&m_pooled, (int64_t)st->ts_idle, op);
	metric_set(&m_pool_tickets, (int64_t)st->ts_outstanding, op);
	metric_set(&m_pool_leaves, (int64_t)st->ts_used, op, "used");
	metric_set(&m_pool_leaves, (int64_t)st->ts_replaced, op, "replaced");
	metric_set(&m_pool_leaves, (int64_t)st->ts_dead, op, "dead");
	metric_set(&m_pool_leaves, (int64_t)st->ts_closed, op, "closed");
	metric_set(&m_pool_expired, (int64_t)st->ts_expired, op);
}

static void
public_pool_collect(void *arg)
{
	struct public *p = arg;

	if (p->p_tickets != NULL)
		ticket_foreach(p->p_tickets, public_pool_metric, NULL);
}

static int
public_bind(const struct proxy_conf *pc, const char *addr, const char *key, char *err,
    size_t errlen)
{
	char why[256];
	int fd = listen_tcp_opt(addr, 4096, pc->pc_reuse_port, why, sizeof(why));

	if (fd < 0)
		snprintf(err, errlen, "public.%s: cannot listen on %s", key, why);
	return fd;
}

static void
public_listen(struct public *p, struct loop_listener *l, int fd, const char *addr,
    const char *what, void (*cb)(struct loop_listener *, int))
{
	loop_listener_start(p->p_loop, l, fd, cb, p);
	p->p_nlisteners++;
	log_info("%s listening on %s", what, addr);
}

/*
 * After the datastore replay (main thread, before the side thread starts):
 * stored announcements without an expiry (written by older versions) get
 * the longest one, and, with a directory, allowed_domains is checked again.
 * Both are made durable by compacting the store (no withdrawal lines left).
 */
static int
public_load_checks(struct public *p)
{
	struct proxy_conf *pc = p->p_conf;
	struct directory *dir;
	double now = now_wall();
	char err[512];
	int changed, n;

	changed = announce_cap_expiry(p->p_announce, announce_effective_expiry(0, now));
	if (pc->pc_dir_paths != NULL) {
		if ((p->p_watch = directory_watch_new(pc->pc_dir_paths, err,
		    sizeof(err))) == NULL) {
			log_warnx("directory: %s", err);
			return -1;
		}
		dir = directory_watch_get(p->p_watch);
		n = public_recheck_directory(p, dir, "datastore replay");
		directory_unref(dir);
		if (n < 0)
			return -1;
		changed += n;
	}
	if (changed > 0 &&
	    datastore_compact(p->p_store, now, err, sizeof(err)) < 0) {
		log_warnx("datastore: %s", err);
		return -1;
	}
	return 0;
}

int
public_loop_init(struct public *p)
{
	struct proxy_conf *pc = p->p_conf;

	TAILQ_INIT(&p->p_pconns);
	TAILQ_INIT(&p->p_dconns);
	p->p_tokens = token_table_new((size_t)pc->pc_max_connections);
	p->p_limits = ratelimit_new(pc->pc_rate_limits, pc->pc_nrate_limits,
	    &pc->pc_rate_prefixes, 65536);
	p->p_data_limits = ratelimit_new(pc->pc_data_rate_limits, pc->pc_ndata_rate_limits,
	    &pc->pc_rate_prefixes, 65536);
	p->p_sources = srccap_new(pc->pc_max_per_source);
	p->p_peekbuf = malloc((size_t)pc->pc_hello_max_bytes);
	if (!p->p_tokens || !p->p_limits || !p->p_data_limits || !p->p_sources ||
	    !p->p_peekbuf || public_pool_init(p) < 0)
		return -1;
	return 0;
}

/* With p_loop set: the timer lists of the two machines. */
static void
public_timers_init(struct public *p)
{
	struct proxy_conf *pc = p->p_conf;

	loop_timer_list_init(p->p_loop, &p->p_hello_timers,
	    (uint64_t)(pc->pc_hello_timeout * 1000), pconn_hello_expired, p);
	loop_timer_list_init(p->p_loop, &p->p_park_timers,
	    (uint64_t)(pc->pc_accept_timeout * 1000), pconn_park_expired, p);
	loop_timer_list_init(p->p_loop, &p->p_token_timers,
	    (uint64_t)(pc->pc_token_timeout * 1000), dconn_token_expired, p);
	pconn_retry_timers_init(p);
	public_pool_start(p);
}

void
public_loop_free(struct public *p)
{
	public_clients_free(p);
	public_data_free(p);
	public_pool_free(p);
	token_table_free(p->p_tokens);
	ratelimit_free(p->p_limits);
	srccap_free(p->p_sources);
	ratelimit_free(p->p_data_limits);
	free(p->p_peekbuf);
	p->p_tokens = NULL;
	p->p_limits = p->p_data_limits = NULL;
	p->p_sources = NULL;
	p->p_peekbuf = NULL;
}

/* --- the skeleton's hooks -------------------------------------------------- */

/*
 * With reuse_port, a stop closes listeners that may still hold connections
 * the kernel queued (accepted, or still in the handshake).  Only
 * net.ipv4.tcp_migrate_req (Linux 5.14, per network namespace) moves them
 * to another listener of the group, the successor's; without it they are
 * reset.  Said once at start; the proxy never changes a system setting.
 */
static void
public_migrate_check(void)
{
	FILE *f;
	int v = -1;

	if ((f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r")) != NULL) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	if (v == 0)
		log_warnx("reuse_port: net.ipv4.tcp_migrate_req is 0: connections queued on "
		    "this proxy's listeners when it stops are reset instead of moved to its "
		    "successor (set it to 1 for a hand-over that loses nothing; see README)");
	else if (v < 0)
		log_warnx("reuse_port: cannot read net.ipv4.tcp_migrate_req (Linux 5.14): "
		    "connections queued on this proxy's listeners when it stops are reset");
}

static int
public_bind_all(struct proxy *px, char *err, size_t errlen)
{
	struct public *p = px->px_role;
	struct proxy_conf *pc = p->p_conf;

	if ((p->p_tls_fd = public_bind(pc, pc->pc_tls_bind, "tls_bind_address", err,
	    errlen)) < 0 ||
	    (p->p_data_fd = public_bind(pc, pc->pc_data_bind, "internal_bind_address", err,
	    errlen)) < 0 ||
	    control_bind(&p->p_ctl, public_rpc, p, err, errlen) < 0)
		return -1;
	if (pc->pc_reuse_port)
		public_migrate_check();
	public_handover_bind(p);
	return 0;
}

static int
public_open(struct proxy *px)
{
	struct public *p = px->px_role;
	struct proxy_conf *pc = p->p_conf;
	char err[512];

	public_fd_limit(pc);
	if ((p->p_announce = announce_table_new()) == NULL || public_loop_init(p) < 0) {
		log_errorx("out of memory");
		return -1;
	}
	if (pc->pc_datastore_redis) {
		struct datastore_redis_conf rc = {
			.rc_address = pc->pc_redis_address,
			.rc_prefix = pc->pc_redis_prefix,
			.rc_password = pc->pc_redis_password,
			.rc_timeout = pc->pc_redis_timeout,
		};

		/* loaded by its thread once the side thread runs */
		if ((p->p_store = datastore_open_redis(&rc, p->p_announce, err,
		    sizeof(err))) == NULL) {
			log_errorx("public.datastore.settings: %s", err);
			return -1;
		}
	/* no filename: memory only (datastore.h) */
	} else if ((p->p_store = datastore_open(pc->pc_datastore_file, p->p_announce,
	    now_wall(), err, sizeof(err))) == NULL) {
		log_errorx("public.datastore.settings.filename: %s", err);
		return -1;
	}
	/* issue #12: with Redis, a heartbeat names this instance and its
	 * data endpoint to the private proxies (getInstances) */
	proxy_instance_id(pc, p->p_instance);
	if (datastore_instance_register(p->p_store, p->p_instance, pc->pc_data_endpoint,
	    pc->pc_instance_heartbeat, PROXY_INSTANCE_LIVES * pc->pc_instance_heartbeat) < 0) {
		log_errorx("public.instance_id: out of memory");
		return -1;
	}
	if (public_load_checks(p) < 0)
		return -1;
	log_info("instance %s, %zu announcement(s) loaded", p->p_instance,
	    announce_count(p->p_announce));
	return 0;
}

static void
public_start(struct proxy *px)
{
	struct public *p = px->px_role;
	struct proxy_conf *pc = p->p_conf;

	p->p_loop = px->px_loop;
	p->p_relay = px->px_relay;
	public_timers_init(p);
	public_listen(p, &p->p_tls_listener, p->p_tls_fd, pc->pc_tls_bind, "TLS listener",
	    public_tls_accept);
	public_listen(p, &p->p_data_listener, p->p_data_fd, pc->pc_data_bind, "data listener",
	    public_data_accept);
	p->p_tls_fd = p->p_data_fd = -1;        /* the listeners own them now */
	public_handover_start(p);
	/* before the side thread, which serves the scrapes, runs */
	metrics_collector_add(public_pool_collect, p);
	reload_init(&p->p_ctl, p->p_loop, pc, &(struct reload_role){
	    .rr_hello_timers = &p->p_hello_timers, .rr_park_timers = &p->p_park_timers,
	    .rr_token_timers = &p->p_token_timers, .rr_limits = &p->p_limits,
	    .rr_data_limits = &p->p_data_limits });
}

static void
public_started(struct proxy *px)
{
	struct public *p = px->px_role;

	control_post(&p->p_ctl, public_side_timers, p);
	log_info("public proxy %s ready (io_uring %s)", p->p_conf->pc_name,
	    loop_mode(p->p_loop));
}

/* Side thread: with reuse_port, a stopping proxy closes its JSON-RPC
 * server (listener and connections), so that its Hyper's next call reaches
 * the successor on the same port: announcements and tickets from now on
 * are the successor's.  Its calls to incomingConnection go on. */
static void
public_rpc_close(void *arg)
{
	struct public *p = arg;

	if (p->p_ctl.ct_server == NULL)
		return;
	jsonrpc_server_free(p->p_ctl.ct_server);
	p->p_ctl.ct_server = NULL;
	log_info("stopping: JSON-RPC server closed (reuse_port: the calls go to the "
	    "successor)");
}

/* SIGTERM: stop accepting clients; those accepted already (HELLO, PARKED)
 * are served or time out as usual, so the data listener and the pool stay
 * while any of them waits (public_admit); the joined pairs may finish.
 * With reuse_port the JSON-RPC server closes too (public_rpc_close); the
 * hand-over link stays until the exit, so that dial-backs for either
 * instance that reach the other one are passed on.
 * The skeleton bounds it all by shutdown_timeout. */
static void
public_drain(struct proxy *px)
{
	struct public *p = px->px_role;

	loop_listener_stop(&p->p_tls_listener, public_listener_closed);
	/* A hand-over: the successor's JSON-RPC server takes the calls. */
	if (p->p_conf->pc_reuse_port)
		control_post(&p->p_ctl, public_rpc_close, p);
	if (!public_clients_waiting(p)) {
		public_data_close(p);
		return;
	}
	log_info("stopping: %zu parked client(s) and those still sending their hello may be "
	    "joined first", token_count(p->p_tokens));
	/* No more pauses while stopping (public_admit): their data
	 * connections must get in; max_data_connections still bounds them. */
	if (p->p_data_paused) {
		public_listener_resume(&p->p_data_listener, "data");
		p->p_data_paused = 0;
	}
}

/* shutdown_timeout is over: the clients not joined yet go too. */
static void
public_force(struct proxy *px)
{
	struct public *p = px->px_role;

	public_clients_drain(p);
	public_data_close(p);
}

/* Done once every socket is closed, the listening ones too, so no request
 * is left in the ring when it is torn down. */
static long
public_held(struct proxy *px)
{
	struct public *p = px->px_role;

	return p->p_nconns + p->p_ndata + p->p_npooled + p->p_nlisteners;
}

static void
public_side_stopped(struct proxy *px)
{
	struct public *p = px->px_role;

	metrics_collector_remove(public_pool_collect, p);
	if (p->p_relay != NULL) {
		struct relay_stats st;

		relay_stats(p->p_relay, &st);
		log_debug("active at stop: %ld sockets, %zu parked, %u relayed pairs",
		    p->p_nconns + p->p_ndata, p->p_tokens ? token_count(p->p_tokens) : 0,
		    st.pairs_active);
	}
	public_side_free(p);
}

static void
public_free(struct proxy *px)
{
	struct public *p = px->px_role;

	public_handover_close(p);
	if (p->p_watch)
		directory_watch_free(p->p_watch);
	if (p->p_tls_fd >= 0)
		close(p->p_tls_fd);
	if (p->p_data_fd >= 0)
		close(p->p_data_fd);
	public_loop_free(p);
	datastore_close(p->p_store);
	announce_table_free(p->p_announce);
}

static const struct proxy_hooks public_hooks = {
	.ph_bind = public_bind_all,
	.ph_open = public_open,
	.ph_start = public_start,
	.ph_started = public_started,
	.ph_drain = public_drain,
	.ph_force = public_force,
	.ph_held = public_held,
	.ph_side_stopped = public_side_stopped,
	.ph_free = public_free,
	.ph_forced_ms = 1000,           /* as before the skeleton */
	.ph_side_first = 0,             /* announcements go on while draining */
};

int
public_run(struct proxy_conf *pc)
{
	struct public pub, *p = &pub;

	memset(p, 0, sizeof(*p));
	p->p_conf = pc;
	p->p_tls_fd = p->p_data_fd = -1;
	p->p_handover.ho_fd = p->p_handover.ho_listen_fd = -1;
	p->p_on_parked = public_incoming_post;
	TAILQ_INIT(&p->p_pconns);
	TAILQ_INIT(&p->p_dconns);
	TAILQ_INIT(&p->p_waiting);
	return proxy_run(&p->p_px, pc, &p->p_ctl, &public_hooks, p);
}
