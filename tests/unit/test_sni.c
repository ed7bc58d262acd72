/* Tests for sni.c: real ClientHellos captured from openssl and curl
 * (tests/fuzz/corpus/fuzz_sni/, made by tests/fuzz/make-corpus.py) and
 * hellos built here field by field. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sni.h"

#define CORPUS "tests/fuzz/corpus/fuzz_sni/"
#define MAXB 16384

struct hello {
	unsigned char b[20000];
	size_t n;
};

static const char *captured[] = {
	"openssl-default.bin", "openssl-tls12.bin", "openssl-frag512.bin", "curl.bin",
};

static void
load(const char *file, struct hello *h)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), CORPUS "%s", file);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s (run from the repository root)", path);
	h->n = fread(h->b, 1, sizeof(h->b), f);
	fclose(f);
	cr_assert_gt(h->n, 50);
}

/* Handshake bytes of the records at the start of h. */
static size_t
unrecord(const struct hello *h, unsigned char *out)
{
	size_t pos = 0, n = 0, rlen;

	while (pos + 5 <= h->n && h->b[pos] == 22) {
		rlen = (size_t)h->b[pos + 3] << 8 | h->b[pos + 4];
		memcpy(out + n, h->b + pos + 5, rlen);
		n += rlen;
		pos += 5 + rlen;
	}
	return n;
}

/* Wrap msg into records of at most frag bytes each. */
static void
rerecord(const unsigned char *msg, size_t n, size_t frag, struct hello *h, size_t cap)
{
	unsigned char *out = h->b;
	size_t pos = 0, k;

	h->n = 0;
	while (pos < n) {
		k = n - pos < frag ? n - pos : frag;
		cr_assert_leq(h->n + 5 + k, cap);
		out[h->n++] = 22;
		out[h->n++] = 3;
		out[h->n++] = 1;
		out[h->n++] = (unsigned char)(k >> 8);
		out[h->n++] = (unsigned char)k;
		memcpy(out + h->n, msg + pos, k);
		h->n += k;
		pos += k;
	}
}

static void
put16(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

/* A TLS 1.2-style hello in one record with the given extensions block
 * (ext == NULL: no extensions field at all). */
static void
build(const unsigned char *ext, size_t extlen, struct hello *h)
{
	unsigned char *b = h->b;
	size_t n = 9, body;

	b[0] = 22; b[1] = 3; b[2] = 1;
	b[5] = 1;
	b[n++] = 3; b[n++] = 3;
	memset(b + n, 0xab, 32); n += 32;
	b[n++] = 0;			/* session id */
	put16(b + n, 4); n += 2;	/* two cipher suites */
	b[n++] = 0x13; b[n++] = 0x01; b[n++] = 0xc0; b[n++] = 0x2f;
	b[n++] = 1; b[n++] = 0;		/* null compression */
	if (ext != NULL) {
		put16(b + n, extlen); n += 2;
		memcpy(b + n, ext, extlen); n += extlen;
	}
	body = n - 9;
	b[6] = (unsigned char)(body >> 16);
	put16(b + 7, body);
	put16(b + 3, n - 5);
	h->n = n;
}

/* server_name extension holding one host_name of len bytes. */
static size_t
sni_ext(const char *name, size_t len, unsigned char *out)
{
	put16(out, 0);
	put16(out + 2, len + 5);
	put16(out + 4, len + 3);
	out[6] = 0;
	put16(out + 7, len);
	memcpy(out + 9, name, len);
	return len + 9;
}

static enum sni_result
parse(const struct hello *h, char *name)
{
	size_t need = 0;

	return sni_parse(h->b, h->n, MAXB, name, &need);
}

Test(sni, captured_hellos_give_their_name)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	for (size_t i = 0; i < sizeof(captured) / sizeof(captured[0]); i++) {
		load(captured[i], &h);
		cr_assert_eq(parse(&h, name), SNI_OK, "%s", captured[i]);
		cr_assert_str_eq(name, "test.example.com", "%s", captured[i]);
	}
}

