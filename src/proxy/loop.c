/* loop.c - io_uring event loop: dispatch, timers, cross-thread posts,
 * listeners.  See loop.h for the model. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "postq.h"
#include "util.h"

/* Valgrind 3.19 runs io_uring_enter holding its big lock with every signal
 * blocked (the call is not marked as blocking), so a process waiting in it
 * never gets SIGTERM and its other threads never run.  Under valgrind only,
 * the loop waits in poll(2) on the ring fd, which valgrind knows blocks, at
 * most a slice at a time; natively RUNNING_ON_VALGRIND is 0. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND	0
#endif
#define LOOP_VALGRIND_SLICE_MS	10

struct loop {
	struct io_uring		 l_ring;
	const char		*l_mode;
	int			 l_disabled;	/* ring still R_DISABLED */
	uint64_t		 l_now;
	uint64_t		 l_tick;
	struct loop_op		 l_tick_op;
	TAILQ_HEAD(, loop_timer_list) l_lists;
	unsigned		 l_armed;	/* timers armed, all lists */
	struct postq		 l_posts;	/* loop_post, loop_stop */
	struct loop_op		 l_ev_op;	/* READ of l_posts.pq_evfd */
	uint64_t		 l_ev_val;
	atomic_int		 l_stop;
	int			 l_reserve_fd;	/* spare fd released on EMFILE */
	unsigned		 l_next_bgid;
};

static void	loop_tick_cb(struct loop_op *, int, unsigned);
static void	loop_ev_cb(struct loop_op *, int, unsigned);
static void	loop_arm_tick(struct loop *);
static void	loop_arm_ev(struct loop *);

void
loop_op_init(struct loop_op *op, loop_cb cb)
{
	memset(op, 0, sizeof(*op));
	op->lo_cb = cb;
}

static struct io_uring_sqe *
loop_sqe(struct loop *loop)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&loop->l_ring)) == NULL) {
		/* SQ full: flush it early; completions are reaped in loop_run. */
		if (io_uring_submit(&loop->l_ring) < 0 && loop->l_disabled)
			fatalx("loop: submission queue full before loop_run");
	}
	return sqe;
}

static void
loop_queue(struct loop_op *op, struct io_uring_sqe *sqe)
{
	op->lo_busy = 1;
	op->lo_cancelled = 0;
	op->lo_timed = 0;
	io_uring_sqe_set_data(sqe, op);
}

static int
loop_ring_init(struct loop *loop, unsigned entries)
{
	static const struct { unsigned flags; const char *name; } modes[] = {
		{ IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "defer_taskrun" },
		{ IORING_SETUP_COOP_TASKRUN, "coop_taskrun" },
		{ 0, "plain" },
	};
	struct io_uring_params p;
	int ret = -EINVAL;

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		for (int all = 1; all >= 0; all--) {
			memset(&p, 0, sizeof(p));
			/* R_DISABLED: bind the single issuer to the loop_run thread.
			 * SUBMIT_ALL (5.18) is retried without on older kernels. */
			p.flags = modes[i].flags | IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED |
			    (all ? IORING_SETUP_SUBMIT_ALL : 0);
			p.cq_entries = entries * 4;
			ret = io_uring_queue_init_params(entries, &loop->l_ring, &p);
			if (ret == 0) {
				loop->l_mode = modes[i].name;
				loop->l_disabled = 1;
				return 0;
			}
			if (ret != -EINVAL)
				goto fail;
		}
	}
fail:
	errno = -ret;
	return -1;
}

struct loop *
loop_new(unsigned entries)
{
	struct loop *loop;

	if ((loop = calloc(1, sizeof(*loop))) == NULL)
		return NULL;
	if (loop_ring_init(loop, entries) == -1) {
		free(loop);
		return NULL;
	}
	if (postq_init(&loop->l_posts) == -1) {
		io_uring_queue_exit(&loop->l_ring);
		free(loop);
		return NULL;
	}
	loop->l_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	TAILQ_INIT(&loop->l_lists);
	loop->l_now = now_mono_ms();
	loop_op_init(&loop->l_tick_op, loop_tick_cb);
	loop_op_init(&loop->l_ev_op, loop_ev_cb);
	/* The eventfd is read through the ring: a READ that completes when a
	 * post or a stop bumps the counter. */
	loop_arm_ev(loop);
	return loop;
}

void
loop_free(struct loop *loop)
{
	if (loop == NULL)
		return;
	/* Queued closes run inline at submission. */
	if (!loop->l_disabled)
		io_uring_submit(&loop->l_ring);
	io_uring_queue_exit(&loop->l_ring);
	postq_free(&loop->l_posts);
	if (loop->l_reserve_fd != -1)
		close(loop->l_reserve_fd);
	free(loop);
}

