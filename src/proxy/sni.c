/* sni.c - resumable ClientHello reader (SPEC 4.1).
 *
 * The input is the stream prefix: TLS records of type 22 (handshake) whose
 * payloads concatenate into the handshake message.  An outer loop walks the
 * complete record headers; an inner state machine consumes the handshake
 * bytes one field at a time, so a field may straddle records.  Every length
 * is reserved from its enclosing length before a field is read, so a
 * mismatch is caught where it happens, and no byte at or past len (or
 * max_bytes) is ever read.
 *
 * Parser states (each wants `want` bytes, then sni_next() moves on):
 *   HS_HEADER       msg_type(1) length(3) of the handshake message
 *   VERSION_RANDOM  legacy_version(2) random(32), skipped
 *   SID_LEN, SID    legacy_session_id <0..32>
 *   CS_LEN, CS      cipher_suites <2..2^16-2>, even
 *   CM_LEN, CM      legacy_compression_methods <1..2^8-1>
 *   EXT_LEN         extensions <0..2^16-1>; absent when the hello ends here
 *   EXT_HEADER      extension_type(2) extension_data length(2)
 *   EXT_BODY        an extension we do not read, skipped
 *   SN_LIST_LEN     server_name_list length(2)
 *   SN_HEADER       name_type(1) length(2)
 *   SN_NAME         host_name bytes (kept for the first host_name)
 *   DONE            the whole ClientHello was read
 */
#include <stdint.h>
#include <string.h>

#include "sni.h"
#include "util.h"

#define TLS_RECORD_HEADER	5
#define TLS_RECORD_MAX		16384	/* RFC 8446 5.1: plaintext fragment limit */
#define TLS_HANDSHAKE		22
#define TLS_CLIENT_HELLO	1
#define TLS_EXT_SERVER_NAME	0
#define TLS_SN_HOST_NAME	0
#define HELLO_MIN_BODY		(2 + 32 + 1 + 2 + 2 + 1 + 1)

/* Enter state st wanting n bytes, reserved from the hello body. */
static int
sni_body(struct sni_parser *p, enum sni_state st, size_t n)
{
	if (n > p->sp_hs_left)
		return SNI_MALFORMED;
	p->sp_hs_left -= n;
	p->sp_state = st;
	p->sp_want = n;
	p->sp_acc = 0;
	return SNI_OK;
}

/* Enter state st wanting n bytes the caller has already reserved from the
 * extensions block or the server_name list. */
static int
sni_enter(struct sni_parser *p, enum sni_state st, size_t n)
{
	p->sp_state = st;
	p->sp_want = n;
	p->sp_acc = 0;
	return SNI_OK;
}

/* After an extension (or the extensions length): next one, or done. */
static int
sni_next_ext(struct sni_parser *p)
{
	if (p->sp_ext_left == 0) {
		p->sp_state = ST_DONE;
		return SNI_OK;
	}
	if (p->sp_ext_left < 4)
		return SNI_MALFORMED;
	p->sp_ext_left -= 4;
	return sni_enter(p, ST_EXT_HEADER, 4);
}

/* After a server_name entry: next entry, or the next extension. */
static int
sni_next_sn(struct sni_parser *p)
{
	if (p->sp_sn_left == 0)
		return sni_next_ext(p);
	if (p->sp_sn_left < 3)
		return SNI_MALFORMED;
	p->sp_sn_left -= 3;
	return sni_enter(p, ST_SN_HEADER, 3);
}

