/* Tests for the private proxy's machines.
 *
 * The dial job (private_dial.c): a job handed
 * over by incomingConnection connects to a public data endpoint and to the
 * internal server, both real listeners on loopback, writes the token (and
 * the PROXY header), and joins the two sockets in the real relay on the
 * real io_uring loop.  The test thread runs the loop itself, in short
 * bursts until a condition holds, and plays the public proxy and the
 * internal server with plain sockets.
 *
 * The announcer (private_announcer.c): see its suite below. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bsd/string.h>
#include <event2/event.h>
#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "datastore.h"
#include "jsonrpc.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "proxy_conf.h"
#include "proxyproto.h"
#include "relay.h"
#include "side.h"
#include "token.h"
#include "util.h"
#include "../../src/proxy/private_int.h"
#include "loop_wait.h"

static struct proxy_conf conf;
static struct private pv;
static int pub_lfd, int_lfd;            /* the public data port, the internal server */
static struct data_endpoint ep;
static uint8_t tok[TOKEN_LEN];

static int
listener(struct sockaddr_storage *ss, socklen_t *len)
{
	char err[256];
	int fd = listen_tcp("127.0.0.1:0", 16, err, sizeof(err));

	cr_assert_geq(fd, 0, "%s", err);
	*len = sizeof(*ss);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)ss, len), 0);
	return fd;
}

/* A port nothing listens on: bound, then closed. */
static void
dead_port(struct sockaddr_storage *ss, socklen_t *len)
{
	close(listener(ss, len));
}

static void
setup(void)
{
	struct relay_settings rs;

	log_init("test", LOG_LVL_ERROR);
	memset(&conf, 0, sizeof(conf));
	memset(&pv, 0, sizeof(pv));
	memset(&ep, 0, sizeof(ep));
	conf.pc_connect_timeout = 1;
	pv.pv_conf = &conf;
	TAILQ_INIT(&pv.pv_targets);
	TAILQ_INIT(&pv.pv_dials);
	cr_assert_not_null(pv.pv_loop = loop_new(256));
	relay_settings_default(&rs);
	cr_assert_not_null(pv.pv_relay = relay_new(pv.pv_loop, &rs));
	pv.pv_px.px_loop = pv.pv_loop;
	pub_lfd = listener(&ep.ep_sa, &ep.ep_salen);
	ep.ep_name = "127.0.0.1";
	int_lfd = listener(&pv.pv_int_sa, &pv.pv_int_salen);
	for (size_t i = 0; i < sizeof(tok); i++)
		tok[i] = (uint8_t)(i * 7 + 1);
}

static void
teardown(void)
{
	relay_free(pv.pv_relay);
	loop_free(pv.pv_loop);
	if (pub_lfd >= 0)
		close(pub_lfd);
	if (int_lfd >= 0)
		close(int_lfd);
}

TestSuite(dial_job, .init = setup, .fini = teardown);

/* --- running the loop until a condition holds ------------------------------ */

static int
run_until(int (*pred)(void), unsigned ms)
{
	return loop_run_until(pv.pv_loop, pred, ms);
}

/* the job is no longer on pv_dials: joined, or freed */
static int
no_dial(void)
{
	return TAILQ_EMPTY(&pv.pv_dials);
}

/* every socket of the job released */
static int
released(void)
{
	return TAILQ_EMPTY(&pv.pv_dials) && atomic_load(&pv.pv_nsockets) == 0;
}

static int watch_fd = -1;

static int
readable(void)
{
	struct pollfd pfd = { .fd = watch_fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 1;
}

/* 1 when the metrics exposition has this line (each test runs in a
 * process of its own: the counters start at 0). */
static int
metric_line(const char *line)
{
	size_t n;
	char *text = metrics_render(&n), want[256];
	int found;

	cr_assert_not_null(text);
	snprintf(want, sizeof(want), "\n%s\n", line);
	found = strstr(text, want) != NULL;
	if (!found)
		cr_log_info("metrics:\n%s", text);
	free(text);
	return found;
}

/* --- the job ------------------------------------------------------------------ */

/* What incomingConnection does: reserve the job's two sockets, post it. */
static struct dial *
dial_post(const uint8_t *pp, size_t pplen)
{
	struct sockaddr_storage client;
	struct sockaddr_in *sin = (struct sockaddr_in *)&client;
	struct dial *d;

	memset(&client, 0, sizeof(client));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(50000);
	sin->sin_addr.s_addr = htonl(0x0a010203);
	d = dial_new(&pv, tok, "app.example.com", "op1", &client, &ep, pp, pplen);
	cr_assert_not_null(d);
	atomic_fetch_add(&pv.pv_nsockets, 2);
	cr_assert_eq(loop_post(pv.pv_loop, dial_start, d), 0);
	return d;
}

static int
accept_one(int lfd)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	int fd;

	cr_assert_eq(poll(&pfd, 1, 1000), 1, "no connection came");
	fd = accept(lfd, NULL, NULL);
	cr_assert_geq(fd, 0, "%s", strerror(errno));
	return fd;
}

