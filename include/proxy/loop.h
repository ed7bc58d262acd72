/* loop.h - one io_uring event loop per thread (the data plane's engine).
 *
 * Model
 *   Every request submitted to the ring carries a pointer to a caller-owned
 *   `struct loop_op` in its user_data.  loop_run() reaps completions and calls
 *   op->lo_cb(op, res, cqe_flags) for each one; the owner gets back to its own
 *   object with LOOP_CONTAINER_OF().  A NULL user_data (cancels, link
 *   timeouts) is ignored.  There is no per-request allocation in the loop.
 *
 *   An op carries one request at a time.  lo_busy is set when a request is
 *   queued and cleared just before the callback of its *final* completion
 *   (for multishot requests: the CQE without IORING_CQE_F_MORE), so inside
 *   that callback the op can be reused at once.  Multishot requests (accept,
 *   poll) hold a reference to their file: close() does not end them.  Free an
 *   op's owner only when every op it embeds has !lo_busy: loop_cancel() and
 *   wait for the final callback (res -ECANCELED, or whatever result raced
 *   with the cancel).
 *
 *   Submissions are batched: helpers only fill SQEs; loop_run() submits them
 *   all with a single io_uring_submit_and_wait() per iteration.
 *
 * Threads
 *   The ring is set up with SINGLE_ISSUER|DEFER_TASKRUN when the kernel has
 *   them (6.1), else COOP_TASKRUN, else plain; it starts disabled and is
 *   bound to the thread that first calls loop_run().  Every function here
 *   except loop_post() and loop_stop() must be called from that thread (or,
 *   before the first loop_run(), from the thread that created the loop).
 *   loop_post() hands work to the loop from any thread; loop_stop() is
 *   async-signal-safe.
 *
 * Time
 *   loop_now_ms() is the monotonic clock cached once per iteration.  Timers
 *   are FIFO lists of constant duration (one list per kind of timeout: idle,
 *   hello, token, ...), so arming is an O(1) append and expiry pops from the
 *   head.  Expiry is checked by a 100 ms tick (IORING_OP_TIMEOUT) that only
 *   runs while some timer is armed; a timer fires 0..100 ms late.
 */
#ifndef HP_LOOP_H
#define HP_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <linux/time_types.h>

#define LOOP_TICK_MS	100

#define LOOP_CONTAINER_OF(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct loop;
struct loop_op;

/* res: cqe->res (-errno on failure); flags: cqe->flags (IORING_CQE_F_MORE,
 * IORING_CQE_F_BUFFER | bid << IORING_CQE_BUFFER_SHIFT, ...). */
typedef void (*loop_cb)(struct loop_op *op, int res, unsigned flags);

struct loop_op {
	loop_cb			 lo_cb;
	unsigned		 lo_busy;	/* a request is in flight */
	unsigned		 lo_cancelled;	/* loop_cancel() was called */
	unsigned		 lo_timed;	/* connect with link timeout */
	struct __kernel_timespec lo_ts;		/* timeouts; read at submit */
};

/* Prepare an op once: sets the callback, clears the flags. */
void	 loop_op_init(struct loop_op *op, loop_cb cb);

/* entries: SQ size (power of two, e.g. 4096); the CQ is 4x that.
 * Returns NULL with errno set. */
struct loop *loop_new(unsigned entries);
/* Tear down the ring; requests still in flight are dropped without
 * callbacks, posted work that never ran is dropped too.  Call after
 * loop_run() has returned, from the loop's thread. */
void	 loop_free(struct loop *loop);
/* Run until loop_stop().  Returns 0, or -1 when the ring fails. */
int	 loop_run(struct loop *loop);
/* Make loop_run() return after the current iteration.  Any thread, also a
 * signal handler (an atomic store and an eventfd write). */
void	 loop_stop(struct loop *loop);
/* Run fn(arg) on the loop thread, in order of posting.  Any thread.
 * Returns 0, or -1 (ENOMEM). */
int	 loop_post(struct loop *loop, void (*fn)(void *), void *arg);

uint64_t loop_now_ms(struct loop *loop);
/* Number of ticks so far: a cheap "has 100 ms passed" test. */
uint64_t loop_tick(struct loop *loop);
/* "defer_taskrun", "coop_taskrun" or "plain": the setup that succeeded. */
const char *loop_mode(struct loop *loop);
struct io_uring *loop_ring(struct loop *loop);
/* A fresh provided-buffer group id for io_uring_register_buf_ring. */
unsigned loop_alloc_bgid(struct loop *loop);

/* --- requests (all queued, submitted at the next iteration) --------------- */
/* Single-shot recv into buf; bgid >= 0: buf must be NULL and the kernel picks
 * a buffer of group bgid at completion (IOSQE_BUFFER_SELECT; -ENOBUFS when
 * the group is empty).  A pending recv with bgid holds no buffer. */
void	 loop_recv(struct loop *loop, struct loop_op *op, int fd, void *buf, size_t len,
	     int bgid);
/* send with MSG_NOSIGNAL|MSG_WAITALL; a short result still needs a resend. */
void	 loop_send(struct loop *loop, struct loop_op *op, int fd, const void *buf, size_t len);
/* send with MSG_NOSIGNAL|MSG_DONTWAIT: takes what the socket buffer has room
 * for now and completes at once, with a short count or -EAGAIN; never waits
 * for the peer to read. */
void	 loop_send_nowait(struct loop *loop, struct loop_op *op, int fd, const void *buf,
	     size_t len);
