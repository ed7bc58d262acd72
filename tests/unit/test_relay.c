/* Tests for loop.c, relay.c and pipepool.c over real loopback TCP sockets.
 * The loop runs in a thread of the test; the test talks to it with
 * loop_post() and reads reports from the done callbacks. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "relay.h"
#include "util.h"

#define MAXREP	512
#define MIB	(1024 * 1024)

struct env {
	struct loop		*loop;
	struct relay		*relay;
	pthread_t		 th;
	pthread_mutex_t		 mtx;
	pthread_cond_t		 cv;
	int			 ndone;
	struct relay_report	 rep[MAXREP];
};

static struct env E;

static void *
env_thread(void *arg)
{
	loop_run(arg);
	return NULL;
}

static void
env_start(const struct relay_settings *s)
{
	memset(&E, 0, sizeof(E));
	pthread_mutex_init(&E.mtx, NULL);
	pthread_cond_init(&E.cv, NULL);
	E.loop = loop_new(4096);
	cr_assert_not_null(E.loop);
	E.relay = relay_new(E.loop, s);
	cr_assert_not_null(E.relay);
	cr_assert_eq(pthread_create(&E.th, NULL, env_thread, E.loop), 0);
}

static void
env_stop(void)
{
	loop_stop(E.loop);
	pthread_join(E.th, NULL);
	relay_free(E.relay);
	loop_free(E.loop);
}

/* Run fn(arg) on the loop thread and wait (bounded) for it. */
struct call {
	void		(*fn)(void *);
	void		*arg;
	atomic_int	 done;
};

static void
call_tramp(void *a)
{
	struct call *c = a;

	c->fn(c->arg);
	atomic_store(&c->done, 1);
}

static void
in_loop(void (*fn)(void *), void *arg)
{
	struct call c = { fn, arg, 0 };

	cr_assert_eq(loop_post(E.loop, call_tramp, &c), 0);
	for (int i = 0; i < 5000 && !atomic_load(&c.done); i++)
		usleep(1000);
	cr_assert(atomic_load(&c.done), "loop did not run the posted call");
}

static void
on_done(const struct relay_report *rep, void *arg)
{
	pthread_mutex_lock(&E.mtx);
	if (E.ndone < MAXREP)
		E.rep[E.ndone] = *rep;
	E.ndone++;
	pthread_cond_broadcast(&E.cv);
	pthread_mutex_unlock(&E.mtx);
}

/* Wait until n pairs have ended, at most ms. */
static int
wait_done(int n, int ms)
{
	struct timespec ts;
	int got;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&E.mtx);
	while (E.ndone < n && pthread_cond_timedwait(&E.cv, &E.mtx, &ts) == 0)
		;
	got = E.ndone;
	pthread_mutex_unlock(&E.mtx);
	return got;
}

