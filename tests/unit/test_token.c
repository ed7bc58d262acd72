/* Tests for token.c: parking, single-use claims, limits. */
#include <criterion/criterion.h>
#include <string.h>

#include "token.h"

static int vals[1000];

Test(token, parked_value_is_claimed_once)
{
	struct token_table *t = token_table_new(10);
	uint8_t tok[TOKEN_LEN];

	cr_assert_not_null(t);
	cr_assert_eq(token_park(t, &vals[0], tok), 0);
	cr_assert_eq(token_count(t), 1);
	cr_assert_eq(token_claim(t, tok), &vals[0]);
	cr_assert_null(token_claim(t, tok), "a token is single use");
	cr_assert_eq(token_count(t), 0);
	token_table_free(t);
}

Test(token, tokens_are_random_and_distinct)
{
	struct token_table *t = token_table_new(10);
	uint8_t a[TOKEN_LEN], b[TOKEN_LEN], zero[TOKEN_LEN] = { 0 };

	cr_assert_eq(token_park(t, &vals[0], a), 0);
	cr_assert_eq(token_park(t, &vals[1], b), 0);
	cr_assert(memcmp(a, b, TOKEN_LEN) != 0);
	cr_assert(memcmp(a, zero, TOKEN_LEN) != 0);
	cr_assert_eq(token_claim(t, b), &vals[1]);
	cr_assert_eq(token_claim(t, a), &vals[0]);
	token_table_free(t);
}

Test(token, unknown_or_altered_token_claims_nothing)
{
	struct token_table *t = token_table_new(10);
	uint8_t tok[TOKEN_LEN], other[TOKEN_LEN];

	cr_assert_eq(token_park(t, &vals[0], tok), 0);
	memcpy(other, tok, TOKEN_LEN);
	other[TOKEN_LEN - 1] ^= 1;	/* differs only in the last byte */
	cr_assert_null(token_claim(t, other));
	memset(other, 0, TOKEN_LEN);
	cr_assert_null(token_claim(t, other));
	cr_assert_eq(token_count(t), 1);
	cr_assert_eq(token_claim(t, tok), &vals[0]);
	token_table_free(t);
}

Test(token, full_table_refuses_until_an_entry_leaves)
{
	struct token_table *t = token_table_new(3);
	uint8_t tok[4][TOKEN_LEN];

	for (int i = 0; i < 3; i++)
		cr_assert_eq(token_park(t, &vals[i], tok[i]), 0);
	cr_assert_eq(token_park(t, &vals[3], tok[3]), -1);
	cr_assert_eq(token_count(t), 3);
	cr_assert_eq(token_claim(t, tok[1]), &vals[1]);
	cr_assert_eq(token_park(t, &vals[3], tok[3]), 0);
	token_table_free(t);
}

Test(token, claimed_entry_leaves_the_others)
{
	struct token_table *t = token_table_new(10);
	uint8_t a[TOKEN_LEN], b[TOKEN_LEN];

	cr_assert_eq(token_park(t, &vals[0], a), 0);
	cr_assert_eq(token_park(t, &vals[1], b), 0);
	cr_assert_eq(token_claim(t, a), &vals[0]);
	cr_assert_null(token_claim(t, a));
	cr_assert_eq(token_count(t), 1);
	cr_assert_eq(token_claim(t, b), &vals[1]);
	cr_assert_eq(token_count(t), 0);
	token_table_free(t);
}

Test(token, many_entries_are_all_found)
{
	struct token_table *t = token_table_new(1000);
	static uint8_t tok[1000][TOKEN_LEN];

	for (int i = 0; i < 1000; i++)
		cr_assert_eq(token_park(t, &vals[i], tok[i]), 0);
	cr_assert_eq(token_count(t), 1000);
	for (int i = 999; i >= 0; i -= 2)
		cr_assert_eq(token_claim(t, tok[i]), &vals[i]);
	cr_assert_eq(token_count(t), 500);
	/* freeing with entries left must not leak (ASan checks) */
	token_table_free(t);
}

Test(token, null_value_is_refused)
{
	struct token_table *t = token_table_new(2);
	uint8_t tok[TOKEN_LEN];

	cr_assert_eq(token_park(t, NULL, tok), -1);
	cr_assert_eq(token_count(t), 0);
	token_table_free(t);
}

Test(token, lookup_finds_the_value_and_leaves_it_parked)
{
	struct token_table *t = token_table_new(10);
	uint8_t tok[TOKEN_LEN], other[TOKEN_LEN];

	cr_assert_eq(token_park(t, &vals[0], tok), 0);
	cr_assert_eq(token_lookup(t, tok), &vals[0]);
	cr_assert_eq(token_lookup(t, tok), &vals[0], "a lookup uses nothing up");
	cr_assert_eq(token_count(t), 1);
	memcpy(other, tok, TOKEN_LEN);
	other[0] ^= 1;
	cr_assert_null(token_lookup(t, other));
	cr_assert_eq(token_claim(t, tok), &vals[0]);
	cr_assert_null(token_lookup(t, tok), "claimed: gone");
	token_table_free(t);
}
