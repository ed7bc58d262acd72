/* test_metrics.c - counting, label sets and their cap, shards summed across
 * threads, histogram buckets, the exposition text and the scrape listener
 * (real sockets on loopback). */
#include <criterion/criterion.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "metrics.h"

METRIC_COUNTER(t_plain, "test_plain_total", "A counter without labels.")
METRIC_COUNTER(t_labels, "test_labels_total", "A counter with \"two\" labels.", "a", "b")
METRIC_COUNTER(t_capped, "test_capped_total", "A counter with many label sets.", "n")
METRIC_COUNTER(t_threads, "test_threads_total", "Counted by many threads.")
METRIC_GAUGE(t_gauge, "test_gauge", "A gauge.", "kind")
static const double t_bounds[] = { 0.1, 1, 10 };
METRIC_HISTOGRAM(t_hist, "test_hist_seconds", "A histogram.", t_bounds, "op")

static char *
render(void)
{
	char *s = metrics_render(NULL);

	cr_assert_not_null(s);
	return s;
}

Test(metrics, counter_without_labels_is_shown_at_zero_then_counts)
{
	char *s = render();

	cr_assert_not_null(strstr(s, "# HELP hyper_relay_test_plain_total A counter without labels.\n"
	    "# TYPE hyper_relay_test_plain_total counter\nhyper_relay_test_plain_total 0\n"));
	free(s);
	metric_inc(&t_plain);
	metric_add(&t_plain, 41);
	s = render();
	cr_assert_not_null(strstr(s, "\nhyper_relay_test_plain_total 42\n"));
	free(s);
}

Test(metrics, labels_are_escaped_and_kept_apart)
{
	char *s;

	metric_inc(&t_labels, "x", "y");
	metric_add(&t_labels, 2, "x", "y");
	metric_inc(&t_labels, "q\"u\\o\nte", "z");
	cr_assert_eq(metric_value(&t_labels, METRIC_VALUES_("x", "y")), 3);
	s = render();
	cr_assert_not_null(strstr(s, "hyper_relay_test_labels_total{a=\"x\",b=\"y\"} 3\n"));
	cr_assert_not_null(strstr(s,
	    "hyper_relay_test_labels_total{a=\"q\\\"u\\\\o\\nte\",b=\"z\"} 1\n"));
	cr_assert_not_null(strstr(s, "# HELP hyper_relay_test_labels_total A counter with \"two\" labels.\n"));
	free(s);
}

Test(metrics, label_sets_over_the_cap_share_one_overflow_series)
{
	char v[16], *s;

	for (int i = 0; i < METRIC_MAX_SERIES + 50; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		metric_inc(&t_capped, v);
	}
	cr_assert_eq(metric_value(&t_capped, METRIC_VALUES_("v0")), 1);
	cr_assert_eq(metric_value(&t_capped, METRIC_VALUES_("_overflow")), 51);
	s = render();
	cr_assert_not_null(strstr(s, "hyper_relay_test_capped_total{n=\"_overflow\"} 51\n"));
	cr_assert_null(strstr(s, "n=\"v100\""));
	free(s);
}

#define NTHREADS	(METRIC_MAX_THREADS + 4)	/* some share the last shard */
#define PER_THREAD	100000

static void *
count_main(void *arg)
{
	for (int i = 0; i < PER_THREAD; i++) {
		metric_inc(&t_threads);
		metric_inc(&t_gauge, "up");
		metric_dec(&t_gauge, "down");
	}
	return NULL;
}

Test(metrics, shards_of_all_threads_are_summed)
{
	pthread_t t[NTHREADS];

	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, count_main, NULL), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(metric_value(&t_threads, NULL), (int64_t)NTHREADS * PER_THREAD);
	cr_assert_eq(metric_value(&t_gauge, METRIC_VALUES_("up")), (int64_t)NTHREADS * PER_THREAD);
	cr_assert_eq(metric_value(&t_gauge, METRIC_VALUES_("down")),
	    -(int64_t)NTHREADS * PER_THREAD);
}

Test(metrics, gauge_set_adds_to_the_counted_deltas)
{
	metric_set(&t_gauge, 7, "set");
	metric_inc(&t_gauge, "set");
	cr_assert_eq(metric_value(&t_gauge, METRIC_VALUES_("set")), 8);
}

Test(metrics, series_used_tells_the_label_sets_seen)
{
	int s = metric_series(&t_gauge, METRIC_VALUES_("seen"));

	cr_assert(metric_series_used(&t_gauge, s));
	cr_assert_not(metric_series_used(&t_gauge, s + 1), "a slot never claimed");
	cr_assert_not(metric_series_used(&t_gauge, -1));
	cr_assert_not(metric_series_used(&t_gauge, METRIC_MAX_SERIES));
}

