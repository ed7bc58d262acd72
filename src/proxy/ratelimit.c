/* ratelimit.c - per-address token buckets for the TLS listener. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "proxy_conf.h"
#include "ratelimit.h"

#define RL_MAX_RULES 4

struct rl_entry {
	uint8_t                  re_addr[16];   /* IPv4 mapped into ::ffff:0:0/96 */
	double                   re_last;
	double                   re_tokens[RL_MAX_RULES];
	struct rl_entry         *re_next;       /* hash chain */
	TAILQ_ENTRY(rl_entry)    re_lru;
};

struct ratelimit {
	struct rate_limit        rl_rules[RL_MAX_RULES];
	int                      rl_nrules;
	size_t                   rl_max, rl_count, rl_nbuckets;
	struct rl_entry        **rl_buckets;
	TAILQ_HEAD(rl_lru_head, rl_entry) rl_lru;       /* most recent at the head */
	uint64_t                 rl_seed;
};

struct ratelimit *
ratelimit_new(const struct rate_limit *rules, int nrules, size_t max_addresses)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return NULL;
	rl->rl_nrules = nrules > RL_MAX_RULES ? RL_MAX_RULES : nrules;
	if (rl->rl_nrules > 0)
		memcpy(rl->rl_rules, rules, sizeof(*rules) * (size_t)rl->rl_nrules);
	rl->rl_max = max_addresses ? max_addresses : 1;
	for (rl->rl_nbuckets = 64; rl->rl_nbuckets < rl->rl_max; rl->rl_nbuckets <<= 1)
		;
	rl->rl_buckets = calloc(rl->rl_nbuckets, sizeof(*rl->rl_buckets));
	if (rl->rl_buckets == NULL) {
		free(rl);
		return NULL;
	}
	TAILQ_INIT(&rl->rl_lru);
	rl->rl_seed = (uint64_t)(uintptr_t)rl * 0x9e3779b97f4a7c15ULL;
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	struct rl_entry *e;

	if (rl == NULL)
		return;
	while ((e = TAILQ_FIRST(&rl->rl_lru)) != NULL) {
		TAILQ_REMOVE(&rl->rl_lru, e, re_lru);
		free(e);
	}
	free(rl->rl_buckets);
	free(rl);
}

static void
rl_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6)
		memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
}

static size_t
rl_hash(const struct ratelimit *rl, const uint8_t key[16])
{
	uint64_t h = rl->rl_seed;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return (size_t)(h ^ (h >> 29)) & (rl->rl_nbuckets - 1);
}

static void
rl_unlink(struct ratelimit *rl, struct rl_entry *e)
{
	struct rl_entry **pp = &rl->rl_buckets[rl_hash(rl, e->re_addr)];

	while (*pp != e)
		pp = &(*pp)->re_next;
	*pp = e->re_next;
	TAILQ_REMOVE(&rl->rl_lru, e, re_lru);
	rl->rl_count--;
}

int
ratelimit_allow(struct ratelimit *rl, const struct sockaddr *sa, double now)
{
	uint8_t key[16];
	struct rl_entry *e;
	size_t h;

	if (rl == NULL || rl->rl_nrules == 0)
		return 1;
	rl_key(sa, key);
	h = rl_hash(rl, key);
	for (e = rl->rl_buckets[h]; e != NULL; e = e->re_next)
		if (memcmp(e->re_addr, key, 16) == 0)
			break;
	if (e == NULL) {
		if (rl->rl_count >= rl->rl_max)
			rl_unlink(rl, e = TAILQ_LAST(&rl->rl_lru, rl_lru_head));
		else if ((e = malloc(sizeof(*e))) == NULL)
			return 1;       /* no memory: do not refuse clients for it */
		memcpy(e->re_addr, key, 16);
		e->re_last = now;
		for (int i = 0; i < rl->rl_nrules; i++)
			e->re_tokens[i] = (double)rl->rl_rules[i].rl_limit;
		e->re_next = rl->rl_buckets[h];
		rl->rl_buckets[h] = e;
		rl->rl_count++;
	} else
		TAILQ_REMOVE(&rl->rl_lru, e, re_lru);
	TAILQ_INSERT_HEAD(&rl->rl_lru, e, re_lru);

	int ok = 1;
	for (int i = 0; i < rl->rl_nrules; i++) {
		const struct rate_limit *r = &rl->rl_rules[i];
		double t = e->re_tokens[i] + (now - e->re_last) * (double)r->rl_limit / r->rl_window;

		e->re_tokens[i] = t > (double)r->rl_limit ? (double)r->rl_limit : t;
		if (e->re_tokens[i] < 1)
			ok = 0;
	}
	e->re_last = now;
	if (ok)
		for (int i = 0; i < rl->rl_nrules; i++)
			e->re_tokens[i] -= 1;
	return ok;
}

size_t
ratelimit_count(const struct ratelimit *rl)
{
	return rl ? rl->rl_count : 0;
}
