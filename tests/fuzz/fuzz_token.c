/* fuzz_token.c - libFuzzer target for the token table behind the public
 * proxy's data port (make fuzz).
 * fuzz-sources: src/proxy/token.c src/common/util.c src/common/log.c
 *
 * A data connection's first 32 bytes go to token_claim(); the read itself
 * lives in the io_uring loop and has no pure function, so this target drives
 * the table: the input is a program of park and claim steps (with 32
 * bytes from the input, or with a token that was handed out), run against
 * a plain array model.  Checks: only a handed-out, still parked token
 * claims its value, and only once; a full table refuses; the count agrees
 * with the model. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

#include "fuzz.h"

#define MAX_PARKED	16
#define MAX_ISSUED	256

struct issued {
	uint8_t	 tok[TOKEN_LEN];
	int	 live;
};

static struct issued is[MAX_ISSUED];
static uintptr_t nissued;

/* value of issued token i (never NULL) */
#define VAL(i)	((void *)((i) + 1))

static size_t
model_count(void)
{
	size_t n = 0;

	for (uintptr_t i = 0; i < nissued; i++)
		n += is[i].live;
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct token_table *t;
	uint8_t tok[TOKEN_LEN];
	size_t pos = 0;
	uintptr_t i;
	void *v;

	check((t = token_table_new(MAX_PARKED)) != NULL);
	nissued = 0;
	while (pos < size) {
		uint8_t op = data[pos++], arg = pos < size ? data[pos] : 0;

		switch (op % 3) {
		case 0:		/* park */
			if (nissued == MAX_ISSUED)
				break;
			if (token_park(t, VAL(nissued), tok) == -1) {
				check(model_count() == MAX_PARKED);
				break;
			}
			memcpy(is[nissued].tok, tok, TOKEN_LEN);
			is[nissued].live = 1;
			nissued++;
			break;
		case 1:		/* claim with the next 32 input bytes */
			memset(tok, 0, sizeof(tok));
			memcpy(tok, data + pos, size - pos < TOKEN_LEN ? size - pos : TOKEN_LEN);
			pos += size - pos < TOKEN_LEN ? size - pos : TOKEN_LEN;
			v = token_claim(t, tok);
			for (i = 0; i < nissued; i++)
				if (is[i].live && memcmp(is[i].tok, tok, TOKEN_LEN) == 0)
					break;
			check(v == (i < nissued ? VAL(i) : NULL));
			if (i < nissued)
				is[i].live = 0;
			break;
		default:	/* claim a handed-out token (again) */
			pos++;
			if (nissued == 0)
				break;
			i = arg % nissued;
			v = token_claim(t, is[i].tok);
			check(v == (is[i].live ? VAL(i) : NULL));
			is[i].live = 0;
			break;
		}
		check(token_count(t) == model_count());
	}
	token_table_free(t);
	return 0;
}
