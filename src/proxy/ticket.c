/* ticket.c - the ticket book (ticket.h): issued and minted tickets for
 * pooled data connections, per-operator caps.  Any thread; one mutex.
 *
 * Two hash sets of 32-byte keys share one implementation: the issued
 * tickets (kept after their use until they expire, to answer "used"
 * rather than "unknown") and the replay records of minted tickets (key id
 * and nonce, zero-padded).  Their keys are either our own random bytes or
 * inserted only after a MAC verified, so nobody outside can choose them; a
 * seeded multiply-xorshift mix is enough to spread them.  Operators are a
 * short list (one per operator that called us), each with its few keys;
 * a key id is found by walking them.
 */
#include <sys/queue.h>

#include <bsd/stdlib.h>
#include <bsd/string.h>
#include <json-c/json.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ticket.h"
#include "util.h"

#define TICKET_DEF_CAP		64
#define TICKET_DEF_LIFETIME	60.0
#define TICKET_DEF_KEY_LIFETIME	600.0
#define TB_MIN_BUCKETS		64
#define TB_MAX_BUCKETS		((size_t)1 << 22)

struct tb_entry {
	LIST_ENTRY(tb_entry)	 te_link;
	uint8_t			 te_key[TICKET_LEN];
	struct ticket_op	*te_op;
	double			 te_expiry;
	int			 te_used;	/* issued ticket already redeemed */
};

LIST_HEAD(tb_bucket, tb_entry);

struct tb_set {
	struct tb_bucket	*ts_buckets;
	size_t			 ts_mask;	/* bucket count - 1 (power of two) */
	size_t			 ts_count;
	uint64_t		 ts_seed;
};

struct ticket_keyent {
	int			 tke_live;
	uint8_t			 tke_id[TICKET_KEY_ID_LEN];
	uint8_t			 tke_secret[TICKET_SECRET_LEN];
	uint32_t		 tke_expiry;
	int			 tke_foreign;	/* another instance's (ticket_key_add) */
};

struct ticket_op {
	LIST_ENTRY(ticket_op)	 to_link;
	char			 to_name[TICKET_OP_MAX + 1];
	struct ticket_keyent	 to_keys[TICKET_KEYS_MAX];
	struct ticket_stats	 to_st;		/* idle and outstanding count toward the cap */
};

struct ticket_book {
	pthread_mutex_t		 tb_lock;
	struct ticket_limits	 tb_limits;
	LIST_HEAD(, ticket_op)	 tb_ops;
	struct tb_set		 tb_tickets;
	struct tb_set		 tb_replay;
	char			 tb_instance[TICKET_INSTANCE_MAX + 1];	/* "" none */
};

const char *
ticket_why_str(enum ticket_why w)
{
	switch (w) {
	case TICKET_OK:		return "ok";
	case TICKET_UNKNOWN:	return "unknown ticket";
	case TICKET_USED:	return "ticket already used";
	case TICKET_EXPIRED:	return "ticket expired";
	case TICKET_BAD_MAC:	return "bad ticket MAC";
	case TICKET_REPLAY:	return "ticket replayed";
	case TICKET_BAD_EXPIRY:	return "ticket expiry out of range";
	case TICKET_CAP:	return "too many tickets and pooled connections";
	case TICKET_INVALID:	return "invalid request";
	case TICKET_NOMEM:	return "out of memory";
	}
	return "?";
}

/* ---- hash sets ------------------------------------------------------------ */

