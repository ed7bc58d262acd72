/* frame.c - the start frame of a pooled data connection (frame.h).
 *
 * Layout, all integers big-endian (README has the table):
 *   0  magic "HPSF"           4
 *   4  version (1)            1
 *   5  flags (0)              1
 *   6  body length            2   bytes after this field
 *   8  connection id          8
 *  16  client: family 4|6     1, address 4|16, port 2
 *   .  local:  family 4|6     1, address 4|16, port 2
 *   .  SNI length (1..253)    1, SNI bytes
 * The body ends exactly at the SNI's last byte. */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <string.h>

#include "frame.h"
#include "util.h"

const char *
frame_result_str(enum frame_result r)
{
	switch (r) {
	case FRAME_OK:		return "ok";
	case FRAME_NEED_MORE:	return "truncated";
	case FRAME_BAD_MAGIC:	return "wrong magic";
	case FRAME_BAD_VERSION:	return "unknown version";
	case FRAME_BAD_FLAGS:	return "nonzero flags";
	case FRAME_BAD_LENGTH:	return "bad body length";
	case FRAME_BAD_FAMILY:	return "bad address family";
	case FRAME_BAD_SNI:	return "bad SNI";
	case FRAME_TRAILING:	return "trailing bytes in body";
	}
	return "?";
}

/* 1 when the n bytes at s are a host name as the private proxy announces
 * it: lower case, no trailing dot, labels as dns_name_normalize() wants. */
static int
frame_sni_valid(const char *s, size_t n)
{
	char name[FRAME_SNI_MAX + 1];

	if (n == 0 || n > FRAME_SNI_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '.' || c == '_'))
			return 0;
	}
	if (s[n - 1] == '.')
		return 0;
	memcpy(name, s, n);
	name[n] = '\0';
	return dns_name_normalize(name) == 0;
}

/* ---- writer --------------------------------------------------------------- */

/* Family byte, address and port of ss at p; bytes written, or 0. */
static size_t
frame_put_endpoint(uint8_t *p, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;

		p[0] = 4;
		memcpy(p + 1, &s->sin_addr, 4);
		memcpy(p + 5, &s->sin_port, 2);	/* already network order */
		return 7;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;

		p[0] = 6;
		memcpy(p + 1, &s->sin6_addr, 16);
		memcpy(p + 17, &s->sin6_port, 2);
		return 19;
	}
	return 0;
}

ssize_t
frame_encode(const struct frame *f, uint8_t *buf, size_t len)
{
	uint8_t tmp[FRAME_MAX];
	size_t sni = strnlen(f->fr_sni, sizeof(f->fr_sni)), p = FRAME_HEAD, n;

	if (!frame_sni_valid(f->fr_sni, sni))
		return -1;
	memcpy(tmp, FRAME_MAGIC, 4);
	tmp[4] = FRAME_VERSION;
	tmp[5] = 0;
	for (int i = 0; i < 8; i++)
		tmp[p++] = (uint8_t)(f->fr_conn_id >> (56 - 8 * i));
	if ((n = frame_put_endpoint(tmp + p, &f->fr_client)) == 0)
		return -1;
	p += n;
	if ((n = frame_put_endpoint(tmp + p, &f->fr_local)) == 0)
		return -1;
	p += n;
	tmp[p++] = (uint8_t)sni;
	memcpy(tmp + p, f->fr_sni, sni);
	p += sni;
	tmp[6] = (uint8_t)((p - FRAME_HEAD) >> 8);
	tmp[7] = (uint8_t)(p - FRAME_HEAD);
	if (p > len)
		return -1;
	memcpy(buf, tmp, p);
	return (ssize_t)p;
}

/* ---- parser --------------------------------------------------------------- */

