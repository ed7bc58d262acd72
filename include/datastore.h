/* datastore.h - durable announcements: the `file` datastore (SPEC 4.4).
 *
 * One JSON object per line, appended and fdatasync'ed before a call
 * returns success:
 *   {"domain": d, "operator": o, "proxy"?: p, "expires_at"?: RFC 3339}
 *   {"withdraw": d, "operator": o, "proxy"?: p}
 * At open the file is replayed into an announcement table (a torn or
 * unparsable line is skipped with a warning naming file and line), expired
 * entries are dropped, and the file is rewritten compacted (temporary file
 * in the same folder, fsync, rename, fsync of the folder).  Errors (ENOSPC,
 * EIO, ...) come back with a message; nothing here is fatal.
 * Used from one thread (the JSON-RPC side); the table it feeds is
 * thread-safe. */
#ifndef HP_DATASTORE_H
#define HP_DATASTORE_H

#include <stddef.h>

#include "announce.h"

#define DATASTORE_LINE_MAX	4096	/* longer lines are skipped as garbage */

struct datastore;

/* Open (creating missing folders and the file), replay into t, compact.
 * now is the wall clock.  NULL with a reason in err. */
struct datastore *datastore_open(const char *filename, struct announce_table *t,
	    double now, char *err, size_t errlen);
void	datastore_close(struct datastore *ds);
/* Store a durably, then add or replace it in the table.  0 or -1 + err. */
int	datastore_announce(struct datastore *ds, const struct announcement *a,
	    char *err, size_t errlen);
/* Store the withdrawal of domain by op (proxy NULL: every proxy) durably,
 * then remove it from the table.  Returns how many entries were removed
 * (0 is not an error), or -1 + err. */
int	datastore_withdraw(struct datastore *ds, const char *domain, const char *proxy,
	    const char *op, char *err, size_t errlen);

/* Replay a file's content (buf, len) into t; name labels the warnings.
 * Returns the number of lines skipped.  Exposed for the fuzzer. */
int	datastore_replay(const char *name, const char *buf, size_t len,
	    struct announce_table *t, double now);

#endif