static uint64_t
tb_hash(const struct tb_set *s, const uint8_t k[TICKET_LEN])
{
	uint64_t h = s->ts_seed, w;

	for (size_t i = 0; i < TICKET_LEN; i += 8) {
		memcpy(&w, k + i, 8);
		h ^= w;
		h *= 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	return h;
}

static int
tb_set_init(struct tb_set *s)
{
	if ((s->ts_buckets = calloc(TB_MIN_BUCKETS, sizeof(*s->ts_buckets))) == NULL)
		return -1;
	s->ts_mask = TB_MIN_BUCKETS - 1;
	s->ts_count = 0;
	arc4random_buf(&s->ts_seed, sizeof(s->ts_seed));
	return 0;
}

static void
tb_set_free(struct tb_set *s)
{
	struct tb_entry *e;

	if (s->ts_buckets == NULL)
		return;
	for (size_t i = 0; i <= s->ts_mask; i++)
		while ((e = LIST_FIRST(&s->ts_buckets[i])) != NULL) {
			LIST_REMOVE(e, te_link);
			explicit_bzero(e, sizeof(*e));
			free(e);
		}
	free(s->ts_buckets);
}

/* The entry for k; every candidate compared in constant time. */
static struct tb_entry *
tb_find(const struct tb_set *s, const uint8_t k[TICKET_LEN])
{
	struct tb_entry *e;

	LIST_FOREACH(e, &s->ts_buckets[tb_hash(s, k) & s->ts_mask], te_link)
		if (ct_memcmp(e->te_key, k, TICKET_LEN) == 0)
			return e;
	return NULL;
}

/* Double the buckets when the chains grow past two on average; a failed
 * allocation keeps the old table (longer chains, still correct). */
static void
tb_grow(struct tb_set *s)
{
	struct tb_bucket *nb;
	struct tb_entry *e;
	size_t n = (s->ts_mask + 1) * 2;

	if (s->ts_count < 2 * (s->ts_mask + 1) || n > TB_MAX_BUCKETS)
		return;
	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		return;
	for (size_t i = 0; i <= s->ts_mask; i++)
		while ((e = LIST_FIRST(&s->ts_buckets[i])) != NULL) {
			LIST_REMOVE(e, te_link);
			LIST_INSERT_HEAD(&nb[tb_hash(s, e->te_key) & (n - 1)], e, te_link);
		}
	free(s->ts_buckets);
	s->ts_buckets = nb;
	s->ts_mask = n - 1;
}

static struct tb_entry *
tb_insert(struct tb_set *s, const uint8_t k[TICKET_LEN], struct ticket_op *op, double expiry)
{
	struct tb_entry *e;

	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	memcpy(e->te_key, k, TICKET_LEN);
	e->te_op = op;
	e->te_expiry = expiry;
	LIST_INSERT_HEAD(&s->ts_buckets[tb_hash(s, k) & s->ts_mask], e, te_link);
	s->ts_count++;
	tb_grow(s);
	return e;
}

static void
tb_remove(struct tb_set *s, struct tb_entry *e)
{
	LIST_REMOVE(e, te_link);
	s->ts_count--;
	explicit_bzero(e, sizeof(*e));
	free(e);
}

/* ---- operators ------------------------------------------------------------ */

/* Operator names come from the directory: printable ASCII, no blanks. */
static int
ticket_op_valid(const char *op)
{
	size_t n;

	if (op == NULL || (n = strnlen(op, TICKET_OP_MAX + 1)) == 0 || n > TICKET_OP_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)op[i] <= 0x20 || (unsigned char)op[i] >= 0x7f)
			return 0;
	return 1;
}

static struct ticket_op *
ticket_op_find(struct ticket_book *b, const char *op)
{
	struct ticket_op *o;

	LIST_FOREACH(o, &b->tb_ops, to_link)
		if (strcmp(o->to_name, op) == 0)
			return o;
	return NULL;
}

static struct ticket_op *
ticket_op_get(struct ticket_book *b, const char *op)
{
	struct ticket_op *o;

	if ((o = ticket_op_find(b, op)) != NULL)
		return o;
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return NULL;
	strlcpy(o->to_name, op, sizeof(o->to_name));
	LIST_INSERT_HEAD(&b->tb_ops, o, to_link);
	return o;
}

/* room under the cap */
static size_t
ticket_op_room(const struct ticket_book *b, const struct ticket_op *o)
{
	size_t held = o->to_st.ts_idle + o->to_st.ts_outstanding;

	return held >= b->tb_limits.tl_cap ? 0 : b->tb_limits.tl_cap - held;
}

/* ---- book ----------------------------------------------------------------- */