/* Endpoint at *p, not past end, into ss; advances *p. */
static enum frame_result
frame_get_endpoint(const uint8_t *buf, size_t *p, size_t end, struct sockaddr_storage *ss)
{
	size_t alen;

	if (*p + 1 > end)
		return FRAME_BAD_LENGTH;
	switch (buf[*p]) {
	case 4:		alen = 4; break;
	case 6:		alen = 16; break;
	default:	return FRAME_BAD_FAMILY;
	}
	if (*p + 1 + alen + 2 > end)
		return FRAME_BAD_LENGTH;
	memset(ss, 0, sizeof(*ss));
	if (alen == 4) {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;

		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, buf + *p + 1, 4);
		memcpy(&s->sin_port, buf + *p + 5, 2);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;

		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, buf + *p + 1, 16);
		memcpy(&s->sin6_port, buf + *p + 17, 2);
	}
	*p += 1 + alen + 2;
	return FRAME_OK;
}

enum frame_result
frame_decode(const uint8_t *buf, size_t len, struct frame *f, size_t *used)
{
	enum frame_result r;
	size_t body, end, p = FRAME_HEAD, n;

	/* the head byte by byte, so garbage is refused at its first byte */
	for (size_t i = 0; i < 4 && i < len; i++)
		if (buf[i] != (uint8_t)FRAME_MAGIC[i])
			return FRAME_BAD_MAGIC;
	if (len > 4 && buf[4] != FRAME_VERSION)
		return FRAME_BAD_VERSION;
	if (len > 5 && buf[5] != 0)
		return FRAME_BAD_FLAGS;
	if (len < FRAME_HEAD) {
		*used = FRAME_HEAD;
		return FRAME_NEED_MORE;
	}
	body = (size_t)buf[6] << 8 | buf[7];
	if (body < FRAME_BODY_MIN || body > FRAME_BODY_MAX)
		return FRAME_BAD_LENGTH;
	end = FRAME_HEAD + body;
	if (len < end) {
		*used = end;
		return FRAME_NEED_MORE;
	}

	/* the body: every field reserved against end before it is read */
	f->fr_conn_id = 0;
	for (int i = 0; i < 8; i++)	/* FRAME_BODY_MIN covers it */
		f->fr_conn_id = f->fr_conn_id << 8 | buf[p++];
	if ((r = frame_get_endpoint(buf, &p, end, &f->fr_client)) != FRAME_OK ||
	    (r = frame_get_endpoint(buf, &p, end, &f->fr_local)) != FRAME_OK)
		return r;
	if (p + 1 > end)
		return FRAME_BAD_LENGTH;
	n = buf[p++];
	if (n == 0 || n > FRAME_SNI_MAX)
		return FRAME_BAD_SNI;
	if (p + n > end)
		return FRAME_BAD_LENGTH;
	if (!frame_sni_valid((const char *)buf + p, n))
		return FRAME_BAD_SNI;
	memcpy(f->fr_sni, buf + p, n);
	f->fr_sni[n] = '\0';
	p += n;
	if (p != end)
		return FRAME_TRAILING;
	*used = end;
	return FRAME_OK;
}

/* ---- incremental reader --------------------------------------------------- */

void
frame_reader_init(struct frame_reader *r)
{
	r->fr_have = 0;
	r->fr_want = FRAME_HEAD;
	r->fr_result = FRAME_NEED_MORE;
}

size_t
frame_reader_want(const struct frame_reader *r)
{
	if (r->fr_result != FRAME_NEED_MORE)
		return 0;
	return r->fr_want - r->fr_have;
}

enum frame_result
frame_reader_feed(struct frame_reader *r, const uint8_t *p, size_t n, size_t *taken,
    struct frame *f)
{
	size_t k = frame_reader_want(r), used = 0;

	if (k > n)
		k = n;
	*taken = k;
	if (r->fr_result != FRAME_NEED_MORE || k == 0)
		return r->fr_result;
	memcpy(r->fr_buf + r->fr_have, p, k);
	r->fr_have += k;
	r->fr_result = frame_decode(r->fr_buf, r->fr_have, f, &used);
	/* frame_decode never asks for more than FRAME_MAX, the buffer's size */
	if (r->fr_result == FRAME_NEED_MORE)
		r->fr_want = used;
	return r->fr_result;
}
