/* public_client.c - the public proxy's client hello/park machine
 * (SPEC 4.1; states in public_int.h, enum pconn_state).
 *
 * Thread: the io_uring loop (main thread) only.  The call to
 * incomingConnection is handed to the side thread (p_on_parked); a failed
 * call comes back through loop_post (incoming_failed), and a transient
 * failure is tried again from here after a short backoff (issue #16).
 *
 * Closing with a poll in flight cancels it first and frees on the final
 * completion (io_uring still holds the file until then). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "announce.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "ratelimit.h"
#include "relay.h"
#include "sni.h"
#include "srccap.h"
#include "token.h"
#include "util.h"
#include "public_int.h"

static void pconn_poll_cb(struct loop_op *, int, unsigned);
static void pconn_arm_poll(struct pconn *);

/* The client connections' results: "accepted" at accept, then exactly one
 * of "joined", a refusal at accept or an end before joining (the result
 * labels of enum pconn_end). */
METRIC_COUNTER(m_clients, "public_connections_total",
    "Client connections of the public proxy: accepted, refused at accept, "
    "ended before joining (by reason) and joined.", "result")
METRIC_GAUGE(m_parked, "public_parked", "Client connections parked now, waiting for "
    "their data connection.")

/* Why a client connection ends before joining: its summary line's end=
 * words, its result label, and the TLS alert it is sent (0: none). */
enum pconn_end {
	PCE_CLOSED, PCE_ERROR, PCE_POLL_ERROR, PCE_INCOMPLETE, PCE_NO_SNI, PCE_BAD_NAME, PCE_MALFORMED,
	PCE_TOO_LARGE, PCE_HELLO_TIMEOUT, PCE_UNKNOWN_NAME, PCE_TOKEN_FULL,
	PCE_ACCEPT_TIMEOUT, PCE_INCOMING_FAILED, PCE_RETRIES_OVER, PCE_SHUTDOWN,
};

static const struct {
	const char	*e_log;
	const char	*e_result;
	int		 e_alert;
} pconn_ends[] = {
	[PCE_CLOSED]          = { "closed before hello", "closed", 0 },
	[PCE_ERROR]           = { "error before hello", "error", 0 },
	[PCE_POLL_ERROR]      = { "poll error", "error", 0 },
	[PCE_INCOMPLETE]      = { "incomplete hello", "incomplete", 0 },
	[PCE_NO_SNI]          = { "no sni", "no_sni", ALERT_UNRECOGNIZED_NAME },
	[PCE_BAD_NAME]        = { "invalid sni", "bad_name", ALERT_UNRECOGNIZED_NAME },
	[PCE_MALFORMED]       = { "malformed hello", "malformed", ALERT_DECODE_ERROR },
	[PCE_TOO_LARGE]       = { "hello too large", "too_large", 0 },
	[PCE_HELLO_TIMEOUT]   = { "hello timeout", "hello_timeout", 0 },
	[PCE_UNKNOWN_NAME]    = { "no announcement", "unknown_name", ALERT_UNRECOGNIZED_NAME },
	[PCE_TOKEN_FULL]      = { "token table full", "token_table_full", ALERT_INTERNAL_ERROR },
	[PCE_ACCEPT_TIMEOUT]  = { "not claimed (accept_timeout)", "accept_timeout", 0 },
	[PCE_INCOMING_FAILED] = { "incomingConnection failed", "incoming_failed",
	    ALERT_INTERNAL_ERROR },
	/* accept_timeout, the last try having failed (502, 503, 504) */
	[PCE_RETRIES_OVER]    = { "incomingConnection failed (retried until accept_timeout)",
	    "incoming_failed", ALERT_INTERNAL_ERROR },
	[PCE_SHUTDOWN]        = { "shutdown", "shutdown", 0 },
};

