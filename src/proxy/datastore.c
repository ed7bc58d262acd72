/* datastore.c - append-only JSON-lines file of announcements (SPEC 4.4);
 * the batches of both stores (the Redis one: datastore_redis.c).
 *
 * Life of the file: open -> read whole -> replay into the table -> drop
 * expired entries -> write the table to "<file>.XXXXXX" in the same folder,
 * fsync, rename over the file, fsync the folder -> reopen with O_APPEND.
 * Changes are staged (one line each; none for a change that changes
 * nothing) and committed together: one write() of all the lines, one
 * fdatasync(), then the table.  A failed append is cut off again with
 * ftruncate() so that the next line does not land on a torn one.  When the
 * file holds more than twice the table's entries plus DATASTORE_COMPACT_SLACK
 * lines, a commit compacts it again, the same way as at open.
 * datastore_commit_async() does the write and the fdatasync on a thread of
 * the datastore's own, so that the owner's thread (the public proxy's side
 * thread, which also brokers connections) never waits for the disk; the
 * owner gets the completion posted back and applies the batch there.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <bsd/string.h>
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "announce.h"
#include "datastore.h"
#include "datastore_int.h"
#include "log.h"
#include "proxyproto.h"
#include "util.h"

static const char *
ds_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Parse one line (without its newline) into a. */
enum ds_line
ds_parse_line(const char *line, size_t len, struct announcement *a, int *any_proxy,
    const char **why)
{
	struct json_tokener *tok;
	struct json_object *o, *v;
	const char *domain, *op, *proxy, *exp;
	enum ds_line kind = DS_BAD;
	double expires_at = 0;
	int pp = PROXYPROTO_OFF;
	size_t end;

	*why = "not a JSON object";
	/* json-c would stop at a NUL; such a line was not written by us */
	if (len > DATASTORE_LINE_MAX || memchr(line, '\0', len) != NULL) {
		*why = "line too long or binary";
		return DS_BAD;
	}
	if ((tok = json_tokener_new()) == NULL) {
		*why = "out of memory";
		return DS_BAD;
	}
	o = json_tokener_parse_ex(tok, line, (int)len);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (o == NULL)
		return DS_BAD;
	while (end < len && (line[end] == ' ' || line[end] == '\t' || line[end] == '\r'))
		end++;
	if (end != len || !json_object_is_type(o, json_type_object))
		goto done;

	op = ds_str(o, "operator");
	proxy = ds_str(o, "proxy");
	*any_proxy = (proxy == NULL);
	if (json_object_object_get_ex(o, "withdraw", &v)) {
		domain = json_object_is_type(v, json_type_string) ?
		    json_object_get_string(v) : NULL;
		kind = DS_WITHDRAW;
	} else {
		domain = ds_str(o, "domain");
		kind = DS_ADD;
		if (json_object_object_get_ex(o, "expires_at", &v) &&
		    !json_object_is_type(v, json_type_null)) {
			exp = json_object_is_type(v, json_type_string) ?
			    json_object_get_string(v) : NULL;
			if (exp == NULL || rfc3339_parse(exp, &expires_at) == -1 ||
			    expires_at <= 0) {
				*why = "invalid expires_at";
				kind = DS_BAD;
				goto done;
			}
		}
		/* Private proxy: the PROXY protocol version for the internal server. */
		if (json_object_object_get_ex(o, "proxy_protocol", &v) &&
		    !json_object_is_type(v, json_type_null) &&
		    (!json_object_is_type(v, json_type_string) ||
		    (pp = proxyproto_version_parse(json_object_get_string(v))) < 0)) {
			*why = "invalid proxy_protocol";
			kind = DS_BAD;
			goto done;
		}
	}
	if (domain == NULL || op == NULL) {
		*why = "missing domain or operator";
		kind = DS_BAD;
	} else if (announce_make(a, domain, op, proxy, expires_at) == -1) {
		*why = "invalid domain, operator or proxy";
		kind = DS_BAD;
	} else
		a->an_proxy_protocol = pp;
done:
	json_object_put(o);
	return kind;
}

static int
ds_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return 0;
	return 1;
}

int
datastore_replay(const char *name, const char *buf, size_t len,
    struct announce_table *t, double now)
{
	struct announcement a;
	const char *line = buf, *nl, *why;
	size_t lineno = 0, n;
	int skipped = 0, any_proxy;