static void
set_timeouts(int fd, int sec)
{
	struct timeval tv = { sec, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A connected loopback TCP pair: *x connected to *y. */
static void
tcp_pair(int *x, int *y)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(l >= 0);
	cr_assert_eq(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(l, 4), 0);
	cr_assert_eq(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	*x = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(*x >= 0);
	cr_assert_eq(connect(*x, (struct sockaddr *)&sin, sizeof(sin)), 0);
	*y = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	cr_assert(*y >= 0);
	close(l);
	set_timeouts(*x, 10);
	set_timeouts(*y, 10);
	/* As the proxies do: the relay leaves socket options to its callers. */
	int one = 1;
	setsockopt(*x, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(*y, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

struct join_arg {
	int			 fa, fb;
	struct relay_pair	*pair;
};

static void
join_cb(void *a)
{
	struct join_arg *j = a;

	j->pair = relay_join(E.relay, j->fa, j->fb, "client", "server", on_done, NULL);
}

/* client <-> [relay a | relay b] <-> server */
static void
join(int *client, int *server)
{
	struct join_arg j;

	tcp_pair(client, &j.fa);
	tcp_pair(&j.fb, server);
	/* relay_join() wants non-blocking sockets, as the proxies' are. */
	cr_assert_eq(fd_set_nonblock(j.fa), 0);
	cr_assert_eq(fd_set_nonblock(j.fb), 0);
	in_loop(join_cb, &j);
	cr_assert_not_null(j.pair);
}

static void
stats_cb(void *a)
{
	relay_stats(E.relay, a);
}

static struct relay_stats
stats(void)
{
	struct relay_stats st;

	in_loop(stats_cb, &st);
	return st;
}

/* --- traffic helpers ----------------------------------------------------- */

static uint8_t
pattern(uint64_t off, uint32_t seed)
{
	uint32_t x = (uint32_t)(off >> 2) * 2654435761u ^ seed;

	return (uint8_t)(x >> ((off & 3) * 8));
}

struct xfer {
	int		 fd;
	size_t		 n;
	uint32_t	 seed;
	int		 shut;		/* writer: SHUT_WR when done */
	size_t		 done;		/* bytes written / read */
	size_t		 bad;		/* reader: mismatching bytes */
	int		 eof;		/* reader: saw EOF */
	pthread_t	 th;
};

static void *
writer(void *a)
{
	struct xfer *x = a;
	static __thread uint8_t buf[65536];
	ssize_t k;

	while (x->done < x->n) {
		size_t len = x->n - x->done < sizeof(buf) ? x->n - x->done : sizeof(buf);

		for (size_t i = 0; i < len; i++)
			buf[i] = pattern(x->done + i, x->seed);
		if ((k = send(x->fd, buf, len, MSG_NOSIGNAL)) <= 0)
			break;
		x->done += (size_t)k;
	}
	if (x->shut)
		shutdown(x->fd, SHUT_WR);
	return NULL;
}

static void *
reader(void *a)
{
	struct xfer *x = a;
	static __thread uint8_t buf[65536];
	ssize_t k;

	for (;;) {
		if ((k = recv(x->fd, buf, sizeof(buf), 0)) <= 0) {
			x->eof = k == 0;
			break;
		}
		for (ssize_t i = 0; i < k; i++)
			if (buf[i] != pattern(x->done + (size_t)i, x->seed))
				x->bad++;
		x->done += (size_t)k;
	}
	return NULL;
}

static void
xfer_start(struct xfer *x, int fd, size_t n, uint32_t seed, void *(*fn)(void *))
{
	memset(x, 0, sizeof(*x));
	x->fd = fd;
	x->n = n;
	x->seed = seed;
	x->shut = 1;
	cr_assert_eq(pthread_create(&x->th, NULL, fn, x), 0);
}

/* n bytes each way at once, both sides half-close when done; checks every
 * byte and the report. */
static void
bulk_both_ways(size_t n, int expect_spliced)
{
	struct xfer cw, sr, sw, cr;
	int c, s, k = E.ndone;

	join(&c, &s);
	xfer_start(&cw, c, n, 0x1111, writer);
	xfer_start(&sr, s, n, 0x1111, reader);
	xfer_start(&sw, s, n, 0x2222, writer);
	xfer_start(&cr, c, n, 0x2222, reader);
	pthread_join(cw.th, NULL);
	pthread_join(sw.th, NULL);
	pthread_join(sr.th, NULL);
	pthread_join(cr.th, NULL);
	cr_assert_eq(sr.done, n, "server got %zu of %zu", sr.done, n);
	cr_assert_eq(cr.done, n, "client got %zu of %zu", cr.done, n);
	cr_assert_eq(sr.bad, 0);
	cr_assert_eq(cr.bad, 0);
	cr_assert(sr.eof && cr.eof, "half-close must reach both ends");
	cr_assert_eq(wait_done(k + 1, 5000), k + 1);
	cr_assert_str_eq(E.rep[k].reason_str, "eof");
	cr_assert_eq(E.rep[k].bytes_ab, n);
	cr_assert_eq(E.rep[k].bytes_ba, n);
	if (expect_spliced >= 0)
		cr_assert_eq(E.rep[k].spliced, expect_spliced);
	close(c);
	close(s);
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the DIR's own fd */
}

/* --- relay tests --------------------------------------------------------- */

Test(relay, bytes_flow_both_ways_and_eof_is_reported)
{
	char buf[16];
	int c, s;

	env_start(NULL);
	join(&c, &s);
	cr_assert_eq(send(c, "hello", 5, 0), 5);
	cr_assert_eq(recv(s, buf, sizeof(buf), MSG_WAITALL & 0), 5);
	cr_assert(memcmp(buf, "hello", 5) == 0);
	cr_assert_eq(send(s, "world!", 6, 0), 6);
	cr_assert_eq(recv(c, buf, sizeof(buf), 0), 6);
	cr_assert(memcmp(buf, "world!", 6) == 0);
	close(c);
	cr_assert_eq(recv(s, buf, sizeof(buf), 0), 0, "client EOF reaches the server");
	close(s);
	cr_assert_eq(wait_done(1, 3000), 1);
	cr_assert_str_eq(E.rep[0].reason_str, "eof");
	cr_assert_eq(E.rep[0].bytes_ab, 5);
	cr_assert_eq(E.rep[0].bytes_ba, 6);
	cr_assert(E.rep[0].duration >= 0 && E.rep[0].duration < 3);
	env_stop();
}

Test(relay, bulk_64mib_each_way_crosses_splice_threshold, .timeout = 60)
{
	env_start(NULL);
	bulk_both_ways(64 * MIB, 2);
	env_stop();
}

Test(relay, splice_from_the_start_with_threshold_zero, .timeout = 60)
{
	struct relay_settings s;

	relay_settings_default(&s);
	s.splice_threshold = 0;
	env_start(&s);
	bulk_both_ways(16 * MIB, 2);
	env_stop();
}

Test(relay, never_splice_copies_everything, .timeout = 60)
{
	struct relay_settings s;

	relay_settings_default(&s);
	s.splice_threshold = SIZE_MAX;
	env_start(&s);
	bulk_both_ways(16 * MIB, 0);
	cr_assert_eq(stats().pipes_pooled + stats().pipes_in_use, 0);
	env_stop();
}

/* Request/response rounds of many sizes on a spliced direction: after each
 * block the sender goes quiet until the whole block has arrived, so bytes
 * left in a pipe with nothing more coming from the source must still be
 * written out (a lost wake-up here stalls the round until the timeout). */
struct rounds {
	int		 fd;
	int		 n;
	uint32_t	 seed;
	int		 ok;		/* rounds fully received and acknowledged */
	pthread_t	 th;
};

static size_t
round_size(uint32_t *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return 1 + (*seed >> 8) % (3u << 20);
}

static void *
round_server(void *a)
{
	struct rounds *rs = a;
	static __thread uint8_t buf[65536];
	uint32_t seed = rs->seed;

	for (int i = 0; i < rs->n; i++) {
		size_t want = round_size(&seed), got = 0;
		ssize_t k;

		while (got < want && (k = recv(rs->fd, buf, sizeof(buf) < want - got ?
		    sizeof(buf) : want - got, 0)) > 0)
			got += (size_t)k;
		if (got < want || send(rs->fd, "k", 1, MSG_NOSIGNAL) != 1)
			break;
		rs->ok++;
	}
	return NULL;
}

struct round_client {
	int		 fd;
	int		 n;
	uint32_t	 seed;
	int		 done;		/* rounds sent and acknowledged */
	pthread_t	 th;
};

static uint8_t round_block[3u << 20];

static void *
round_client(void *a)
{
	struct round_client *rc = a;
	uint8_t *block = round_block;
	uint32_t seed = rc->seed;
	char ack;

	for (int i = 0; i < rc->n; i++) {
		size_t n = round_size(&seed), off = 0;
		ssize_t k;

		while (off < n && (k = send(rc->fd, block + off, n - off, MSG_NOSIGNAL)) > 0)
			off += (size_t)k;
		/* 10 s receive timeout (tcp_pair): a stall ends the rounds. */
		if (off < n || recv(rc->fd, &ack, 1, 0) != 1)
			break;
		rc->done++;
	}
	return NULL;
}

#define ROUND_PAIRS 8

Test(relay, quiet_sender_never_leaves_bytes_stranded_in_a_pipe, .timeout = 120)
{
	struct relay_settings set;
	struct rounds rs[ROUND_PAIRS];
	struct round_client rc[ROUND_PAIRS];
	int c[ROUND_PAIRS], srv[ROUND_PAIRS];

	relay_settings_default(&set);
	set.splice_threshold = 0;
	env_start(&set);
	memset(round_block, 'x', sizeof(round_block));
	for (int i = 0; i < ROUND_PAIRS; i++) {
		join(&c[i], &srv[i]);
		rs[i] = (struct rounds){ .fd = srv[i], .n = 20, .seed = 7 + (uint32_t)i };
		rc[i] = (struct round_client){ .fd = c[i], .n = 20, .seed = 7 + (uint32_t)i };
		cr_assert_eq(pthread_create(&rs[i].th, NULL, round_server, &rs[i]), 0);
		cr_assert_eq(pthread_create(&rc[i].th, NULL, round_client, &rc[i]), 0);
	}
	for (int i = 0; i < ROUND_PAIRS; i++) {
		pthread_join(rc[i].th, NULL);
		pthread_join(rs[i].th, NULL);
	}
	for (int i = 0; i < ROUND_PAIRS; i++) {
		cr_expect_eq(rc[i].done, rc[i].n, "pair %d stalled after %d of %d rounds", i,
		    rc[i].done, rc[i].n);
		close(c[i]);
		close(srv[i]);
	}
	env_stop();
}

Test(relay, half_close_client_still_gets_the_reply)
{
	char buf[64];
	int c, s, n, got = 0;

	env_start(NULL);
	join(&c, &s);
	cr_assert_eq(send(c, "request", 7, 0), 7);
	cr_assert_eq(shutdown(c, SHUT_WR), 0);
	/* The server reads the request up to EOF... */
	while ((n = (int)recv(s, buf + got, sizeof(buf) - (size_t)got, 0)) > 0)
		got += n;
	cr_assert_eq(n, 0);
	cr_assert_eq(got, 7);
	/* ...and its reply still travels back over the open direction. */
	cr_assert_eq(send(s, "reply after eof", 15, 0), 15);
	got = 0;
	while (got < 15 && (n = (int)recv(c, buf + got, sizeof(buf) - (size_t)got, 0)) > 0)
		got += n;
	cr_assert_eq(got, 15);
	cr_assert(memcmp(buf, "reply after eof", 15) == 0);
	cr_assert_eq(E.ndone, 0, "pair must stay open while one direction runs");
	close(s);
	cr_assert_eq(recv(c, buf, sizeof(buf), 0), 0);
	cr_assert_eq(wait_done(1, 3000), 1);
	cr_assert_str_eq(E.rep[0].reason_str, "eof");
	close(c);
	env_stop();
}

Test(relay, reset_by_client_is_propagated_to_the_server)
{
	struct linger lg = { 1, 0 };
	char buf[16];
	int c, s;
	ssize_t n;

	env_start(NULL);
	join(&c, &s);
	cr_assert_eq(send(c, "x", 1, 0), 1);
	cr_assert_eq(recv(s, buf, sizeof(buf), 0), 1);
	setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(c);	/* RST */
	cr_assert_eq(wait_done(1, 3000), 1);
	cr_assert_str_eq(E.rep[0].reason_str, "reset by client");
	n = recv(s, buf, sizeof(buf), 0);
	cr_assert(n == -1 && errno == ECONNRESET, "server sees a reset (n=%zd errno=%d)", n, errno);
	close(s);
	env_stop();
}

Test(relay, idle_timeout_closes_the_pair)
{
	struct relay_settings s;
	char buf[4];
	int c, sv;

	relay_settings_default(&s);
	s.idle_timeout = 0.3;
	env_start(&s);
	join(&c, &sv);
	cr_assert_eq(send(c, "a", 1, 0), 1);
	cr_assert_eq(recv(sv, buf, sizeof(buf), 0), 1);
	cr_assert_eq(wait_done(1, 3000), 1);
	cr_assert_str_eq(E.rep[0].reason_str, "idle");
	cr_assert(E.rep[0].duration >= 0.25 && E.rep[0].duration < 1.5,
	    "duration %f", E.rep[0].duration);
	cr_assert_eq(recv(sv, buf, sizeof(buf), 0), 0, "server sees the close");
	cr_assert_eq(recv(c, buf, sizeof(buf), 0), 0, "client sees the close");
	close(c);
	close(sv);
	env_stop();
}

Test(relay, traffic_keeps_an_idle_timeout_away)
{
	struct relay_settings s;
	char buf[4];
	int c, sv;

	relay_settings_default(&s);
	s.idle_timeout = 0.4;
	env_start(&s);
	join(&c, &sv);
	for (int i = 0; i < 8; i++) {	/* 8 x 0.1 s = twice the timeout */
		cr_assert_eq(send(c, "a", 1, 0), 1);
		cr_assert_eq(recv(sv, buf, sizeof(buf), 0), 1);
		usleep(100000);
	}
	cr_assert_eq(E.ndone, 0);
	cr_assert_eq(wait_done(1, 3000), 1);
	cr_assert_str_eq(E.rep[0].reason_str, "idle");
	close(c);
	close(sv);
	env_stop();
}

static void
idle_pair_holds_nothing(size_t threshold, int spliced)
{
	struct relay_settings s;
	struct relay_stats st;
	char *buf = malloc(MIB);
	int c, sv;
	ssize_t n;
	size_t got;

	relay_settings_default(&s);
	s.splice_threshold = threshold;
	env_start(&s);
	join(&c, &sv);
	memset(buf, 'x', MIB);
	cr_assert_eq(send(c, buf, MIB, 0), MIB);
	for (got = 0; got < MIB && (n = recv(sv, buf, MIB, 0)) > 0; got += (size_t)n)
		;
	cr_assert_eq(got, MIB);
	cr_assert_eq(send(sv, buf, 1000, 0), 1000);
	cr_assert_eq(recv(c, buf, 1000, MSG_WAITALL), 1000);
	usleep(50000);
	st = stats();
	cr_assert_eq(st.pairs_active, 1);
	cr_assert_eq(st.dirs_spliced, (unsigned)spliced);
	cr_assert_eq(st.pipes_in_use, 0, "idle pair holds a pipe");
	cr_assert_eq(st.bufs_in_use, 0, "idle pair holds a buffer");
	close(c);
	close(sv);
	cr_assert_eq(wait_done(1, 3000), 1);
	free(buf);
	env_stop();
}

Test(relay, idle_spliced_pair_holds_no_pipe_and_no_buffer)
{
	idle_pair_holds_nothing(0, 2);
}

Test(relay, idle_copying_pair_holds_no_buffer)
{
	idle_pair_holds_nothing(SIZE_MAX, 0);
}

/* Push bytes into fd without blocking until nothing more goes in for a
 * while: every buffer between fd and a receiver that does not read is full. */
static size_t
fill_until_stuck(int fd)
{
	static char junk[65536];
	size_t total = 0;
	int quiet = 0;

	while (quiet < 20) {	/* 20 x 10 ms with nothing taken */
		ssize_t n = send(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			total += (size_t)n;
			quiet = 0;
		} else {
			usleep(10000);
			quiet++;
		}
	}
	return total;
}

/* H1: receivers that stop reading must cost only their own pairs.  With
 * 4 shared buffers and 8 stalled pairs, a fresh pair still relays at once
 * and no shared buffer stays out. */
static void
stalled_receivers_leave_others_alone(size_t threshold)
{
	struct relay_settings s;
	struct relay_stats st;
	int c[8], sv[8], c2, sv2, small = 4096;
	char buf[8];

	relay_settings_default(&s);
	s.buf_count = 4;
	s.splice_threshold = threshold;
	s.stall_timeout = 0;
	env_start(&s);
	for (int i = 0; i < 8; i++) {
		join(&c[i], &sv[i]);
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	for (int i = 0; i < 8; i++)
		cr_assert(fill_until_stuck(c[i]) > 0);
	st = stats();
	cr_assert_eq(st.bufs_in_use, 0, "%u shared buffers held by stalled pairs",
	    st.bufs_in_use);
	cr_assert_eq(st.dirs_blocked, 8, "blocked directions: %u", st.dirs_blocked);
	join(&c2, &sv2);
	cr_assert_eq(send(c2, "ping", 4, 0), 4);
	cr_assert_eq(recv(sv2, buf, 4, MSG_WAITALL), 4, "a fresh pair is starved");
	cr_assert_eq(memcmp(buf, "ping", 4), 0);
	cr_assert_eq(send(sv2, "pong", 4, 0), 4);
	cr_assert_eq(recv(c2, buf, 4, MSG_WAITALL), 4);
	cr_assert_eq(E.ndone, 0);
	close(c2);
	close(sv2);
	for (int i = 0; i < 8; i++) {
		close(c[i]);
		close(sv[i]);
	}
	cr_assert_eq(wait_done(9, 5000), 9);
	st = stats();
	cr_assert_eq(st.spill_bytes, 0);
	cr_assert_eq(st.dirs_blocked, 0);
	env_stop();
}

Test(relay, copying_receivers_that_stop_reading_hold_no_shared_buffer, .timeout = 60)
{
	stalled_receivers_leave_others_alone(SIZE_MAX);
}

Test(relay, spliced_receivers_that_stop_reading_hold_no_shared_buffer, .timeout = 60)
{
	stalled_receivers_leave_others_alone(64 * 1024);
}

static void
stall_ends_the_pair(size_t threshold)
{
	struct relay_settings s;
	int c, sv, small = 4096;

	relay_settings_default(&s);
	s.splice_threshold = threshold;
	s.stall_timeout = 0.3;
	s.idle_timeout = 0;
	env_start(&s);
	join(&c, &sv);
	setsockopt(sv, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	cr_assert(fill_until_stuck(c) > 0);
	cr_assert_eq(wait_done(1, 3000), 1, "a stalled pair outlives stall_timeout");
	cr_assert_str_eq(E.rep[0].reason_str, "stalled: server not reading");
	close(c);
	close(sv);
	env_stop();
}

Test(relay, stall_timeout_ends_a_copying_pair_whose_receiver_stopped_reading, .timeout = 30)
{
	stall_ends_the_pair(SIZE_MAX);
}

Test(relay, stall_timeout_ends_a_spliced_pair_whose_receiver_stopped_reading, .timeout = 30)
{
	stall_ends_the_pair(0);
}

/* A slow receiver that keeps reading is progress, not a stall. */
Test(relay, a_slow_reader_is_not_a_stall, .timeout = 30)
{
	struct relay_settings s;
	static char buf[65536];
	int c, sv;
	size_t sent, got = 0;
	ssize_t n;

	relay_settings_default(&s);
	s.splice_threshold = SIZE_MAX;
	s.stall_timeout = 0.5;
	env_start(&s);
	join(&c, &sv);
	sent = fill_until_stuck(c);
	for (int i = 0; i < 20; i++) {	/* 2 s: four stall timeouts */
		n = recv(sv, buf, sizeof(buf), 0);
		cr_assert(n > 0, "pair ended while the reader was reading");
		got += (size_t)n;
		usleep(100000);
	}
	cr_assert_eq(E.ndone, 0, "ended: %s", E.ndone ? E.rep[0].reason_str : "");
	shutdown(c, SHUT_WR);
	while (got < sent && (n = recv(sv, buf, sizeof(buf), 0)) > 0)
		got += (size_t)n;
	cr_assert_eq(got, sent, "got %zu of %zu", got, sent);
	close(c);
	close(sv);
	cr_assert_eq(wait_done(1, 3000), 1);
	env_stop();
}

Test(relay, two_hundred_pairs_at_once, .timeout = 60)
{
	enum { NP = 200, LEN = 3000 };
	static int c[NP], s[NP];
	char out[LEN], in[LEN];
	struct relay_stats st;

	env_start(NULL);
	for (int i = 0; i < NP; i++)
		join(&c[i], &s[i]);
	st = stats();
	cr_assert_eq(st.pairs_active, NP);
	for (int i = 0; i < NP; i++) {
		memset(out, 'a' + i % 26, LEN);
		cr_assert_eq(send(c[i], out, LEN, 0), LEN);
		cr_assert_eq(send(s[i], out, LEN / 2, 0), LEN / 2);
	}
	for (int i = 0; i < NP; i++) {
		cr_assert_eq(recv(s[i], in, LEN, MSG_WAITALL), LEN);
		cr_assert_eq(in[LEN - 1], 'a' + i % 26);
		cr_assert_eq(recv(c[i], in, LEN / 2, MSG_WAITALL), LEN / 2);
		close(c[i]);
		close(s[i]);
	}
	cr_assert_eq(wait_done(NP, 10000), NP);
	for (int i = 0; i < NP; i++) {
		cr_assert_str_eq(E.rep[i].reason_str, "eof");
		cr_assert_eq(E.rep[i].bytes_ab, LEN);
		cr_assert_eq(E.rep[i].bytes_ba, LEN / 2);
	}
	st = stats();
	cr_assert_eq(st.pairs_active, 0);
	cr_assert_eq(st.pairs_total, NP);
	cr_assert_eq(st.bytes_ab, (uint64_t)NP * LEN);
	env_stop();
}

Test(relay, pipe_pool_of_one_still_relays_every_pair, .timeout = 60)
{
	enum { NP = 4 };
	struct relay_settings s;
	struct xfer w[NP], r[NP];
	int c[NP], sv[NP];
	size_t n = 8 * MIB;
	int spliced = 0;

	relay_settings_default(&s);
	s.splice_threshold = 0;
	s.max_pipes = 1;
	env_start(&s);
	for (int i = 0; i < NP; i++) {
		join(&c[i], &sv[i]);
		xfer_start(&w[i], c[i], n, 0x100 + (uint32_t)i, writer);
		xfer_start(&r[i], sv[i], n, 0x100 + (uint32_t)i, reader);
	}
	for (int i = 0; i < NP; i++) {
		pthread_join(w[i].th, NULL);
		pthread_join(r[i].th, NULL);
		cr_assert_eq(r[i].done, n);
		cr_assert_eq(r[i].bad, 0);
		close(sv[i]);
	}
	cr_assert_eq(wait_done(NP, 5000), NP);
	for (int i = 0; i < NP; i++) {
		cr_assert_str_eq(E.rep[i].reason_str, "eof");
		spliced += E.rep[i].spliced;
		close(c[i]);
	}
	cr_assert(spliced >= 1, "the one pipe was used");
	cr_assert_eq(stats().pipes_pooled, 1);
	env_stop();
}

Test(relay, every_fd_is_closed_after_the_pairs_end, .timeout = 30)
{
	struct relay_settings s;
	struct relay_stats st;
	int before, after;

	relay_settings_default(&s);
	s.splice_threshold = 64 * 1024;
	env_start(&s);
	before = count_fds();
	for (int i = 0; i < 3; i++)
		bulk_both_ways(MIB, 2);
	cr_assert_eq(wait_done(3, 3000), 3);
	st = stats();
	cr_assert_eq(st.pairs_active, 0);
	after = count_fds();
	/* Only the pooled pipes remain, two fds each. */
	cr_assert_eq(after, before + 2 * (int)st.pipes_pooled, "before %d after %d pooled %u",
	    before, after, st.pipes_pooled);
	env_stop();
	cr_assert_eq(count_fds(), before - 3, "ring, eventfd and reserve fd go with the loop");
}

Test(relay, close_all_ends_every_pair_with_shutdown)
{
	char buf[4];
	int c[3], s[3];

	env_start(NULL);
	for (int i = 0; i < 3; i++)
		join(&c[i], &s[i]);
	in_loop((void (*)(void *))relay_close_all, E.relay);
	cr_assert_eq(wait_done(3, 3000), 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_str_eq(E.rep[i].reason_str, "shutdown");
		cr_assert_eq(recv(c[i], buf, sizeof(buf), 0), 0);
		close(c[i]);
		close(s[i]);
	}
	env_stop();
}

/* --- loop tests ---------------------------------------------------------- */

struct postctx {
	int	 thread;
	int	 next[2];	/* loop side: next sequence expected per thread */
	int	 disorder;
	int	 count;
};
static struct postctx PC;

struct postmsg {
	int	 thread, seq;
};

static void
post_fn(void *a)
{
	struct postmsg *m = a;

	if (m->seq != PC.next[m->thread])
		PC.disorder++;
	PC.next[m->thread] = m->seq + 1;
	PC.count++;
	free(m);
}

static void *
poster(void *a)
{
	int t = (int)(intptr_t)a;

	for (int i = 0; i < 2000; i++) {
		struct postmsg *m = malloc(sizeof(*m));

		m->thread = t;
		m->seq = i;
		if (loop_post(E.loop, post_fn, m) != 0)
			free(m);
	}
	return NULL;
}

static void
noop(void *a)
{
}

Test(loop, post_from_other_threads_runs_in_order_on_the_loop)
{
	pthread_t t[2];

	memset(&PC, 0, sizeof(PC));
	env_start(NULL);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, poster, (void *)(intptr_t)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	in_loop(noop, NULL);	/* FIFO: everything before it has run */
	cr_assert_eq(PC.count, 4000);
	cr_assert_eq(PC.disorder, 0);
	env_stop();
}

struct tctx {
	struct loop_timer_list	 l200, l400;
	struct loop_timer	 t[4];
	uint64_t		 start;
	uint64_t		 fired_at[4];
	int			 order[4], n;
};
static struct tctx TC;

static void
timer_expire(struct loop_timer *t, void *arg)
{
	int i = (int)(t - TC.t);

	TC.fired_at[i] = loop_now_ms(E.loop) - TC.start;
	TC.order[TC.n++] = i;
}

static void
timers_setup(void *a)
{
	loop_timer_list_init(E.loop, &TC.l200, 200, timer_expire, NULL);
	loop_timer_list_init(E.loop, &TC.l400, 400, timer_expire, NULL);
	TC.start = loop_now_ms(E.loop);
	loop_timer_arm(&TC.l400, &TC.t[0]);
	loop_timer_arm(&TC.l200, &TC.t[1]);
	loop_timer_arm(&TC.l200, &TC.t[2]);
	loop_timer_arm(&TC.l200, &TC.t[3]);
	loop_timer_disarm(&TC.l200, &TC.t[2]);	/* never fires */
}

static void
timers_rearm(void *a)
{
	loop_timer_arm(&TC.l200, &TC.t[3]);	/* pushed back to now + 200 */
}

static void
timers_done(void *a)
{
	loop_timer_list_done(&TC.l200);
	loop_timer_list_done(&TC.l400);
}

Test(loop, timer_lists_fire_in_deadline_order)
{
	memset(&TC, 0, sizeof(TC));
	env_start(NULL);
	in_loop(timers_setup, NULL);
	usleep(100000);
	in_loop(timers_rearm, NULL);
	usleep(700000);
	in_loop(timers_done, NULL);
	cr_assert_eq(TC.n, 3, "fired %d", TC.n);
	cr_assert_eq(TC.order[0], 1);
	cr_assert_eq(TC.order[1], 3);
	cr_assert_eq(TC.order[2], 0);
	cr_assert(TC.fired_at[1] >= 200 && TC.fired_at[1] < 200 + 2 * LOOP_TICK_MS + 50,
	    "t1 at %lu", (unsigned long)TC.fired_at[1]);
	cr_assert(TC.fired_at[3] >= 300, "re-armed t3 at %lu", (unsigned long)TC.fired_at[3]);
	cr_assert(TC.fired_at[0] >= 400 && TC.fired_at[0] < 400 + 2 * LOOP_TICK_MS + 50,
	    "t0 at %lu", (unsigned long)TC.fired_at[0]);
	cr_assert_eq(TC.fired_at[2], 0);
	env_stop();
}

/* Listener: accepted fds arrive; pause holds new ones in the backlog. */
struct lctx {
	struct loop_listener	 l;
	atomic_int		 accepted;
	atomic_int		 closed;
	int			 port;
};
static struct lctx LC;

static void
lis_accept(struct loop_listener *l, int fd)
{
	atomic_fetch_add(&LC.accepted, 1);
	close(fd);
}

static void
lis_closed(struct loop_listener *l)
{
	atomic_store(&LC.closed, 1);
}

static void
lis_start(void *a)
{
	char err[128];
	int fd = a ? *(int *)a : listen_tcp("127.0.0.1:0", 16, err, sizeof(err));

	cr_assert(fd >= 0, "%s", err);
	LC.port = sock_port(fd);
	loop_listener_start(E.loop, &LC.l, fd, lis_accept, NULL);
}

static void lis_pause(void *a) { loop_listener_pause(&LC.l); }
static void lis_resume(void *a) { loop_listener_resume(&LC.l); }
static void lis_stop(void *a) { loop_listener_stop(&LC.l, lis_closed); }

static int
connect_port(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

static int
wait_accepted(int n)
{
	for (int i = 0; i < 2000 && atomic_load(&LC.accepted) < n; i++)
		usleep(1000);
	return atomic_load(&LC.accepted);
}

Test(loop, listener_accepts_pauses_resumes_and_stops)
{
	int fds[3];

	memset(&LC, 0, sizeof(LC));
	env_start(NULL);
	in_loop(lis_start, NULL);
	fds[0] = connect_port(LC.port);
	cr_assert_eq(wait_accepted(1), 1);
	in_loop(lis_pause, NULL);
	usleep(20000);
	fds[1] = connect_port(LC.port);	/* completes in the backlog */
	usleep(200000);
	cr_assert_eq(atomic_load(&LC.accepted), 1, "paused listener accepted");
	in_loop(lis_resume, NULL);
	cr_assert_eq(wait_accepted(2), 2);
	fds[2] = connect_port(LC.port);
	cr_assert_eq(wait_accepted(3), 3);
	in_loop(lis_stop, NULL);
	for (int i = 0; i < 2000 && !atomic_load(&LC.closed); i++)
		usleep(1000);
	cr_assert(atomic_load(&LC.closed));
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	env_stop();
}

/* Connect through the loop: refused, then accepted. */
struct cctx {
	struct loop_op		 op;
	struct sockaddr_in	 sin;
	int			 fd;
	atomic_int		 res;
	atomic_int		 done;
};
static struct cctx CC;

static void
conn_cb(struct loop_op *op, int res, unsigned flags)
{
	atomic_store(&CC.res, res);
	atomic_store(&CC.done, 1);
}

static unsigned conn_timeout_ms = 2000;

static void
conn_start(void *a)
{
	CC.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	loop_op_init(&CC.op, conn_cb);
	loop_connect(E.loop, &CC.op, CC.fd, (struct sockaddr *)&CC.sin, sizeof(CC.sin),
	    conn_timeout_ms);
}

static int
connect_via_loop(int port)
{
	memset(&CC, 0, sizeof(CC));
	CC.sin.sin_family = AF_INET;
	CC.sin.sin_port = htons((uint16_t)port);
	CC.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	in_loop(conn_start, NULL);
	for (int i = 0; i < 3000 && !atomic_load(&CC.done); i++)
		usleep(1000);
	cr_assert(atomic_load(&CC.done));
	close(CC.fd);
	return atomic_load(&CC.res);
}

Test(loop, connect_reports_refused_and_success)
{
	char err[128];
	int l, port;

	env_start(NULL);
	l = listen_tcp("127.0.0.1:0", 4, err, sizeof(err));
	cr_assert(l >= 0);
	port = sock_port(l);
	cr_assert_eq(connect_via_loop(port), 0);
	close(l);
	cr_assert_eq(connect_via_loop(port), -ECONNREFUSED);
	env_stop();
}

static int
max_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int m = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && atoi(e->d_name) > m)
			m = atoi(e->d_name);
	closedir(d);
	return m;
}

Test(loop, accept_out_of_fds_backs_off_instead_of_spinning)
{
	struct rlimit old, low;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	char err[128];
	int fd, lfd, fill[64], nfill = 0;

	memset(&LC, 0, sizeof(LC));
	env_start(NULL);
	lfd = listen_tcp("127.0.0.1:0", 16, err, sizeof(err));
	cr_assert(lfd >= 0, "%s", err);
	sin.sin_port = htons((uint16_t)sock_port(lfd));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(fd >= 0);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)max_fd() + 1;	/* no free descriptor left */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (nfill < 64 && (fill[nfill] = open("/dev/null", O_RDONLY)) >= 0)
		nfill++;	/* plug the holes below the limit */
	cr_assert_lt(nfill, 64);
	/* The kernel reads the limit when the accept is submitted. */
	in_loop(lis_start, &lfd);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	usleep(350000);
	cr_assert_eq(atomic_load(&LC.accepted), 0, "accepted with emfile=%lu nfill=%d",
	    (unsigned long)LC.l.ll_emfile, nfill);
	cr_assert(LC.l.ll_emfile >= 1, "EMFILE seen");
	cr_assert(LC.l.ll_emfile <= 6, "no spinning: %lu EMFILE in 350 ms",
	    (unsigned long)LC.l.ll_emfile);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	while (nfill > 0)
		close(fill[--nfill]);
	cr_assert_eq(wait_accepted(1), 1, "accepting resumes once fds are free");
	close(fd);
	env_stop();
}

Test(loop, connect_times_out_when_the_peer_never_answers)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l, fill[4];
	uint64_t t0;
	int res;

	env_start(NULL);
	/* A listener whose accept queue is full drops further SYNs. */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(l, 0), 0);
	cr_assert_eq(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		connect(fill[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	usleep(50000);
	conn_timeout_ms = 200;
	t0 = now_mono_ms();
	res = connect_via_loop(ntohs(sin.sin_port));
	cr_assert_eq(res, -ETIMEDOUT, "res %d", res);
	cr_assert(now_mono_ms() - t0 >= 190 && now_mono_ms() - t0 < 1500);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(l);
	env_stop();
}