struct ticket_book *
ticket_book_new(const struct ticket_limits *limits)
{
	struct ticket_book *b;

	if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	if (limits != NULL)
		b->tb_limits = *limits;
	if (b->tb_limits.tl_cap == 0)
		b->tb_limits.tl_cap = TICKET_DEF_CAP;
	if (!(b->tb_limits.tl_lifetime > 0))
		b->tb_limits.tl_lifetime = TICKET_DEF_LIFETIME;
	if (!(b->tb_limits.tl_key_lifetime > 0))
		b->tb_limits.tl_key_lifetime = TICKET_DEF_KEY_LIFETIME;
	LIST_INIT(&b->tb_ops);
	if (tb_set_init(&b->tb_tickets) == -1 || tb_set_init(&b->tb_replay) == -1 ||
	    pthread_mutex_init(&b->tb_lock, NULL) != 0) {
		tb_set_free(&b->tb_tickets);
		tb_set_free(&b->tb_replay);
		free(b);
		return NULL;
	}
	return b;
}

void
ticket_book_free(struct ticket_book *b)
{
	struct ticket_op *o;

	if (b == NULL)
		return;
	tb_set_free(&b->tb_tickets);
	tb_set_free(&b->tb_replay);
	while ((o = LIST_FIRST(&b->tb_ops)) != NULL) {
		LIST_REMOVE(o, to_link);
		explicit_bzero(o, sizeof(*o));
		free(o);
	}
	pthread_mutex_destroy(&b->tb_lock);
	free(b);
}

enum ticket_why
ticket_issue(struct ticket_book *b, const char *op, size_t count, double now,
    uint8_t out[][TICKET_LEN], size_t *issued, double *expiry)
{
	enum ticket_why w = TICKET_OK;
	struct ticket_op *o;
	size_t n, i;

	*issued = 0;
	if (!ticket_op_valid(op) || count == 0 || count > TICKET_BATCH_MAX)
		return TICKET_INVALID;
	pthread_mutex_lock(&b->tb_lock);
	if ((o = ticket_op_get(b, op)) == NULL) {
		w = TICKET_NOMEM;
		goto out;
	}
	if ((n = ticket_op_room(b, o)) == 0) {
		w = TICKET_CAP;
		goto out;
	}
	if (n > count)
		n = count;
	*expiry = now + b->tb_limits.tl_lifetime;
	for (i = 0; i < n; i++) {
		/* a collision of 256 random bits will not happen; redraw anyway */
		do
			arc4random_buf(out[i], TICKET_LEN);
		while (tb_find(&b->tb_tickets, out[i]) != NULL);
		if (tb_insert(&b->tb_tickets, out[i], o, *expiry) == NULL)
			break;
		o->to_st.ts_outstanding++;
	}
	*issued = i;
	if (i == 0)
		w = TICKET_NOMEM;
 out:
	pthread_mutex_unlock(&b->tb_lock);
	return w;
}

/* o's slot for a new key, wiped: a free or expired one, else the one
 * expiring first. */
static struct ticket_keyent *
ticket_key_slot(struct ticket_op *o, double now)
{
	struct ticket_keyent *k, *slot = NULL;

	for (int i = 0; i < TICKET_KEYS_MAX; i++) {
		k = &o->to_keys[i];
		if (!k->tke_live || k->tke_expiry <= now) {
			slot = k;
			break;
		}
		if (slot == NULL || k->tke_expiry < slot->tke_expiry)
			slot = k;
	}
	explicit_bzero(slot, sizeof(*slot));
	return slot;
}

enum ticket_why
ticket_key(struct ticket_book *b, const char *op, double now, struct ticket_key *key)
{
	struct ticket_keyent *slot;
	struct ticket_op *o, *x;
	int clash;

	if (!ticket_op_valid(op))
		return TICKET_INVALID;
	pthread_mutex_lock(&b->tb_lock);
	if ((o = ticket_op_get(b, op)) == NULL) {
		pthread_mutex_unlock(&b->tb_lock);
		return TICKET_NOMEM;
	}
	slot = ticket_key_slot(o, now);
	do {
		arc4random_buf(slot->tke_id, sizeof(slot->tke_id));
		clash = 0;
		LIST_FOREACH(x, &b->tb_ops, to_link)
			for (int i = 0; i < TICKET_KEYS_MAX; i++)
				if (&x->to_keys[i] != slot && x->to_keys[i].tke_live &&
				    memcmp(x->to_keys[i].tke_id, slot->tke_id,
				    TICKET_KEY_ID_LEN) == 0)
					clash = 1;
	} while (clash);
	arc4random_buf(slot->tke_secret, sizeof(slot->tke_secret));
	slot->tke_expiry = (uint32_t)(now + b->tb_limits.tl_key_lifetime);
	slot->tke_live = 1;
	o->to_st.ts_keys++;
	o->to_st.ts_key_expiry = slot->tke_expiry;

	memset(key, 0, sizeof(*key));
	memcpy(key->tk_id, slot->tke_id, TICKET_KEY_ID_LEN);
	memcpy(key->tk_secret, slot->tke_secret, TICKET_SECRET_LEN);
	key->tk_expiry = slot->tke_expiry;
	strlcpy(key->tk_op, op, sizeof(key->tk_op));
	pthread_mutex_unlock(&b->tb_lock);
	return TICKET_OK;
}