/* The current state got all its bytes: check them and pick the next one. */
static int
sni_next(struct sni_parser *p)
{
	uint32_t v = p->sp_acc;
	size_t type;

	switch (p->sp_state) {
	case ST_HS_HEADER:
		if ((v >> 24) != TLS_CLIENT_HELLO)
			return SNI_MALFORMED;
		v &= 0xffffff;
		if (v < HELLO_MIN_BODY)
			return SNI_MALFORMED;
		/* one record header plus the message already exceed the budget */
		if (TLS_RECORD_HEADER + 4 + (size_t)v > p->sp_max)
			return SNI_TOO_LARGE;
		p->sp_hs_left = v;
		return sni_body(p, ST_VERSION_RANDOM, 2 + 32);
	case ST_VERSION_RANDOM:
		return sni_body(p, ST_SID_LEN, 1);
	case ST_SID_LEN:
		if (v > 32)
			return SNI_MALFORMED;
		return sni_body(p, ST_SID, v);
	case ST_SID:
		return sni_body(p, ST_CS_LEN, 2);
	case ST_CS_LEN:
		if (v < 2 || (v & 1))
			return SNI_MALFORMED;
		return sni_body(p, ST_CS, v);
	case ST_CS:
		return sni_body(p, ST_CM_LEN, 1);
	case ST_CM_LEN:
		if (v < 1)
			return SNI_MALFORMED;
		return sni_body(p, ST_CM, v);
	case ST_CM:
		/* a hello without extensions ends right here */
		if (p->sp_hs_left == 0) {
			p->sp_state = ST_DONE;
			return SNI_OK;
		}
		return sni_body(p, ST_EXT_LEN, 2);
	case ST_EXT_LEN:
		if (v != p->sp_hs_left)
			return SNI_MALFORMED;
		p->sp_hs_left = 0;
		p->sp_ext_left = v;
		return sni_next_ext(p);
	case ST_EXT_HEADER:
		type = v >> 16;
		v &= 0xffff;
		if (v > p->sp_ext_left)
			return SNI_MALFORMED;
		p->sp_ext_left -= v;
		if (type != TLS_EXT_SERVER_NAME)
			return sni_enter(p, ST_EXT_BODY, v);
		/* RFC 8446 4.2: at most one extension of a given type */
		if (p->sp_sn_seen || v < 2)
			return SNI_MALFORMED;
		p->sp_sn_seen = 1;
		p->sp_sn_ext = v - 2;
		return sni_enter(p, ST_SN_LIST_LEN, 2);
	case ST_EXT_BODY:
		return sni_next_ext(p);
	case ST_SN_LIST_LEN:
		if (v != p->sp_sn_ext || v == 0)
			return SNI_MALFORMED;
		p->sp_sn_left = v;
		return sni_next_sn(p);
	case ST_SN_HEADER:
		type = v >> 16;
		v &= 0xffff;
		if (v == 0 || v > p->sp_sn_left)
			return SNI_MALFORMED;
		p->sp_sn_left -= v;
		p->sp_copy = (type == TLS_SN_HOST_NAME && !p->sp_have_name);
		if (p->sp_copy) {
			p->sp_have_name = 1;
			p->sp_name_len = v;
		}
		return sni_enter(p, ST_SN_NAME, v);
	case ST_SN_NAME:
		return sni_next_sn(p);
	case ST_DONE:
		break;
	}
	return SNI_MALFORMED;
}

/* Feed up to n bytes of handshake data to the current state. */
static size_t
sni_feed(struct sni_parser *p, const unsigned char *b, size_t n)
{
	size_t take = n < p->sp_want ? n : p->sp_want;
	size_t i;

	switch (p->sp_state) {
	case ST_HS_HEADER:
	case ST_SID_LEN:
	case ST_CS_LEN:
	case ST_CM_LEN:
	case ST_EXT_LEN:
	case ST_EXT_HEADER:
	case ST_SN_LIST_LEN:
	case ST_SN_HEADER:
		for (i = 0; i < take; i++)
			p->sp_acc = (p->sp_acc << 8) | b[i];
		break;
	case ST_SN_NAME:
		if (p->sp_copy) {
			/* offset of b in the name; bytes past our buffer are
			 * dropped, the length alone makes the name bad */
			size_t off = p->sp_name_len - p->sp_want;
			for (i = 0; i < take && off + i < sizeof(p->sp_name) - 1; i++)
				p->sp_name[off + i] = (char)b[i];
		}
		break;
	default:
		break;
	}
	p->sp_want -= take;
	return take;
}

/* The whole hello was read: judge the host name. */
static enum sni_result
sni_finish(struct sni_parser *p, char name[SNI_NAME_MAX])
{
	size_t n = p->sp_name_len;

	if (!p->sp_have_name)
		return SNI_NO_SNI;
	/* 253 bytes plus one trailing dot at most; a NUL would hide the rest */
	if (n > SNI_NAME_MAX || memchr(p->sp_name, '\0', n) != NULL)
		return SNI_BAD_NAME;
	p->sp_name[n] = '\0';
	/* dns_name_normalize() drops only one dot: "a.com.." stays "a.com." */
	if (dns_name_normalize(p->sp_name) == -1 ||
	    p->sp_name[strlen(p->sp_name) - 1] == '.')
		return SNI_BAD_NAME;
	memcpy(name, p->sp_name, strlen(p->sp_name) + 1);
	return SNI_OK;
}

