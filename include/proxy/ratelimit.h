/* ratelimit.h - tcp_rate_limits and data_rate_limits: connections per
 * source.
 *
 * One token bucket per source and rule (capacity = limit, refilled at
 * limit/window per second), so there is no window boundary at which every
 * source gets a fresh burst at once.  A source is an IPv4 address or an
 * IPv6 /64; wider prefixes (IPv4 /24, IPv6 /56 and /48) have aggregate
 * buckets of a multiple of the limit (struct rate_prefixes, 0: none).
 * Bounded: when the table is full, the least recently seen entry is
 * forgotten only once its buckets have refilled; otherwise the new source
 * is refused.  Owned by one thread. */
#ifndef HP_RATELIMIT_H
#define HP_RATELIMIT_H

#include <stddef.h>
#include <sys/socket.h>

struct rate_limit;
struct rate_prefixes;
struct ratelimit;

/* agg may be NULL (per-source buckets only). */
struct ratelimit *ratelimit_new(const struct rate_limit *rules, int nrules,
	const struct rate_prefixes *agg, size_t max_entries);
void ratelimit_free(struct ratelimit *rl);
/* 1: allowed (and counted), 0: over a limit, or the table is full of
 * sources still limited.  Always 1 without rules. */
int  ratelimit_allow(struct ratelimit *rl, const struct sockaddr *sa, double now);
/* Entries held (sources and aggregates). */
size_t ratelimit_count(const struct ratelimit *rl);

#endif
