/* public.c - `proxy run public` (SPEC section 4).
 *
 * Threads: the main thread runs the io_uring loop and owns every socket,
 * the token table and the rate limiter; the side thread (control.c) runs
 * the JSON-RPC server for announcements and calls incomingConnection
 * through the own Hyper.  They talk only through loop_post / side_post and
 * the announcement table (which has its own lock).
 *
 * A client connection (struct pconn):
 *   HELLO   accepted; a one-shot POLLIN waits for bytes, then the stream's
 *           prefix is peeked (MSG_PEEK: the bytes stay in the socket and
 *           later travel with the stream) and the new bytes are parsed (the
 *           reader keeps its position).  Incomplete: the socket's
 *           SO_RCVLOWAT is raised to the end of the current TLS record (or
 *           of the next record header), so the wake-ups are bounded by the
 *           number of records, however few bytes each segment carries.
 *           Bounded by hello_timeout and hello_max_bytes.
 *   PARKED  SNI announced: parked in the token table under a fresh token;
 *           the side thread calls <operator>.incomingConnection.  Ends by a
 *           data connection presenting the token (JOINED), an error reply
 *           (alert internal_error) or accept_timeout.
 *   JOINED  handed to the relay with the data connection; the relay's
 *           report ends it with one log line.
 * A data connection (struct dconn) reads exactly TOKEN_LEN bytes within
 * token_timeout, across as many reads as it takes, then claims the token.
 * Until then it is unauthenticated: it has its own budget
 * (max_data_connections, plus one per parked client) and rate limit
 * (data_rate_limits), is not counted in max_connections, and its refusals
 * and failures are logged through a log_limit.
 * Closing with a request in flight cancels it first and frees on the final
 * completion (io_uring still holds the file until then). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "directory.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "ratelimit.h"
#include "srccap.h"
#include "relay.h"
#include "reload.h"
#include "side.h"
#include "sni.h"
#include "token.h"
#include "util.h"

/* TLS alert descriptions (RFC 8446 6.2). */
#define ALERT_DECODE_ERROR       50
#define ALERT_INTERNAL_ERROR     80
#define ALERT_UNRECOGNIZED_NAME  112

/* Item error: over max_announcements_per_operator. */
#define PUBLIC_ERR_TOO_MANY      429

/* Descriptors kept out of max_connections (listeners, ring, RPC, logs). */
#define PUBLIC_FD_RESERVE        64

enum pconn_state { PC_HELLO, PC_PARKED, PC_JOINED };

struct public;

struct pconn {
	struct public           *c_pub;
	TAILQ_ENTRY(pconn)       c_entry;       /* p_pconns, until freed */
	enum pconn_state         c_state;
	int                      c_fd;
	int                      c_closing;
	int                      c_lowat;        /* SO_RCVLOWAT was raised */
	unsigned                 c_wakeups;      /* polls that woke the hello reader */
	size_t                   c_peeked;       /* bytes copied by MSG_PEEK in all */
	int                      c_peekoff;      /* SO_PEEK_OFF works: peek only new bytes */
	struct sni_reader       *c_reader;       /* HELLO only, then freed */
	struct loop_op           c_poll;
	struct loop_timer        c_timer;       /* hello, then accept timeout */
	struct sockaddr_storage  c_peer;
	struct srccap_entry     *c_source;      /* counted toward its source's cap */
	uint64_t                 c_start_ms;
	uint8_t                  c_token[TOKEN_LEN];
	char                     c_sni[SNI_NAME_MAX];
	char                     c_operator[ANNOUNCE_NAME_MAX];
};

struct dconn {
	struct public           *d_pub;
	TAILQ_ENTRY(dconn)       d_entry;       /* p_dconns, until freed */
	int                      d_fd;
	int                      d_closing;
	struct sockaddr_storage  d_peer;
	struct loop_op           d_recv;
	struct loop_timer        d_timer;
	size_t                   d_got;
	uint8_t                  d_token[TOKEN_LEN];
};

/* A call to incomingConnection in flight on the side thread. */
struct incoming {
	struct public           *in_pub;
	uint8_t                  in_token[TOKEN_LEN];
	char                     in_sni[SNI_NAME_MAX];
	char                     in_operator[ANNOUNCE_NAME_MAX];
	int                      in_have_addrs;  /* in_peer and in_local known */
	struct sockaddr_storage  in_peer;        /* the client */
	struct sockaddr_storage  in_local;       /* the address it connected to */
};

/*
 * Announcement calls on the side thread.  A call's changes are staged and
 * written as one batch (one write, one fdatasync) by the datastore's own
 * thread, so the side thread goes on placing incomingConnection calls
 * meanwhile; the call is answered when its batch is durable.  Calls that
 * arrive while a batch is in flight wait in p_waiting and run in order
 * after it, so each call sees the table as the previous ones left it.
 */
struct commit {
	struct public           *cm_pub;
	struct jsonrpc_call     *cm_call;
	int                      cm_announce;    /* else a withdrawal */
	struct json_object      *cm_conns;       /* announce: the items (borrowed from the call) */
	struct json_object      *cm_result;      /* announce: one entry per item */
	unsigned char           *cm_staged;      /* announce: item i staged */
	int                      cm_n;
	int                      cm_removed;     /* withdrawal: entries withdrawn */
	char                     cm_caller[ANNOUNCE_NAME_MAX];
};

struct rpc_wait {
	TAILQ_ENTRY(rpc_wait)    w_entry;
	struct jsonrpc_call     *w_call;
};

