/* Tests for ticket.c: issued tickets (single use, expiry, caps), minted
 * tickets (good, bad MAC, expired, replayed, another operator's, key
 * rotation), the pool accounting, redeeming from several threads, and the
 * key as JSON (what requestConnectionTickets answers, what a keeper reads). */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ticket.h"

#define OP	"private-proxy-1.ga"
#define OP2	"private-proxy-2.ga"
#define T0	1800000000.0	/* a wall-clock "now" (2027-01-15) */

static struct ticket_book *
book(size_t cap, double lifetime, double key_lifetime)
{
	struct ticket_limits l = {
		.tl_cap = cap, .tl_lifetime = lifetime, .tl_key_lifetime = key_lifetime,
	};
	struct ticket_book *b = ticket_book_new(&l);

	cr_assert_not_null(b);
	return b;
}

static struct ticket_stats
stats(struct ticket_book *b, const char *op)
{
	struct ticket_stats st;

	cr_assert_eq(ticket_stats(b, op, &st), 0);
	return st;
}

static void
issue(struct ticket_book *b, const char *op, size_t count, double now,
    uint8_t out[][TICKET_LEN], size_t want)
{
	size_t n = 99;
	double exp = 0;

	cr_assert_eq(ticket_issue(b, op, count, now, out, &n, &exp), TICKET_OK);
	cr_assert_eq(n, want);
}

Test(ticket, issued_ticket_is_single_use_and_bound_to_its_operator)
{
	struct ticket_book *b = book(10, 60, 600);
	uint8_t t[3][TICKET_LEN], zero[TICKET_LEN] = { 0 };
	char op[TICKET_OP_MAX + 1];
	size_t n;
	double exp;
	struct ticket_stats st;

	cr_assert_eq(ticket_issue(b, OP, 3, T0, t, &n, &exp), TICKET_OK);
	cr_assert_eq(n, 3);
	cr_assert_float_eq(exp, T0 + 60, 1e-9);
	cr_assert(memcmp(t[0], t[1], TICKET_LEN) != 0 && memcmp(t[0], zero, TICKET_LEN) != 0);
	st = stats(b, OP);
	cr_assert_eq(st.ts_outstanding, 3);
	for (int i = 0; i < 3; i++) {
		op[0] = '\0';
		cr_assert_eq(ticket_redeem(b, t[i], T0 + 1, op), TICKET_OK);
		cr_assert_str_eq(op, OP);
	}
	cr_assert_eq(ticket_redeem(b, t[1], T0 + 2, op), TICKET_USED);
	st = stats(b, OP);
	cr_assert_eq(st.ts_outstanding, 0);
	cr_assert_eq(st.ts_idle, 3);
	ticket_book_free(b);
}

