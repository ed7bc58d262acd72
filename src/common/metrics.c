/* metrics.c - lock-free counting, the text exposition and the scrape
 * listener (see metrics.h).  The listener runs on the thread of its
 * event_base: the side thread of a proxy, the only thread of a Hyper. */
#include <sys/socket.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define SERIES_FREE	0
#define SERIES_WRITING	1
#define SERIES_READY	2

static struct metric	*metrics_head;		/* registered before main(), then read-only */
static atomic_int	 metrics_nshards;	/* shards handed out */
static _Thread_local int metrics_shard = -1;

struct collector {
	metric_collector_fn	 c_fn;
	void			*c_arg;
	struct collector	*c_next;
};
static pthread_mutex_t	 collectors_lock = PTHREAD_MUTEX_INITIALIZER;
static struct collector	*collectors;

METRIC_GAUGE(m_fds, "open_fds", "File descriptors open in the process.")
METRIC_COUNTER(m_scrapes, "metrics_requests_total",
    "Requests to the metrics listener, by HTTP status.", "code")
METRIC_COUNTER(m_scrape_refused, "metrics_connections_refused_total",
    "Metrics connections closed at once: max connections reached.")

void
metric_register(struct metric *m)
{
	struct metric **pp;

	/* Sorted by name, so that a scrape reads the same order every time. */
	for (pp = &metrics_head; *pp != NULL && strcmp((*pp)->m_name, m->m_name) < 0;
	    pp = &(*pp)->m_next)
		;
	m->m_next = *pp;
	*pp = m;
}

static int
metrics_shard_get(void)
{
	if (metrics_shard < 0) {
		metrics_shard = atomic_fetch_add(&metrics_nshards, 1);
		if (metrics_shard >= METRIC_MAX_THREADS)
			metrics_shard = METRIC_MAX_THREADS - 1;
	}
	return metrics_shard;
}

static int
metrics_nlabels(const struct metric *m)
{
	int n = 0;

	while (n < METRIC_MAX_LABELS && m->m_labels[n] != NULL)
		n++;
	return n;
}

static int
series_match(const struct metric_series *s, int nl, const char *const *values)
{
	for (int i = 0; i < nl; i++) {
		const char *v = values != NULL && values[i] != NULL ? values[i] : "";

		if (strncmp(s->ms_values[i], v, METRIC_LABEL_MAX - 1) != 0)
			return 0;
	}
	return 1;
}

static void
series_wait(struct metric_series *s)
{
	/* Another thread is copying the label values: a few stores. */
	while (atomic_load_explicit(&s->ms_state, memory_order_acquire) != SERIES_READY)
		;
}

int
metric_series(struct metric *m, const char *const *values)
{
	int nl = metrics_nlabels(m), expect;

	if (nl == 0)
		return 0;
	for (int i = 0; i < METRIC_MAX_SERIES - 1; i++) {
		struct metric_series *s = &m->m_series[i];
		int st = atomic_load_explicit(&s->ms_state, memory_order_acquire);

		if (st == SERIES_FREE) {
			expect = SERIES_FREE;
			if (atomic_compare_exchange_strong(&s->ms_state, &expect,
			    SERIES_WRITING)) {
				for (int j = 0; j < nl; j++)
					snprintf(s->ms_values[j], METRIC_LABEL_MAX, "%s",
					    values != NULL && values[j] != NULL ? values[j] : "");
				atomic_store_explicit(&s->ms_state, SERIES_READY,
				    memory_order_release);
				return i;
			}
			st = expect;
		}
		if (st == SERIES_WRITING)
			series_wait(s);
		if (series_match(s, nl, values))
			return i;
	}
	/* The cap: every further label set shares the last series. */
	{
		struct metric_series *s = &m->m_series[METRIC_MAX_SERIES - 1];

		expect = SERIES_FREE;
		if (atomic_compare_exchange_strong(&s->ms_state, &expect, SERIES_WRITING)) {
			for (int j = 0; j < nl; j++)
				snprintf(s->ms_values[j], METRIC_LABEL_MAX, "_overflow");
			atomic_store_explicit(&s->ms_state, SERIES_READY, memory_order_release);
		} else if (expect == SERIES_WRITING)
			series_wait(s);
	}
	return METRIC_MAX_SERIES - 1;
}

