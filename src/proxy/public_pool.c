/* public_pool.c - the public proxy's warm pool of data connections
 * (issue #16; README "Pooled data connections").
 *
 * Thread: the io_uring loop (main thread), except public_pool_init (main
 * thread, before the side thread runs).  The ticket book (ticket.h) is
 * shared with the side thread, which issues tickets (public_tickets.c);
 * it has its own lock.
 *
 * A data connection whose first 32 bytes are no parked client's token but
 * a ticket of the book (public_data.c asks public_pool_redeem) becomes a
 * pooled connection of the ticket's operator:
 *
 *   redeemed ──> IDLE ──client of its operator, frame written──> (joined, USED)
 *                  │
 *                  ├─pool_idle_lifetime ──> closed (REPLACED: its private proxy dials another)
 *                  ├─readable: EOF, error, or bytes before its frame ──> closed (CLOSED)
 *                  ├─found dead when a client takes it ──> closed (DEAD), the next one is tried
 *                  └─shutdown ──> closed (CLOSED)
 *   LEAVING  left the pool (fd joined or closed); waits for the final
 *            completion of its poll, then freed.
 *
 * IDLE connections have a one-shot POLLIN|POLLRDHUP poll in flight: a
 * pooled connection never sends a byte before its start frame, so any
 * wake-up means it closed or broke the protocol.  TCP keepalive finds a
 * peer that vanished without a FIN.  A client takes the oldest idle
 * connection first (FIFO), checked with a MSG_PEEK recv (the poll's
 * completion may still be on its way) and by the frame's send.  A client
 * that found its operator's pool empty is parked and brokered as before
 * (incomingConnection); a pooled connection that arrives meanwhile takes
 * the oldest such client at once (its dial-back then finds no token). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "loop.h"
#include "proxy_conf.h"
#include "relay.h"
#include "ticket.h"
#include "token.h"
#include "util.h"
#include "public_int.h"

#define POOL_KEEPIDLE	15	/* seconds idle before the first keepalive probe */
#define POOL_KEEPINTVL	5	/* seconds between probes */
#define POOL_KEEPCNT	3	/* probes unanswered before the kernel gives up */

enum pooled_state { PD_IDLE, PD_LEAVING };

struct pool_op;

struct pooled {
	TAILQ_ENTRY(pooled)	 pd_entry;	/* its operator's idle list while IDLE */
	struct public		*pd_pub;
	struct pool_op		*pd_op;
	enum pooled_state	 pd_state;
	int			 pd_fd;		/* -1 once joined or closed */
	struct loop_op		 pd_poll;
	struct loop_timer	 pd_timer;	/* pool_idle_lifetime */
	struct sockaddr_storage	 pd_peer;
};

/* One operator's idle connections, oldest first. */
struct pool_op {
	LIST_ENTRY(pool_op)	 po_link;
	TAILQ_HEAD(, pooled)	 po_idle;
	size_t			 po_nidle;
	uint64_t		 po_redeemed_ms;	/* loop time of its last redeemed ticket */
	char			 po_name[TICKET_OP_MAX + 1];
};

struct public_pool {
	LIST_HEAD(, pool_op)	 pp_ops;
	struct loop_timer_list	 pp_timers;
	uint64_t		 pp_conn_id;	/* the frame's connection id, per client taken */
	size_t			 pp_leaving;	/* LEAVING, waiting for their poll */
	TAILQ_HEAD(, pooled)	 pp_gone;	/* the LEAVING ones */
};

static void pooled_poll_cb(struct loop_op *, int, unsigned);

static struct pool_op *
pool_op_get(struct public_pool *pp, const char *name, int create)
{
	struct pool_op *po;

	LIST_FOREACH(po, &pp->pp_ops, po_link)
		if (strcmp(po->po_name, name) == 0)
			return po;
	if (!create || (po = calloc(1, sizeof(*po))) == NULL)
		return NULL;
	TAILQ_INIT(&po->po_idle);
	snprintf(po->po_name, sizeof(po->po_name), "%s", name);
	LIST_INSERT_HEAD(&pp->pp_ops, po, po_link);
	return po;
}

static void
pooled_free(struct pooled *pd)
{
	struct public_pool *pp = pd->pd_pub->p_pool;

	TAILQ_REMOVE(&pp->pp_gone, pd, pd_entry);
	pp->pp_leaving--;
	free(pd);
}

