/* token.h - the public proxy's table of parked connections (SPEC 4.1-4.2).
 *
 * 32-byte tokens from the system CSPRNG (arc4random_buf), single use,
 * compared in constant time, O(1) lookup by a keyed hash of the token,
 * bounded size, expiry in insertion order (every entry has the same
 * timeout, so the oldest entry always expires first).
 * Owned by one thread (the io_uring loop); not thread-safe. */
#ifndef HP_TOKEN_H
#define HP_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_LEN 32

struct token_table;

struct token_table *token_table_new(size_t max_entries, double timeout);
void   token_table_free(struct token_table *t);
/* Park value under a fresh token (written to token).  -1 when full. */
int    token_park(struct token_table *t, void *value, double now, uint8_t token[TOKEN_LEN]);
/* Remove and return the value parked under token, or NULL (unknown, used,
 * expired).  Constant-time comparison of the candidate. */
void  *token_claim(struct token_table *t, const uint8_t token[TOKEN_LEN]);
/* Remove an entry by value's token without claiming (e.g. the RPC failed). */
void  *token_cancel(struct token_table *t, const uint8_t token[TOKEN_LEN]);
/* Pop one entry whose deadline is <= now; NULL when none.  Call in a loop. */
void  *token_expire(struct token_table *t, double now);
size_t token_count(const struct token_table *t);
/* Seconds until the next expiry, or -1 when empty. */
double token_next_deadline(const struct token_table *t, double now);

#endif