static atomic_llong *
metric_cells(struct metric *m, int shard, int series)
{
	return &m->m_cells[((size_t)shard * METRIC_MAX_SERIES + (size_t)series) *
	    (size_t)m->m_ncells];
}

/* Add n to a cell of this thread's shard: a plain load and store on an own
 * shard, an atomic add on the shared last one. */
static void
cell_add(atomic_llong *c, int shard, int64_t n)
{
	if (shard < METRIC_MAX_THREADS - 1)
		atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
		    memory_order_relaxed);
	else
		atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

void
metric_add_at(struct metric *m, int series, int64_t n)
{
	int shard = metrics_shard_get();

	if (m->m_series[series].ms_state == SERIES_FREE)	/* no labels */
		atomic_store(&m->m_series[series].ms_state, SERIES_READY);
	cell_add(metric_cells(m, shard, series), shard, n);
}

void
metric_set_at(struct metric *m, int series, int64_t v)
{
	if (m->m_series[series].ms_state == SERIES_FREE)
		atomic_store(&m->m_series[series].ms_state, SERIES_READY);
	atomic_store_explicit(&m->m_series[series].ms_set, v, memory_order_relaxed);
}

int
metric_series_used(struct metric *m, int series)
{
	return series >= 0 && series < METRIC_MAX_SERIES &&
	    atomic_load_explicit(&m->m_series[series].ms_state, memory_order_acquire) ==
	    SERIES_READY;
}

void
metric_observe_at(struct metric *m, int series, double v)
{
	int shard = metrics_shard_get(), b;
	atomic_llong *c = metric_cells(m, shard, series), *sum = &c[m->m_nbounds + 1];
	long long old, upd;
	double d;

	if (m->m_series[series].ms_state == SERIES_FREE)
		atomic_store(&m->m_series[series].ms_state, SERIES_READY);
	for (b = 0; b < m->m_nbounds && v > m->m_bounds[b]; b++)
		;
	cell_add(&c[b], shard, 1);
	/* The sum is a double kept in the cell's bits. */
	old = atomic_load_explicit(sum, memory_order_relaxed);
	do {
		memcpy(&d, &old, sizeof(d));
		d += v;
		memcpy(&upd, &d, sizeof(upd));
		if (shard < METRIC_MAX_THREADS - 1) {
			atomic_store_explicit(sum, upd, memory_order_relaxed);
			break;
		}
	} while (!atomic_compare_exchange_weak(sum, &old, upd));
}

/* Sum of one cell over the shards. */
static int64_t
metric_sum_cell(struct metric *m, int series, int cell)
{
	int64_t t = 0;

	for (int s = 0; s < METRIC_MAX_THREADS; s++)
		t += atomic_load_explicit(&metric_cells(m, s, series)[cell], memory_order_relaxed);
	return t;
}

static double
metric_sum_double(struct metric *m, int series)
{
	double t = 0, d;
	long long bits;

	for (int s = 0; s < METRIC_MAX_THREADS; s++) {
		bits = atomic_load_explicit(&metric_cells(m, s, series)[m->m_nbounds + 1],
		    memory_order_relaxed);
		memcpy(&d, &bits, sizeof(d));
		t += d;
	}
	return t;
}

int64_t
metric_value(struct metric *m, const char *const *values)
{
	int series = metric_series(m, values);
	int64_t t = 0;

	if (m->m_type != METRIC_T_HISTOGRAM)
		return metric_sum_cell(m, series, 0) +
		    atomic_load_explicit(&m->m_series[series].ms_set, memory_order_relaxed);
	for (int b = 0; b <= m->m_nbounds; b++)
		t += metric_sum_cell(m, series, b);
	return t;
}

double
metric_hist_sum(struct metric *m, const char *const *values)
{
	return metric_sum_double(m, metric_series(m, values));
}

void
metrics_collector_add(metric_collector_fn fn, void *arg)
{
	struct collector *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->c_fn = fn;
	c->c_arg = arg;
	pthread_mutex_lock(&collectors_lock);
	c->c_next = collectors;
	collectors = c;
	pthread_mutex_unlock(&collectors_lock);
}

void
metrics_collector_remove(metric_collector_fn fn, void *arg)
{
	struct collector **pp, *c;

	pthread_mutex_lock(&collectors_lock);
	for (pp = &collectors; (c = *pp) != NULL; pp = &c->c_next)
		if (c->c_fn == fn && c->c_arg == arg) {
			*pp = c->c_next;
			free(c);
			break;
		}
	pthread_mutex_unlock(&collectors_lock);
}

