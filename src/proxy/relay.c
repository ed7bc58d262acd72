/* relay.c - the relay engine: two sockets joined, two directions, each on
 * io_uring RECV/SEND (COPY) or on readiness-driven splice(2) (SPLICE).
 * See relay.h for the design.
 *
 * A direction's life:
 *   COPY    RECV pending (no buffer) -> SEND of the received buffer without
 *           waiting (MSG_DONTWAIT: the socket takes what it has room for)
 *           -> buffer back to the ring -> next RECV, or SPLICE once the
 *           direction has carried splice_threshold bytes.  What dst did not
 *           take is copied to the direction's own spill buffer (at most
 *           buf_size bytes, heap) before the shared buffer goes back, and
 *           a waiting SEND drains the spill: a receiver that stops reading
 *           holds its own bytes, never one of the shared buffers, so it
 *           cannot starve other pairs (SECURITY.md, H1).  RECV -ENOBUFS:
 *           parked on r_waitbuf until a buffer comes back, which is at the
 *           latest one loop iteration later.
 *   SPLICE  multishot POLLIN on the source (d_rpoll) drives pump():
 *           src -> pipe -> dst until EAGAIN.  dst full: one-shot POLLOUT
 *           on dst (d_wpoll) resumes; per-event budget used up: a NOP
 *           (d_yield) resumes in the next loop iteration, whether or not
 *           anything more arrives (bytes left in the pipe must still go out
 *           when the sender has gone quiet).  The pipe goes back to the pool
 *           whenever it is empty and the source is drained.
 *   DONE    source at EOF and everything forwarded: SHUT_WR sent on dst.
 * Per direction flags: d_eof (source returned 0), d_wblk (dst returned
 * EAGAIN), d_nosplice (the pipe budget refused a pipe: COPY for good).
 * A direction is *blocked* while it holds bytes dst would not take (a spill
 * in COPY, d_wblk in SPLICE).
 * The pair: open until both directions are DONE or an error/timeout;
 * then p_closing, cancels in flight; freed when no op is busy.
 * Timeouts: idle (no byte delivered either way for idle_timeout) and stall
 * (some direction blocked and no byte delivered for stall_timeout: the
 * receiver stopped reading). */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "pipepool.h"
#include "relay.h"
#include "util.h"

#define RELAY_PUMP_ROUNDS	8	/* pipe fills per event before yielding */

/* Metrics.  Direction "up" is a -> b (client -> private proxy on the public
 * proxy, public proxy -> internal server on the private one), "down" the
 * other way; engine "copy" or "splice". */
METRIC_COUNTER(m_bytes, "relay_bytes_total",
    "Bytes relayed, by direction (up: towards the internal server) and engine.",
    "direction", "engine")
METRIC_GAUGE(m_pairs_active, "relay_pairs_active", "Joined connection pairs being relayed.")
METRIC_COUNTER(m_pairs, "relay_pairs_total", "Connection pairs joined.")
METRIC_COUNTER(m_ends, "relay_ends_total", "Relayed pairs ended, by reason.", "reason")
static const double relay_duration_bounds[] = { 0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 14400 };
METRIC_HISTOGRAM(m_duration, "relay_pair_duration_seconds",
    "Lifetime of relayed pairs, join to end.", relay_duration_bounds)

enum dir_mode {
	DIR_COPY,	/* RECV/SEND through provided buffers */
	DIR_SPLICE,	/* poll + splice(2) through a pooled pipe */
	DIR_DONE,	/* EOF forwarded, nothing more to do */
};

struct relay_dir {
	struct relay_pair	*d_pair;
	int			 d_idx;		/* 0: a->b, 1: b->a; src socket = d_idx */
	int			 d_src, d_dst;
	enum dir_mode		 d_mode;
	uint64_t		 d_bytes;
	/* COPY */
	struct loop_op		 d_recv, d_send;
	int			 d_bid;		/* buffer held, -1: none */
	uint32_t		 d_len, d_off;	/* received into d_bid, sent */
	int			 d_waitbuf;	/* on r_waitbuf */
	char			*d_spill;	/* bytes dst did not take, or NULL */
	uint32_t		 d_spill_len, d_spill_off;	/* <= buf_size (1 GiB) */
	int			 d_outq;	/* dst's SIOCOUTQ when last looked */
	TAILQ_ENTRY(relay_dir)	 d_wait_entry;
	/* SPLICE */
	struct loop_op		 d_rpoll, d_wpoll, d_yield;
	int			 d_pipe[2];	/* -1: none held */
	size_t			 d_cap, d_inpipe;
	int			 d_eof, d_wblk, d_nosplice, d_spliced;
};

