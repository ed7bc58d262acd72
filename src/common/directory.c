/* directory.c - the operator directory (SPEC 3.1, 3.4).
 *
 * directory_load() reads every file once, checks the shape of every record,
 * replays the records into one JSON entry per operator and then freezes the
 * result: entries sorted by name (binary search) and a fingerprint index
 * sorted by fingerprint.  Nothing changes after that, so any number of
 * threads may read a directory while they hold a reference; the reference
 * count is atomic.  The watcher builds a new directory on change and swaps
 * the pointer under a mutex. */
#include <sys/stat.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "directory.h"
#include "log.h"

#define DIR_MAX_FILE	(16 * 1024 * 1024)	/* larger files are refused */

struct dir_entry {
	const char		*de_name;	/* borrowed from de_json */
	struct json_object	*de_json;	/* the entry, owned by dy_entries */
	const char		*de_peer;	/* peer_server address or NULL */
};

struct dir_fp {
	const char		*fp_hex;	/* borrowed from the entry */
	const char		*fp_name;
};

struct directory {
	atomic_int		 dy_refs;
	struct json_object	*dy_entries;	/* name -> entry, owns all JSON */
	struct dir_entry	*dy_ent;		/* sorted by name */
	size_t			 dy_nent;
	struct dir_fp		*dy_fp;		/* sorted by fingerprint */
	size_t			 dy_nfp;
};

struct directory_watch {
	char			**w_paths;
	char			 *w_sig;	/* file set signature of the last load attempt */
	pthread_mutex_t		  w_lock;	/* guards w_dir */
	struct directory	 *w_dir;
};

static const char *dir_sections[] = {
	"channels", "groups", "services", "settings", "certificates"
};

/* ---- error text ---------------------------------------------------------- */

static int
dir_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ---- file set ------------------------------------------------------------- */

struct dir_files {
	char	**f_names;
	size_t	  f_n, f_cap;
};

static int
files_add(struct dir_files *f, const char *path)
{
	char **n;

	if (f->f_n == f->f_cap) {
		f->f_cap = f->f_cap ? f->f_cap * 2 : 16;
		if ((n = reallocarray(f->f_names, f->f_cap, sizeof(*n))) == NULL)
			return -1;
		f->f_names = n;
	}
	if ((f->f_names[f->f_n] = strdup(path)) == NULL)
		return -1;
	f->f_n++;
	return 0;
}

static void
files_free(struct dir_files *f)
{
	for (size_t i = 0; i < f->f_n; i++)
		free(f->f_names[i]);
	free(f->f_names);
	memset(f, 0, sizeof(*f));
}

static int
files_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A folder contributes every regular file whose name ends in ".json",
 * in byte order of the names. */