static void
pconn_log(struct pconn *c, const char *how, uint64_t in, uint64_t out)
{
	struct proxy_summary s = {
		.ps_kind = "client",
		.ps_peer = (struct sockaddr *)&c->c_peer,
		.ps_sni = c->c_sni,
		.ps_operator = c->c_operator,
		.ps_via = c->c_via,
		.ps_duration = (double)(loop_now_ms(c->c_pub->p_loop) - c->c_start_ms) / 1000.0,
		.ps_bytes_in = in,
		.ps_bytes_out = out,
		.ps_end = how,
	};

	proxy_log_summary(&s);
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
		c->c_fd = -1;
		public_admit(c->c_pub, PE_CLIENT_CLOSED);
	}
	pconn_destroy(c);
}

/* The timer list of the wait before try tries + 1 of incomingConnection
 * (tries 0: the first try's wait for a pooled connection, pool_wait). */
static struct loop_timer_list *
pconn_retry_list(struct public *p, unsigned tries)
{
	if (tries == 0)
		return &p->p_pool_wait_timers;
	return &p->p_retry_timers[tries < PUBLIC_RETRY_STEPS ? tries - 1 : PUBLIC_RETRY_STEPS - 1];
}

/* A pending retry goes (its call was not placed). */
static void
pconn_retry_cancel(struct pconn *c)
{
	if (c->c_retry.t_armed)
		loop_timer_disarm(pconn_retry_list(c->c_pub, c->c_tries), &c->c_retry);
	free(c->c_incoming);
	c->c_incoming = NULL;
}

void
pconn_unpark(struct pconn *c)
{
	struct public *p = c->c_pub;

	/* a data connection claimed it already; a pooled one did not */
	token_claim(p->p_tokens, c->c_token);
	loop_timer_disarm(&p->p_park_timers, &c->c_timer);
	pconn_retry_cancel(c);
	metric_dec(&m_parked);
}

/* End a connection that never reached the relay (with the alert its end
 * calls for). */
static void
pconn_close(struct pconn *c, enum pconn_end end)
{
	struct public *p = c->c_pub;
	int alert;

	switch (c->c_state) {
	case PC_HELLO:
		loop_timer_disarm(&p->p_hello_timers, &c->c_timer);
		break;
	case PC_PARKED:
		/* the tries so far failed, not only the time ran out */
		if (end == PCE_ACCEPT_TIMEOUT && c->c_tries > 0)
			end = PCE_RETRIES_OVER;
		pconn_unpark(c);
		break;
	case PC_JOINED:         /* the relay's */
	case PC_CLOSING:
		return;
	}
	c->c_state = PC_CLOSING;
	alert = pconn_ends[end].e_alert;
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
	pconn_log(c, pconn_ends[end].e_log, 0, 0);
	metric_inc(&m_clients, pconn_ends[end].e_result);
	if (c->c_poll.lo_busy)
		loop_cancel(p->p_loop, &c->c_poll);     /* freed by the final callback */
	else
		pconn_free(c);
}

void
pconn_hello_expired(struct loop_timer *t, void *arg)
{
	pconn_close(LOOP_CONTAINER_OF(t, struct pconn, c_timer), PCE_HELLO_TIMEOUT);
}

void
pconn_park_expired(struct loop_timer *t, void *arg)
{
	pconn_close(LOOP_CONTAINER_OF(t, struct pconn, c_timer), PCE_ACCEPT_TIMEOUT);
}

/* The wait after a transient failure (or pool_wait, before the first try)
 * is over: try incomingConnection with the token, unless the name went away
 * meanwhile or a pooled connection of its operator is idle now. */
