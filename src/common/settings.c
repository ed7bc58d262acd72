/* settings.c - load PROXY_SETTINGS / HYPER_SETTINGS and read them strictly.
 *
 * Loading, in order:
 *  1. every path of the colon-separated list is a file or a folder; a
 *     folder contributes its *.yml, *.yaml and *.json regular files in
 *     strcmp order (not recursive);
 *  2. each file becomes a json-c tree (YAML through libyaml events, JSON
 *     through the strict json-c tokener); every node carries its origin
 *     (file name and absolute folder) as json-c userdata;
 *  3. the trees are merged in order: maps merge recursively, anything else
 *     replaces the earlier value;
 *  4. the top-level `vars` map is taken out of the merged tree and every
 *     string is expanded ($DIR from the string's own origin, $$, $NAME and
 *     ${NAME} from vars).
 *
 * An origin is refcounted: each node holds one reference and drops it from
 * its userdata delete callback, so putting the tree frees everything. */
#include <sys/stat.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <yaml.h>

#include "settings.h"

#define SETTINGS_MAX_FILE	(16 * 1024 * 1024)	/* bytes per settings file */
#define SETTINGS_MAX_DEPTH	64			/* nesting of maps and lists */

struct origin {
	int		 o_refs;
	char		*o_dir;		/* absolute folder, for $DIR */
	char		 o_file[];	/* as named by the path list; o_dir follows */
};

/* ---- origins ------------------------------------------------------------ */

static struct origin *
origin_new(const char *file, char *err, size_t errlen)
{
	struct origin *o;
	char dir[PATH_MAX], abs[PATH_MAX];
	const char *slash;
	size_t flen, dlen;

	slash = strrchr(file, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == file)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - file), file);
	/* The folder, not the file, is resolved: a symlinked file still
	 * takes $DIR from the folder it is listed in. */
	if (realpath(dir, abs) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return NULL;
	}
	flen = strlen(file);
	dlen = strlen(abs);
	if ((o = malloc(sizeof(*o) + flen + 1 + dlen + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", file);
		return NULL;
	}
	o->o_refs = 1;
	memcpy(o->o_file, file, flen + 1);
	o->o_dir = o->o_file + flen + 1;
	memcpy(o->o_dir, abs, dlen + 1);
	return o;
}

static void
origin_unref(struct origin *o)
{
	if (o != NULL && --o->o_refs == 0)
		free(o);
}

static void
origin_release(struct json_object *jso, void *userdata)
{
	origin_unref((struct origin *)((char *)userdata - offsetof(struct origin, o_file)));
}

static void
origin_set(struct json_object *jso, struct origin *o)
{
	if (jso == NULL)
		return;
	/* The tokener keeps a double's source text as userdata together with
	 * a serializer that prints it: restore the default serializer first. */
	if (json_object_is_type(jso, json_type_double))
		json_object_set_serializer(jso, NULL, NULL, NULL);
	o->o_refs++;
	json_object_set_userdata(jso, o->o_file, origin_release);
}

static struct origin *
origin_of(struct json_object *jso)
{
	char *file;

	if (jso == NULL || (file = json_object_get_userdata(jso)) == NULL)
		return NULL;
	return (struct origin *)(file - offsetof(struct origin, o_file));
}

const char *
settings_origin(struct json_object *value)
{
	struct origin *o = origin_of(value);

	return o != NULL ? o->o_file : "?";
}

const char *
settings_origin_at(struct json_object *tree, const char *path)
{
	struct json_object *v = tree, *next;
	const char *p = path;
	char key[128], *end;
	size_t n;
	long i;

	while (*p != '\0' && v != NULL) {
		n = strcspn(p, ".[");
		if (n > 0) {
			if (n >= sizeof(key) || !json_object_is_type(v, json_type_object))
				break;
			memcpy(key, p, n);
			key[n] = '\0';
			if (!json_object_object_get_ex(v, key, &next))
				break;
			v = next;
			p += n;
		} else if (*p == '[') {
			i = strtol(p + 1, &end, 10);
			p = end;
			if (*p != ']' || !json_object_is_type(v, json_type_array) || i < 0 ||
			    (size_t)i >= json_object_array_length(v))
				break;
			v = json_object_array_get_idx(v, (size_t)i);
			p++;
		}
		if (*p == '.')
			p++;
	}
	return settings_origin(v);
}

/* ---- YAML --------------------------------------------------------------- */

static int
yaml_is_int(const char *s, long long *out)
{
	const char *p = s;
	char *end;
	int base = 10;

	if (*p == '-' || *p == '+')
		p++;
	if (p[0] == '0' && p[1] == 'x' && p == s) {
		base = 16;
		p += 2;
	} else if (p[0] == '0' && p[1] == 'o' && p == s) {
		base = 8;
		p += 2;
	}
	if (*p == '\0')
		return 0;
	for (const char *q = p; *q; q++)
		if (!(base == 16 ? isxdigit((unsigned char)*q) :
		    base == 8 ? (*q >= '0' && *q <= '7') : isdigit((unsigned char)*q)))
			return 0;
	errno = 0;
	*out = strtoll(base == 10 ? s : p, &end, base);
	return errno == ERANGE ? -1 : 1;
}

static int
yaml_is_float(const char *s, double *out)
{
	int digits = 0;
	char *end;

	for (const char *q = s; *q; q++) {
		if (isdigit((unsigned char)*q))
			digits++;
		else if (strchr("+-.eE", *q) == NULL)
			return 0;
	}
	if (digits == 0)
		return 0;
	errno = 0;
	*out = strtod(s, &end);
	return *end == '\0' && errno != ERANGE;
}

/* A plain scalar typed like YAML 1.2's core schema; anything else is text.
 * Sets *isnull for null, since json-c represents null as NULL. */
static struct json_object *
yaml_plain(const char *s, size_t len, int *isnull, const char **why)
{
	long long ll;
	double d;
	int r;

	*isnull = 0;
	if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	    strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0) {
		*isnull = 1;
		return NULL;
	}
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return json_object_new_boolean(1);
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return json_object_new_boolean(0);
	if ((r = yaml_is_int(s, &ll)) == 1)
		return json_object_new_int64(ll);
	if (r == -1) {
		*why = "integer out of range";
		return NULL;
	}
	if (yaml_is_float(s, &d))
		return json_object_new_double(d);
	return json_object_new_string_len(s, (int)len);
}

