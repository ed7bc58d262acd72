/* datastore_redis.c - the `redis` datastore: announcements shared by
 * several public proxies through one Redis (datastore.h).
 *
 * Key layout (prefix: the key_prefix setting, "hyper-relay:"):
 *   <prefix>d:<domain>   a hash per domain: "=" its operator; for each
 *                        instance (private proxy) holding it, "h:<id>" its
 *                        announcement as a line of the file store
 *                        ({"domain","operator","proxy": id,"expires_at"})
 *                        and "x:<id>" its expiry in epoch ms; the hash
 *                        expires with its latest holder (PEXPIREAT)
 *   <prefix>epoch        a random id set by the first instance that finds
 *                        none: a new one means Redis lost its data
 *   <prefix>i:<id>       a public proxy instance ({"id","data_endpoint"}),
 *                        SET with PX lifetime at each heartbeat, deleted
 *                        at a clean stop
 *   <prefix>k:<name>     a line shared by one instance with the others
 *                        (datastore_share: a minting key), PXAT its expiry
 *   <prefix>changes      the channel: each change as a line (the
 *                        announcement, or {"withdraw","operator","proxy"?})
 *
 * The Redis thread (rd_main) owns two connections: rd_cmd for EVALSHA,
 * SCAN, HGETALL and PING, each bounded by the timeout setting; rd_sub,
 * SUBSCRIBEd to the channel, read when poll() says so.  It waits in
 * poll() on rd_sub and on rd_wakefd (a commit to run, or the stop).
 *
 *   DOWN ──connect, AUTH, SCRIPT LOAD, SUBSCRIBE, epoch, SCAN──> UP
 *    ^  (failure: the next try after the backoff, 0.1 s doubling to 5 s)  │
 *    └──── EOF or error on either connection, a command timed out ────────┘
 *
 * What it learns reaches the owner's thread through rd_inbox: one post
 * (rd_drain) per burst, changes in the order Redis published them, a
 * whole-table RESET after each load, and the end of an asynchronous
 * commit.  The owner applies them to the table, so only the owner's thread
 * writes it; the loop thread reads it and never waits for Redis.
 * A commit applies its own batch at once from the script's answer; the
 * same changes come again from the channel later, which changes nothing.
 */
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/random.h>

#include <bsd/string.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "announce.h"
#include "datastore.h"
#include "datastore_int.h"
#include "log.h"
#include "util.h"

#define RD_BACKOFF_MIN		0.1	/* seconds before the first reconnect */
#define RD_BACKOFF_MAX		5.0
#define RD_PING_INTERVAL	1.0	/* an idle rd_cmd is checked this often */
#define RD_SCAN_COUNT		"512"	/* keys per SCAN step */
#define RD_BATCH_MAX		256	/* announcements per write-back EVALSHA */

/*
 * One script for every batch.  KEYS[i]: the hash of op i's domain; ARGV[1]:
 * the channel; op i: ARGV[5i-3] kind ("a" announce, "w" withdraw one
 * instance's entry, "W" withdraw every instance's, "r" write back),
 * ARGV[5i-2] operator, ARGV[5i-1] expiry in epoch ms ("0": none),
 * ARGV[5i] the line, ARGV[5i+1] the instance ("" for calls without one).
 * A domain's hash holds "=" -> its operator, "h:<instance>" -> that
 * instance's line and "x:<instance>" -> its expiry; settle() drops the
 * holders whose expiry passed and lets the hash expire with the latest
 * one left (or deletes it).  Answers one integer per op: 0 done (withdraw:
 * 1 removed, 0 none), 409 another operator holds the domain.
 */
static const char rd_script[] =
	"local ch = ARGV[1]\n"
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local function settle(key)\n"
	"  local all = redis.call('HGETALL', key)\n"
	"  local n, latest, forever = 0, 0, false\n"
	"  for j = 1, #all, 2 do\n"
	"    local f = all[j]\n"
	"    if string.sub(f, 1, 2) == 'x:' then\n"
	"      local px = tonumber(all[j + 1]) or 0\n"
	"      if px ~= 0 and px <= now then\n"
	"        redis.call('HDEL', key, f, 'h:' .. string.sub(f, 3))\n"
	"      else\n"
	"        n = n + 1\n"
	"        if px == 0 then forever = true elseif px > latest then latest = px end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  if n == 0 then redis.call('DEL', key)\n"
	"  elseif forever then redis.call('PERSIST', key)\n"
	"  else redis.call('PEXPIREAT', key, latest) end\n"
	"  return n\n"
	"end\n"
	"local res = {}\n"
	"for i = 1, #KEYS do\n"
	"  local b = 5 * (i - 1) + 1\n"
	"  local kind, op, px, line, inst = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], "
	    "ARGV[b + 5]\n"
	"  local key = KEYS[i]\n"
	"  local owner = redis.call('HGET', key, '=')\n"
	"  if owner and settle(key) == 0 then owner = nil end\n"
	"  if kind == 'w' or kind == 'W' then\n"
	"    res[i] = 0\n"
	"    if owner == op then\n"
	"      if kind == 'W' then\n"
	"        redis.call('DEL', key)\n"
	"        res[i] = 1\n"
	"      elseif redis.call('HDEL', key, 'h:' .. inst, 'x:' .. inst) > 0 then\n"
	"        settle(key)\n"
	"        res[i] = 1\n"
	"      end\n"
	"      if res[i] == 1 then redis.call('PUBLISH', ch, line) end\n"
	"    end\n"
	"  elseif owner and owner ~= op then\n"
	"    res[i] = 409\n"
	"  elseif kind == 'r' and redis.call('HEXISTS', key, 'x:' .. inst) == 1 then\n"
	"    res[i] = 0\n"
	"  else\n"
	"    redis.call('HSET', key, '=', op, 'h:' .. inst, line, 'x:' .. inst, px)\n"
	"    settle(key)\n"
	"    redis.call('PUBLISH', ch, line)\n"
	"    res[i] = 0\n"
	"  end\n"
	"end\n"
	"return res\n";

/* What the Redis thread hands to the owner's thread. */
enum rd_change_kind {
	RC_PUT,		/* an announcement made (by any instance) */
	RC_DEL,		/* a withdrawal */
	RC_RESET,	/* the whole table, after a load */
	RC_DONE,	/* the asynchronous commit ended */
	RC_SHARE	/* a shared line (datastore_share), for rd_share_fn */
};

struct rd_change {
	STAILQ_ENTRY(rd_change)	 ch_entry;
	enum rd_change_kind	 ch_kind;
	int			 ch_any_proxy;	/* RC_DEL */
	struct announcement	 ch_an;		/* RC_PUT, RC_DEL */
	struct announcement	*ch_all;	/* RC_RESET, sorted by domain */
	size_t			 ch_nall;
	int			 ch_rc;		/* RC_DONE */
	char			 ch_err[256];
	char			*ch_line;	/* RC_SHARE */
};