struct public {
	struct proxy_conf       *p_conf;
	struct loop             *p_loop;
	struct relay            *p_relay;
	struct control           p_ctl;
	struct announce_table   *p_announce;
	struct datastore        *p_store;        /* side thread only */
	struct event            *p_sweep;        /* side: drops expired announcements */
	struct event            *p_dirpoll;      /* side: directory poll, when configured */
	struct directory_watch  *p_watch;        /* directory (NULL: none); side thread */
	struct commit           *p_commit;       /* side: the call whose batch is being written */
	TAILQ_HEAD(, rpc_wait)   p_waiting;      /* side: calls arrived meanwhile, in order */
	struct token_table      *p_tokens;
	struct ratelimit        *p_limits;
	struct srccap           *p_sources;      /* max_connections_per_source */
	double                   p_cap_logged;   /* last "per source" line */
	struct ratelimit        *p_data_limits;  /* data_rate_limits */
	struct loop_listener     p_tls_listener, p_data_listener;
	struct loop_timer_list   p_hello_timers, p_park_timers, p_token_timers;
	long                     p_nconns;       /* client + joined data sockets held */
	long                     p_ndata;        /* data sockets waiting for a token */
	struct log_limit         p_log_dfull, p_log_drate, p_log_dtoken, p_log_dclose;
	int                      p_tls_paused, p_data_paused;
	double                   p_full_logged;  /* last "max_connections" line */
	unsigned char           *p_peekbuf;      /* hello_max_bytes, loop thread */
	int                      p_stopping;     /* draining after SIGTERM */
	int                      p_nlisteners;   /* not yet closed by the kernel */
	struct loop_op           p_drain;        /* shutdown_timeout, then the last call */
	TAILQ_HEAD(, pconn)      p_pconns;       /* freed at stop if still open */
	TAILQ_HEAD(, dconn)      p_dconns;
};

static struct loop *public_signal_loop;

static void pconn_poll_cb(struct loop_op *, int, unsigned);
static void pconn_arm_poll(struct pconn *);

/* --- connection accounting ------------------------------------------------ */

/* Stopping: done once every socket is closed, the listening ones too, so
 * no request is left in the ring when it is torn down. */
static void
public_drained(struct public *p)
{
	if (p->p_nconns == 0 && p->p_ndata == 0 && p->p_nlisteners == 0)
		loop_stop(p->p_loop);
}

static void
public_listener_closed(struct loop_listener *l)
{
	struct public *p = l->ll_arg;

	p->p_nlisteners--;
	public_drained(p);
}

/*
 * max_connections: the TLS listener pauses while the sockets held reach it
 * (clients, and the data sockets joined to them; a data connection waiting
 * for its token is not counted here, see dconn_admit).
 * The data listener pauses only past it by the number of parked clients:
 * each of them still needs its data connection, and a full proxy that
 * refused those would hold its parked clients until accept_timeout.
 * n: change of the socket count (0 after parking or unparking).
 */
static void
public_conn_add(struct public *p, int n)
{
	long max = p->p_conf->pc_max_connections;
	int tls_full, data_full;

	p->p_nconns += n;
	if (p->p_stopping) {
		public_drained(p);
		return;         /* the listeners are closed */
	}
	tls_full = p->p_nconns >= max;
	data_full = p->p_nconns >= max + (long)token_count(p->p_tokens);
	if (tls_full && !p->p_tls_paused) {
		/* Under a flood this flips often: one line per 10 s is enough. */
		if (now_mono() - p->p_full_logged >= 10 || p->p_full_logged == 0) {
			log_warnx("max_connections (%ld) reached: accepting paused", max);
			p->p_full_logged = now_mono();
		}
		loop_listener_pause(&p->p_tls_listener);
	} else if (!tls_full && p->p_tls_paused)
		loop_listener_resume(&p->p_tls_listener);
	if (data_full && !p->p_data_paused)
		loop_listener_pause(&p->p_data_listener);
	else if (!data_full && p->p_data_paused)
		loop_listener_resume(&p->p_data_listener);
	p->p_tls_paused = tls_full;
	p->p_data_paused = data_full;
}

/* --- client connections --------------------------------------------------- */

static void
pconn_log(struct pconn *c, const char *how, uint64_t in, uint64_t out)
{
	char addr[64];

	log_info("client %s sni=%s operator=%s duration=%.3fs bytes_in=%llu bytes_out=%llu end=%s",
	    addr_str_masked((struct sockaddr *)&c->c_peer, addr, sizeof(addr)),
	    c->c_sni[0] ? c->c_sni : "-", c->c_operator[0] ? c->c_operator : "-",
	    (double)(loop_now_ms(c->c_pub->p_loop) - c->c_start_ms) / 1000.0,
	    (unsigned long long)in, (unsigned long long)out, how);
}

/* The last of a client connection: its memory and its source's count. */
static void
pconn_destroy(struct pconn *c)
{
	TAILQ_REMOVE(&c->c_pub->p_pconns, c, c_entry);
	srccap_release(c->c_pub->p_sources, c->c_source);
	free(c->c_reader);
	free(c);
}

static void
pconn_free(struct pconn *c)
{
	if (c->c_fd >= 0) {
		loop_close(c->c_pub->p_loop, c->c_fd);
		public_conn_add(c->c_pub, -1);
	}
	pconn_destroy(c);
}

