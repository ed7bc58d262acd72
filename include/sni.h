/* sni.h - resumable ClientHello reader: finds the server_name of a TLS
 * ClientHello in the bytes peeked so far (SPEC 4.1).
 *
 * A pure function over a byte buffer: call it again with the whole prefix
 * each time more bytes have arrived.  It handles a hello split across TCP
 * segments and across several handshake records, never reads past len, and
 * never reads more than max_bytes. */
#ifndef HP_SNI_H
#define HP_SNI_H

#include <stddef.h>

enum sni_result {
	SNI_OK        =  0,  /* name holds the lower-cased, validated host name */
	SNI_NEED_MORE = -1,  /* incomplete: *need is the total byte count to wait for */
	SNI_NO_SNI    = -2,  /* a valid ClientHello without a host_name */
	SNI_MALFORMED = -3,  /* not TLS, not a ClientHello, or inconsistent lengths */
	SNI_TOO_LARGE = -4,  /* the hello does not fit in max_bytes */
	SNI_BAD_NAME  = -5,  /* host_name present but not a valid DNS name */
};

#define SNI_NAME_MAX 254   /* 253 bytes + NUL */

/* buf/len: the stream's first bytes.  On SNI_NEED_MORE, *need (if not NULL)
 * is the smallest total length that can make progress (<= max_bytes). */
enum sni_result sni_parse(const unsigned char *buf, size_t len, size_t max_bytes,
	char name[SNI_NAME_MAX], size_t *need);
const char *sni_result_str(enum sni_result r);

#endif