static struct ticket_keyent *ticket_key_find(struct ticket_book *,
	    const uint8_t[TICKET_KEY_ID_LEN], struct ticket_op **);

int
ticket_book_set_instance(struct ticket_book *b, const char *instance)
{
	if (instance == NULL || strlen(instance) > TICKET_INSTANCE_MAX)
		return -1;
	pthread_mutex_lock(&b->tb_lock);
	strlcpy(b->tb_instance, instance, sizeof(b->tb_instance));
	pthread_mutex_unlock(&b->tb_lock);
	return 0;
}

enum ticket_why
ticket_key_add(struct ticket_book *b, const struct ticket_key *key, double now)
{
	struct ticket_keyent *slot;
	struct ticket_op *o, *x;

	if (!ticket_op_valid(key->tk_op))
		return TICKET_INVALID;
	if ((double)key->tk_expiry <= now)
		return TICKET_EXPIRED;
	if (key->tk_expiry > now + b->tb_limits.tl_key_lifetime + TICKET_SKEW)
		return TICKET_BAD_EXPIRY;
	pthread_mutex_lock(&b->tb_lock);
	/* known already (our own, or added before): nothing to do */
	if (ticket_key_find(b, key->tk_id, &x) != NULL) {
		pthread_mutex_unlock(&b->tb_lock);
		return TICKET_OK;
	}
	if ((o = ticket_op_get(b, key->tk_op)) == NULL) {
		pthread_mutex_unlock(&b->tb_lock);
		return TICKET_NOMEM;
	}
	slot = ticket_key_slot(o, now);
	memcpy(slot->tke_id, key->tk_id, TICKET_KEY_ID_LEN);
	memcpy(slot->tke_secret, key->tk_secret, TICKET_SECRET_LEN);
	slot->tke_expiry = key->tk_expiry;
	slot->tke_foreign = 1;
	slot->tke_live = 1;
	pthread_mutex_unlock(&b->tb_lock);
	return TICKET_OK;
}

/* ---- minted tickets ------------------------------------------------------- */

static void
ticket_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
ticket_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The 16-byte MAC of a minted ticket t (its first 16 bytes) for op, bound
 * to instance when it is not NULL or "" ("HPT2").  0, or -1 when OpenSSL
 * fails. */
static int
ticket_mac(const uint8_t secret[TICKET_SECRET_LEN], const char *op, const char *instance,
    const uint8_t *t, uint8_t mac[TICKET_MAC_LEN])
{
	uint8_t msg[4 + 1 + TICKET_OP_MAX + 1 + TICKET_INSTANCE_MAX + 16], md[EVP_MAX_MD_SIZE];
	size_t n = strlen(op), len = 0, ni = instance != NULL ? strlen(instance) : 0;
	unsigned mdlen = 0;

	if (ni > TICKET_INSTANCE_MAX)
		return -1;
	memcpy(msg, ni > 0 ? "HPT2" : "HPT1", 4);
	len += 4;
	msg[len++] = (uint8_t)n;
	memcpy(msg + len, op, n);
	len += n;
	if (ni > 0) {
		msg[len++] = (uint8_t)ni;
		memcpy(msg + len, instance, ni);
		len += ni;
	}
	memcpy(msg + len, t, 16);	/* key id, expiry, nonce */
	len += 16;
	if (HMAC(EVP_sha256(), secret, TICKET_SECRET_LEN, msg, len, md, &mdlen) == NULL ||
	    mdlen < TICKET_MAC_LEN)
		return -1;
	memcpy(mac, md, TICKET_MAC_LEN);
	explicit_bzero(md, sizeof(md));
	return 0;
}