/* End a connection that never reached the relay, with an optional alert. */
static void
pconn_close(struct pconn *c, int alert, const char *how)
{
	struct public *p = c->c_pub;

	if (c->c_closing)
		return;
	c->c_closing = 1;
	if (c->c_state == PC_HELLO)
		loop_timer_disarm(&p->p_hello_timers, &c->c_timer);
	else if (c->c_state == PC_PARKED) {
		loop_timer_disarm(&p->p_park_timers, &c->c_timer);
		token_cancel(p->p_tokens, c->c_token);
	}
	if (alert) {
		/* Fatal alert record; seven bytes always fit the empty send
		 * buffer of a fresh socket, and a short write is harmless. */
		unsigned char rec[7] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, (unsigned char)alert };

		/* close() with unread bytes sends a RST, which can make the
		 * client drop the alert unread: consume the peeked bytes first. */
		for (int i = 0; i < 4 && recv(c->c_fd, p->p_peekbuf,
		    (size_t)p->p_conf->pc_hello_max_bytes, MSG_DONTWAIT) > 0; i++)
			;
		if (send(c->c_fd, rec, sizeof(rec), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("alert: %s", strerror(errno));
		shutdown(c->c_fd, SHUT_WR);
	}
	pconn_log(c, how, 0, 0);
	if (c->c_poll.lo_busy)
		loop_cancel(p->p_loop, &c->c_poll);     /* freed by the final callback */
	else
		pconn_free(c);
}

static void
pconn_hello_expired(struct loop_timer *t, void *arg)
{
	pconn_close(LOOP_CONTAINER_OF(t, struct pconn, c_timer), 0, "hello timeout");
}

static void
pconn_park_expired(struct loop_timer *t, void *arg)
{
	pconn_close(LOOP_CONTAINER_OF(t, struct pconn, c_timer), 0, "not claimed (accept_timeout)");
}

static void incoming_call(void *arg);
static void public_unmap(struct sockaddr_storage *ss);

static void
pconn_park(struct pconn *c)
{
	struct public *p = c->c_pub;
	struct announcement a;
	struct incoming *in;
	int one = 1;

	/* the exact announcement, else the wildcard one of its parent */
	if (announce_match(p->p_announce, c->c_sni, NULL, now_wall(), &a) < 0) {
		pconn_close(c, ALERT_UNRECOGNIZED_NAME, "no announcement");
		return;
	}
	snprintf(c->c_operator, sizeof(c->c_operator), "%s", a.an_operator);
	/* Back to the default low-water mark before the relay reads, and
	 * no peek offset. */
	if (c->c_lowat)
		setsockopt(c->c_fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	if (c->c_peekoff) {
		int none = -1;

		setsockopt(c->c_fd, SOL_SOCKET, SO_PEEK_OFF, &none, sizeof(none));
	}
	if ((in = calloc(1, sizeof(*in))) == NULL ||
	    token_park(p->p_tokens, c, now_mono(), c->c_token) < 0) {
		free(in);
		pconn_close(c, ALERT_INTERNAL_ERROR, "token table full");
		return;
	}
	loop_timer_disarm(&p->p_hello_timers, &c->c_timer);
	c->c_state = PC_PARKED;
	public_conn_add(p, 0);          /* one more data connection to admit */
	loop_timer_arm(&p->p_park_timers, &c->c_timer);
	in->in_pub = p;
	memcpy(in->in_token, c->c_token, TOKEN_LEN);
	memcpy(in->in_sni, c->c_sni, sizeof(in->in_sni));
	memcpy(in->in_operator, c->c_operator, sizeof(in->in_operator));
	{
		socklen_t sl = sizeof(in->in_local);

		/* For the private proxy's PROXY protocol header. */
		if (getsockname(c->c_fd, (struct sockaddr *)&in->in_local, &sl) == 0) {
			public_unmap(&in->in_local);
			in->in_peer = c->c_peer;
			in->in_have_addrs = in->in_peer.ss_family == in->in_local.ss_family;
		}
	}
	side_post(p->p_ctl.ct_side, incoming_call, in);
}

/* Bytes (or EOF) arrived on a connection waiting for its ClientHello. */
static void
pconn_hello(struct pconn *c, unsigned revents)
{
	struct public *p = c->c_pub;
	size_t max = (size_t)p->p_conf->pc_hello_max_bytes, need = 0, off = 0;
	enum sni_result r;
	ssize_t n;
	int lowat, po;

	/* Peek from the first byte the reader has not consumed: without it
	 * a hello that arrives in tiny segments is copied again and again
	 * (the kernel may wake us early however high SO_RCVLOWAT is, when
	 * the receive window runs low).  Kernels before 6.10 have no
	 * SO_PEEK_OFF for TCP: then the prefix is peeked from byte 0. */
	if (c->c_peekoff) {
		off = sni_reader_pos(c->c_reader);
		po = (int)off;
		if (setsockopt(c->c_fd, SOL_SOCKET, SO_PEEK_OFF, &po, sizeof(po)) < 0) {
			c->c_peekoff = 0;
			off = 0;
		}
	}
	n = recv(c->c_fd, p->p_peekbuf, max - off, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		pconn_arm_poll(c);
		return;
	}
	if (n <= 0) {
		/* off > 0: the reader has bytes, the peer closed after them */
		pconn_close(c, 0, n < 0 ? "error before hello" :
		    off > 0 ? "incomplete hello" : "closed before hello");
		return;
	}
	c->c_wakeups++;
	c->c_peeked += (size_t)n;
	r = sni_reader_feed(c->c_reader, p->p_peekbuf, off, off + (size_t)n, c->c_sni, &need);
	if (r != SNI_NEED_MORE) {
		/* Spent: a joined connection should not carry it for hours. */
		free(c->c_reader);
		c->c_reader = NULL;
	}
	if (r != SNI_NEED_MORE && log_get_level() >= LOG_LVL_DEBUG) {
		char addr[64];

		log_debug("client %s: hello read in %u wake-up(s), %zu bytes, %zu bytes peeked%s: %s",
		    addr_str_masked((struct sockaddr *)&c->c_peer, addr, sizeof(addr)),
		    c->c_wakeups, off + (size_t)n, c->c_peeked,
		    c->c_peekoff ? "" : " (no SO_PEEK_OFF)", sni_result_str(r));
	}
	switch (r) {
	case SNI_OK:
		pconn_park(c);
		return;
	case SNI_NEED_MORE:
		/* The peer closed its side: no more bytes will come. */
		if (revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			pconn_close(c, 0, "incomplete hello");
			return;
		}
		/* Wake up only when the parser can make progress. */
		lowat = (int)need;
		setsockopt(c->c_fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
		c->c_lowat = 1;
		pconn_arm_poll(c);
		return;
	case SNI_NO_SNI:
		c->c_sni[0] = '\0';
		pconn_close(c, ALERT_UNRECOGNIZED_NAME, "no sni");
		return;
	case SNI_BAD_NAME:
		c->c_sni[0] = '\0';
		pconn_close(c, ALERT_UNRECOGNIZED_NAME, "invalid sni");
		return;
	case SNI_TOO_LARGE:
		pconn_close(c, 0, "hello too large");
		return;
	case SNI_MALFORMED:
	default:
		pconn_close(c, ALERT_DECODE_ERROR, "malformed hello");
		return;
	}
}

static void
pconn_poll_cb(struct loop_op *op, int res, unsigned flags)
{
	struct pconn *c = LOOP_CONTAINER_OF(op, struct pconn, c_poll);

	if (c->c_closing) {
		pconn_free(c);
		return;
	}
	if (res < 0) {
		pconn_close(c, 0, "poll error");
		return;
	}
	pconn_hello(c, (unsigned)res);
}

static void
pconn_arm_poll(struct pconn *c)
{
	loop_poll(c->c_pub->p_loop, &c->c_poll, c->c_fd, POLLIN | POLLRDHUP, 0);
}

/* A dual-stack listener ([::]) reports IPv4 clients as ::ffff:a.b.c.d:
 * log them (and key the rate limits) as the IPv4 addresses they are. */
static void
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

static void
public_tls_accept(struct loop_listener *l, int fd)
{
	struct public *p = l->ll_arg;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct srccap_entry *src;
	struct pconn *c;
	int refused;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		close(fd);      /* reset before we looked at it */
		return;
	}
	public_unmap(&ss);
	if (!ratelimit_allow(p->p_limits, (struct sockaddr *)&ss, now_mono())) {
		char addr[64];
		log_debug("client %s: over tcp_rate_limits",
		    addr_str_masked((struct sockaddr *)&ss, addr, sizeof(addr)));
		close(fd);
		return;
	}
	src = srccap_take(p->p_sources, (struct sockaddr *)&ss, &refused);
	if (refused) {
		char addr[64];

		/* A flood of these is one line per 10 s. */
		if (now_mono() - p->p_cap_logged >= 10 || p->p_cap_logged == 0) {
			log_warnx("client %s: holds max_connections_per_source (%ld) "
			    "connections already: refused",
			    addr_str_masked((struct sockaddr *)&ss, addr, sizeof(addr)),
			    p->p_conf->pc_max_per_source);
			p->p_cap_logged = now_mono();
		}
		close(fd);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->c_reader = malloc(sizeof(*c->c_reader))) == NULL) {
		free(c);
		srccap_release(p->p_sources, src);
		close(fd);
		return;
	}
	c->c_pub = p;
	c->c_source = src;
	TAILQ_INSERT_TAIL(&p->p_pconns, c, c_entry);
	c->c_fd = fd;
	c->c_peer = ss;
	c->c_state = PC_HELLO;
	c->c_start_ms = loop_now_ms(p->p_loop);
	sni_reader_init(c->c_reader, (size_t)p->p_conf->pc_hello_max_bytes);
	c->c_peekoff = 1;
	loop_op_init(&c->c_poll, pconn_poll_cb);
	public_conn_add(p, 1);
	loop_timer_arm(&p->p_hello_timers, &c->c_timer);
	pconn_arm_poll(c);
}

/* --- joined pairs ---------------------------------------------------------- */

static void
public_relay_done(const struct relay_report *rep, void *arg)
{
	struct pconn *c = arg;

	pconn_log(c, rep->reason_str, rep->bytes_ab, rep->bytes_ba);
	public_conn_add(c->c_pub, -2);
	pconn_destroy(c);
}

/* --- data connections from private proxies -------------------------------- */

static void
dconn_free(struct dconn *d)
{
	struct public *p = d->d_pub;

	TAILQ_REMOVE(&p->p_dconns, d, d_entry);
	if (d->d_fd >= 0) {
		loop_close(p->p_loop, d->d_fd);
		p->p_ndata--;
		if (p->p_stopping)
			public_drained(p);
	}
	free(d);
}

/* ll: the kind of failure, each logged at most about once a second (the
 * data port is open to anyone); NULL for a stop. */
static void
dconn_close(struct dconn *d, struct log_limit *ll, const char *why)
{
	char addr[64];

	if (d->d_closing)
		return;
	d->d_closing = 1;
	loop_timer_disarm(&d->d_pub->p_token_timers, &d->d_timer);
	/* A data connection that delivers its token is never logged on its own. */
	addr_str((struct sockaddr *)&d->d_peer, addr, sizeof(addr));
	if (ll != NULL)
		log_limited(ll, LOG_LVL_INFO, "data connection %s closed: %s", addr, why);
	else
		log_debug("data connection %s closed: %s", addr, why);
	if (d->d_recv.lo_busy)
		loop_cancel(d->d_pub->p_loop, &d->d_recv);
	else
		dconn_free(d);
}

static void
dconn_token_expired(struct loop_timer *t, void *arg)
{
	struct dconn *d = LOOP_CONTAINER_OF(t, struct dconn, d_timer);

	dconn_close(d, &d->d_pub->p_log_dtoken, "no token within token_timeout");
}

static void
dconn_join(struct dconn *d)
{
	struct public *p = d->d_pub;
	struct pconn *c;
	int cfd, dfd;

	loop_timer_disarm(&p->p_token_timers, &d->d_timer);
	if ((c = token_claim(p->p_tokens, d->d_token)) == NULL) {
		dconn_close(d, &p->p_log_dtoken, "unknown or used token");
		return;
	}
	loop_timer_disarm(&p->p_park_timers, &c->c_timer);
	c->c_state = PC_JOINED;
	p->p_ndata--;                   /* joined: counted with its client now */
	public_conn_add(p, 1);          /* and one parked client less */
	cfd = c->c_fd;
	dfd = d->d_fd;
	c->c_fd = -1;
	d->d_fd = -1;
	TAILQ_REMOVE(&p->p_dconns, d, d_entry);
	free(d);
	/* The relay owns both sockets now, also when it fails. */
	if (relay_join(p->p_relay, cfd, dfd, "client", "private", public_relay_done, c) == NULL) {
		pconn_log(c, "relay failed", 0, 0);
		public_conn_add(p, -2);
		pconn_destroy(c);
	}
}

static void
dconn_recv_cb(struct loop_op *op, int res, unsigned flags)
{
	struct dconn *d = LOOP_CONTAINER_OF(op, struct dconn, d_recv);

	if (d->d_closing) {
		dconn_free(d);
		return;
	}
	if (res <= 0) {
		dconn_close(d, &d->d_pub->p_log_dclose,
		    res == 0 ? "closed before its token" : strerror(-res));
		return;
	}
	/* A token may arrive in pieces: read exactly what is still missing,
	 * so not one byte of the relayed stream is consumed here. */
	d->d_got += (size_t)res;
	if (d->d_got < TOKEN_LEN) {
		loop_recv(d->d_pub->p_loop, &d->d_recv, d->d_fd, d->d_token + d->d_got,
		    TOKEN_LEN - d->d_got, -1);
		return;
	}
	dconn_join(d);
}

/*
 * The data port is open to anyone until a token is read: admit a new
 * connection only within data_rate_limits for its source, and while fewer
 * than max_data_connections wait for their token, plus one per parked
 * client (each still needs its data connection, also when the budget is
 * full of strangers).  Over either, close it at once.
 */
static int
dconn_admit(struct public *p, const struct sockaddr_storage *ss)
{
	long max = p->p_conf->pc_max_data_connections + (long)token_count(p->p_tokens);
	char addr[64];

	if (!ratelimit_allow(p->p_data_limits, (const struct sockaddr *)ss, now_mono())) {
		log_limited(&p->p_log_drate, LOG_LVL_INFO,
		    "data connection %s refused: over data_rate_limits",
		    addr_str((const struct sockaddr *)ss, addr, sizeof(addr)));
		return 0;
	}
	if (p->p_ndata >= max) {
		log_limited(&p->p_log_dfull, LOG_LVL_WARN,
		    "max_data_connections (%ld) waiting for a token: data connection %s refused",
		    p->p_conf->pc_max_data_connections,
		    addr_str((const struct sockaddr *)ss, addr, sizeof(addr)));
		return 0;
	}
	return 1;
}

static void
public_data_accept(struct loop_listener *l, int fd)
{
	struct public *p = l->ll_arg;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct dconn *d;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		close(fd);      /* reset before we looked at it */
		return;
	}
	public_unmap(&ss);
	if (!dconn_admit(p, &ss) || (d = calloc(1, sizeof(*d))) == NULL) {
		close(fd);
		return;
	}
	d->d_pub = p;
	TAILQ_INSERT_TAIL(&p->p_dconns, d, d_entry);
	d->d_fd = fd;
	d->d_peer = ss;
	loop_op_init(&d->d_recv, dconn_recv_cb);
	p->p_ndata++;
	loop_timer_arm(&p->p_token_timers, &d->d_timer);
	loop_recv(p->p_loop, &d->d_recv, fd, d->d_token, TOKEN_LEN, -1);
}