	while (line < buf + len) {
		lineno++;
		nl = memchr(line, '\n', (size_t)(buf + len - line));
		n = nl != NULL ? (size_t)(nl - line) : (size_t)(buf + len - line);
		/* blank lines are harmless */
		if (ds_blank(line, n))
			goto next;
		switch (ds_parse_line(line, n, &a, &any_proxy, &why)) {
		case DS_ADD:
			if (announce_put(t, &a) == -1) {
				log_warnx("%s:%zu: out of memory", name, lineno);
				skipped++;
			}
			break;
		case DS_WITHDRAW:
			announce_remove(t, a.an_domain, any_proxy ? NULL : a.an_proxy,
			    a.an_operator);
			break;
		case DS_BAD:
			/* a torn last line is an interrupted append; elsewhere
			 * it is damage, but one line never stops the rest */
			log_warnx("%s:%zu: %s line ignored: %s", name, lineno,
			    nl == NULL ? "torn last" : "unparsable", why);
			skipped++;
			break;
		}
next:
		if (nl == NULL)
			break;
		line = nl + 1;
	}
	announce_expire(t, now);
	return skipped;
}

/* One line for a (withdraw == NULL) or a withdrawal, with its newline;
 * malloc'ed. */
char *
ds_format(const struct announcement *a, const char *withdraw, const char *op,
    const char *proxy)
{
	struct json_object *o = json_object_new_object();
	char ts[32], *s = NULL;

	if (o == NULL)
		return NULL;
	if (withdraw != NULL) {
		json_object_object_add(o, "withdraw", json_object_new_string(withdraw));
		json_object_object_add(o, "operator", json_object_new_string(op));
		if (proxy != NULL)
			json_object_object_add(o, "proxy", json_object_new_string(proxy));
	} else {
		json_object_object_add(o, "domain", json_object_new_string(a->an_domain));
		json_object_object_add(o, "operator", json_object_new_string(a->an_operator));
		if (a->an_proxy[0] != '\0')
			json_object_object_add(o, "proxy",
			    json_object_new_string(a->an_proxy));
		if (a->an_expires_at > 0)
			json_object_object_add(o, "expires_at", json_object_new_string(
			    rfc3339_format(a->an_expires_at, ts, sizeof(ts))));
		if (a->an_proxy_protocol != PROXYPROTO_OFF)
			json_object_object_add(o, "proxy_protocol", json_object_new_string(
			    proxyproto_version_str(a->an_proxy_protocol)));
	}
	if (asprintf(&s, "%s\n", json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)) == -1)
		s = NULL;
	json_object_put(o);
	return s;
}

/* write() all of buf; -1 with errno. */
static int
ds_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;	/* a signal before anything was written */
		if (n == -1)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* mkdir -p of the folder holding path. */
