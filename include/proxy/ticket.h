/* ticket.h - the public proxy's ticket book: who may open a pooled data
 * connection (issue #16; README "Pooled data connections: the building
 * blocks").  The public proxy issues tickets and hands out keys
 * (public_tickets.c) and redeems them (public_pool.c); the private proxy's
 * keepers mint with the keys (private_pool.c).
 *
 * A pooled data connection writes 32 bytes first, where a token goes
 * today; the public proxy tells a token, an issued ticket and a minted
 * ticket apart by lookup (tokens in the token table, then this book).
 *  - Issued ticket: 32 random bytes (arc4random_buf) handed to an operator
 *    in a batch over the authenticated Hyper path; single use, bound to
 *    that operator, gone after tl_lifetime when unused.
 *  - Minted ticket: the book hands an operator a short-lived key (key id +
 *    32-byte secret); the private proxy mints tickets itself with
 *    ticket_mint(), so that refill goes on while the Hyper is away:
 *        key id 8 | expiry 4 | nonce 4 | mac 16
 *    mac = HMAC-SHA256(secret, "HPT1" | operator length 1 | operator |
 *    key id | expiry | nonce), first 16 bytes; integers big-endian, expiry
 *    in seconds since the epoch.  The book checks the MAC, the ticket's and
 *    the key's expiry, and keeps each redeemed (key id, nonce) until the
 *    ticket's expiry to refuse a replay.
 * Per operator, tickets outstanding + pooled connections are capped at
 * tl_cap: issuing and redeeming a minted ticket beyond it is refused with
 * TICKET_CAP.  ticket_pool_leave() gives a pooled slot back.
 *
 * Times are wall-clock seconds since the epoch, passed in by the caller
 * (the expiry travels to another host).  Every ticket_book call takes the
 * book's mutex, so the side thread (issue, key) and the io_uring loop
 * (redeem, leave, sweep) can share one book.  ticket_mint() works on the
 * caller's key only and is not locked. */
#ifndef HP_TICKET_H
#define HP_TICKET_H

#include <stddef.h>
#include <stdint.h>

struct json_object;

#define TICKET_LEN		32	/* == TOKEN_LEN */
#define TICKET_KEY_ID_LEN	8
#define TICKET_SECRET_LEN	32
#define TICKET_MAC_LEN		16
#define TICKET_OP_MAX		255	/* operator name, bytes */
#define TICKET_BATCH_MAX	256	/* tickets per ticket_issue() */
#define TICKET_KEYS_MAX		4	/* live keys per operator; a new one drops the oldest */
#define TICKET_SKEW		5	/* seconds a minted expiry may exceed now + tl_lifetime */
#define TICKET_INSTANCE_MAX	64	/* a public instance's id, bytes (issue #12) */

enum ticket_why {
	TICKET_OK = 0,
	TICKET_UNKNOWN,		/* neither an issued ticket nor a known key id */
	TICKET_USED,		/* an issued ticket presented again */
	TICKET_EXPIRED,		/* the ticket, or the key it was minted with, has expired */
	TICKET_BAD_MAC,		/* a known key id with a MAC that does not verify */
	TICKET_REPLAY,		/* a minted ticket redeemed before */
	TICKET_BAD_EXPIRY,	/* minted: expiry past its key's or too far ahead */
	TICKET_CAP,		/* the operator's tickets + pooled connections are at tl_cap */
	TICKET_INVALID,		/* bad operator name or count */
	TICKET_NOMEM,
};

/* Why a pooled connection leaves the pool (counted in ticket_stats). */
enum ticket_leave {
	TICKET_LEAVE_USED,	/* bound to a client */
	TICKET_LEAVE_REPLACED,	/* idle lifetime over: closed, the private side replaces it */
	TICKET_LEAVE_DEAD,	/* found dead at use time */
	TICKET_LEAVE_CLOSED,	/* closed by the peer or at shutdown */
};

struct ticket_limits {
	size_t	 tl_cap;		/* tickets + pooled connections per operator; 0: 64 */
	double	 tl_lifetime;		/* an unused issued ticket; longest minted; 0: 60 s */
	double	 tl_key_lifetime;	/* a minting key; 0: 600 s */
};

/* A minting key as handed to an operator, and the minting state. */
struct ticket_key {
	uint8_t	 tk_id[TICKET_KEY_ID_LEN];
	uint8_t	 tk_secret[TICKET_SECRET_LEN];
	uint32_t tk_expiry;		/* seconds since the epoch */
	uint32_t tk_nonce;		/* the next nonce ticket_mint() uses */
	char	 tk_op[TICKET_OP_MAX + 1];
};

