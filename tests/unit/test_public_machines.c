/* Tests for the public proxy's loop-thread machines (public_client.c,
 * public_data.c): the client hello/park machine and the data-connection
 * token machine, driven through real loopback sockets and the real
 * io_uring loop.  The test thread runs the loop itself, in short bursts
 * until a condition holds, so every step is in a known order.  The side
 * thread is not started: a parked client's incomingConnection is taken by
 * p_on_parked here (the token is what a private proxy would be told). */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "announce.h"
#include "loop.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "ratelimit.h"
#include "relay.h"
#include "srccap.h"
#include "ticket.h"
#include "token.h"
#include "util.h"
#include "../../src/proxy/public_int.h"
#include "loop_wait.h"

static struct proxy_conf conf;
static char conf_name[] = "public-test";
static struct public pub;
static int tls_port, data_port;
static uint8_t told[TOKEN_LEN];         /* the last token handed to incomingConnection */
static int ntold;

static void
told_parked(struct public *p, struct incoming *in)
{
	memcpy(told, in->in_token, TOKEN_LEN);
	ntold++;
	free(in);
}

static int
listen_on(struct loop_listener *l, void (*cb)(struct loop_listener *, int))
{
	char err[256];
	int fd = listen_tcp("127.0.0.1:0", 64, err, sizeof(err));

	cr_assert_geq(fd, 0, "%s", err);
	loop_listener_start(pub.p_loop, l, fd, cb, &pub);
	return sock_port(fd);
}

static void
setup(void)
{
	struct relay_settings rs;
	struct announcement a;

	memset(&conf, 0, sizeof(conf));
	memset(&pub, 0, sizeof(pub));
	conf.pc_name = conf_name;
	conf.pc_hello_timeout = 0.3;
	conf.pc_hello_max_bytes = 16384;
	conf.pc_accept_timeout = 0.4;
	conf.pc_token_timeout = 0.3;
	conf.pc_max_connections = 100;
	conf.pc_max_data_connections = 100;
	conf.pc_ticket_lifetime = 60;
	conf.pc_ticket_key_lifetime = 600;
	conf.pc_max_pooled = 64;
	conf.pc_pool_idle_lifetime = 60;
	pub.p_conf = &conf;
	pub.p_on_parked = told_parked;
	ntold = 0;
	cr_assert_eq(public_loop_init(&pub), 0);
	cr_assert_not_null(pub.p_announce = announce_table_new());
	cr_assert_eq(announce_make(&a, "app.example.com", "op1", NULL, now_wall() + 3600), 0);
	cr_assert_eq(announce_put(pub.p_announce, &a), 0);
	cr_assert_not_null(pub.p_loop = loop_new(256));
	relay_settings_default(&rs);
	cr_assert_not_null(pub.p_relay = relay_new(pub.p_loop, &rs));
	loop_timer_list_init(pub.p_loop, &pub.p_hello_timers,
	    (uint64_t)(conf.pc_hello_timeout * 1000), pconn_hello_expired, &pub);
	loop_timer_list_init(pub.p_loop, &pub.p_park_timers,
	    (uint64_t)(conf.pc_accept_timeout * 1000), pconn_park_expired, &pub);
	loop_timer_list_init(pub.p_loop, &pub.p_token_timers,
	    (uint64_t)(conf.pc_token_timeout * 1000), dconn_token_expired, &pub);
	pconn_retry_timers_init(&pub);
	tls_port = listen_on(&pub.p_tls_listener, public_tls_accept);
	data_port = listen_on(&pub.p_data_listener, public_data_accept);
	public_pool_start(&pub);
}

static void
teardown(void)
{
	int tls_fd = pub.p_tls_listener.ll_fd, data_fd = pub.p_data_listener.ll_fd;

	relay_free(pub.p_relay);
	loop_free(pub.p_loop);
	close(tls_fd);
	close(data_fd);
	public_loop_free(&pub);
	announce_table_free(pub.p_announce);
}

TestSuite(public_machines, .init = setup, .fini = teardown);

/* --- running the loop until a condition holds ------------------------------ */