struct yaml_frame {
	struct json_object	*yf_node;	/* map or list being filled */
	char			*yf_key;	/* map: key waiting for its value */
};

/* Add v (NULL: null) to the innermost container, or make it the document. */
static int
yaml_add(struct yaml_frame *st, int depth, struct json_object **doc,
    struct json_object *v)
{
	struct yaml_frame *f;
	int r;

	if (depth == 0) {
		*doc = v;
		return 0;
	}
	f = &st[depth - 1];
	if (json_object_is_type(f->yf_node, json_type_array))
		return json_object_array_add(f->yf_node, v);
	r = json_object_object_add(f->yf_node, f->yf_key, v);
	free(f->yf_key);
	f->yf_key = NULL;
	return r;
}

static struct json_object *
yaml_parse(const char *file, const unsigned char *buf, size_t len,
    struct origin *o, char *err, size_t errlen)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct yaml_frame st[SETTINGS_MAX_DEPTH];
	struct json_object *doc = NULL, *v;
	const char *why = NULL;
	char whybuf[128];
	int depth = 0, ndocs = 0, done = 0, isnull, failed = 0;
	size_t line = 0;

	if (!yaml_parser_initialize(&p)) {
		snprintf(err, errlen, "%s: out of memory", file);
		return NULL;
	}
	yaml_parser_set_input_string(&p, buf, len);
	while (!done && !failed) {
		if (!yaml_parser_parse(&p, &ev)) {
			snprintf(err, errlen, "%s: line %zu: %s%s%s", file,
			    (size_t)p.problem_mark.line + 1,
			    p.problem ? p.problem : "syntax error",
			    p.context ? " " : "", p.context ? p.context : "");
			failed = 1;
			break;
		}
		line = ev.start_mark.line + 1;
		v = NULL;
		isnull = 0;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++ndocs > 1)
				why = "only one YAML document per file";
			break;
		case YAML_ALIAS_EVENT:
			why = "anchors and aliases are not supported";
			break;
		case YAML_SCALAR_EVENT:
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			if ((ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor :
			    ev.type == YAML_MAPPING_START_EVENT ?
			    ev.data.mapping_start.anchor : ev.data.sequence_start.anchor)) {
				why = "anchors and aliases are not supported";
				break;
			}
			if (depth > 0 && st[depth - 1].yf_key == NULL &&
			    json_object_is_type(st[depth - 1].yf_node, json_type_object)) {
				/* A map key: only scalars, each once. */
				const char *k;

				if (ev.type != YAML_SCALAR_EVENT) {
					why = "map keys must be scalars";
					break;
				}
				k = (const char *)ev.data.scalar.value;
				if (json_object_object_get_ex(st[depth - 1].yf_node, k, NULL)) {
					snprintf(whybuf, sizeof(whybuf), "duplicate key '%.64s'", k);
					why = whybuf;
				}
				else if ((st[depth - 1].yf_key = strdup(k)) == NULL)
					why = "out of memory";
				break;
			}
			if (ev.type == YAML_SCALAR_EVENT) {
				const char *tag = (const char *)ev.data.scalar.tag;
				const char *s = (const char *)ev.data.scalar.value;
				size_t n = ev.data.scalar.length;

				if (tag != NULL && strcmp(tag, YAML_STR_TAG) != 0 &&
				    strcmp(tag, "!") != 0) {
					why = "tags are not supported";
					break;
				}
				/* Quoted, block and !!str scalars are text. */
				if (tag == NULL && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
					v = yaml_plain(s, n, &isnull, &why);
				else
					v = json_object_new_string_len(s, (int)n);
				if (why != NULL)
					break;
			} else if (depth == SETTINGS_MAX_DEPTH) {
				why = "nesting too deep";
				break;
			} else {
				v = ev.type == YAML_MAPPING_START_EVENT ?
				    json_object_new_object() : json_object_new_array();
			}
			if (v == NULL && !isnull) {
				why = "out of memory";
				break;
			}
			origin_set(v, o);
			if (yaml_add(st, depth, &doc, v) != 0) {
				json_object_put(v);
				why = "out of memory";
				break;
			}
			if (ev.type != YAML_SCALAR_EVENT) {
				st[depth].yf_node = v;
				st[depth].yf_key = NULL;
				depth++;
			}
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (why != NULL) {
			snprintf(err, errlen, "%s: line %zu: %s", file, line, why);
			failed = 1;
		}
	}
	/* The document owns every container; only pending keys are ours. */
	for (int i = 0; i < depth; i++)
		free(st[i].yf_key);
	yaml_parser_delete(&p);
	if (failed) {
		json_object_put(doc);
		return NULL;
	}
	if (doc == NULL) {
		/* An empty file (or a lone null document) is an empty map. */
		doc = json_object_new_object();
		origin_set(doc, o);
	}
	return doc;
}

