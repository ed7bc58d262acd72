/* Tests for directory.c: replay, lookups, permissions (SPEC 3.4) and the
 * reloading watcher, on real files in a temporary folder. */
#include <criterion/criterion.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "directory.h"

static char tmp[256];

static void
tmp_setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/hp-test-dir.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
}

static void
tmp_teardown(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
}

TestSuite(directory, .init = tmp_setup, .fini = tmp_teardown);

/* Write a file atomically (temporary name, then rename), as an operator's
 * tooling should; `raw` writes in place, like a half-finished editor save. */
static void
put(const char *name, const char *text, int raw)
{
	char path[PATH_MAX], t[PATH_MAX + 8];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	snprintf(t, sizeof(t), "%s/.tmp", tmp);
	fp = fopen(raw ? path : t, "w");
	cr_assert_not_null(fp, "%s", path);
	fputs(text, fp);
	cr_assert_eq(fclose(fp), 0);
	if (!raw)
		cr_assert_eq(rename(t, path), 0);
}

static struct directory *
load(char *err, size_t errlen)
{
	char *paths[] = { tmp, NULL };

	return directory_load(paths, err, errlen);
}

static struct directory *
load_ok(void)
{
	char err[512];
	struct directory *d = load(err, sizeof(err));

	cr_assert_not_null(d, "%s", err);
	return d;
}

/* Groups of an operator as "a,b" (or "-" when unknown). */
static const char *
groups_of(struct directory *d, const char *name)
{
	static char buf[256];
	struct json_object *e = directory_entry(d, name), *g;

	if (e == NULL)
		return "-";
	cr_assert(json_object_object_get_ex(e, "groups", &g));
	buf[0] = '\0';
	for (size_t i = 0; i < json_object_array_length(g); i++) {
		if (i)
			strcat(buf, ",");
		strcat(buf, json_object_get_string(json_object_array_get_idx(g, i)));
	}
	return buf;
}

#define REC(name, section, data) \
	"{\"name\": \"" name "\", \"section\": \"" section "\", " \
	"\"created_at\": \"2026-01-01T00:00:00Z\", \"data\": " data "}"

/* ---- replay --------------------------------------------------------------- */

Test(directory, records_replay_in_file_name_order_and_replace_a_section)
{
	struct directory *d;
	struct json_object *e, *s;

	/* "10-" sorts before "2-": byte order of the names, not numbers. */
	put("2-late.json", "{\"records\": [" REC("op", "groups", "[\"late\"]") "]}", 0);
	put("10-early.json", "{\"records\": ["
	    REC("op", "groups", "[\"first\"]") ","
	    REC("op", "settings", "[{\"service\": \"proxy\", \"settings\": {\"k\": 1}}]") ","
	    REC("op", "groups", "[\"second\", \"third\"]") "]}", 0);
	d = load_ok();
	cr_assert_str_eq(groups_of(d, "op"), "late");
	e = directory_entry(d, "op");
	cr_assert(json_object_object_get_ex(e, "settings", &s));
	cr_assert_eq(json_object_array_length(s), 1, "other sections are kept");
	directory_unref(d);
}

Test(directory, entry_has_every_section_and_client_view_only_three)
{
	struct directory *d;
	struct json_object *e, *c, *v;

	put("a.json", "{\"records\": [" REC("op", "groups", "[\"g\"]") "]}", 0);
	d = load_ok();
	e = directory_entry(d, "op");
	cr_assert_not_null(e);
	const char *keys[] = { "name", "groups", "settings", "services", "channels",
	    "certificates" };
	for (size_t i = 0; i < 6; i++)
		cr_assert(json_object_object_get_ex(e, keys[i], &v), "%s", keys[i]);
	c = directory_client_entry(d, "op");
	cr_assert_not_null(c);
	cr_assert_eq(json_object_object_length(c), 3);
	cr_assert_str_eq(json_object_get_string(json_object_object_get(c, "name")), "op");
	cr_assert(json_object_object_get_ex(c, "groups", &v));
	cr_assert(json_object_object_get_ex(c, "settings", &v));
	json_object_put(c);
	directory_unref(d);
}