static int
run_until(int (*pred)(void), unsigned ms)
{
	return loop_run_until(pub.p_loop, pred, ms);
}

static int
no_client(void)
{
	return TAILQ_EMPTY(&pub.p_pconns);
}

static int
no_data(void)
{
	return TAILQ_EMPTY(&pub.p_dconns);
}

/* a data connection came and is gone */
static int
data_gone(void)
{
	return pub.p_data_listener.ll_accepted >= 1 && TAILQ_EMPTY(&pub.p_dconns);
}

static int
one_client(void)
{
	return !TAILQ_EMPTY(&pub.p_pconns);
}

static int
one_data(void)
{
	return !TAILQ_EMPTY(&pub.p_dconns);
}

static int
parked(void)
{
	struct pconn *c = TAILQ_FIRST(&pub.p_pconns);

	return c != NULL && c->c_state == PC_PARKED && ntold == 1;
}

static int
joined(void)
{
	struct pconn *c = TAILQ_FIRST(&pub.p_pconns);

	return c != NULL && c->c_state == PC_JOINED && TAILQ_EMPTY(&pub.p_dconns);
}

/* --- sockets ----------------------------------------------------------------- */

static int
dial(int port)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "%s", strerror(errno));
	return fd;
}

static void
send_all(int fd, const void *buf, size_t n)
{
	cr_assert_eq(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* What the proxy sent before closing: the bytes (at most cap) and whether
 * the socket reached EOF (or a reset) within a short wait. */
static ssize_t
drain_peer(int fd, unsigned char *buf, size_t cap, int *eof)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t got = 0, n;

	*eof = 0;
	while (poll(&pfd, 1, 500) == 1) {
		n = recv(fd, buf + got, cap - (size_t)got, MSG_DONTWAIT);
		if (n <= 0) {
			*eof = n == 0 || errno == ECONNRESET;
			break;
		}
		got += n;
		if ((size_t)got == cap)
			break;
	}
	return got;
}

/* --- metrics ----------------------------------------------------------------- */

/* The value of one sample in a scrape, e.g.
 * sample("public_connections_total{result=\"no_sni\"}"); 0 when absent
 * (each test runs in a process of its own, so every count starts at 0). */
static long long
sample(const char *series)
{
	char *text, *at, want[256];
	long long v = 0;
	size_t len;

	snprintf(want, sizeof(want), "\n" METRIC_PREFIX "%s ", series);
	cr_assert_not_null(text = metrics_render(&len));
	if ((at = strstr(text, want)) != NULL)
		v = strtoll(at + strlen(want), NULL, 10);
	free(text);
	return v;
}

static long long
clients(const char *result)
{
	char series[128];

	snprintf(series, sizeof(series), "public_connections_total{result=\"%s\"}", result);
	return sample(series);
}

static long long
datas(const char *result)
{
	char series[128];

	snprintf(series, sizeof(series), "public_data_connections_total{result=\"%s\"}",
	    result);
	return sample(series);
}

/* --- ClientHellos -------------------------------------------------------------- */

static void
put16(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

/* A TLS 1.2-style ClientHello in one record; name NULL: no extensions. */
static size_t
hello(const char *name, unsigned char *b)
{
	size_t n = 9, body, len;

	memset(b, 0, 9);
	b[0] = 22; b[1] = 3; b[2] = 1;
	b[5] = 1;
	b[n++] = 3; b[n++] = 3;
	memset(b + n, 0xab, 32); n += 32;
	b[n++] = 0;                     /* session id */
	put16(b + n, 4); n += 2;        /* two cipher suites */
	b[n++] = 0x13; b[n++] = 0x01; b[n++] = 0xc0; b[n++] = 0x2f;
	b[n++] = 1; b[n++] = 0;         /* null compression */
	if (name != NULL) {
		len = strlen(name);
		put16(b + n, len + 9); n += 2;  /* extensions */
		put16(b + n, 0); n += 2;        /* server_name */
		put16(b + n, len + 5); n += 2;
		put16(b + n, len + 3); n += 2;
		b[n++] = 0;                     /* host_name */
		put16(b + n, len); n += 2;
		memcpy(b + n, name, len); n += len;
	}
	body = n - 9;
	b[6] = (unsigned char)(body >> 16);
	put16(b + 7, body);
	put16(b + 3, n - 5);
	return n;
}

/* The fatal alert the proxy answers with, or -1 when it sent none. */
static int
alert_of(const unsigned char *b, ssize_t n)
{
	if (n != 7 || b[0] != 0x15 || b[5] != 2)
		return -1;
	return b[6];
}

/* --- the client hello/park machine ----------------------------------------- */

Test(public_machines, hello_with_announced_sni_parks_under_a_fresh_token)
{
	unsigned char b[512];
	int fd = dial(tls_port);
	size_t n = hello("app.example.com", b);

	send_all(fd, b, n);
	cr_assert(run_until(parked, 2000), "not parked");
	cr_assert_eq(token_count(pub.p_tokens), 1);
	cr_assert_str_eq(TAILQ_FIRST(&pub.p_pconns)->c_sni, "app.example.com");
	cr_assert_str_eq(TAILQ_FIRST(&pub.p_pconns)->c_operator, "op1");
	cr_assert_eq(pub.p_nconns, 1);
	cr_assert_eq(clients("accepted"), 1);
	cr_assert_eq(sample("public_parked"), 1);
	close(fd);
}

Test(public_machines, hello_without_sni_gets_unrecognized_name)
{
	unsigned char b[512];
	int fd = dial(tls_port), eof;
	ssize_t got;

	send_all(fd, b, hello(NULL, b));
	cr_assert(run_until(no_client, 2000));
	run_until(NULL, 50);
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_UNRECOGNIZED_NAME);
	cr_assert(eof);
	cr_assert_eq(pub.p_nconns, 0);
	cr_assert_eq(ntold, 0);
	cr_assert_eq(clients("accepted"), 1);
	cr_assert_eq(clients("no_sni"), 1);
	cr_assert_eq(clients("unknown_name"), 0);
	cr_assert_eq(sample("public_parked"), 0);
	close(fd);
}

Test(public_machines, sni_not_announced_gets_unrecognized_name)
{
	unsigned char b[512];
	int fd = dial(tls_port), eof;
	ssize_t got;

	send_all(fd, b, hello("other.example.com", b));
	cr_assert(run_until(no_client, 2000));
	run_until(NULL, 50);
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_UNRECOGNIZED_NAME);
	cr_assert_eq(token_count(pub.p_tokens), 0);
	cr_assert_eq(clients("unknown_name"), 1);
	cr_assert_eq(clients("no_sni"), 0);
	close(fd);
}