struct relay_pair {
	TAILQ_ENTRY(relay_pair)	 p_entry;
	struct relay		*p_relay;
	int			 p_fd[2];
	const char		*p_name[2];
	struct relay_dir	 p_dir[2];
	struct loop_timer	 p_idle;
	struct loop_timer	 p_stall;	/* armed while a direction is blocked */
	uint64_t		 p_touch_tick;
	double			 p_start, p_end;
	int			 p_closing;
	enum relay_reason	 p_reason;
	int			 p_error, p_err_sock;
	relay_done_cb		 p_done;
	void			*p_arg;
};

struct relay {
	struct loop			*r_loop;
	struct relay_settings		 r_set;
	struct pipepool			*r_pipes;
	struct io_uring_buf_ring	*r_br;
	char				*r_bufs;
	unsigned			 r_bmask;
	int				 r_bgid;
	unsigned			 r_bufs_out;
	TAILQ_HEAD(, relay_dir)		 r_waitbuf;
	TAILQ_HEAD(, relay_pair)	 r_pairs;
	struct loop_timer_list		 r_idle;
	int				 r_idle_on;
	struct loop_timer_list		 r_stall;
	int				 r_stall_on;
	unsigned			 r_blocked;	/* directions blocked now */
	uint64_t			 r_spill_bytes;	/* held in spills now */
	uint64_t			 r_spills, r_stalls;
	unsigned			 r_active;
	unsigned			 r_spliced;
	int				 r_budget_logged;	/* EPERM warned once */
	uint64_t			 r_total;
	uint64_t			 r_bytes[2];
	uint64_t			 r_enobufs;
	int				 r_mbytes[2][2];	/* metric series [dir][splice] */
};

static void	relay_dir_next(struct relay_dir *);
static void	relay_pump(struct relay_dir *);
static void	relay_pair_end(struct relay_pair *, enum relay_reason, int, int);

/* n bytes delivered by d (splice: by the SPLICE engine). */
static void
relay_delivered(struct relay_dir *d, int splice, uint64_t n)
{
	struct relay *r = d->d_pair->p_relay;

	d->d_bytes += n;
	r->r_bytes[d->d_idx] += n;
	metric_add_at(&m_bytes, r->r_mbytes[d->d_idx][splice], (int64_t)n);
}

static const char *
relay_reason_label(enum relay_reason reason)
{
	switch (reason) {
	case RELAY_EOF:		return "eof";
	case RELAY_IDLE:	return "idle";
	case RELAY_RESET:	return "reset";
	case RELAY_ERROR:	return "error";
	case RELAY_CLOSED:	return "closed";
	case RELAY_SHUTDOWN:	return "shutdown";
	case RELAY_STALL:	return "stall";
	}
	return "other";
}

void
relay_settings_default(struct relay_settings *s)
{
	s->splice_threshold = 256 * 1024;
	s->pipe_size = 1024 * 1024;
	s->max_pipes = 1024;
	s->buf_size = 64 * 1024;
	s->buf_count = 256;
	s->idle_timeout = 3600;
	s->stall_timeout = 60;
}

/* --- provided buffers ---------------------------------------------------- */

static char *
relay_buf(struct relay *r, int bid)
{
	return r->r_bufs + (size_t)bid * r->r_set.buf_size;
}

static void
relay_buf_put(struct relay *r, int bid)
{
	struct relay_dir *d;

	io_uring_buf_ring_add(r->r_br, relay_buf(r, bid), (unsigned)r->r_set.buf_size,
	    (unsigned short)bid, r->r_bmask, 0);
	io_uring_buf_ring_advance(r->r_br, 1);
	r->r_bufs_out--;
	/* One buffer back: one parked direction may try again. */
	if ((d = TAILQ_FIRST(&r->r_waitbuf)) != NULL) {
		TAILQ_REMOVE(&r->r_waitbuf, d, d_wait_entry);
		d->d_waitbuf = 0;
		loop_recv(r->r_loop, &d->d_recv, d->d_src, NULL, r->r_set.buf_size, r->r_bgid);
	}
}

/* --- pair ---------------------------------------------------------------- */

/* Bytes were delivered to a destination: the pair made progress. */
static void
relay_touch(struct relay_pair *p)
{
	struct relay *r = p->p_relay;
	uint64_t tick = loop_tick(r->r_loop);

	/* Re-arm at most once per tick: the lists stay cheap under load. */
	if (p->p_touch_tick == tick)
		return;
	p->p_touch_tick = tick;
	if (r->r_idle_on)
		loop_timer_arm(&r->r_idle, &p->p_idle);
	if (p->p_stall.t_armed)
		loop_timer_arm(&r->r_stall, &p->p_stall);
}

static int
relay_dir_blocked(const struct relay_dir *d)
{
	return d->d_spill != NULL || (d->d_mode == DIR_SPLICE && d->d_wblk);
}

