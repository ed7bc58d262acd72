/* datastore_int.h - the datastore's state, for its two files only:
 *   datastore.c        the staging and batches, the `file` store (and
 *                      memory only), the lines both stores write
 *   datastore_redis.c  the `redis` store: its thread and the Lua script
 *
 * Threads: the owner (the public proxy's side thread, or the private
 * proxy's) stages and commits; the flush thread (file) or the Redis thread
 * (redis) runs a commit's batch while ds_inflight is set, and only then
 * reads ds_ops and writes their op_result. */
#ifndef HP_DATASTORE_INT_H
#define HP_DATASTORE_INT_H

#include <pthread.h>
#include <stddef.h>

#include "announce.h"
#include "datastore.h"

/* A change staged for the next datastore_commit(). */
struct ds_op {
	int			 op_withdraw;
	int			 op_any_proxy;	/* withdrawal from every proxy */
	int			 op_result;	/* after the commit: 0 or DATASTORE_TAKEN */
	struct announcement	 op_an;		/* domain, operator, proxy, expiry */
};

struct ds_redis;

struct datastore {
	char			*ds_path;	/* NULL: memory only, or redis */
	int			 ds_fd;		/* -1: memory only, or redis */
	struct ds_redis		*ds_redis;	/* NULL: file or memory only */
	struct announce_table	*ds_table;
	size_t			 ds_lines;	/* lines in the file */
	char			*ds_buf;	/* staged lines */
	size_t			 ds_buflen, ds_bufcap;
	struct ds_op		*ds_ops;	/* staged changes, in order */
	size_t			 ds_nops, ds_opcap;
	size_t			 ds_ndone;	/* ops of the last commit (op_result) */
	int			 ds_removed;	/* entries the last commit removed */

	/* datastore_commit_async(): the flush runs on a thread of its own */
	int			 ds_inflight;	/* staged batch handed to the thread */
	datastore_post_fn	 ds_post;	/* runs ds_async_done on the owner thread */
	void			*ds_post_ctx;
	datastore_done_fn	 ds_done;
	void			*ds_done_arg;
	pthread_t		 ds_thread;
	pthread_mutex_t		 ds_lock;
	pthread_cond_t		 ds_cond;
	int			 ds_started;	/* ds_thread runs */
	int			 ds_job;	/* under ds_lock: a flush to do */
	int			 ds_stop;	/* under ds_lock */
	int			 ds_errno;	/* result of the last flush */
};

enum ds_line {
	DS_ADD,		/* an announcement */
	DS_WITHDRAW,	/* a withdrawal; a.an_proxy "" with any_proxy means every proxy */
	DS_BAD
};

/* datastore.c */
/* Parse one line (without its newline) into a; *why says what is wrong
 * with a DS_BAD line. */
enum ds_line ds_parse_line(const char *line, size_t len, struct announcement *a,
	    int *any_proxy, const char **why);
/* One line for a (withdraw NULL) or the withdrawal of withdraw by op
 * (proxy NULL: every proxy), with its newline; malloc'ed, NULL without
 * memory. */
char	*ds_format(const struct announcement *a, const char *withdraw, const char *op,
	    const char *proxy);
/* The batch is stored: apply its ops whose op_result is 0 to the table
 * and drop it.  0 or -1 + err (out of memory). */
int	ds_apply(struct datastore *ds, double now, char *err, size_t errlen);
/* Owner thread: an asynchronous commit ended with rc (0, -1 or
 * DATASTORE_UNAVAILABLE) and err: apply or drop the batch, call done. */
void	ds_async_finish(struct datastore *ds, int rc, const char *err);

/* datastore_redis.c (owner thread) */
/* Run the staged batch in Redis; async: answer through ds_async_finish()
 * (posted), else wait for it (at most the command timeout).  1 started
 * (async), 0 done, or DATASTORE_UNAVAILABLE + err. */
int	ds_redis_commit(struct datastore *ds, int async, char *err, size_t errlen);
void	ds_redis_start(struct datastore *ds, datastore_post_fn post, void *ctx);
void	ds_redis_close(struct datastore *ds);

#endif
