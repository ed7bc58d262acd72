/* token.c - parked connections keyed by single-use 32-byte tokens.
 *
 * Entries live in a bucket chain of a hash table keyed by SipHash-2-4 of
 * the token (random key per table, so the layout cannot be predicted from
 * outside).  Expiry is not kept here: the owner times its parked entries
 * out (the public proxy's loop timer lists) and claims them back.  All
 * operations are O(1) on average.
 */
#include <sys/queue.h>

#include <bsd/stdlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"
#include "util.h"

struct token_entry {
	LIST_ENTRY(token_entry)	 te_bucket;
	uint8_t			 te_token[TOKEN_LEN];
	void			*te_value;
};

LIST_HEAD(token_bucket, token_entry);

#define TOKEN_POOL	32

struct token_table {
	struct token_bucket	*tt_buckets;
	size_t			 tt_mask;	/* bucket count - 1 (power of two) */
	size_t			 tt_count;
	size_t			 tt_max;
	uint64_t		 tt_key[2];	/* SipHash key */
	/* Tokens are drawn TOKEN_POOL at a time: libbsd's arc4random_buf()
	 * makes a getpid() system call on every call (its fork check). */
	uint8_t			 tt_pool[TOKEN_POOL][TOKEN_LEN];
	unsigned		 tt_pool_left;
};

#define ROTL(x, b)	(uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t
token_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#define SIPROUND(v0, v1, v2, v3) do {					\
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);	\
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;				\
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;				\
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);	\
} while (0)

/* SipHash-2-4 of exactly TOKEN_LEN bytes (a multiple of 8). */
static uint64_t
token_hash(const struct token_table *t, const uint8_t tok[TOKEN_LEN])
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ t->tt_key[0];
	uint64_t v1 = 0x646f72616e646f6dULL ^ t->tt_key[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ t->tt_key[0];
	uint64_t v3 = 0x7465646279746573ULL ^ t->tt_key[1];
	uint64_t m;

	for (size_t i = 0; i < TOKEN_LEN; i += 8) {
		m = token_le64(tok + i);
		v3 ^= m;
		SIPROUND(v0, v1, v2, v3);
		SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	/* final block: only the length byte, as the message is block-aligned */
	m = (uint64_t)TOKEN_LEN << 56;
	v3 ^= m;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	v0 ^= m;
	v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

struct token_table *
token_table_new(size_t max_entries)
{
	struct token_table *t;
	size_t n = 16;

	if (max_entries == 0)
		return NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	/* load factor at most 1 when full */
	while (n < max_entries && n < ((size_t)1 << 24))
		n <<= 1;
	if ((t->tt_buckets = calloc(n, sizeof(*t->tt_buckets))) == NULL) {
		free(t);
		return NULL;
	}
	t->tt_mask = n - 1;
	t->tt_max = max_entries;
	arc4random_buf(t->tt_key, sizeof(t->tt_key));
	return t;
}

static void
token_unlink(struct token_table *t, struct token_entry *e)
{
	LIST_REMOVE(e, te_bucket);
	t->tt_count--;
}

void
token_table_free(struct token_table *t)
{
	struct token_entry *e;

	if (t == NULL)
		return;
	for (size_t i = 0; i <= t->tt_mask; i++)
		while ((e = LIST_FIRST(&t->tt_buckets[i])) != NULL) {
			token_unlink(t, e);
			explicit_bzero(e->te_token, TOKEN_LEN);
			free(e);
		}
	free(t->tt_buckets);
	explicit_bzero(t->tt_pool, sizeof(t->tt_pool));
	free(t);
}

/* The entry for tok, comparing every candidate in constant time. */
static struct token_entry *
token_find(const struct token_table *t, const uint8_t tok[TOKEN_LEN])
{
	struct token_entry *e;

	LIST_FOREACH(e, &t->tt_buckets[token_hash(t, tok) & t->tt_mask], te_bucket)
		if (ct_memcmp(e->te_token, tok, TOKEN_LEN) == 0)
			return e;
	return NULL;
}

int
token_park(struct token_table *t, void *value, uint8_t token[TOKEN_LEN])
{
	struct token_entry *e;

	/* NULL is the "not found" answer of claim: it cannot be parked */
	if (value == NULL || t->tt_count >= t->tt_max)
		return -1;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return -1;
	/* a collision of 256 random bits will not happen; redraw anyway */
	do {
		if (t->tt_pool_left == 0) {
			arc4random_buf(t->tt_pool, sizeof(t->tt_pool));
			t->tt_pool_left = TOKEN_POOL;
		}
		t->tt_pool_left--;
		memcpy(e->te_token, t->tt_pool[t->tt_pool_left], TOKEN_LEN);
		explicit_bzero(t->tt_pool[t->tt_pool_left], TOKEN_LEN);
	} while (token_find(t, e->te_token) != NULL);
	e->te_value = value;
	LIST_INSERT_HEAD(&t->tt_buckets[token_hash(t, e->te_token) & t->tt_mask], e,
	    te_bucket);
	t->tt_count++;
	memcpy(token, e->te_token, TOKEN_LEN);
	return 0;
}

void *
token_claim(struct token_table *t, const uint8_t token[TOKEN_LEN])
{
	struct token_entry *e;
	void *v;

	if ((e = token_find(t, token)) == NULL)
		return NULL;
	v = e->te_value;
	token_unlink(t, e);
	explicit_bzero(e->te_token, TOKEN_LEN);
	free(e);
	return v;
}

void *
token_lookup(const struct token_table *t, const uint8_t token[TOKEN_LEN])
{
	struct token_entry *e = token_find(t, token);

	return e != NULL ? e->te_value : NULL;
}

size_t
token_count(const struct token_table *t)
{
	return t->tt_count;
}
