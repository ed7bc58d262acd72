/* ratelimit.c - per-source token buckets for the TLS and data listeners.
 *
 * An IPv4 client is one address; an IPv6 client is its /64, the block a
 * single host or site usually gets (one host can use any address in it).
 * A source that owns many of those (an IPv4 /24, an IPv6 /56 or /48) is
 * also held to an aggregate bucket per prefix, whose limit is a multiple
 * of the per-address one: otherwise 256 /64s of one /56 get 256 times the
 * limit.  A connection is allowed only when every bucket of its source
 * (every rule at every prefix length) has a token; then one is taken from
 * each.
 *
 * The table is bounded.  When it is full, only the least recently seen
 * entry may be forgotten, and only when its buckets have refilled (it is
 * then indistinguishable from a fresh one); otherwise the new source is
 * refused: forgetting a limited bucket would hand its owner a fresh one.
 * The hash is keyed with a random seed, so chains cannot be aimed at. */
#include <netinet/in.h>
#include <bsd/stdlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "log.h"
#include "proxy_conf.h"
#include "ratelimit.h"

#define RL_MAX_RULES    4
#define RL_MAX_LEVELS   3       /* /64, /56, /48 (IPv4: /32, /24) */

/* What an entry counts: one source, or the aggregate of a prefix. */
enum rl_level {
	RL_ADDR,                /* IPv4 /32, IPv6 /64 */
	RL_V4_24,
	RL_V6_56,
	RL_V6_48,
};

struct rl_entry {
	uint8_t                  re_key[17];    /* level, then the address: IPv4
						   mapped into ::ffff:0:0/96, cut
						   to the level's prefix */
	double                   re_last;
	double                   re_tokens[RL_MAX_RULES];
	struct rl_entry         *re_next;       /* hash chain */
	TAILQ_ENTRY(rl_entry)    re_lru;
};

struct ratelimit {
	struct rate_limit        rl_rules[RL_MAX_RULES];
	int                      rl_nrules;
	long                     rl_factor[RL_V6_48 + 1];       /* 0: level off */
	size_t                   rl_max, rl_count, rl_nbuckets;
	struct rl_entry        **rl_buckets;
	TAILQ_HEAD(rl_lru_head, rl_entry) rl_lru;       /* most recent at the head */
	uint64_t                 rl_seed[2];
};

struct ratelimit *
ratelimit_new(const struct rate_limit *rules, int nrules, const struct rate_prefixes *agg,
    size_t max_entries)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return NULL;
	rl->rl_nrules = nrules > RL_MAX_RULES ? RL_MAX_RULES : nrules;
	if (nrules > RL_MAX_RULES)
		log_warnx("rate limits: only the first %d rules are used", RL_MAX_RULES);
	if (rl->rl_nrules > 0)
		memcpy(rl->rl_rules, rules, sizeof(*rules) * (size_t)rl->rl_nrules);
	rl->rl_factor[RL_ADDR] = 1;
	if (agg != NULL) {
		rl->rl_factor[RL_V4_24] = agg->rp_v4_24;
		rl->rl_factor[RL_V6_56] = agg->rp_v6_56;
		rl->rl_factor[RL_V6_48] = agg->rp_v6_48;
	}
	/* one attempt touches up to RL_MAX_LEVELS entries: never evict one
	 * of them for the next */
	rl->rl_max = max_entries > RL_MAX_LEVELS ? max_entries : RL_MAX_LEVELS + 1;
	for (rl->rl_nbuckets = 64; rl->rl_nbuckets < rl->rl_max; rl->rl_nbuckets <<= 1)
		;
	rl->rl_buckets = calloc(rl->rl_nbuckets, sizeof(*rl->rl_buckets));
	if (rl->rl_buckets == NULL) {
		free(rl);
		return NULL;
	}
	TAILQ_INIT(&rl->rl_lru);
	arc4random_buf(rl->rl_seed, sizeof(rl->rl_seed));
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

/* The keys of sa's buckets, narrowest first; returns how many. */
static int
rl_keys(const struct ratelimit *rl, const struct sockaddr *sa,
    uint8_t keys[RL_MAX_LEVELS][17], enum rl_level levels[RL_MAX_LEVELS])
{
	uint8_t a[16];
	int n = 0;

	memset(a, 0, sizeof(a));
	if (sa->sa_family == AF_INET) {
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6)
		memcpy(a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	/* IPv4-mapped (dual-stack listener): the IPv4 address and its /24 */
	if (sa->sa_family != AF_INET6 || IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)a)) {
		levels[n] = RL_ADDR;
		keys[n][0] = RL_ADDR;
		memcpy(keys[n++] + 1, a, 16);
		if (rl->rl_factor[RL_V4_24] > 0) {
			levels[n] = RL_V4_24;
			keys[n][0] = RL_V4_24;
			memcpy(keys[n] + 1, a, 15);
			keys[n++][16] = 0;
		}
		return n;
	}
	levels[n] = RL_ADDR;
	keys[n][0] = RL_ADDR;
	memset(keys[n] + 1, 0, 16);
	memcpy(keys[n++] + 1, a, 8);
	if (rl->rl_factor[RL_V6_56] > 0) {
		levels[n] = RL_V6_56;
		keys[n][0] = RL_V6_56;
		memset(keys[n] + 1, 0, 16);
		memcpy(keys[n++] + 1, a, 7);
	}
	if (rl->rl_factor[RL_V6_48] > 0) {
		levels[n] = RL_V6_48;
		keys[n][0] = RL_V6_48;
		memset(keys[n] + 1, 0, 16);
		memcpy(keys[n++] + 1, a, 6);
	}
	return n;
}