/* A direction's blocked state may have changed: the stall timer runs while
 * any direction of the pair is blocked, from the moment the first one
 * blocked or from the last byte delivered, whichever is later. */
/* Bytes dst's kernel still holds unsent or unacknowledged (SIOCOUTQ). */
static int
relay_outq(const struct relay_dir *d)
{
	int q = -1;

	if (ioctl(d->d_dst, SIOCOUTQ, &q) == -1)
		q = -1;
	return q;
}

static void
relay_stall_update(struct relay_pair *p)
{
	struct relay *r = p->p_relay;
	int blocked = relay_dir_blocked(&p->p_dir[0]) || relay_dir_blocked(&p->p_dir[1]);

	if (!r->r_stall_on || p->p_closing)
		return;
	if (blocked && !p->p_stall.t_armed) {
		p->p_dir[0].d_outq = relay_outq(&p->p_dir[0]);
		p->p_dir[1].d_outq = relay_outq(&p->p_dir[1]);
		loop_timer_arm(&r->r_stall, &p->p_stall);
	} else if (!blocked && p->p_stall.t_armed)
		loop_timer_disarm(&r->r_stall, &p->p_stall);
}

static void
relay_spill_free(struct relay_dir *d)
{
	struct relay *r = d->d_pair->p_relay;

	if (d->d_spill == NULL)
		return;
	r->r_spill_bytes -= d->d_spill_len;
	r->r_blocked--;
	free(d->d_spill);
	d->d_spill = NULL;
	d->d_spill_len = d->d_spill_off = 0;
}

static int
relay_pair_busy(struct relay_pair *p)
{
	for (int i = 0; i < 2; i++) {
		struct relay_dir *d = &p->p_dir[i];

		if (d->d_recv.lo_busy || d->d_send.lo_busy || d->d_rpoll.lo_busy ||
		    d->d_wpoll.lo_busy || d->d_yield.lo_busy)
			return 1;
	}
	return 0;
}

static void
relay_report_fill(struct relay_pair *p, struct relay_report *rep)
{
	memset(rep, 0, sizeof(*rep));
	rep->bytes_ab = p->p_dir[0].d_bytes;
	rep->bytes_ba = p->p_dir[1].d_bytes;
	rep->duration = p->p_end - p->p_start;
	rep->reason = p->p_reason;
	rep->error = p->p_error;
	rep->spliced = p->p_dir[0].d_spliced + p->p_dir[1].d_spliced;
	switch (p->p_reason) {
	case RELAY_EOF:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "eof");
		break;
	case RELAY_IDLE:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "idle");
		break;
	case RELAY_RESET:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "reset by %s",
		    p->p_name[p->p_err_sock]);
		break;
	case RELAY_ERROR:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "error on %s: %s",
		    p->p_name[p->p_err_sock], strerror(p->p_error));
		break;
	case RELAY_CLOSED:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "closed");
		break;
	case RELAY_SHUTDOWN:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "shutdown");
		break;
	case RELAY_STALL:
		snprintf(rep->reason_str, sizeof(rep->reason_str), "stalled: %s not reading",
		    p->p_name[p->p_err_sock]);
		break;
	}
}