void
sni_reader_init(struct sni_reader *r, size_t max_bytes)
{
	memset(r, 0, sizeof(*r));
	r->sr_max = max_bytes;
	r->sr_p.sp_max = max_bytes;
	r->sr_p.sp_state = ST_HS_HEADER;
	r->sr_p.sp_want = 4;
}

/*
 * The outer loop over records, resumed where the last call stopped: bytes
 * before sr_pos were consumed already, and the state machine holds all it
 * needs of them.  The next stop (*need) is the end of the current record,
 * or the end of the next record header: a hello sent a few bytes at a time
 * is parsed once, with one wake-up per record header and record.
 */
enum sni_result
sni_reader_feed(struct sni_reader *r, const unsigned char *buf, size_t off, size_t len,
    char name[SNI_NAME_MAX], size_t *need)
{
	struct sni_parser *p = &r->sr_p;
	size_t avail, rlen, want, soon;
	int rc;

	name[0] = '\0';
	/* the window must start at or before the first byte not yet read */
	if (off > r->sr_pos || len < r->sr_pos)
		return SNI_MALFORMED;
	/* bytes beyond the budget do not exist for us */
	if (len > r->sr_max)
		len = r->sr_max;
	/* from here on, stream byte i is buf[i - off] */

	for (;;) {
		while (p->sp_want == 0 && p->sp_state != ST_DONE)
			if ((rc = sni_next(p)) != SNI_OK)
				return (enum sni_result)rc;
		if (p->sp_state == ST_DONE)
			return sni_finish(p, name);

		if (r->sr_pos == r->sr_rec_end) {
			size_t pos = r->sr_pos;

			/* reject what is not a handshake record as soon as the
			 * first bytes show it (an alert, "GET ", ...) */
			if (pos < len && buf[pos - off] != TLS_HANDSHAKE)
				return SNI_MALFORMED;
			if (pos + 1 < len && buf[pos + 1 - off] != 3)
				return SNI_MALFORMED;
			if (pos + 2 < len && (buf[pos + 2 - off] < 1 || buf[pos + 2 - off] > 4))
				return SNI_MALFORMED;
			if (len - pos < TLS_RECORD_HEADER) {
				want = soon = pos + TLS_RECORD_HEADER;
				goto more;
			}
			rlen = (size_t)buf[pos + 3 - off] << 8 | buf[pos + 4 - off];
			if (rlen == 0 || rlen > TLS_RECORD_MAX)
				return SNI_MALFORMED;
			r->sr_pos = pos + TLS_RECORD_HEADER;
			r->sr_rec_end = r->sr_pos + rlen;
			continue;
		}

		avail = (r->sr_rec_end < len ? r->sr_rec_end : len) - r->sr_pos;
		if (avail == 0) {
			/* the end of the current field, or of this record: the
			 * field decides TOO_LARGE, the record when to wake up */
			soon = r->sr_pos + p->sp_want;
			if (soon > r->sr_rec_end)
				soon = r->sr_rec_end;
			want = r->sr_rec_end;
			goto more;
		}
		r->sr_pos += sni_feed(p, buf + (r->sr_pos - off), avail);
	}

more:
	if (soon > r->sr_max)
		return SNI_TOO_LARGE;
	if (need != NULL)
		*need = want < r->sr_max ? want : r->sr_max;
	return SNI_NEED_MORE;
}

enum sni_result
sni_reader_parse(struct sni_reader *r, const unsigned char *buf, size_t len,
    char name[SNI_NAME_MAX], size_t *need)
{
	return sni_reader_feed(r, buf, 0, len, name, need);
}

size_t
sni_reader_pos(const struct sni_reader *r)
{
	return r->sr_pos;
}

enum sni_result
sni_parse(const unsigned char *buf, size_t len, size_t max_bytes,
    char name[SNI_NAME_MAX], size_t *need)
{
	struct sni_reader r;

	sni_reader_init(&r, max_bytes);
	return sni_reader_parse(&r, buf, len, name, need);
}

const char *
sni_result_str(enum sni_result r)
{
	switch (r) {
	case SNI_OK:
		return "ok";
	case SNI_NEED_MORE:
		return "incomplete hello";
	case SNI_NO_SNI:
		return "no sni";
	case SNI_MALFORMED:
		return "malformed hello";
	case SNI_TOO_LARGE:
		return "hello too large";
	case SNI_BAD_NAME:
		return "invalid sni";
	}
	return "unknown";
}