static int
ds_mkdirs(const char *path, char *err, size_t errlen)
{
	char *dir = strdup(path), *p;

	if (dir == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if ((p = strrchr(dir, '/')) == NULL || p == dir) {
		free(dir);
		return 0;
	}
	*p = '\0';
	for (p = dir + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		/* EEXIST: already there (a file there fails at open) */
		if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
			snprintf(err, errlen, "%s: mkdir %s: %s", path, dir, strerror(errno));
			free(dir);
			return -1;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	free(dir);
	return 0;
}

/* Whole file into memory; *buf NULL and 0 when it does not exist. */
static int
ds_slurp(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	size_t cap, n = 0;
	ssize_t r;
	char *b;
	int fd;

	*buf = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;	/* first start: nothing to replay */
		snprintf(err, errlen, "%s: open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -1;
	}
	cap = (size_t)st.st_size + 1;
	if ((b = malloc(cap)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return -1;
	}
	for (;;) {
		if (n == cap) {
			char *nb = realloc(b, cap * 2);
			if (nb == NULL) {
				snprintf(err, errlen, "%s: out of memory", path);
				goto fail;
			}
			b = nb;
			cap *= 2;
		}
		r = read(fd, b + n, cap - n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*buf = b;
	*len = n;
	return 0;
fail:
	free(b);
	close(fd);
	return -1;
}

/* Rewrite path with the live entries of t only. */
static int
ds_compact(const char *path, struct announce_table *t, double now, size_t *lines,
    char *err, size_t errlen)
{
	struct announcement *v = NULL;
	char *tmp = NULL, *line, *dir = NULL;
	int fd = -1, dfd, n, rc = -1;

	if ((n = announce_list(t, NULL, now, &v)) == -1 ||
	    asprintf(&tmp, "%s.XXXXXX", path) == -1) {
		tmp = NULL;
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	if ((fd = mkstemp(tmp)) == -1) {
		snprintf(err, errlen, "%s: create %s: %s", path, tmp, strerror(errno));
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if ((line = ds_format(&v[i], NULL, NULL, NULL)) == NULL) {
			snprintf(err, errlen, "%s: out of memory", path);
			goto out;
		}
		if (ds_write_all(fd, line, strlen(line)) == -1) {
			snprintf(err, errlen, "%s: write: %s", tmp, strerror(errno));
			free(line);
			goto out;
		}
		free(line);
	}
	if (fsync(fd) == -1) {
		snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	*lines = (size_t)n;
	if (rename(tmp, path) == -1) {
		snprintf(err, errlen, "%s: rename: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* the rename itself is durable once the folder is synced */
	if ((dir = strdup(path)) != NULL &&
	    (dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		if (fsync(dfd) == -1)
			log_warn("%s: fsync of its folder", path);
		close(dfd);
	}
	rc = 0;
out:
	if (fd != -1)
		close(fd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	free(dir);
	free(v);
	return rc;
}

struct datastore *
datastore_open(const char *filename, struct announce_table *t, double now, char *err,
    size_t errlen)
{
	struct datastore *ds;
	char *buf;
	size_t len, lines;
	int skipped;

	if (filename == NULL) {
		/* memory only: the same batches, applied to t without a file */
		if ((ds = calloc(1, sizeof(*ds))) == NULL ||
		    pthread_mutex_init(&ds->ds_lock, NULL) != 0) {
			free(ds);
			snprintf(err, errlen, "datastore: out of memory");
			return NULL;
		}
		ds->ds_fd = -1;
		ds->ds_table = t;
		return ds;
	}
	if (filename[0] == '\0') {
		snprintf(err, errlen, "datastore: no filename");
		return NULL;
	}
	if (ds_mkdirs(filename, err, errlen) == -1 ||
	    ds_slurp(filename, &buf, &len, err, errlen) == -1)
		return NULL;
	skipped = datastore_replay(filename, buf != NULL ? buf : "", len, t, now);
	free(buf);
	if (ds_compact(filename, t, now, &lines, err, errlen) == -1)
		return NULL;
	if ((ds = calloc(1, sizeof(*ds))) == NULL || (ds->ds_path = strdup(filename)) == NULL ||
	    pthread_mutex_init(&ds->ds_lock, NULL) != 0) {
		if (ds != NULL)
			free(ds->ds_path);
		free(ds);
		snprintf(err, errlen, "%s: out of memory", filename);
		return NULL;
	}
	if ((ds->ds_fd = open(filename, O_WRONLY | O_APPEND | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: open: %s", filename, strerror(errno));
		free(ds->ds_path);
		free(ds);
		return NULL;
	}
	ds->ds_table = t;
	ds->ds_lines = lines;
	log_info("datastore %s: %zu announcements, %d lines skipped", filename,
	    announce_count(t), skipped);
	return ds;
}

void
datastore_close(struct datastore *ds)
{
	if (ds == NULL)
		return;
	if (ds->ds_redis != NULL)
		ds_redis_close(ds);
	if (ds->ds_started) {
		/* a flush in progress finishes first; its completion is posted
		 * but, the owner's loop being stopped, never runs */
		pthread_mutex_lock(&ds->ds_lock);
		ds->ds_stop = 1;
		pthread_cond_signal(&ds->ds_cond);
		pthread_mutex_unlock(&ds->ds_lock);
		pthread_join(ds->ds_thread, NULL);
		pthread_cond_destroy(&ds->ds_cond);
	}
	pthread_mutex_destroy(&ds->ds_lock);
	if (ds->ds_fd >= 0)
		close(ds->ds_fd);
	free(ds->ds_path);
	free(ds->ds_buf);
	free(ds->ds_ops);
	free(ds);
}

size_t
datastore_lines(const struct datastore *ds)
{
	return ds->ds_lines;
}

int
datastore_compact(struct datastore *ds, double now, char *err, size_t errlen)
{
	size_t lines;
	int fd;

	if (ds->ds_path == NULL)
		return 0;	/* memory only: nothing to rewrite */
	if (ds->ds_inflight) {
		snprintf(err, errlen, "%s: a commit is in flight", ds->ds_path);
		return -1;
	}
	if (ds_compact(ds->ds_path, ds->ds_table, now, &lines, err, errlen) == -1)
		return -1;
	/* the old descriptor still points at the replaced file */
	if ((fd = open(ds->ds_path, O_WRONLY | O_APPEND | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s: open: %s", ds->ds_path, strerror(errno));
		return -1;
	}
	close(ds->ds_fd);
	ds->ds_fd = fd;
	ds->ds_lines = lines;
	return 0;
}

/* Stage line (malloc'ed, consumed) and the change it records. */
static int
ds_stage(struct datastore *ds, char *line, const struct ds_op *op)
{
	size_t n;

	if (line == NULL)
		return -1;
	n = strlen(line);
	if (ds->ds_buflen + n > ds->ds_bufcap) {
		size_t cap = ds->ds_bufcap ? ds->ds_bufcap : 4096;
		char *b;

		while (cap < ds->ds_buflen + n)
			cap *= 2;
		if ((b = realloc(ds->ds_buf, cap)) == NULL) {
			free(line);
			return -1;
		}
		ds->ds_buf = b;
		ds->ds_bufcap = cap;
	}
	if (ds->ds_nops == ds->ds_opcap) {
		size_t cap = ds->ds_opcap ? ds->ds_opcap * 2 : 16;
		struct ds_op *v = reallocarray(ds->ds_ops, cap, sizeof(*v));

		if (v == NULL) {
			free(line);
			return -1;
		}
		ds->ds_ops = v;
		ds->ds_opcap = cap;
	}
	memcpy(ds->ds_buf + ds->ds_buflen, line, n);
	ds->ds_buflen += n;
	ds->ds_ops[ds->ds_nops++] = *op;
	free(line);
	return 0;
}

int
datastore_stage_announce(struct datastore *ds, const struct announcement *a)
{
	struct announcement cur;
	struct ds_op op;

	if (ds->ds_inflight)
		return -1;	/* the staged batch is being written */
	ds->ds_ndone = 0;
	/* the same announcement again: nothing to write (staged ones are
	 * not in the table yet, so a repeat within one batch is written).
	 * Redis is always told: its key may be gone while the table, a copy,
	 * still holds the entry, and the call renews the key's expiry. */
	if (ds->ds_redis == NULL && announce_find(ds->ds_table, a->an_domain, a->an_proxy, NULL, &cur) == 0 &&
	    strcmp(cur.an_operator, a->an_operator) == 0 &&
	    cur.an_expires_at == a->an_expires_at)
		return 1;
	memset(&op, 0, sizeof(op));
	op.op_an = *a;
	return ds_stage(ds, ds_format(a, NULL, NULL, NULL), &op);
}

int
datastore_stage_withdraw(struct datastore *ds, const char *domain, const char *proxy,
    const char *op)
{
	struct ds_op o;

	if (ds->ds_inflight)
		return -1;	/* the staged batch is being written */
	ds->ds_ndone = 0;
	if (announce_find(ds->ds_table, domain, proxy, op, NULL) == -1)
		return 0;	/* nothing to withdraw: nothing to write */
	/* already staged in this batch */
	for (size_t i = 0; i < ds->ds_nops; i++)
		if (ds->ds_ops[i].op_withdraw &&
		    strcmp(ds->ds_ops[i].op_an.an_domain, domain) == 0 &&
		    strcmp(ds->ds_ops[i].op_an.an_operator, op) == 0 &&
		    (proxy == NULL ? ds->ds_ops[i].op_any_proxy :
		    strcmp(ds->ds_ops[i].op_an.an_proxy, proxy) == 0))
			return 0;
	memset(&o, 0, sizeof(o));
	o.op_withdraw = 1;
	o.op_any_proxy = (proxy == NULL);
	if (strlcpy(o.op_an.an_domain, domain, sizeof(o.op_an.an_domain)) >=
	    sizeof(o.op_an.an_domain) ||
	    strlcpy(o.op_an.an_operator, op, sizeof(o.op_an.an_operator)) >=
	    sizeof(o.op_an.an_operator) ||
	    strlcpy(o.op_an.an_proxy, proxy ? proxy : "", sizeof(o.op_an.an_proxy)) >=
	    sizeof(o.op_an.an_proxy))
		return -1;
	if (ds_stage(ds, ds_format(NULL, domain, op, proxy), &o) == -1)
		return -1;
	return 1;
}

void
datastore_abort(struct datastore *ds)
{
	if (ds->ds_inflight)
		return;
	ds->ds_buflen = 0;
	ds->ds_nops = 0;
}

/* Write the staged lines and fdatasync once.  0, or an errno with the
 * partial lines cut off again.  Touches only ds_fd and ds_buf, so it may run
 * on the flush thread while the batch is in flight. */
static int
ds_flush(struct datastore *ds)
{
	off_t end;
	int saved;

	if (ds->ds_fd < 0)
		return 0;	/* memory only */
	end = lseek(ds->ds_fd, 0, SEEK_END);
	if (end == -1 || ds_write_all(ds->ds_fd, ds->ds_buf, ds->ds_buflen) == -1 ||
	    fdatasync(ds->ds_fd) == -1) {
		saved = errno;
		/* cut a partial line (ENOSPC) so the next append starts clean */
		if (end != -1 && ftruncate(ds->ds_fd, end) == -1)
			log_warn("%s: truncate after a failed append", ds->ds_path);
		return saved;
	}
	return 0;
}

/* The batch is durable: apply it to the table, compact when due.  In
 * Redis an op may have been refused (op_result): the table keeps what it
 * had. */
int
ds_apply(struct datastore *ds, double now, char *err, size_t errlen)
{
	char cerr[256];
	int rc = 0, n;

	if (ds->ds_path != NULL)
		ds->ds_lines += ds->ds_nops;
	for (size_t i = 0; i < ds->ds_nops; i++) {
		struct ds_op *o = &ds->ds_ops[i];

		if (o->op_result != 0)
			continue;
		if (o->op_withdraw)
			ds->ds_removed += (n = announce_remove(ds->ds_table,
			    o->op_an.an_domain, o->op_any_proxy ? NULL : o->op_an.an_proxy,
			    o->op_an.an_operator));
		else
			n = announce_put(ds->ds_table, &o->op_an);
		if (n < 0 && rc == 0) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
		}
	}
	ds->ds_ndone = ds->ds_nops;	/* their op_result stays readable */
	datastore_abort(ds);
	if (ds->ds_path != NULL &&
	    ds->ds_lines > 2 * announce_count(ds->ds_table) + DATASTORE_COMPACT_SLACK) {
		if (datastore_compact(ds, now, cerr, sizeof(cerr)) == -1)
			log_warnx("datastore: compaction: %s", cerr);
		else
			log_debug("datastore %s compacted to %zu lines", ds->ds_path,
			    ds->ds_lines);
	}
	return rc;
}

int
datastore_commit(struct datastore *ds, double now, char *err, size_t errlen)
{
	int e;

	ds->ds_removed = 0;
	if (ds->ds_inflight) {
		snprintf(err, errlen, "%s: a commit is in flight", ds->ds_path);
		return -1;
	}
	if (ds->ds_nops == 0)
		return 0;
	if (ds->ds_redis != NULL) {
		if ((e = ds_redis_commit(ds, 0, err, errlen)) != 0) {
			datastore_abort(ds);
			return e;
		}
		return ds_apply(ds, now, err, errlen);
	}
	if ((e = ds_flush(ds)) != 0) {
		snprintf(err, errlen, "%s: append: %s", ds->ds_path, strerror(e));
		datastore_abort(ds);
		errno = e;
		return -1;
	}
	return ds_apply(ds, now, err, errlen);
}

static void ds_async_done(void *arg);

static void *
ds_thread_main(void *arg)
{
	struct datastore *ds = arg;
	int e;

	pthread_mutex_lock(&ds->ds_lock);
	for (;;) {
		while (!ds->ds_job && !ds->ds_stop)
			pthread_cond_wait(&ds->ds_cond, &ds->ds_lock);
		if (!ds->ds_job)
			break;
		pthread_mutex_unlock(&ds->ds_lock);
		e = ds_flush(ds);
		pthread_mutex_lock(&ds->ds_lock);
		ds->ds_job = 0;
		ds->ds_errno = e;
		/* the post queue's lock orders ds_errno before the completion */
		ds->ds_post(ds->ds_post_ctx, ds_async_done, ds);
	}
	pthread_mutex_unlock(&ds->ds_lock);
	return NULL;
}

/* On the owner's thread, posted by the flush thread. */
static void
ds_async_done(void *arg)
{
	struct datastore *ds = arg;
	char err[256] = "";
	int e;

	pthread_mutex_lock(&ds->ds_lock);
	e = ds->ds_errno;
	pthread_mutex_unlock(&ds->ds_lock);
	if (e != 0)
		snprintf(err, sizeof(err), "%s: append: %s", ds->ds_path, strerror(e));
	ds_async_finish(ds, e != 0 ? -1 : 0, err);
}

void
ds_async_finish(struct datastore *ds, int rc, const char *err)
{
	char aerr[256];

	ds->ds_inflight = 0;
	ds->ds_removed = 0;
	if (rc != 0) {
		datastore_abort(ds);
		ds->ds_done(ds->ds_done_arg, rc, err);
		return;
	}
	aerr[0] = '\0';
	rc = ds_apply(ds, now_wall(), aerr, sizeof(aerr));
	ds->ds_done(ds->ds_done_arg, rc, aerr);
}

int
datastore_commit_async(struct datastore *ds, datastore_post_fn post, void *ctx,
    datastore_done_fn done, void *arg)
{
	if (ds->ds_inflight)
		return -1;
	if (ds->ds_nops == 0)
		return 0;
	if (ds->ds_redis != NULL) {
		char err[256];

		ds->ds_inflight = 1;
		ds->ds_done = done;
		ds->ds_done_arg = arg;
		if (ds_redis_commit(ds, 1, err, sizeof(err)) == 1)
			return 1;
		ds->ds_inflight = 0;	/* not started: datastore_commit() says why */
		return -1;
	}
	if (ds->ds_path == NULL)
		return -1;	/* memory only: no thread, datastore_commit() at once */
	if (!ds->ds_started) {
		if (pthread_cond_init(&ds->ds_cond, NULL) != 0)
			return -1;
		if (pthread_create(&ds->ds_thread, NULL, ds_thread_main, ds) != 0) {
			pthread_cond_destroy(&ds->ds_cond);
			return -1;
		}
		ds->ds_started = 1;
	}
	ds->ds_inflight = 1;
	ds->ds_done = done;
	ds->ds_done_arg = arg;
	pthread_mutex_lock(&ds->ds_lock);
	ds->ds_post = post;
	ds->ds_post_ctx = ctx;
	ds->ds_job = 1;
	pthread_cond_signal(&ds->ds_cond);
	pthread_mutex_unlock(&ds->ds_lock);
	return 1;
}

void
datastore_start(struct datastore *ds, datastore_post_fn post, void *ctx)
{
	if (ds->ds_redis != NULL)
		ds_redis_start(ds, post, ctx);
}

size_t
datastore_staged(const struct datastore *ds)
{
	return ds->ds_nops;
}

int
datastore_op_result(const struct datastore *ds, size_t i)
{
	return i < ds->ds_ndone ? ds->ds_ops[i].op_result : 0;
}

int
datastore_busy(const struct datastore *ds)
{
	return ds->ds_inflight;
}

int
datastore_removed(const struct datastore *ds)
{
	return ds->ds_removed;
}

int
datastore_filter(struct datastore *ds, const char *op, announce_keep_fn keep, void *arg,
    double now, char *err, size_t errlen)
{
	struct announcement *v;
	int n, dropped = 0;

	if (ds->ds_inflight) {
		snprintf(err, errlen, "%s: a commit is in flight", ds->ds_path);
		return -1;
	}
	if ((n = announce_list(ds->ds_table, op, 0, &v)) <= 0) {
		if (n == -1)
			snprintf(err, errlen, "out of memory");
		return n;
	}
	datastore_abort(ds);
	for (int i = 0; i < n; i++) {
		if (keep(arg, &v[i]))
			continue;
		if (datastore_stage_withdraw(ds, v[i].an_domain, v[i].an_proxy,
		    v[i].an_operator) == -1) {
			snprintf(err, errlen, "out of memory");
			datastore_abort(ds);
			free(v);
			return -1;
		}
		dropped++;
	}
	free(v);
	if (datastore_commit(ds, now, err, errlen) < 0)
		return -1;
	return dropped;
}

int
datastore_announce(struct datastore *ds, const struct announcement *a, char *err,
    size_t errlen)
{
	int n = datastore_stage_announce(ds, a);

	if (n == -1) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return datastore_commit(ds, now_wall(), err, errlen) < 0 ? -1 : 0;
}

int
datastore_withdraw(struct datastore *ds, const char *domain, const char *proxy,
    const char *op, char *err, size_t errlen)
{
	int n = datastore_stage_withdraw(ds, domain, proxy, op);

	if (n == -1) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (n == 0)
		return 0;
	if (datastore_commit(ds, now_wall(), err, errlen) < 0)
		return -1;
	return ds->ds_removed;	/* with proxy NULL, every proxy's entry */
}