int
ticket_mint(struct ticket_key *key, const char *instance, double now, double lifetime,
    uint8_t out[TICKET_LEN])
{
	double until = now + lifetime;
	uint32_t expiry;

	if (!ticket_op_valid(key->tk_op) || key->tk_nonce == UINT32_MAX ||
	    !(lifetime >= 1) || (double)key->tk_expiry <= now)
		return -1;
	expiry = until < (double)key->tk_expiry ? (uint32_t)until : key->tk_expiry;
	memcpy(out, key->tk_id, TICKET_KEY_ID_LEN);
	ticket_put32(out + 8, expiry);
	ticket_put32(out + 12, key->tk_nonce);
	if (ticket_mac(key->tk_secret, key->tk_op, instance, out, out + 16) == -1)
		return -1;
	/* a nonce is never used twice with one key: the replay record is
	 * keyed by it */
	key->tk_nonce++;
	return 0;
}

static struct ticket_keyent *
ticket_key_find(struct ticket_book *b, const uint8_t id[TICKET_KEY_ID_LEN],
    struct ticket_op **op)
{
	struct ticket_op *o;

	LIST_FOREACH(o, &b->tb_ops, to_link)
		for (int i = 0; i < TICKET_KEYS_MAX; i++)
			if (o->to_keys[i].tke_live &&
			    memcmp(o->to_keys[i].tke_id, id, TICKET_KEY_ID_LEN) == 0) {
				*op = o;
				return &o->to_keys[i];
			}
	return NULL;
}

/* Check a minted ticket t; on OK it is recorded and pooled.  Locked. */
static enum ticket_why
ticket_redeem_minted(struct ticket_book *b, const uint8_t t[TICKET_LEN], double now,
    struct ticket_op **op)
{
	struct ticket_keyent *k;
	uint8_t mac[TICKET_MAC_LEN], rk[TICKET_LEN];
	uint32_t expiry;

	if ((k = ticket_key_find(b, t, op)) == NULL)
		return TICKET_UNKNOWN;
	/* bound to this instance; else, with a key of its own only, unbound
	 * (another instance that knows the key cannot take it twice) */
	if (b->tb_instance[0] == '\0' ||
	    ticket_mac(k->tke_secret, (*op)->to_name, b->tb_instance, t, mac) == -1 ||
	    ct_memcmp(mac, t + 16, TICKET_MAC_LEN) != 0) {
		if (k->tke_foreign)
			return TICKET_BAD_MAC;
		if (ticket_mac(k->tke_secret, (*op)->to_name, NULL, t, mac) == -1)
			return TICKET_NOMEM;
		if (ct_memcmp(mac, t + 16, TICKET_MAC_LEN) != 0)
			return TICKET_BAD_MAC;
	}
	expiry = ticket_get32(t + 8);
	if ((double)k->tke_expiry <= now || (double)expiry <= now)
		return TICKET_EXPIRED;
	if (expiry > k->tke_expiry ||
	    (double)expiry > now + b->tb_limits.tl_lifetime + TICKET_SKEW)
		return TICKET_BAD_EXPIRY;
	/* the record is key id and nonce: a nonce is spent whatever the expiry */
	memset(rk, 0, sizeof(rk));
	memcpy(rk, t, TICKET_KEY_ID_LEN);
	memcpy(rk + 12, t + 12, 4);
	if (tb_find(&b->tb_replay, rk) != NULL)
		return TICKET_REPLAY;
	if (ticket_op_room(b, *op) == 0)
		return TICKET_CAP;
	if (tb_insert(&b->tb_replay, rk, *op, expiry) == NULL)
		return TICKET_NOMEM;
	(*op)->to_st.ts_idle++;
	(*op)->to_st.ts_minted++;
	return TICKET_OK;
}

