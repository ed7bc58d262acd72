/* relay.h - join two connected TCP sockets and move bytes both ways.
 *
 * Engines, per direction (a->b and b->a are independent):
 *   COPY    io_uring single-shot RECV with IOSQE_BUFFER_SELECT from a shared
 *           provided-buffer ring, then SEND of that buffer, then the next
 *           RECV.  The kernel picks a buffer only when data has arrived, so a
 *           waiting RECV holds none: an idle direction costs no memory.
 *           The SEND does not wait (MSG_DONTWAIT): what dst has no room for
 *           is copied to a spill buffer of the direction's own and sent by
 *           a waiting SEND, so a shared buffer is never held across a
 *           blocked send and a receiver that stops reading stalls only its
 *           own pair.  When the ring is empty (-ENOBUFS) the direction
 *           waits in a FIFO and its RECV is re-issued when a buffer comes
 *           back, at the latest one loop iteration later (no poll spin).
 *           Every connection starts here: short flows are cheapest this way
 *           (batched, no syscall per op; research: 63 us per connection).
 *   SPLICE  after a direction has carried splice_threshold bytes it moves to
 *           inline non-blocking splice(2) socket -> pipe -> socket, driven by
 *           an io_uring multishot POLL_ADD (edge-triggered, so each event
 *           drains to EAGAIN).  Pipes come from a bounded pool (max_pipes,
 *           pipe_size via F_SETPIPE_SZ); a pipe is held only while it has
 *           bytes in flight and goes back to the pool when the source is
 *           drained, so an idle spliced direction holds no pipe either.  Pool
 *           exhausted: the direction carries on with COPY and retries later;
 *           F_SETPIPE_SZ refused (EPERM, per-user pipe budget): COPY for good.
 *           IORING_OP_SPLICE is never used: the kernel forces it onto io-wq
 *           threads (two kernel threads per connection, see kernel-notes.md).
 *
 * Lifetime of a pair: both directions run until each has seen EOF from its
 * source and drained (then shutdown(dst, SHUT_WR): half-close propagates and
 * the other direction keeps going), or until an error (ECONNRESET, EPIPE),
 * the idle timeout, the stall timeout, relay_pair_close() or relay_close_all().  Then pending
 * requests are cancelled; once the last completion is in, both sockets are
 * closed (with an RST on the surviving side when the other one reset), the
 * pipes are pooled or closed, and done(report, arg) is called once.  The pair
 * pointer is invalid after that.
 *
 * The process must ignore SIGPIPE: splice(2) to a socket cannot pass
 * MSG_NOSIGNAL.  relay_new() sets SIGPIPE to SIG_IGN.
 *
 * Threads: everything here runs on the loop's thread (see loop.h); use
 * loop_post() from other threads. */
#ifndef HP_RELAY_H
#define HP_RELAY_H

#include <stddef.h>
#include <stdint.h>

struct loop;
struct relay;
struct relay_pair;

struct relay_settings {
	size_t		 splice_threshold;	/* bytes per direction before splice
						 * (default 256 KiB; 0: splice from
						 * the start; SIZE_MAX: never) */
	size_t		 pipe_size;		/* F_SETPIPE_SZ (default 1 MiB) */
	unsigned	 max_pipes;		/* pipes existing at once (1024) */
	size_t		 buf_size;		/* COPY buffer size (64 KiB) */
	unsigned	 buf_count;		/* COPY buffers, power of two (256) */
	double		 idle_timeout;		/* seconds without a byte delivered
						 * in either direction (3600; 0:
						 * never) */
	double		 stall_timeout;		/* seconds a direction may hold
						 * bytes its destination does not
						 * take, with no byte delivered
						 * either way (60; 0: never) */
};

void	 relay_settings_default(struct relay_settings *s);

enum relay_reason {
	RELAY_EOF,		/* both directions finished: "eof" */
	RELAY_IDLE,		/* idle_timeout: "idle" */
	RELAY_RESET,		/* peer reset: "reset by <side>" */
	RELAY_ERROR,		/* other socket error: "error on <side>: <strerror>" */
	RELAY_CLOSED,		/* relay_pair_close(): "closed" */
	RELAY_SHUTDOWN,		/* relay_close_all(): "shutdown" */
	RELAY_STALL,		/* stall_timeout: "stalled: <side> not reading" */
};

struct relay_report {
	uint64_t		 bytes_ab;	/* forwarded a -> b */
	uint64_t		 bytes_ba;	/* forwarded b -> a */
	double			 duration;	/* seconds from join to end */
	enum relay_reason	 reason;
	int			 error;		/* errno for RESET/ERROR, else 0 */
	char			 reason_str[64];	/* "eof", "reset by client", ... */
	int			 spliced;	/* directions that used splice (0..2) */
};

typedef void (*relay_done_cb)(const struct relay_report *, void *arg);

struct relay_stats {
	unsigned	 pairs_active;
	uint64_t	 pairs_total;
	unsigned	 pipes_pooled;
	unsigned	 pipes_in_use;
	unsigned	 bufs_in_use;		/* COPY buffers held right now */
	unsigned	 dirs_spliced;		/* directions in SPLICE mode now */
	uint64_t	 bytes_ab;		/* totals, ended and live pairs */
	uint64_t	 bytes_ba;
	uint64_t	 enobufs;		/* times a RECV found the ring empty */
	unsigned	 dirs_blocked;		/* directions whose dst is full now */
	uint64_t	 spill_bytes;		/* bytes held in spill buffers now */
	uint64_t	 spills;		/* times a send left a remainder */
	uint64_t	 stalls;		/* pairs ended by stall_timeout */
};

/* Sets up the buffer ring and the pipe pool on loop.  NULL settings:
 * defaults.  Returns NULL with errno set (EINVAL for bad settings). */
struct relay *relay_new(struct loop *loop, const struct relay_settings *s);
/* Closes the sockets of every pair still open without callbacks and frees
 * everything.  Call after loop_run() returned and before loop_free(); the
 * loop must not run again in between (it would deliver completions for the
 * freed pairs).  For a graceful end use relay_close_all() and keep the loop
 * running until relay_stats().pairs_active is 0. */
void	 relay_free(struct relay *r);

/* Join fd_a and fd_b (connected, non-blocking TCP sockets: splice(2)
 * honours only the socket's own O_NONBLOCK, so a blocking one would stall
 * the loop; the relay owns them from now on, also on failure).
 * name_a/name_b label the sides in reason strings ("client", "server"; NULL: "a", "b"); they must
 * outlive the pair (string literals).  Bytes already waiting in either
 * socket (e.g. a peeked ClientHello) are forwarded first.  To send bytes of
 * your own first (the private proxy's token), write them to fd_b before
 * joining.  The caller sets TCP_NODELAY (the relay forwards whole chunks
 * and Nagle would only delay them; accepted sockets inherit it from a
 * listener that has it).  Returns the pair, or NULL (ENOMEM) with both fds
 * closed and no callback. */
struct relay_pair *relay_join(struct relay *r, int fd_a, int fd_b,
	     const char *name_a, const char *name_b, relay_done_cb done, void *arg);
/* End a pair now (reason "closed"); done() follows once the kernel has let
 * go of the sockets, which may be before this returns (nothing in flight). */
void	 relay_pair_close(struct relay_pair *p);
/* End every pair (reason "shutdown"). */
void	 relay_close_all(struct relay *r);
void	 relay_stats(struct relay *r, struct relay_stats *st);

#endif