static void
loop_arm_ev(struct loop *loop)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	io_uring_prep_read(sqe, loop->l_posts.pq_evfd, &loop->l_ev_val, sizeof(loop->l_ev_val), 0);
	loop_queue(&loop->l_ev_op, sqe);
}

static void
loop_ev_cb(struct loop_op *op, int res, unsigned flags)
{
	struct loop *loop = LOOP_CONTAINER_OF(op, struct loop, l_ev_op);

	/* Re-arm first: a post racing with the run below then wakes us again. */
	loop_arm_ev(loop);
	if (res < 0 && res != -EAGAIN && res != -EINTR)
		log_warnx("loop: eventfd read: %s", strerror(-res));
	postq_run(&loop->l_posts);
}

int
loop_post(struct loop *loop, void (*fn)(void *), void *arg)
{
	return postq_post(&loop->l_posts, fn, arg);
}

void
loop_stop(struct loop *loop)
{
	/* Signal handler safe: an atomic store and a write(2) (errno kept). */
	atomic_store(&loop->l_stop, 1);
	postq_wake(&loop->l_posts);
}

int
loop_run(struct loop *loop)
{
	struct io_uring_cqe *cqe;
	struct loop_op *op;
	unsigned head, n;
	int ret, res;

	if (loop->l_disabled) {
		/* liburing 2.3 declares io_uring_enable_rings() but does not
		 * export it: use the raw syscall. */
		if (syscall(__NR_io_uring_register, loop->l_ring.ring_fd,
		    IORING_REGISTER_ENABLE_RINGS, NULL, 0) == -1) {
			log_warn("loop: io_uring_enable_rings");
			return -1;
		}
		loop->l_disabled = 0;
	}
	atomic_store(&loop->l_stop, 0);
	while (!atomic_load(&loop->l_stop)) {
		if (RUNNING_ON_VALGRIND) {
			struct __kernel_timespec ts = { 0, 0 };
			struct pollfd pfd = { loop->l_ring.ring_fd, POLLIN, 0 };
			struct io_uring_cqe *first;

			io_uring_submit(&loop->l_ring);
			(void)poll(&pfd, 1, LOOP_VALGRIND_SLICE_MS);
			ret = io_uring_submit_and_wait_timeout(&loop->l_ring, &first, 1, &ts,
			    NULL);
			if (ret == -ETIME)	/* nothing completed in this slice */
				ret = 0;
		} else
			ret = io_uring_submit_and_wait(&loop->l_ring, 1);
		/* EINTR: a signal; EAGAIN/EBUSY: CQ overflow backlog, reap first. */
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			errno = -ret;
			log_warn("loop: io_uring_submit_and_wait");
			return -1;
		}
		loop->l_now = now_mono_ms();
		n = 0;
		io_uring_for_each_cqe(&loop->l_ring, head, cqe) {
			n++;
			if ((op = io_uring_cqe_get_data(cqe)) == NULL)
				continue;
			res = cqe->res;
			if (!(cqe->flags & IORING_CQE_F_MORE))
				op->lo_busy = 0;
			/* A linked timeout cancels the connect: report it as such. */
			if (res == -ECANCELED && op->lo_timed && !op->lo_cancelled)
				res = -ETIMEDOUT;
			op->lo_cb(op, res, cqe->flags);
		}
		io_uring_cq_advance(&loop->l_ring, n);
	}
	/* Hand queued SQEs (cancels, closes' cancels) to the kernel. */
	io_uring_submit(&loop->l_ring);
	return 0;
}

uint64_t
loop_now_ms(struct loop *loop)
{
	return loop->l_now;
}

uint64_t
loop_tick(struct loop *loop)
{
	return loop->l_tick;
}

const char *
loop_mode(struct loop *loop)
{
	return loop->l_mode;
}

struct io_uring *
loop_ring(struct loop *loop)
{
	return &loop->l_ring;
}

unsigned
loop_alloc_bgid(struct loop *loop)
{
	return loop->l_next_bgid++;
}

/* --- requests ------------------------------------------------------------ */

void
loop_recv(struct loop *loop, struct loop_op *op, int fd, void *buf, size_t len, int bgid)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	io_uring_prep_recv(sqe, fd, buf, len, 0);
	if (bgid >= 0) {
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = (uint16_t)bgid;
	}
	loop_queue(op, sqe);
}

void
loop_send(struct loop *loop, struct loop_op *op, int fd, const void *buf, size_t len)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL | MSG_WAITALL);
	loop_queue(op, sqe);
}

void
loop_send_nowait(struct loop *loop, struct loop_op *op, int fd, const void *buf, size_t len)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	/* MSG_DONTWAIT: io_uring answers -EAGAIN (or a short count) instead
	 * of arming its internal poll and holding buf until the peer reads. */
	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	loop_queue(op, sqe);
}

