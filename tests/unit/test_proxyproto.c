/* Tests for proxyproto.c: headers written and read back for both versions
 * and families, the exact bytes of known examples (haproxy's
 * proxy-protocol.txt), every truncation, and each way a header is refused. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

#define MAXB 536

static const uint8_t sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

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
make_info(struct proxyproto_info *pi, const char *src, unsigned sp, const char *dst,
    unsigned dp, const char *authority)
{
	memset(pi, 0, sizeof(*pi));
	set_addr(&pi->pi_src, src, sp);
	set_addr(&pi->pi_dst, dst, dp);
	snprintf(pi->pi_authority, sizeof(pi->pi_authority), "%s", authority ? authority : "");
}

static int
addr_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
		    &((const struct sockaddr_in *)b)->sin_addr, 4) == 0 &&
		    ((const struct sockaddr_in *)a)->sin_port == ((const struct sockaddr_in *)b)->sin_port;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	    &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0 &&
	    ((const struct sockaddr_in6 *)a)->sin6_port == ((const struct sockaddr_in6 *)b)->sin6_port;
}

/* Write pi as version v, read it back, compare. */
static void
round_trip(enum proxyproto_version v, const struct proxyproto_info *pi, int want_authority)
{
	uint8_t buf[PROXYPROTO_WRITE_MAX + 3];	/* + the start of a ClientHello */
	struct proxyproto_info out;
	size_t used = 0;
	ssize_t n;

	n = proxyproto_write(v, pi, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_eq(proxyproto_parse(v, buf, (size_t)n, MAXB, &out, &used), PROXYPROTO_OK);
	cr_assert_eq(used, (size_t)n);
	cr_assert_eq(out.pi_local, pi->pi_local);
	if (!pi->pi_local) {
		cr_assert(addr_same(&out.pi_src, &pi->pi_src));
		cr_assert(addr_same(&out.pi_dst, &pi->pi_dst));
	}
	if (want_authority)
		cr_assert_str_eq(out.pi_authority, pi->pi_authority);
	else
		cr_assert_str_eq(out.pi_authority, "");
	/* Bytes behind the header (the ClientHello) are not part of it. */
	memcpy(buf + n, "\x16\x03\x01", 3);
	cr_assert_eq(proxyproto_parse(v, buf, (size_t)n + 3, MAXB, &out, &used), PROXYPROTO_OK);
	cr_assert_eq(used, (size_t)n);
}

Test(proxyproto, v1_round_trip_ipv4)
{
	struct proxyproto_info pi;

	make_info(&pi, "203.0.113.7", 51234, "192.0.2.1", 4433, "test.example.com");
	round_trip(PROXYPROTO_V1, &pi, 0);
}

Test(proxyproto, v1_round_trip_ipv6)
{
	struct proxyproto_info pi;

	make_info(&pi, "2001:db8::7", 65535, "ffff:f::1", 1, NULL);
	round_trip(PROXYPROTO_V1, &pi, 0);
}

Test(proxyproto, v2_round_trip_ipv4_with_authority)
{
	struct proxyproto_info pi;

	make_info(&pi, "203.0.113.7", 51234, "192.0.2.1", 4433, "test.internal-server.local");
	round_trip(PROXYPROTO_V2, &pi, 1);
}

Test(proxyproto, v2_round_trip_ipv6_with_longest_authority)
{
	struct proxyproto_info pi;
	char name[254];

	memset(name, 'a', 253);
	name[253] = '\0';
	make_info(&pi, "2001:db8::7", 51234, "2001:db8::1", 443, name);
	round_trip(PROXYPROTO_V2, &pi, 1);
}

Test(proxyproto, local_round_trip)
{
	struct proxyproto_info pi;
	uint8_t buf[64];

	memset(&pi, 0, sizeof(pi));
	pi.pi_local = 1;
	round_trip(PROXYPROTO_V1, &pi, 0);
	round_trip(PROXYPROTO_V2, &pi, 0);
	cr_assert_eq(proxyproto_write(PROXYPROTO_V1, &pi, buf, sizeof(buf)), 15);
	cr_assert_eq(memcmp(buf, "PROXY UNKNOWN\r\n", 15), 0);
	cr_assert_eq(proxyproto_write(PROXYPROTO_V2, &pi, buf, sizeof(buf)), 16);
	cr_assert_eq(memcmp(buf, sig, 12), 0);
	cr_assert_eq(buf[12], 0x20);	/* version 2, LOCAL */
	cr_assert_eq(buf[13], 0x00);	/* UNSPEC */
	cr_assert_eq(buf[14], 0);
	cr_assert_eq(buf[15], 0);
}

Test(proxyproto, v1_exact_line)
{
	struct proxyproto_info pi;
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	const char *want = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	ssize_t n;

	make_info(&pi, "192.168.0.1", 56324, "192.168.0.11", 443, NULL);
	n = proxyproto_write(PROXYPROTO_V1, &pi, buf, sizeof(buf));
	cr_assert_eq(n, (ssize_t)strlen(want));
	cr_assert_eq(memcmp(buf, want, (size_t)n), 0);
}

/* The spec's longest v1 line is exactly 107 bytes and fits. */
Test(proxyproto, v1_longest_line)
{
	struct proxyproto_info pi;
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	ssize_t n;

	make_info(&pi, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, NULL);
	n = proxyproto_write(PROXYPROTO_V1, &pi, buf, sizeof(buf));
	cr_assert_eq(n, 104);
	round_trip(PROXYPROTO_V1, &pi, 0);
}

Test(proxyproto, v2_exact_bytes_tcp4_authority)
{
	struct proxyproto_info pi;
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	static const uint8_t want[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21,			/* version 2, PROXY */
		0x11,			/* TCP over IPv4 */
		0x00, 0x14,		/* 12 address bytes + TLV of 3 + 5 */
		203, 0, 113, 7,		/* source */
		192, 0, 2, 1,		/* destination */
		0xc8, 0x22,		/* 51234 */
		0x11, 0x51,		/* 4433 */
		0x02, 0x00, 0x05, 'a', '.', 'c', 'o', 'm',	/* PP2_TYPE_AUTHORITY */
	};
	ssize_t n;

	make_info(&pi, "203.0.113.7", 51234, "192.0.2.1", 4433, "a.com");
	n = proxyproto_write(PROXYPROTO_V2, &pi, buf, sizeof(buf));
	cr_assert_eq(n, (ssize_t)sizeof(want));
	cr_assert_eq(memcmp(buf, want, sizeof(want)), 0);
}

Test(proxyproto, v2_exact_bytes_tcp6)
{
	struct proxyproto_info pi;
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	ssize_t n;

	make_info(&pi, "2001:db8::7", 443, "::1", 8443, NULL);
	n = proxyproto_write(PROXYPROTO_V2, &pi, buf, sizeof(buf));
	cr_assert_eq(n, 16 + 36);
	cr_assert_eq(buf[12], 0x21);
	cr_assert_eq(buf[13], 0x21);	/* TCP over IPv6 */
	cr_assert_eq(buf[14], 0);
	cr_assert_eq(buf[15], 36);
	cr_assert_eq(buf[16], 0x20);
	cr_assert_eq(buf[17], 0x01);
	cr_assert_eq(buf[16 + 31], 0x01);	/* ::1 ends the destination */
	cr_assert_eq(buf[48], 0x01);
	cr_assert_eq(buf[49], 0xbb);		/* 443 */
	cr_assert_eq(buf[50], 0x20);
	cr_assert_eq(buf[51], 0xfb);		/* 8443 */
}

/* Every proper prefix of a valid header asks for more, and for no more
 * than the header's length. */
static void
truncations(enum proxyproto_version v, const struct proxyproto_info *pi)
{
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	struct proxyproto_info out;
	ssize_t n = proxyproto_write(v, pi, buf, sizeof(buf));

	cr_assert_gt(n, 0);
	for (size_t len = 0; len < (size_t)n; len++) {
		size_t used = 0;

		cr_assert_eq(proxyproto_parse(v, buf, len, MAXB, &out, &used),
		    PROXYPROTO_NEED_MORE, "prefix %zu of %zd", len, n);
		cr_assert_gt(used, len);
		cr_assert_leq(used, (size_t)n, "prefix %zu asks for %zu", len, used);
	}
}

Test(proxyproto, every_truncation)
{
	struct proxyproto_info pi;

	make_info(&pi, "203.0.113.7", 51234, "192.0.2.1", 4433, "x.example");
	truncations(PROXYPROTO_V1, &pi);
	truncations(PROXYPROTO_V2, &pi);
	make_info(&pi, "2001:db8::7", 51234, "2001:db8::1", 443, "x.example");
	truncations(PROXYPROTO_V1, &pi);
	truncations(PROXYPROTO_V2, &pi);
	pi.pi_local = 1;
	truncations(PROXYPROTO_V1, &pi);
	truncations(PROXYPROTO_V2, &pi);
}

static enum proxyproto_result
parse_str(enum proxyproto_version v, const void *b, size_t len)
{
	struct proxyproto_info out;
	size_t used;

	return proxyproto_parse(v, b, len, MAXB, &out, &used);
}

#define P1(s)	parse_str(PROXYPROTO_V1, s, sizeof(s) - 1)

Test(proxyproto, wrong_signature)
{
	static const uint8_t hello[] = { 0x16, 0x03, 0x01, 0x00, 0x2e, 0x01 };
	uint8_t v2[16];

	cr_assert_eq(parse_str(PROXYPROTO_V2, hello, sizeof(hello)), PROXYPROTO_BAD_SIGNATURE);
	cr_assert_eq(parse_str(PROXYPROTO_V1, hello, sizeof(hello)), PROXYPROTO_BAD_SIGNATURE);
	/* Seen on the first differing byte, without waiting for more. */
	cr_assert_eq(P1("PROXX"), PROXYPROTO_BAD_SIGNATURE);
	cr_assert_eq(P1("proxy TCP4"), PROXYPROTO_BAD_SIGNATURE);
	cr_assert_eq(parse_str(PROXYPROTO_V2, "\r\n\r\n\0\r\nQUIX", 12), PROXYPROTO_BAD_SIGNATURE);
	/* No guessing: a v1 line to a v2 reader and the reverse. */
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n") , PROXYPROTO_OK);
	cr_assert_eq(parse_str(PROXYPROTO_V2, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32),
	    PROXYPROTO_BAD_SIGNATURE);
	memcpy(v2, sig, 12);
	v2[12] = 0x21; v2[13] = 0x11; v2[14] = 0; v2[15] = 12;
	cr_assert_eq(parse_str(PROXYPROTO_V1, v2, sizeof(v2)), PROXYPROTO_BAD_SIGNATURE);
}

static enum proxyproto_result
v2_with(uint8_t vc, uint8_t fam, uint16_t len, const uint8_t *body, size_t blen)
{
	uint8_t b[1024];

	memcpy(b, sig, 12);
	b[12] = vc;
	b[13] = fam;
	b[14] = (uint8_t)(len >> 8);
	b[15] = (uint8_t)len;
	memcpy(b + 16, body, blen);
	return parse_str(PROXYPROTO_V2, b, 16 + blen);
}

Test(proxyproto, v2_unknown_version_command_family)
{
	uint8_t body[36] = { 0 };

	cr_assert_eq(v2_with(0x11, 0x11, 12, body, 12), PROXYPROTO_BAD_VERSION);
	cr_assert_eq(v2_with(0x31, 0x11, 12, body, 12), PROXYPROTO_BAD_VERSION);
	cr_assert_eq(v2_with(0x22, 0x11, 12, body, 12), PROXYPROTO_BAD_COMMAND);
	cr_assert_eq(v2_with(0x2f, 0x11, 12, body, 12), PROXYPROTO_BAD_COMMAND);
	cr_assert_eq(v2_with(0x21, 0x12, 12, body, 12), PROXYPROTO_BAD_FAMILY);	/* UDP */
	cr_assert_eq(v2_with(0x21, 0x31, 12, body, 12), PROXYPROTO_BAD_FAMILY);	/* UNIX */
	cr_assert_eq(v2_with(0x21, 0x41, 12, body, 12), PROXYPROTO_BAD_FAMILY);
	/* LOCAL ignores the family; PROXY with UNSPEC carries no addresses. */
	cr_assert_eq(v2_with(0x20, 0x31, 12, body, 12), PROXYPROTO_OK);
	cr_assert_eq(v2_with(0x21, 0x00, 0, body, 0), PROXYPROTO_OK);
	/* Reported from the first 14 bytes, before the length is there. */
	{
		uint8_t b[14];

		memcpy(b, sig, 12);
		b[12] = 0x21;
		b[13] = 0x22;
		cr_assert_eq(parse_str(PROXYPROTO_V2, b, 14), PROXYPROTO_BAD_FAMILY);
	}
}

Test(proxyproto, v2_lengths)
{
	uint8_t body[64] = { 0 };
	struct proxyproto_info out;
	uint8_t b[16];
	size_t used;

	/* Oversized: refused from the 16 fixed bytes alone. */
	memcpy(b, sig, 12);
	b[12] = 0x21; b[13] = 0x11; b[14] = 0xff; b[15] = 0xff;
	cr_assert_eq(proxyproto_parse(PROXYPROTO_V2, b, 16, MAXB, &out, &used), PROXYPROTO_TOO_LONG);
	b[14] = (MAXB - 16) >> 8; b[15] = (MAXB - 16) & 0xff;
	cr_assert_eq(proxyproto_parse(PROXYPROTO_V2, b, 16, MAXB, &out, &used),
	    PROXYPROTO_NEED_MORE);
	cr_assert_eq(used, MAXB);
	b[15]++;
	cr_assert_eq(proxyproto_parse(PROXYPROTO_V2, b, 16, MAXB, &out, &used), PROXYPROTO_TOO_LONG);
	/* Address block shorter than the family needs. */
	cr_assert_eq(v2_with(0x21, 0x11, 11, body, 11), PROXYPROTO_MALFORMED);
	cr_assert_eq(v2_with(0x21, 0x21, 35, body, 35), PROXYPROTO_MALFORMED);
	/* Extra bytes that are not a whole TLV. */
	cr_assert_eq(v2_with(0x21, 0x11, 14, body, 14), PROXYPROTO_MALFORMED);
	/* A TLV whose length runs past the header. */
	body[12] = 0x04; body[13] = 0x00; body[14] = 0x05;
	cr_assert_eq(v2_with(0x21, 0x11, 19, body, 19), PROXYPROTO_MALFORMED);
	/* An unknown TLV that fits is skipped. */
	cr_assert_eq(v2_with(0x21, 0x11, 20, body, 20), PROXYPROTO_OK);
}

Test(proxyproto, v2_authority_tlv)
{
	uint8_t body[64] = { 192, 0, 2, 9, 192, 0, 2, 1, 0x01, 0xbb, 0x11, 0x51 };
	uint8_t b[128];
	struct proxyproto_info out;
	size_t used;

	/* NOOP TLV, then AUTHORITY */
	memcpy(body + 12, "\x04\x00\x01\x00\x02\x00\x05" "a.com", 12);
	memcpy(b, sig, 12);
	b[12] = 0x21; b[13] = 0x11; b[14] = 0; b[15] = 24;
	memcpy(b + 16, body, 24);
	cr_assert_eq(proxyproto_parse(PROXYPROTO_V2, b, 40, MAXB, &out, &used), PROXYPROTO_OK);
	cr_assert_eq(used, 40);
	cr_assert_str_eq(out.pi_authority, "a.com");
	cr_assert_eq(ntohs(((struct sockaddr_in *)&out.pi_src)->sin_port), 443);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&out.pi_dst)->sin_port), 4433);
	/* Empty, or with a NUL inside: malformed. */
	memcpy(b + 16 + 12, "\x02\x00\x00", 3);
	b[15] = 15;
	cr_assert_eq(proxyproto_parse(PROXYPROTO_V2, b, 31, MAXB, &out, &used),
	    PROXYPROTO_MALFORMED);
	memcpy(b + 16 + 12, "\x02\x00\x03" "a\0b", 6);
	b[15] = 18;
	cr_assert_eq(proxyproto_parse(PROXYPROTO_V2, b, 34, MAXB, &out, &used),
	    PROXYPROTO_MALFORMED);
}

