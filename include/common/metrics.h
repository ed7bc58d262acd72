/* metrics.h - Prometheus metrics: counters, gauges and histograms with
 * labels, counted without a lock, and the plain-HTTP listener that serves
 * them (`GET /metrics`, text exposition format 0.0.4).
 *
 * Declaring: a metric is a static object declared at file scope with
 * METRIC_COUNTER / METRIC_GAUGE / METRIC_HISTOGRAM; it registers itself
 * before main() (a constructor), so a program exposes exactly the metrics of
 * the modules it links.  Names get the prefix "hyper_relay_" at exposition.
 *
 * Counting: every thread that counts gets a shard of its own on first use
 * (METRIC_MAX_THREADS; later threads share the last shard with atomic adds).
 * A thread adds to its own shard with a relaxed load and store, never a
 * lock; a scrape sums the shards.  Gauges count the same way (deltas may be
 * negative), or are set outright with metric_set() by one owner (a
 * collector, run at scrape).
 *
 * Labels: up to METRIC_MAX_LABELS names per metric.  Each metric keeps at
 * most METRIC_MAX_SERIES label sets (the cap): a slot is claimed with a
 * compare-and-swap the first time a label set is seen, and from the cap on
 * every new label set is counted in one series whose label values are all
 * "_overflow", so a caller that makes up label values (a method name sent
 * by a client) cannot grow memory.  Label values longer than
 * METRIC_LABEL_MAX - 1 bytes are cut.
 *
 * Threads: counting from any thread; metrics_render() and the collectors
 * from the thread that serves the listener. */
#ifndef HP_METRICS_H
#define HP_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRIC_PREFIX		"hyper_relay_"
#define METRIC_MAX_LABELS	3
#define METRIC_MAX_SERIES	64	/* label sets per metric, the last one "_overflow" */
#define METRIC_MAX_THREADS	16	/* shards; later threads share the last one */
#define METRIC_LABEL_MAX	64	/* bytes of a label value, with the NUL */

enum metric_type { METRIC_T_COUNTER, METRIC_T_GAUGE, METRIC_T_HISTOGRAM };

/* One label set: ms_state 0 free, 1 being written, 2 ready. */
struct metric_series {
	atomic_int	 ms_state;
	char		 ms_values[METRIC_MAX_LABELS][METRIC_LABEL_MAX];
	atomic_llong	 ms_set;	/* metric_set() value (gauges) */
};

struct metric {
	const char		*m_name;	/* without METRIC_PREFIX */
	const char		*m_help;
	enum metric_type	 m_type;
	const char		*m_labels[METRIC_MAX_LABELS];	/* names; NULL ends */
	const double		*m_bounds;	/* histogram: upper bounds, ascending */
	int			 m_nbounds;
	int			 m_ncells;	/* per series and shard */
	atomic_llong		*m_cells;	/* [shard][series][cell] */
	struct metric_series	 m_series[METRIC_MAX_SERIES];
	struct metric		*m_next;
};

void	 metric_register(struct metric *m);

#define METRIC_DECLARE_(var, name, help, type, bounds, nbounds, ...)		\
	static atomic_llong var##_cells[METRIC_MAX_THREADS * METRIC_MAX_SERIES * \
	    ((nbounds) + 2)];							\
	static struct metric var = {						\
		.m_name = (name), .m_help = (help), .m_type = (type),		\
		.m_labels = { __VA_ARGS__ }, .m_bounds = (bounds),		\
		.m_nbounds = (nbounds), .m_ncells = (nbounds) + 2,		\
		.m_cells = var##_cells,						\
	};									\
	static void __attribute__((constructor)) var##_register(void)		\
	{									\
		metric_register(&var);						\
	}

/* METRIC_COUNTER(var, "name_total", "help", "label", ...): a counter. */
#define METRIC_COUNTER(var, name, help, ...)					\
	METRIC_DECLARE_(var, name, help, METRIC_T_COUNTER, NULL, 0, __VA_ARGS__)
