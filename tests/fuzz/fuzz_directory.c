/* fuzz_directory.c - libFuzzer target for the directory loader (make fuzz).
 * fuzz-sources: src/common/directory.c src/common/util.c src/common/log.c src/proxy/control.c src/proxy/side.c src/proxy/postq.c src/common/jsonrpc.c src/common/tls.c src/common/settings.c src/common/metrics.c
 *
 * The input is written once per run to a .json file in /dev/shm and loaded
 * with directory_load().  Every name the input mentions (any "name" string)
 * is then looked up with every query of directory.h.  Checks, besides
 * memory safety: a load gives a directory or an error text; an entry has
 * the documented members; an operator may always be looked up by its own
 * fingerprints.  Each client view is also read the way a proxy reads
 * `_client` (control_allowed_domains), as the proxy named and as another. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "control.h"
#include "directory.h"
#include "log.h"

#include "fuzz.h"

#define MAX_NAMES 16

static char path[64];

static void
cleanup(void)
{
	unlink(path);
}

/* Collects the values of "name" keys anywhere in o. */
static void
names_collect(struct json_object *o, const char **names, int *n, int depth)
{
	struct json_object *v;

	if (depth > 16 || *n >= MAX_NAMES)
		return;
	if (json_object_is_type(o, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(o) && i < 64; i++)
			names_collect(json_object_array_get_idx(o, i), names, n, depth + 1);
		return;
	}
	if (!json_object_is_type(o, json_type_object))
		return;
	if (json_object_object_get_ex(o, "name", &v) &&
	    json_object_is_type(v, json_type_string) && *n < MAX_NAMES)
		names[(*n)++] = json_object_get_string(v);
	json_object_object_foreach(o, k, val) {
		(void)k;
		names_collect(val, names, n, depth + 1);
	}
}

static void
fp_seen(void *arg, const char *name)
{
	struct { const char *want; int found; } *s = arg;

	if (strcmp(name, s->want) == 0)
		s->found = 1;
}

/* The proxies' reading of params._client built from this entry (stolen). */
static void
proxy_view(const char *name, struct json_object *ce, const char *self)
{
	struct json_object *params, *client;
	const char **allowed;
	int n;

	client = json_object_new_object();
	json_object_object_add(client, "name", json_object_new_string(name));
	json_object_object_add(client, "entry", ce);
	params = json_object_new_object();
	json_object_object_add(params, "_client", client);
	check(control_caller(params) != NULL);
	for (int i = 0; i < 2; i++) {
		n = control_allowed_domains(params, i == 0 ? self : name, &allowed);
		check(n >= -1 && (n == -1) == (allowed == NULL));
		for (int j = 0; j < n; j++)
			check(allowed[j] != NULL);
		free(allowed);
	}
	json_object_put(params);
}

static void
query(struct directory *d, const char *name, const char *other)
{
	struct json_object *e, *ce, *v, *certs;
	struct { const char *want; int found; } seen;
	const char *fp;

	(void)directory_peer_address(d, name);
	(void)directory_can_call(d, name, other, "getAnnouncements");
	(void)directory_can_call(d, other, name, name);
	if ((e = directory_entry(d, name)) == NULL) {
		check(directory_client_entry(d, name) == NULL);
		return;
	}
	check(json_object_is_type(e, json_type_object));
	check(json_object_object_get_ex(e, "name", &v) &&
	    strcmp(json_object_get_string(v), name) == 0);
	check((ce = directory_client_entry(d, name)) != NULL);
	check(json_object_object_get_ex(ce, "groups", &v));
	proxy_view(name, ce, other);
	if (!json_object_object_get_ex(e, "certificates", &certs) ||
	    !json_object_is_type(certs, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(certs) && i < 8; i++) {
		if (!json_object_object_get_ex(json_object_array_get_idx(certs, i),
		    "fingerprint", &v) || !json_object_is_type(v, json_type_string))
			continue;
		fp = json_object_get_string(v);
		seen.want = name;
		seen.found = 0;
		directory_foreach_fingerprint(d, fp, fp_seen, &seen);
		check(seen.found == directory_has_fingerprint(d, name, fp));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *names[MAX_NAMES];
	char *const paths[] = { path, NULL };
	struct json_object *src;
	struct directory *d;
	char err[512], *copy;
	int fd, n = 0;

	if (path[0] == '\0') {
		log_init("fuzz", LOG_LVL_ERROR);
		snprintf(path, sizeof(path), "/dev/shm/fuzz-directory-%d.json", (int)getpid());
		atexit(cleanup);
	}
	check((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	check(write(fd, data, size) == (ssize_t)size);
	close(fd);
	err[0] = '\0';
	if ((d = directory_load(paths, err, sizeof(err))) == NULL) {
		check(err[0] != '\0');
		return 0;
	}
	/* the names to ask about, from the input itself */
	copy = strndup((const char *)data, size);
	src = copy != NULL ? json_tokener_parse(copy) : NULL;
	free(copy);
	names_collect(src, names, &n, 0);
	for (int i = 0; i < n; i++)
		query(d, names[i], names[(i + 1) % n]);
	query(d, "", "nobody");
	directory_ref(d);
	directory_unref(d);
	directory_unref(d);
	json_object_put(src);
	return 0;
}