Test(ticket, unknown_or_altered_bytes_change_nothing)
{
	struct ticket_book *b = book(10, 60, 600);
	uint8_t t[1][TICKET_LEN], x[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	struct ticket_stats st;

	issue(b, OP, 1, T0, t, 1);
	memcpy(x, t[0], TICKET_LEN);
	x[TICKET_LEN - 1] ^= 1;
	cr_assert_eq(ticket_redeem(b, x, T0, op), TICKET_UNKNOWN);
	memset(x, 0, sizeof(x));
	cr_assert_eq(ticket_redeem(b, x, T0, op), TICKET_UNKNOWN);
	st = stats(b, OP);
	cr_assert_eq(st.ts_outstanding, 1, "nothing consumed for nothing");
	cr_assert_eq(st.ts_idle, 0);
	cr_assert_eq(ticket_redeem(b, t[0], T0, op), TICKET_OK);
	ticket_book_free(b);
}

Test(ticket, issued_ticket_expires_unused)
{
	struct ticket_book *b = book(10, 10, 600);
	uint8_t t[3][TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	struct ticket_stats st;

	issue(b, OP, 3, T0, t, 3);
	cr_assert_eq(ticket_redeem(b, t[0], T0 + 9.9, op), TICKET_OK);
	/* not swept yet: redeem checks the expiry itself */
	cr_assert_eq(ticket_redeem(b, t[1], T0 + 10, op), TICKET_EXPIRED);
	cr_assert_eq(ticket_redeem(b, t[1], T0 + 10, op), TICKET_UNKNOWN);
	st = stats(b, OP);
	cr_assert_eq(st.ts_outstanding, 1);
	cr_assert_eq(st.ts_expired, 1);
	ticket_sweep(b, T0 + 10);
	st = stats(b, OP);
	cr_assert_eq(st.ts_outstanding, 0);
	cr_assert_eq(st.ts_expired, 2);
	cr_assert_eq(st.ts_idle, 1, "a pooled connection does not expire with its ticket");
	/* the used record is gone too: an old ticket is just unknown */
	cr_assert_eq(ticket_redeem(b, t[0], T0 + 11, op), TICKET_UNKNOWN);
	cr_assert_eq(ticket_redeem(b, t[2], T0 + 11, op), TICKET_UNKNOWN);
	ticket_book_free(b);
}

Test(ticket, cap_counts_tickets_and_pooled_connections)
{
	struct ticket_book *b = book(5, 10, 600);
	uint8_t t[10][TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	size_t n;
	double exp;
	struct ticket_stats st;

	issue(b, OP, 10, T0, t, 5);	/* only as many as the cap leaves */
	cr_assert_eq(ticket_issue(b, OP, 1, T0, t + 5, &n, &exp), TICKET_CAP);
	cr_assert_eq(n, 0);
	cr_assert_eq(ticket_redeem(b, t[0], T0, op), TICKET_OK);
	cr_assert_eq(ticket_redeem(b, t[1], T0, op), TICKET_OK);
	cr_assert_eq(ticket_issue(b, OP, 1, T0, t + 5, &n, &exp), TICKET_CAP,
	    "a pooled connection still counts");
	/* another operator has its own cap */
	issue(b, OP2, 2, T0, t + 5, 2);
	cr_assert_eq(ticket_pool_leave(b, OP, TICKET_LEAVE_USED), 0);
	issue(b, OP, 3, T0, t + 7, 1);
	cr_assert_eq(ticket_pool_leave(b, OP, TICKET_LEAVE_DEAD), 0);
	cr_assert_eq(ticket_pool_leave(b, OP, TICKET_LEAVE_REPLACED), -1, "no pooled left");
	st = stats(b, OP);
	cr_assert_eq(st.ts_idle, 0);
	cr_assert_eq(st.ts_outstanding, 4);
	cr_assert_eq(st.ts_used, 1);
	cr_assert_eq(st.ts_dead, 1);
	cr_assert_eq(st.ts_replaced, 0);
	/* expired tickets give their room back */
	ticket_sweep(b, T0 + 10);
	issue(b, OP, 10, T0 + 10, t, 5);
	ticket_book_free(b);
}

Test(ticket, invalid_requests)
{
	struct ticket_book *b = book(5, 10, 600);
	uint8_t t[1][TICKET_LEN];
	struct ticket_key k;
	struct ticket_stats st;
	char longop[TICKET_OP_MAX + 2];
	size_t n;
	double exp;

	memset(longop, 'a', sizeof(longop) - 1);
	longop[sizeof(longop) - 1] = '\0';
	cr_assert_eq(ticket_issue(b, OP, 0, T0, t, &n, &exp), TICKET_INVALID);
	cr_assert_eq(ticket_issue(b, OP, TICKET_BATCH_MAX + 1, T0, t, &n, &exp),
	    TICKET_INVALID);
	cr_assert_eq(ticket_issue(b, "", 1, T0, t, &n, &exp), TICKET_INVALID);
	cr_assert_eq(ticket_issue(b, "a b", 1, T0, t, &n, &exp), TICKET_INVALID);
	cr_assert_eq(ticket_issue(b, longop, 1, T0, t, &n, &exp), TICKET_INVALID);
	cr_assert_eq(ticket_key(b, NULL, T0, &k), TICKET_INVALID);
	cr_assert_eq(ticket_stats(b, OP, &st), -1, "never seen");
	cr_assert_eq(ticket_pool_leave(b, OP, TICKET_LEAVE_CLOSED), -1);
	cr_assert_str_eq(ticket_why_str(TICKET_CAP), "too many tickets and pooled connections");
	cr_assert_str_eq(ticket_why_str(TICKET_REPLAY), "ticket replayed");
	ticket_book_free(b);
}

Test(ticket, minted_ticket_is_accepted_once)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k;
	uint8_t t[TICKET_LEN], u[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	struct ticket_stats st;

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	cr_assert_eq(k.tk_expiry, (uint32_t)(T0 + 600));
	cr_assert_eq(ticket_mint(&k, NULL, T0, 30, t), 0);
	cr_assert_eq(ticket_mint(&k, NULL, T0, 30, u), 0);
	cr_assert(memcmp(t, u, TICKET_LEN) != 0, "each ticket has its own nonce");
	cr_assert_eq(ticket_redeem(b, t, T0 + 1, op), TICKET_OK);
	cr_assert_str_eq(op, OP);
	cr_assert_eq(ticket_redeem(b, t, T0 + 2, op), TICKET_REPLAY);
	/* still a replay once its connection has left the pool */
	cr_assert_eq(ticket_pool_leave(b, OP, TICKET_LEAVE_USED), 0);
	cr_assert_eq(ticket_redeem(b, t, T0 + 3, op), TICKET_REPLAY);
	cr_assert_eq(ticket_redeem(b, u, T0 + 3, op), TICKET_OK);
	/* after its expiry, swept or not, it is expired, never good again */
	cr_assert_eq(ticket_redeem(b, t, T0 + 30, op), TICKET_EXPIRED);
	ticket_sweep(b, T0 + 31);
	cr_assert_eq(ticket_redeem(b, t, T0 + 31, op), TICKET_EXPIRED);
	st = stats(b, OP);
	cr_assert_eq(st.ts_idle, 1);
	cr_assert_eq(st.ts_used, 1);
	ticket_book_free(b);
}

Test(ticket, minted_ticket_with_bad_mac_or_unknown_key)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k;
	uint8_t t[TICKET_LEN], x[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	struct ticket_stats st;

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	cr_assert_eq(ticket_mint(&k, NULL, T0, 30, t), 0);
	for (size_t i = 8; i < TICKET_LEN; i++) {	/* expiry, nonce, MAC */
		memcpy(x, t, TICKET_LEN);
		x[i] ^= 0x01;
		cr_assert_eq(ticket_redeem(b, x, T0, op), TICKET_BAD_MAC, "byte %zu", i);
	}
	memcpy(x, t, TICKET_LEN);
	x[0] ^= 0x01;
	cr_assert_eq(ticket_redeem(b, x, T0, op), TICKET_UNKNOWN, "no such key id");
	/* a key with another secret (a forger who knows only the key id) */
	k.tk_secret[0] ^= 1;
	cr_assert_eq(ticket_mint(&k, NULL, T0, 30, x), 0);
	cr_assert_eq(ticket_redeem(b, x, T0, op), TICKET_BAD_MAC);
	st = stats(b, OP);
	cr_assert_eq(st.ts_idle, 0, "nothing pooled for a bad ticket");
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_OK, "refusals spent no nonce");
	ticket_book_free(b);
}

Test(ticket, minted_for_another_operator_fails_the_mac)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k1, k2;
	uint8_t t[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];

	cr_assert_eq(ticket_key(b, OP, T0, &k1), TICKET_OK);
	cr_assert_eq(ticket_key(b, OP2, T0, &k2), TICKET_OK);
	cr_assert(memcmp(k1.tk_id, k2.tk_id, TICKET_KEY_ID_LEN) != 0);
	/* OP's key used in OP2's name: the MAC covers the operator */
	strcpy(k1.tk_op, OP2);
	cr_assert_eq(ticket_mint(&k1, NULL, T0, 30, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_BAD_MAC);
	/* OP2's key id with OP's secret */
	memcpy(k1.tk_id, k2.tk_id, TICKET_KEY_ID_LEN);
	cr_assert_eq(ticket_mint(&k1, NULL, T0, 30, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_BAD_MAC);
	cr_assert_eq(ticket_mint(&k2, NULL, T0, 30, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_OK);
	cr_assert_str_eq(op, OP2);
	ticket_book_free(b);
}

Test(ticket, minted_ticket_expires_with_itself_or_its_key)
{
	struct ticket_book *b = book(10, 60, 30);
	struct ticket_key k;
	uint8_t t[TICKET_LEN], u[TICKET_LEN], v[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	cr_assert_eq(ticket_mint(&k, NULL, T0, 5, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0 + 5, op), TICKET_EXPIRED);
	/* a ticket never outlives its key: minted for 60 s, 30 s left */
	cr_assert_eq(ticket_mint(&k, NULL, T0, 60, u), 0);
	cr_assert_eq(ticket_mint(&k, NULL, T0 + 29, 60, v), 0);
	cr_assert_eq(ticket_redeem(b, u, T0 + 30, op), TICKET_EXPIRED);
	cr_assert_eq(ticket_redeem(b, v, T0 + 30.5, op), TICKET_EXPIRED);
	cr_assert_eq(ticket_mint(&k, NULL, T0 + 30, 60, v), -1, "the key has expired");
	/* once swept, the key is forgotten */
	ticket_sweep(b, T0 + 31);
	cr_assert_eq(ticket_redeem(b, u, T0 + 31, op), TICKET_UNKNOWN);
	ticket_book_free(b);
}

Test(ticket, minted_expiry_too_far_ahead_is_refused)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k;
	uint8_t t[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	/* the key holder may mint up to the key's expiry, the book takes at
	 * most tl_lifetime + TICKET_SKEW ahead: the replay set stays bounded */
	cr_assert_eq(ticket_mint(&k, NULL, T0, 300, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_BAD_EXPIRY);
	cr_assert_eq(ticket_redeem(b, t, T0 + 240, op), TICKET_OK, "in range later");
	cr_assert_eq(ticket_mint(&k, NULL, T0, 60 + TICKET_SKEW, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_OK);
	ticket_book_free(b);
}

Test(ticket, key_rotation_keeps_older_keys_until_dropped)
{
	struct ticket_book *b = book(64, 60, 600);
	struct ticket_key k[TICKET_KEYS_MAX + 1];
	uint8_t t[TICKET_KEYS_MAX + 1][TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	int i;

	for (i = 0; i < TICKET_KEYS_MAX; i++) {
		cr_assert_eq(ticket_key(b, OP, T0 + i, &k[i]), TICKET_OK);
		cr_assert_eq(ticket_mint(&k[i], NULL, T0 + i, 30, t[i]), 0);
	}
	for (i = 0; i < TICKET_KEYS_MAX; i++)
		cr_assert_eq(ticket_redeem(b, t[i], T0 + 10, op), TICKET_OK, "key %d", i);
	for (i = 0; i < TICKET_KEYS_MAX; i++)
		cr_assert_eq(ticket_mint(&k[i], NULL, T0 + 10, 30, t[i]), 0);
	/* one key more drops the oldest */
	cr_assert_eq(ticket_key(b, OP, T0 + 10, &k[i]), TICKET_OK);
	cr_assert_eq(ticket_mint(&k[i], NULL, T0 + 10, 30, t[i]), 0);
	cr_assert_eq(ticket_redeem(b, t[0], T0 + 11, op), TICKET_UNKNOWN);
	for (i = 1; i <= TICKET_KEYS_MAX; i++)
		cr_assert_eq(ticket_redeem(b, t[i], T0 + 11, op), TICKET_OK, "key %d", i);
	ticket_book_free(b);
}

Test(ticket, minted_tickets_respect_the_cap_without_spending_a_nonce)
{
	struct ticket_book *b = book(3, 60, 600);
	struct ticket_key k;
	uint8_t t[4][TICKET_LEN], is[1][TICKET_LEN];
	char op[TICKET_OP_MAX + 1];

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	issue(b, OP, 1, T0, is, 1);	/* an issued ticket takes room too */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(ticket_mint(&k, NULL, T0, 30, t[i]), 0);
	cr_assert_eq(ticket_redeem(b, t[0], T0, op), TICKET_OK);
	cr_assert_eq(ticket_redeem(b, t[1], T0, op), TICKET_OK);
	cr_assert_eq(ticket_redeem(b, t[2], T0, op), TICKET_CAP);
	cr_assert_eq(ticket_redeem(b, is[0], T0, op), TICKET_OK, "its room was reserved");
	cr_assert_eq(ticket_pool_leave(b, OP, TICKET_LEAVE_USED), 0);
	cr_assert_eq(ticket_redeem(b, t[2], T0, op), TICKET_OK, "not spent by the refusal");
	cr_assert_eq(ticket_redeem(b, t[3], T0, op), TICKET_CAP);
	ticket_book_free(b);
}

#define NTHREADS	4
#define NTICKETS	200

struct race {
	struct ticket_book	*r_book;
	uint8_t			 (*r_tickets)[TICKET_LEN];
	int			 r_ok;
};

static void *
race_redeem(void *arg)
{
	struct race *r = arg;
	char op[TICKET_OP_MAX + 1];

	for (int i = 0; i < NTICKETS; i++)
		if (ticket_redeem(r->r_book, r->r_tickets[i], T0, op) == TICKET_OK)
			r->r_ok++;
	return NULL;
}

Test(ticket, each_ticket_redeems_once_across_threads)
{
	struct ticket_book *b = book(NTICKETS, 60, 600);
	static uint8_t t[NTICKETS][TICKET_LEN];
	struct race r[NTHREADS];
	pthread_t th[NTHREADS];
	struct ticket_key k;
	int total = 0;

	issue(b, OP, NTICKETS / 2, T0, t, NTICKETS / 2);
	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	for (int i = NTICKETS / 2; i < NTICKETS; i++)
		cr_assert_eq(ticket_mint(&k, NULL, T0, 30, t[i]), 0);
	for (int i = 0; i < NTHREADS; i++) {
		r[i] = (struct race){ .r_book = b, .r_tickets = t };
		cr_assert_eq(pthread_create(&th[i], NULL, race_redeem, &r[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		total += r[i].r_ok;
	}
	cr_assert_eq(total, NTICKETS);
	cr_assert_eq(stats(b, OP).ts_idle, NTICKETS);
	ticket_book_free(b);
}

static void
count_op(void *arg, const char *op, const struct ticket_stats *st)
{
	size_t *outstanding = arg;

	if (strcmp(op, OP) == 0)
		outstanding[0] += st->ts_outstanding;
	else if (strcmp(op, OP2) == 0)
		outstanding[1] += st->ts_outstanding;
}

Test(ticket, foreach_visits_every_operator_once)
{
	struct ticket_book *b = book(5, 10, 600);
	uint8_t t[10][TICKET_LEN];
	size_t seen[2] = { 0, 0 };

	cr_assert_eq(ticket_foreach(b, count_op, seen), 0, "an empty book has no operator");
	issue(b, OP, 3, T0, t, 3);
	issue(b, OP2, 2, T0, t + 3, 2);
	cr_assert_eq(ticket_foreach(b, count_op, seen), 2);
	cr_assert_eq(seen[0], 3);
	cr_assert_eq(seen[1], 2);
	ticket_book_free(b);
}

/* --- the key as JSON ------------------------------------------------------------ */

/* A key's JSON with member name replaced by the JSON text value (NULL:
 * removed). */
static struct json_object *
key_json_with(const struct ticket_key *k, double now, const char *name, const char *value)
{
	struct json_object *o = ticket_key_json(k, now, 60);

	cr_assert_not_null(o);
	if (name != NULL) {
		json_object_object_del(o, name);
		if (value != NULL)
			json_object_object_add(o, name, json_tokener_parse(value));
	}
	return o;
}

static int
parse(struct json_object *o, const char *op, double now, struct ticket_key *k, char *err)
{
	double life = 0, skew = 0;

	return ticket_key_parse(o, op, now, k, &life, &skew, err, 128);
}

Test(ticket, key_json_round_trip_mints_tickets_the_book_takes)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k, got;
	struct json_object *o, *j;
	uint8_t t[TICKET_LEN];
	char op[TICKET_OP_MAX + 1], err[128];
	double life, skew;

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	o = ticket_key_json(&k, T0, 60);
	cr_assert_not_null(o);
	cr_assert(json_object_object_get_ex(o, "expires_at", &j));
	cr_assert_str_eq(json_object_get_string(j), "2027-01-15T08:10:00Z");
	cr_assert(json_object_object_get_ex(o, "expires_in", &j));
	cr_assert_float_eq(json_object_get_double(j), 600, 1e-6);
	cr_assert(json_object_object_get_ex(o, "expiry", &j));
	cr_assert_eq(json_object_get_int64(j), (int64_t)T0 + 600);
	/* through text, as over the Hyper path; our clock is 3 s behind,
	 * and the answer took 0.5 s */
	j = json_tokener_parse(json_object_to_json_string(o));
	cr_assert_eq(ticket_key_parse(j, OP, T0 - 3 + 0.5, &got, &life, &skew, err, sizeof(err)),
	    0, "%s", err);
	cr_assert_float_eq(life, 60, 1e-9);
	cr_assert_float_eq(skew, 2.5, 1e-6);
	cr_assert_str_eq(got.tk_op, OP);
	cr_assert_eq(got.tk_nonce, 0);
	cr_assert_eq(got.tk_expiry, k.tk_expiry);
	cr_assert_eq(memcmp(got.tk_id, k.tk_id, TICKET_KEY_ID_LEN), 0);
	cr_assert_eq(memcmp(got.tk_secret, k.tk_secret, TICKET_SECRET_LEN), 0);
	/* minted on our clock corrected by the skew */
	cr_assert_eq(ticket_mint(&got, NULL, T0 + 10 - 3 + skew, life, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0 + 10, op), TICKET_OK);
	cr_assert_str_eq(op, OP);
	json_object_put(o);
	json_object_put(j);
	ticket_book_free(b);
}

Test(ticket, key_json_refuses_every_bad_member)
{
	static const struct { const char *name, *value; } bad[] = {
		{ "id", NULL }, { "id", "7" }, { "id", "\"AAAA\"" },
		{ "id", "\"AAAAAAAAAAAAAAAA\"" }, { "id", "\"not base64!!\"" },
		{ "secret", NULL }, { "secret", "\"c2VjcmV0\"" }, { "secret", "[]" },
		{ "secret", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"" },
		{ "expiry", NULL }, { "expiry", "0" }, { "expiry", "-5" }, { "expiry", "4294967296" },
		{ "expiry", "1800000600.5" }, { "expiry", "\"1800000600\"" },
		{ "expires_in", NULL }, { "expires_in", "0" }, { "expires_in", "-1" },
		{ "expires_in", "\"600\"" }, { "expires_in", "1e300" },
		{ "ticket_lifetime", NULL }, { "ticket_lifetime", "0.5" },
		{ "ticket_lifetime", "86401" }, { "ticket_lifetime", "null" },
	};
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k, got;
	struct json_object *o;
	char err[128];

	cr_assert_eq(ticket_key(b, OP, T0, &k), TICKET_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o = key_json_with(&k, T0, bad[i].name, bad[i].value);
		err[0] = '\0';
		cr_assert_eq(parse(o, OP, T0, &got, err), -1, "%s = %s accepted", bad[i].name,
		    bad[i].value ? bad[i].value : "(absent)");
		cr_assert(strstr(err, bad[i].name) != NULL, "%s: error \"%s\"", bad[i].name, err);
		cr_assert_eq(got.tk_expiry, 0, "nothing kept");
		json_object_put(o);
	}
	/* expires_at is informative only; a key object that is no object */
	o = key_json_with(&k, T0, "expires_at", NULL);
	cr_assert_eq(parse(o, OP, T0, &got, err), 0, "%s", err);
	json_object_put(o);
	o = json_tokener_parse("[1, 2]");
	cr_assert_eq(parse(o, OP, T0, &got, err), -1);
	cr_assert_eq(parse(NULL, OP, T0, &got, err), -1);
	json_object_put(o);
	/* a bad own name */
	o = key_json_with(&k, T0, NULL, NULL);
	cr_assert_eq(parse(o, "", T0, &got, err), -1);
	cr_assert_eq(parse(o, "with space", T0, &got, err), -1);
	json_object_put(o);
	ticket_book_free(b);
}

Test(ticket, stats_count_keys_and_minted_tickets)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k1, k2;
	uint8_t t[TICKET_LEN], is[1][TICKET_LEN];
	char op[TICKET_OP_MAX + 1];
	struct ticket_stats st;

	cr_assert_eq(ticket_key(b, OP, T0, &k1), TICKET_OK);
	cr_assert_eq(ticket_key(b, OP, T0 + 5, &k2), TICKET_OK);
	issue(b, OP, 1, T0, is, 1);
	cr_assert_eq(ticket_redeem(b, is[0], T0, op), TICKET_OK);
	cr_assert_eq(ticket_mint(&k1, NULL, T0, 30, t), 0);
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_OK);
	/* a refusal names the ticket's operator, and counts nothing */
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_REPLAY);
	cr_assert_str_eq(op, OP);
	cr_assert_eq(ticket_redeem(b, is[0], T0, op), TICKET_USED);
	cr_assert_str_eq(op, OP);
	t[0] ^= 1;
	cr_assert_eq(ticket_redeem(b, t, T0, op), TICKET_UNKNOWN);
	cr_assert_str_eq(op, "");
	st = stats(b, OP);
	cr_assert_eq(st.ts_keys, 2);
	cr_assert_eq(st.ts_minted, 1);
	cr_assert_eq(st.ts_idle, 2);
	cr_assert_eq(st.ts_key_expiry, (uint32_t)(T0 + 605));
	ticket_book_free(b);
}

/* Issue #12: several public instances share minting keys (through Redis);
 * a ticket bound to one instance is good there only, once. */
Test(ticket, bound_ticket_is_good_at_its_instance_only)
{
	struct ticket_book *a = book(10, 60, 600), *b = book(10, 60, 600);
	struct ticket_key k;
	uint8_t ta[TICKET_LEN], tb[TICKET_LEN], tu[TICKET_LEN];
	char op[TICKET_OP_MAX + 1];

	cr_assert_eq(ticket_book_set_instance(a, "inst-a"), 0);
	cr_assert_eq(ticket_book_set_instance(b, "inst-b"), 0);
	cr_assert_eq(ticket_key(a, OP, T0, &k), TICKET_OK);
	cr_assert_eq(ticket_mint(&k, "inst-b", T0, 30, tb), 0);
	cr_assert_eq(ticket_redeem(b, tb, T0, op), TICKET_UNKNOWN, "B does not know A's key yet");
	cr_assert_eq(ticket_key_add(b, &k, T0), TICKET_OK);
	cr_assert_eq(ticket_key_add(b, &k, T0), TICKET_OK, "a known key changes nothing");
	cr_assert_eq(ticket_redeem(a, tb, T0, op), TICKET_BAD_MAC, "bound to B: refused at A");
	cr_assert_eq(ticket_redeem(b, tb, T0, op), TICKET_OK);
	cr_assert_str_eq(op, OP);
	cr_assert_eq(ticket_redeem(b, tb, T0, op), TICKET_REPLAY);
	/* bound to A: good at A (its own key) */
	cr_assert_eq(ticket_mint(&k, "inst-a", T0, 30, ta), 0);
	cr_assert_eq(ticket_redeem(b, ta, T0, op), TICKET_BAD_MAC);
	cr_assert_eq(ticket_redeem(a, ta, T0, op), TICKET_OK);
	/* unbound: only where the key was made, never with a learned key */
	cr_assert_eq(ticket_mint(&k, NULL, T0, 30, tu), 0);
	cr_assert_eq(ticket_redeem(b, tu, T0, op), TICKET_BAD_MAC);
	cr_assert_eq(ticket_redeem(a, tu, T0, op), TICKET_OK);
	ticket_book_free(a);
	ticket_book_free(b);
}

Test(ticket, learned_keys_are_checked)
{
	struct ticket_book *b = book(10, 60, 600);
	struct ticket_key k;

	memset(&k, 0, sizeof(k));
	strcpy(k.tk_op, OP);
	k.tk_id[0] = 1;
	k.tk_expiry = (uint32_t)T0;
	cr_assert_eq(ticket_key_add(b, &k, T0), TICKET_EXPIRED);
	k.tk_expiry = (uint32_t)(T0 + 600 + TICKET_SKEW + 10);
	cr_assert_eq(ticket_key_add(b, &k, T0), TICKET_BAD_EXPIRY, "longer than a key lives");
	k.tk_expiry = (uint32_t)(T0 + 300);
	k.tk_op[0] = '\0';
	cr_assert_eq(ticket_key_add(b, &k, T0), TICKET_INVALID);
	cr_assert_eq(ticket_book_set_instance(b, "x"), 0);
	{
		char longid[TICKET_INSTANCE_MAX + 2];

		memset(longid, 'a', sizeof(longid) - 1);
		longid[sizeof(longid) - 1] = '\0';
		cr_assert_eq(ticket_book_set_instance(b, longid), -1);
	}
	ticket_book_free(b);
}
