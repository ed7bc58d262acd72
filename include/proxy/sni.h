/* sni.h - resumable ClientHello reader: finds the server_name of a TLS
 * ClientHello in the bytes peeked so far (SPEC 4.1).
 *
 * sni_reader_parse() is called again with the whole (longer) prefix each
 * time more bytes have arrived; it keeps its position and reads only the
 * new bytes, so a hello costs O(its length) however it arrives.
 * sni_parse() is the one-shot form over a buffer.  Both handle a hello
 * split across TCP segments and across several handshake records, never
 * read past len, and never read more than max_bytes. */
#ifndef HP_SNI_H
#define HP_SNI_H

#include <stddef.h>
#include <stdint.h>

enum sni_result {
	SNI_OK        =  0,  /* name holds the lower-cased, validated host name */
	SNI_NEED_MORE = -1,  /* incomplete: *need is the total byte count to wait for */
	SNI_NO_SNI    = -2,  /* a valid ClientHello without a host_name */
	SNI_MALFORMED = -3,  /* not TLS, not a ClientHello, or inconsistent lengths */
	SNI_TOO_LARGE = -4,  /* the hello does not fit in max_bytes */
	SNI_BAD_NAME  = -5,  /* host_name present but not a valid DNS name */
};

#define SNI_NAME_MAX 254   /* 253 bytes + NUL */

/* The reader's state; its members are private to sni.c (states listed
 * there). */
enum sni_state {
	ST_HS_HEADER,
	ST_VERSION_RANDOM,
	ST_SID_LEN,
	ST_SID,
	ST_CS_LEN,
	ST_CS,
	ST_CM_LEN,
	ST_CM,
	ST_EXT_LEN,
	ST_EXT_HEADER,
	ST_EXT_BODY,
	ST_SN_LIST_LEN,
	ST_SN_HEADER,
	ST_SN_NAME,
	ST_DONE
};

struct sni_parser {
	enum sni_state	 sp_state;
	size_t		 sp_want;	/* bytes the current state still wants */
	uint32_t	 sp_acc;	/* big-endian accumulator of a length field */
	size_t		 sp_max;	/* max_bytes */
	size_t		 sp_hs_left;	/* hello body bytes not yet reserved */
	size_t		 sp_ext_left;	/* extensions block bytes not yet reserved */
	size_t		 sp_sn_ext;	/* server_name extension bytes not yet reserved */
	size_t		 sp_sn_left;	/* server_name_list bytes not yet reserved */
	int		 sp_sn_seen;	/* a server_name extension was seen */
	int		 sp_copy;	/* SN_NAME: this is the first host_name */
	int		 sp_have_name;
	size_t		 sp_name_len;
	char		 sp_name[SNI_NAME_MAX + 2];	/* room for a trailing dot */
};


struct sni_reader {
	size_t			 sr_max;	/* max_bytes */
	size_t			 sr_pos;	/* stream bytes consumed */
	size_t			 sr_rec_end;	/* end of the current record */
	struct sni_parser	 sr_p;
};

/* buf/len: the stream's first bytes.  On SNI_NEED_MORE, *need (if not NULL)
 * is the total length to wait for before trying again (<= max_bytes). */
enum sni_result sni_parse(const unsigned char *buf, size_t len, size_t max_bytes,
	char name[SNI_NAME_MAX], size_t *need);
/* Start reading a new stream, with a budget of max_bytes. */
void sni_reader_init(struct sni_reader *r, size_t max_bytes);
/* buf/len: the stream's first bytes, the same prefix as in the previous
 * call plus what arrived since (len never shrinks).  Results as for
 * sni_parse(); *need on SNI_NEED_MORE is the end of the current record, or
 * of the next record header (<= max_bytes): what to wait for before
 * calling again.  After any other result the reader is spent. */
enum sni_result sni_reader_parse(struct sni_reader *r, const unsigned char *buf, size_t len,
	char name[SNI_NAME_MAX], size_t *need);
/* The same with a window of the prefix: win holds stream bytes [off, len),
 * off <= sni_reader_pos(r) (else SNI_MALFORMED).  So a caller may peek
 * only from sni_reader_pos() on. */
enum sni_result sni_reader_feed(struct sni_reader *r, const unsigned char *win, size_t off,
	size_t len, char name[SNI_NAME_MAX], size_t *need);
/* Stream bytes consumed so far: the bytes before it are never read again. */
size_t sni_reader_pos(const struct sni_reader *r);
/* The result as the end= of the public proxy's summary line ("no sni", ...). */
const char *sni_result_str(enum sni_result r);

#endif
