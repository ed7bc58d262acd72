/* fuzz_sni.c - libFuzzer target for sni_parse and sni_reader (make fuzz).
 * fuzz-sources: src/proxy/sni.c src/common/util.c src/common/log.c
 *
 * The input is a stream prefix.  Checks, besides memory safety: the
 * documented bounds of *need, the shape of a returned name, and that
 * feeding exactly *need bytes each time reaches the same verdict as the
 * whole input, however the bytes arrive (the resumable contract): with
 * sni_parse over each prefix, and with one sni_reader resumed along the
 * same prefixes or fed a few bytes at a time. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sni.h"

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[SNI_NAME_MAX], wname[SNI_NAME_MAX] = "";
	size_t max = 16384, need = 0, have = 0, steps = 0, step;
	enum sni_result whole, r;
	struct sni_reader rd;

	/* the first byte may pick a smaller budget, to reach TOO_LARGE */
	if (size > 0 && data[0] != 22)
		max = 64 + (size_t)data[0] * 32;
	whole = sni_parse(data, size, max, name, &need);
	if (whole == SNI_OK)
		memcpy(wname, name, sizeof(wname));
	switch (whole) {
	case SNI_OK:
		check(strlen(name) >= 1 && strlen(name) <= 253);
		for (size_t i = 0; name[i] != '\0'; i++)
			check(!isupper((unsigned char)name[i]) && name[i] != ' ');
		break;
	case SNI_NEED_MORE:
		check(need > size && need <= max);
		break;
	case SNI_NO_SNI:
	case SNI_MALFORMED:
	case SNI_TOO_LARGE:
	case SNI_BAD_NAME:
		check(name[0] == '\0');
		break;
	default:
		check(0);
	}
	/* follow *need from nothing, then take the whole input: the verdict
	 * must not depend on how the bytes arrived */
	while ((r = sni_parse(data, have, max, name, &need)) == SNI_NEED_MORE &&
	    have < size) {
		check(need > have);
		have = need < size ? need : size;
		check(++steps < 100000);
	}
	check(r == whole);
	/* the same walk with one reader, resumed */
	sni_reader_init(&rd, max);
	have = steps = 0;
	while ((r = sni_reader_parse(&rd, data, have, name, &need)) == SNI_NEED_MORE &&
	    have < size) {
		check(need > have && need <= max);
		have = need < size ? need : size;
		check(++steps < 100000);
	}
	check(r == whole);
	if (r == SNI_OK)
		check(strcmp(name, wname) == 0);
	/* and fed 1..8 bytes at a time (the second byte picks the step),
	 * each time a window from the reader's position on, as the proxy
	 * peeks with SO_PEEK_OFF */
	step = size > 1 ? 1 + data[1] % 8 : 1;
	sni_reader_init(&rd, max);
	have = 0;
	do {
		size_t off = sni_reader_pos(&rd);

		check(off <= have);
		have = have + step < size ? have + step : size;
		r = sni_reader_feed(&rd, data + off, off, have, name, &need);
	} while (r == SNI_NEED_MORE && have < size);
	check(r == whole);
	if (r == SNI_OK)
		check(strcmp(name, wname) == 0);
	return 0;
}