/* pd leaves the pool: out of its operator's list, counted in the book; its
 * socket is closed unless keep (joined).  Freed once its poll is over. */
static void
pooled_leave(struct pooled *pd, enum ticket_leave why, int keep)
{
	struct public *p = pd->pd_pub;
	struct public_pool *pp = p->p_pool;

	if (pd->pd_state != PD_IDLE)
		return;
	pd->pd_state = PD_LEAVING;
	TAILQ_REMOVE(&pd->pd_op->po_idle, pd, pd_entry);
	pd->pd_op->po_nidle--;
	TAILQ_INSERT_TAIL(&pp->pp_gone, pd, pd_entry);
	pp->pp_leaving++;
	loop_timer_disarm(&pp->pp_timers, &pd->pd_timer);
	ticket_pool_leave(p->p_tickets, pd->pd_op->po_name, why);
	if (pd->pd_poll.lo_busy)
		loop_cancel(p->p_loop, &pd->pd_poll);
	if (!keep) {
		/* io_uring's poll holds its own reference to the file: closing
		 * the number now is safe, the cancel completes on its own. */
		close(pd->pd_fd);
		public_admit(p, PE_POOL_CLOSED);
	}
	pd->pd_fd = -1;
	if (!pd->pd_poll.lo_busy)
		pooled_free(pd);
}

static void
pooled_idle_expired(struct loop_timer *t, void *arg)
{
	struct pooled *pd = LOOP_CONTAINER_OF(t, struct pooled, pd_timer);
	char addr[64];

	log_debug("pooled connection %s of %s: idle for pool_idle_lifetime, closed",
	    addr_str((struct sockaddr *)&pd->pd_peer, addr, sizeof(addr)), pd->pd_op->po_name);
	pooled_leave(pd, TICKET_LEAVE_REPLACED, 0);
}