static int
files_scan_dir(struct dir_files *f, const char *dir, char *err, size_t errlen)
{
	DIR *dp;
	struct dirent *de;
	struct stat st;
	char path[4096];
	size_t first = f->f_n, len;

	if ((dp = opendir(dir)) == NULL)
		return dir_err(err, errlen, "%s: %s", dir, strerror(errno));
	while ((de = readdir(dp)) != NULL) {
		len = strlen(de->d_name);
		/* Hidden names are editor locks and temporaries (".#a.json"). */
		if (de->d_name[0] == '.' || len <= 5 ||
		    strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= sizeof(path))
			continue;
		/* stat follows symlinks; a dangling one is skipped. */
		if (stat(path, &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		if (files_add(f, path) == -1) {
			closedir(dp);
			return dir_err(err, errlen, "%s: out of memory", dir);
		}
	}
	closedir(dp);
	qsort(f->f_names + first, f->f_n - first, sizeof(char *), files_cmp);
	return 0;
}

static int
files_collect(char *const *paths, struct dir_files *f, char *err, size_t errlen)
{
	struct stat st;

	if (paths == NULL || paths[0] == NULL)
		return dir_err(err, errlen, "directory: no path given");
	for (size_t i = 0; paths[i] != NULL; i++) {
		if (stat(paths[i], &st) == -1)
			return dir_err(err, errlen, "%s: %s", paths[i], strerror(errno));
		if (S_ISDIR(st.st_mode)) {
			if (files_scan_dir(f, paths[i], err, errlen) == -1)
				return -1;
		} else if (files_add(f, paths[i]) == -1)
			return dir_err(err, errlen, "%s: out of memory", paths[i]);
	}
	return 0;
}

/* ---- parsing and checking -------------------------------------------------- */

static struct json_object *
dir_parse_file(const char *path, char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *o = NULL;
	enum json_tokener_error jerr;
	FILE *fp;
	char *buf;
	size_t n, end;
	long sz;

	if ((fp = fopen(path, "r")) == NULL) {
		dir_err(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fseek(fp, 0, SEEK_END) == -1 || (sz = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) == -1) {
		dir_err(err, errlen, "%s: %s", path, strerror(errno));
		fclose(fp);
		return NULL;
	}
	if (sz > DIR_MAX_FILE) {
		dir_err(err, errlen, "%s: larger than %d bytes", path, DIR_MAX_FILE);
		fclose(fp);
		return NULL;
	}
	if ((buf = malloc((size_t)sz + 1)) == NULL) {
		dir_err(err, errlen, "%s: out of memory", path);
		fclose(fp);
		return NULL;
	}
	/* The file may change while we read it: parse what we got. */
	n = fread(buf, 1, (size_t)sz, fp);
	fclose(fp);
	buf[n] = '\0';

	if ((tok = json_tokener_new()) == NULL) {
		free(buf);
		dir_err(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	o = json_tokener_parse_ex(tok, buf, (int)n);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (o == NULL || jerr != json_tokener_success) {
		if (jerr == json_tokener_continue || (jerr == json_tokener_success && o == NULL))
			dir_err(err, errlen, "%s: truncated JSON", path);
		else
			dir_err(err, errlen, "%s: invalid JSON at byte %zu: %s", path, end,
			    json_tokener_error_desc(jerr));
		json_object_put(o);
		o = NULL;
	} else {
		while (end < n && isspace((unsigned char)buf[end]))
			end++;
		if (end < n) {
			dir_err(err, errlen, "%s: trailing data at byte %zu", path, end);
			json_object_put(o);
			o = NULL;
		}
	}
	json_tokener_free(tok);
	free(buf);
	return o;
}

static int
is_type(struct json_object *o, enum json_type t)
{
	return o != NULL && json_object_is_type(o, t);
}

/* Optional member of type t: absent is fine, wrong type is not.  A JSON
 * null counts as absent and is removed here, so no reader of the frozen
 * directory (nor a proxy reading _client.entry) ever meets it. */
static int
opt_type(struct json_object *o, const char *key, enum json_type t)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return 1;
	if (v == NULL) {
		json_object_object_del(o, key);
		return 1;
	}
	return is_type(v, t);
}

static int
req_string(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && is_type(v, json_type_string);
}

static int
check_strings(struct json_object *a)
{
	if (!is_type(a, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(a); i++)
		if (!is_type(json_object_array_get_idx(a, i), json_type_string))
			return 0;
	return 1;
}

static const char *
check_permissions(struct json_object *o)
{
	struct json_object *a, *p, *r;

	if (!opt_type(o, "permissions", json_type_array))
		return "permissions must be a list";
	if (!json_object_object_get_ex(o, "permissions", &a))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		p = json_object_array_get_idx(a, i);
		if (!is_type(p, json_type_object) || !req_string(p, "group"))
			return "a permission needs a string \"group\"";
		if (!json_object_object_get_ex(p, "rights", &r) || !check_strings(r))
			return "a permission needs \"rights\", a list of strings";
	}
	return NULL;
}

/* Check data of a known section; returns the reason or NULL when fine. */
static const char *
check_section(const char *section, struct json_object *data)
{
	struct json_object *it, *v, *m;
	const char *why;
	size_t n;

	if (!is_type(data, json_type_array))
		return "data must be a list";
	n = json_object_array_length(data);
	if (strcmp(section, "groups") == 0)
		return check_strings(data) ? NULL : "groups must be strings";
	for (size_t i = 0; i < n; i++) {
		it = json_object_array_get_idx(data, i);
		if (!is_type(it, json_type_object))
			return "items must be objects";
		if (strcmp(section, "channels") == 0) {
			if (!req_string(it, "type"))
				return "a channel needs a string \"type\"";
			if (!opt_type(it, "settings", json_type_object))
				return "channel settings must be an object";
			if (strcmp(json_object_get_string(json_object_object_get(it, "type")),
			    "peer_server") == 0 &&
			    (!json_object_object_get_ex(it, "settings", &v) || !req_string(v, "address")))
				return "a peer_server channel needs settings.address";
		} else if (strcmp(section, "services") == 0) {
			if (!req_string(it, "name"))
				return "a service needs a string \"name\"";
			if ((why = check_permissions(it)) != NULL)
				return why;
			if (!opt_type(it, "methods", json_type_array))
				return "methods must be a list";
			if (!json_object_object_get_ex(it, "methods", &v))
				continue;
			for (size_t j = 0; j < json_object_array_length(v); j++) {
				m = json_object_array_get_idx(v, j);
				if (!is_type(m, json_type_object) || !req_string(m, "name"))
					return "a method needs a string \"name\"";
				if ((why = check_permissions(m)) != NULL)
					return why;
			}
		} else if (strcmp(section, "settings") == 0) {
			if (!opt_type(it, "service", json_type_string) ||
			    !opt_type(it, "operator", json_type_string) ||
			    !opt_type(it, "environment", json_type_string))
				return "service, operator and environment must be strings";
			if (!json_object_object_get_ex(it, "settings", &v) ||
			    !is_type(v, json_type_object))
				return "an item needs a \"settings\" object";
		} else if (strcmp(section, "certificates") == 0) {
			if (!req_string(it, "fingerprint"))
				return "a certificate needs a string \"fingerprint\"";
			v = json_object_object_get(it, "fingerprint");
			if (json_object_get_string_len(v) != 64)
				return "a fingerprint is 64 hex digits";
			for (const char *s = json_object_get_string(v); *s; s++)
				if (!isxdigit((unsigned char)*s))
					return "a fingerprint is 64 hex digits";
			if (!opt_type(it, "key_usage", json_type_string))
				return "key_usage must be a string";
		}
	}
	return NULL;
}

static struct json_object *
entry_new(const char *name)
{
	struct json_object *e = json_object_new_object();

	json_object_object_add(e, "name", json_object_new_string(name));
	for (size_t i = 0; i < sizeof(dir_sections) / sizeof(dir_sections[0]); i++)
		json_object_object_add(e, dir_sections[i], json_object_new_array());
	return e;
}

/* Replay the records of one file into entries. */
static int
dir_replay(struct json_object *entries, const char *path, struct json_object *top,
    char *err, size_t errlen)
{
	struct json_object *recs, *r, *v, *e;
	const char *name, *section, *why;

	if (!is_type(top, json_type_object) ||
	    !json_object_object_get_ex(top, "records", &recs) || !is_type(recs, json_type_array))
		return dir_err(err, errlen, "%s: expected {\"records\": [...]}", path);
	for (size_t i = 0; i < json_object_array_length(recs); i++) {
		r = json_object_array_get_idx(recs, i);
		if (!is_type(r, json_type_object) || !req_string(r, "name") ||
		    !req_string(r, "section") || !json_object_object_get_ex(r, "data", &v))
			return dir_err(err, errlen,
			    "%s: record %zu: needs string name, string section and data", path, i);
		if (!opt_type(r, "created_at", json_type_string))
			return dir_err(err, errlen, "%s: record %zu: created_at must be a string",
			    path, i);
		name = json_object_get_string(json_object_object_get(r, "name"));
		section = json_object_get_string(json_object_object_get(r, "section"));
		if (*name == '\0')
			return dir_err(err, errlen, "%s: record %zu: empty name", path, i);
		for (size_t s = 0; s < sizeof(dir_sections) / sizeof(dir_sections[0]); s++)
			if (strcmp(section, dir_sections[s]) == 0 &&
			    (why = check_section(section, v)) != NULL)
				return dir_err(err, errlen, "%s: record %zu (%s, %s): %s",
				    path, i, name, section, why);
		if (strcmp(section, "name") == 0)
			return dir_err(err, errlen, "%s: record %zu: invalid section", path, i);
		if (!json_object_object_get_ex(entries, name, &e)) {
			e = entry_new(name);
			json_object_object_add(entries, name, e);
		}
		/* A record replaces the whole section.  Sections we do not know
		 * (the Go system's "preferences") are kept but never read. */
		json_object_object_add(e, section, json_object_get(v));
	}
	return 0;
}

/* ---- freezing ------------------------------------------------------------ */

static int
ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dir_entry *)a)->de_name, ((const struct dir_entry *)b)->de_name);
}

