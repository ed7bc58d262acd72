/* directory.h - the operator directory of the Hyper network (SPEC 3.1, 3.4).
 *
 * Records from JSON files are replayed in order into one entry per operator.
 * A directory is immutable once built; reloading builds a new one and swaps
 * it, so readers hold a reference (directory_ref/unref) while they use it. */
#ifndef HP_DIRECTORY_H
#define HP_DIRECTORY_H

#include <stddef.h>

struct json_object;
struct directory;

/* Load from files or folders (folders: files matching ^.*\.json$, name
 * order).  NULL with the reason ("file: reason") in err. */
struct directory *directory_load(char *const *paths, char *err, size_t errlen);
void directory_ref(struct directory *d);
void directory_unref(struct directory *d);

/* Entry of operator name, as JSON {"name","groups","settings","services",
 * "channels","certificates"} (borrowed; NULL when unknown).  Read it only:
 * json_object_get() or json_object_to_json_string() on it writes to shared
 * memory, so copy it (json_object_deep_copy) to keep or serialise it. */
struct json_object *directory_entry(const struct directory *d, const char *name);
/* The `_client.entry` view of an operator: {"name","groups","settings"}
 * (new reference; NULL when unknown). */
struct json_object *directory_client_entry(const struct directory *d, const char *name);
/* host:port of the operator's peer_server channel, or NULL. */
const char *directory_peer_address(const struct directory *d, const char *name);
/* Is the lower-case hex fingerprint listed under name's certificates? */
int  directory_has_fingerprint(const struct directory *d, const char *name, const char *fp);
/* Operators listing fingerprint fp (for identity lookup); calls fn for each. */
void directory_foreach_fingerprint(const struct directory *d, const char *fp,
	     void (*fn)(void *arg, const char *name), void *arg);
/* SPEC 3.4: may caller call method of callee?  1 yes, 0 no. */
int  directory_can_call(const struct directory *d, const char *caller, const char *callee,
	     const char *method);

/* Watcher: reload when any file under paths changes (mtime/size/name set),
 * polled by the caller every few seconds.  Keeps the last good directory on
 * a parse error and logs it. */
struct directory_watch;
struct directory_watch *directory_watch_new(char *const *paths, char *err, size_t errlen);
/* Current directory (caller gets a reference, unref when done). */
struct directory *directory_watch_get(struct directory_watch *w);
/* Check files; reload on change.  Returns 1 when a new directory was loaded. */
int  directory_watch_poll(struct directory_watch *w);
void directory_watch_free(struct directory_watch *w);

#endif