static void
pconn_retry_expired(struct loop_timer *t, void *arg)
{
	struct pconn *c = LOOP_CONTAINER_OF(t, struct pconn, c_retry);
	struct public *p = c->c_pub;
	struct incoming *in = c->c_incoming;
	struct announcement a;

	c->c_incoming = NULL;
	if (announce_match(p->p_announce, c->c_sni, NULL, now_wall(), &a) < 0) {
		free(in);
		pconn_close(c, PCE_UNKNOWN_NAME);
		return;
	}
	/* another operator holds the name now (the old one's had expired) */
	if (strcmp(a.an_operator, c->c_operator) != 0) {
		snprintf(c->c_operator, sizeof(c->c_operator), "%s", a.an_operator);
		snprintf(in->in_operator, sizeof(in->in_operator), "%s", a.an_operator);
	}
	if (public_pool_take(p, c) == 0) {
		free(in);
		return;
	}
	if (log_get_level() >= LOG_LVL_DEBUG) {
		char addr[64];

		log_debug("client %s: %s: incomingConnection, try %u",
		    addr_str_masked((struct sockaddr *)&c->c_peer, addr, sizeof(addr)), c->c_sni,
		    c->c_tries + 1);
	}
	in->in_transient = 0;
	p->p_on_parked(p, in);
}

void
pconn_retry_timers_init(struct public *p)
{
	uint64_t max = (uint64_t)(p->p_conf->pc_incoming_retry * 1000);

	for (int i = 0; i < PUBLIC_RETRY_STEPS; i++) {
		uint64_t ms = (uint64_t)PUBLIC_RETRY_FIRST_MS << i;

		loop_timer_list_init(p->p_loop, &p->p_retry_timers[i],
		    ms < max || max == 0 ? ms : max, pconn_retry_expired, p);
	}
	loop_timer_list_init(p->p_loop, &p->p_pool_wait_timers,
	    (uint64_t)(p->p_conf->pc_pool_wait * 1000), pconn_retry_expired, p);
}

static void
pconn_park(struct pconn *c)
{
	struct public *p = c->c_pub;
	struct announcement a;
	struct incoming *in;
	int one = 1;

	/* the exact announcement, else the wildcard one of its parent */
	if (announce_match(p->p_announce, c->c_sni, NULL, now_wall(), &a) < 0) {
		pconn_close(c, PCE_UNKNOWN_NAME);
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
	if (public_pool_take(p, c) == 0)
		return;         /* issue #16: joined to a pooled connection */
	if ((in = calloc(1, sizeof(*in))) == NULL ||
	    token_park(p->p_tokens, c, c->c_token) < 0) {
		free(in);
		pconn_close(c, PCE_TOKEN_FULL);
		return;
	}
	loop_timer_disarm(&p->p_hello_timers, &c->c_timer);
	c->c_state = PC_PARKED;
	metric_inc(&m_parked);
	public_admit(p, PE_CLIENT_PARKED);
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
	/* Its pool is empty only until the replacement of a connection just
	 * used arrives (well under a millisecond on a LAN): wait for it rather
	 * than broker the client and have a pooled connection take it anyway,
	 * with an incomingConnection and a dial-back spent for nothing. */
	if (p->p_conf->pc_pool_wait > 0 && public_pool_expects(p, c->c_operator)) {
		c->c_incoming = in;
		loop_timer_arm(&p->p_pool_wait_timers, &c->c_retry);
		return;
	}
	p->p_on_parked(p, in);
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
		pconn_close(c, n < 0 ? PCE_ERROR : off > 0 ? PCE_INCOMPLETE : PCE_CLOSED);
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
			pconn_close(c, PCE_INCOMPLETE);
			return;
		}
		/* Wake up only when the parser can make progress. */
		lowat = (int)need;
		setsockopt(c->c_fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
		c->c_lowat = 1;
		pconn_arm_poll(c);
		return;
	case SNI_NO_SNI:
	case SNI_BAD_NAME:
		c->c_sni[0] = '\0';
		pconn_close(c, r == SNI_NO_SNI ? PCE_NO_SNI : PCE_BAD_NAME);
		return;
	case SNI_TOO_LARGE:
		pconn_close(c, PCE_TOO_LARGE);
		return;
	case SNI_MALFORMED:
	default:
		pconn_close(c, PCE_MALFORMED);
		return;
	}
}