Test(sni, hello_in_two_records_from_openssl_max_send_frag)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	load("openssl-frag512.bin", &h);
	cr_assert_eq(h.b[3] << 8 | h.b[4], 512, "first record is not 512 bytes");
	cr_assert_eq(parse(&h, name), SNI_OK);
	cr_assert_str_eq(name, "test.example.com");
}

Test(sni, large_padded_hello_in_three_records)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	load("large-padded.bin", &h);
	cr_assert_gt(h.n, 12000);
	cr_assert_eq(parse(&h, name), SNI_OK);
	cr_assert_str_eq(name, "big.example.com");
}

Test(sni, every_split_point_needs_more_then_ok)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	size_t need;

	for (size_t i = 0; i < sizeof(captured) / sizeof(captured[0]); i++) {
		load(captured[i], &h);
		for (size_t k = 0; k < h.n; k++) {
			need = 0;
			cr_assert_eq(sni_parse(h.b, k, MAXB, name, &need), SNI_NEED_MORE,
			    "%s: prefix %zu", captured[i], k);
			cr_assert(need > k && need <= h.n, "%s: prefix %zu need %zu",
			    captured[i], k, need);
		}
		cr_assert_eq(sni_parse(h.b, h.n, MAXB, name, &need), SNI_OK);
	}
}

Test(sni, following_need_reaches_ok_in_few_steps)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	size_t have = 0, need = 0, steps = 0;
	enum sni_result r;

	load("curl.bin", &h);
	while ((r = sni_parse(h.b, have, MAXB, name, &need)) == SNI_NEED_MORE) {
		cr_assert_gt(need, have);
		have = need;
		cr_assert_lt(++steps, 100);
	}
	cr_assert_eq(r, SNI_OK);
	cr_assert_leq(have, h.n);
}

Test(sni, one_byte_records_reassemble)
{
	struct hello h, r;
	unsigned char msg[20000];
	char name[SNI_NAME_MAX];
	size_t n;

	load("openssl-default.bin", &h);
	n = unrecord(&h, msg);
	rerecord(msg, n, 1, &r, sizeof(r.b));
	cr_assert_eq(r.n, n * 6);
	cr_assert_eq(parse(&r, name), SNI_OK);
	cr_assert_str_eq(name, "test.example.com");
	rerecord(msg, n, 7, &r, sizeof(r.b));
	cr_assert_eq(parse(&r, name), SNI_OK);
	/* a budget below the reassembled size */
	rerecord(msg, n, 1, &r, sizeof(r.b));
	cr_assert_eq(sni_parse(r.b, r.n, 1024, name, NULL), SNI_TOO_LARGE);
}

Test(sni, hello_without_extensions_has_no_sni)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	build(NULL, 0, &h);
	cr_assert_eq(parse(&h, name), SNI_NO_SNI);
	cr_assert_str_eq(name, "");
}

Test(sni, hello_with_other_extensions_has_no_sni)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	unsigned char ext[] = { 0, 23, 0, 0, 0, 10, 0, 4, 0, 2, 0, 29 };

	build(ext, sizeof(ext), &h);
	cr_assert_eq(parse(&h, name), SNI_NO_SNI);
}