/* A line to share, waiting for the Redis thread. */
struct rd_share {
	STAILQ_ENTRY(rd_share)	 sh_entry;
	char			*sh_key;	/* <prefix>k:<name> */
	char			*sh_line;
	long long		 sh_pxat;	/* epoch ms */
};
STAILQ_HEAD(rd_shares, rd_share);
STAILQ_HEAD(rd_changes, rd_change);

enum rd_job { RJ_NONE, RJ_ASYNC, RJ_SYNC };

struct ds_redis {
	struct datastore	*rd_ds;
	char			*rd_host;
	int			 rd_port;
	char			*rd_addr;	/* as in the settings, for the log */
	char			*rd_prefix;
	char			*rd_password;	/* NULL: no AUTH */
	double			 rd_timeout;
	char			*rd_channel;	/* <prefix>changes */
	char			*rd_epoch_key;	/* <prefix>epoch */
	char			*rd_match;	/* SCAN pattern for <prefix>d:* */
	/* issue #12: this instance's heartbeat (Redis thread only, set
	 * before the start); rd_inst_key NULL: none */
	char			*rd_inst_key;	/* <prefix>i:<id> */
	char			*rd_inst_line;	/* {"id","data_endpoint"} */
	char			*rd_inst_match;	/* SCAN pattern for <prefix>i:* */
	double			 rd_beat;	/* seconds between heartbeats */
	double			 rd_beat_life;	/* PX of the key */
	double			 rd_next_beat;	/* monotonic */
	datastore_share_fn	 rd_share_fn;	/* owner thread; set before the start */
	void			*rd_share_arg;
	char			*rd_share_match;	/* SCAN pattern for <prefix>k:* */
	datastore_post_fn	 rd_post;
	void			*rd_post_ctx;
	pthread_t		 rd_thread;
	int			 rd_started;
	int			 rd_wakefd;	/* eventfd: a job, or the stop */

	pthread_mutex_t		 rd_lock;	/* what follows, to rd_up */
	pthread_cond_t		 rd_cond;	/* a synchronous job is done */
	int			 rd_stop;
	enum rd_job		 rd_job;	/* to run (ds_ops of rd_ds) */
	int			 rd_job_done;	/* RJ_SYNC: ended, rd_job_rc set */
	int			 rd_job_rc;
	char			 rd_job_err[256];
	struct rd_changes	 rd_inbox;
	struct rd_shares	 rd_shares;	/* to SET and PUBLISH */
	struct datastore_instance *rd_insts;	/* seen at the last heartbeat */
	int			 rd_ninsts;	/* -1: none yet */
	int			 rd_posted;	/* rd_drain is posted, not yet run */
	int			 rd_up;		/* connected and loaded */
	struct rd_change	*rd_done;	/* RJ_ASYNC: its RC_DONE, made by the owner */
	char			 rd_reason[200];	/* why down */

	/* the Redis thread only */
	redisContext		*rd_cmd, *rd_sub;
	char			 rd_sha[48];
	char			 rd_epoch[40];	/* "" until the first load */
	double			 rd_backoff;
	double			 rd_next_try;	/* monotonic */
	double			 rd_down_since;	/* monotonic: this outage logged at */
	int			 rd_logged;	/* this outage is logged */
	double			 rd_last_cmd;	/* monotonic, for the PING */
};

/* --- settings ------------------------------------------------------------- */

/* "host:port" or "[v6]:port" into host and port.  0 or -1. */
static int
rd_split(const char *addr, char **host, int *port)
{
	const char *colon = strrchr(addr, ':'), *h = addr;
	size_t hl;
	char *end;
	long n;

	if (colon == NULL || colon == addr)
		return -1;
	n = strtol(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || n < 1 || n > 65535)
		return -1;
	hl = (size_t)(colon - addr);
	if (addr[0] == '[') {
		if (hl < 3 || colon[-1] != ']')
			return -1;
		h++;
		hl -= 2;
	}
	if ((*host = strndup(h, hl)) == NULL)
		return -1;
	*port = (int)n;
	return 0;
}

/* The SCAN pattern <prefix><kind>* with the prefix's glob characters
 * escaped (kind: "d:" or "i:"). */
static char *
rd_pattern(const char *prefix, const char *kind)
{
	size_t n = strlen(prefix);
	char *p = malloc(2 * n + 4), *o = p;

	if (p == NULL)
		return NULL;
	for (const char *s = prefix; *s != '\0'; s++) {
		if (strchr("*?[]\\", *s) != NULL)
			*o++ = '\\';
		*o++ = *s;
	}
	memcpy(o, kind, 2);
	memcpy(o + 2, "*", 2);
	return p;
}

static void
rd_free(struct ds_redis *rd)
{
	struct rd_change *ch;
	struct rd_share *sh;

	if (rd == NULL)
		return;
	while ((ch = STAILQ_FIRST(&rd->rd_inbox)) != NULL) {
		STAILQ_REMOVE_HEAD(&rd->rd_inbox, ch_entry);
		free(ch->ch_all);
		free(ch->ch_line);
		free(ch);
	}
	free(rd->rd_done);
	if (rd->rd_wakefd >= 0)
		close(rd->rd_wakefd);
	pthread_mutex_destroy(&rd->rd_lock);
	pthread_cond_destroy(&rd->rd_cond);
	free(rd->rd_host);
	free(rd->rd_addr);
	free(rd->rd_prefix);
	free(rd->rd_password);
	free(rd->rd_channel);
	free(rd->rd_epoch_key);
	free(rd->rd_match);
	free(rd->rd_inst_key);
	free(rd->rd_inst_line);
	free(rd->rd_inst_match);
	free(rd->rd_insts);
	free(rd->rd_share_match);
	while ((sh = STAILQ_FIRST(&rd->rd_shares)) != NULL) {
		STAILQ_REMOVE_HEAD(&rd->rd_shares, sh_entry);
		free(sh->sh_key);
		if (sh->sh_line != NULL)
			explicit_bzero(sh->sh_line, strlen(sh->sh_line));
		free(sh->sh_line);
		free(sh);
	}
	free(rd);
}