/* Read exactly n bytes within a second. */
static void
read_exactly(int fd, void *buf, size_t n)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		cr_assert_eq(poll(&pfd, 1, 1000), 1, "only %zu of %zu bytes came", got, n);
		r = recv(fd, (char *)buf + got, n - got, 0);
		cr_assert_gt(r, 0, "closed after %zu of %zu bytes", got, n);
		got += (size_t)r;
	}
}

/* EOF (or a reset) within a second, with no byte before it. */
static int
closed_empty(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&pfd, 1, 1000) != 1)
		return 0;
	return recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

Test(dial_job, both_ends_connect_the_token_goes_first_and_the_pair_is_relayed)
{
	uint8_t got[TOKEN_LEN];
	char buf[16];
	int pub, in;

	dial_post(NULL, 0);
	cr_assert(run_until(no_dial, 2000), "the job was not joined");
	cr_assert_eq(atomic_load(&pv.pv_nsockets), 2, "the relay holds both sockets");
	pub = accept_one(pub_lfd);
	in = accept_one(int_lfd);
	read_exactly(pub, got, sizeof(got));
	cr_assert_arr_eq(got, tok, sizeof(tok));

	/* the client's bytes (from the public proxy) reach the internal server */
	cr_assert_eq(send(pub, "hello", 5, 0), 5);
	watch_fd = in;
	cr_assert(run_until(readable, 2000));
	read_exactly(in, buf, 5);
	cr_assert_arr_eq(buf, "hello", 5);
	/* and the answer comes back */
	cr_assert_eq(send(in, "world!", 6, 0), 6);
	watch_fd = pub;
	cr_assert(run_until(readable, 2000));
	read_exactly(pub, buf, 6);
	cr_assert_arr_eq(buf, "world!", 6);

	/* both close: the relay's report frees the job and its sockets */
	close(pub);
	close(in);
	cr_assert(run_until(released, 2000), "the sockets were not released");
	cr_assert(metric_line("hyper_relay_private_dials_total{outcome=\"ok\"} 1"));
}

Test(dial_job, the_proxy_protocol_header_reaches_the_internal_server_first)
{
	static const uint8_t pp[] = "PROXY TCP4 10.1.2.3 127.0.0.1 50000 443\r\n";
	uint8_t got[TOKEN_LEN], hdr[sizeof(pp) - 1];
	int pub, in;

	dial_post(pp, sizeof(pp) - 1);
	cr_assert(run_until(no_dial, 2000));
	pub = accept_one(pub_lfd);
	in = accept_one(int_lfd);
	read_exactly(pub, got, sizeof(got));
	cr_assert_arr_eq(got, tok, sizeof(tok));
	read_exactly(in, hdr, sizeof(hdr));
	cr_assert_arr_eq(hdr, pp, sizeof(hdr));
	close(pub);
	close(in);
	cr_assert(run_until(released, 2000));
}

Test(dial_job, internal_server_down_the_token_still_goes_then_the_data_connection_closes)
{
	uint8_t got[TOKEN_LEN];
	int pub;

	close(int_lfd);
	int_lfd = -1;
	dead_port(&pv.pv_int_sa, &pv.pv_int_salen);
	dial_post(NULL, 0);
	cr_assert(run_until(released, 2000), "the failed job was not freed");
	/* the public proxy learns which client to drop, at once */
	pub = accept_one(pub_lfd);
	read_exactly(pub, got, sizeof(got));
	cr_assert_arr_eq(got, tok, sizeof(tok));
	cr_assert(closed_empty(pub), "the data connection stayed open");
	close(pub);
	cr_assert(metric_line("hyper_relay_private_dials_total{outcome=\"refused\"} 1"));
}