static void
pooled_poll_cb(struct loop_op *op, int res, unsigned flags)
{
	struct pooled *pd = LOOP_CONTAINER_OF(op, struct pooled, pd_poll);
	char addr[64], b;
	ssize_t n;

	if (pd->pd_state == PD_LEAVING) {
		pooled_free(pd);
		return;
	}
	/* Readable: the peer closed, reset, or sent bytes before its frame. */
	n = recv(pd->pd_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (res >= 0 && n < 0 && (errno == EAGAIN || errno == EINTR)) {
		/* a spurious wake-up: keep waiting */
		loop_poll(pd->pd_pub->p_loop, &pd->pd_poll, pd->pd_fd, POLLIN | POLLRDHUP, 0);
		return;
	}
	addr_str((struct sockaddr *)&pd->pd_peer, addr, sizeof(addr));
	if (n > 0)
		log_limited(&pd->pd_pub->p_log_dclose, LOG_LVL_INFO,
		    "pooled connection %s of %s closed: bytes before its start frame", addr,
		    pd->pd_op->po_name);
	else
		log_debug("pooled connection %s of %s closed by its peer%s%s", addr,
		    pd->pd_op->po_name, n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
	pooled_leave(pd, TICKET_LEAVE_CLOSED, 0);
}

/* A pooled connection arrived for po: the oldest client of that operator
 * still parked (waiting for its dial-back) takes it at once. */
static void
pool_serve_parked(struct public *p, struct pool_op *po)
{
	struct pconn *c;

	if (token_count(p->p_tokens) == 0)
		return;         /* nobody is parked: the usual case */
	TAILQ_FOREACH(c, &p->p_pconns, c_entry)
		if (c->c_state == PC_PARKED && strcmp(c->c_operator, po->po_name) == 0)
			break;
	if (c != NULL)
		public_pool_take(p, c);
}

int
public_pool_redeem(struct public *p, int fd, const struct sockaddr_storage *peer,
    const uint8_t ticket[TOKEN_LEN], char *why, size_t whylen)
{
	struct public_pool *pp = p->p_pool;
	char op[TICKET_OP_MAX + 1];
	enum ticket_why w;
	struct pool_op *po;
	struct pooled *pd;
	int one = 1, idle = POOL_KEEPIDLE, intvl = POOL_KEEPINTVL, cnt = POOL_KEEPCNT;

	/* Stopping with nobody left to serve: it would only wait idle and hold
	 * up the exit.  Refused before the book, so nothing is consumed; the
	 * close makes its keeper dial a new one (to the successor). */
	if (p->p_px.px_state != PS_RUNNING &&
	    (p->p_data_closing || !public_clients_waiting(p))) {
		snprintf(why, whylen, "ticket not redeemed: stopping");
		return -3;
	}
	/* Nothing is consumed unless it is TICKET_OK (ticket.h). */
	if ((w = ticket_redeem(p->p_tickets, ticket, now_wall(), op)) != TICKET_OK) {
		if (w == TICKET_UNKNOWN) {
			snprintf(why, whylen, "unknown or used token");
			return -1;
		}
		snprintf(why, whylen, "ticket refused: %s%s%s", ticket_why_str(w),
		    op[0] != '\0' ? ", operator " : "", op);
		return -2;
	}
	if ((po = pool_op_get(pp, op, 1)) == NULL || (pd = calloc(1, sizeof(*pd))) == NULL) {
		ticket_pool_leave(p->p_tickets, op, TICKET_LEAVE_CLOSED);
		snprintf(why, whylen, "ticket of %s: out of memory", op);
		return -2;
	}
	/* Idle for up to pool_idle_lifetime: keepalive finds a vanished peer. */
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	pd->pd_pub = p;
	pd->pd_op = po;
	pd->pd_fd = fd;
	pd->pd_peer = *peer;
	pd->pd_state = PD_IDLE;
	TAILQ_INSERT_TAIL(&po->po_idle, pd, pd_entry);
	po->po_nidle++;
	po->po_redeemed_ms = loop_now_ms(p->p_loop);
	public_admit(p, PE_POOL_ADDED);
	loop_op_init(&pd->pd_poll, pooled_poll_cb);
	loop_timer_arm(&pp->pp_timers, &pd->pd_timer);
	loop_poll(p->p_loop, &pd->pd_poll, fd, POLLIN | POLLRDHUP, 0);
	pool_serve_parked(p, po);
	return 0;
}

/* The start frame for client c into buf; its length or -1. */
static ssize_t
pool_frame(struct public *p, struct pconn *c, uint8_t *buf, size_t len)
{
	struct frame f;
	socklen_t sl = sizeof(f.fr_local);

	memset(&f, 0, sizeof(f));
	if (getsockname(c->c_fd, (struct sockaddr *)&f.fr_local, &sl) < 0)
		return -1;
	public_unmap(&f.fr_local);
	f.fr_client = c->c_peer;
	f.fr_conn_id = ++p->p_pool->pp_conn_id;
	snprintf(f.fr_sni, sizeof(f.fr_sni), "%s", c->c_sni);
	return frame_encode(&f, buf, len);
}

/* Write the frame on pd: 1 written, 0 pd is dead (closed, reset, or it
 * sent bytes it must not have). */
static int
pooled_send_frame(struct pooled *pd, const uint8_t *frame, size_t len)
{
	char b;
	ssize_t n;

	n = recv(pd->pd_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n >= 0 || (errno != EAGAIN && errno != EINTR))
		return 0;
	/* An idle socket's send buffer is empty: a frame of at most 308
	 * bytes goes whole or not at all. */
	n = send(pd->pd_fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	return n == (ssize_t)len;
}

int
public_pool_expects(struct public *p, const char *op)
{
	struct pool_op *po;

	if (p->p_pool == NULL || (po = pool_op_get(p->p_pool, op, 0)) == NULL ||
	    po->po_redeemed_ms == 0)
		return 0;
	return loop_now_ms(p->p_loop) - po->po_redeemed_ms <
	    (uint64_t)(p->p_conf->pc_pool_idle_lifetime * 1000);
}

int
public_pool_take(struct public *p, struct pconn *c)
{
	struct pool_op *po;
	struct pooled *pd;
	uint8_t frame[FRAME_MAX];
	ssize_t flen = -1;
	int cfd, dfd;
	char addr[64], addr2[64];

	if (p->p_pool == NULL || (po = pool_op_get(p->p_pool, c->c_operator, 0)) == NULL)
		return -1;
	while ((pd = TAILQ_FIRST(&po->po_idle)) != NULL) {
		if (flen < 0 && (flen = pool_frame(p, c, frame, sizeof(frame))) < 0) {
			log_warnx("client %s: no start frame for %s: pooled connections not used",
			    addr_str_masked((struct sockaddr *)&c->c_peer, addr, sizeof(addr)),
			    c->c_sni);
			return -1;
		}
		if (pooled_send_frame(pd, frame, (size_t)flen))
			break;
		log_info("pooled connection %s of %s dead at use: skipped",
		    addr_str((struct sockaddr *)&pd->pd_peer, addr, sizeof(addr)), po->po_name);
		pooled_leave(pd, TICKET_LEAVE_DEAD, 0);
	}
	if (pd == NULL)
		return -1;
	if (log_get_level() >= LOG_LVL_DEBUG)
		log_debug("client %s: %s, pooled connection %s of %s, start frame %016llx",
		    addr_str_masked((struct sockaddr *)&c->c_peer, addr, sizeof(addr)), c->c_sni,
		    addr_str((struct sockaddr *)&pd->pd_peer, addr2, sizeof(addr2)), po->po_name,
		    (unsigned long long)p->p_pool->pp_conn_id);
	dfd = pd->pd_fd;
	pooled_leave(pd, TICKET_LEAVE_USED, 1);
	pconn_count_pooled();
	if (c->c_state == PC_PARKED)
		pconn_unpark(c);	/* its dial-back will find no token */
	else
		loop_timer_disarm(&p->p_hello_timers, &c->c_timer);
	c->c_state = PC_JOINED;
	c->c_via = "pool";
	public_admit(p, PE_POOL_JOINED);
	cfd = c->c_fd;
	c->c_fd = -1;
	/* The relay owns both sockets now, also when it fails; the
	 * ClientHello, still in the client socket, is its first byte. */
	if (relay_join(p->p_relay, cfd, dfd, "client", "private", public_relay_done, c) == NULL) {
		struct relay_report rep;

		memset(&rep, 0, sizeof(rep));
		snprintf(rep.reason_str, sizeof(rep.reason_str), "relay failed");
		public_relay_done(&rep, c);
	}
	return 0;
}

/* --- start and stop -------------------------------------------------------- */

int
public_pool_init(struct public *p)
{
	struct ticket_limits tl = {
		.tl_cap = (size_t)p->p_conf->pc_max_pooled,
		.tl_lifetime = p->p_conf->pc_ticket_lifetime,
		.tl_key_lifetime = p->p_conf->pc_ticket_key_lifetime,	/* 0: the book's 600 s, unused */
	};

	if ((p->p_pool = calloc(1, sizeof(*p->p_pool))) == NULL ||
	    (p->p_tickets = ticket_book_new(&tl)) == NULL)
		return -1;
	LIST_INIT(&p->p_pool->pp_ops);
	TAILQ_INIT(&p->p_pool->pp_gone);
	return 0;
}

void
public_pool_start(struct public *p)
{
	loop_timer_list_init(p->p_loop, &p->p_pool->pp_timers,
	    (uint64_t)(p->p_conf->pc_pool_idle_lifetime * 1000), pooled_idle_expired, p);
}

void
public_pool_drain(struct public *p)
{
	struct pool_op *po;
	struct pooled *pd;

	if (p->p_pool == NULL)
		return;
	LIST_FOREACH(po, &p->p_pool->pp_ops, po_link)
		while ((pd = TAILQ_FIRST(&po->po_idle)) != NULL)
			pooled_leave(pd, TICKET_LEAVE_CLOSED, 0);
}

void
public_pool_free(struct public *p)
{
	struct public_pool *pp = p->p_pool;
	struct pool_op *po;
	struct pooled *pd;

	if (pp != NULL) {
		while ((po = LIST_FIRST(&pp->pp_ops)) != NULL) {
			while ((pd = TAILQ_FIRST(&po->po_idle)) != NULL) {
				TAILQ_REMOVE(&po->po_idle, pd, pd_entry);
				if (pd->pd_fd >= 0)
					close(pd->pd_fd);
				free(pd);
			}
			LIST_REMOVE(po, po_link);
			free(po);
		}
		while ((pd = TAILQ_FIRST(&pp->pp_gone)) != NULL) {
			TAILQ_REMOVE(&pp->pp_gone, pd, pd_entry);
			free(pd);
		}
		free(pp);
		p->p_pool = NULL;
	}
	ticket_book_free(p->p_tickets);
	p->p_tickets = NULL;
}