Test(directory, peer_address_comes_from_the_peer_server_channel)
{
	struct directory *d;

	put("a.json", "{\"records\": ["
	    REC("op", "channels", "[{\"type\": \"other\", \"settings\": {\"address\": \"x:1\"}},"
	    " {\"type\": \"peer_server\", \"settings\": {\"address\": \"localhost:5556\"}}]") ","
	    REC("nopeer", "groups", "[]") "]}", 0);
	d = load_ok();
	cr_assert_str_eq(directory_peer_address(d, "op"), "localhost:5556");
	cr_assert_null(directory_peer_address(d, "nopeer"));
	directory_unref(d);
}

Test(directory, only_names_ending_in_json_are_read)
{
	struct directory *d;

	put("a.json", "{\"records\": [" REC("op", "groups", "[\"g\"]") "]}", 0);
	put("x.json.bak", "not json at all", 0);
	put("x.json~", "not json", 0);
	put(".#a.json", "not json", 0);
	put("b.JSON", "{\"records\": [" REC("op", "groups", "[\"upper\"]") "]}", 0);
	d = load_ok();
	cr_assert_str_eq(groups_of(d, "op"), "g");
	directory_unref(d);
}

Test(directory, bad_files_are_errors_naming_the_file_and_record)
{
	char err[512];

	put("a.json", "{\"records\": [" REC("op", "groups", "\"g\"") "]}", 0);
	cr_assert_null(load(err, sizeof(err)));
	cr_assert(strstr(err, "a.json") && strstr(err, "record 0"), "%s", err);

	put("a.json", "{\"records\": [{\"name\": \"op\"}]}", 0);
	cr_assert_null(load(err, sizeof(err)));
	cr_assert(strstr(err, "a.json: record 0") != NULL, "%s", err);

	put("a.json", "{\"records\": [" REC("op", "certificates",
	    "[{\"fingerprint\": \"abc\"}]") "]}", 0);
	cr_assert_null(load(err, sizeof(err)));
	cr_assert(strstr(err, "fingerprint") != NULL, "%s", err);

	put("a.json", "{\"records\": []} {}", 0);
	cr_assert_null(load(err, sizeof(err)));
	cr_assert(strstr(err, "trailing") != NULL, "%s", err);

	put("a.json", "{\"records\": [", 0);
	cr_assert_null(load(err, sizeof(err)));
	cr_assert(strstr(err, "a.json") != NULL, "%s", err);

	char *missing[] = { (char *)(uintptr_t)"/nonexistent/dir", NULL };
	cr_assert_null(directory_load(missing, err, sizeof(err)));
	cr_assert(strstr(err, "/nonexistent/dir") != NULL, "%s", err);
}