Test(dial_job, public_endpoint_down_the_internal_end_is_closed)
{
	int in;

	close(pub_lfd);
	pub_lfd = -1;
	dead_port(&ep.ep_sa, &ep.ep_salen);
	dial_post(NULL, 0);
	cr_assert(run_until(released, 2000), "the failed job was not freed");
	/* connected or cancelled: nothing reaches the internal server */
	{
		struct pollfd pfd = { .fd = int_lfd, .events = POLLIN };

		if (poll(&pfd, 1, 200) == 1) {
			in = accept_one(int_lfd);
			cr_assert(closed_empty(in), "the internal end stayed open");
			close(in);
		}
	}
	cr_assert(metric_line("hyper_relay_private_dials_total{outcome=\"refused\"} 1"));
}

/* A stop's drain: proxy_drained() asks ph_held(); say "still held", so the
 * test's own loop runs on. */
static long
held_always(struct proxy *px)
{
	return 1;
}

static const struct proxy_hooks stop_hooks = { .ph_held = held_always };

Test(dial_job, a_job_posted_while_draining_still_dials_back_and_joins)
{
	uint8_t got[TOKEN_LEN];
	int pub, in;

	/* SIGTERM: its incomingConnection was answered "ok", the client waits */
	atomic_store(&pv.pv_stopping, 1);
	pv.pv_px.px_hooks = &stop_hooks;
	pv.pv_px.px_state = PS_DRAINING;
	dial_post(NULL, 0);
	cr_assert(run_until(no_dial, 2000), "the job was not joined");
	cr_assert_eq(atomic_load(&pv.pv_nsockets), 2, "the relay holds both sockets");
	pub = accept_one(pub_lfd);
	in = accept_one(int_lfd);
	read_exactly(pub, got, sizeof(got));
	cr_assert_arr_eq(got, tok, sizeof(tok));
	close(pub);
	close(in);
	cr_assert(run_until(released, 2000), "the sockets were not released");
	cr_assert(metric_line("hyper_relay_private_dials_total{outcome=\"ok\"} 1"));
}

Test(dial_job, a_job_posted_at_a_forced_stop_is_dropped_without_a_connect)
{
	struct pollfd pfd = { .fd = pub_lfd, .events = POLLIN };

	atomic_store(&pv.pv_stopping, 1);
	pv.pv_px.px_hooks = &stop_hooks;
	pv.pv_px.px_state = PS_FORCED;
	dial_post(NULL, 0);
	cr_assert(run_until(released, 2000));
	cr_assert_eq(poll(&pfd, 1, 100), 0, "a connect was made while stopping");
	cr_assert(metric_line("hyper_relay_private_dials_total{outcome=\"stopped\"} 1"));
}

/* --- the announcer (private_announcer.c) ------------------------------------- *
 * The side thread's event base runs on the test thread.  The own Hyper is a
 * real JSON-RPC server on loopback (plain HTTP, as the JSON-RPC tests do),
 * reached by the real JSON-RPC client of pv_ctl; it records each call and
 * answers as the test says. */

enum hyper_mode { HY_OK, HY_FAIL, HY_HOLD };

static struct jsonrpc_server *hyper;
static enum hyper_mode hy_mode;
static int hy_calls;                    /* calls received */
static char hy_method[128];
static int hy_items;                    /* announceConnections: items of the last call */
static char hy_domains[512];            /* their domains, comma-separated */
static struct jsonrpc_call *hy_held;    /* HY_HOLD: answered by the test */
static struct { char method[128]; char domains[512]; int items; } hy_log[16];
static char conf_name[] = "private-test";

static void
hyper_answer_ok(struct jsonrpc_call *call, int n)
{
	struct json_object *r = json_object_new_array();

	for (int i = 0; i < n; i++)
		json_object_array_add(r, NULL);
	jsonrpc_call_reply(call, r);
}