/* Release what the pair holds and close its sockets (no callback). */
static void
relay_pair_release(struct relay_pair *p, int rst_sock)
{
	struct relay *r = p->p_relay;
	struct linger lg = { 1, 0 };

	for (int i = 0; i < 2; i++) {
		struct relay_dir *d = &p->p_dir[i];

		if (d->d_waitbuf) {
			TAILQ_REMOVE(&r->r_waitbuf, d, d_wait_entry);
			d->d_waitbuf = 0;
		}
		if (d->d_bid >= 0) {
			relay_buf_put(r, d->d_bid);
			d->d_bid = -1;
		}
		relay_spill_free(d);
		if (d->d_mode == DIR_SPLICE && d->d_wblk)
			r->r_blocked--;
		if (d->d_pipe[0] != -1)
			pipepool_put(r->r_pipes, d->d_pipe, d->d_inpipe == 0);
		if (d->d_mode == DIR_SPLICE)
			r->r_spliced--;
		d->d_mode = DIR_DONE;
	}
	if (r->r_idle_on)
		loop_timer_disarm(&r->r_idle, &p->p_idle);
	if (r->r_stall_on)
		loop_timer_disarm(&r->r_stall, &p->p_stall);
	for (int i = 0; i < 2; i++) {
		/* The other socket reset or failed: abort this one too (RST), so
		 * its peer does not take the cut for a clean end of stream. */
		if (i == rst_sock)
			setsockopt(p->p_fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		loop_close(r->r_loop, p->p_fd[i]);
	}
	TAILQ_REMOVE(&r->r_pairs, p, p_entry);
	r->r_active--;
	metric_dec(&m_pairs_active);
}

static void
relay_pair_maybe_free(struct relay_pair *p)
{
	struct relay_report rep;
	int rst_sock = -1;

	if (!p->p_closing || relay_pair_busy(p))
		return;
	if (p->p_reason == RELAY_RESET || p->p_reason == RELAY_ERROR)
		rst_sock = 1 - p->p_err_sock;
	else if (p->p_reason == RELAY_STALL)
		rst_sock = p->p_err_sock;	/* drop what it never read */
	relay_pair_release(p, rst_sock);
	metric_inc(&m_ends, relay_reason_label(p->p_reason));
	metric_observe(&m_duration, p->p_end - p->p_start);
	relay_report_fill(p, &rep);
	if (p->p_done)
		p->p_done(&rep, p->p_arg);
	free(p);
}

/* sock: the socket that failed (0 a, 1 b), -1 when none. */
static void
relay_pair_end(struct relay_pair *p, enum relay_reason reason, int error, int sock)
{
	struct relay *r = p->p_relay;

	if (p->p_closing)
		return;
	p->p_closing = 1;
	p->p_reason = reason;
	p->p_error = error;
	p->p_err_sock = sock < 0 ? 0 : sock;
	p->p_end = now_mono();
	/* Closing pairs go to the tail: relay_close_all() walks the head. */
	TAILQ_REMOVE(&r->r_pairs, p, p_entry);
	TAILQ_INSERT_TAIL(&r->r_pairs, p, p_entry);
	for (int i = 0; i < 2; i++) {
		struct relay_dir *d = &p->p_dir[i];

		if (d->d_waitbuf) {
			TAILQ_REMOVE(&r->r_waitbuf, d, d_wait_entry);
			d->d_waitbuf = 0;
		}
		loop_cancel(r->r_loop, &d->d_recv);
		loop_cancel(r->r_loop, &d->d_send);
		loop_cancel(r->r_loop, &d->d_rpoll);
		loop_cancel(r->r_loop, &d->d_wpoll);
		loop_cancel(r->r_loop, &d->d_yield);
	}
	relay_pair_maybe_free(p);
}

static void
relay_fail(struct relay_pair *p, int sock, int err)
{
	if (err == ECONNRESET || err == EPIPE)
		relay_pair_end(p, RELAY_RESET, err, sock);
	else
		relay_pair_end(p, RELAY_ERROR, err, sock);
}

/* Source at EOF and all forwarded: pass the half-close on. */
static void
relay_dir_done(struct relay_dir *d)
{
	struct relay_pair *p = d->d_pair;
	struct relay *r = p->p_relay;

	if (d->d_mode == DIR_SPLICE) {
		r->r_spliced--;
		if (d->d_wblk)
			r->r_blocked--;
		d->d_wblk = 0;
		loop_cancel(r->r_loop, &d->d_rpoll);
		loop_cancel(r->r_loop, &d->d_wpoll);
		loop_cancel(r->r_loop, &d->d_yield);
	}
	d->d_mode = DIR_DONE;
	/* ENOTCONN: the peer is fully gone; the other direction will say so. */
	shutdown(d->d_dst, SHUT_WR);
	if (p->p_dir[1 - d->d_idx].d_mode == DIR_DONE)
		relay_pair_end(p, RELAY_EOF, 0, -1);
}

/* --- COPY engine --------------------------------------------------------- */

static void
relay_recv(struct relay_dir *d)
{
	struct relay *r = d->d_pair->p_relay;

	loop_recv(r->r_loop, &d->d_recv, d->d_src, NULL, r->r_set.buf_size, r->r_bgid);
}

static void
relay_recv_cb(struct loop_op *op, int res, unsigned flags)
{
	struct relay_dir *d = LOOP_CONTAINER_OF(op, struct relay_dir, d_recv);
	struct relay_pair *p = d->d_pair;
	struct relay *r = p->p_relay;
	int bid = -1;

	if (flags & IORING_CQE_F_BUFFER) {
		bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
		r->r_bufs_out++;
		if (res <= 0 || p->p_closing) {
			relay_buf_put(r, bid);
			bid = -1;
		}
	}
	if (p->p_closing) {
		relay_pair_maybe_free(p);
		return;
	}
	if (res > 0 && bid < 0) {
		relay_fail(p, d->d_idx, EIO);	/* data without a buffer: kernel bug */
		return;
	}
	if (res > 0) {
		d->d_bid = bid;
		d->d_len = (uint32_t)res;
		d->d_off = 0;
		loop_send_nowait(r->r_loop, &d->d_send, d->d_dst, relay_buf(r, bid), d->d_len);
		return;
	}
	if (res == 0) {
		d->d_eof = 1;
		relay_dir_done(d);
		return;
	}
	switch (-res) {
	case ENOBUFS:
		r->r_enobufs++;
		/* Buffers came back earlier in this batch: retry now, else park
		 * until one does (a buffer out is always on its way back). */
		if (r->r_bufs_out < r->r_set.buf_count) {
			relay_recv(d);
		} else {
			TAILQ_INSERT_TAIL(&r->r_waitbuf, d, d_wait_entry);
			d->d_waitbuf = 1;
		}
		break;
	case EINTR:
	case EAGAIN:
		relay_recv(d);
		break;
	default:
		relay_fail(p, d->d_idx, -res);
		break;
	}
}

/* dst took only part of a shared buffer (or nothing, -EAGAIN): keep the
 * rest with the direction and give the buffer back, then wait for dst. */
static void
relay_spill(struct relay_dir *d)
{
	struct relay_pair *p = d->d_pair;
	struct relay *r = p->p_relay;
	size_t rest = d->d_len - d->d_off;

	if ((d->d_spill = malloc(rest)) == NULL) {
		relay_fail(p, d->d_idx, ENOMEM);
		return;
	}
	memcpy(d->d_spill, relay_buf(r, d->d_bid) + d->d_off, rest);
	d->d_spill_len = (uint32_t)rest;
	d->d_spill_off = 0;
	r->r_spill_bytes += rest;
	r->r_spills++;
	r->r_blocked++;
	relay_buf_put(r, d->d_bid);
	d->d_bid = -1;
	relay_stall_update(p);
	/* A waiting send: the kernel polls dst and sends when it drains; all
	 * it holds meanwhile is the pair's own spill. */
	loop_send(r->r_loop, &d->d_send, d->d_dst, d->d_spill, rest);
}

static void
relay_send_cb(struct loop_op *op, int res, unsigned flags)
{
	struct relay_dir *d = LOOP_CONTAINER_OF(op, struct relay_dir, d_send);
	struct relay_pair *p = d->d_pair;
	struct relay *r = p->p_relay;
	uint32_t *off = d->d_spill ? &d->d_spill_off : &d->d_off;
	uint32_t len = d->d_spill ? d->d_spill_len : d->d_len;

	if (p->p_closing) {
		relay_pair_maybe_free(p);
		return;
	}
	if (res > 0) {
		*off += (uint32_t)res;
		relay_delivered(d, 0, (uint64_t)res);
		relay_touch(p);
	}
	if (res == -EINTR || res == -EAGAIN || (res > 0 && *off < len)) {
		if (d->d_spill == NULL) {
			relay_spill(d);
			return;
		}
		/* Short send of the spill (MSG_WAITALL gave up on a signal). */
		loop_send(r->r_loop, &d->d_send, d->d_dst, d->d_spill + d->d_spill_off,
		    d->d_spill_len - d->d_spill_off);
		return;
	}
	if (res <= 0) {
		relay_fail(p, 1 - d->d_idx, res == 0 ? EPIPE : -res);
		return;
	}
	if (d->d_spill != NULL) {
		relay_spill_free(d);
		relay_stall_update(p);
	} else {
		relay_buf_put(r, d->d_bid);
		d->d_bid = -1;
	}
	relay_dir_next(d);
}

/* --- SPLICE engine ------------------------------------------------------- */

static int
relay_pipe_get(struct relay_dir *d)
{
	struct relay *r = d->d_pair->p_relay;

	if (pipepool_get(r->r_pipes, d->d_pipe, &d->d_cap) == 0) {
		d->d_inpipe = 0;
		d->d_wblk = 0;
		return 0;
	}
	d->d_pipe[0] = d->d_pipe[1] = -1;
	if (errno == EPERM) {
		/* Per-user pipe budget exhausted: a default-size pipe would
		 * cost more CPU per byte than copying; stay on COPY. */
		if (!r->r_budget_logged)	/* once: it lasts until pipes free up */
			log_warnx("relay: pipe budget exhausted (F_SETPIPE_SZ: EPERM, "
			    "fs.pipe-user-pages-soft): directions stay on recv/send");
		r->r_budget_logged = 1;
		d->d_nosplice = 1;
	} else if (errno != EAGAIN) {
		log_debug("relay: pipe: %s", strerror(errno));
	}
	return -1;
}

static int
relay_splice_start(struct relay_dir *d)
{
	struct relay *r = d->d_pair->p_relay;

	if (relay_pipe_get(d) == -1)
		return -1;
	d->d_mode = DIR_SPLICE;
	d->d_spliced = 1;
	r->r_spliced++;
	loop_poll(r->r_loop, &d->d_rpoll, d->d_src, POLLIN | POLLRDHUP, 1);
	relay_pump(d);
	return 0;
}

/* Pipe pool ran dry while the direction was idle: back to COPY. */
static void
relay_splice_stop(struct relay_dir *d)
{
	struct relay *r = d->d_pair->p_relay;

	if (d->d_wblk)
		r->r_blocked--;
	d->d_wblk = 0;
	d->d_mode = DIR_COPY;
	r->r_spliced--;
	loop_cancel(r->r_loop, &d->d_rpoll);
	loop_cancel(r->r_loop, &d->d_wpoll);
	loop_cancel(r->r_loop, &d->d_yield);
	relay_recv(d);
}

static void
relay_pump(struct relay_dir *d)
{
	struct relay_pair *p = d->d_pair;
	struct relay *r = p->p_relay;
	ssize_t n;
	int progress, rounds = 0, moved = 0;

	if (d->d_mode != DIR_SPLICE || p->p_closing)
		return;
	if (d->d_pipe[0] == -1 && relay_pipe_get(d) == -1) {
		relay_splice_stop(d);
		return;
	}
	do {
		progress = 0;
		if (!d->d_eof && d->d_inpipe < d->d_cap) {
			n = splice(d->d_src, NULL, d->d_pipe[1], NULL, d->d_cap - d->d_inpipe,
			    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->d_inpipe += (size_t)n;
				progress = 1;
			} else if (n == 0) {
				d->d_eof = 1;
				progress = 1;
			} else if (errno == EINTR) {
				progress = 1;
			} else if (errno != EAGAIN) {
				relay_fail(p, d->d_idx, errno);
				return;
			}
			/* EAGAIN means "socket empty" or "pipe full": a pipe
			 * slot holds one skb fragment, so it can run out of
			 * slots below d_cap bytes.  Both look the same; if the
			 * pipe holds data the write half below drains it and
			 * the next round asks the socket again, and if it was
			 * empty the multishot POLLIN reports the next arrival. */
		}
		if (d->d_inpipe > 0 && !d->d_wblk) {
			n = splice(d->d_pipe[0], NULL, d->d_dst, NULL, d->d_inpipe,
			    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->d_inpipe -= (size_t)n;
				relay_delivered(d, 1, (uint64_t)n);
				moved = progress = 1;
			} else if (n < 0 && errno == EAGAIN) {
				/* dst send buffer full: wait for POLLOUT. */
				if (!d->d_wblk)
					r->r_blocked++;
				d->d_wblk = 1;
				if (!d->d_wpoll.lo_busy)
					loop_poll(r->r_loop, &d->d_wpoll, d->d_dst, POLLOUT, 0);
			} else if (n < 0 && errno == EINTR) {
				progress = 1;
			} else {
				relay_fail(p, 1 - d->d_idx, n == 0 ? EPIPE : errno);
				return;
			}
		}
	} while (progress && ++rounds < RELAY_PUMP_ROUNDS);
	if (moved)
		relay_touch(p);
	relay_stall_update(p);
	if (progress && !d->d_wblk) {
		/* Budget used up with data still flowing: yield to other pairs
		 * and come back next iteration.  Not a POLLIN: the source may
		 * have gone quiet with bytes still in the pipe, and the
		 * multishot POLLIN is edge-triggered and would stay quiet too. */
		if (!d->d_yield.lo_busy)
			loop_nop(r->r_loop, &d->d_yield);
		return;
	}
	if (d->d_inpipe == 0) {
		/* Empty pipe, drained source: hand the pipe back, so an idle
		 * direction holds none. */
		pipepool_put(r->r_pipes, d->d_pipe, 1);
		if (d->d_wblk)
			r->r_blocked--;
		d->d_wblk = 0;
		if (d->d_eof)
			relay_dir_done(d);
	}
}

static void
relay_rpoll_cb(struct loop_op *op, int res, unsigned flags)
{
	struct relay_dir *d = LOOP_CONTAINER_OF(op, struct relay_dir, d_rpoll);
	struct relay_pair *p = d->d_pair;
	struct relay *r = p->p_relay;

	if (p->p_closing) {
		relay_pair_maybe_free(p);
		return;
	}
	if (d->d_mode != DIR_SPLICE)
		return;		/* late event after DONE or back to COPY */
	if (res < 0 && res != -ECANCELED) {
		relay_fail(p, d->d_idx, -res);
		return;
	}
	/* The multishot poll ended (CQ overflow, ...): arm it again. */
	if (!(flags & IORING_CQE_F_MORE))
		loop_poll(r->r_loop, &d->d_rpoll, d->d_src, POLLIN | POLLRDHUP, 1);
	relay_pump(d);
}

/* dst writable again (d_wpoll) or our turn again after a yield (d_yield). */
static void
relay_resume(struct relay_dir *d, int writable)
{
	struct relay_pair *p = d->d_pair;

	if (p->p_closing) {
		relay_pair_maybe_free(p);
		return;
	}
	if (d->d_mode != DIR_SPLICE)
		return;
	if (writable && d->d_wblk) {
		d->d_wblk = 0;
		p->p_relay->r_blocked--;
	}
	relay_pump(d);
}

static void
relay_wpoll_cb(struct loop_op *op, int res, unsigned flags)
{
	relay_resume(LOOP_CONTAINER_OF(op, struct relay_dir, d_wpoll), 1);
}

static void
relay_yield_cb(struct loop_op *op, int res, unsigned flags)
{
	relay_resume(LOOP_CONTAINER_OF(op, struct relay_dir, d_yield), 0);
}

/* Quiescent COPY direction (no buffer held, no RECV pending): go on. */
static void
relay_dir_next(struct relay_dir *d)
{
	struct relay *r = d->d_pair->p_relay;

	if (r->r_set.splice_threshold != SIZE_MAX && d->d_bytes >= r->r_set.splice_threshold &&
	    !d->d_nosplice && !d->d_rpoll.lo_busy && !d->d_wpoll.lo_busy &&
	    !d->d_yield.lo_busy &&
	    relay_splice_start(d) == 0)
		return;
	relay_recv(d);
}

/* --- public -------------------------------------------------------------- */

static void
relay_idle_expire(struct loop_timer *t, void *arg)
{
	struct relay_pair *p = LOOP_CONTAINER_OF(t, struct relay_pair, p_idle);

	relay_pair_end(p, RELAY_IDLE, 0, -1);
}

static void
relay_stall_expire(struct loop_timer *t, void *arg)
{
	struct relay_pair *p = LOOP_CONTAINER_OF(t, struct relay_pair, p_stall);
	struct relay *r = p->p_relay;
	int sock = -1, moved = 0;

	/* No byte handed to a blocked dst for stall_timeout.  A receiver
	 * that reads slowly may still be taking bytes out of the socket's
	 * queue (the kernel wakes a waiting sender only once half of the
	 * queue is free): a queue that changed is progress, not a stall. */
	for (int i = 0; i < 2; i++) {
		struct relay_dir *d = &p->p_dir[i];
		int q;

		if (!relay_dir_blocked(d))
			continue;
		if ((q = relay_outq(d)) != d->d_outq)
			moved = 1;
		d->d_outq = q;
		sock = 1 - i;	/* the socket that stopped reading: its dst */
	}
	if (moved || sock < 0) {
		loop_timer_arm(&r->r_stall, &p->p_stall);
		return;
	}
	r->r_stalls++;
	relay_pair_end(p, RELAY_STALL, 0, sock);
}

struct relay *
relay_new(struct loop *loop, const struct relay_settings *s)
{
	struct relay_settings def;
	struct io_uring_buf_reg reg;
	struct relay *r;
	size_t rsz;
	int ret;

	if (s == NULL) {
		relay_settings_default(&def);
		s = &def;
	}
	if (s->buf_count == 0 || s->buf_count > 32768 || (s->buf_count & (s->buf_count - 1)) ||
	    s->buf_size == 0 || s->buf_size > (1U << 30) || s->idle_timeout < 0 ||
	    s->stall_timeout < 0) {
		errno = EINVAL;
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->r_loop = loop;
	r->r_set = *s;
	r->r_bmask = (unsigned)io_uring_buf_ring_mask(s->buf_count);
	TAILQ_INIT(&r->r_waitbuf);
	TAILQ_INIT(&r->r_pairs);
	/* liburing 2.3 has no io_uring_setup_buf_ring(): map the ring here. */
	rsz = (s->buf_count * sizeof(struct io_uring_buf) + 4095) & ~(size_t)4095;
	if (posix_memalign((void **)&r->r_br, 4096, rsz) != 0)
		goto fail;
	memset(r->r_br, 0, rsz);
	if (posix_memalign((void **)&r->r_bufs, 4096, s->buf_count * s->buf_size) != 0)
		goto fail;
	r->r_bgid = (int)loop_alloc_bgid(loop);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->r_br;
	reg.ring_entries = s->buf_count;
	reg.bgid = (uint16_t)r->r_bgid;
	if ((ret = io_uring_register_buf_ring(loop_ring(loop), &reg, 0)) != 0) {
		errno = -ret;
		goto fail;
	}
	io_uring_buf_ring_init(r->r_br);
	for (unsigned i = 0; i < s->buf_count; i++)
		io_uring_buf_ring_add(r->r_br, relay_buf(r, (int)i), (unsigned)s->buf_size,
		    (unsigned short)i, r->r_bmask, (int)i);
	io_uring_buf_ring_advance(r->r_br, (int)s->buf_count);
	if ((r->r_pipes = pipepool_new(s->max_pipes, s->pipe_size)) == NULL) {
		io_uring_unregister_buf_ring(loop_ring(loop), r->r_bgid);
		goto fail;
	}
	if (s->idle_timeout > 0) {
		uint64_t ms = (uint64_t)(s->idle_timeout * 1000.0);

		loop_timer_list_init(loop, &r->r_idle, ms ? ms : 1, relay_idle_expire, r);
		r->r_idle_on = 1;
	}
	if (s->stall_timeout > 0) {
		uint64_t ms = (uint64_t)(s->stall_timeout * 1000.0);

		loop_timer_list_init(loop, &r->r_stall, ms ? ms : 1, relay_stall_expire, r);
		r->r_stall_on = 1;
	}
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < 2; k++)
			r->r_mbytes[i][k] = metric_series(&m_bytes, METRIC_VALUES_(
			    i == 0 ? "up" : "down", k ? "splice" : "copy"));
	/* splice(2) to a socket cannot pass MSG_NOSIGNAL. */
	signal(SIGPIPE, SIG_IGN);
	return r;
fail:
	free(r->r_bufs);
	free(r->r_br);
	free(r);
	return NULL;
}

void
relay_free(struct relay *r)
{
	struct relay_pair *p;

	if (r == NULL)
		return;
	while ((p = TAILQ_FIRST(&r->r_pairs)) != NULL) {
		relay_pair_release(p, -1);
		free(p);
	}
	if (r->r_idle_on)
		loop_timer_list_done(&r->r_idle);
	if (r->r_stall_on)
		loop_timer_list_done(&r->r_stall);
	io_uring_unregister_buf_ring(loop_ring(r->r_loop), r->r_bgid);
	pipepool_free(r->r_pipes);
	free(r->r_bufs);
	free(r->r_br);
	free(r);
}

struct relay_pair *
relay_join(struct relay *r, int fd_a, int fd_b, const char *name_a, const char *name_b,
    relay_done_cb done, void *arg)
{
	struct relay_pair *p;

	if ((p = calloc(1, sizeof(*p))) == NULL) {
		close(fd_a);
		close(fd_b);
		return NULL;
	}
	p->p_relay = r;
	p->p_fd[0] = fd_a;
	p->p_fd[1] = fd_b;
	p->p_name[0] = name_a ? name_a : "a";
	p->p_name[1] = name_b ? name_b : "b";
	p->p_done = done;
	p->p_arg = arg;
	p->p_start = now_mono();
	for (int i = 0; i < 2; i++) {
		struct relay_dir *d = &p->p_dir[i];

		d->d_pair = p;
		d->d_idx = i;
		d->d_src = p->p_fd[i];
		d->d_dst = p->p_fd[1 - i];
		d->d_mode = DIR_COPY;
		d->d_bid = -1;
		d->d_pipe[0] = d->d_pipe[1] = -1;
		loop_op_init(&d->d_recv, relay_recv_cb);
		loop_op_init(&d->d_send, relay_send_cb);
		loop_op_init(&d->d_rpoll, relay_rpoll_cb);
		loop_op_init(&d->d_wpoll, relay_wpoll_cb);
		loop_op_init(&d->d_yield, relay_yield_cb);
	}
	TAILQ_INSERT_HEAD(&r->r_pairs, p, p_entry);
	r->r_active++;
	r->r_total++;
	metric_inc(&m_pairs_active);
	metric_inc(&m_pairs);
	if (r->r_idle_on) {
		p->p_touch_tick = loop_tick(r->r_loop);
		loop_timer_arm(&r->r_idle, &p->p_idle);
	}
	relay_dir_next(&p->p_dir[0]);
	relay_dir_next(&p->p_dir[1]);
	return p;
}

void
relay_pair_close(struct relay_pair *p)
{
	relay_pair_end(p, RELAY_CLOSED, 0, -1);
}

void
relay_close_all(struct relay *r)
{
	struct relay_pair *p;

	/* relay_pair_end() moves each pair to the tail (or frees it). */
	while ((p = TAILQ_FIRST(&r->r_pairs)) != NULL && !p->p_closing)
		relay_pair_end(p, RELAY_SHUTDOWN, 0, -1);
}

void
relay_stats(struct relay *r, struct relay_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->pairs_active = r->r_active;
	st->pairs_total = r->r_total;
	pipepool_stats(r->r_pipes, &st->pipes_pooled, &st->pipes_in_use);
	st->bufs_in_use = r->r_bufs_out;
	st->dirs_spliced = r->r_spliced;
	st->bytes_ab = r->r_bytes[0];
	st->bytes_ba = r->r_bytes[1];
	st->enobufs = r->r_enobufs;
	st->dirs_blocked = r->r_blocked;
	st->spill_bytes = r->r_spill_bytes;
	st->spills = r->r_spills;
	st->stalls = r->r_stalls;
}
