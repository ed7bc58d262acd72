/* ratelimit.h - tcp_rate_limits: connections per source address.
 *
 * One token bucket per address and rule (capacity = limit, refilled at
 * limit/window per second), so there is no window boundary at which every
 * address gets a fresh burst at once.  Bounded: the least recently seen
 * address is forgotten when the table is full (its buckets were the fullest
 * anyway).  Owned by one thread. */
#ifndef HP_RATELIMIT_H
#define HP_RATELIMIT_H

#include <stddef.h>
#include <sys/socket.h>

struct rate_limit;
struct ratelimit;

struct ratelimit *ratelimit_new(const struct rate_limit *rules, int nrules, size_t max_addresses);
void ratelimit_free(struct ratelimit *rl);
/* 1: allowed (and counted), 0: over a limit.  Always 1 without rules. */
int  ratelimit_allow(struct ratelimit *rl, const struct sockaddr *sa, double now);
size_t ratelimit_count(const struct ratelimit *rl);

#endif
