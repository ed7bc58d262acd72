/* datastore.h - durable announcements: the `file` datastore (SPEC 4.4)
 * and the `redis` one (several public proxies on one Redis).
 *
 * file: one JSON object per line, appended (one write and one fdatasync per
 * batch of changes) before a call returns success:
 *   {"domain": d, "operator": o, "proxy"?: p, "expires_at"?: RFC 3339}
 *   {"withdraw": d, "operator": o, "proxy"?: p}
 * At open the file is replayed into an announcement table (a torn or
 * unparsable line is skipped with a warning naming file and line), expired
 * entries are dropped, and the file is rewritten compacted (temporary file
 * in the same folder, fsync, rename, fsync of the folder).  Errors (ENOSPC,
 * EIO, ...) come back with a message; nothing here is fatal.  A change
 * that changes nothing writes no line, and the file is compacted again
 * while running when it grows past twice its live entries.
 * Used from one thread (the JSON-RPC side), apart from the flush thread of
 * datastore_commit_async(); the table it feeds is thread-safe.
 *
 * redis (public proxy only; datastore_redis.c): each domain is a hash
 * "<prefix>d:<domain>" holding its operator and, per instance that
 * announced it, the same JSON line and its expiry; it expires with its
 * latest holder.  A commit is one EVALSHA of a Lua script that checks the
 * owner of each domain and sets, deletes and PUBLISHes on "<prefix>changes"
 * atomically, so two public proxies on one Redis never both accept one
 * domain for two operators (DATASTORE_TAKEN).  A thread of the store's
 * own talks to Redis (connect and command timeout: the `timeout`
 * setting); it SUBSCRIBEs on a second connection and posts every change
 * to the owner's thread (datastore_start), which applies it to the table:
 * the table is a copy of Redis, and the loop thread reads only the table.
 * On each (re)connect the whole table is reloaded (SCAN); a Redis that
 * lost its data (its "<prefix>epoch" key changed) first gets the table
 * written back.  Redis down: the table stays as it is, commits fail at
 * once with DATASTORE_UNAVAILABLE, the thread reconnects with backoff
 * (0.1 s doubling to 5 s) and logs once per outage. */
#ifndef HP_DATASTORE_H
#define HP_DATASTORE_H

#include <stddef.h>

#include "announce.h"

#define DATASTORE_LINE_MAX	4096	/* longer lines are skipped as garbage */
#define DATASTORE_COMPACT_SLACK	64	/* lines over 2 x entries before compacting */

/* Results besides 0 and -1. */
#define DATASTORE_UNAVAILABLE	(-2)	/* commit: Redis is down or slow; nothing stored */
#define DATASTORE_TAKEN		409	/* datastore_op_result: held by another operator */

/* Settings of the redis store (public.datastore.settings). */
#define DATASTORE_REDIS_ADDRESS		"127.0.0.1:6379"
#define DATASTORE_REDIS_PREFIX		"hyper-relay:"
#define DATASTORE_REDIS_TIMEOUT		1.0	/* seconds: connect and each command */
struct datastore_redis_conf {
	const char	*rc_address;	/* host:port or [v6]:port */
	const char	*rc_prefix;	/* of every key and of the channel */
	const char	*rc_password;	/* AUTH; NULL: none */
	double		 rc_timeout;
};

struct datastore;

typedef void (*datastore_post_fn)(void *ctx, void (*fn)(void *), void *arg);
typedef void (*datastore_done_fn)(void *arg, int rc, const char *err);

/* Open (creating missing folders and the file), replay into t, compact.
 * now is the wall clock.  NULL with a reason in err.  filename NULL: memory
 * only, no file: every call below works the same and only changes t (the
 * roles call the datastore whether or not the settings name a file). */
struct datastore *datastore_open(const char *filename, struct announce_table *t,
	    double now, char *err, size_t errlen);
/* A redis store feeding t (empty until the first load).  Nothing is
 * dialed before datastore_start().  NULL with a reason in err. */
struct datastore *datastore_open_redis(const struct datastore_redis_conf *rc,
	    struct announce_table *t, char *err, size_t errlen);
/* Owner thread, once its loop runs: redis starts its thread, which posts
 * (post(ctx, fn, arg): fn(arg) must run on the owner's thread) the changes
 * it reads from Redis; file and memory only: nothing. */
void	datastore_start(struct datastore *ds, datastore_post_fn post, void *ctx);
void	datastore_close(struct datastore *ds);
/* Batches: stage changes, then commit them with one write and one
 * fdatasync; the table changes only after the commit succeeded.
 * Stage a (add or replace): 0 staged, 1 nothing to do (the table already
 * holds exactly a: no line; redis: always staged), -1 out of memory. */
int	datastore_stage_announce(struct datastore *ds, const struct announcement *a);
/* Stage the withdrawal of domain by op (proxy NULL: every proxy): 1 staged,
 * 0 nothing to withdraw (no line), -1 out of memory. */
int	datastore_stage_withdraw(struct datastore *ds, const char *domain,
	    const char *proxy, const char *op);