static int
fp_cmp(const void *a, const void *b)
{
	const struct dir_fp *x = a, *y = b;
	int c = strcasecmp(x->fp_hex, y->fp_hex);

	return c ? c : strcmp(x->fp_name, y->fp_name);
}

/* Only encryption keys identify TLS peers; "signing" ones are for records.
 * No key_usage (absent or null) means encryption. */
static int
cert_is_tls(struct json_object *c)
{
	struct json_object *u;

	if (!json_object_object_get_ex(c, "key_usage", &u) || u == NULL)
		return 1;
	return is_type(u, json_type_string) &&
	    strcmp(json_object_get_string(u), "encryption") == 0;
}

static const char *
entry_peer(struct json_object *e)
{
	struct json_object *chans, *c, *s, *a;

	json_object_object_get_ex(e, "channels", &chans);
	for (size_t i = 0; i < json_object_array_length(chans); i++) {
		c = json_object_array_get_idx(chans, i);
		if (strcmp(json_object_get_string(json_object_object_get(c, "type")),
		    "peer_server") != 0)
			continue;
		if (json_object_object_get_ex(c, "settings", &s) &&
		    json_object_object_get_ex(s, "address", &a))
			return json_object_get_string(a);
	}
	return NULL;
}

static int
dir_freeze(struct directory *d)
{
	struct json_object *certs;
	size_t n = 0;

	d->dy_nent = (size_t)json_object_object_length(d->dy_entries);
	if ((d->dy_ent = calloc(d->dy_nent + 1, sizeof(*d->dy_ent))) == NULL)
		return -1;
	json_object_object_foreach(d->dy_entries, name, e) {
		d->dy_ent[n].de_name = name;
		d->dy_ent[n].de_json = e;
		d->dy_ent[n].de_peer = entry_peer(e);
		json_object_object_get_ex(e, "certificates", &certs);
		d->dy_nfp += json_object_array_length(certs);
		n++;
	}
	qsort(d->dy_ent, d->dy_nent, sizeof(*d->dy_ent), ent_cmp);

	if ((d->dy_fp = calloc(d->dy_nfp + 1, sizeof(*d->dy_fp))) == NULL)
		return -1;
	d->dy_nfp = 0;
	for (size_t i = 0; i < d->dy_nent; i++) {
		json_object_object_get_ex(d->dy_ent[i].de_json, "certificates", &certs);
		for (size_t j = 0; j < json_object_array_length(certs); j++) {
			struct json_object *c = json_object_array_get_idx(certs, j);

			if (!cert_is_tls(c))
				continue;
			d->dy_fp[d->dy_nfp].fp_hex =
			    json_object_get_string(json_object_object_get(c, "fingerprint"));
			d->dy_fp[d->dy_nfp].fp_name = d->dy_ent[i].de_name;
			d->dy_nfp++;
		}
	}
	qsort(d->dy_fp, d->dy_nfp, sizeof(*d->dy_fp), fp_cmp);
	return 0;
}