static void
hyper_handler(void *arg, struct jsonrpc_call *call)
{
	struct json_object *params = jsonrpc_call_params(call), *conns;

	hy_calls++;
	strlcpy(hy_method, jsonrpc_call_method(call), sizeof(hy_method));
	hy_items = 0;
	hy_domains[0] = '\0';
	if (json_object_object_get_ex(params, "connections", &conns)) {
		hy_items = (int)json_object_array_length(conns);
		for (int i = 0; i < hy_items; i++) {
			struct json_object *d;

			json_object_object_get_ex(json_object_array_get_idx(conns, (size_t)i),
			    "domain", &d);
			if (i > 0)
				strlcat(hy_domains, ",", sizeof(hy_domains));
			strlcat(hy_domains, json_object_get_string(d), sizeof(hy_domains));
		}
	}
	if (hy_calls <= 16) {
		strlcpy(hy_log[hy_calls - 1].method, hy_method, sizeof(hy_log[0].method));
		strlcpy(hy_log[hy_calls - 1].domains, hy_domains, sizeof(hy_log[0].domains));
		hy_log[hy_calls - 1].items = hy_items;
	}
	switch (hy_mode) {
	case HY_OK:
		hyper_answer_ok(call, hy_items);
		break;
	case HY_FAIL:
		jsonrpc_call_error(call, HP_ERR_UNREACHABLE, "operator unreachable: test");
		break;
	case HY_HOLD:
		hy_held = call;
		break;
	}
}

static void
announcer_setup(void)
{
	struct jsonrpc_server_conf sc;
	struct jsonrpc_client_conf cc;
	char err[256], url[128];

	log_init("test", LOG_LVL_ERROR);
	memset(&conf, 0, sizeof(conf));
	memset(&pv, 0, sizeof(pv));
	conf.pc_name = conf_name;
	conf.pc_announce_interval = 300;
	pv.pv_conf = &conf;
	TAILQ_INIT(&pv.pv_targets);
	TAILQ_INIT(&pv.pv_dials);
	cr_assert_not_null(pv.pv_table = announce_table_new());
	cr_assert_not_null(pv.pv_ctl.ct_side = side_new(err, sizeof(err)), "%s", err);
	memset(&sc, 0, sizeof(sc));
	sc.bind_address = "127.0.0.1:0";
	sc.path = "/jsonrpc";
	hyper = jsonrpc_server_new(side_base(pv.pv_ctl.ct_side), &sc, hyper_handler, NULL, err,
	    sizeof(err));
	cr_assert_not_null(hyper, "%s", err);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/jsonrpc", jsonrpc_server_port(hyper));
	memset(&cc, 0, sizeof(cc));
	cc.url = url;
	pv.pv_ctl.ct_client = jsonrpc_client_new(side_base(pv.pv_ctl.ct_side), &cc, err,
	    sizeof(err));
	cr_assert_not_null(pv.pv_ctl.ct_client, "%s", err);
	hy_mode = HY_OK;
	hy_calls = 0;
	hy_held = NULL;
}

static void
announcer_teardown(void)
{
	if (hy_held != NULL)
		jsonrpc_call_error(hy_held, HP_ERR_UNREACHABLE, "test over");
	/* as at a stop: the targets go first, then the client fails its calls */
	atomic_store(&pv.pv_stopping, 1);
	private_targets_free(&pv);
	jsonrpc_client_free(pv.pv_ctl.ct_client);
	jsonrpc_server_free(hyper);
	side_free(pv.pv_ctl.ct_side);
	announce_table_free(pv.pv_table);
}

TestSuite(announcer, .init = announcer_setup, .fini = announcer_teardown);

/* Run the side thread's base until pred() holds, at most ms.  1 when it held. */
static int
side_until(int (*pred)(void), unsigned ms)
{
	uint64_t end = now_mono_ms() + ms;

	while (!pred()) {
		struct timeval tv = { 0, 5000 };

		if (now_mono_ms() >= end)
			return 0;
		event_base_loopexit(side_base(pv.pv_ctl.ct_side), &tv);
		event_base_dispatch(side_base(pv.pv_ctl.ct_side));
	}
	return 1;
}

static int want_calls;

static int
calls_reached(void)
{
	return hy_calls >= want_calls;
}

static struct target *
target_of(const char *proxy)
{
	struct target *tg;

	TAILQ_FOREACH(tg, &pv.pv_targets, tg_entry)
		if (strcmp(tg->tg_proxy, proxy) == 0)
			return tg;
	return NULL;
}

static enum target_state want_state;

static int
state_reached(void)
{
	struct target *tg = target_of("pub1");

	return tg != NULL && tg->tg_state == want_state;
}

static void
add(const char *domain, const char *proxy)
{
	struct announcement a;

	cr_assert_eq(announce_make(&a, domain, conf_name, proxy, 0), 0);
	cr_assert_eq(announce_put(pv.pv_table, &a), 0);
}

