/* Tests for frame.c: the start frame written and read back for both
 * families, its exact bytes, every truncation, each way a frame is refused,
 * and the incremental reader fed byte by byte. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "frame.h"

static void
set_addr(struct sockaddr_storage *ss, const char *ip, unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		cr_assert_eq(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;

		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		cr_assert_eq(inet_pton(AF_INET, ip, &s->sin_addr), 1);
	}
}

static void
make_frame(struct frame *f, const char *client, unsigned cport, const char *local,
    unsigned lport, const char *sni)
{
	memset(f, 0, sizeof(*f));
	f->fr_conn_id = 0x0102030405060708ULL;
	set_addr(&f->fr_client, client, cport);
	set_addr(&f->fr_local, local, lport);
	strcpy(f->fr_sni, sni);
}

static void
assert_same(const struct frame *a, const struct frame *b)
{
	cr_assert_eq(a->fr_conn_id, b->fr_conn_id);
	cr_assert_eq(memcmp(&a->fr_client, &b->fr_client, sizeof(a->fr_client)), 0);
	cr_assert_eq(memcmp(&a->fr_local, &b->fr_local, sizeof(a->fr_local)), 0);
	cr_assert_str_eq(a->fr_sni, b->fr_sni);
}

/* A valid v4 frame with sni "a.example" in buf; its length. */
static size_t
v4_frame(uint8_t *buf)
{
	struct frame f;
	ssize_t n;

	make_frame(&f, "10.0.0.1", 40000, "192.0.2.7", 443, "a.example");
	n = frame_encode(&f, buf, FRAME_MAX);
	cr_assert_gt(n, 0);
	return (size_t)n;
}

Test(frame, v4_exact_bytes)
{
	static const uint8_t want[] = {
		'H', 'P', 'S', 'F', 1, 0, 0, 32,
		1, 2, 3, 4, 5, 6, 7, 8,
		4, 10, 0, 0, 1, 0x9c, 0x40,
		4, 192, 0, 2, 7, 0x01, 0xbb,
		9, 'a', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e',
	};
	uint8_t buf[FRAME_MAX];

	cr_assert_eq(v4_frame(buf), sizeof(want));
	cr_assert_eq(memcmp(buf, want, sizeof(want)), 0);
}

Test(frame, round_trip_v4_and_v6)
{
	const char *addrs[][2] = {
		{ "10.0.0.1", "192.0.2.7" }, { "2001:db8::1", "2001:db8::2" },
		{ "2001:db8::1", "192.0.2.7" }, { "10.0.0.1", "::1" },
	};
	uint8_t buf[FRAME_MAX + 16];
	struct frame f, back;
	size_t used;
	ssize_t n;

	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		make_frame(&f, addrs[i][0], 1 + (unsigned)i, addrs[i][1], 65535,
		    "test.internal-server.local");
		n = frame_encode(&f, buf, sizeof(buf));
		cr_assert_gt(n, 0);
		/* bytes after the frame (the ClientHello) are not the frame's */
		memset(buf + n, 0x16, 16);
		memset(&back, 0xa5, sizeof(back));
		cr_assert_eq(frame_decode(buf, (size_t)n + 16, &back, &used), FRAME_OK);
		cr_assert_eq(used, (size_t)n);
		assert_same(&f, &back);
	}
}

Test(frame, longest_frame_fits_max)
{
	uint8_t buf[FRAME_MAX];
	struct frame f, back;
	char sni[FRAME_SNI_MAX + 1];
	size_t used;

	/* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
	memset(sni, 'a', FRAME_SNI_MAX);
	sni[63] = sni[127] = sni[191] = '.';
	sni[FRAME_SNI_MAX] = '\0';
	make_frame(&f, "2001:db8::1", 1, "2001:db8::2", 2, sni);
	cr_assert_eq(frame_encode(&f, buf, sizeof(buf)), FRAME_MAX);
	cr_assert_eq(frame_encode(&f, buf, FRAME_MAX - 1), -1, "buffer too small");
	cr_assert_eq(frame_decode(buf, FRAME_MAX, &back, &used), FRAME_OK);
	assert_same(&f, &back);
	cr_assert_lt(FRAME_MAX, 512);
}

Test(frame, every_truncation_needs_more)
{
	const char *addrs[][2] = {
		{ "10.0.0.1", "192.0.2.7" }, { "2001:db8::1", "2001:db8::2" },
		{ "2001:db8::1", "192.0.2.7" },
	};
	struct frame_reader r;
	uint8_t buf[FRAME_MAX];
	struct frame f, back;
	size_t n, used, taken;

	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		make_frame(&f, addrs[i][0], 1, addrs[i][1], 2, i == 1 ?
		    "a-b_c.0123456789.example" : "a.example");
		n = (size_t)frame_encode(&f, buf, sizeof(buf));
		for (size_t len = 0; len < n; len++) {
			used = 0;
			cr_assert_eq(frame_decode(buf, len, &back, &used), FRAME_NEED_MORE,
			    "len %zu", len);
			cr_assert_gt(used, len);
			cr_assert_leq(used, n, "never asks past the frame (len %zu)", len);
			/* the reader, given the same prefix, wants more too */
			frame_reader_init(&r);
			if (len > 0)
				cr_assert_eq(frame_reader_feed(&r, buf, len, &taken, &back),
				    FRAME_NEED_MORE);
			cr_assert_gt(frame_reader_want(&r), 0);
		}
		cr_assert_eq(frame_decode(buf, n, &back, &used), FRAME_OK);
	}
}