struct ticket_stats {
	size_t	 ts_idle;		/* pooled connections (redeemed, not left) */
	size_t	 ts_outstanding;	/* issued tickets not yet redeemed or expired */
	uint64_t ts_used;		/* left the pool for a client */
	uint64_t ts_replaced;		/* left at the end of their idle lifetime */
	uint64_t ts_dead;		/* found dead at use time */
	uint64_t ts_closed;		/* closed by the peer or at shutdown */
	uint64_t ts_expired;		/* issued tickets that expired unused */
	uint64_t ts_minted;		/* minted tickets redeemed */
	uint64_t ts_keys;		/* minting keys handed out */
	uint32_t ts_key_expiry;		/* the newest key's expiry (epoch seconds); 0: none */
};

struct ticket_book;

/* NULL limits: the defaults.  NULL when out of memory. */
struct ticket_book *ticket_book_new(const struct ticket_limits *limits);
void	ticket_book_free(struct ticket_book *b);

/* Issue up to count (1..TICKET_BATCH_MAX) tickets for op into out; *issued
 * is how many (fewer than count when the cap leaves less room), *expiry
 * when they expire.  TICKET_CAP when there is no room at all. */
enum ticket_why ticket_issue(struct ticket_book *b, const char *op, size_t count, double now,
	    uint8_t out[][TICKET_LEN], size_t *issued, double *expiry);

/* A new minting key for op (tk_nonce 0), valid tl_key_lifetime.  Older keys
 * stay valid until they expire; the (TICKET_KEYS_MAX + 1)th drops the
 * oldest. */
enum ticket_why ticket_key(struct ticket_book *b, const char *op, double now,
	    struct ticket_key *key);

/* Private side: mint one ticket from key, valid for lifetime seconds (never
 * past the key's expiry), bound to the public instance named instance
 * (NULL or "": unbound, "HPT1").  0, or -1 when the key has expired or its
 * nonces are used up (fetch a new key). */
int	ticket_mint(struct ticket_key *key, const char *instance, double now,
	    double lifetime, uint8_t out[TICKET_LEN]);

/* Several public instances (issue #12).  The book's own instance id: a
 * minted ticket bound to it is accepted with any key the book knows; an
 * unbound one only with a key the book made itself.  0, or -1 (too long). */
int	ticket_book_set_instance(struct ticket_book *b, const char *instance);
/* Learn another instance's key (key->tk_op its operator), so that tickets
 * minted with it and bound to this instance are accepted; a key known
 * already changes nothing.  TICKET_OK, TICKET_EXPIRED, TICKET_BAD_EXPIRY
 * (over the key lifetime ahead), TICKET_INVALID, TICKET_NOMEM. */
enum ticket_why ticket_key_add(struct ticket_book *b, const struct ticket_key *key,
	    double now);

/* Redeem the 32 bytes a data connection wrote: on TICKET_OK the connection
 * is pooled for the operator, whose name is copied to op.  Nothing changes
 * on any other answer; op then names the operator the ticket claims to be
 * of (an issued ticket's, a known key's), or is "" (TICKET_UNKNOWN). */
enum ticket_why ticket_redeem(struct ticket_book *b, const uint8_t t[TICKET_LEN], double now,
	    char op[TICKET_OP_MAX + 1]);

/* One of op's pooled connections left the pool.  0, or -1 when op has none. */
int	ticket_pool_leave(struct ticket_book *b, const char *op, enum ticket_leave why);

/* Forget expired tickets, keys and replay records.  Call now and then (once a
 * second); redeem checks expiry itself, so this only bounds memory. */
void	ticket_sweep(struct ticket_book *b, double now);

/* op's counters; -1 for an operator the book has never seen. */
int	ticket_stats(struct ticket_book *b, const char *op, struct ticket_stats *st);

/* Call fn once per operator the book knows, with its counters, under the
 * book's lock (fn must not call the book).  Returns how many. */
int	ticket_foreach(struct ticket_book *b,
	    void (*fn)(void *arg, const char *op, const struct ticket_stats *st), void *arg);

/* The key as the member "key" of requestConnectionTickets' answer (README
 * "Pooled data connections"): {"id": base64 of 8 bytes, "secret": base64 of
 * 32 bytes, "expiry": epoch seconds (integer, the one in every ticket),
 * "expires_at": RFC 3339, "expires_in": seconds from now, "ticket_lifetime":
 * the longest a minted ticket may live}.  NULL when out of memory. */
struct json_object *ticket_key_json(const struct ticket_key *key, double now,
	    double ticket_lifetime);

/* Private side: that member into key (tk_op = op, tk_nonce 0), the
 * ticket_lifetime into *ticket_lifetime, and the public proxy's wall clock
 * minus ours (from expiry and expires_in, received at our now) into *skew.
 * expires_at is not read.  0, or -1 with the reason in err. */
int	ticket_key_parse(struct json_object *o, const char *op, double now,
	    struct ticket_key *key, double *ticket_lifetime, double *skew,
	    char *err, size_t errlen);

/* Short English for log lines and JSON-RPC errors. */
const char *ticket_why_str(enum ticket_why w);

#endif