#define METRIC_GAUGE(var, name, help, ...)					\
	METRIC_DECLARE_(var, name, help, METRIC_T_GAUGE, NULL, 0, __VA_ARGS__)
/* bounds: a static const double array (its size is taken with sizeof). */
#define METRIC_HISTOGRAM(var, name, help, bounds, ...)				\
	METRIC_DECLARE_(var, name, help, METRIC_T_HISTOGRAM, bounds,		\
	    (int)(sizeof(bounds) / sizeof((bounds)[0])), __VA_ARGS__)

/* Bounds of latency histograms, seconds (1 ms to 30 s). */
#define METRIC_LATENCY_BOUNDS	{ 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, \
	0.25, 0.5, 1, 2.5, 5, 10, 30 }

/* The series of a label set (values in the order of the label names, NULL
 * or missing: ""): an index for the *_at calls, so that a hot path can look
 * it up once. */
int	 metric_series(struct metric *m, const char *const *values);
void	 metric_add_at(struct metric *m, int series, int64_t n);
void	 metric_set_at(struct metric *m, int series, int64_t v);
void	 metric_observe_at(struct metric *m, int series, double v);
/* 1 when series (0 to METRIC_MAX_SERIES - 1) has been used (collectors:
 * set every known label set, also those with nothing to count now). */
int	 metric_series_used(struct metric *m, int series);

#define METRIC_VALUES_(...) ((const char *const [METRIC_MAX_LABELS]){ __VA_ARGS__ })
/* metric_inc(&m, "label value", ...) and the like. */
#define metric_inc(m, ...)	metric_add_at((m), metric_series((m), METRIC_VALUES_(__VA_ARGS__)), 1)
#define metric_dec(m, ...)	metric_add_at((m), metric_series((m), METRIC_VALUES_(__VA_ARGS__)), -1)
#define metric_add(m, n, ...)	metric_add_at((m), metric_series((m), METRIC_VALUES_(__VA_ARGS__)), (n))
#define metric_set(m, v, ...)	metric_set_at((m), metric_series((m), METRIC_VALUES_(__VA_ARGS__)), (v))
#define metric_observe(m, v, ...) \
	metric_observe_at((m), metric_series((m), METRIC_VALUES_(__VA_ARGS__)), (v))

/* A counter's or gauge's value summed over the shards (tests, collectors);
 * a histogram's: its count. */
int64_t	 metric_value(struct metric *m, const char *const *values);
/* A histogram's sum of observations. */
double	 metric_hist_sum(struct metric *m, const char *const *values);

/* Collectors run at every scrape before rendering (set gauges there). */
typedef void (*metric_collector_fn)(void *arg);
void	 metrics_collector_add(metric_collector_fn fn, void *arg);
void	 metrics_collector_remove(metric_collector_fn fn, void *arg);

/* Run the collectors and write the exposition text; a malloc'ed string
 * (free it), NULL when out of memory. */
char	*metrics_render(size_t *lenp);

/* The listener.  Settings `metrics` (host:port, NULL: off) and
 * `metrics_timeout` (seconds a request may take, read and write). */
#define METRICS_TIMEOUT_DEFAULT	10.0
#define METRICS_MAX_CONNS	16	/* scrape connections open at once */

struct event_base;
struct metrics_server;

/* 1 when address looks like "host:port" / "[v6]:port" with a port of
 * 1-65535 (settings check; the host is resolved at bind). */
int	 metrics_address_ok(const char *address);
/* Bind and serve on base (check-before-bind: -1 with "why" in err when the
 * address is bad or in use, nothing left open). */
struct metrics_server *metrics_server_new(struct event_base *base, const char *address,
	    double timeout, int reuse_port, char *err, size_t errlen);
int	 metrics_server_port(const struct metrics_server *ms);
void	 metrics_server_free(struct metrics_server *ms);

#endif