Test(announcer, a_pass_per_proxy_with_its_domains_then_idle)
{
	add("a.example.com", "pub1");
	add("b.example.com", "pub1");
	add("c.example.com", "pub2");
	private_announce_start(&pv);
	cr_assert_eq(target_of("pub1")->tg_state, TG_CALLING);
	cr_assert_eq(target_of("pub2")->tg_state, TG_CALLING);
	want_calls = 2;
	cr_assert(side_until(calls_reached, 2000));
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
	cr_assert_eq(target_of("pub2")->tg_state, TG_IDLE);
	cr_assert(target_of("pub1")->tg_accepted);
	cr_assert_eq(target_of("pub1")->tg_backoff, 0);
	/* one call per proxy, in either order */
	for (int i = 0; i < 2; i++) {
		if (strcmp(hy_log[i].method, "pub1.announceConnections") == 0) {
			cr_assert_eq(hy_log[i].items, 2);
			cr_assert_str_eq(hy_log[i].domains, "a.example.com,b.example.com");
		} else {
			cr_assert_str_eq(hy_log[i].method, "pub2.announceConnections");
			cr_assert_str_eq(hy_log[i].domains, "c.example.com");
		}
	}
	cr_assert_str_neq(hy_log[0].method, hy_log[1].method);
	cr_assert(metric_line("hyper_relay_private_announce_calls_total{result=\"ok\"} 2"));
}

Test(announcer, a_failed_pass_backs_off_and_is_retried)
{
	add("a.example.com", "pub1");
	hy_mode = HY_FAIL;
	private_target_kick(&pv, "pub1");
	want_state = TG_FAILING;
	cr_assert(side_until(state_reached, 2000));
	cr_assert_eq(target_of("pub1")->tg_backoff, PRIVATE_BACKOFF_MIN);
	cr_assert_eq(hy_calls, 1);
	/* the retry comes after the backoff (1 s), not before */
	hy_mode = HY_OK;
	want_calls = 2;
	cr_assert_not(side_until(calls_reached, 700), "retried before the backoff");
	cr_assert(side_until(calls_reached, 1500), "not retried after the backoff");
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
	cr_assert_eq(target_of("pub1")->tg_backoff, 0);
	cr_assert(target_of("pub1")->tg_accepted);
	cr_assert(metric_line("hyper_relay_private_announce_calls_total{result=\"error\"} 1"));
	cr_assert(metric_line("hyper_relay_private_announce_calls_total{result=\"ok\"} 1"));
}

Test(announcer, a_change_while_calling_is_announced_right_after)
{
	add("a.example.com", "pub1");
	hy_mode = HY_HOLD;
	private_target_kick(&pv, "pub1");
	want_calls = 1;
	cr_assert(side_until(calls_reached, 2000));
	cr_assert_eq(hy_items, 1);
	/* announceConnection meanwhile */
	add("b.example.com", "pub1");
	private_target_kick(&pv, "pub1");
	cr_assert_eq(target_of("pub1")->tg_state, TG_CALLING_AGAIN);
	cr_assert_eq(hy_calls, 1, "no second call while one is in flight");
	hy_mode = HY_OK;
	hyper_answer_ok(hy_held, 1);
	hy_held = NULL;
	want_calls = 2;
	cr_assert(side_until(calls_reached, 2000), "the change was not announced");
	cr_assert_eq(hy_items, 2);
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
}

Test(announcer, a_failed_withdrawal_then_an_answered_one_announces_again)
{
	add("a.example.com", "pub1");
	private_target_kick(&pv, "pub1");
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
	/* the public proxy is away: the withdrawal fails */
	hy_mode = HY_FAIL;
	private_withdraw_send(&pv, "pub1", "gone.example.com");
	want_state = TG_FAILING;
	cr_assert(side_until(state_reached, 2000));
	cr_assert_str_eq(hy_method, "pub1.withdrawConnections");
	/* back (maybe restarted, its table empty): the next answered call
	 * triggers a full pass at once */
	hy_mode = HY_OK;
	want_calls = hy_calls + 2;
	private_withdraw_send(&pv, "pub1", "gone2.example.com");
	cr_assert(side_until(calls_reached, 2000));
	cr_assert_str_eq(hy_method, "pub1.announceConnections");
	cr_assert_str_eq(hy_domains, "a.example.com");
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
}

/* reload.h's rr_announcements: the static announcements of the settings
 * changed from o to n (the settings normalized the names). */
/* The logged call of method, or NULL. */
static const char *
logged_call(const char *method)
{
	for (int i = 0; i < hy_calls && i < 16; i++)
		if (strcmp(hy_log[i].method, method) == 0)
			return hy_log[i].domains;
	return NULL;
}