/* Poll for events (POLLIN, POLLOUT, POLLRDHUP...).  io_uring polls are
 * edge-triggered: drain to EAGAIN after each callback.  multishot: stays
 * armed (each callback has IORING_CQE_F_MORE until the final one). */
void	 loop_poll(struct loop *loop, struct loop_op *op, int fd, unsigned events,
	     int multishot);
/* Non-blocking connect on fd (already created) bounded by timeout_ms
 * (0: none).  res: 0, -errno, or -ETIMEDOUT when the timeout fired. */
void	 loop_connect(struct loop *loop, struct loop_op *op, int fd,
	     const struct sockaddr *sa, socklen_t salen, unsigned timeout_ms);
/* Multishot accept (fds come non-blocking, close-on-exec).  Prefer
 * loop_listener below, which handles pause, EMFILE and teardown. */
void	 loop_accept(struct loop *loop, struct loop_op *op, int fd);
/* Completes at once (res 0): a way to yield to other work and come back
 * in the next iteration. */
void	 loop_nop(struct loop *loop, struct loop_op *op);
/* One-shot timer: the callback gets -ETIME when it expires. */
void	 loop_timeout(struct loop *loop, struct loop_op *op, unsigned ms);
/* close(fd) at the next submission, with no callback and no system call of
 * its own (IORING_OP_CLOSE, 5.6; a socket has no ->flush, so the kernel
 * closes it inline, never on an io-wq thread).  Only for descriptors with no
 * request in flight; the number may be reused once the batch is submitted.
 * Before loop_run (ring still disabled) it is a plain close(2); loop_free()
 * submits what is left.  (No ring shutdown: IORING_OP_SHUTDOWN is always
 * handed to an io-wq worker.) */
void	 loop_close(struct loop *loop, int fd);
/* Cancel op's request (no-op when idle).  The final callback still comes
 * (usually -ECANCELED; a request that had already finished reports its real
 * result).  Safe to call more than once. */
void	 loop_cancel(struct loop *loop, struct loop_op *op);

/* --- timer lists ------------------------------------------------------------
 * A list holds timers of one constant duration in deadline order.
 * loop_timer_arm() (re)starts a timer: deadline = now + duration, O(1).
 * On expiry the timer is disarmed, then expire(timer, arg) runs; it may
 * re-arm or free the timer.  Disarm before freeing a timer. */
struct loop_timer {
	TAILQ_ENTRY(loop_timer)	 t_entry;
	uint64_t		 t_deadline;	/* ms, loop clock */
	int			 t_armed;
};

struct loop_timer_list {
	TAILQ_HEAD(, loop_timer)	 tl_head;
	TAILQ_ENTRY(loop_timer_list)	 tl_entry;
	struct loop			*tl_loop;
	uint64_t			 tl_ms;
	void				(*tl_expire)(struct loop_timer *, void *);
	void				*tl_arg;
};

void	 loop_timer_list_init(struct loop *loop, struct loop_timer_list *tl, uint64_t ms,
	     void (*expire)(struct loop_timer *, void *), void *arg);
/* Disarms every timer of the list (no callbacks) and detaches it. */
void	 loop_timer_list_done(struct loop_timer_list *tl);
void	 loop_timer_arm(struct loop_timer_list *tl, struct loop_timer *t);
void	 loop_timer_disarm(struct loop_timer_list *tl, struct loop_timer *t);

/* --- listeners ---------------------------------------------------------------
 * A multishot accept on a listening socket.  cb(l, fd) gets each accepted
 * connection (non-blocking, close-on-exec; use getpeername() for the peer).
 * On EMFILE/ENFILE accepting pauses for LOOP_ACCEPT_BACKOFF_MS instead of
 * spinning, and the loop's reserve descriptor is released so connections
 * already accepted can still open their upstream socket.
 * States: RUNNING (accept armed), PAUSED (by the owner, e.g. max_connections),
 * BACKOFF (fd exhaustion, resumes by itself), STOPPING (cancel in flight),
 * CLOSED (final completion seen, fd closed, closed_cb called). */
#define LOOP_ACCEPT_BACKOFF_MS	100

enum loop_listener_state {
	LL_RUNNING, LL_PAUSED, LL_BACKOFF, LL_STOPPING, LL_CLOSED
};

struct loop_listener {
	struct loop_op		 ll_accept;
	struct loop_op		 ll_backoff;
	struct loop		*ll_loop;
	int			 ll_fd;
	enum loop_listener_state ll_state;
	unsigned		 ll_paused;	/* owner asked for a pause */
	uint64_t		 ll_accepted;
	uint64_t		 ll_emfile;	/* times fd exhaustion paused us */
	void			(*ll_cb)(struct loop_listener *, int fd);
	void			(*ll_closed_cb)(struct loop_listener *);
	void			*ll_arg;
};

/* Starts accepting on fd (a listening socket; the listener owns it). */
void	 loop_listener_start(struct loop *loop, struct loop_listener *l, int fd,
	     void (*cb)(struct loop_listener *, int), void *arg);
/* Stop/restart accepting; connections wait in the backlog meanwhile.  A
 * connection accepted just before the cancel took effect is still passed to
 * cb. */
void	 loop_listener_pause(struct loop_listener *l);
void	 loop_listener_resume(struct loop_listener *l);
/* Cancel and close the fd once the kernel has let go of it, then
 * closed_cb(l) (may be NULL); free l only after that. */
void	 loop_listener_stop(struct loop_listener *l, void (*closed_cb)(struct loop_listener *));

#endif