void
loop_poll(struct loop *loop, struct loop_op *op, int fd, unsigned events, int multishot)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	if (multishot)
		io_uring_prep_poll_multishot(sqe, fd, events);
	else
		io_uring_prep_poll_add(sqe, fd, events);
	loop_queue(op, sqe);
}

void
loop_connect(struct loop *loop, struct loop_op *op, int fd, const struct sockaddr *sa,
    socklen_t salen, unsigned timeout_ms)
{
	struct io_uring_sqe *sqe;

	/* A link timeout must directly follow its request: make room for both
	 * now, so no flush can split the pair. */
	if (timeout_ms && io_uring_sq_space_left(&loop->l_ring) < 2)
		io_uring_submit(&loop->l_ring);
	sqe = loop_sqe(loop);
	io_uring_prep_connect(sqe, fd, sa, salen);
	loop_queue(op, sqe);
	if (timeout_ms == 0)
		return;
	op->lo_timed = 1;
	sqe->flags |= IOSQE_IO_LINK;
	op->lo_ts.tv_sec = timeout_ms / 1000;
	op->lo_ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
	sqe = loop_sqe(loop);
	io_uring_prep_link_timeout(sqe, &op->lo_ts, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

void
loop_accept(struct loop *loop, struct loop_op *op, int fd)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	loop_queue(op, sqe);
}

void
loop_timeout(struct loop *loop, struct loop_op *op, unsigned ms)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	op->lo_ts.tv_sec = ms / 1000;
	op->lo_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &op->lo_ts, 0, 0);
	loop_queue(op, sqe);
}

void
loop_nop(struct loop *loop, struct loop_op *op)
{
	struct io_uring_sqe *sqe = loop_sqe(loop);

	io_uring_prep_nop(sqe);
	loop_queue(op, sqe);
}

void
loop_close(struct loop *loop, int fd)
{
	struct io_uring_sqe *sqe;

	if (loop->l_disabled) {		/* nothing will be submitted */
		close(fd);
		return;
	}
	sqe = loop_sqe(loop);
	io_uring_prep_close(sqe, fd);
	io_uring_sqe_set_data(sqe, NULL);
}

