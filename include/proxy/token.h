/* token.h - the public proxy's table of parked connections (SPEC 4.1-4.2).
 *
 * 32-byte tokens from the system CSPRNG (arc4random_buf), single use,
 * compared in constant time, O(1) lookup by a keyed hash of the token,
 * bounded size.  The owner times entries out itself (a parked client's
 * loop timer) and takes them back with token_claim().
 * Owned by one thread (the io_uring loop); not thread-safe. */
#ifndef HP_TOKEN_H
#define HP_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_LEN 32

struct token_table;

struct token_table *token_table_new(size_t max_entries);
void   token_table_free(struct token_table *t);
/* Park value under a fresh token (written to token).  -1 when full. */
int    token_park(struct token_table *t, void *value, uint8_t token[TOKEN_LEN]);
/* Remove and return the value parked under token, or NULL (unknown or
 * used).  Constant-time comparison of the candidate.  Both a data
 * connection's claim and the owner's own cancel (timeout, failed call). */
void  *token_claim(struct token_table *t, const uint8_t token[TOKEN_LEN]);
/* The value parked under token, left parked, or NULL.  Constant-time
 * comparison, as for token_claim. */
void  *token_lookup(const struct token_table *t, const uint8_t token[TOKEN_LEN]);
size_t token_count(const struct token_table *t);

#endif
