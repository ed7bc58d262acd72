/* srccap.h - max_connections_per_source: connections one source holds.
 *
 * A source is an IPv4 address or an IPv6 /64 (as in ratelimit.h).  The
 * table counts the connections each source holds right now and refuses one
 * more past the cap; an entry exists only while its source holds a
 * connection, so the table never outgrows max_connections.  A red-black
 * tree (libbsd's sys/tree.h): lookups cost O(log n) whatever addresses an
 * attacker picks, with no hash to flood.  Owned by one thread. */
#ifndef HP_SRCCAP_H
#define HP_SRCCAP_H

#include <stddef.h>
#include <sys/socket.h>

struct srccap;
struct srccap_entry;

/* cap 0: no cap (srccap_take always succeeds and counts nothing). */
struct srccap *srccap_new(long cap);
void	 srccap_free(struct srccap *sc);
/* One more connection from sa: its entry (hand it back with
 * srccap_release when the connection ends), or NULL when the source holds
 * cap connections already (or on ENOMEM, or without a cap: then there is
 * nothing to release and *refused tells the two apart). */
struct srccap_entry *srccap_take(struct srccap *sc, const struct sockaddr *sa, int *refused);
void	 srccap_release(struct srccap *sc, struct srccap_entry *e);
/* Sources holding at least one connection now. */
size_t	 srccap_sources(const struct srccap *sc);

#endif