Test(public_machines, garbage_gets_decode_error)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
	unsigned char b[64];
	int fd = dial(tls_port), eof;
	ssize_t got;

	send_all(fd, req, sizeof(req) - 1);
	cr_assert(run_until(no_client, 2000));
	run_until(NULL, 50);
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_DECODE_ERROR);
	cr_assert_eq(clients("malformed"), 1);
	close(fd);
}

Test(public_machines, hello_split_in_pieces_still_parks)
{
	unsigned char b[512];
	size_t n = hello("app.example.com", b);
	int fd = dial(tls_port);

	/* the header alone, then the rest: the reader waits for the record */
	send_all(fd, b, 5);
	cr_assert(run_until(one_client, 2000));
	cr_assert_not(run_until(parked, 150));
	cr_assert_eq(TAILQ_FIRST(&pub.p_pconns)->c_state, PC_HELLO);
	send_all(fd, b + 5, n - 5);
	cr_assert(run_until(parked, 2000));
	close(fd);
}

Test(public_machines, silent_client_is_closed_at_hello_timeout)
{
	unsigned char b[16];
	uint64_t t0 = now_mono_ms();
	int fd = dial(tls_port), eof;

	cr_assert(run_until(one_client, 2000));
	cr_assert(run_until(no_client, 3000), "not closed");
	/* 0.3 s, plus at most one 100 ms tick */
	cr_assert_geq(now_mono_ms() - t0, 250);
	run_until(NULL, 50);            /* the close is submitted */
	cr_assert_eq(drain_peer(fd, b, sizeof(b), &eof), 0);
	cr_assert(eof);
	cr_assert_eq(clients("hello_timeout"), 1);
	close(fd);
}

