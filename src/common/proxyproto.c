/* proxyproto.c - PROXY protocol v1/v2 header writer and parser
 * (proxyproto.h; haproxy's proxy-protocol.txt, sections 2.1 and 2.2). */
#include <sys/types.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

static const uint8_t pp2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

#define PP2_VER			0x20	/* high nibble of byte 12 */
#define PP2_CMD_LOCAL		0x00
#define PP2_CMD_PROXY		0x01
#define PP2_FAM_UNSPEC		0x00
#define PP2_FAM_TCP4		0x11
#define PP2_FAM_TCP6		0x21
#define PP2_ADDR_TCP4		12	/* 2 x 4-byte address, 2 x port */
#define PP2_ADDR_TCP6		36	/* 2 x 16-byte address, 2 x port */

int
proxyproto_version_parse(const char *s)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "off") == 0)
		return PROXYPROTO_OFF;
	if (strcmp(s, "v1") == 0)
		return PROXYPROTO_V1;
	if (strcmp(s, "v2") == 0)
		return PROXYPROTO_V2;
	return -1;
}

const char *
proxyproto_version_str(enum proxyproto_version v)
{
	switch (v) {
	case PROXYPROTO_V1:	return "v1";
	case PROXYPROTO_V2:	return "v2";
	default:		return "off";
	}
}

const char *
proxyproto_result_str(enum proxyproto_result r)
{
	switch (r) {
	case PROXYPROTO_OK:		return "ok";
	case PROXYPROTO_NEED_MORE:	return "truncated";
	case PROXYPROTO_BAD_SIGNATURE:	return "no PROXY header signature";
	case PROXYPROTO_BAD_VERSION:	return "unknown version";
	case PROXYPROTO_BAD_COMMAND:	return "unknown command";
	case PROXYPROTO_BAD_FAMILY:	return "unsupported address family";
	case PROXYPROTO_TOO_LONG:	return "header too long";
	case PROXYPROTO_MALFORMED:	return "malformed header";
	}
	return "?";
}

/* ---- writer --------------------------------------------------------------- */

static ssize_t
proxyproto_write_v1(const struct proxyproto_info *pi, uint8_t *buf, size_t len)
{
	char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
	const void *sa, *da;
	int af = pi->pi_src.ss_family, n;
	unsigned sp, dp;

	if (pi->pi_local)
		n = snprintf((char *)buf, len, "PROXY UNKNOWN\r\n");
	else {
		if (af == AF_INET) {
			const struct sockaddr_in *s = (const struct sockaddr_in *)&pi->pi_src;
			const struct sockaddr_in *d = (const struct sockaddr_in *)&pi->pi_dst;

			sa = &s->sin_addr;
			da = &d->sin_addr;
			sp = ntohs(s->sin_port);
			dp = ntohs(d->sin_port);
		} else {
			const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&pi->pi_src;
			const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)&pi->pi_dst;

			sa = &s->sin6_addr;
			da = &d->sin6_addr;
			sp = ntohs(s->sin6_port);
			dp = ntohs(d->sin6_port);
		}
		if (inet_ntop(af, sa, src, sizeof(src)) == NULL ||
		    inet_ntop(af, da, dst, sizeof(dst)) == NULL)
			return -1;
		n = snprintf((char *)buf, len, "PROXY %s %s %s %u %u\r\n",
		    af == AF_INET ? "TCP4" : "TCP6", src, dst, sp, dp);
	}
	/* snprintf wrote a NUL after the line; the header is the line only. */
	if (n < 0 || (size_t)n >= len || n > PROXYPROTO_V1_MAX)
		return -1;
	return n;
}

static ssize_t
proxyproto_write_v2(const struct proxyproto_info *pi, uint8_t *buf, size_t len)
{
	size_t alen = strlen(pi->pi_authority), off = PROXYPROTO_V2_FIXED, body;
	int af = pi->pi_src.ss_family;

	if (alen > PROXYPROTO_AUTHORITY_MAX)
		return -1;
	if (pi->pi_local)
		body = 0;	/* LOCAL: no addresses, and TLVs would be ignored */
	else
		body = (af == AF_INET ? PP2_ADDR_TCP4 : PP2_ADDR_TCP6) + (alen ? 3 + alen : 0);
	if (len < PROXYPROTO_V2_FIXED + body)
		return -1;
	memcpy(buf, pp2_sig, sizeof(pp2_sig));
	buf[12] = PP2_VER | (pi->pi_local ? PP2_CMD_LOCAL : PP2_CMD_PROXY);
	buf[13] = pi->pi_local ? PP2_FAM_UNSPEC : af == AF_INET ? PP2_FAM_TCP4 : PP2_FAM_TCP6;
	buf[14] = (uint8_t)(body >> 8);		/* network order */
	buf[15] = (uint8_t)body;
	if (pi->pi_local)
		return PROXYPROTO_V2_FIXED;
	if (af == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)&pi->pi_src;
		const struct sockaddr_in *d = (const struct sockaddr_in *)&pi->pi_dst;

		memcpy(buf + off, &s->sin_addr, 4);
		memcpy(buf + off + 4, &d->sin_addr, 4);
		memcpy(buf + off + 8, &s->sin_port, 2);
		memcpy(buf + off + 10, &d->sin_port, 2);
		off += PP2_ADDR_TCP4;
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&pi->pi_src;
		const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)&pi->pi_dst;

		memcpy(buf + off, &s->sin6_addr, 16);
		memcpy(buf + off + 16, &d->sin6_addr, 16);
		memcpy(buf + off + 32, &s->sin6_port, 2);
		memcpy(buf + off + 34, &d->sin6_port, 2);
		off += PP2_ADDR_TCP6;
	}
	if (alen > 0) {
		buf[off] = PROXYPROTO_PP2_TYPE_AUTHORITY;
		buf[off + 1] = (uint8_t)(alen >> 8);
		buf[off + 2] = (uint8_t)alen;
		memcpy(buf + off + 3, pi->pi_authority, alen);
		off += 3 + alen;
	}
	return (ssize_t)off;
}