static size_t
rl_hash(const struct ratelimit *rl, const uint8_t key[17])
{
	uint64_t h = rl->rl_seed[0];

	for (int i = 0; i < 17; i++) {
		h = (h ^ key[i]) * 0x100000001b3ULL;
		h ^= h >> 32;
	}
	h ^= rl->rl_seed[1];
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h & (rl->rl_nbuckets - 1);
}

static void
rl_unlink(struct ratelimit *rl, struct rl_entry *e)
{
	struct rl_entry **pp = &rl->rl_buckets[rl_hash(rl, e->re_key)];

	while (*pp != e)
		pp = &(*pp)->re_next;
	*pp = e->re_next;
	TAILQ_REMOVE(&rl->rl_lru, e, re_lru);
	rl->rl_count--;
}

static double
rl_capacity(const struct ratelimit *rl, int rule, enum rl_level lv)
{
	return (double)rl->rl_rules[rule].rl_limit * (double)rl->rl_factor[lv];
}

/* Refill e's buckets up to now. */
static void
rl_refill(struct ratelimit *rl, struct rl_entry *e, enum rl_level lv, double now)
{
	for (int i = 0; i < rl->rl_nrules; i++) {
		double cap = rl_capacity(rl, i, lv);
		double t = e->re_tokens[i] + (now - e->re_last) * cap / rl->rl_rules[i].rl_window;

		e->re_tokens[i] = t > cap ? cap : t;
	}
	if (now > e->re_last)
		e->re_last = now;
}

/* Would every bucket of e be full by now (nothing to remember)? */
static int
rl_idle(const struct ratelimit *rl, const struct rl_entry *e, double now)
{
	enum rl_level lv = (enum rl_level)e->re_key[0];

	for (int i = 0; i < rl->rl_nrules; i++) {
		double cap = rl_capacity(rl, i, lv);

		if (e->re_tokens[i] + (now - e->re_last) * cap / rl->rl_rules[i].rl_window < cap)
			return 0;
	}
	return 1;
}

/* e for key, made (full) when new; NULL when the table is full of
 * entries that still limit someone, or out of memory (*nomem set). */
static struct rl_entry *
rl_get(struct ratelimit *rl, const uint8_t key[17], enum rl_level lv, double now, int *nomem)
{
	size_t h = rl_hash(rl, key);
	struct rl_entry *e, *old;

	for (e = rl->rl_buckets[h]; e != NULL; e = e->re_next)
		if (memcmp(e->re_key, key, 17) == 0) {
			TAILQ_REMOVE(&rl->rl_lru, e, re_lru);
			TAILQ_INSERT_HEAD(&rl->rl_lru, e, re_lru);
			return e;
		}
	if (rl->rl_count >= rl->rl_max) {
		old = TAILQ_LAST(&rl->rl_lru, rl_lru_head);
		if (old == NULL || !rl_idle(rl, old, now))
			return NULL;
		rl_unlink(rl, e = old);
	} else if ((e = malloc(sizeof(*e))) == NULL) {
		*nomem = 1;
		return NULL;
	}
	memcpy(e->re_key, key, 17);
	e->re_last = now;
	for (int i = 0; i < rl->rl_nrules; i++)
		e->re_tokens[i] = rl_capacity(rl, i, lv);
	e->re_next = rl->rl_buckets[h];
	rl->rl_buckets[h] = e;
	rl->rl_count++;
	TAILQ_INSERT_HEAD(&rl->rl_lru, e, re_lru);
	return e;
}

int
ratelimit_allow(struct ratelimit *rl, const struct sockaddr *sa, double now)
{
	uint8_t keys[RL_MAX_LEVELS][17];
	enum rl_level levels[RL_MAX_LEVELS];
	struct rl_entry *e[RL_MAX_LEVELS];
	int n, ok = 1, nomem = 0;

	if (rl == NULL || rl->rl_nrules == 0)
		return 1;
	n = rl_keys(rl, sa, keys, levels);
	/* Widest first: an aggregate is seen at every attempt of its prefix,
	 * so it stays at the head of the LRU list while its addresses vary. */
	for (int l = n - 1; l >= 0; l--) {
		if ((e[l] = rl_get(rl, keys[l], levels[l], now, &nomem)) == NULL) {
			if (nomem)
				return 1;       /* no memory: do not refuse clients for it */
			return 0;               /* table full of limited sources */
		}
		rl_refill(rl, e[l], levels[l], now);
		for (int i = 0; i < rl->rl_nrules; i++)
			if (e[l]->re_tokens[i] < 1)
				ok = 0;
	}
	if (ok)
		for (int l = 0; l < n; l++)
			for (int i = 0; i < rl->rl_nrules; i++)
				e[l]->re_tokens[i] -= 1;
	return ok;
}

size_t
ratelimit_count(const struct ratelimit *rl)
{
	return rl ? rl->rl_count : 0;
}
