/* settings.h - PROXY_SETTINGS / HYPER_SETTINGS loader (SPEC section 2).
 *
 * settings_load() reads a colon-separated list of files and folders (YAML or
 * JSON; folders: *.yml, *.yaml, *.json in name order, not recursive), expands
 * $DIR, $$ and `vars`, merges maps recursively (later files win for anything
 * that is not a map) and returns one json-c tree.  Every value remembers the
 * file it came from, so later errors can say "file: key: reason".
 *
 * The cfg_* readers walk that tree strictly: each reader marks its key as
 * known, cfg_done() reports any key that no reader asked for.  The first error
 * is kept in the root cfg; later calls become no-ops returning -1, so a caller
 * can read a whole section and check once. */
#ifndef HP_SETTINGS_H
#define HP_SETTINGS_H

#include <stddef.h>

struct json_object;

struct json_object *settings_load(const char *pathlist, char *err, size_t errlen);
/* File a value came from ("?" when unknown). */
const char *settings_origin(struct json_object *value);
/* File of the value at a dotted key path ("channels[1].settings.tls"), or of
 * the deepest part of it that exists. */
const char *settings_origin_at(struct json_object *tree, const char *path);

#define CFG_MAX_KEYS 64
struct cfg {
	struct json_object *obj;        /* the map being read (NULL: absent) */
	char                path[256];  /* dotted key path, "public.jsonrpc_server" */
	struct cfg         *root;       /* holds the first error */
	char                err[512];   /* root only: "file: key: reason" */
	int                 failed;     /* root only */
	const char         *seen[CFG_MAX_KEYS];
	int                 nseen;
};

/* Start reading a tree: obj must be a map (else error). */
int  cfg_root(struct cfg *c, struct json_object *obj);
/* Open a sub-map.  required=0 and absent: returns 0 with sub->obj == NULL
 * (readers on it then return defaults). */
int  cfg_section(struct cfg *c, const char *key, int required, struct cfg *sub);
/* Open element i of a list of maps under c (for `channels`, `announcements`). */
int  cfg_list_len(struct cfg *c, const char *key);       /* -1 on wrong type, 0 when absent */
int  cfg_list_map(struct cfg *c, const char *key, int i, struct cfg *sub);
/* Scalars.  Absent: *out = def (strings are strdup'ed; def may be NULL).
 * required=1 absent: error "missing". */
int  cfg_string(struct cfg *c, const char *key, const char *def, int required, char **out);
int  cfg_int(struct cfg *c, const char *key, long def, long min, long max, long *out);
int  cfg_bool(struct cfg *c, const char *key, int def, int *out);
/* Durations in seconds, fractions allowed. */
int  cfg_seconds(struct cfg *c, const char *key, double def, double min, double max, double *out);
/* A string or a list of strings; NULL-terminated array, free with cfg_strv_free. */
int  cfg_strv(struct cfg *c, const char *key, int required, char ***out);
void cfg_strv_free(char **v);
/* The raw value (NULL when absent), marking the key as known. */
struct json_object *cfg_raw(struct cfg *c, const char *key);
/* Record an error for key (printf style reason) and return -1. */
int  cfg_error(struct cfg *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Unknown keys in c's map become errors.  Returns -1 if any error so far. */
int  cfg_done(struct cfg *c);
/* Root error text ("" when none). */
const char *cfg_errstr(struct cfg *c);

#endif