/* --- incomingConnection through the Hyper (side thread) ------------------- */

static void
incoming_failed(void *arg)
{
	struct incoming *in = arg;
	struct pconn *c = token_cancel(in->in_pub->p_tokens, in->in_token);

	/* Still parked: nobody will come for it, close now, not at accept_timeout. */
	if (c != NULL)
		pconn_close(c, ALERT_INTERNAL_ERROR, "incomingConnection failed");
	free(in);
}

static void
incoming_reply(void *arg, struct json_object *result, struct json_object *error)
{
	struct incoming *in = arg;

	if (error == NULL) {
		free(in);
		return;
	}
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
	const char              *rc_why;
	const char              *rc_op;          /* only its entries; NULL: all (rc_dir) */
	const char              *rc_self;        /* this proxy's operator name (item scope) */
	struct json_object      *rc_entry;       /* from a call (borrowed) or the directory */
	struct directory        *rc_dir;         /* NULL: rc_entry only */
	const char             **rc_allowed;
	int                      rc_nallowed;    /* -1: none */
	char                     rc_cached[ANNOUNCE_NAME_MAX];
};

static int
recheck_keep(void *arg, const struct announcement *a)
{
	struct recheck *rc = arg;
	int keep;

	if (rc->rc_dir == NULL) {
		if (strcmp(a->an_operator, rc->rc_op) != 0)
			return 1;
	} else if (strcmp(a->an_operator, rc->rc_cached) != 0) {
		/* the entries come sorted by domain: cache the last operator */
		free(rc->rc_allowed);
		rc->rc_allowed = NULL;
		if (rc->rc_entry)
			json_object_put(rc->rc_entry);
		rc->rc_entry = directory_client_entry(rc->rc_dir, a->an_operator);
		rc->rc_nallowed = rc->rc_entry == NULL ? -1 :
		    control_entry_allowed_domains(rc->rc_entry, rc->rc_self, &rc->rc_allowed);
		snprintf(rc->rc_cached, sizeof(rc->rc_cached), "%s", a->an_operator);
	}
	keep = rc->rc_nallowed >= 0 && announce_domain_allowed(a->an_domain,
	    rc->rc_allowed, (size_t)rc->rc_nallowed);
	if (!keep)
		log_warnx("announcement of %s by %s dropped: not in its allowed_domains (%s)",
		    a->an_domain, a->an_operator, rc->rc_why);
	return keep;
}