Test(directory, a_single_file_path_is_read_whatever_its_name)
{
	char path[PATH_MAX], err[512], *paths[] = { path, NULL };
	struct directory *d;

	put("dir.data", "{\"records\": [" REC("op", "groups", "[\"g\"]") "]}", 0);
	snprintf(path, sizeof(path), "%s/dir.data", tmp);
	d = directory_load(paths, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	cr_assert_str_eq(groups_of(d, "op"), "g");
	directory_unref(d);
}

/* ---- fingerprints ---------------------------------------------------------- */

#define FP_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void
collect(void *arg, const char *name)
{
	strcat(arg, name);
	strcat(arg, ";");
}

Test(directory, fingerprints_are_found_per_operator_and_signing_keys_do_not_count)
{
	struct directory *d;
	char names[256] = "";

	put("a.json", "{\"records\": ["
	    REC("op1", "certificates", "[{\"fingerprint\": \"" FP_A "\", \"key_usage\": \"encryption\"}]") ","
	    REC("op2", "certificates", "[{\"fingerprint\": \"" FP_A "\"},"
	    " {\"fingerprint\": \"" FP_B "\", \"key_usage\": \"signing\"}]") "]}", 0);
	d = load_ok();
	cr_assert(directory_has_fingerprint(d, "op1", FP_A));
	cr_assert(directory_has_fingerprint(d, "op2", FP_A));
	cr_assert(!directory_has_fingerprint(d, "op2", FP_B), "signing keys are not TLS keys");
	cr_assert(!directory_has_fingerprint(d, "op1", FP_B));
	cr_assert(!directory_has_fingerprint(d, "nobody", FP_A));
	directory_foreach_fingerprint(d, FP_A, collect, names);
	cr_assert_str_eq(names, "op1;op2;");
	names[0] = '\0';
	directory_foreach_fingerprint(d, FP_B, collect, names);
	cr_assert_str_eq(names, "");
	directory_unref(d);
}

/* ---- permissions ----------------------------------------------------------- */

static struct directory *
permission_directory(void)
{
	put("a.json", "{\"records\": ["
	    REC("caller", "groups", "[\"users\"]") ","
	    REC("stranger", "groups", "[\"others\"]") ","
	    REC("callee", "services", "["
	    "{\"name\": \"svc\", \"permissions\": [{\"group\": \"users\", \"rights\": [\"call\"]}],"
	    " \"methods\": [{\"name\": \"open\"}, {\"name\": \"shared\"}]},"
	    "{\"name\": \"svc2\", \"permissions\": [{\"group\": \"others\", \"rights\": [\"call\"]}],"
	    " \"methods\": [{\"name\": \"shared\"}, {\"name\": \"second\"}]},"
	    "{\"name\": \"svc3\","
	    " \"methods\": [{\"name\": \"everyone\", \"permissions\": [{\"group\": \"*\", \"rights\": [\"call\"]}]},"
	    " {\"name\": \"bymethod\", \"permissions\": [{\"group\": \"others\", \"rights\": [\"call\"]}]},"
	    " {\"name\": \"readonly\", \"permissions\": [{\"group\": \"users\", \"rights\": [\"read\"]}]}]}"
	    "]") "]}", 0);
	return load_ok();
}

Test(directory, service_level_permission_allows_its_group_only)
{
	struct directory *d = permission_directory();

	cr_assert(directory_can_call(d, "caller", "callee", "open"));
	cr_assert(!directory_can_call(d, "stranger", "callee", "open"));
	directory_unref(d);
}

Test(directory, first_service_listing_the_method_decides)
{
	struct directory *d = permission_directory();

	/* svc lists "shared" first and grants only "users"; svc2 would grant
	 * "others" but is never consulted. */
	cr_assert(directory_can_call(d, "caller", "callee", "shared"));
	cr_assert(!directory_can_call(d, "stranger", "callee", "shared"));
	cr_assert(directory_can_call(d, "stranger", "callee", "second"));
	directory_unref(d);
}

Test(directory, star_group_and_method_level_permissions)
{
	struct directory *d = permission_directory();

	cr_assert(directory_can_call(d, "caller", "callee", "everyone"));
	cr_assert(directory_can_call(d, "stranger", "callee", "everyone"));
	cr_assert(directory_can_call(d, "stranger", "callee", "bymethod"));
	cr_assert(!directory_can_call(d, "caller", "callee", "bymethod"));
	cr_assert(!directory_can_call(d, "caller", "callee", "readonly"), "only `call` grants");
	cr_assert(!directory_can_call(d, "caller", "callee", "unlisted"));
	directory_unref(d);
}

Test(directory, unknown_operators_get_nothing)
{
	struct directory *d = permission_directory();

	cr_assert_null(directory_entry(d, "ghost"));
	cr_assert_null(directory_client_entry(d, "ghost"));
	cr_assert_null(directory_peer_address(d, "ghost"));
	cr_assert(!directory_can_call(d, "ghost", "callee", "everyone"));
	cr_assert(!directory_can_call(d, "caller", "ghost", "open"));
	directory_unref(d);
}

Test(directory, development_directory_grants_the_demo_calls)
{
	char exe[PATH_MAX], path[PATH_MAX], err[512], *paths[] = { path, NULL };
	struct directory *d;
	ssize_t n;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	cr_assert_gt(n, 0);
	exe[n] = '\0';
	snprintf(path, sizeof(path), "%s/settings/dev/directory/10-operators.json",
	    dirname(dirname(dirname(dirname(exe)))));
	d = directory_load(paths, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	cr_assert(directory_can_call(d, "private-proxy-1.ga", "public-proxy-1.ga",
	    "announceConnections"));
	cr_assert(directory_can_call(d, "private-proxy-1.ga", "public-proxy-1.ga",
	    "getAnnouncements"));
	cr_assert(directory_can_call(d, "public-proxy-1.ga", "private-proxy-1.ga",
	    "incomingConnection"));
	cr_assert(directory_can_call(d, "hd-1", "private-proxy-1.ga", "announceConnection"));
	cr_assert(!directory_can_call(d, "hd-1", "private-proxy-1.ga", "incomingConnection"));
	cr_assert(!directory_can_call(d, "hd-1", "public-proxy-1.ga", "announceConnections"));
	cr_assert(!directory_can_call(d, "public-proxy-1.ga", "public-proxy-1.ga",
	    "announceConnections"));
	cr_assert_str_eq(directory_peer_address(d, "private-proxy-1.ga"), "localhost:7776");
	cr_assert_str_eq(directory_peer_address(d, "public-proxy-1.ga"), "localhost:5556");
	directory_unref(d);
}

/* ---- watcher -------------------------------------------------------------- */

static struct directory_watch *
watch_ok(void)
{
	char err[512], *paths[] = { tmp, NULL };
	struct directory_watch *w = directory_watch_new(paths, err, sizeof(err));

	cr_assert_not_null(w, "%s", err);
	return w;
}

Test(directory, reload_keeps_the_last_good_copy_on_a_half_written_file)
{
	struct directory_watch *w;
	struct directory *d, *old;

	put("a.json", "{\"records\": [" REC("op", "groups", "[\"one\"]") "]}", 0);
	w = watch_ok();
	cr_assert_eq(directory_watch_poll(w), 0, "nothing changed");
	old = directory_watch_get(w);

	put("a.json", "{\"records\": [" REC("op", "groups", "[\"two\"]"), 1);
	cr_assert_eq(directory_watch_poll(w), 0);
	d = directory_watch_get(w);
	cr_assert_eq(d, old);
	cr_assert_str_eq(groups_of(d, "op"), "one");
	directory_unref(d);
	cr_assert_eq(directory_watch_poll(w), 0, "a broken state is tried once");

	put("a.json", "{\"records\": [" REC("op", "groups", "[\"three\"]") "]}", 1);
	cr_assert_eq(directory_watch_poll(w), 1);
	d = directory_watch_get(w);
	cr_assert_str_eq(groups_of(d, "op"), "three");
	/* A reference taken before the reload stays valid. */
	cr_assert_str_eq(groups_of(old, "op"), "one");
	directory_unref(old);
	directory_unref(d);
	directory_watch_free(w);
}

Test(directory, reload_picks_up_a_new_file_and_a_removed_one)
{
	struct directory_watch *w;
	struct directory *d;
	char path[PATH_MAX];

	put("a.json", "{\"records\": [" REC("op", "groups", "[\"a\"]") "]}", 0);
	w = watch_ok();
	put("b.json", "{\"records\": [" REC("op", "groups", "[\"b\"]") "]}", 0);
	cr_assert_eq(directory_watch_poll(w), 1);
	d = directory_watch_get(w);
	cr_assert_str_eq(groups_of(d, "op"), "b");
	directory_unref(d);

	put("b.json.bak", "junk", 0);
	cr_assert_eq(directory_watch_poll(w), 0, "ignored names do not trigger a reload");

	snprintf(path, sizeof(path), "%s/b.json", tmp);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(directory_watch_poll(w), 1);
	d = directory_watch_get(w);
	cr_assert_str_eq(groups_of(d, "op"), "a");
	directory_unref(d);
	directory_watch_free(w);
}

#define READER_FMT "{\"records\": [" REC("op", "groups", "[\"g%d\", \"*\"]") "," \
	REC("op", "services", "[{\"name\": \"s\", \"methods\": [{\"name\": \"m\"," \
	" \"permissions\": [{\"group\": \"*\", \"rights\": [\"call\"]}]}]}]") "]}"

struct reader {
	struct directory_watch	*w;
	int			 bad;
};

static void *
reader_run(void *arg)
{
	struct reader *r = arg;

	for (int i = 0; i < 3000; i++) {
		struct directory *d = directory_watch_get(r->w);

		if (directory_entry(d, "op") == NULL || !directory_can_call(d, "op", "op", "m"))
			r->bad++;
		directory_unref(d);
	}
	return NULL;
}

Test(directory, readers_in_another_thread_survive_reloads)
{
	struct reader r = { NULL, 0 };
	char text[1024];
	pthread_t th;
	int reloads = 0;

	snprintf(text, sizeof(text), READER_FMT, 0);
	put("a.json", text, 0);
	r.w = watch_ok();
	cr_assert_eq(pthread_create(&th, NULL, reader_run, &r), 0);
	for (int i = 1; i <= 30; i++) {
		snprintf(text, sizeof(text), READER_FMT, i);
		put("a.json", text, 0);
		reloads += directory_watch_poll(r.w);
	}
	pthread_join(th, NULL);
	cr_assert_eq(reloads, 30);
	cr_assert_eq(r.bad, 0);
	directory_watch_free(r.w);
}

/* ---- null values (review finding M1) --------------------------------------- */

/* One file giving op a JSON null in every optional field. */
#define NULLS_FILE "{\"records\": [" \
	"{\"name\": \"op\", \"section\": \"channels\", \"created_at\": null, \"data\": [" \
	"{\"type\": \"other\", \"settings\": null}," \
	"{\"type\": \"peer_server\", \"settings\": {\"address\": \"localhost:5556\"}}]}," \
	REC("op", "services", "[{\"name\": \"bare\", \"permissions\": null, \"methods\": null}," \
	" {\"name\": \"svc\", \"permissions\": [{\"group\": \"users\", \"rights\": [\"call\"]}]," \
	" \"methods\": [{\"name\": \"m\", \"permissions\": null}]}]") "," \
	REC("op", "settings", "[{\"service\": null, \"operator\": null, \"environment\": null," \
	" \"settings\": {\"allowed_domains\": null}}]") "," \
	REC("op", "certificates", "[{\"fingerprint\": \"" FP_A "\", \"key_usage\": null}]") "," \
	REC("op", "preferences", "null") "," \
	REC("caller", "groups", "[\"users\"]") "]}"

Test(directory, null_in_each_optional_field_counts_as_absent)
{
	struct directory *d;
	struct json_object *c, *s, *it, *v;

	put("a.json", NULLS_FILE, 0);
	d = load_ok();
	cr_assert_str_eq(directory_peer_address(d, "op"), "localhost:5556");
	cr_assert(directory_has_fingerprint(d, "op", FP_A),
	    "a null key_usage is no key_usage: an encryption key");
	cr_assert(directory_can_call(d, "caller", "op", "m"));
	cr_assert(!directory_can_call(d, "caller", "op", "bare"));
	c = directory_client_entry(d, "op");
	cr_assert_not_null(c);
	cr_assert(json_object_object_get_ex(c, "settings", &s));
	cr_assert_eq(json_object_array_length(s), 1);
	it = json_object_array_get_idx(s, 0);
	cr_assert(!json_object_object_get_ex(it, "service", &v), "null members are dropped");
	cr_assert(!json_object_object_get_ex(it, "operator", &v));
	cr_assert(!json_object_object_get_ex(it, "environment", &v));
	json_object_put(c);
	directory_unref(d);
}

Test(directory, a_reload_to_null_key_usage_keeps_serving)
{
	struct directory_watch *w;
	struct directory *d;

	put("a.json", "{\"records\": [" REC("op", "certificates",
	    "[{\"fingerprint\": \"" FP_A "\", \"key_usage\": \"signing\"}]") "]}", 0);
	w = watch_ok();
	put("a.json", NULLS_FILE, 0);
	cr_assert_eq(directory_watch_poll(w), 1);
	d = directory_watch_get(w);
	cr_assert(directory_has_fingerprint(d, "op", FP_A));
	directory_unref(d);
	directory_watch_free(w);
}

Test(directory, null_where_a_value_is_required_is_an_error_naming_file_and_record)
{
	static const char *bad[] = {
		REC("op", "groups", "null"),
		REC("op", "groups", "[null]"),
		REC("op", "channels", "[{\"type\": \"peer_server\", \"settings\": null}]"),
		REC("op", "channels", "[{\"type\": null}]"),
		REC("op", "services", "[{\"name\": null}]"),
		REC("op", "services", "[{\"name\": \"s\", \"methods\": [{\"name\": null}]}]"),
		REC("op", "services", "[{\"name\": \"s\", \"permissions\": [null]}]"),
		REC("op", "services", "[{\"name\": \"s\", \"permissions\":"
		    " [{\"group\": \"g\", \"rights\": null}]}]"),
		REC("op", "settings", "[{\"service\": \"proxy\", \"settings\": null}]"),
		REC("op", "settings", "[null]"),
		REC("op", "certificates", "[{\"fingerprint\": null}]"),
		"{\"name\": null, \"section\": \"groups\", \"data\": []}",
		"{\"name\": \"op\", \"section\": null, \"data\": []}",
		"null",
	};
	char text[1024], err[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "{\"records\": [%s]}", bad[i]);
		put("a.json", text, 0);
		cr_assert_null(load(err, sizeof(err)), "%s", bad[i]);
		cr_assert(strstr(err, "a.json: record 0") != NULL, "%s: %s", bad[i], err);
	}
	put("a.json", "{\"records\": null}", 0);
	cr_assert_null(load(err, sizeof(err)));
	cr_assert(strstr(err, "a.json") != NULL, "%s", err);
}