/* Write the staged lines, fdatasync once, then apply them to the table;
 * compacts the file when it holds more than 2 x entries + slack lines.
 * 0 (also when nothing is staged), or -1 + err: nothing was stored and
 * the batch is dropped.  redis: the batch runs in Redis, the caller waits
 * (at most the command timeout); DATASTORE_UNAVAILABLE + err ("datastore
 * unavailable: why") when Redis is down or did not answer in time. */
int	datastore_commit(struct datastore *ds, double now, char *err, size_t errlen);
/* The same without blocking: the write and the fdatasync run on a thread
 * of the datastore's own (started at the first call), then post(ctx, fn,
 * arg) must run fn(arg) on the caller's thread, which applies the batch to
 * the table and calls done(arg, 0, -1 or DATASTORE_UNAVAILABLE, err).
 * Until then the datastore is
 * busy: staging, commits, filters and compactions fail (-1).  Returns 1
 * started, 0 nothing staged (done is not called), -1 busy or no thread. */
int	datastore_commit_async(struct datastore *ds, datastore_post_fn post, void *ctx,
	    datastore_done_fn done, void *arg);
/* Ops staged so far in this batch: the index the next staged op gets. */
size_t	datastore_staged(const struct datastore *ds);
/* After a commit, until the next staging: 0, or DATASTORE_TAKEN when
 * Redis refused op i of the batch (another operator holds the domain). */
int	datastore_op_result(const struct datastore *ds, size_t i);
/* 1 while an asynchronous commit is in flight. */
int	datastore_busy(const struct datastore *ds);
/* Entries the last commit's withdrawals removed. */
int	datastore_removed(const struct datastore *ds);
/* Drop the staged changes (not those of a commit in flight). */
void	datastore_abort(struct datastore *ds);
/* Rewrite the file with the table's unexpired entries (temporary file,
 * fsync, rename, fsync of the folder) and append to the new one.  0 or
 * -1 + err (the old file stays in use). */
int	datastore_compact(struct datastore *ds, double now, char *err, size_t errlen);
/* Withdraw durably (one batch) every entry of op (NULL: everyone) for which keep(arg, a) is 0,
 * as announce_filter() does.  Returns how many, or -1 + err (then none). */
int	datastore_filter(struct datastore *ds, const char *op, announce_keep_fn keep,
	    void *arg, double now, char *err, size_t errlen);
/* Lines in the file (after open: the entries kept). */
size_t	datastore_lines(const struct datastore *ds);
/* Store a durably, then add or replace it in the table (no line when the
 * table already holds exactly a).  0 or -1 + err. */
int	datastore_announce(struct datastore *ds, const struct announcement *a,
	    char *err, size_t errlen);
/* Store the withdrawal of domain by op (proxy NULL: every proxy) durably,
 * then remove it from the table.  Returns how many entries were removed
 * (0 is not an error), or -1 + err. */
int	datastore_withdraw(struct datastore *ds, const char *domain, const char *proxy,
	    const char *op, char *err, size_t errlen);

/* Public proxy instances on one Redis (issue #12).  Each registers itself
 * as "<prefix>i:<id>" = {"id","data_endpoint"}, refreshed every interval
 * seconds with a lifetime of lifetime seconds (deleted at a clean stop),
 * and reads every instance's key at each refresh. */
#define DATASTORE_INSTANCE_ID_MAX	64
struct datastore_instance {
	char	di_id[DATASTORE_INSTANCE_ID_MAX + 1];
	char	di_endpoint[256];
};
/* Before datastore_start().  0 (file or memory only: nothing to do), or -1. */
int	datastore_instance_register(struct datastore *ds, const char *id,
	    const char *endpoint, double interval, double lifetime);
/* The instances seen at the last heartbeat (this one included) in a
 * malloc'ed array (*out, NULL when none) the caller frees: the count, or
 * -1 when the store shares none (file, memory only, Redis not reached yet). */
int	datastore_instances(struct datastore *ds, struct datastore_instance **out);

/* Lines one public instance shares with the others (issue #12: its minting
 * keys).  redis: SET "<prefix>k:<name>" line PXAT expires_at and PUBLISH it
 * on the channel, from the Redis thread; every instance (this one too)
 * gets each such line, and at each (re)connect every one still stored,
 * through fn on the owner's thread.  A line must start with {"share".
 * datastore_on_share: before datastore_start (nothing for a file store).
 * datastore_share: 0 queued, 1 nothing shared (not redis), -1 no memory. */
typedef void (*datastore_share_fn)(void *arg, const char *line);
void	datastore_on_share(struct datastore *ds, datastore_share_fn fn, void *arg);
int	datastore_share(struct datastore *ds, const char *name, const char *line,
	    double expires_at);

/* Replay a file's content (buf, len) into t; name labels the warnings.
 * Returns the number of lines skipped.  Exposed for the fuzzer. */
int	datastore_replay(const char *name, const char *buf, size_t len,
	    struct announce_table *t, double now);

#endif