Test(proxyproto, v2_authority_too_long_to_write)
{
	struct proxyproto_info pi;
	uint8_t buf[PROXYPROTO_WRITE_MAX];

	make_info(&pi, "203.0.113.7", 1, "192.0.2.1", 2, NULL);
	memset(pi.pi_authority, 'a', PROXYPROTO_AUTHORITY_MAX);
	cr_assert_gt(proxyproto_write(PROXYPROTO_V2, &pi, buf, sizeof(buf)), 0);
	cr_assert_eq(proxyproto_write(PROXYPROTO_V2, &pi, buf, 40), -1);	/* buf too small */
	set_addr(&pi.pi_dst, "::1", 2);
	cr_assert_eq(proxyproto_write(PROXYPROTO_V2, &pi, buf, sizeof(buf)), -1);	/* mixed */
	cr_assert_eq(proxyproto_write(PROXYPROTO_OFF, &pi, buf, sizeof(buf)), -1);
}

Test(proxyproto, v1_refused)
{
	char line[200];

	cr_assert_eq(P1("PROXY UNKNOWN\r\n"), PROXYPROTO_OK);
	cr_assert_eq(P1("PROXY UNKNOWN 1.2.3.4 x y z\r\n"), PROXYPROTO_OK);
	cr_assert_eq(P1("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_BAD_FAMILY);
	cr_assert_eq(P1("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_BAD_FAMILY);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 ::1 ::1 1 2\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), PROXYPROTO_MALFORMED);
	cr_assert_eq(P1("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"), PROXYPROTO_MALFORMED);
	/* No CRLF within 107 bytes. */
	memset(line, 'A', sizeof(line));
	memcpy(line, "PROXY ", 6);
	cr_assert_eq(parse_str(PROXYPROTO_V1, line, 107), PROXYPROTO_TOO_LONG);
	cr_assert_eq(parse_str(PROXYPROTO_V1, line, 106), PROXYPROTO_NEED_MORE);
	/* CR as byte 107: the LF would be byte 108. */
	line[106] = '\r';
	line[107] = '\n';
	cr_assert_eq(parse_str(PROXYPROTO_V1, line, 108), PROXYPROTO_TOO_LONG);
}

Test(proxyproto, version_names)
{
	cr_assert_eq(proxyproto_version_parse("v1"), PROXYPROTO_V1);
	cr_assert_eq(proxyproto_version_parse("v2"), PROXYPROTO_V2);
	cr_assert_eq(proxyproto_version_parse("off"), PROXYPROTO_OFF);
	cr_assert_eq(proxyproto_version_parse("V2"), -1);
	cr_assert_eq(proxyproto_version_parse(""), -1);
	cr_assert_eq(proxyproto_version_parse(NULL), -1);
	cr_assert_str_eq(proxyproto_version_str(PROXYPROTO_V2), "v2");
}
