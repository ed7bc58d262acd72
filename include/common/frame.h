/* frame.h - the start frame the public proxy writes on a pooled data
 * connection when it binds it to a client (issue #16; README "Pooled data
 * connections: the building blocks", where the bytes are laid out).
 *
 * Pure functions over byte buffers, no I/O.  The frame is small (at most
 * FRAME_MAX bytes) and self-delimiting: a fixed 8-byte head carries its
 * body length, so a reader takes exactly the frame from the socket and
 * leaves what follows it (the client's ClientHello) for the relay.
 * frame_decode() is the one-shot form; struct frame_reader reads one frame
 * in steps, never asking for a byte past the frame's end.  Every length is
 * checked before it is used; any deviation is a specific error. */
#ifndef HP_FRAME_H
#define HP_FRAME_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAGIC	"HPSF"
#define FRAME_VERSION	1
#define FRAME_HEAD	8	/* magic 4, version 1, flags 1, body length 2 */
#define FRAME_SNI_MAX	253
/* body: connection id 8, two endpoints (family 1, address 4/16, port 2),
 * SNI length 1 and the SNI */
#define FRAME_BODY_MIN	(8 + 2 * (1 + 4 + 2) + 1 + 1)
#define FRAME_BODY_MAX	(8 + 2 * (1 + 16 + 2) + 1 + FRAME_SNI_MAX)
#define FRAME_MAX	(FRAME_HEAD + FRAME_BODY_MAX)	/* 308 */

enum frame_result {
	FRAME_OK          =  0,	/* *used bytes form the frame */
	FRAME_NEED_MORE   = -1,	/* incomplete: *used is the total to wait for */
	FRAME_BAD_MAGIC   = -2,	/* the first 4 bytes are not "HPSF" */
	FRAME_BAD_VERSION = -3,	/* version is not FRAME_VERSION */
	FRAME_BAD_FLAGS   = -4,	/* flags are not 0 */
	FRAME_BAD_LENGTH  = -5,	/* body length out of range, or the body ends inside a field */
	FRAME_BAD_FAMILY  = -6,	/* an address family other than 4 or 6 */
	FRAME_BAD_SNI     = -7,	/* empty, over 253 bytes, or not a lower-case host name */
	FRAME_TRAILING    = -8,	/* bytes left inside the declared body after the SNI */
};

struct frame {
	uint64_t		 fr_conn_id;	/* the public proxy's connection id */
	struct sockaddr_storage	 fr_client;	/* the client's address and port */
	struct sockaddr_storage	 fr_local;	/* the address and port it connected to */
	char			 fr_sni[FRAME_SNI_MAX + 1];
};

/* Write f into buf (len bytes).  Both addresses must be AF_INET or AF_INET6
 * (each its own); fr_sni must be a valid lower-case host name.  Returns the
 * frame's length, or -1 (bad family, bad SNI, buf too small). */
ssize_t	frame_encode(const struct frame *f, uint8_t *buf, size_t len);

/* Decode the frame at the start of buf (len bytes; bytes past the frame are
 * not looked at).  On OK, f holds the frame and *used its length; on
 * NEED_MORE, *used is the smallest total length that can make progress
 * (> len, <= FRAME_MAX).  A wrong byte in the head is reported as soon as
 * it is in buf. */
enum frame_result frame_decode(const uint8_t *buf, size_t len, struct frame *f,
	    size_t *used);

/* Incremental reader: frame_reader_want() says how many bytes to read next
 * (0 once a result other than NEED_MORE was returned); frame_reader_feed()
 * takes at most that many of n and says how many in *taken, so a caller
 * that reads exactly want() bytes never takes the ClientHello after the
 * frame.  feed() returns NEED_MORE, OK (f filled) or an error; after OK or
 * an error the reader stays in that state until frame_reader_init(). */
struct frame_reader {
	uint8_t			 fr_buf[FRAME_MAX];
	size_t			 fr_have;
	size_t			 fr_want;	/* total bytes wanted so far */
	enum frame_result	 fr_result;
};

void	frame_reader_init(struct frame_reader *r);
size_t	frame_reader_want(const struct frame_reader *r);
enum frame_result frame_reader_feed(struct frame_reader *r, const uint8_t *p, size_t n,
	    size_t *taken, struct frame *f);

/* Short English for log lines: "ok", "truncated", "wrong magic", ... */
const char *frame_result_str(enum frame_result r);

#endif