/* ---- public API --------------------------------------------------------- */

static void
dir_free(struct directory *d)
{
	json_object_put(d->dy_entries);
	free(d->dy_ent);
	free(d->dy_fp);
	free(d);
}

struct directory *
directory_load(char *const *paths, char *err, size_t errlen)
{
	struct dir_files files = { 0 };
	struct directory *d;
	struct json_object *top;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		dir_err(err, errlen, "directory: out of memory");
		return NULL;
	}
	atomic_init(&d->dy_refs, 1);
	d->dy_entries = json_object_new_object();
	if (files_collect(paths, &files, err, errlen) == -1)
		goto fail;
	for (size_t i = 0; i < files.f_n; i++) {
		if ((top = dir_parse_file(files.f_names[i], err, errlen)) == NULL)
			goto fail;
		if (dir_replay(d->dy_entries, files.f_names[i], top, err, errlen) == -1) {
			json_object_put(top);
			goto fail;
		}
		json_object_put(top);
	}
	if (dir_freeze(d) == -1) {
		dir_err(err, errlen, "directory: out of memory");
		goto fail;
	}
	files_free(&files);
	return d;
fail:
	files_free(&files);
	dir_free(d);
	return NULL;
}

void
directory_ref(struct directory *d)
{
	if (d != NULL)
		atomic_fetch_add_explicit(&d->dy_refs, 1, memory_order_relaxed);
}