/* Open descriptors: the entries of /proc/self/fd, less the one reading it. */
static void
metrics_count_fds(void)
{
	DIR *d;
	struct dirent *e;
	int64_t n = 0;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	metric_set(&m_fds, n - 1);
}

/* HELP text: backslash and newline escaped. */
static void
render_help(struct evbuffer *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			evbuffer_add(b, "\\\\", 2);
		else if (*s == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, s, 1);
	}
}

/* Label value: backslash, double quote and newline escaped. */
static void
render_value(struct evbuffer *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			evbuffer_add_printf(b, "\\%c", *s);
		else if (*s == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, s, 1);
	}
}

/* {a="x",b="y"[,le="0.5"]}, nothing when there are no labels at all. */
static void
render_labels(struct evbuffer *b, const struct metric *m, int series, const char *le)
{
	int nl = metrics_nlabels(m), first = 1;

	if (nl == 0 && le == NULL)
		return;
	evbuffer_add(b, "{", 1);
	for (int i = 0; i < nl; i++) {
		evbuffer_add_printf(b, "%s%s=\"", first ? "" : ",", m->m_labels[i]);
		render_value(b, m->m_series[series].ms_values[i]);
		evbuffer_add(b, "\"", 1);
		first = 0;
	}
	if (le != NULL)
		evbuffer_add_printf(b, "%sle=\"%s\"", first ? "" : ",", le);
	evbuffer_add(b, "}", 1);
}

static void
render_metric(struct evbuffer *b, struct metric *m)
{
	static const char *types[] = { "counter", "gauge", "histogram" };
	int nl = metrics_nlabels(m), any = 0;
	char le[32];

	for (int s = 0; s < METRIC_MAX_SERIES; s++) {
		if (atomic_load_explicit(&m->m_series[s].ms_state, memory_order_acquire) !=
		    SERIES_READY) {
			if (nl == 0)
				break;
			continue;
		}
		if (!any) {
			evbuffer_add_printf(b, "# HELP %s%s ", METRIC_PREFIX, m->m_name);
			render_help(b, m->m_help);
			evbuffer_add_printf(b, "\n# TYPE %s%s %s\n", METRIC_PREFIX, m->m_name,
			    types[m->m_type]);
			any = 1;
		}
		if (m->m_type != METRIC_T_HISTOGRAM) {
			evbuffer_add_printf(b, "%s%s", METRIC_PREFIX, m->m_name);
			render_labels(b, m, s, NULL);
			evbuffer_add_printf(b, " %lld\n", (long long)(metric_sum_cell(m, s, 0) +
			    atomic_load_explicit(&m->m_series[s].ms_set, memory_order_relaxed)));
			continue;
		}
		{
			int64_t cum = 0;

			for (int k = 0; k <= m->m_nbounds; k++) {
				cum += metric_sum_cell(m, s, k);
				if (k < m->m_nbounds)
					snprintf(le, sizeof(le), "%g", m->m_bounds[k]);
				else
					snprintf(le, sizeof(le), "+Inf");
				evbuffer_add_printf(b, "%s%s_bucket", METRIC_PREFIX, m->m_name);
				render_labels(b, m, s, le);
				evbuffer_add_printf(b, " %lld\n", (long long)cum);
			}
			evbuffer_add_printf(b, "%s%s_sum", METRIC_PREFIX, m->m_name);
			render_labels(b, m, s, NULL);
			evbuffer_add_printf(b, " %.9g\n", metric_sum_double(m, s));
			evbuffer_add_printf(b, "%s%s_count", METRIC_PREFIX, m->m_name);
			render_labels(b, m, s, NULL);
			evbuffer_add_printf(b, " %lld\n", (long long)cum);
		}
	}
	/* A metric without labels is shown from the start, at 0. */
	if (!any && nl == 0 && m->m_type != METRIC_T_HISTOGRAM) {
		evbuffer_add_printf(b, "# HELP %s%s ", METRIC_PREFIX, m->m_name);
		render_help(b, m->m_help);
		evbuffer_add_printf(b, "\n# TYPE %s%s %s\n%s%s 0\n", METRIC_PREFIX, m->m_name,
		    types[m->m_type], METRIC_PREFIX, m->m_name);
	}
}

