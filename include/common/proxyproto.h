/* proxyproto.h - the PROXY protocol, versions 1 and 2 (haproxy's
 * proxy-protocol.txt): the header a relay writes first on a connection to
 * tell the server who the client really is.
 *
 * Pure functions over byte buffers, no I/O: the private proxy writes a
 * header with proxyproto_write(), the example internal server reads one
 * with proxyproto_parse().  The parser is resumable like sni_parse(): call
 * it again with the whole prefix once more bytes have arrived; it never
 * reads past len and never asks for more than max bytes.  The receiver is
 * configured for one version and never guesses (the spec's rule): any
 * other bytes are an error. */
#ifndef HP_PROXYPROTO_H
#define HP_PROXYPROTO_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

enum proxyproto_version {
	PROXYPROTO_OFF = 0,
	PROXYPROTO_V1  = 1,	/* the text line "PROXY TCP4 ...\r\n" */
	PROXYPROTO_V2  = 2,	/* the binary header, with TLVs */
};

enum proxyproto_result {
	PROXYPROTO_OK             =  0,	/* *used bytes form the header */
	PROXYPROTO_NEED_MORE      = -1,	/* incomplete: *used is the total to wait for */
	PROXYPROTO_BAD_SIGNATURE  = -2,	/* not "PROXY " (v1) or the v2 signature */
	PROXYPROTO_BAD_VERSION    = -3,	/* v2: version nibble is not 2 */
	PROXYPROTO_BAD_COMMAND    = -4,	/* v2: neither LOCAL nor PROXY */
	PROXYPROTO_BAD_FAMILY     = -5,	/* not TCP over IPv4/IPv6 (or UNKNOWN/UNSPEC) */
	PROXYPROTO_TOO_LONG       = -6,	/* v1: no CRLF in 107 bytes; v2: over max */
	PROXYPROTO_MALFORMED      = -7,	/* addresses, ports, lengths or TLVs */
};

#define PROXYPROTO_V1_MAX	107	/* the longest v1 line, CRLF included */
#define PROXYPROTO_V2_FIXED	16	/* signature, ver/cmd, fam, length */
#define PROXYPROTO_AUTHORITY_MAX 255	/* PP2_TYPE_AUTHORITY value, bytes */
/* The longest header proxyproto_write() produces: v2, TCP6, AUTHORITY. */
#define PROXYPROTO_WRITE_MAX	(PROXYPROTO_V2_FIXED + 36 + 3 + PROXYPROTO_AUTHORITY_MAX)

#define PROXYPROTO_PP2_TYPE_AUTHORITY	0x02

struct proxyproto_info {
	int			 pi_local;	/* v2 LOCAL / v1 UNKNOWN: no addresses */
	struct sockaddr_storage	 pi_src;	/* the client */
	struct sockaddr_storage	 pi_dst;	/* the address the client connected to */
	char			 pi_authority[PROXYPROTO_AUTHORITY_MAX + 1];	/* "" none */
};

/* Write the header for pi into buf (len bytes): v1 for a local pi is
 * "PROXY UNKNOWN\r\n", v2 the LOCAL command without addresses or TLVs;
 * pi_authority goes in a PP2_TYPE_AUTHORITY TLV (v2 only, when not "").
 * pi_src and pi_dst must both be AF_INET or both AF_INET6.  Returns the
 * header's length, or -1 (unsupported family, authority too long, buf too
 * small). */
ssize_t	proxyproto_write(enum proxyproto_version v, const struct proxyproto_info *pi,
	    uint8_t *buf, size_t len);

/* Parse a header of version v (V1 or V2) at the start of buf (len bytes),
 * accepting at most max bytes (at least 16; v1 is capped at 107 anyway).  On OK, pi
 * holds the addresses and *used the header's length; on NEED_MORE, *used
 * is the smallest total length that can make progress (> len, <= max). */
enum proxyproto_result proxyproto_parse(enum proxyproto_version v, const uint8_t *buf,
	    size_t len, size_t max, struct proxyproto_info *pi, size_t *used);
const char *proxyproto_result_str(enum proxyproto_result r);

/* "v1", "v2", "off" (and back); -1 for anything else. */
int	proxyproto_version_parse(const char *s);
const char *proxyproto_version_str(enum proxyproto_version v);

#endif