Test(metrics, histogram_buckets_are_cumulative_with_sum_and_count)
{
	char *s;

	metric_observe(&t_hist, 0.05, "get");	/* <= 0.1 */
	metric_observe(&t_hist, 0.1, "get");	/* <= 0.1: bounds are inclusive */
	metric_observe(&t_hist, 5, "get");	/* <= 10 */
	metric_observe(&t_hist, 50, "get");	/* +Inf */
	cr_assert_eq(metric_value(&t_hist, METRIC_VALUES_("get")), 4);
	cr_assert_float_eq(metric_hist_sum(&t_hist, METRIC_VALUES_("get")), 55.15, 1e-9);
	s = render();
	cr_assert_not_null(strstr(s, "# TYPE hyper_relay_test_hist_seconds histogram\n"));
	cr_assert_not_null(strstr(s,
	    "hyper_relay_test_hist_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
	    "hyper_relay_test_hist_seconds_bucket{op=\"get\",le=\"1\"} 2\n"
	    "hyper_relay_test_hist_seconds_bucket{op=\"get\",le=\"10\"} 3\n"
	    "hyper_relay_test_hist_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
	    "hyper_relay_test_hist_seconds_sum{op=\"get\"} 55.15\n"
	    "hyper_relay_test_hist_seconds_count{op=\"get\"} 4\n"));
	free(s);
}

Test(metrics, open_fds_are_counted_at_scrape)
{
	char *s = render();

	cr_assert_not_null(strstr(s, "# TYPE hyper_relay_open_fds gauge\nhyper_relay_open_fds "));
	free(s);
}

Test(metrics, address_check)
{
	cr_assert(metrics_address_ok("127.0.0.1:9100"));
	cr_assert(metrics_address_ok("[::1]:9100"));
	cr_assert(metrics_address_ok("localhost:1"));
	cr_assert_not(metrics_address_ok("9100"));
	cr_assert_not(metrics_address_ok("host:0"));
	cr_assert_not(metrics_address_ok("host:65536"));
	cr_assert_not(metrics_address_ok("host:x"));
}

/* --- the listener --------------------------------------------------------- */

struct srv {
	struct event_base	*base;
	struct metrics_server	*ms;
	pthread_t		 t;
	int			 port;
};

static void *
srv_main(void *arg)
{
	struct srv *s = arg;

	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void
srv_start(struct srv *s, double timeout)
{
	char err[256];

	s->base = event_base_new();
	s->ms = metrics_server_new(s->base, "127.0.0.1:0", timeout, 0, err, sizeof(err));
	cr_assert_not_null(s->ms, "%s", err);
	s->port = metrics_server_port(s->ms);
	cr_assert_eq(pthread_create(&s->t, NULL, srv_main, s), 0);
}

static int
srv_connect(const struct srv *s)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Send req, read the answer until the server closes; returns it. */
static char *
srv_ask(const struct srv *s, const char *req)
{
	static char buf[1 << 20];
	size_t n = 0;
	ssize_t r;
	int fd = srv_connect(s);

	cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	close(fd);
	return buf;
}

Test(metrics, listener_serves_get_and_head_only_on_metrics, .timeout = 20)
{
	struct srv s;
	char *a;

	srv_start(&s, 5);
	a = srv_ask(&s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
	cr_assert(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", a);
	cr_assert_not_null(strstr(a, "Content-Type: text/plain; version=0.0.4"));
	cr_assert_not_null(strstr(a, "\r\n\r\n# HELP "));
	a = srv_ask(&s, "HEAD /metrics HTTP/1.0\r\n\r\n");
	cr_assert(strncmp(a, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", a);
	cr_assert_null(strstr(a, "# HELP"));
	a = srv_ask(&s, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	cr_assert(strncmp(a, "HTTP/1.1 405 ", 13) == 0, "%s", a);
	cr_assert_not_null(strstr(a, "Allow: GET, HEAD\r\n"));
	a = srv_ask(&s, "GET /other HTTP/1.1\r\n\r\n");
	cr_assert(strncmp(a, "HTTP/1.1 404 ", 13) == 0, "%s", a);
	a = srv_ask(&s, "garbage\r\n\r\n");
	cr_assert(strncmp(a, "HTTP/1.1 400 ", 13) == 0, "%s", a);
}

Test(metrics, unfinished_request_is_closed_after_the_timeout, .timeout = 20)
{
	struct srv s;
	char buf[64];
	int fd;
	time_t t0;

	srv_start(&s, 0.5);
	fd = srv_connect(&s);
	cr_assert_eq(write(fd, "GET /metr", 9), 9);
	t0 = time(NULL);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 0);
	cr_assert_leq(time(NULL) - t0, 3);
	close(fd);
	/* Still serving. */
	cr_assert(strncmp(srv_ask(&s, "GET /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 200", 12) == 0);
}

Test(metrics, connections_over_the_cap_are_closed_at_once, .timeout = 20)
{
	struct srv s;
	int fds[METRICS_MAX_CONNS], fd;
	char buf[8];

	srv_start(&s, 10);
	for (int i = 0; i < METRICS_MAX_CONNS; i++)
		fds[i] = srv_connect(&s);
	usleep(200000);
	fd = srv_connect(&s);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 0, "over the cap: closed without an answer");
	close(fd);
	for (int i = 0; i < METRICS_MAX_CONNS; i++)
		close(fds[i]);
	usleep(200000);
	cr_assert(strncmp(srv_ask(&s, "GET /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 200", 12) == 0);
}

Test(metrics, address_in_use_is_an_error)
{
	struct event_base *base = event_base_new();
	struct metrics_server *a, *b;
	char err[256], addr[64];

	a = metrics_server_new(base, "127.0.0.1:0", 1, 0, err, sizeof(err));
	cr_assert_not_null(a);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", metrics_server_port(a));
	b = metrics_server_new(base, addr, 1, 0, err, sizeof(err));
	cr_assert_null(b);
	cr_assert_not_null(strstr(err, "address already in use"), "%s", err);
	metrics_server_free(a);
	event_base_free(base);
}