static struct evbuffer *
metrics_render_buf(void)
{
	struct evbuffer *b;
	struct collector *c;

	metrics_count_fds();
	pthread_mutex_lock(&collectors_lock);
	for (c = collectors; c != NULL; c = c->c_next)
		c->c_fn(c->c_arg);
	pthread_mutex_unlock(&collectors_lock);
	if ((b = evbuffer_new()) == NULL)
		return NULL;
	for (struct metric *m = metrics_head; m != NULL; m = m->m_next)
		render_metric(b, m);
	return b;
}

char *
metrics_render(size_t *lenp)
{
	struct evbuffer *b = metrics_render_buf();
	size_t len;
	char *s;

	if (b == NULL)
		return NULL;
	len = evbuffer_get_length(b);
	if ((s = malloc(len + 1)) != NULL) {
		evbuffer_remove(b, s, len);
		s[len] = '\0';
		if (lenp != NULL)
			*lenp = len;
	}
	evbuffer_free(b);
	return s;
}

/*
 * The listener: a small HTTP/1.x server of its own on bufferevents (evhttp
 * cannot cap its connections: it says nothing when it drops one that never
 * finished a request).  One request per connection: the request head (at
 * most METRICS_MAX_HEAD bytes) is read, answered with "Connection: close",
 * and the connection is closed once the answer is written.  metrics_timeout
 * bounds the read of the head and the write of the answer; at most
 * METRICS_MAX_CONNS connections are open, later ones are closed at accept.
 */
#define METRICS_MAX_HEAD	8192

struct metrics_conn {
	struct metrics_server	*mc_server;
	struct bufferevent	*mc_bev;
	int			 mc_answered;
};

struct metrics_server {
	struct event_base	*ms_base;
	struct evconnlistener	*ms_listener;
	int			 ms_port;
	struct timeval		 ms_timeout;
	int			 ms_nconns;
	struct metrics_conn	*ms_conns[METRICS_MAX_CONNS];
	double			 ms_warned;
};

static void
metrics_conn_free(struct metrics_conn *mc)
{
	struct metrics_server *ms = mc->mc_server;

	for (int i = 0; i < METRICS_MAX_CONNS; i++)
		if (ms->ms_conns[i] == mc)
			ms->ms_conns[i] = NULL;
	ms->ms_nconns--;
	bufferevent_free(mc->mc_bev);
	free(mc);
}

static void
metrics_answer(struct metrics_conn *mc, int code, const char *reason, const char *extra,
    struct evbuffer *body, int head_only)
{
	struct evbuffer *out = bufferevent_get_output(mc->mc_bev);
	size_t len = body != NULL ? evbuffer_get_length(body) : 0;
	char c[8];

	snprintf(c, sizeof(c), "%d", code);
	metric_inc(&m_scrapes, c);
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s"
	    "Connection: close\r\n\r\n", code, reason, len, extra);
	if (body != NULL && !head_only)
		evbuffer_add_buffer(out, body);
	mc->mc_answered = 1;
	/* Nothing more is read; the write callback closes when all is out. */
	bufferevent_disable(mc->mc_bev, EV_READ);
	bufferevent_enable(mc->mc_bev, EV_WRITE);
}

static void
metrics_write_cb(struct bufferevent *bev, void *arg)
{
	struct metrics_conn *mc = arg;

	if (mc->mc_answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		metrics_conn_free(mc);
}

static void
metrics_read_cb(struct bufferevent *bev, void *arg)
{
	struct metrics_conn *mc = arg;
	struct evbuffer *in = bufferevent_get_input(bev), *body;
	struct evbuffer_ptr end;
	char *line, *sp, *path;
	size_t n;
	int head;

	if (mc->mc_answered)
		return;
	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos < 0) {
		end = evbuffer_search(in, "\n\n", 2, NULL);
		if (end.pos < 0) {
			if (evbuffer_get_length(in) > METRICS_MAX_HEAD)
				metrics_answer(mc, 431, "Request Header Fields Too Large", "",
				    NULL, 0);
			return;
		}
	}
	if ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) == NULL) {
		metrics_answer(mc, 400, "Bad Request", "", NULL, 0);
		return;
	}
	/* "METHOD SP PATH SP HTTP/1.x"; the query string is ignored. */
	path = NULL;
	if ((sp = strchr(line, ' ')) != NULL) {
		*sp = '\0';
		path = sp + 1;
		if ((sp = strchr(path, ' ')) == NULL || strncmp(sp + 1, "HTTP/1.", 7) != 0)
			path = NULL;
		else {
			*sp = '\0';
			path[strcspn(path, "?")] = '\0';
		}
	}
	head = strcmp(line, "HEAD") == 0;
	if (path == NULL)
		metrics_answer(mc, 400, "Bad Request", "", NULL, 0);
	else if (strcmp(path, "/metrics") != 0)
		metrics_answer(mc, 404, "Not Found", "", NULL, head);
	else if (strcmp(line, "GET") != 0 && !head)
		metrics_answer(mc, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", NULL, 0);
	else if ((body = metrics_render_buf()) == NULL)
		metrics_answer(mc, 500, "Internal Server Error", "", NULL, 0);
	else {
		metrics_answer(mc, 200, "OK",
		    "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", body, head);
		evbuffer_free(body);
	}
	free(line);
}