Test(public_machines, parked_client_is_closed_at_accept_timeout)
{
	unsigned char b[512];
	int fd = dial(tls_port);
	uint64_t t0;

	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	t0 = now_mono_ms();
	cr_assert(run_until(no_client, 3000), "not closed");
	cr_assert_geq(now_mono_ms() - t0, 250);
	cr_assert_eq(token_count(pub.p_tokens), 0, "the token is gone with it");
	cr_assert_eq(pub.p_nconns, 0);
	cr_assert_eq(clients("accept_timeout"), 1);
	cr_assert_eq(sample("public_parked"), 0);
	close(fd);
}

Test(public_machines, failed_incoming_call_closes_the_parked_client)
{
	unsigned char b[512];
	struct incoming *in = calloc(1, sizeof(*in));
	int fd = dial(tls_port), eof;
	ssize_t got;

	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	in->in_pub = &pub;
	memcpy(in->in_token, told, TOKEN_LEN);
	cr_assert_eq(loop_post(pub.p_loop, incoming_failed, in), 0);
	cr_assert(run_until(no_client, 1000));
	run_until(NULL, 50);
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_INTERNAL_ERROR);
	cr_assert_eq(clients("incoming_failed"), 1);
	cr_assert_eq(sample("public_parked"), 0);
	close(fd);
}

/* incomingConnection of the parked client failed with a 502, 503 or 504 (as the
 * side thread posts it). */
static void
fail_transient(void)
{
	struct incoming *in = calloc(1, sizeof(*in));

	cr_assert_not_null(in);
	in->in_pub = &pub;
	in->in_transient = 1;
	memcpy(in->in_token, told, TOKEN_LEN);
	cr_assert_eq(loop_post(pub.p_loop, incoming_failed, in), 0);
}

static int
told_twice(void)
{
	return ntold == 2;
}

Test(public_machines, transient_failure_is_tried_again_with_the_same_token)
{
	unsigned char b[512], first[TOKEN_LEN];
	int fd = dial(tls_port);
	uint64_t t0;

	conf.pc_incoming_retry = 1;     /* the lists of the setup: 100 ms, 200 ms, ... */
	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	memcpy(first, told, TOKEN_LEN);
	t0 = now_mono_ms();
	fail_transient();
	cr_assert(run_until(told_twice, 1000), "no second try");
	cr_assert_geq(now_mono_ms() - t0, PUBLIC_RETRY_FIRST_MS - 10, "no backoff");
	cr_assert_arr_eq(told, first, TOKEN_LEN, "the token changed");
	cr_assert_eq(TAILQ_FIRST(&pub.p_pconns)->c_state, PC_PARKED, "the client waits");
	cr_assert_eq(token_count(pub.p_tokens), 1);
	cr_assert_eq(sample("public_parked"), 1);
	close(fd);
}

Test(public_machines, transient_failures_until_accept_timeout_end_with_internal_error)
{
	unsigned char b[512];
	int fd = dial(tls_port), eof;
	ssize_t got;

	conf.pc_incoming_retry = 1;     /* the lists of the setup: 100 ms, 200 ms, ... */
	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	fail_transient();
	cr_assert(run_until(told_twice, 1000));
	fail_transient();
	cr_assert(run_until(no_client, 2000), "not closed at accept_timeout");
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_INTERNAL_ERROR);
	cr_assert_eq(clients("incoming_failed"), 1);
	cr_assert_eq(clients("accept_timeout"), 0);
	cr_assert_eq(sample("public_parked"), 0);
	cr_assert_eq(token_count(pub.p_tokens), 0);
	close(fd);
}

Test(public_machines, transient_failure_without_retries_closes_at_once)
{
	unsigned char b[512];
	int fd = dial(tls_port), eof;
	ssize_t got;

	/* incoming_retry_backoff 0 (the setup's): as before issue #16 */
	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	fail_transient();
	cr_assert(run_until(no_client, 300));
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_INTERNAL_ERROR);
	cr_assert_eq(ntold, 1);
	close(fd);
}