static void
pconn_poll_cb(struct loop_op *op, int res, unsigned flags)
{
	struct pconn *c = LOOP_CONTAINER_OF(op, struct pconn, c_poll);

	if (c->c_state == PC_CLOSING) {
		pconn_free(c);
		return;
	}
	if (res < 0) {
		pconn_close(c, PCE_POLL_ERROR);
		return;
	}
	pconn_hello(c, (unsigned)res);
}

static void
pconn_arm_poll(struct pconn *c)
{
	loop_poll(c->c_pub->p_loop, &c->c_poll, c->c_fd, POLLIN | POLLRDHUP, 0);
}


void
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
		metric_inc(&m_clients, "rate_limit");
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
		metric_inc(&m_clients, "source_limit");
		close(fd);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->c_reader = malloc(sizeof(*c->c_reader))) == NULL) {
		free(c);
		srccap_release(p->p_sources, src);
		metric_inc(&m_clients, "out_of_memory");
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
	metric_inc(&m_clients, "accepted");
	public_admit(p, PE_CLIENT_ACCEPTED);
	loop_timer_arm(&p->p_hello_timers, &c->c_timer);
	pconn_arm_poll(c);
}

/* --- joined pairs ---------------------------------------------------------- */

/* Loop thread: the metrics of a client that took a pooled connection
 * (public_pool_take); parked: it had been parked. */
void
pconn_count_pooled(void)
{
	metric_inc(&m_clients, "joined");
}

void
pconn_joined(struct pconn *c)
{
	pconn_unpark(c);
	c->c_state = PC_JOINED;
	metric_inc(&m_clients, "joined");
	public_admit(c->c_pub, PE_PAIR_JOINED);
}

void
public_relay_done(const struct relay_report *rep, void *arg)
{
	struct pconn *c = arg;

	pconn_log(c, rep->reason_str, rep->bytes_ab, rep->bytes_ba);
	public_admit(c->c_pub, PE_PAIR_CLOSED);
	pconn_destroy(c);
}

/* --- incomingConnection failed (posted by the side thread) ----------------- */

void
incoming_failed(void *arg)
{
	struct incoming *in = arg;
	struct public *p = in->in_pub;
	struct pconn *c = token_lookup(p->p_tokens, in->in_token);

	/* Joined meanwhile (a pooled connection, a late dial-back) or gone. */
	if (c == NULL || c->c_state != PC_PARKED) {
		free(in);
		return;
	}
	c->c_tries++;
	/* A definite refusal: nobody will come for it, close now, not at
	 * accept_timeout. */
	if (!in->in_transient || p->p_conf->pc_incoming_retry <= 0) {
		free(in);
		pconn_close(c, PCE_INCOMING_FAILED);
		return;
	}
	/* Transient: the same call again after the backoff, while the
	 * client stays parked (accept_timeout still bounds it). */
	c->c_incoming = in;
	loop_timer_arm(pconn_retry_list(p, c->c_tries), &c->c_retry);
}

/* --- stop ------------------------------------------------------------------ */

int
public_clients_waiting(struct public *p)
{
	/* every HELLO client has its hello timer armed, every PARKED one its token */
	return !TAILQ_EMPTY(&p->p_hello_timers.tl_head) || token_count(p->p_tokens) > 0;
}

void
public_clients_drain(struct public *p)
{
	struct pconn *c, *next;

	for (c = TAILQ_FIRST(&p->p_pconns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, c_entry);
		if (c->c_state == PC_HELLO || c->c_state == PC_PARKED)
			pconn_close(c, PCE_SHUTDOWN);
	}
}

void
public_clients_free(struct public *p)
{
	struct pconn *c;

	/* No callback will free what is still open (waiting for a hello,
	 * parked, or joined: relay_free closed those sockets without a
	 * report). */
	while ((c = TAILQ_FIRST(&p->p_pconns)) != NULL) {
		if (c->c_fd >= 0)
			close(c->c_fd);
		free(c->c_incoming);
		pconn_destroy(c);
	}
}