static int
withdrawn_and_announced(void)
{
	return logged_call("pub1.withdrawConnections") != NULL &&
	    logged_call("pub1.announceConnections") != NULL;
}

static char sa_a[] = "a.example.com", sa_b[] = "b.example.com", sa_c[] = "c.example.com",
	sa_x[] = "x.example.com", sa_pub1[] = "pub1";

static struct static_announcement
sa(char *domain, int pp)
{
	return (struct static_announcement){ domain, sa_pub1, 0, pp };
}

Test(announcer, a_reload_withdraws_removed_names_puts_changed_ones_and_announces_added_ones)
{
	struct static_announcement olds[] = { sa(sa_a, PROXYPROTO_OFF),
	    sa(sa_b, PROXYPROTO_OFF), sa(sa_x, PROXYPROTO_OFF) };
	struct static_announcement news[] = { sa(sa_b, PROXYPROTO_V2),
	    sa(sa_c, PROXYPROTO_OFF), sa(sa_x, PROXYPROTO_OFF) };
	struct proxy_conf o = { .pc_announcements = olds, .pc_nannouncements = 3 };
	struct proxy_conf n = { .pc_announcements = news, .pc_nannouncements = 3 };
	struct announcement an, *list = NULL;
	char err[256];

	cr_assert_not_null(pv.pv_store = datastore_open(NULL, pv.pv_table, now_wall(), err,
	    sizeof(err)), "%s", err);
	add("a.example.com", "pub1");
	add("b.example.com", "pub1");
	/* x: held by another operator's announceConnection, not this proxy's */
	cr_assert_eq(announce_make(&an, "x.example.com", "hd-1", "pub1", 0), 0);
	cr_assert_eq(announce_put(pv.pv_table, &an), 0);
	private_announce_start(&pv);
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
	hy_calls = 0;

	private_static_reload(&pv, &o, &n);
	cr_assert_neq(announce_lookup(pv.pv_table, "a.example.com", "pub1", now_wall(), NULL), 0,
	    "a removed name stays in the table");
	cr_assert_eq(announce_lookup(pv.pv_table, "b.example.com", "pub1", now_wall(), &an), 0);
	cr_assert_eq(an.an_proxy_protocol, PROXYPROTO_V2, "a changed proxy_protocol not applied");
	cr_assert_eq(announce_lookup(pv.pv_table, "c.example.com", "pub1", now_wall(), &an), 0);
	cr_assert_str_eq(an.an_operator, conf_name);
	cr_assert_eq(announce_find(pv.pv_table, "x.example.com", "pub1", "hd-1", NULL), 0,
	    "another operator's name was touched");
	/* the withdrawal of a and a pass with b, c and x (on two connections:
	 * either may arrive first) */
	cr_assert(side_until(withdrawn_and_announced, 2000));
	want_state = TG_IDLE;
	cr_assert(side_until(state_reached, 2000));
	cr_assert_str_eq(logged_call("pub1.announceConnections"),
	    "b.example.com,c.example.com,x.example.com");
	cr_assert_eq(announce_list(pv.pv_table, NULL, now_wall(), &list), 3);
	free(list);
	datastore_close(pv.pv_store);
	pv.pv_store = NULL;
}

Test(announcer, a_reload_with_only_proxy_protocol_changed_makes_no_call)
{
	struct static_announcement olds[] = { sa(sa_a, PROXYPROTO_OFF) };
	struct static_announcement news[] = { sa(sa_a, PROXYPROTO_V1) };
	struct proxy_conf o = { .pc_announcements = olds, .pc_nannouncements = 1 };
	struct proxy_conf n = { .pc_announcements = news, .pc_nannouncements = 1 };
	struct announcement an;
	char err[256];

	cr_assert_not_null(pv.pv_store = datastore_open(NULL, pv.pv_table, now_wall(), err,
	    sizeof(err)), "%s", err);
	add("a.example.com", "pub1");
	private_static_reload(&pv, &o, &n);
	cr_assert_eq(announce_lookup(pv.pv_table, "a.example.com", "pub1", now_wall(), &an), 0);
	cr_assert_eq(an.an_proxy_protocol, PROXYPROTO_V1);
	want_calls = 1;
	cr_assert_not(side_until(calls_reached, 300), "a call for a proxy_protocol change");
	datastore_close(pv.pv_store);
	pv.pv_store = NULL;
}