Test(frame, wrong_magic_version_flags)
{
	uint8_t buf[FRAME_MAX];
	struct frame f;
	size_t n = v4_frame(buf), used;

	for (size_t i = 0; i < 4; i++) {
		buf[i] ^= 0x20;
		/* refused as soon as the wrong byte is there */
		cr_assert_eq(frame_decode(buf, i + 1, &f, &used), FRAME_BAD_MAGIC);
		cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_MAGIC);
		buf[i] ^= 0x20;
	}
	buf[4] = 2;
	cr_assert_eq(frame_decode(buf, 5, &f, &used), FRAME_BAD_VERSION);
	buf[4] = 0;
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_VERSION);
	buf[4] = 1;
	buf[5] = 0x80;
	cr_assert_eq(frame_decode(buf, 6, &f, &used), FRAME_BAD_FLAGS);
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_FLAGS);
	buf[5] = 0;
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_OK);
	/* a TLS record where a frame should be */
	cr_assert_eq(frame_decode((const uint8_t *)"\x16\x03\x01", 3, &f, &used),
	    FRAME_BAD_MAGIC);
}

Test(frame, body_length_out_of_range_or_mismatched)
{
	uint8_t buf[FRAME_MAX + 8];
	struct frame f;
	size_t n = v4_frame(buf), used;

	buf[6] = 0;
	buf[7] = FRAME_BODY_MIN - 1;
	cr_assert_eq(frame_decode(buf, 8, &f, &used), FRAME_BAD_LENGTH);
	buf[6] = (FRAME_BODY_MAX + 1) >> 8;
	buf[7] = (FRAME_BODY_MAX + 1) & 0xff;
	cr_assert_eq(frame_decode(buf, 8, &f, &used), FRAME_BAD_LENGTH);
	buf[6] = 0xff;
	buf[7] = 0xff;
	cr_assert_eq(frame_decode(buf, 8, &f, &used), FRAME_BAD_LENGTH);
	/* declared one byte short: the SNI runs past the body */
	buf[6] = 0;
	buf[7] = (uint8_t)(n - FRAME_HEAD - 1);
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_LENGTH);
	/* declared two bytes long: bytes after the SNI inside the body */
	buf[7] = (uint8_t)(n - FRAME_HEAD + 2);
	buf[n] = 'x';
	buf[n + 1] = 'y';
	cr_assert_eq(frame_decode(buf, n + 1, &f, &used), FRAME_NEED_MORE);
	cr_assert_eq(used, n + 2);
	cr_assert_eq(frame_decode(buf, n + 2, &f, &used), FRAME_TRAILING);
}

Test(frame, bad_family)
{
	uint8_t buf[FRAME_MAX];
	struct frame f;
	size_t n = v4_frame(buf), used;

	buf[16] = 5;
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_FAMILY);
	buf[16] = 4;
	buf[23] = 0;
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_FAMILY);
	/* family 6 in a body sized for 4: the address runs past the body */
	buf[23] = 6;
	cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_LENGTH);

	make_frame(&f, "10.0.0.1", 1, "10.0.0.2", 2, "a.example");
	f.fr_local.ss_family = AF_UNIX;
	cr_assert_eq(frame_encode(&f, buf, sizeof(buf)), -1);
}