Test(sni, name_is_lowercased_and_loses_one_trailing_dot)
{
	struct hello h;
	unsigned char ext[300];
	char name[SNI_NAME_MAX];

	build(ext, sni_ext("WWW.Example.COM.", 16, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_OK);
	cr_assert_str_eq(name, "www.example.com");
}

Test(sni, name_of_253_bytes_passes_254_fails)
{
	struct hello h;
	unsigned char ext[300];
	char long_name[260], name[SNI_NAME_MAX];

	/* labels of 63 bytes: 4 * 63 + 3 dots = 255; cut to length */
	memset(long_name, 'a', sizeof(long_name));
	for (int i = 63; i < 260; i += 64)
		long_name[i] = '.';
	build(ext, sni_ext(long_name, 253, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_OK);
	cr_assert_eq(strlen(name), 253);
	long_name[253] = '.';
	build(ext, sni_ext(long_name, 254, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_OK, "253 bytes plus a trailing dot");
	build(ext, sni_ext("x234567890.", 11, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_OK);
	long_name[253] = 'a';
	build(ext, sni_ext(long_name, 254, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
	build(ext, sni_ext(long_name, 258, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
}

Test(sni, invalid_names_are_bad_names)
{
	struct hello h;
	unsigned char ext[300];
	char name[SNI_NAME_MAX];

	build(ext, sni_ext("bad..name", 9, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
	build(ext, sni_ext("evil.com\0.good.com", 18, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
	build(ext, sni_ext("sp ace.com", 10, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
	build(ext, sni_ext("a.com..", 7, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
	build(ext, sni_ext(".", 1, ext), &h);
	cr_assert_eq(parse(&h, name), SNI_BAD_NAME);
	cr_assert_str_eq(name, "");
}

Test(sni, first_host_name_wins)
{
	struct hello h;
	unsigned char ext[64];
	char name[SNI_NAME_MAX];
	size_t n = 0;

	/* list: type 7 "zz", host_name "a.com", host_name "b.com" */
	put16(ext, 0); put16(ext + 2, 2 + 5 + 8 + 8); put16(ext + 4, 5 + 8 + 8);
	n = 6;
	ext[n++] = 7; put16(ext + n, 2); n += 2; ext[n++] = 'z'; ext[n++] = 'z';
	ext[n++] = 0; put16(ext + n, 5); n += 2; memcpy(ext + n, "a.com", 5); n += 5;
	ext[n++] = 0; put16(ext + n, 5); n += 2; memcpy(ext + n, "b.com", 5); n += 5;
	build(ext, n, &h);
	cr_assert_eq(parse(&h, name), SNI_OK);
	cr_assert_str_eq(name, "a.com");
}

Test(sni, duplicate_server_name_extension_is_malformed)
{
	struct hello h;
	unsigned char ext[64];
	char name[SNI_NAME_MAX];
	size_t n;

	n = sni_ext("a.com", 5, ext);
	n += sni_ext("b.com", 5, ext + n);
	build(ext, n, &h);
	cr_assert_eq(parse(&h, name), SNI_MALFORMED);
}

Test(sni, http_request_is_malformed_from_the_first_byte)
{
	const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	char name[SNI_NAME_MAX];

	cr_assert_eq(sni_parse((const unsigned char *)get, 1, MAXB, name, NULL), SNI_MALFORMED);
	cr_assert_eq(sni_parse((const unsigned char *)get, strlen(get), MAXB, name, NULL),
	    SNI_MALFORMED);
}

Test(sni, alert_record_is_malformed)
{
	const unsigned char alert[] = { 21, 3, 3, 0, 2, 2, 50 };
	char name[SNI_NAME_MAX];

	cr_assert_eq(sni_parse(alert, sizeof(alert), MAXB, name, NULL), SNI_MALFORMED);
}

Test(sni, alert_between_hello_records_is_malformed)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	load("openssl-frag512.bin", &h);
	h.b[5 + 512] = 21;	/* second record becomes an alert */
	cr_assert_eq(parse(&h, name), SNI_MALFORMED);
}

Test(sni, record_versions_outside_tls10_to_tls13_are_malformed)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	load("openssl-default.bin", &h);
	h.b[2] = 4;
	cr_assert_eq(parse(&h, name), SNI_OK, "0x0304 is accepted");
	h.b[2] = 0;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "0x0300");
	h.b[2] = 5;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "0x0305");
	h.b[2] = 1;
	h.b[1] = 2;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "major 2");
}

Test(sni, zero_length_record_is_malformed)
{
	const unsigned char rec[] = { 22, 3, 1, 0, 0, 22, 3, 1, 0, 4, 1, 0, 0, 60 };
	char name[SNI_NAME_MAX];

	cr_assert_eq(sni_parse(rec, sizeof(rec), MAXB, name, NULL), SNI_MALFORMED);
}

Test(sni, other_handshake_message_is_malformed)
{
	struct hello h;
	char name[SNI_NAME_MAX];

	load("curl.bin", &h);
	h.b[5] = 2;	/* ServerHello */
	cr_assert_eq(parse(&h, name), SNI_MALFORMED);
}

Test(sni, inconsistent_lengths_are_malformed)
{
	struct hello h, orig;
	unsigned char ext[64];
	char name[SNI_NAME_MAX];
	size_t n = sni_ext("a.com", 5, ext);

	build(ext, n, &orig);
	/* offsets in build(): 43 session id, 44 cipher suites length,
	 * 50 compression length, 52 extensions length, 54 first extension */
	h = orig; h.b[43] = 33;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "session id > 32");
	h = orig; h.b[45] = 3;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "odd cipher suites");
	h = orig; h.b[45] = 0;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "no cipher suites");
	h = orig; h.b[50] = 0;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "no compression");
	h = orig; h.b[53]++;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "extensions longer than the hello");
	h = orig; h.b[53]--;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "extensions shorter than the hello");
	h = orig; h.b[57]++;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "extension longer than the block");
	h = orig; h.b[59]--;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "list shorter than the extension");
	h = orig; h.b[62]++;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "name longer than the list");
	h = orig; h.b[8] = 10;
	cr_assert_eq(parse(&h, name), SNI_MALFORMED, "hello shorter than its fields");
}

Test(sni, truncated_hello_needs_more)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	size_t need = 0;

	load("curl.bin", &h);
	/* a record longer than what arrived: wait for the rest */
	cr_assert_eq(sni_parse(h.b, 100, MAXB, name, &need), SNI_NEED_MORE);
	cr_assert_gt(need, 100);
	cr_assert_eq(sni_parse(h.b, 3, MAXB, name, &need), SNI_NEED_MORE);
	cr_assert_eq(need, 5);
}

Test(sni, oversize_hello_is_too_large)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	size_t need = 0;

	load("large-padded.bin", &h);
	/* the handshake header already announces more than 4096 bytes */
	cr_assert_eq(sni_parse(h.b, 9, 4096, name, &need), SNI_TOO_LARGE);
	cr_assert_eq(sni_parse(h.b, h.n, 4096, name, &need), SNI_TOO_LARGE);
	cr_assert_eq(sni_parse(h.b, h.n, h.n - 1, name, &need), SNI_TOO_LARGE);
	cr_assert_eq(sni_parse(h.b, h.n, h.n, name, &need), SNI_OK);
	/* need never points past the budget */
	cr_assert_eq(sni_parse(h.b, 100, h.n, name, &need), SNI_NEED_MORE);
	cr_assert_leq(need, h.n);
}