ssize_t
proxyproto_write(enum proxyproto_version v, const struct proxyproto_info *pi, uint8_t *buf,
    size_t len)
{
	if (!pi->pi_local && (pi->pi_src.ss_family != pi->pi_dst.ss_family ||
	    (pi->pi_src.ss_family != AF_INET && pi->pi_src.ss_family != AF_INET6)))
		return -1;
	switch (v) {
	case PROXYPROTO_V1:
		return proxyproto_write_v1(pi, buf, len);
	case PROXYPROTO_V2:
		return proxyproto_write_v2(pi, buf, len);
	default:
		return -1;
	}
}

/* ---- parser --------------------------------------------------------------- */

/* A decimal port 0-65535, no sign, no leading zero. */
static int
pp1_port(const char *s, size_t n, uint16_t *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* One address of a v1 line into ss. */
static int
pp1_addr(int af, const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss)
{
	char tmp[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return inet_pton(AF_INET, tmp, &sin->sin_addr) == 1 ? 0 : -1;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1 ? 0 : -1;
	}
}

/* "PROXY TCP4 src dst sport dport\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN...\r\n". */
static enum proxyproto_result
pp1_parse(const uint8_t *buf, size_t len, size_t cap, struct proxyproto_info *pi,
    size_t *used)
{
	static const char sig[] = "PROXY ";
	const char *line = (const char *)buf, *f[4], *p;
	size_t n, end = 0, flen[4];
	int af;

	n = len < 6 ? len : 6;
	if (memcmp(buf, sig, n) != 0)
		return PROXYPROTO_BAD_SIGNATURE;
	/* Find the CR of the CRLF within the first cap (<= 107) bytes; the
	 * line is judged only once it is whole, so however its bytes arrive
	 * the verdict is the same. */
	for (size_t i = 0; i < len && i < cap; i++) {
		if (buf[i] == '\r') {
			end = i;
			break;
		}
		/* Printable US-ASCII only: this is a text line. */
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return PROXYPROTO_MALFORMED;
	}
	if (end == 0) {
		if (len >= cap)
			return PROXYPROTO_TOO_LONG;
		*used = len + 1;
		return PROXYPROTO_NEED_MORE;
	}
	if (end + 1 >= cap)
		return PROXYPROTO_TOO_LONG;	/* the LF would be past byte 107 (cap) */
	if (end + 1 >= len) {
		*used = end + 2;
		return PROXYPROTO_NEED_MORE;
	}
	if (buf[end + 1] != '\n' || end < 6)
		return PROXYPROTO_MALFORMED;
	*used = end + 2;
	memset(pi, 0, sizeof(*pi));
	p = line + 6;
	n = end - 6;
	if (n >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (n == 7 || p[7] == ' ')) {
		/* The rest of the line, if any, is to be ignored. */
		pi->pi_local = 1;
		return PROXYPROTO_OK;
	}
	if (n < 5 || p[4] != ' ')
		return PROXYPROTO_BAD_FAMILY;
	if (memcmp(p, "TCP4", 4) == 0)
		af = AF_INET;
	else if (memcmp(p, "TCP6", 4) == 0)
		af = AF_INET6;
	else
		return PROXYPROTO_BAD_FAMILY;
	p += 5;
	n -= 5;
	/* Exactly four fields, separated by single spaces. */
	for (int k = 0; k < 4; k++) {
		const char *sp = memchr(p, ' ', n);
		size_t l = sp != NULL ? (size_t)(sp - p) : n;

		if (l == 0 || (k < 3 && sp == NULL) || (k == 3 && sp != NULL))
			return PROXYPROTO_MALFORMED;
		f[k] = p;
		flen[k] = l;
		if (sp != NULL) {
			p = sp + 1;
			n -= l + 1;
		}
	}
	{
		uint16_t sport, dport;

		if (pp1_port(f[2], flen[2], &sport) < 0 || pp1_port(f[3], flen[3], &dport) < 0 ||
		    pp1_addr(af, f[0], flen[0], sport, &pi->pi_src) < 0 ||
		    pp1_addr(af, f[1], flen[1], dport, &pi->pi_dst) < 0)
			return PROXYPROTO_MALFORMED;
	}
	return PROXYPROTO_OK;
}

/* The TLVs after the addresses; only AUTHORITY is kept, others skipped. */
static enum proxyproto_result
pp2_tlvs(const uint8_t *p, size_t n, struct proxyproto_info *pi)
{
	while (n > 0) {
		size_t l;

		if (n < 3)
			return PROXYPROTO_MALFORMED;
		l = (size_t)p[1] << 8 | p[2];
		if (l > n - 3)
			return PROXYPROTO_MALFORMED;
		if (p[0] == PROXYPROTO_PP2_TYPE_AUTHORITY) {
			if (l == 0 || l > PROXYPROTO_AUTHORITY_MAX || memchr(p + 3, '\0', l) != NULL)
				return PROXYPROTO_MALFORMED;
			memcpy(pi->pi_authority, p + 3, l);
			pi->pi_authority[l] = '\0';
		}
		p += 3 + l;
		n -= 3 + l;
	}
	return PROXYPROTO_OK;
}

static enum proxyproto_result
pp2_parse(const uint8_t *buf, size_t len, size_t max, struct proxyproto_info *pi,
    size_t *used)
{
	size_t n = len < sizeof(pp2_sig) ? len : sizeof(pp2_sig), body, total;
	const uint8_t *a;

	if (memcmp(buf, pp2_sig, n) != 0)
		return PROXYPROTO_BAD_SIGNATURE;
	if (len > 12 && (buf[12] & 0xf0) != PP2_VER)
		return PROXYPROTO_BAD_VERSION;
	if (len > 12 && (buf[12] & 0x0f) > PP2_CMD_PROXY)
		return PROXYPROTO_BAD_COMMAND;
	/* LOCAL ignores the family; PROXY needs TCP over IPv4 or IPv6 (UNSPEC:
	 * the spec lets the receiver use the real addresses, here: none). */
	if (len > 13 && (buf[12] & 0x0f) == PP2_CMD_PROXY && buf[13] != PP2_FAM_TCP4 &&
	    buf[13] != PP2_FAM_TCP6 && buf[13] != PP2_FAM_UNSPEC)
		return PROXYPROTO_BAD_FAMILY;
	if (len < PROXYPROTO_V2_FIXED) {
		*used = PROXYPROTO_V2_FIXED;
		return PROXYPROTO_NEED_MORE;
	}
	body = (size_t)buf[14] << 8 | buf[15];
	total = PROXYPROTO_V2_FIXED + body;
	if (total > max)
		return PROXYPROTO_TOO_LONG;
	if (len < total) {
		*used = total;
		return PROXYPROTO_NEED_MORE;
	}
	memset(pi, 0, sizeof(*pi));
	*used = total;
	a = buf + PROXYPROTO_V2_FIXED;
	if ((buf[12] & 0x0f) == PP2_CMD_LOCAL || buf[13] == PP2_FAM_UNSPEC) {
		/* The protocol block is to be discarded, TLVs with it. */
		pi->pi_local = 1;
		return PROXYPROTO_OK;
	}
	if (buf[13] == PP2_FAM_TCP4) {
		struct sockaddr_in *s = (struct sockaddr_in *)&pi->pi_src;
		struct sockaddr_in *d = (struct sockaddr_in *)&pi->pi_dst;

		if (body < PP2_ADDR_TCP4)
			return PROXYPROTO_MALFORMED;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		return pp2_tlvs(a + PP2_ADDR_TCP4, body - PP2_ADDR_TCP4, pi);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&pi->pi_src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&pi->pi_dst;

		if (body < PP2_ADDR_TCP6)
			return PROXYPROTO_MALFORMED;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		return pp2_tlvs(a + PP2_ADDR_TCP6, body - PP2_ADDR_TCP6, pi);
	}
}

enum proxyproto_result
proxyproto_parse(enum proxyproto_version v, const uint8_t *buf, size_t len, size_t max,
    struct proxyproto_info *pi, size_t *used)
{
	enum proxyproto_result r;
	size_t u = 0;

	if (max < PROXYPROTO_V2_FIXED)
		max = PROXYPROTO_V2_FIXED;
	if (len == 0) {
		*used = v == PROXYPROTO_V2 ? PROXYPROTO_V2_FIXED : 1;
		return PROXYPROTO_NEED_MORE;
	}
	if (v == PROXYPROTO_V1)
		r = pp1_parse(buf, len, max < PROXYPROTO_V1_MAX ? max : PROXYPROTO_V1_MAX, pi, &u);
	else if (v == PROXYPROTO_V2)
		r = pp2_parse(buf, len, max, pi, &u);
	else
		return PROXYPROTO_BAD_VERSION;
	if (r == PROXYPROTO_OK || r == PROXYPROTO_NEED_MORE)
		*used = u;
	return r;
}