void
loop_cancel(struct loop *loop, struct loop_op *op)
{
	struct io_uring_sqe *sqe;

	if (!op->lo_busy || op->lo_cancelled)
		return;
	op->lo_cancelled = 1;
	sqe = loop_sqe(loop);
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

/* --- timers -------------------------------------------------------------- */

static void
loop_arm_tick(struct loop *loop)
{
	if (loop->l_tick_op.lo_busy || loop->l_armed == 0)
		return;
	loop_timeout(loop, &loop->l_tick_op, LOOP_TICK_MS);
}

static void
loop_tick_cb(struct loop_op *op, int res, unsigned flags)
{
	struct loop *loop = LOOP_CONTAINER_OF(op, struct loop, l_tick_op);
	struct loop_timer_list *tl;
	struct loop_timer *t;

	loop->l_tick++;
	TAILQ_FOREACH(tl, &loop->l_lists, tl_entry) {
		while ((t = TAILQ_FIRST(&tl->tl_head)) != NULL &&
		    t->t_deadline <= loop->l_now) {
			loop_timer_disarm(tl, t);
			tl->tl_expire(t, tl->tl_arg);
		}
	}
	loop_arm_tick(loop);
}

void
loop_timer_list_init(struct loop *loop, struct loop_timer_list *tl, uint64_t ms,
    void (*expire)(struct loop_timer *, void *), void *arg)
{
	TAILQ_INIT(&tl->tl_head);
	tl->tl_loop = loop;
	tl->tl_ms = ms;
	tl->tl_expire = expire;
	tl->tl_arg = arg;
	TAILQ_INSERT_TAIL(&loop->l_lists, tl, tl_entry);
}

void
loop_timer_list_done(struct loop_timer_list *tl)
{
	struct loop_timer *t;

	while ((t = TAILQ_FIRST(&tl->tl_head)) != NULL)
		loop_timer_disarm(tl, t);
	TAILQ_REMOVE(&tl->tl_loop->l_lists, tl, tl_entry);
}

void
loop_timer_arm(struct loop_timer_list *tl, struct loop_timer *t)
{
	if (t->t_armed)
		TAILQ_REMOVE(&tl->tl_head, t, t_entry);
	else
		tl->tl_loop->l_armed++;
	t->t_armed = 1;
	t->t_deadline = tl->tl_loop->l_now + tl->tl_ms;
	/* Constant duration: the newest deadline is always the latest. */
	TAILQ_INSERT_TAIL(&tl->tl_head, t, t_entry);
	loop_arm_tick(tl->tl_loop);
}

void
loop_timer_disarm(struct loop_timer_list *tl, struct loop_timer *t)
{
	if (!t->t_armed)
		return;
	TAILQ_REMOVE(&tl->tl_head, t, t_entry);
	t->t_armed = 0;
	tl->tl_loop->l_armed--;
}

/* --- listeners ----------------------------------------------------------- */

static void
loop_listener_arm(struct loop_listener *l)
{
	if (l->ll_state == LL_RUNNING && !l->ll_accept.lo_busy)
		loop_accept(l->ll_loop, &l->ll_accept, l->ll_fd);
}

static void
loop_listener_accept_cb(struct loop_op *op, int res, unsigned flags)
{
	struct loop_listener *l = LOOP_CONTAINER_OF(op, struct loop_listener, ll_accept);
	struct loop *loop = l->ll_loop;

	if (res >= 0) {
		l->ll_accepted++;
		l->ll_cb(l, res);
	} else if ((res == -EMFILE || res == -ENFILE) && l->ll_state == LL_RUNNING) {
		/* Out of descriptors: retrying now would spin; back off and
		 * give the reserve fd to sessions that need an upstream. */
		l->ll_emfile++;
		if (l->ll_emfile == 1 || l->ll_emfile % 100 == 0)
			log_warnx("accept: %s, pausing %d ms", strerror(-res),
			    LOOP_ACCEPT_BACKOFF_MS);
		if (loop->l_reserve_fd != -1) {
			close(loop->l_reserve_fd);
			loop->l_reserve_fd = -1;
		}
		l->ll_state = LL_BACKOFF;
		loop_timeout(loop, &l->ll_backoff, LOOP_ACCEPT_BACKOFF_MS);
		if (l->ll_accept.lo_busy)
			loop_cancel(loop, &l->ll_accept);
	} else if (res != -ECANCELED && res != -EAGAIN && res != -EINTR &&
	    res != -ECONNABORTED && l->ll_state == LL_RUNNING) {
		log_warnx("accept: %s", strerror(-res));
	}
	if (op->lo_busy)
		return;
	/* Final completion: re-arm, or finish a stop. */
	if (l->ll_state == LL_STOPPING && !l->ll_backoff.lo_busy) {
		l->ll_state = LL_CLOSED;
		close(l->ll_fd);
		l->ll_fd = -1;
		if (l->ll_closed_cb)
			l->ll_closed_cb(l);
		return;
	}
	loop_listener_arm(l);
}

static void
loop_listener_backoff_cb(struct loop_op *op, int res, unsigned flags)
{
	struct loop_listener *l = LOOP_CONTAINER_OF(op, struct loop_listener, ll_backoff);
	struct loop *loop = l->ll_loop;

	if (loop->l_reserve_fd == -1)
		loop->l_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (l->ll_state == LL_BACKOFF)
		l->ll_state = l->ll_paused ? LL_PAUSED : LL_RUNNING;
	if (l->ll_state == LL_STOPPING && !l->ll_accept.lo_busy) {
		/* Let the accept path finish the stop. */
		loop_listener_accept_cb(&l->ll_accept, -ECANCELED, 0);
		return;
	}
	loop_listener_arm(l);
}

void
loop_listener_start(struct loop *loop, struct loop_listener *l, int fd,
    void (*cb)(struct loop_listener *, int), void *arg)
{
	memset(l, 0, sizeof(*l));
	loop_op_init(&l->ll_accept, loop_listener_accept_cb);
	loop_op_init(&l->ll_backoff, loop_listener_backoff_cb);
	l->ll_loop = loop;
	l->ll_fd = fd;
	l->ll_cb = cb;
	l->ll_arg = arg;
	l->ll_state = LL_RUNNING;
	loop_listener_arm(l);
}

void
loop_listener_pause(struct loop_listener *l)
{
	l->ll_paused = 1;
	if (l->ll_state != LL_RUNNING)
		return;
	l->ll_state = LL_PAUSED;
	loop_cancel(l->ll_loop, &l->ll_accept);
}

void
loop_listener_resume(struct loop_listener *l)
{
	l->ll_paused = 0;
	if (l->ll_state != LL_PAUSED)
		return;
	l->ll_state = LL_RUNNING;
	/* If the cancel is still in flight, its final completion re-arms. */
	loop_listener_arm(l);
}

void
loop_listener_stop(struct loop_listener *l, void (*closed_cb)(struct loop_listener *))
{
	if (l->ll_state == LL_STOPPING || l->ll_state == LL_CLOSED)
		return;
	l->ll_state = LL_STOPPING;
	l->ll_closed_cb = closed_cb;
	loop_cancel(l->ll_loop, &l->ll_accept);
	loop_cancel(l->ll_loop, &l->ll_backoff);
	if (!l->ll_accept.lo_busy && !l->ll_backoff.lo_busy)
		loop_listener_accept_cb(&l->ll_accept, -ECANCELED, 0);
}