void
directory_unref(struct directory *d)
{
	if (d != NULL && atomic_fetch_sub_explicit(&d->dy_refs, 1, memory_order_acq_rel) == 1)
		dir_free(d);
}

static const struct dir_entry *
dir_find(const struct directory *d, const char *name)
{
	struct dir_entry key = { .de_name = name };

	if (d == NULL || name == NULL)
		return NULL;
	return bsearch(&key, d->dy_ent, d->dy_nent, sizeof(key), ent_cmp);
}

struct json_object *
directory_entry(const struct directory *d, const char *name)
{
	const struct dir_entry *e = dir_find(d, name);

	return e ? e->de_json : NULL;
}

struct json_object *
directory_client_entry(const struct directory *d, const char *name)
{
	const struct dir_entry *e = dir_find(d, name);
	struct json_object *o, *v, *copy;

	if (e == NULL)
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(e->de_name));
	/* Deep copies: the shared entry's reference counts are never touched,
	 * so threads need no lock to read it. */
	for (int i = 0; i < 2; i++) {
		const char *k = i == 0 ? "groups" : "settings";

		json_object_object_get_ex(e->de_json, k, &v);
		copy = NULL;
		if (json_object_deep_copy(v, &copy, NULL) != 0) {
			json_object_put(o);
			return NULL;
		}
		json_object_object_add(o, k, copy);
	}
	return o;
}

const char *
directory_peer_address(const struct directory *d, const char *name)
{
	const struct dir_entry *e = dir_find(d, name);

	return e ? e->de_peer : NULL;
}

int
directory_has_fingerprint(const struct directory *d, const char *name, const char *fp)
{
	struct dir_fp key = { .fp_hex = fp, .fp_name = name };

	if (d == NULL || name == NULL || fp == NULL)
		return 0;
	return bsearch(&key, d->dy_fp, d->dy_nfp, sizeof(key), fp_cmp) != NULL;
}

void
directory_foreach_fingerprint(const struct directory *d, const char *fp,
    void (*fn)(void *arg, const char *name), void *arg)
{
	size_t lo = 0, hi, mid;

	if (d == NULL || fp == NULL)
		return;
	/* Lower bound of fp, then every entry with that fingerprint. */
	hi = d->dy_nfp;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (strcasecmp(d->dy_fp[mid].fp_hex, fp) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < d->dy_nfp && strcasecmp(d->dy_fp[lo].fp_hex, fp) == 0; lo++)
		fn(arg, d->dy_fp[lo].fp_name);
}

static int
strv_has(struct json_object *a, const char *s)
{
	for (size_t i = 0; i < json_object_array_length(a); i++)
		if (strcmp(json_object_get_string(json_object_array_get_idx(a, i)), s) == 0)
			return 1;
	return 0;
}

/* Does a permission list grant `call` to one of groups, or to "*"? */
static int
perms_grant(struct json_object *holder, struct json_object *groups)
{
	struct json_object *perms, *p, *g, *r;
	const char *gs;

	if (!json_object_object_get_ex(holder, "permissions", &perms) || perms == NULL)
		return 0;
	for (size_t i = 0; i < json_object_array_length(perms); i++) {
		p = json_object_array_get_idx(perms, i);
		json_object_object_get_ex(p, "group", &g);
		json_object_object_get_ex(p, "rights", &r);
		gs = json_object_get_string(g);
		if ((strcmp(gs, "*") == 0 || strv_has(groups, gs)) && strv_has(r, "call"))
			return 1;
	}
	return 0;
}

int
directory_can_call(const struct directory *d, const char *caller, const char *callee,
    const char *method)
{
	const struct dir_entry *ce = dir_find(d, caller), *ee = dir_find(d, callee);
	struct json_object *groups, *services, *s, *methods, *m;

	if (ce == NULL || ee == NULL || method == NULL)
		return 0;
	json_object_object_get_ex(ce->de_json, "groups", &groups);
	json_object_object_get_ex(ee->de_json, "services", &services);
	for (size_t i = 0; i < json_object_array_length(services); i++) {
		s = json_object_array_get_idx(services, i);
		if (!json_object_object_get_ex(s, "methods", &methods) || methods == NULL)
			continue;
		for (size_t j = 0; j < json_object_array_length(methods); j++) {
			m = json_object_array_get_idx(methods, j);
			if (strcmp(json_object_get_string(json_object_object_get(m, "name")),
			    method) != 0)
				continue;
			/* The first service listing the method decides. */
			return perms_grant(s, groups) || perms_grant(m, groups);
		}
	}
	return 0;
}

