/* fuzz_proxyproto.c - libFuzzer target for proxyproto_parse (make fuzz).
 * fuzz-sources: src/common/proxyproto.c
 *
 * The first byte picks the version (even: v1, odd: v2) and the byte budget;
 * the rest is the stream prefix.  Checks, besides memory safety: the
 * documented bounds of *used, that an accepted header is written back to a
 * header the parser accepts with the same addresses (v2 keeps the
 * authority), and that feeding exactly *used bytes each time reaches the
 * same verdict as the whole input (the resumable contract). */
#include <stdint.h>
#include <string.h>

#include "proxyproto.h"

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum proxyproto_version v;
	enum proxyproto_result whole, r;
	struct proxyproto_info pi, back;
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	size_t max, used = 0, have = 0, steps = 0, wused = 0;
	ssize_t n;

	if (size < 1)
		return 0;
	v = (data[0] & 1) ? PROXYPROTO_V2 : PROXYPROTO_V1;
	max = 16 + (size_t)(data[0] >> 1) * 8;	/* 16 .. 1032 */
	data++;
	size--;
	memset(&pi, 0xa5, sizeof(pi));
	whole = proxyproto_parse(v, data, size, max, &pi, &used);
	switch (whole) {
	case PROXYPROTO_OK:
		check(used >= 15 && used <= size && used <= max);
		check(v != PROXYPROTO_V1 || used <= PROXYPROTO_V1_MAX);
		check(memchr(pi.pi_authority, '\0', sizeof(pi.pi_authority)) != NULL);
		if (!pi.pi_local) {
			check(pi.pi_src.ss_family == pi.pi_dst.ss_family);
			if (v == PROXYPROTO_V1)
				pi.pi_authority[0] = '\0';
			n = proxyproto_write(v, &pi, buf, sizeof(buf));
			check(n > 0);
			check(proxyproto_parse(v, buf, (size_t)n, sizeof(buf), &back, &wused) ==
			    PROXYPROTO_OK && wused == (size_t)n);
			check(memcmp(&back.pi_src, &pi.pi_src, sizeof(pi.pi_src)) == 0);
			check(memcmp(&back.pi_dst, &pi.pi_dst, sizeof(pi.pi_dst)) == 0);
			check(strcmp(back.pi_authority, pi.pi_authority) == 0);
		}
		break;
	case PROXYPROTO_NEED_MORE:
		check(used > size && used <= max);
		break;
	case PROXYPROTO_BAD_SIGNATURE:
	case PROXYPROTO_BAD_VERSION:
	case PROXYPROTO_BAD_COMMAND:
	case PROXYPROTO_BAD_FAMILY:
	case PROXYPROTO_TOO_LONG:
	case PROXYPROTO_MALFORMED:
		break;
	default:
		check(0);
	}
	while ((r = proxyproto_parse(v, data, have, max, &pi, &used)) == PROXYPROTO_NEED_MORE &&
	    have < size) {
		check(used > have);
		have = used < size ? used : size;
		check(++steps < 100000);
	}
	check(r == whole || (whole == PROXYPROTO_OK && r == PROXYPROTO_OK));
	return 0;
}