Test(frame, empty_oversized_or_invalid_sni)
{
	const char *bad[] = {
		"", "A.example", "a..example", "a.example.", "-a.example", "a b",
		"a.example\xff", "a/b", ".a",
	};
	uint8_t buf[FRAME_MAX];
	struct frame f;
	size_t n, used;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_frame(&f, "10.0.0.1", 1, "10.0.0.2", 2, "a.example");
		strcpy(f.fr_sni, bad[i]);
		cr_assert_eq(frame_encode(&f, buf, sizeof(buf)), -1, "%s", bad[i]);
	}
	/* the same names written by hand, behind a valid head and addresses */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t s = strlen(bad[i]);

		n = v4_frame(buf);
		buf[30] = (uint8_t)s;
		memcpy(buf + 31, bad[i], s);
		n = 31 + s;
		buf[6] = 0;
		buf[7] = (uint8_t)(n - FRAME_HEAD);
		if (n - FRAME_HEAD < FRAME_BODY_MIN)
			cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_LENGTH);
		else
			cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_SNI, "%s", bad[i]);
	}
	/* an SNI length of 254 and 255 */
	for (unsigned s = 254; s <= 255; s++) {
		memset(buf + 31, 'a', s);
		buf[30] = (uint8_t)s;
		n = 31 + s;
		buf[6] = (uint8_t)((n - FRAME_HEAD) >> 8);
		buf[7] = (uint8_t)(n - FRAME_HEAD);
		cr_assert_eq(frame_decode(buf, n, &f, &used), FRAME_BAD_SNI, "%u", s);
	}
	/* 254 bytes also refused by the writer */
	make_frame(&f, "10.0.0.1", 1, "10.0.0.2", 2, "a.example");
	memset(f.fr_sni, 'a', FRAME_SNI_MAX);
	f.fr_sni[FRAME_SNI_MAX] = 'a';	/* no NUL inside the field */
	cr_assert_eq(frame_encode(&f, buf, sizeof(buf)), -1);
}

Test(frame, reader_byte_by_byte_stops_at_frame_end)
{
	struct frame_reader r;
	uint8_t buf[FRAME_MAX + 4];
	struct frame f, back;
	enum frame_result res = FRAME_NEED_MORE;
	size_t n, taken, i;

	make_frame(&f, "2001:db8::1", 5000, "192.0.2.1", 443, "x.y.example");
	n = (size_t)frame_encode(&f, buf, sizeof(buf));
	memcpy(buf + n, "\x16\x03\x01\x02", 4);
	frame_reader_init(&r);
	cr_assert_eq(frame_reader_want(&r), FRAME_HEAD);
	for (i = 0; i < n + 4 && frame_reader_want(&r) > 0; i++) {
		res = frame_reader_feed(&r, buf + i, 1, &taken, &back);
		cr_assert_eq(taken, 1);
		if (i + 1 < n)
			cr_assert_eq(res, FRAME_NEED_MORE, "at %zu", i);
	}
	cr_assert_eq(res, FRAME_OK);
	cr_assert_eq(i, n, "the ClientHello after the frame is not taken");
	assert_same(&f, &back);
	cr_assert_eq(frame_reader_want(&r), 0);
	cr_assert_eq(frame_reader_feed(&r, buf + n, 4, &taken, &back), FRAME_OK);
	cr_assert_eq(taken, 0);
}

Test(frame, reader_takes_only_the_frame_from_a_larger_read)
{
	struct frame_reader r;
	uint8_t buf[FRAME_MAX + 100];
	struct frame back;
	size_t n = v4_frame(buf), taken, total = 0;
	enum frame_result res;

	memset(buf + n, 0x16, 100);
	frame_reader_init(&r);
	do {
		res = frame_reader_feed(&r, buf + total, sizeof(buf) - total, &taken, &back);
		total += taken;
	} while (res == FRAME_NEED_MORE);
	cr_assert_eq(res, FRAME_OK);
	cr_assert_eq(total, n);
	cr_assert_str_eq(back.fr_sni, "a.example");
}

Test(frame, reader_refuses_at_first_bad_byte_and_stays_refused)
{
	struct frame_reader r;
	struct frame back;
	size_t taken;

	frame_reader_init(&r);
	cr_assert_eq(frame_reader_feed(&r, (const uint8_t *)"H", 1, &taken, &back),
	    FRAME_NEED_MORE);
	cr_assert_eq(frame_reader_feed(&r, (const uint8_t *)"X", 1, &taken, &back),
	    FRAME_BAD_MAGIC);
	cr_assert_eq(frame_reader_want(&r), 0);
	cr_assert_eq(frame_reader_feed(&r, (const uint8_t *)"PSF", 3, &taken, &back),
	    FRAME_BAD_MAGIC);
	cr_assert_eq(taken, 0);
	cr_assert_str_eq(frame_result_str(FRAME_BAD_MAGIC), "wrong magic");
	cr_assert_str_eq(frame_result_str(FRAME_TRAILING), "trailing bytes in body");
}