/* Drop what rc no longer allows, durably.  Returns how many, or -1. */
static int
public_recheck(struct public *p, struct recheck *rc)
{
	char err[256];
	int n;

	if (p->p_store == NULL)
		n = announce_filter(p->p_announce, rc->rc_op, recheck_keep, rc);
	else if ((n = datastore_filter(p->p_store, rc->rc_op, recheck_keep, rc, now_wall(),
	    err, sizeof(err))) < 0)
		log_warnx("dropping announcements (%s): %s", rc->rc_why, err);
	return n;
}

/* The caller's own announcements against the allowed_domains of its call. */
static void
public_recheck_caller(struct public *p, const char *caller, struct json_object *params)
{
	struct recheck rc;

	memset(&rc, 0, sizeof(rc));
	rc.rc_why = "its Hyper's directory entry at its call";
	rc.rc_op = caller;
	rc.rc_self = p->p_conf->pc_name;
	rc.rc_nallowed = control_allowed_domains(params, p->p_conf->pc_name, &rc.rc_allowed);
	public_recheck(p, &rc);
	free(rc.rc_allowed);
}

/* Everyone's announcements against the directory.  Returns how many were
 * dropped, or -1. */
static int
public_recheck_directory(struct public *p, struct directory *dir, const char *why)
{
	struct recheck rc;
	int n;

	memset(&rc, 0, sizeof(rc));
	rc.rc_why = why;
	rc.rc_dir = dir;
	rc.rc_self = p->p_conf->pc_name;
	n = public_recheck(p, &rc);
	free(rc.rc_allowed);
	if (rc.rc_entry)
		json_object_put(rc.rc_entry);
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
static void
public_side_timers(void *arg)
{
	struct public *p = arg;
	struct event_base *base = side_base(p->p_ctl.ct_side);
	struct timeval tv;

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
	    (announce && (cm->cm_staged = calloc((size_t)n + 1, 1)) == NULL)) {
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

	side_post(p->p_ctl.ct_side, fn, arg);
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

/* Make cm's staged batch durable, then answer: without a datastore or
 * with nothing to write at once, else when the datastore's thread is done. */
static void
public_commit(struct public *p, struct commit *cm)
{
	char err[256] = "";
	int r;

	if (p->p_store == NULL) {
		commit_reply(cm, 0, NULL);
		return;
	}
	r = datastore_commit_async(p->p_store, public_side_post, p, commit_done, cm);
	if (r == 1) {
		p->p_commit = cm;
		return;
	}
	/* 0: nothing to write; -1: no thread, so write here */
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

static void
rpc_announce(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct json_object *conns, *result;
	struct commit *cm;
	const char **allowed;
	int nallowed, n;
	size_t held;
	double now = now_wall();

	if ((nallowed = control_allowed_domains(params, p->p_conf->pc_name, &allowed)) < 0) {
		/* Before the answer: answering frees the call, its params
		 * and the caller's name in them. */
		public_recheck_caller(p, caller, params);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, "not authorized");
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
		struct json_object *item = json_object_array_get_idx(conns, (size_t)i), *jd, *je;
		char domain[ANNOUNCE_DOMAIN_MAX];
		struct announcement a, cur;
		const char *why = NULL;
		double exp = 0;
		int rc;

		if (!json_object_is_type(item, json_type_object) ||
		    !json_object_object_get_ex(item, "domain", &jd) ||
		    !json_object_is_type(jd, json_type_string) ||
		    announce_check_name(json_object_get_string(jd), domain, &why) < 0) {
			json_object_array_add(result, item_error(JSONRPC_INVALID_PARAMS,
			    why ? why : "invalid domain"));
			continue;
		}
		if (!announce_domain_allowed(domain, allowed, (size_t)nallowed)) {
			json_object_array_add(result, item_error(HP_ERR_FORBIDDEN, "not allowed"));
			continue;
		}
		if (json_object_object_get_ex(item, "expires_at", &je) && je != NULL &&
		    (!json_object_is_type(je, json_type_string) ||
		    announce_check_expiry(json_object_get_string(je), now,
		    ANNOUNCE_MAX_EXPIRY, &exp, &why) < 0)) {
			json_object_array_add(result, item_error(JSONRPC_INVALID_PARAMS,
			    why ? why : "expires_at: expected an RFC 3339 time"));
			continue;
		}
		/* no expires_at: the longest allowed, in whole seconds (the
		 * store keeps whole seconds); re-announcing extends it */
		exp = announce_effective_expiry(exp, now);
		if (announce_lookup(p->p_announce, domain, NULL, now, &cur) == 0) {
			if (strcmp(cur.an_operator, caller) != 0) {
				json_object_array_add(result, item_error(HP_ERR_CONFLICT,
				    "already taken"));
				continue;
			}
		} else if (held >= (size_t)p->p_conf->pc_max_per_operator) {
			char msg[128];

			snprintf(msg, sizeof(msg), "too many announcements: at most %ld per "
			    "operator (max_announcements_per_operator)",
			    p->p_conf->pc_max_per_operator);
			json_object_array_add(result, item_error(PUBLIC_ERR_TOO_MANY, msg));
			continue;
		} else
			held++;
		if (announce_make(&a, domain, caller, NULL, exp) < 0) {
			json_object_array_add(result, item_error(JSONRPC_INVALID_PARAMS,
			    "invalid announcement"));
			continue;
		}
		rc = p->p_store ? datastore_stage_announce(p->p_store, &a) :
		    announce_put(p->p_announce, &a);
		if (rc < 0) {
			log_warnx("announcement of %s by %s not stored: out of memory",
			    domain, caller);
			json_object_array_add(result, item_error(JSONRPC_INTERNAL_ERROR,
			    "not stored"));
			continue;
		}
		cm->cm_staged[i] = 1;
		json_object_array_add(result, NULL);
	}
	free(allowed);
	/* one write and one fdatasync for the whole call */
	public_commit(p, cm);
}

/* Withdraw (domain, op): staged with a datastore, else at once.  1 or 0
 * (nothing to withdraw), -1 out of memory. */
static int
public_withdraw_one(struct public *p, const char *domain, const char *op)
{
	if (p->p_store)
		return datastore_stage_withdraw(p->p_store, domain, NULL, op);
	return announce_remove(p->p_announce, domain, NULL, op);
}

/* Answer {"withdrawn": removed} once the staged withdrawals are durable. */
static void
public_withdraw_commit(struct public *p, struct jsonrpc_call *call, const char *who,
    int removed)
{
	struct commit *cm;

	if ((cm = commit_new(p, call, who, 0, 0)) == NULL) {
		if (p->p_store)
			datastore_abort(p->p_store);
		jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	cm->cm_removed = removed;
	public_commit(p, cm);
}

static void
rpc_withdraw(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct json_object *domains;
	int removed = 0, n, k;

	public_recheck_caller(p, caller, params);
	if ((n = rpc_items(p, call, params, "domains", &domains)) < 0)
		return;
	for (int i = 0; i < n; i++) {
		struct json_object *jd = json_object_array_get_idx(domains, (size_t)i);
		char domain[ANNOUNCE_DOMAIN_MAX];

		if (!json_object_is_type(jd, json_type_string) ||
		    announce_check_domain(json_object_get_string(jd), domain) < 0)
			continue;
		if ((k = public_withdraw_one(p, domain, caller)) < 0) {
			if (p->p_store)
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
rpc_admin_withdraw(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct json_object *domains = NULL, *jop = NULL;
	struct announcement cur, *list;
	int removed = 0, n = 0, k;

	if (strcmp(caller, p->p_conf->pc_name) != 0 &&
	    !control_caller_in_group(params, p->p_conf->pc_admin_group)) {
		log_warnx("adminWithdrawConnections refused to %s: not in group %s", caller,
		    p->p_conf->pc_admin_group);
		jsonrpc_call_error(call, HP_ERR_FORBIDDEN, "not authorized");
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
		if ((k = public_withdraw_one(p, domain, cur.an_operator)) < 0)
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
			if ((k = public_withdraw_one(p, list[i].an_domain,
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
	if (p->p_store)
		datastore_abort(p->p_store);
	jsonrpc_call_error(call, JSONRPC_INTERNAL_ERROR, "out of memory");
}

static void
rpc_get(struct public *p, struct jsonrpc_call *call, const char *caller,
    struct json_object *params)
{
	struct announcement *list;
	struct json_object *res;
	char buf[32];
	int n;

	public_recheck_caller(p, caller, params);
	res = json_object_new_array();
	n = announce_list(p->p_announce, caller, now_wall(), &list);
	for (int i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "domain", json_object_new_string(list[i].an_domain));
		/* the effective expiry: a missing expires_at was stored as the maximum */
		json_object_object_add(o, "expires_at", list[i].an_expires_at > 0 ?
		    json_object_new_string(rfc3339_format(list[i].an_expires_at, buf, sizeof(buf))) :
		    NULL);
		json_object_array_add(res, o);
	}
	free(list);
	jsonrpc_call_reply(call, res);
}

static void
public_dispatch(struct public *p, struct jsonrpc_call *call)
{
	struct json_object *params = jsonrpc_call_params(call);
	const char *method = jsonrpc_call_method(call);
	const char *caller = control_caller(params);

	if (caller == NULL) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "_client missing");
		return;
	}
	if (strcmp(method, "announceConnections") == 0)
		rpc_announce(p, call, caller, params);
	else if (strcmp(method, "withdrawConnections") == 0)
		rpc_withdraw(p, call, caller, params);
	else if (strcmp(method, "getAnnouncements") == 0)
		rpc_get(p, call, caller, params);
	else if (strcmp(method, "adminWithdrawConnections") == 0)
		rpc_admin_withdraw(p, call, caller, params);
	else
		jsonrpc_call_error(call, JSONRPC_METHOD_NOT_FOUND, "method not found: %s", method);
}

static void
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

/* --- start and stop -------------------------------------------------------- */

static void
public_on_signal(int sig)
{
	if (public_signal_loop)
		loop_stop(public_signal_loop);
}

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

/* shutdown_timeout ran out: end the pairs still relaying.  Their reports
 * bring the count to zero; a second expiry gives up waiting. */
static void
public_drain_expired(struct loop_op *op, int res, unsigned flags)
{
	struct public *p = LOOP_CONTAINER_OF(op, struct public, p_drain);
	struct relay_stats st;

	relay_stats(p->p_relay, &st);
	if (p->p_stopping == 1 && st.pairs_active > 0) {
		log_warnx("stop: closing %u pair(s) still relaying after shutdown_timeout",
		    st.pairs_active);
		relay_close_all(p->p_relay);
		p->p_stopping = 2;
		loop_timeout(p->p_loop, &p->p_drain, 1000);
		return;
	}
	loop_stop(p->p_loop);
}

/* SIGTERM: stop accepting, close every connection not yet joined, let the
 * joined pairs finish for up to shutdown_timeout. */
static int
public_drain(struct public *p)
{
	struct loop_timer *t;
	struct relay_stats st;

	p->p_stopping = 1;
	loop_listener_stop(&p->p_tls_listener, public_listener_closed);
	loop_listener_stop(&p->p_data_listener, public_listener_closed);
	/* Each list holds exactly the connections waiting in that state. */
	while ((t = TAILQ_FIRST(&p->p_hello_timers.tl_head)) != NULL)
		pconn_close(LOOP_CONTAINER_OF(t, struct pconn, c_timer), 0, "shutdown");
	while ((t = TAILQ_FIRST(&p->p_park_timers.tl_head)) != NULL)
		pconn_close(LOOP_CONTAINER_OF(t, struct pconn, c_timer), 0, "shutdown");
	while ((t = TAILQ_FIRST(&p->p_token_timers.tl_head)) != NULL)
		dconn_close(LOOP_CONTAINER_OF(t, struct dconn, d_timer), NULL, "shutdown");
	relay_stats(p->p_relay, &st);
	log_info("stopping: %u pair(s) may drain for up to %.1f s", st.pairs_active,
	    p->p_conf->pc_shutdown_timeout);
	loop_op_init(&p->p_drain, public_drain_expired);
	loop_timeout(p->p_loop, &p->p_drain, (unsigned)(p->p_conf->pc_shutdown_timeout * 1000));
	return loop_run(p->p_loop);
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
	if (changed > 0 && p->p_store &&
	    datastore_compact(p->p_store, now, err, sizeof(err)) < 0) {
		log_warnx("datastore: %s", err);
		return -1;
	}
	return 0;
}

int
public_run(struct proxy_conf *pc)
{
	struct public pub, *p = &pub;
	struct relay_settings rs;
	struct relay_stats st;
	struct pconn *c;
	struct dconn *d;
	struct rpc_wait *w;
	struct sigaction sa;
	char err[512];
	int rc = 1, tls_fd = -1, data_fd = -1;

	memset(p, 0, sizeof(*p));
	p->p_conf = pc;
	TAILQ_INIT(&p->p_pconns);
	TAILQ_INIT(&p->p_dconns);
	TAILQ_INIT(&p->p_waiting);
	signal(SIGPIPE, SIG_IGN);

	/*
	 * Start-up order: settings (certificates and keys) first, then every
	 * port, and only then the datastore.  A settings error (exit 2) leaves
	 * no trace; a port in use (exit 1) does not touch a running proxy's
	 * datastore.
	 */
	if (control_init(&p->p_ctl, pc, err, sizeof(err)) < 0) {
		log_errorx("settings: %s", err);
		rc = 2;
		goto out;
	}
	if ((tls_fd = public_bind(pc, pc->pc_tls_bind, "tls_bind_address", err,
	    sizeof(err))) < 0 ||
	    (data_fd = public_bind(pc, pc->pc_data_bind, "internal_bind_address", err,
	    sizeof(err))) < 0 ||
	    control_bind(&p->p_ctl, public_rpc, p, err, sizeof(err)) < 0) {
		log_errorx("%s", err);
		goto out;
	}
	public_fd_limit(pc);
	p->p_announce = announce_table_new();
	p->p_tokens = token_table_new((size_t)pc->pc_max_connections, pc->pc_accept_timeout * 2);
	p->p_limits = ratelimit_new(pc->pc_rate_limits, pc->pc_nrate_limits,
	    &pc->pc_rate_prefixes, 65536);
	p->p_data_limits = ratelimit_new(pc->pc_data_rate_limits, pc->pc_ndata_rate_limits,
	    &pc->pc_rate_prefixes, 65536);
	p->p_sources = srccap_new(pc->pc_max_per_source);
	p->p_peekbuf = malloc((size_t)pc->pc_hello_max_bytes);
	if (!p->p_announce || !p->p_tokens || !p->p_limits || !p->p_data_limits ||
	    !p->p_sources || !p->p_peekbuf) {
		log_errorx("out of memory");
		goto out;
	}
	if (pc->pc_datastore_file &&
	    (p->p_store = datastore_open(pc->pc_datastore_file, p->p_announce, now_wall(),
	    err, sizeof(err))) == NULL) {
		log_errorx("public.datastore.settings.filename: %s", err);
		goto out;
	}
	if (public_load_checks(p) < 0)
		goto out;
	log_info("%zu announcement(s) loaded", announce_count(p->p_announce));
	if ((p->p_loop = loop_new(4096)) == NULL) {
		log_errorx("io_uring setup: %s", strerror(errno));
		goto out;
	}
	proxy_conf_relay_settings(pc, &rs);
	if ((p->p_relay = relay_new(p->p_loop, &rs)) == NULL) {
		log_errorx("relay setup: %s", strerror(errno));
		goto out;
	}
	loop_timer_list_init(p->p_loop, &p->p_hello_timers,
	    (uint64_t)(pc->pc_hello_timeout * 1000), pconn_hello_expired, p);
	loop_timer_list_init(p->p_loop, &p->p_park_timers,
	    (uint64_t)(pc->pc_accept_timeout * 1000), pconn_park_expired, p);
	loop_timer_list_init(p->p_loop, &p->p_token_timers,
	    (uint64_t)(pc->pc_token_timeout * 1000), dconn_token_expired, p);
	public_listen(p, &p->p_tls_listener, tls_fd, pc->pc_tls_bind, "TLS listener",
	    public_tls_accept);
	public_listen(p, &p->p_data_listener, data_fd, pc->pc_data_bind, "data listener",
	    public_data_accept);
	tls_fd = data_fd = -1;          /* the listeners own them now */
	reload_init(&p->p_ctl, p->p_loop, pc, &(struct reload_role){ &p->p_hello_timers, &p->p_park_timers, &p->p_token_timers, &p->p_limits, &p->p_data_limits });	/* reload: role apply hook */
	if (control_run(&p->p_ctl, err, sizeof(err)) < 0) {
		log_errorx("%s", err);
		goto out;
	}
	side_post(p->p_ctl.ct_side, public_side_timers, p);
	log_info("public proxy %s ready (io_uring %s)", pc->pc_name, loop_mode(p->p_loop));

	public_signal_loop = p->p_loop;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = public_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	rc = loop_run(p->p_loop) < 0 || public_drain(p) < 0 ? 1 : 0;
	relay_stats(p->p_relay, &st);
	log_debug("active at stop: %ld sockets, %zu parked, %u relayed pairs",
	    p->p_nconns + p->p_ndata,
	    token_count(p->p_tokens), st.pairs_active);
	log_info("stopped");
out:
	if (p->p_ctl.ct_side) {
		/* the timers belong to the side thread's base: free them once
		 * it has stopped, before the base goes */
		side_stop(p->p_ctl.ct_side);
		if (p->p_sweep)
			event_free(p->p_sweep);
		if (p->p_dirpoll)
			event_free(p->p_dirpoll);
		/* join the datastore's thread before the side goes: its
		 * completion is posted there (and dropped, unrun) */
		datastore_close(p->p_store);
		p->p_store = NULL;
		if (p->p_commit)
			commit_free(p->p_commit);
		while ((w = TAILQ_FIRST(&p->p_waiting)) != NULL) {
			TAILQ_REMOVE(&p->p_waiting, w, w_entry);
			free(w);
		}
	}
	control_stop(&p->p_ctl);
	if (p->p_watch)
		directory_watch_free(p->p_watch);
	if (tls_fd >= 0)
		close(tls_fd);
	if (data_fd >= 0)
		close(data_fd);
	if (p->p_relay)
		relay_free(p->p_relay);
	if (p->p_loop)
		loop_free(p->p_loop);
	public_signal_loop = NULL;
	/* The loop is gone: no callback will free what is still open (waiting
	 * for a hello or a token, parked, or joined: relay_free closed those
	 * sockets without a report). */
	while ((c = TAILQ_FIRST(&p->p_pconns)) != NULL) {
		if (c->c_fd >= 0)
			close(c->c_fd);
		pconn_destroy(c);
	}
	while ((d = TAILQ_FIRST(&p->p_dconns)) != NULL) {
		TAILQ_REMOVE(&p->p_dconns, d, d_entry);
		if (d->d_fd >= 0)
			close(d->d_fd);
		free(d);
	}
	if (p->p_store)
		datastore_close(p->p_store);
	announce_table_free(p->p_announce);
	token_table_free(p->p_tokens);
	ratelimit_free(p->p_limits);
	srccap_free(p->p_sources);
	ratelimit_free(p->p_data_limits);
	free(p->p_peekbuf);
	return rc;
}