/* ---- JSON --------------------------------------------------------------- */

static void
json_tag(struct json_object *jso, struct origin *o)
{
	origin_set(jso, o);
	if (json_object_is_type(jso, json_type_object)) {
		json_object_object_foreach(jso, k, v) {
			(void)k;
			json_tag(v, o);
		}
	} else if (json_object_is_type(jso, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(jso); i++)
			json_tag(json_object_array_get_idx(jso, i), o);
	}
}

/* JSON whitespace; strchr() would also match the terminating NUL. */
static int
json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static struct json_object *
json_parse(const char *file, const char *buf, size_t len, struct origin *o,
    char *err, size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *doc;
	enum json_tokener_error jerr;
	size_t end, line = 1, i;

	for (i = 0; i < len && json_space(buf[i]); i++)
		;
	if (i == len) {
		doc = json_object_new_object();
		origin_set(doc, o);
		return doc;
	}
	if ((tok = json_tokener_new_ex(SETTINGS_MAX_DEPTH)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", file);
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	doc = json_tokener_parse_ex(tok, buf, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (jerr == json_tokener_success) {
		/* Only whitespace may follow the value. */
		for (i = end; i < len && json_space(buf[i]); i++)
			;
		if (i < len) {
			end = i;
			jerr = json_tokener_error_parse_unexpected;
		}
	} else if (jerr == json_tokener_continue) {
		jerr = json_tokener_error_parse_eof;
	}
	if (jerr != json_tokener_success) {
		for (i = 0; i < end && i < len; i++)
			if (buf[i] == '\n')
				line++;
		snprintf(err, errlen, "%s: line %zu: %s", file, line,
		    jerr == json_tokener_error_parse_unexpected && end < len &&
		    doc != NULL ? "unexpected data after the JSON value" :
		    json_tokener_error_desc(jerr));
		json_object_put(doc);
		return NULL;
	}
	if (doc == NULL) {          /* the document is a JSON null */
		snprintf(err, errlen, "%s: the top level must be a map", file);
		return NULL;
	}
	json_tag(doc, o);
	return doc;
}

/* ---- files and folders -------------------------------------------------- */

static struct json_object *
settings_file(const char *file, char *err, size_t errlen)
{
	struct json_object *doc = NULL;
	struct origin *o;
	FILE *fp;
	char *buf = NULL, *nb;
	size_t len = 0, cap = 0, n;

	if ((fp = fopen(file, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return NULL;
	}
	do {
		if (len == cap) {
			if (cap >= SETTINGS_MAX_FILE) {
				snprintf(err, errlen, "%s: larger than %d bytes", file,
				    SETTINGS_MAX_FILE);
				goto out;
			}
			cap = cap ? cap * 2 : 16384;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				snprintf(err, errlen, "%s: out of memory", file);
				goto out;
			}
			buf = nb;
		}
		len += (n = fread(buf + len, 1, cap - len, fp));
	} while (n > 0);
	if (ferror(fp)) {
		/* fopen succeeds on a folder; the read reports EISDIR. */
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		goto out;
	}
	buf[len] = '\0';
	if ((o = origin_new(file, err, errlen)) == NULL)
		goto out;
	n = strlen(file);
	if (n >= 5 && strcmp(file + n - 5, ".json") == 0)
		doc = json_parse(file, buf, len, o, err, errlen);
	else
		doc = yaml_parse(file, (unsigned char *)buf, len, o, err, errlen);
	origin_unref(o);
	if (doc != NULL && !json_object_is_type(doc, json_type_object)) {
		snprintf(err, errlen, "%s: the top level must be a map", file);
		json_object_put(doc);
		doc = NULL;
	}
out:
	free(buf);
	fclose(fp);
	return doc;
}

static int
settings_suffix(const char *name)
{
	static const char *const sfx[] = { ".yml", ".yaml", ".json" };
	size_t n = strlen(name), m;

	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		m = strlen(sfx[i]);
		if (n > m && strcmp(name + n - m, sfx[i]) == 0)
			return 1;
	}
	return 0;
}

static int
settings_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
settings_merge(struct json_object *dst, struct json_object *src)
{
	struct json_object *d;

	json_object_object_foreach(src, k, v) {
		if (v != NULL && json_object_is_type(v, json_type_object) &&
		    json_object_object_get_ex(dst, k, &d) && d != NULL &&
		    json_object_is_type(d, json_type_object))
			settings_merge(d, v);
		else
			json_object_object_add(dst, k, json_object_get(v));
	}
}

/* Merge one file into *root (the first file becomes the root). */
static int
settings_add(struct json_object **root, const char *file, char *err, size_t errlen)
{
	struct json_object *doc;

	if ((doc = settings_file(file, err, errlen)) == NULL)
		return -1;
	if (*root == NULL) {
		*root = doc;
		return 0;
	}
	settings_merge(*root, doc);
	json_object_put(doc);
	return 0;
}

static int
settings_folder(struct json_object **root, const char *dir, char *err, size_t errlen)
{
	DIR *d;
	struct dirent *de;
	struct stat st;
	char **names = NULL, **nn, path[PATH_MAX];
	size_t n = 0, cap = 0, i;
	int rc = 0;

	if ((d = opendir(dir)) == NULL) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (!settings_suffix(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nn = realloc(names, cap * sizeof(*names))) == NULL) {
				rc = -1;
				break;
			}
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL) {
			rc = -1;
			break;
		}
		n++;
	}
	closedir(d);
	if (rc == -1)
		snprintf(err, errlen, "%s: out of memory", dir);
	if (n > 0)
		qsort(names, n, sizeof(*names), settings_cmp);
	for (i = 0; i < n && rc == 0; i++) {
		size_t dl = strlen(dir);

		/* Keep the name as the user wrote the folder, without "//". */
		snprintf(path, sizeof(path), "%s%s%s", dir,
		    dl > 0 && dir[dl - 1] == '/' ? "" : "/", names[i]);
		/* Follows symlinks; sockets, fifos and folders are skipped. */
		if (stat(path, &st) == -1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			rc = -1;
		} else if (S_ISREG(st.st_mode))
			rc = settings_add(root, path, err, errlen);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* ---- expansion ---------------------------------------------------------- */

static int
var_name_ok(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return 0;
	return 1;
}

/* Expand $DIR, $$ and (vars != NULL) $NAME / ${NAME} in s.  Returns a
 * malloc'ed string, or NULL with a reason in why[]. */
static char *
expand(const char *s, const char *dir, struct json_object *vars, char *why, size_t whylen)
{
	struct json_object *val;
	const char *p = s, *name;
	char key[128], *out = NULL;
	size_t outlen = 0, n;
	FILE *fp;

	if ((fp = open_memstream(&out, &outlen)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	while (*p != '\0') {
		if (*p != '$') {
			fputc(*p++, fp);
			continue;
		}
		p++;
		if (*p == '$') {
			fputc('$', fp);
			p++;
			continue;
		}
		if (*p == '{') {
			name = ++p;
			if ((p = strchr(p, '}')) == NULL) {
				snprintf(why, whylen, "missing '}' after '${'");
				goto fail;
			}
			n = (size_t)(p++ - name);
		} else {
			name = p;
			while (isalnum((unsigned char)*p) || *p == '_')
				p++;
			n = (size_t)(p - name);
		}
		if (!var_name_ok(name, n) || n >= sizeof(key)) {
			snprintf(why, whylen, "'$' must start $NAME, ${NAME} or $$");
			goto fail;
		}
		memcpy(key, name, n);
		key[n] = '\0';
		if (strcmp(key, "DIR") == 0)
			fputs(dir, fp);
		else if (vars != NULL && json_object_object_get_ex(vars, key, &val))
			fputs(json_object_get_string(val), fp);
		else {
			snprintf(why, whylen, "undefined variable $%s", key);
			goto fail;
		}
	}
	if (fclose(fp) != 0) {
		snprintf(why, whylen, "out of memory");
		free(out);
		return NULL;
	}
	return out;
fail:
	fclose(fp);
	free(out);
	return NULL;
}

static void
path_join(char *dst, size_t len, const char *path, const char *key)
{
	int n;

	/* A path longer than the buffer is cut short: it only names a key. */
	n = snprintf(dst, len, "%s%s%s", path, *path && *key != '[' ? "." : "", key);
	if (n < 0)
		dst[0] = '\0';
}

static int
expand_tree(struct json_object *jso, const char *path, struct json_object *vars,
    char *err, size_t errlen)
{
	char sub[256], idx[32], why[256], *s;
	struct origin *o;

	if (json_object_is_type(jso, json_type_object)) {
		json_object_object_foreach(jso, k, v) {
			path_join(sub, sizeof(sub), path, k);
			if (v != NULL && expand_tree(v, sub, vars, err, errlen) == -1)
				return -1;
		}
	} else if (json_object_is_type(jso, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(jso); i++) {
			struct json_object *v = json_object_array_get_idx(jso, i);

			snprintf(idx, sizeof(idx), "[%zu]", i);
			path_join(sub, sizeof(sub), path, idx);
			if (v != NULL && expand_tree(v, sub, vars, err, errlen) == -1)
				return -1;
		}
	} else if (json_object_is_type(jso, json_type_string) &&
	    strchr(json_object_get_string(jso), '$') != NULL) {
		o = origin_of(jso);
		if ((s = expand(json_object_get_string(jso), o ? o->o_dir : ".",
		    vars, why, sizeof(why))) == NULL) {
			snprintf(err, errlen, "%s: %s: %s", o ? o->o_file : "?", path, why);
			return -1;
		}
		json_object_set_string(jso, s);
		free(s);
	}
	return 0;
}

/* Turn the merged `vars` definitions into a map NAME -> string. */
static struct json_object *
vars_eval(struct json_object *defs, char *err, size_t errlen)
{
	struct json_object *out, *src, *x, *val;
	struct origin *o = origin_of(defs);
	const char *s, *dir;
	char why[256], *e;

	if ((out = json_object_new_object()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!json_object_is_type(defs, json_type_object)) {
		snprintf(err, errlen, "%s: vars: expected a map", o->o_file);
		goto fail;
	}
	json_object_object_foreach(defs, name, def) {
		o = def != NULL ? origin_of(def) : origin_of(defs);
		dir = o->o_dir;
		why[0] = '\0';
		val = NULL;
		s = NULL;
		if (!var_name_ok(name, strlen(name)) || strcmp(name, "DIR") == 0)
			snprintf(why, sizeof(why), "not a usable variable name");
		else if (def == NULL || !json_object_is_type(def, json_type_object))
			snprintf(why, sizeof(why), "expected a map with `source`");
		else if (!json_object_object_get_ex(def, "source", &src) ||
		    !json_object_is_type(src, json_type_string))
			snprintf(why, sizeof(why), "source: expected env or literal");
		else if (strcmp(json_object_get_string(src), "env") == 0) {
			json_object_object_foreach(def, k, v) {
				(void)v;
				if (strcmp(k, "source") && strcmp(k, "variable") && strcmp(k, "default"))
					snprintf(why, sizeof(why), "%s: unknown key", k);
			}
			if (!json_object_object_get_ex(def, "variable", &x) ||
			    !json_object_is_type(x, json_type_string))
				snprintf(why, sizeof(why), "variable: expected a string");
			else if ((s = getenv(json_object_get_string(x))) == NULL &&
			    !json_object_object_get_ex(def, "default", &val))
				snprintf(why, sizeof(why), "environment variable %s is not set "
				    "and there is no default", json_object_get_string(x));
		} else if (strcmp(json_object_get_string(src), "literal") == 0) {
			json_object_object_foreach(def, k, v) {
				(void)v;
				if (strcmp(k, "source") && strcmp(k, "value"))
					snprintf(why, sizeof(why), "%s: unknown key", k);
			}
			if (!json_object_object_get_ex(def, "value", &val))
				snprintf(why, sizeof(why), "value: missing");
		} else
			snprintf(why, sizeof(why), "source: expected env or literal");
		if (why[0] == '\0' && s == NULL) {
			/* A literal value or a default: a scalar, $DIR and $$ expand. */
			if (val == NULL || json_object_is_type(val, json_type_object) ||
			    json_object_is_type(val, json_type_array))
				snprintf(why, sizeof(why), "%s: expected a scalar",
				    json_object_object_get_ex(def, "value", NULL) ? "value" : "default");
			else if ((e = expand(json_object_get_string(val), dir, NULL,
			    why, sizeof(why))) != NULL) {
				json_object_object_add(out, name, json_object_new_string(e));
				free(e);
				continue;
			}
		}
		if (why[0] != '\0') {
			snprintf(err, errlen, "%s: vars.%s: %s", o->o_file, name, why);
			goto fail;
		}
		json_object_object_add(out, name, json_object_new_string(s));
	}
	return out;
fail:
	json_object_put(out);
	return NULL;
}

struct json_object *
settings_load(const char *pathlist, char *err, size_t errlen)
{
	struct json_object *root = NULL, *defs = NULL, *vars = NULL;
	struct stat st;
	char *list, *p, *path;
	int rc = 0;

	if (errlen > 0)
		err[0] = '\0';
	if (pathlist == NULL || *pathlist == '\0') {
		snprintf(err, errlen, "no settings path given");
		return NULL;
	}
	if ((list = strdup(pathlist)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (p = list; rc == 0 && (path = strsep(&p, ":")) != NULL; ) {
		if (*path == '\0')
			continue;	/* "a::b" or a trailing ':' */
		if (stat(path, &st) == -1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			rc = -1;
		} else if (S_ISDIR(st.st_mode))
			rc = settings_folder(&root, path, err, errlen);
		else
			rc = settings_add(&root, path, err, errlen);
	}
	free(list);
	if (rc == 0 && root == NULL) {
		snprintf(err, errlen, "%s: no settings files found", pathlist);
		rc = -1;
	}
	if (rc == 0 && json_object_object_get_ex(root, "vars", &defs)) {
		if (defs != NULL) {
			json_object_get(defs);
			json_object_object_del(root, "vars");
			vars = vars_eval(defs, err, errlen);
			json_object_put(defs);
			if (vars == NULL)
				rc = -1;
		} else
			json_object_object_del(root, "vars");
	}
	if (rc == 0)
		rc = expand_tree(root, "", vars, err, errlen);
	json_object_put(vars);
	if (rc == -1) {
		json_object_put(root);
		return NULL;
	}
	return root;
}

/* ---- strict readers ----------------------------------------------------- */

static void
cfg_vfail(struct cfg *c, struct json_object *at, const char *path,
    const char *fmt, va_list ap)
{
	struct cfg *r = c->root;
	struct origin *o;
	char why[256];
	int n;

	if (r->failed)
		return;
	r->failed = 1;
	if ((o = origin_of(at)) == NULL && (o = origin_of(c->obj)) == NULL)
		o = origin_of(r->obj);
	vsnprintf(why, sizeof(why), fmt, ap);
	n = snprintf(r->err, sizeof(r->err), "%s: ", o != NULL ? o->o_file : "?");
	if (*path != '\0')
		snprintf(r->err + n, sizeof(r->err) - n, "%s: %s", path, why);
	else
		snprintf(r->err + n, sizeof(r->err) - n, "%s", why);
}

static int
cfg_fail(struct cfg *c, struct json_object *at, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
cfg_fail(struct cfg *c, struct json_object *at, const char *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cfg_vfail(c, at, path, fmt, ap);
	va_end(ap);
	return -1;
}

int
cfg_error(struct cfg *c, const char *key, const char *fmt, ...)
{
	struct json_object *v = NULL;
	char path[256];
	va_list ap;

	if (key != NULL && c->obj != NULL)
		json_object_object_get_ex(c->obj, key, &v);
	if (key != NULL)
		path_join(path, sizeof(path), c->path, key);
	else
		snprintf(path, sizeof(path), "%s", c->path);
	va_start(ap, fmt);
	cfg_vfail(c, v, path, fmt, ap);
	va_end(ap);
	return -1;
}

/* Mark key as known and fetch its value (NULL: absent or null).  Returns
 * -1 once an error has been recorded. */
static int
cfg_get(struct cfg *c, const char *key, struct json_object **v)
{
	int i;

	*v = NULL;
	if (c->root->failed)
		return -1;
	for (i = 0; i < c->nseen && strcmp(c->seen[i], key) != 0; i++)
		;
	if (i == c->nseen) {
		if (c->nseen == CFG_MAX_KEYS)
			return cfg_error(c, key, "more than %d keys read in one map", CFG_MAX_KEYS);
		c->seen[c->nseen++] = key;
	}
	if (c->obj != NULL)
		json_object_object_get_ex(c->obj, key, v);
	return 0;
}

int
cfg_root(struct cfg *c, struct json_object *obj)
{
	memset(c, 0, sizeof(*c));
	c->root = c;
	c->obj = obj;
	if (obj == NULL || !json_object_is_type(obj, json_type_object))
		return cfg_fail(c, obj, "", "the top level must be a map");
	return 0;
}

static void
cfg_sub(struct cfg *c, const char *key, struct cfg *sub)
{
	struct cfg *root = c->root;
	char path[sizeof(sub->path)];

	/* sub may be c itself once the path is built. */
	path_join(path, sizeof(path), c->path, key);
	memset(sub, 0, sizeof(*sub));
	sub->root = root;
	memcpy(sub->path, path, sizeof(path));
}

int
cfg_section(struct cfg *c, const char *key, int required, struct cfg *sub)
{
	struct json_object *v;
	int rc = cfg_get(c, key, &v);

	cfg_sub(c, key, sub);
	if (rc == -1)
		return -1;
	if (v == NULL)
		return required ? cfg_fail(c, NULL, sub->path, "missing") : 0;
	if (!json_object_is_type(v, json_type_object))
		return cfg_fail(c, v, sub->path, "expected a map");
	sub->obj = v;
	return 0;
}

int
cfg_list_len(struct cfg *c, const char *key)
{
	struct json_object *v;

	if (cfg_get(c, key, &v) == -1)
		return -1;
	if (v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_array))
		return cfg_error(c, key, "expected a list");
	return (int)json_object_array_length(v);
}

int
cfg_list_map(struct cfg *c, const char *key, int i, struct cfg *sub)
{
	struct json_object *v, *e = NULL;
	char idx[32];
	int rc = cfg_get(c, key, &v);

	snprintf(idx, sizeof(idx), "%s[%d]", key, i);
	cfg_sub(c, idx, sub);
	if (rc == -1)
		return -1;
	if (v == NULL || !json_object_is_type(v, json_type_array) || i < 0 ||
	    (size_t)i >= json_object_array_length(v))
		return cfg_fail(c, v, sub->path, "missing");
	e = json_object_array_get_idx(v, (size_t)i);
	if (e == NULL || !json_object_is_type(e, json_type_object))
		return cfg_fail(c, e != NULL ? e : v, sub->path, "expected a map");
	sub->obj = e;
	return 0;
}

int
cfg_string(struct cfg *c, const char *key, const char *def, int required, char **out)
{
	struct json_object *v;

	*out = NULL;
	if (cfg_get(c, key, &v) == -1)
		return -1;
	if (v == NULL) {
		if (required)
			return cfg_error(c, key, "missing");
		if (def != NULL && (*out = strdup(def)) == NULL)
			return cfg_error(c, key, "out of memory");
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return cfg_error(c, key, "expected a string");
	if ((*out = strdup(json_object_get_string(v))) == NULL)
		return cfg_error(c, key, "out of memory");
	return 0;
}

int
cfg_int(struct cfg *c, const char *key, long def, long min, long max, long *out)
{
	struct json_object *v;
	int64_t n;

	*out = def;
	if (cfg_get(c, key, &v) == -1)
		return -1;
	if (v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_int))
		return cfg_error(c, key, "expected an integer");
	n = json_object_get_int64(v);
	if (n < min || n > max)
		return cfg_error(c, key, "must be between %ld and %ld", min, max);
	*out = (long)n;
	return 0;
}

int
cfg_bool(struct cfg *c, const char *key, int def, int *out)
{
	struct json_object *v;

	*out = def;
	if (cfg_get(c, key, &v) == -1)
		return -1;
	if (v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_boolean))
		return cfg_error(c, key, "expected a boolean");
	*out = json_object_get_boolean(v) ? 1 : 0;
	return 0;
}

int
cfg_seconds(struct cfg *c, const char *key, double def, double min, double max, double *out)
{
	struct json_object *v;
	double d;

	*out = def;
	if (cfg_get(c, key, &v) == -1)
		return -1;
	if (v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return cfg_error(c, key, "expected a number of seconds");
	d = json_object_get_double(v);
	if (!isfinite(d))
		return cfg_error(c, key, "expected a number of seconds");
	if (d < 0)
		return cfg_error(c, key, "must not be negative");
	if (d < min || d > max)
		return cfg_error(c, key, "must be between %g and %g seconds", min, max);
	*out = d;
	return 0;
}

int
cfg_strv(struct cfg *c, const char *key, int required, char ***out)
{
	struct json_object *v, *e;
	size_t n, i;
	char **sv;

	*out = NULL;
	if (cfg_get(c, key, &v) == -1)
		return -1;
	if (v == NULL && required)
		return cfg_error(c, key, "missing");
	if (v != NULL && !json_object_is_type(v, json_type_string) &&
	    !json_object_is_type(v, json_type_array))
		return cfg_error(c, key, "expected a string or a list of strings");
	n = v == NULL ? 0 : json_object_is_type(v, json_type_string) ? 1 :
	    json_object_array_length(v);
	if ((sv = calloc(n + 1, sizeof(*sv))) == NULL)
		return cfg_error(c, key, "out of memory");
	for (i = 0; i < n; i++) {
		e = json_object_is_type(v, json_type_string) ? v :
		    json_object_array_get_idx(v, i);
		if (e == NULL || !json_object_is_type(e, json_type_string)) {
			cfg_strv_free(sv);
			return cfg_error(c, key, "item %zu: expected a string", i + 1);
		}
		if ((sv[i] = strdup(json_object_get_string(e))) == NULL) {
			cfg_strv_free(sv);
			return cfg_error(c, key, "out of memory");
		}
	}
	*out = sv;
	return 0;
}

void
cfg_strv_free(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

struct json_object *
cfg_raw(struct cfg *c, const char *key)
{
	struct json_object *v;

	if (cfg_get(c, key, &v) == -1)
		return NULL;
	return v;
}

int
cfg_done(struct cfg *c)
{
	int i;

	if (c->root->failed)
		return -1;
	if (c->obj == NULL)
		return 0;
	json_object_object_foreach(c->obj, k, v) {
		for (i = 0; i < c->nseen && strcmp(c->seen[i], k) != 0; i++)
			;
		if (i == c->nseen) {
			char path[256];

			path_join(path, sizeof(path), c->path, k);
			return cfg_fail(c, v, path, "unknown key");
		}
	}
	return 0;
}

const char *
cfg_errstr(struct cfg *c)
{
	return c->root->err;
}