static void
metrics_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct metrics_conn *mc = arg;

	/* EOF, an error, or metrics_timeout on the read of the head or the
	 * write of the answer: the connection ends. */
	if ((what & BEV_EVENT_TIMEOUT) && !mc->mc_answered)
		log_debug("metrics: a request did not finish in time, connection closed");
	metrics_conn_free(mc);
}

static void
metrics_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	struct metrics_server *ms = arg;
	struct metrics_conn *mc = NULL;
	double t;
	int slot;

	for (slot = 0; slot < METRICS_MAX_CONNS && ms->ms_conns[slot] != NULL; slot++)
		;
	if (slot == METRICS_MAX_CONNS) {
		metric_inc(&m_scrape_refused);
		t = now_mono();
		if (ms->ms_warned == 0 || t - ms->ms_warned >= 60) {
			log_warnx("metrics: %d connections open, refusing new ones",
			    METRICS_MAX_CONNS);
			ms->ms_warned = t;
		}
		close(fd);
		return;
	}
	if ((mc = calloc(1, sizeof(*mc))) == NULL ||
	    (mc->mc_bev = bufferevent_socket_new(ms->ms_base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		free(mc);
		close(fd);
		return;
	}
	mc->mc_server = ms;
	ms->ms_conns[slot] = mc;
	ms->ms_nconns++;
	bufferevent_setcb(mc->mc_bev, metrics_read_cb, metrics_write_cb, metrics_event_cb, mc);
	bufferevent_set_timeouts(mc->mc_bev, &ms->ms_timeout, &ms->ms_timeout);
	bufferevent_setwatermark(mc->mc_bev, EV_READ, 0, METRICS_MAX_HEAD + 1);
	bufferevent_enable(mc->mc_bev, EV_READ);
}

int
metrics_address_ok(const char *address)
{
	const char *port = strrchr(address, ':');
	char *end;
	long n;

	if (port == NULL || port == address || (address[0] == '[' && port[-1] != ']'))
		return 0;
	n = strtol(port + 1, &end, 10);
	return port[1] >= '0' && port[1] <= '9' && *end == '\0' && n >= 1 && n <= 65535;
}

struct metrics_server *
metrics_server_new(struct event_base *base, const char *address, double timeout,
    int reuse_port, char *err, size_t errlen)
{
	struct metrics_server *ms;
	int fd;

	if ((ms = calloc(1, sizeof(*ms))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ms->ms_base = base;
	ms->ms_timeout = tv_seconds(timeout > 0 ? timeout : METRICS_TIMEOUT_DEFAULT);
	if ((fd = listen_tcp_opt(address, 64, reuse_port, err, errlen)) < 0) {
		free(ms);
		return NULL;
	}
	ms->ms_port = sock_port(fd);
	evutil_make_socket_nonblocking(fd);
	if ((ms->ms_listener = evconnlistener_new(base, metrics_accept, ms,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd)) == NULL) {
		snprintf(err, errlen, "%s: cannot accept", address);
		close(fd);
		free(ms);
		return NULL;
	}
	return ms;
}

int
metrics_server_port(const struct metrics_server *ms)
{
	return ms->ms_port;
}

void
metrics_server_free(struct metrics_server *ms)
{
	if (ms == NULL)
		return;
	if (ms->ms_listener != NULL)
		evconnlistener_free(ms->ms_listener);
	for (int i = 0; i < METRICS_MAX_CONNS; i++)
		if (ms->ms_conns[i] != NULL)
			metrics_conn_free(ms->ms_conns[i]);
	free(ms);
}