Test(sni, result_strings)
{
	cr_assert_str_eq(sni_result_str(SNI_OK), "ok");
	cr_assert_str_eq(sni_result_str(SNI_TOO_LARGE), "hello too large");
	cr_assert_str_eq(sni_result_str(SNI_NO_SNI), "no sni");
	cr_assert_str_eq(sni_result_str((enum sni_result)42), "unknown");
}

/* --- the resumable reader -------------------------------------------------- */

/* Feed h to a reader step bytes more at a time; returns the verdict and
 * counts the calls (wake-ups) it took. */
static enum sni_result
read_by(const struct hello *h, size_t step, size_t max, char *name, size_t *calls)
{
	struct sni_reader r;
	enum sni_result res = SNI_NEED_MORE;
	size_t have = 0, need = 0;

	sni_reader_init(&r, max);
	*calls = 0;
	while (res == SNI_NEED_MORE && have < h->n) {
		have = have + step < h->n ? have + step : h->n;
		res = sni_reader_parse(&r, h->b, have, name, &need);
		(*calls)++;
	}
	return res;
}

Test(sni, reader_fed_four_bytes_at_a_time_agrees_with_sni_parse)
{
	struct hello h;
	char name[SNI_NAME_MAX], whole[SNI_NAME_MAX];
	size_t calls;
	const char *files[] = { "openssl-default.bin", "openssl-tls12.bin",
	    "openssl-frag512.bin", "curl.bin", "large-padded.bin" };

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		load(files[i], &h);
		cr_assert_eq(parse(&h, whole), SNI_OK, "%s", files[i]);
		for (size_t step = 1; step <= 7; step += 3) {
			cr_assert_eq(read_by(&h, step, MAXB, name, &calls), SNI_OK,
			    "%s by %zu", files[i], step);
			cr_assert_str_eq(name, whole, "%s by %zu", files[i], step);
		}
	}
	/* a bad verdict too: the same hello under a smaller budget */
	load("large-padded.bin", &h);
	cr_assert_eq(read_by(&h, 4, 4096, name, &calls), SNI_TOO_LARGE);
	cr_assert_eq(sni_parse(h.b, h.n, 4096, name, NULL), SNI_TOO_LARGE);
}