struct datastore *
datastore_open_redis(const struct datastore_redis_conf *rc, struct announce_table *t,
    char *err, size_t errlen)
{
	struct datastore *ds;
	struct ds_redis *rd;

	if ((rd = calloc(1, sizeof(*rd))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rd->rd_wakefd = -1;
	rd->rd_ninsts = -1;
	STAILQ_INIT(&rd->rd_inbox);
	STAILQ_INIT(&rd->rd_shares);
	pthread_mutex_init(&rd->rd_lock, NULL);
	pthread_cond_init(&rd->rd_cond, NULL);
	if (rd_split(rc->rc_address, &rd->rd_host, &rd->rd_port) == -1) {
		snprintf(err, errlen, "address %s: expected host:port", rc->rc_address);
		rd_free(rd);
		return NULL;
	}
	rd->rd_timeout = rc->rc_timeout;
	snprintf(rd->rd_reason, sizeof(rd->rd_reason), "not connected yet");
	if ((rd->rd_addr = strdup(rc->rc_address)) == NULL ||
	    (rd->rd_prefix = strdup(rc->rc_prefix)) == NULL ||
	    (rc->rc_password != NULL &&
	    (rd->rd_password = strdup(rc->rc_password)) == NULL) ||
	    asprintf(&rd->rd_channel, "%schanges", rc->rc_prefix) == -1 ||
	    asprintf(&rd->rd_epoch_key, "%sepoch", rc->rc_prefix) == -1 ||
	    (rd->rd_match = rd_pattern(rc->rc_prefix, "d:")) == NULL ||
	    (rd->rd_wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (ds = calloc(1, sizeof(*ds))) == NULL) {
		snprintf(err, errlen, "out of memory");
		rd_free(rd);
		return NULL;
	}
	if (pthread_mutex_init(&ds->ds_lock, NULL) != 0) {
		free(ds);
		rd_free(rd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ds->ds_fd = -1;
	ds->ds_table = t;
	ds->ds_redis = rd;
	rd->rd_ds = ds;
	log_info("datastore: redis %s, key prefix \"%s\"", rd->rd_addr, rd->rd_prefix);
	return ds;
}

/* --- the owner's thread ------------------------------------------------- */

/* By domain, then instance (an_proxy): the order of announce_list(). */
static int
rd_cmp_domain(const void *a, const void *b)
{
	const struct announcement *x = a, *y = b;
	int c = strcmp(x->an_domain, y->an_domain);

	return c != 0 ? c : strcmp(x->an_proxy, y->an_proxy);
}

/* announce_filter(): keep what the new table (sorted) holds. */
static int
rd_keep_loaded(void *arg, const struct announcement *a)
{
	struct rd_change *ch = arg;

	return bsearch(a, ch->ch_all, ch->ch_nall, sizeof(*a), rd_cmp_domain) != NULL;
}

/* Posted by the Redis thread: apply what it read, in order. */
static void
rd_drain(void *arg)
{
	struct datastore *ds = arg;
	struct ds_redis *rd = ds->ds_redis;
	struct rd_changes todo;
	struct rd_change *ch;

	STAILQ_INIT(&todo);
	pthread_mutex_lock(&rd->rd_lock);
	STAILQ_CONCAT(&todo, &rd->rd_inbox);
	rd->rd_posted = 0;
	pthread_mutex_unlock(&rd->rd_lock);
	while ((ch = STAILQ_FIRST(&todo)) != NULL) {
		STAILQ_REMOVE_HEAD(&todo, ch_entry);
		switch (ch->ch_kind) {
		case RC_PUT:
			if (announce_put(ds->ds_table, &ch->ch_an) == -1)
				log_warnx("datastore: redis: out of memory; %s not in the table",
				    ch->ch_an.an_domain);
			break;
		case RC_DEL:
			announce_remove(ds->ds_table, ch->ch_an.an_domain,
			    ch->ch_any_proxy ? NULL : ch->ch_an.an_proxy,
			    ch->ch_an.an_operator);
			break;
		case RC_RESET:
			/* what Redis lacks goes, then everything it holds is put */
			if (announce_filter(ds->ds_table, NULL, rd_keep_loaded, ch) < 0)
				log_warnx("datastore: redis: out of memory while reloading");
			for (size_t i = 0; i < ch->ch_nall; i++)
				if (announce_put(ds->ds_table, &ch->ch_all[i]) == -1)
					log_warnx("datastore: redis: out of memory; %s not in "
					    "the table", ch->ch_all[i].an_domain);
			break;
		case RC_DONE:
			ds_async_finish(ds, ch->ch_rc, ch->ch_err);
			break;
		case RC_SHARE:
			if (rd->rd_share_fn != NULL)
				rd->rd_share_fn(rd->rd_share_arg, ch->ch_line);
			explicit_bzero(ch->ch_line, strlen(ch->ch_line));
			break;
		}
		free(ch->ch_line);
		free(ch->ch_all);
		free(ch);
	}
}

static void *rd_main(void *arg);
static int rd_load_shares(struct ds_redis *, char *, size_t);

void
ds_redis_start(struct datastore *ds, datastore_post_fn post, void *ctx)
{
	struct ds_redis *rd = ds->ds_redis;

	if (rd->rd_started)
		return;
	rd->rd_post = post;
	rd->rd_post_ctx = ctx;
	if (pthread_create(&rd->rd_thread, NULL, rd_main, rd) != 0) {
		log_warnx("datastore: redis: cannot start its thread; announcements are "
		    "refused");
		return;
	}
	rd->rd_started = 1;
}

static void
rd_wake(struct ds_redis *rd)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is already set, the thread wakes anyway */
	if (write(rd->rd_wakefd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("datastore: redis: wake");
}

int
ds_redis_commit(struct datastore *ds, int async, char *err, size_t errlen)
{
	struct ds_redis *rd = ds->ds_redis;
	int rc;

	pthread_mutex_lock(&rd->rd_lock);
	if (!rd->rd_started || !rd->rd_up) {
		/* down: no waiting, the caller is told why at once */
		snprintf(err, errlen, "datastore unavailable: %s", rd->rd_reason);
		pthread_mutex_unlock(&rd->rd_lock);
		return DATASTORE_UNAVAILABLE;
	}
	/* made here, so that the thread can always answer */
	if (async && (rd->rd_done = calloc(1, sizeof(*rd->rd_done))) == NULL) {
		snprintf(err, errlen, "datastore unavailable: out of memory");
		pthread_mutex_unlock(&rd->rd_lock);
		return DATASTORE_UNAVAILABLE;
	}
	for (size_t i = 0; i < ds->ds_nops; i++)
		ds->ds_ops[i].op_result = 0;
	rd->rd_job = async ? RJ_ASYNC : RJ_SYNC;
	rd->rd_job_done = 0;
	pthread_mutex_unlock(&rd->rd_lock);
	rd_wake(rd);
	if (async)
		return 1;
	/* bounded: the thread's every command has the timeout */
	pthread_mutex_lock(&rd->rd_lock);
	while (!rd->rd_job_done)
		pthread_cond_wait(&rd->rd_cond, &rd->rd_lock);
	rc = rd->rd_job_rc;
	snprintf(err, errlen, "%s", rd->rd_job_err);
	rd->rd_job = RJ_NONE;
	pthread_mutex_unlock(&rd->rd_lock);
	return rc;
}

void
ds_redis_close(struct datastore *ds)
{
	struct ds_redis *rd = ds->ds_redis;

	if (rd->rd_started) {
		pthread_mutex_lock(&rd->rd_lock);
		rd->rd_stop = 1;
		pthread_mutex_unlock(&rd->rd_lock);
		rd_wake(rd);
		pthread_join(rd->rd_thread, NULL);
	}
	rd_free(rd);
	ds->ds_redis = NULL;
}

void
datastore_on_share(struct datastore *ds, datastore_share_fn fn, void *arg)
{
	struct ds_redis *rd = ds->ds_redis;

	if (rd == NULL || rd->rd_started)
		return;
	rd->rd_share_fn = fn;
	rd->rd_share_arg = arg;
	if (rd->rd_share_match == NULL)
		rd->rd_share_match = rd_pattern(rd->rd_prefix, "k:");
}

int
datastore_share(struct datastore *ds, const char *name, const char *line, double expires_at)
{
	struct ds_redis *rd = ds->ds_redis;
	struct rd_share *sh;

	if (rd == NULL || !rd->rd_started)
		return 1;
	if ((sh = calloc(1, sizeof(*sh))) == NULL ||
	    asprintf(&sh->sh_key, "%sk:%s", rd->rd_prefix, name) == -1 ||
	    (sh->sh_line = strdup(line)) == NULL) {
		if (sh != NULL) {
			free(sh->sh_key);
			free(sh);
		}
		return -1;
	}
	sh->sh_pxat = (long long)(expires_at * 1000);
	pthread_mutex_lock(&rd->rd_lock);
	STAILQ_INSERT_TAIL(&rd->rd_shares, sh, sh_entry);
	pthread_mutex_unlock(&rd->rd_lock);
	rd_wake(rd);
	return 0;
}

int
datastore_instance_register(struct datastore *ds, const char *id, const char *endpoint,
    double interval, double lifetime)
{
	struct ds_redis *rd = ds->ds_redis;
	struct json_object *o;
	int rc = -1;

	if (rd == NULL)
		return 0;	/* file or memory only: nothing shared */
	if (rd->rd_started || interval <= 0 || lifetime < interval)
		return -1;
	if ((o = json_object_new_object()) == NULL)
		return -1;
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "data_endpoint", json_object_new_string(endpoint));
	if (asprintf(&rd->rd_inst_key, "%si:%s", rd->rd_prefix, id) != -1 &&
	    (rd->rd_inst_line = strdup(json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE))) != NULL &&
	    (rd->rd_inst_match = rd_pattern(rd->rd_prefix, "i:")) != NULL)
		rc = 0;
	json_object_put(o);
	rd->rd_beat = interval;
	rd->rd_beat_life = lifetime;
	return rc;
}

int
datastore_instances(struct datastore *ds, struct datastore_instance **out)
{
	struct ds_redis *rd = ds->ds_redis;
	int n;

	*out = NULL;
	if (rd == NULL || rd->rd_inst_key == NULL)
		return -1;
	pthread_mutex_lock(&rd->rd_lock);
	n = rd->rd_ninsts;
	if (n > 0 && (*out = calloc((size_t)n, sizeof(**out))) != NULL)
		memcpy(*out, rd->rd_insts, (size_t)n * sizeof(**out));
	else if (n > 0)
		n = -1;
	pthread_mutex_unlock(&rd->rd_lock);
	return n;
}

/* --- the Redis thread ----------------------------------------------------- */

/* Queue ch for the owner; post rd_drain when the inbox was drained. */
static void
rd_push(struct ds_redis *rd, struct rd_change *ch)
{
	int post;

	pthread_mutex_lock(&rd->rd_lock);
	STAILQ_INSERT_TAIL(&rd->rd_inbox, ch, ch_entry);
	post = !rd->rd_posted;
	rd->rd_posted = 1;
	pthread_mutex_unlock(&rd->rd_lock);
	if (post)
		rd->rd_post(rd->rd_post_ctx, rd_drain, rd->rd_ds);
}

static void
rd_close_conns(struct ds_redis *rd)
{
	if (rd->rd_cmd != NULL)
		redisFree(rd->rd_cmd);
	if (rd->rd_sub != NULL)
		redisFree(rd->rd_sub);
	rd->rd_cmd = rd->rd_sub = NULL;
}

/* Down (why): close, keep the table, log once per outage, back off. */
static void
rd_down(struct ds_redis *rd, const char *why)
{
	double now = now_mono();
	int was_up;

	rd_close_conns(rd);
	pthread_mutex_lock(&rd->rd_lock);
	was_up = rd->rd_up;
	rd->rd_up = 0;
	snprintf(rd->rd_reason, sizeof(rd->rd_reason), "redis %s: %s", rd->rd_addr, why);
	pthread_mutex_unlock(&rd->rd_lock);
	if (was_up) {
		rd->rd_backoff = 0;
		rd->rd_logged = 0;
	}
	if (!rd->rd_logged) {
		rd->rd_down_since = now;
		log_warnx("datastore: redis %s unavailable: %s; routing goes on from the "
		    "last table (%zu announcements), announcements are refused until it "
		    "is back; reconnecting", rd->rd_addr, why,
		    announce_count(rd->rd_ds->ds_table));
		rd->rd_logged = 1;
	} else
		log_debug("datastore: redis %s: still unavailable: %s", rd->rd_addr, why);
	rd->rd_backoff = rd->rd_backoff == 0 ? RD_BACKOFF_MIN : rd->rd_backoff * 2;
	if (rd->rd_backoff > RD_BACKOFF_MAX)
		rd->rd_backoff = RD_BACKOFF_MAX;
	rd->rd_next_try = now + rd->rd_backoff;
}

/* The reason of a failed command on c (reply r, may be NULL). */
static const char *
rd_why(redisContext *c, redisReply *r, char *buf, size_t len)
{
	if (r == NULL)
		snprintf(buf, len, "%s", c->err == REDIS_ERR_IO && (errno == EAGAIN ||
		    errno == EWOULDBLOCK) ? "timed out" : c->errstr[0] ? c->errstr :
		    "connection lost");
	else if (r->type == REDIS_REPLY_ERROR)
		snprintf(buf, len, "%.*s", (int)r->len, r->str);
	else
		snprintf(buf, len, "unexpected reply (type %d)", r->type);
	return buf;
}

/* A command on c; NULL + why (the connection is then unusable, or the
 * reply was an error, freed). */
static redisReply *
rd_call(redisContext *c, int argc, const char **argv, const size_t *lens, int want,
    char *why, size_t whylen)
{
	redisReply *r;

	r = redisCommandArgv(c, argc, argv, lens);
	if (r != NULL && (r->type == want || (want == REDIS_REPLY_STATUS &&
	    r->type == REDIS_REPLY_STRING)))
		return r;
	rd_why(c, r, why, whylen);
	if (r != NULL)
		freeReplyObject(r);
	return NULL;
}

/* Connect c with the timeout, AUTH.  NULL + why. */
static redisContext *
rd_dial(struct ds_redis *rd, char *why, size_t whylen)
{
	struct timeval tv = tv_seconds(rd->rd_timeout);
	redisContext *c;
	redisReply *r;

	c = redisConnectWithTimeout(rd->rd_host, rd->rd_port, tv);
	if (c == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	if (c->err) {
		snprintf(why, whylen, "connect: %s", c->errstr);
		redisFree(c);
		return NULL;
	}
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(why, whylen, "cannot set the timeout");
		redisFree(c);
		return NULL;
	}
	if (rd->rd_password != NULL) {
		const char *argv[] = { "AUTH", rd->rd_password };

		if ((r = rd_call(c, 2, argv, NULL, REDIS_REPLY_STATUS, why, whylen)) == NULL) {
			/* the reply's words, without the password */
			redisFree(c);
			return NULL;
		}
		freeReplyObject(r);
	}
	return c;
}

/* One EVALSHA of ops[0..n) (a batch or a write-back); res[i] gets each
 * op's answer.  0, or -1 + why. */
static int
rd_eval(struct ds_redis *rd, const struct ds_op *ops, size_t n, const char *kind_a,
    int *res, char *why, size_t whylen)
{
	size_t argc = 4 + 6 * n, k = 0;
	const char **argv = calloc(argc, sizeof(*argv));
	char **owned = calloc(3 * n + 1, sizeof(*owned));
	char nkeys[24];
	redisReply *r = NULL;
	int rc = -1;
	size_t no = 0;

	if (argv == NULL || owned == NULL) {
		snprintf(why, whylen, "out of memory");
		goto done;
	}
	snprintf(nkeys, sizeof(nkeys), "%zu", n);
	argv[k++] = "EVALSHA";
	argv[k++] = rd->rd_sha;
	argv[k++] = nkeys;
	for (size_t i = 0; i < n; i++) {
		if (asprintf(&owned[no], "%sd:%s", rd->rd_prefix, ops[i].op_an.an_domain) == -1) {
			snprintf(why, whylen, "out of memory");
			goto done;
		}
		argv[k++] = owned[no++];
	}
	argv[k++] = rd->rd_channel;
	for (size_t i = 0; i < n; i++) {
		const struct ds_op *o = &ops[i];
		char *line, *nl;

		line = o->op_withdraw ? ds_format(NULL, o->op_an.an_domain,
		    o->op_an.an_operator, o->op_any_proxy ? NULL : o->op_an.an_proxy) :
		    ds_format(&o->op_an, NULL, NULL, NULL);
		if (line == NULL || (nl = strchr(line, '\n')) == NULL) {
			free(line);
			snprintf(why, whylen, "out of memory");
			goto done;
		}
		*nl = '\0';
		owned[no++] = line;
		if (asprintf(&owned[no], "%lld", o->op_withdraw ? 0LL :
		    (long long)(o->op_an.an_expires_at * 1000)) == -1) {
			snprintf(why, whylen, "out of memory");
			goto done;
		}
		argv[k++] = !o->op_withdraw ? kind_a : o->op_any_proxy ? "W" : "w";
		argv[k++] = o->op_an.an_operator;
		argv[k++] = owned[no++];
		argv[k++] = line;
		argv[k++] = o->op_an.an_proxy;
	}
	if ((r = rd_call(rd->rd_cmd, (int)k, argv, NULL, REDIS_REPLY_ARRAY, why,
	    whylen)) == NULL)
		goto done;
	if (r->elements != n) {
		snprintf(why, whylen, "script answered %zu results for %zu changes",
		    r->elements, n);
		goto done;
	}
	for (size_t i = 0; i < n; i++)
		res[i] = r->element[i]->type == REDIS_REPLY_INTEGER ?
		    (int)r->element[i]->integer : -1;
	rd->rd_last_cmd = now_mono();
	rc = 0;
done:
	if (r != NULL)
		freeReplyObject(r);
	for (size_t i = 0; owned != NULL && i < no; i++)
		free(owned[i]);
	free(owned);
	free(argv);
	return rc;
}

/* Redis lost its data (a new epoch): write the table back, what another
 * operator took meanwhile excepted.  0, or -1 + why. */
static int
rd_write_back(struct ds_redis *rd, char *why, size_t whylen)
{
	struct announcement *v;
	struct ds_op *ops;
	int *res, n, rc = 0;

	if ((n = announce_list(rd->rd_ds->ds_table, NULL, now_wall(), &v)) <= 0)
		return n == 0 ? 0 : (snprintf(why, whylen, "out of memory"), -1);
	ops = calloc((size_t)n, sizeof(*ops));
	res = calloc((size_t)n, sizeof(*res));
	if (ops == NULL || res == NULL) {
		snprintf(why, whylen, "out of memory");
		rc = -1;
		goto done;
	}
	for (int i = 0; i < n; i++)
		ops[i].op_an = v[i];
	for (int i = 0; i < n && rc == 0; i += RD_BATCH_MAX)
		rc = rd_eval(rd, ops + i, (size_t)(n - i < RD_BATCH_MAX ? n - i : RD_BATCH_MAX),
		    "r", res + i, why, whylen);
	if (rc == 0)
		log_warnx("datastore: redis %s lost its data: %d announcement(s) written back "
		    "from this instance's table", rd->rd_addr, n);
done:
	free(ops);
	free(res);
	free(v);
	return rc;
}

/* The epoch: set ours unless one exists, then read it.  A change since
 * the last load means Redis lost its data.  0, or -1 + why. */
static int
rd_epoch(struct ds_redis *rd, char *why, size_t whylen)
{
	uint8_t rnd[16];
	char hex[33];
	const char *setv[] = { "SET", rd->rd_epoch_key, hex, "NX" };
	const char *getv[] = { "GET", rd->rd_epoch_key };
	redisReply *r;
	int lost;

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
		snprintf(why, whylen, "getrandom: %s", strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	/* nil when it exists: not an error */
	if ((r = redisCommandArgv(rd->rd_cmd, 4, setv, NULL)) == NULL) {
		rd_why(rd->rd_cmd, NULL, why, whylen);
		return -1;
	}
	freeReplyObject(r);
	if ((r = rd_call(rd->rd_cmd, 2, getv, NULL, REDIS_REPLY_STRING, why, whylen)) == NULL)
		return -1;
	lost = rd->rd_epoch[0] != '\0' && strcmp(rd->rd_epoch, r->str) != 0;
	strlcpy(rd->rd_epoch, r->str, sizeof(rd->rd_epoch));
	freeReplyObject(r);
	return lost ? rd_write_back(rd, why, whylen) : 0;
}

/* rd_scan(): each key matching pattern, read with cmd ("GET", "HGETALL"),
 * and its reply (not NULL, any type; freed after the call) handed to fn,
 * which answers 0, or -1 with why to stop the scan. */
typedef int (*rd_scan_fn)(struct ds_redis *rd, void *arg, const char *key, redisReply *r,
    char *why, size_t whylen);

/* SCAN pattern, then cmd on each key found.  0, or -1 + why. */
static int
rd_scan(struct ds_redis *rd, const char *pattern, const char *cmd, rd_scan_fn fn, void *arg,
    char *why, size_t whylen)
{
	char cursor[32] = "0";

	do {
		const char *scanv[] = { "SCAN", cursor, "MATCH", pattern, "COUNT",
		    RD_SCAN_COUNT };
		redisReply *r, *keys;

		if ((r = rd_call(rd->rd_cmd, 6, scanv, NULL, REDIS_REPLY_ARRAY, why,
		    whylen)) == NULL)
			return -1;
		if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			snprintf(why, whylen, "SCAN: unexpected reply");
			freeReplyObject(r);
			return -1;
		}
		strlcpy(cursor, r->element[0]->str, sizeof(cursor));
		keys = r->element[1];
		for (size_t i = 0; i < keys->elements; i++) {
			const char *getv[] = { cmd, keys->element[i]->str };
			redisReply *g;
			int rc;

			if (keys->element[i]->type != REDIS_REPLY_STRING)
				continue;
			if ((g = redisCommandArgv(rd->rd_cmd, 2, getv, NULL)) == NULL) {
				rd_why(rd->rd_cmd, NULL, why, whylen);
				freeReplyObject(r);
				return -1;
			}
			rc = fn(rd, arg, keys->element[i]->str, g, why, whylen);
			freeReplyObject(g);
			if (rc == -1) {
				freeReplyObject(r);
				return -1;
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	rd->rd_last_cmd = now_mono();
	return 0;
}

/* What rd_load collects. */
struct rd_loaded {
	struct rd_change	*lo_ch;
	size_t			 lo_cap;
	double			 lo_now;
};

/* One domain's hash: its instances' unexpired announcements. */
static int
rd_load_one(struct ds_redis *rd, void *arg, const char *key, redisReply *g, char *why,
    size_t whylen)
{
	struct rd_loaded *lo = arg;
	struct rd_change *ch = lo->lo_ch;

	/* empty: expired or withdrawn since the SCAN; an error (not a
	 * hash): not ours */
	if (g->type != REDIS_REPLY_ARRAY) {
		if (g->type == REDIS_REPLY_ERROR)
			log_warnx("datastore: redis key %s ignored: %s", key, g->str);
		return 0;
	}
	for (size_t j = 0; j + 1 < g->elements; j += 2) {
		redisReply *f = g->element[j], *v = g->element[j + 1];
		struct announcement a;
		const char *bad;
		int any;

		/* "h:<instance>": one instance's line; "=" and "x:<instance>"
		 * are the script's */
		if (f->type != REDIS_REPLY_STRING || strncmp(f->str, "h:", 2) != 0 ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		if (ds_parse_line(v->str, v->len, &a, &any, &bad) != DS_ADD) {
			log_warnx("datastore: redis key %s field %s ignored: %s", key, f->str,
			    bad);
			continue;
		}
		if (a.an_expires_at != 0 && a.an_expires_at <= lo->lo_now)
			continue;
		if (ch->ch_nall == lo->lo_cap) {
			size_t nc = lo->lo_cap ? lo->lo_cap * 2 : 64;
			struct announcement *nv = reallocarray(ch->ch_all, nc, sizeof(*nv));

			if (nv == NULL) {
				snprintf(why, whylen, "out of memory");
				return -1;
			}
			ch->ch_all = nv;
			lo->lo_cap = nc;
		}
		ch->ch_all[ch->ch_nall++] = a;
	}
	return 0;
}

/* SCAN <prefix>d:* and HGETALL each: the whole table, handed over as a
 * RESET.  0, or -1 + why. */
static int
rd_load(struct ds_redis *rd, size_t *count, char *why, size_t whylen)
{
	struct rd_loaded lo = { .lo_now = now_wall() };

	if ((lo.lo_ch = calloc(1, sizeof(*lo.lo_ch))) == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	lo.lo_ch->ch_kind = RC_RESET;
	if (rd_scan(rd, rd->rd_match, "HGETALL", rd_load_one, &lo, why, whylen) == -1) {
		free(lo.lo_ch->ch_all);
		free(lo.lo_ch);
		return -1;
	}
	/* one field per (domain, instance): sorted, the entries are unique */
	if (lo.lo_ch->ch_nall > 0)
		qsort(lo.lo_ch->ch_all, lo.lo_ch->ch_nall, sizeof(*lo.lo_ch->ch_all),
		    rd_cmp_domain);
	*count = lo.lo_ch->ch_nall;
	rd_push(rd, lo.lo_ch);
	return 0;
}

/* Messages already read on rd_sub, into the inbox.  -1 + why when the
 * connection failed. */
static int
rd_sub_drain(struct ds_redis *rd, char *why, size_t whylen)
{
	void *v;
	redisReply *r;

	for (;;) {
		if (redisGetReplyFromReader(rd->rd_sub, &v) != REDIS_OK) {
			rd_why(rd->rd_sub, NULL, why, whylen);
			return -1;
		}
		if ((r = v) == NULL)
			return 0;
		/* ["message", channel, line]; the subscribe confirmation too */
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
		    r->element[0]->type == REDIS_REPLY_STRING &&
		    strcmp(r->element[0]->str, "message") == 0 &&
		    r->element[2]->type == REDIS_REPLY_STRING) {
			struct rd_change *ch = calloc(1, sizeof(*ch));
			const char *bad;
			enum ds_line k;

			if (ch == NULL) {
				freeReplyObject(r);
				snprintf(why, whylen, "out of memory");
				return -1;	/* a reload after the reconnect */
			}
			/* a shared line (datastore_share), not an announcement */
			if (strncmp(r->element[2]->str, "{\"share\"", 8) == 0) {
				ch->ch_kind = RC_SHARE;
				if (rd->rd_share_fn == NULL || (ch->ch_line = strndup(
				    r->element[2]->str, r->element[2]->len)) == NULL)
					free(ch);
				else
					rd_push(rd, ch);
				freeReplyObject(r);
				continue;
			}
			k = ds_parse_line(r->element[2]->str, r->element[2]->len, &ch->ch_an,
			    &ch->ch_any_proxy, &bad);
			if (k == DS_BAD) {
				log_warnx("datastore: redis: a message on %s ignored: %s",
				    rd->rd_channel, bad);
				free(ch);
			} else {
				ch->ch_kind = k == DS_ADD ? RC_PUT : RC_DEL;
				rd_push(rd, ch);
			}
		}
		freeReplyObject(r);
	}
}

/* DOWN -> UP, or rd_down() with the reason. */
static void
rd_connect(struct ds_redis *rd)
{
	const char *loadv[] = { "SCRIPT", "LOAD", rd_script };
	const char *subv[] = { "SUBSCRIBE", rd->rd_channel };
	char why[256];
	redisReply *r;
	size_t n = 0;

	if ((rd->rd_cmd = rd_dial(rd, why, sizeof(why))) == NULL)
		goto fail;
	if ((r = rd_call(rd->rd_cmd, 3, loadv, NULL, REDIS_REPLY_STRING, why,
	    sizeof(why))) == NULL)
		goto fail;
	strlcpy(rd->rd_sha, r->str, sizeof(rd->rd_sha));
	freeReplyObject(r);
	/* subscribed before the load: no change falls between the two */
	if ((rd->rd_sub = rd_dial(rd, why, sizeof(why))) == NULL)
		goto fail;
	if ((r = rd_call(rd->rd_sub, 2, subv, NULL, REDIS_REPLY_ARRAY, why,
	    sizeof(why))) == NULL)
		goto fail;
	freeReplyObject(r);
	if (rd_epoch(rd, why, sizeof(why)) == -1 || rd_load(rd, &n, why, sizeof(why)) == -1 ||
	    rd_load_shares(rd, why, sizeof(why)) == -1 ||
	    rd_sub_drain(rd, why, sizeof(why)) == -1)
		goto fail;
	pthread_mutex_lock(&rd->rd_lock);
	rd->rd_up = 1;
	pthread_mutex_unlock(&rd->rd_lock);
	rd->rd_backoff = 0;
	rd->rd_next_beat = 0;	/* at once */
	if (rd->rd_logged)
		log_info("datastore: redis %s is back after %.1f s: %zu announcement(s) loaded",
		    rd->rd_addr, now_mono() - rd->rd_down_since, n);
	else
		log_info("datastore: redis %s connected: %zu announcement(s) loaded",
		    rd->rd_addr, n);
	rd->rd_logged = 0;
	return;
fail:
	rd_down(rd, why);
}

/* Run the owner's batch (ds_ops) and hand the result back. */
static void
rd_run_job(struct ds_redis *rd, enum rd_job job)
{
	struct datastore *ds = rd->rd_ds;
	struct rd_change *ch = NULL;
	char why[200] = "", err[256] = "";
	int *res = NULL, rc = 0;

	if (!rd->rd_up)
		snprintf(why, sizeof(why), "%s", rd->rd_reason);
	else if ((res = calloc(ds->ds_nops ? ds->ds_nops : 1, sizeof(*res))) == NULL)
		snprintf(why, sizeof(why), "out of memory");
	else if (rd_eval(rd, ds->ds_ops, ds->ds_nops, "a", res, why, sizeof(why)) == 0) {
		for (size_t i = 0; i < ds->ds_nops; i++)
			if (!ds->ds_ops[i].op_withdraw && res[i] == DATASTORE_TAKEN)
				ds->ds_ops[i].op_result = DATASTORE_TAKEN;
	} else {
		/* the script may or may not have run: the reload after the
		 * reconnect shows what it did */
		rd_down(rd, why);
		snprintf(why, sizeof(why), "%s", rd->rd_reason);
	}
	if (why[0] != '\0') {
		snprintf(err, sizeof(err), "datastore unavailable: %s", why);
		rc = DATASTORE_UNAVAILABLE;
	}
	free(res);
	if (job == RJ_SYNC) {
		pthread_mutex_lock(&rd->rd_lock);
		rd->rd_job_rc = rc;
		snprintf(rd->rd_job_err, sizeof(rd->rd_job_err), "%s", err);
		rd->rd_job_done = 1;
		pthread_cond_signal(&rd->rd_cond);
		pthread_mutex_unlock(&rd->rd_lock);
		return;
	}
	pthread_mutex_lock(&rd->rd_lock);
	rd->rd_job = RJ_NONE;
	ch = rd->rd_done;
	rd->rd_done = NULL;
	pthread_mutex_unlock(&rd->rd_lock);
	ch->ch_kind = RC_DONE;
	ch->ch_rc = rc;
	snprintf(ch->ch_err, sizeof(ch->ch_err), "%s", err);
	rd_push(rd, ch);
}

/* What rd_heartbeat collects. */
struct rd_seen {
	struct datastore_instance	*se_v;
	size_t				 se_n, se_cap;
};

/* One instance's key: {"id","data_endpoint"}; anything else is skipped
 * (nil: its lifetime ended since the SCAN). */
static int
rd_instance_one(struct ds_redis *rd, void *arg, const char *key, redisReply *g, char *why,
    size_t whylen)
{
	struct rd_seen *se = arg;
	struct json_object *o, *jid, *jep;
	struct datastore_instance *nv;

	if (g->type != REDIS_REPLY_STRING || g->len >= DATASTORE_LINE_MAX ||
	    (o = json_tokener_parse(g->str)) == NULL)
		return 0;
	if (json_object_object_get_ex(o, "id", &jid) &&
	    json_object_is_type(jid, json_type_string) &&
	    json_object_object_get_ex(o, "data_endpoint", &jep) &&
	    json_object_is_type(jep, json_type_string)) {
		if (se->se_n == se->se_cap) {
			se->se_cap = se->se_cap ? 2 * se->se_cap : 8;
			if ((nv = reallocarray(se->se_v, se->se_cap, sizeof(*nv))) == NULL) {
				json_object_put(o);
				snprintf(why, whylen, "out of memory");
				return -1;
			}
			se->se_v = nv;
		}
		memset(&se->se_v[se->se_n], 0, sizeof(se->se_v[0]));
		strlcpy(se->se_v[se->se_n].di_id, json_object_get_string(jid),
		    sizeof(se->se_v[0].di_id));
		strlcpy(se->se_v[se->se_n].di_endpoint, json_object_get_string(jep),
		    sizeof(se->se_v[0].di_endpoint));
		se->se_n++;
	}
	json_object_put(o);
	return 0;
}

/* The heartbeat: refresh this instance's key, then read every
 * instance's (SCAN <prefix>i:*, GET each) into rd_insts.  A failed
 * command takes the connection down like any other. */
static void
rd_heartbeat(struct ds_redis *rd)
{
	char px[24], why[256];
	const char *setv[] = { "SET", rd->rd_inst_key, rd->rd_inst_line, "PX", px };
	struct rd_seen se = { NULL, 0, 0 };
	redisReply *r;

	rd->rd_next_beat = now_mono() + rd->rd_beat;
	snprintf(px, sizeof(px), "%lld", (long long)(rd->rd_beat_life * 1000));
	if ((r = rd_call(rd->rd_cmd, 5, setv, NULL, REDIS_REPLY_STATUS, why,
	    sizeof(why))) == NULL) {
		rd_down(rd, why);
		return;
	}
	freeReplyObject(r);
	if (rd_scan(rd, rd->rd_inst_match, "GET", rd_instance_one, &se, why,
	    sizeof(why)) == -1) {
		free(se.se_v);
		rd_down(rd, why);
		return;
	}
	pthread_mutex_lock(&rd->rd_lock);
	free(rd->rd_insts);
	rd->rd_insts = se.se_v;
	rd->rd_ninsts = (int)se.se_n;
	pthread_mutex_unlock(&rd->rd_lock);
}

/* SET and PUBLISH the lines waiting in rd_shares; one that fails stays
 * for the next connection. */
static void
rd_push_shares(struct ds_redis *rd)
{
	struct rd_share *sh;
	char px[24], why[256];
	redisReply *r;

	for (;;) {
		pthread_mutex_lock(&rd->rd_lock);
		sh = STAILQ_FIRST(&rd->rd_shares);
		pthread_mutex_unlock(&rd->rd_lock);
		if (sh == NULL)
			return;
		snprintf(px, sizeof(px), "%lld", sh->sh_pxat);
		{
			const char *setv[] = { "SET", sh->sh_key, sh->sh_line, "PXAT", px };
			const char *pubv[] = { "PUBLISH", rd->rd_channel, sh->sh_line };

			if ((r = rd_call(rd->rd_cmd, 5, setv, NULL, REDIS_REPLY_STATUS, why,
			    sizeof(why))) == NULL) {
				rd_down(rd, why);
				return;
			}
			freeReplyObject(r);
			if ((r = rd_call(rd->rd_cmd, 3, pubv, NULL, REDIS_REPLY_INTEGER, why,
			    sizeof(why))) == NULL) {
				rd_down(rd, why);
				return;
			}
			freeReplyObject(r);
		}
		pthread_mutex_lock(&rd->rd_lock);
		STAILQ_REMOVE_HEAD(&rd->rd_shares, sh_entry);
		pthread_mutex_unlock(&rd->rd_lock);
		free(sh->sh_key);
		explicit_bzero(sh->sh_line, strlen(sh->sh_line));
		free(sh->sh_line);
		free(sh);
		rd->rd_last_cmd = now_mono();
	}
}

/* One shared line, for the owner. */
static int
rd_share_one(struct ds_redis *rd, void *arg, const char *key, redisReply *g, char *why,
    size_t whylen)
{
	struct rd_change *ch;

	if (g->type != REDIS_REPLY_STRING)
		return 0;	/* nil: expired since the SCAN */
	if ((ch = calloc(1, sizeof(*ch))) == NULL ||
	    (ch->ch_line = strndup(g->str, g->len)) == NULL) {
		free(ch);
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	ch->ch_kind = RC_SHARE;
	rd_push(rd, ch);
	return 0;
}

/* The lines shared before this connection (SCAN <prefix>k:*, GET each),
 * handed to the owner.  0, or -1 + why. */
static int
rd_load_shares(struct ds_redis *rd, char *why, size_t whylen)
{
	if (rd->rd_share_fn == NULL || rd->rd_share_match == NULL)
		return 0;
	return rd_scan(rd, rd->rd_share_match, "GET", rd_share_one, NULL, why, whylen);
}

/* An idle rd_cmd is PINGed: a Redis that stopped answering is found
 * without waiting for a commit. */
static void
rd_ping(struct ds_redis *rd)
{
	const char *argv[] = { "PING" };
	char why[256];
	redisReply *r;

	if ((r = rd_call(rd->rd_cmd, 1, argv, NULL, REDIS_REPLY_STATUS, why,
	    sizeof(why))) == NULL) {
		rd_down(rd, why);
		return;
	}
	freeReplyObject(r);
	rd->rd_last_cmd = now_mono();
}

static void *
rd_main(void *arg)
{
	struct ds_redis *rd = arg;
	struct pollfd pfd[2];
	enum rd_job job;
	char why[256];
	uint64_t cnt;
	double now, wait;
	int stop, n, shares;

	for (;;) {
		pthread_mutex_lock(&rd->rd_lock);
		stop = rd->rd_stop;
		job = rd->rd_job_done ? RJ_NONE : rd->rd_job;
		shares = !STAILQ_EMPTY(&rd->rd_shares);
		pthread_mutex_unlock(&rd->rd_lock);
		if (stop)
			break;
		now = now_mono();
		if (!rd->rd_up && now >= rd->rd_next_try)
			rd_connect(rd);
		if (job != RJ_NONE) {
			rd_run_job(rd, job);
			continue;
		}
		now = now_mono();
		if (rd->rd_up) {
			if (shares) {
				rd_push_shares(rd);
				if (!rd->rd_up)
					continue;
			}
			if (rd->rd_inst_key != NULL && now >= rd->rd_next_beat) {
				rd_heartbeat(rd);
				continue;
			}
			if (now - rd->rd_last_cmd >= RD_PING_INTERVAL) {
				rd_ping(rd);
				continue;
			}
			wait = rd->rd_last_cmd + RD_PING_INTERVAL - now;
			if (rd->rd_inst_key != NULL && rd->rd_next_beat - now < wait)
				wait = rd->rd_next_beat - now;
		} else
			wait = rd->rd_next_try - now;
		pfd[0].fd = rd->rd_wakefd;
		pfd[0].events = POLLIN;
		pfd[1].fd = rd->rd_up ? rd->rd_sub->fd : -1;	/* -1: ignored */
		pfd[1].events = POLLIN;
		n = poll(pfd, 2, wait <= 0 ? 0 : (int)(wait * 1000) + 1);
		if (n == -1 && errno != EINTR) {
			log_warn("datastore: redis: poll");
			sleep(1);	/* cannot happen with valid descriptors */
			continue;
		}
		if (n > 0 && (pfd[0].revents & POLLIN) &&
		    read(rd->rd_wakefd, &cnt, sizeof(cnt)) == -1 && errno != EAGAIN)
			log_warn("datastore: redis: wake read");
		if (n > 0 && rd->rd_up && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			if (redisBufferRead(rd->rd_sub) != REDIS_OK) {
				rd_down(rd, rd_why(rd->rd_sub, NULL, why, sizeof(why)));
				continue;
			}
			if (rd_sub_drain(rd, why, sizeof(why)) == -1)
				rd_down(rd, why);
		}
	}
	/* a clean stop ends the heartbeat at once, not after its lifetime */
	if (rd->rd_up && rd->rd_inst_key != NULL) {
		const char *delv[] = { "DEL", rd->rd_inst_key };
		redisReply *r = rd_call(rd->rd_cmd, 2, delv, NULL, REDIS_REPLY_INTEGER, why,
		    sizeof(why));

		if (r != NULL)
			freeReplyObject(r);
	}
	rd_close_conns(rd);
	/* a synchronous caller still waiting (not at a stop, but to be safe) */
	pthread_mutex_lock(&rd->rd_lock);
	if (rd->rd_job == RJ_SYNC && !rd->rd_job_done) {
		rd->rd_job_rc = DATASTORE_UNAVAILABLE;
		snprintf(rd->rd_job_err, sizeof(rd->rd_job_err),
		    "datastore unavailable: stopping");
		rd->rd_job_done = 1;
		pthread_cond_signal(&rd->rd_cond);
	}
	pthread_mutex_unlock(&rd->rd_lock);
	return NULL;
}