/* ---- watcher ------------------------------------------------------------- */

static void
strv_free(char **v)
{
	if (v == NULL)
		return;
	for (size_t i = 0; v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* Signature of the file set: every file's name, size, mtime and inode (a
 * rename over the file changes the inode even within one mtime tick).  A
 * missing path or unreadable folder is part of the signature too. */
static char *
watch_signature(char *const *paths)
{
	struct dir_files files = { 0 };
	struct stat st;
	char *sig = NULL, line[4200], e[256];
	size_t len = 0, cap = 0, n;

	if (files_collect(paths, &files, e, sizeof(e)) == -1)
		snprintf(line, sizeof(line), "error %s\n", e);
	else
		line[0] = '\0';
	for (size_t i = 0; i <= files.f_n; i++) {
		if (i > 0) {
			if (stat(files.f_names[i - 1], &st) == -1)
				memset(&st, 0, sizeof(st));
			snprintf(line, sizeof(line), "%s %lld %lld.%09ld %llu\n",
			    files.f_names[i - 1], (long long)st.st_size,
			    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
			    (unsigned long long)st.st_ino);
		}
		n = strlen(line);
		if (len + n + 1 > cap) {
			char *p;

			cap = (len + n + 1) * 2;
			if ((p = realloc(sig, cap)) == NULL) {
				free(sig);
				files_free(&files);
				return NULL;
			}
			sig = p;
		}
		memcpy(sig + len, line, n + 1);
		len += n;
	}
	files_free(&files);
	return sig;
}

struct directory_watch *
directory_watch_new(char *const *paths, char *err, size_t errlen)
{
	struct directory_watch *w;
	size_t n = 0;

	if ((w = calloc(1, sizeof(*w))) == NULL) {
		dir_err(err, errlen, "directory: out of memory");
		return NULL;
	}
	while (paths != NULL && paths[n] != NULL)
		n++;
	if ((w->w_paths = calloc(n + 1, sizeof(char *))) == NULL)
		goto oom;
	for (size_t i = 0; i < n; i++)
		if ((w->w_paths[i] = strdup(paths[i])) == NULL)
			goto oom;
	pthread_mutex_init(&w->w_lock, NULL);
	w->w_sig = watch_signature(w->w_paths);
	if ((w->w_dir = directory_load(w->w_paths, err, errlen)) == NULL) {
		directory_watch_free(w);
		return NULL;
	}
	return w;
oom:
	strv_free(w->w_paths);
	free(w);
	dir_err(err, errlen, "directory: out of memory");
	return NULL;
}

struct directory *
directory_watch_get(struct directory_watch *w)
{
	struct directory *d;

	pthread_mutex_lock(&w->w_lock);
	d = w->w_dir;
	directory_ref(d);
	pthread_mutex_unlock(&w->w_lock);
	return d;
}

int
directory_watch_poll(struct directory_watch *w)
{
	struct directory *d, *old;
	char *sig, err[512];

	if ((sig = watch_signature(w->w_paths)) == NULL)
		return 0;
	if (w->w_sig != NULL && strcmp(sig, w->w_sig) == 0) {
		free(sig);
		return 0;
	}
	/* Remember this state even when it fails to load, so a broken file
	 * is reported once, not at every poll. */
	free(w->w_sig);
	w->w_sig = sig;
	if ((d = directory_load(w->w_paths, err, sizeof(err))) == NULL) {
		log_warnx("directory: keeping the last good copy: %s", err);
		return 0;
	}
	pthread_mutex_lock(&w->w_lock);
	old = w->w_dir;
	w->w_dir = d;
	pthread_mutex_unlock(&w->w_lock);
	directory_unref(old);
	log_info("directory: reloaded, %zu operators", d->dy_nent);
	return 1;
}

void
directory_watch_free(struct directory_watch *w)
{
	if (w == NULL)
		return;
	directory_unref(w->w_dir);
	pthread_mutex_destroy(&w->w_lock);
	strv_free(w->w_paths);
	free(w->w_sig);
	free(w);
}