/* A hello of 16384 bytes in one record: a real header and name, then empty
 * extensions of 4 bytes (the slow-client case of finding L1). */
static void
build_empty_exts(struct hello *h)
{
	unsigned char ext[16384];
	size_t n = sni_ext("slow.example.com", 16, ext);

	build(NULL, 0, h);
	n += (16384 - h->n - 2 - n) / 4 * 4;
	for (size_t k = 25; k < n; k += 4) {
		ext[k] = 0xfa; ext[k + 1] = 0xfa; ext[k + 2] = 0; ext[k + 3] = 0;
	}
	build(ext, n, h);
	cr_assert_leq(h->n, 16384);
	cr_assert_geq(h->n, 16380);
}

Test(sni, need_is_the_end_of_the_record)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	struct sni_reader r;
	size_t need = 0, rec_end;

	build_empty_exts(&h);
	rec_end = 5 + ((size_t)h.b[3] << 8 | h.b[4]);
	sni_reader_init(&r, MAXB);
	cr_assert_eq(sni_reader_parse(&r, h.b, 4, name, &need), SNI_NEED_MORE);
	cr_assert_eq(need, 5);
	for (size_t k = 5; k < h.n; k += 4096) {
		cr_assert_eq(sni_reader_parse(&r, h.b, k, name, &need), SNI_NEED_MORE);
		cr_assert_eq(need, rec_end, "prefix %zu: need %zu", k, need);
	}
	cr_assert_eq(sni_reader_parse(&r, h.b, h.n, name, &need), SNI_OK);
	cr_assert_str_eq(name, "slow.example.com");
}

Test(sni, following_need_takes_two_wakeups_per_record)
{
	struct hello h, frag;
	unsigned char msg[20000];
	char name[SNI_NAME_MAX];
	struct sni_reader r;
	size_t have, need, steps, records;
	enum sni_result res;

	build_empty_exts(&h);
	/* the same hello in one record, then in records of 1000 bytes */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			size_t n = unrecord(&h, msg);

			rerecord(msg, n, 1000, &frag, 20000);
			h = frag;
		}
		records = pass == 0 ? 1 : (h.n + 1004) / 1005;
		sni_reader_init(&r, 20000);
		have = 1;       /* the first wake-up: some bytes */
		steps = 1;
		while ((res = sni_reader_parse(&r, h.b, have, name, &need)) == SNI_NEED_MORE) {
			cr_assert_gt(need, have);
			have = need;
			steps++;
		}
		cr_assert_eq(res, SNI_OK);
		cr_assert_leq(steps, 2 * records + 1, "%zu wake-ups for %zu record(s)", steps,
		    records);
	}
}

Test(sni, reader_fed_only_the_bytes_after_its_position)
{
	struct hello h;
	char name[SNI_NAME_MAX];
	struct sni_reader r;
	size_t have = 0, off, need, copied = 0;
	enum sni_result res;

	load("large-padded.bin", &h);
	sni_reader_init(&r, MAXB);
	do {
		off = sni_reader_pos(&r);
		cr_assert_leq(off, have);
		have = have + 3 < h.n ? have + 3 : h.n;
		copied += have - off;
		res = sni_reader_feed(&r, h.b + off, off, have, name, &need);
	} while (res == SNI_NEED_MORE);
	cr_assert_eq(res, SNI_OK);
	cr_assert_str_eq(name, "big.example.com");
	/* each byte handed over about once (a record header may be seen twice) */
	cr_assert_leq(copied, h.n + 32, "copied %zu of %zu", copied, h.n);
	/* a window that starts past the position is refused */
	sni_reader_init(&r, MAXB);
	cr_assert_eq(sni_reader_feed(&r, h.b + 1, 1, h.n, name, &need), SNI_MALFORMED);
}