enum ticket_why
ticket_redeem(struct ticket_book *b, const uint8_t t[TICKET_LEN], double now,
    char op[TICKET_OP_MAX + 1])
{
	enum ticket_why w;
	struct ticket_op *o = NULL;
	struct tb_entry *e;

	op[0] = '\0';
	pthread_mutex_lock(&b->tb_lock);
	if ((e = tb_find(&b->tb_tickets, t)) == NULL)
		w = ticket_redeem_minted(b, t, now, &o);
	else if (e->te_used) {
		o = e->te_op;
		w = TICKET_USED;
	} else if (e->te_expiry <= now) {
		o = e->te_op;
		e->te_op->to_st.ts_outstanding--;
		e->te_op->to_st.ts_expired++;
		tb_remove(&b->tb_tickets, e);
		w = TICKET_EXPIRED;
	} else {
		/* kept until it expires, to answer "used" to a second try */
		e->te_used = 1;
		o = e->te_op;
		o->to_st.ts_outstanding--;
		o->to_st.ts_idle++;
		w = TICKET_OK;
	}
	/* on a refusal too: the operator the ticket claims to be of */
	if (o != NULL)
		strlcpy(op, o->to_name, TICKET_OP_MAX + 1);
	pthread_mutex_unlock(&b->tb_lock);
	return w;
}

int
ticket_pool_leave(struct ticket_book *b, const char *op, enum ticket_leave why)
{
	struct ticket_op *o;
	int rc = -1;

	if (op == NULL)
		return -1;
	pthread_mutex_lock(&b->tb_lock);
	if ((o = ticket_op_find(b, op)) != NULL && o->to_st.ts_idle > 0) {
		o->to_st.ts_idle--;
		switch (why) {
		case TICKET_LEAVE_USED:		o->to_st.ts_used++; break;
		case TICKET_LEAVE_REPLACED:	o->to_st.ts_replaced++; break;
		case TICKET_LEAVE_DEAD:		o->to_st.ts_dead++; break;
		case TICKET_LEAVE_CLOSED:	o->to_st.ts_closed++; break;
		}
		rc = 0;
	}
	pthread_mutex_unlock(&b->tb_lock);
	return rc;
}

void
ticket_sweep(struct ticket_book *b, double now)
{
	struct tb_entry *e, *next;
	struct ticket_op *o;
	struct tb_set *s;

	pthread_mutex_lock(&b->tb_lock);
	s = &b->tb_tickets;
	for (size_t i = 0; i <= s->ts_mask; i++)
		for (e = LIST_FIRST(&s->ts_buckets[i]); e != NULL; e = next) {
			next = LIST_NEXT(e, te_link);
			if (e->te_expiry > now)
				continue;
			if (!e->te_used) {
				e->te_op->to_st.ts_outstanding--;
				e->te_op->to_st.ts_expired++;
			}
			tb_remove(s, e);
		}
	s = &b->tb_replay;
	for (size_t i = 0; i <= s->ts_mask; i++)
		for (e = LIST_FIRST(&s->ts_buckets[i]); e != NULL; e = next) {
			next = LIST_NEXT(e, te_link);
			if (e->te_expiry <= now)
				tb_remove(s, e);
		}
	/* a key outlives every replay record made with it (expiry <= key's) */
	LIST_FOREACH(o, &b->tb_ops, to_link)
		for (int i = 0; i < TICKET_KEYS_MAX; i++)
			if (o->to_keys[i].tke_live && o->to_keys[i].tke_expiry <= now)
				explicit_bzero(&o->to_keys[i], sizeof(o->to_keys[i]));
	pthread_mutex_unlock(&b->tb_lock);
}

int
ticket_stats(struct ticket_book *b, const char *op, struct ticket_stats *st)
{
	struct ticket_op *o;
	int rc = -1;

	if (op == NULL)
		return -1;
	pthread_mutex_lock(&b->tb_lock);
	if ((o = ticket_op_find(b, op)) != NULL) {
		*st = o->to_st;
		rc = 0;
	}
	pthread_mutex_unlock(&b->tb_lock);
	return rc;
}

int
ticket_foreach(struct ticket_book *b,
    void (*fn)(void *arg, const char *op, const struct ticket_stats *st), void *arg)
{
	struct ticket_op *o;
	int n = 0;

	pthread_mutex_lock(&b->tb_lock);
	LIST_FOREACH(o, &b->tb_ops, to_link) {
		fn(arg, o->to_name, &o->to_st);
		n++;
	}
	pthread_mutex_unlock(&b->tb_lock);
	return n;
}

/* ---- the key as JSON ------------------------------------------------------- */