Test(public_machines, a_name_withdrawn_before_the_retry_ends_the_client)
{
	unsigned char b[512];
	int fd = dial(tls_port), eof;
	ssize_t got;

	conf.pc_incoming_retry = 1;     /* the lists of the setup: 100 ms, 200 ms, ... */
	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	fail_transient();
	cr_assert_eq(announce_remove(pub.p_announce, "app.example.com", NULL, "op1"), 1);
	cr_assert(run_until(no_client, 1000));
	got = drain_peer(fd, b, sizeof(b), &eof);
	cr_assert_eq(alert_of(b, got), ALERT_UNRECOGNIZED_NAME);
	cr_assert_eq(ntold, 1, "not tried again");
	close(fd);
}

Test(public_machines, a_late_failure_of_a_joined_client_changes_nothing)
{
	unsigned char b[512];
	int fd = dial(tls_port), dfd;

	conf.pc_incoming_retry = 1;     /* the lists of the setup: 100 ms, 200 ms, ... */
	send_all(fd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	dfd = dial(data_port);
	send_all(dfd, told, TOKEN_LEN);
	cr_assert(run_until(joined, 2000));
	fail_transient();       /* an earlier try's answer, arriving late */
	run_until(NULL, 300);
	cr_assert_eq(ntold, 1);
	cr_assert_eq(TAILQ_FIRST(&pub.p_pconns)->c_state, PC_JOINED);
	close(dfd);
	close(fd);
}

/* --- the data-connection machine -------------------------------------------- */

Test(public_machines, matching_token_joins_the_pair_and_relays)
{
	unsigned char b[512], r[512];
	size_t n = hello("app.example.com", b);
	int cfd = dial(tls_port), dfd, eof;
	ssize_t got;

	send_all(cfd, b, n);
	cr_assert(run_until(parked, 2000));
	dfd = dial(data_port);
	/* the token in two pieces: the machine reads exactly what is missing */
	send_all(dfd, told, 10);
	cr_assert(run_until(one_data, 2000));
	send_all(dfd, told + 10, TOKEN_LEN - 10);
	cr_assert(run_until(joined, 2000), "not joined");
	cr_assert_eq(token_count(pub.p_tokens), 0);
	cr_assert_eq(pub.p_nconns, 2);
	cr_assert_eq(pub.p_ndata, 0);
	cr_assert_eq(clients("joined"), 1);
	cr_assert_eq(datas("accepted"), 1);
	cr_assert_eq(datas("joined"), 1);
	cr_assert_eq(sample("public_parked"), 0);
	/* the peeked hello travels first, then both directions */
	send_all(cfd, "ping", 4);
	run_until(NULL, 100);
	got = drain_peer(dfd, r, n + 4, &eof);
	cr_assert_eq(got, (ssize_t)n + 4);
	cr_assert_eq(memcmp(r, b, n), 0);
	cr_assert_eq(memcmp(r + n, "ping", 4), 0);
	send_all(dfd, "pong", 4);
	run_until(NULL, 100);
	got = drain_peer(cfd, r, 4, &eof);
	cr_assert_eq(got, 4);
	cr_assert_eq(memcmp(r, "pong", 4), 0);
	/* both ends close: the relay's report frees the client */
	close(cfd);
	close(dfd);
	cr_assert(run_until(no_client, 2000));
	cr_assert_eq(pub.p_nconns, 0);
}

Test(public_machines, wrong_token_is_closed_and_the_client_stays_parked)
{
	unsigned char b[512], wrong[TOKEN_LEN];
	int cfd = dial(tls_port), dfd, eof;

	send_all(cfd, b, hello("app.example.com", b));
	cr_assert(run_until(parked, 2000));
	memcpy(wrong, told, TOKEN_LEN);
	wrong[TOKEN_LEN - 1] ^= 1;
	dfd = dial(data_port);
	send_all(dfd, wrong, TOKEN_LEN);
	cr_assert(run_until(data_gone, 2000));
	run_until(NULL, 50);            /* the close is submitted */
	cr_assert_eq(drain_peer(dfd, b, sizeof(b), &eof), 0);
	cr_assert(eof);
	cr_assert_eq(pub.p_ndata, 0);
	cr_assert(parked());
	cr_assert_eq(token_count(pub.p_tokens), 1);
	cr_assert_eq(datas("unknown_token"), 1);
	cr_assert_eq(datas("joined"), 0);
	cr_assert_eq(sample("public_parked"), 1);
	close(dfd);
	close(cfd);
}

Test(public_machines, silent_data_connection_is_closed_at_token_timeout)
{
	unsigned char b[16];
	uint64_t t0 = now_mono_ms();
	int dfd = dial(data_port), eof;

	send_all(dfd, "abc", 3);        /* a piece of a token, never the rest */
	cr_assert(run_until(one_data, 2000));
	cr_assert(run_until(no_data, 3000), "not closed");
	cr_assert_geq(now_mono_ms() - t0, 250);
	run_until(NULL, 50);
	cr_assert_eq(drain_peer(dfd, b, sizeof(b), &eof), 0);
	cr_assert(eof);
	cr_assert_eq(pub.p_ndata, 0);
	cr_assert_eq(datas("token_timeout"), 1);
	close(dfd);
}

Test(public_machines, data_connection_closed_before_its_token_is_freed)
{
	int dfd = dial(data_port);

	cr_assert(run_until(one_data, 2000));
	cr_assert_eq(TAILQ_FIRST(&pub.p_dconns)->dc_state, DC_TOKEN);
	close(dfd);
	cr_assert(run_until(no_data, 2000));
	cr_assert_eq(pub.p_ndata, 0);
	cr_assert_eq(datas("accepted"), 1);
	cr_assert_eq(datas("closed"), 1);
}

/* --- pooled data connections: minted tickets ----------------------------------- */

static struct ticket_stats
op1_stats(void)
{
	struct ticket_stats st;

	memset(&st, 0, sizeof(st));
	(void)ticket_stats(pub.p_tickets, "op1", &st);
	return st;
}

static int
one_pooled(void)
{
	return op1_stats().ts_idle == 1 && TAILQ_EMPTY(&pub.p_dconns);
}

static int
refused_twice(void)
{
	return datas("ticket_refused") == 2 && TAILQ_EMPTY(&pub.p_dconns);
}

/* The 32 bytes on the data port were closed at once (nothing relayed). */
static void
assert_closed(int fd)
{
	unsigned char b[16];
	int eof;

	run_until(NULL, 50);
	cr_assert_eq(drain_peer(fd, b, sizeof(b), &eof), 0);
	cr_assert(eof, "not closed");
	close(fd);
}

Test(public_machines, minted_ticket_is_pooled_once_replay_and_bad_mac_closed)
{
	struct ticket_key k;
	uint8_t t[TICKET_LEN], bad[TICKET_LEN], forged[TICKET_LEN];
	unsigned char b[512];
	int pfd, rfd, mfd, ffd, cfd, eof;
	struct ticket_stats st;

	cr_assert_eq(ticket_key(pub.p_tickets, "op1", now_wall(), &k), TICKET_OK);
	cr_assert_eq(ticket_mint(&k, NULL, now_wall(), 60, t), 0);
	/* good: pooled for op1, the connection stays open */
	pfd = dial(data_port);
	send_all(pfd, t, TICKET_LEN);
	cr_assert(run_until(one_pooled, 2000), "not pooled");
	st = op1_stats();
	cr_assert_eq(st.ts_minted, 1);
	cr_assert_eq(pub.p_ndata, 0);
	/* the same ticket again: replayed; the same nonce with a MAC byte
	 * changed: bad MAC; an unknown key id: not a ticket at all */
	rfd = dial(data_port);
	send_all(rfd, t, TICKET_LEN);
	memcpy(bad, t, TICKET_LEN);
	bad[TICKET_LEN - 1] ^= 0x80;
	mfd = dial(data_port);
	send_all(mfd, bad, TICKET_LEN);
	cr_assert(run_until(refused_twice, 2000), "replay and bad MAC not refused");
	memcpy(forged, t, TICKET_LEN);
	forged[0] ^= 0x01;
	ffd = dial(data_port);
	send_all(ffd, forged, TICKET_LEN);
	cr_assert(run_until(data_gone, 2000));
	run_until(no_data, 2000);
	cr_assert_eq(datas("unknown_token"), 1);
	assert_closed(rfd);
	assert_closed(mfd);
	assert_closed(ffd);
	/* nothing consumed by the refusals: one pooled, one minted */
	st = op1_stats();
	cr_assert_eq(st.ts_idle, 1);
	cr_assert_eq(st.ts_minted, 1);
	/* and a client of op1 takes the minted connection: frame, then hello */
	cfd = dial(tls_port);
	send_all(cfd, b, hello("app.example.com", b));
	cr_assert(run_until(joined, 2000), "not joined to the pooled connection");
	cr_assert_eq(ntold, 0, "no incomingConnection");
	cr_assert_geq(drain_peer(pfd, b, 8, &eof), 8);
	cr_assert_eq(memcmp(b, "HPSF", 4), 0);
	cr_assert_eq(op1_stats().ts_used, 1);
	close(cfd);
	close(pfd);
	cr_assert(run_until(no_client, 2000));
}

/* --- refusals at accept, counted by result ---------------------------------- */

Test(public_machines, over_tcp_rate_limits_is_refused_and_counted)
{
	static const struct rate_limit one = { .rl_window = 60, .rl_limit = 1 };
	int a, b, eof;
	unsigned char buf[8];

	ratelimit_free(pub.p_limits);
	cr_assert_not_null(pub.p_limits = ratelimit_new(&one, 1, &conf.pc_rate_prefixes, 64));
	a = dial(tls_port);
	cr_assert(run_until(one_client, 2000));
	b = dial(tls_port);             /* the second one within the minute */
	run_until(NULL, 200);
	cr_assert_eq(drain_peer(b, buf, sizeof(buf), &eof), 0);
	cr_assert(eof, "closed at accept");
	cr_assert_eq(clients("accepted"), 1);
	cr_assert_eq(clients("rate_limit"), 1);
	close(a);
	close(b);
}

Test(public_machines, over_max_connections_per_source_is_refused_and_counted)
{
	int a, b, eof;
	unsigned char buf[8];

	srccap_free(pub.p_sources);
	cr_assert_not_null(pub.p_sources = srccap_new(1));
	a = dial(tls_port);
	cr_assert(run_until(one_client, 2000));
	b = dial(tls_port);             /* while the first is held */
	run_until(NULL, 200);
	cr_assert_eq(drain_peer(b, buf, sizeof(buf), &eof), 0);
	cr_assert(eof, "closed at accept");
	cr_assert_eq(clients("accepted"), 1);
	cr_assert_eq(clients("source_limit"), 1);
	cr_assert_eq(clients("rate_limit"), 0);
	close(a);
	close(b);
}

static int
accepted_twice(void)
{
	return pub.p_tls_listener.ll_accepted >= 2;
}

Test(public_machines, max_connections_pauses_the_tls_listener_and_says_so)
{
	int a, b;

	conf.pc_max_connections = 1;
	a = dial(tls_port);
	cr_assert(run_until(one_client, 2000));
	cr_assert_eq(sample("public_listener_pauses_total{listener=\"tls\"}"), 1);
	cr_assert_eq(sample("public_listener_paused{listener=\"tls\"}"), 1);
	b = dial(tls_port);             /* waits in the kernel's backlog */
	run_until(NULL, 200);
	cr_assert_eq(clients("accepted"), 1);
	close(a);                       /* closed before hello: room for b */
	cr_assert(run_until(accepted_twice, 2000), "the waiting one is accepted");
	cr_assert_eq(clients("accepted"), 2);
	/* a's end: its close, or its hello_timeout on a slow machine */
	cr_assert_eq(clients("closed") + clients("hello_timeout"), 1);
	/* b holds the only place: paused again */
	cr_assert_eq(sample("public_listener_pauses_total{listener=\"tls\"}"), 2);
	cr_assert_eq(sample("public_listener_paused{listener=\"tls\"}"), 1);
	close(b);
}
