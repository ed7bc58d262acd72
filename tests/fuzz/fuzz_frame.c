/* fuzz_frame.c - libFuzzer target for the start frame (make fuzz).
 * fuzz-sources: src/common/frame.c src/common/util.c src/common/log.c
 *
 * The input is the byte stream a private proxy reads from a pooled data
 * connection.  Checks, besides memory safety: the documented bounds of
 * *used, that an accepted frame is written back to the very same bytes,
 * that the incremental reader fed in chunks whose sizes come from the
 * input reaches the same verdict as frame_decode() on the whole input and
 * never takes a byte past the frame, and that the reader never asks for
 * more than FRAME_MAX bytes in all.  The seeds in corpus/fuzz_frame/ are
 * frame_encode() output (v4, v6, mixed families, the longest frame, and a
 * frame followed by the start of a ClientHello). */
#include <stdint.h>
#include <string.h>

#include "frame.h"

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[FRAME_MAX];
	struct frame_reader r;
	struct frame f, g;
	enum frame_result whole, res = FRAME_NEED_MORE;
	size_t used = 0, pos = 0, taken, step, want;
	ssize_t n;

	memset(&f, 0xa5, sizeof(f));
	memset(&g, 0x5a, sizeof(g));
	whole = frame_decode(data, size, &f, &used);
	switch (whole) {
	case FRAME_OK:
		check(used >= FRAME_HEAD + FRAME_BODY_MIN && used <= size && used <= FRAME_MAX);
		check(memchr(f.fr_sni, '\0', sizeof(f.fr_sni)) != NULL);
		n = frame_encode(&f, out, sizeof(out));
		check(n == (ssize_t)used && memcmp(out, data, used) == 0);
		break;
	case FRAME_NEED_MORE:
		check(used > size && used <= FRAME_MAX);
		break;
	case FRAME_BAD_MAGIC:
	case FRAME_BAD_VERSION:
	case FRAME_BAD_FLAGS:
	case FRAME_BAD_LENGTH:
	case FRAME_BAD_FAMILY:
	case FRAME_BAD_SNI:
	case FRAME_TRAILING:
		break;
	default:
		check(0);
	}

	/* the same stream through the reader, chunk sizes from the data */
	frame_reader_init(&r);
	while (pos < size && (want = frame_reader_want(&r)) > 0) {
		check(pos + want <= FRAME_MAX);
		step = 1 + data[pos % size] % 17;
		if (step > size - pos)
			step = size - pos;
		res = frame_reader_feed(&r, data + pos, step, &taken, &g);
		check(taken <= step && taken <= want && taken > 0);
		pos += taken;
	}
	check(res == whole);
	if (whole == FRAME_OK) {
		check(pos == used);
		check(f.fr_conn_id == g.fr_conn_id && strcmp(f.fr_sni, g.fr_sni) == 0);
		check(memcmp(&f.fr_client, &g.fr_client, sizeof(f.fr_client)) == 0);
		check(memcmp(&f.fr_local, &g.fr_local, sizeof(f.fr_local)) == 0);
	}
	return 0;
}