struct json_object *
ticket_key_json(const struct ticket_key *key, double now, double ticket_lifetime)
{
	struct json_object *o;
	char b64[64], ts[32];

	if ((o = json_object_new_object()) == NULL)
		return NULL;
	b64_encode(key->tk_id, TICKET_KEY_ID_LEN, b64);
	json_object_object_add(o, "id", json_object_new_string(b64));
	b64_encode(key->tk_secret, TICKET_SECRET_LEN, b64);
	json_object_object_add(o, "secret", json_object_new_string(b64));
	explicit_bzero(b64, sizeof(b64));
	json_object_object_add(o, "expiry", json_object_new_int64(key->tk_expiry));
	json_object_object_add(o, "expires_at",
	    json_object_new_string(rfc3339_format(key->tk_expiry, ts, sizeof(ts))));
	json_object_object_add(o, "expires_in",
	    json_object_new_double((double)key->tk_expiry - now));
	json_object_object_add(o, "ticket_lifetime", json_object_new_double(ticket_lifetime));
	return o;
}

/* A number member of o (an integer or a double) into *v; 0, or -1. */
static int
ticket_json_number(struct json_object *o, const char *name, double *v)
{
	struct json_object *j;

	if (!json_object_object_get_ex(o, name, &j) ||
	    !(json_object_is_type(j, json_type_int) || json_object_is_type(j, json_type_double)))
		return -1;
	*v = json_object_get_double(j);
	return isfinite(*v) ? 0 : -1;
}

/* A base64 member of o of exactly len bytes into out; 0, or -1. */
static int
ticket_json_bytes(struct json_object *o, const char *name, uint8_t *out, size_t len)
{
	struct json_object *j;
	uint8_t buf[TICKET_SECRET_LEN + 3];
	int n;

	if (!json_object_object_get_ex(o, name, &j) || !json_object_is_type(j, json_type_string) ||
	    json_object_get_string_len(j) > 4 * (int)((sizeof(buf) + 2) / 3))
		return -1;
	n = b64_decode(json_object_get_string(j), buf, sizeof(buf));
	if (n != (int)len) {
		explicit_bzero(buf, sizeof(buf));
		return -1;
	}
	memcpy(out, buf, len);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

int
ticket_key_parse(struct json_object *o, const char *op, double now, struct ticket_key *key,
    double *ticket_lifetime, double *skew, char *err, size_t errlen)
{
	struct json_object *j;
	double in, life;
	int64_t expiry;

	memset(key, 0, sizeof(*key));
	if (!ticket_op_valid(op)) {
		snprintf(err, errlen, "bad operator name");
		return -1;
	}
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		snprintf(err, errlen, "key: expected an object");
		return -1;
	}
	if (ticket_json_bytes(o, "id", key->tk_id, TICKET_KEY_ID_LEN) < 0) {
		snprintf(err, errlen, "key.id: expected base64 of %d bytes", TICKET_KEY_ID_LEN);
		goto bad;
	}
	if (ticket_json_bytes(o, "secret", key->tk_secret, TICKET_SECRET_LEN) < 0) {
		snprintf(err, errlen, "key.secret: expected base64 of %d bytes",
		    TICKET_SECRET_LEN);
		goto bad;
	}
	if (!json_object_object_get_ex(o, "expiry", &j) || !json_object_is_type(j, json_type_int) ||
	    (expiry = json_object_get_int64(j)) < 1 || expiry > (int64_t)UINT32_MAX) {
		snprintf(err, errlen, "key.expiry: expected an integer of seconds since the epoch");
		goto bad;
	}
	if (ticket_json_number(o, "expires_in", &in) < 0 || !(in > 0) || in > 366 * 86400.0) {
		snprintf(err, errlen, "key.expires_in: expected a number of seconds above 0");
		goto bad;
	}
	if (ticket_json_number(o, "ticket_lifetime", &life) < 0 || !(life >= 1) ||
	    life > 86400) {
		snprintf(err, errlen, "key.ticket_lifetime: expected 1-86400 seconds");
		goto bad;
	}
	key->tk_expiry = (uint32_t)expiry;
	key->tk_nonce = 0;
	strlcpy(key->tk_op, op, sizeof(key->tk_op));
	*ticket_lifetime = life;
	*skew = (double)expiry - (now + in);
	return 0;
 bad:
	explicit_bzero(key, sizeof(*key));
	return -1;
}
