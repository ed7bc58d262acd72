/* Tests for settings.c: loading, merging, expansion and the strict readers.
 * Every fixture lives in a fresh mkdtemp folder removed after the test. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "settings.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static char tmp[64];
static char err[512];

static void
setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/hp-settings-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void
teardown(void)
{
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(settings, .init = setup, .fini = teardown);

/* Write tmp/name (creating tmp/sub folders as needed); returns its path. */
static const char *
put(const char *name, const char *text)
{
	static char path[PATH_MAX];
	char *slash;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	for (slash = path + strlen(tmp) + 1; (slash = strchr(slash, '/')) != NULL; slash++) {
		*slash = '\0';
		mkdir(path, 0700);
		*slash = '/';
	}
	cr_assert_not_null(fp = fopen(path, "w"));
	fputs(text, fp);
	fclose(fp);
	return path;
}

static struct json_object *
at(struct json_object *o, const char *dotted)
{
	char buf[256], *p, *k;
	struct json_object *v = o;

	snprintf(buf, sizeof(buf), "%s", dotted);
	for (p = buf; (k = strsep(&p, ".")) != NULL; )
		if (v == NULL || !json_object_object_get_ex(v, k, &v))
			return NULL;
	return v;
}

static struct json_object *
load_ok(const char *paths)
{
	struct json_object *root = settings_load(paths, err, sizeof(err));

	cr_assert_not_null(root, "load failed: %s", err);
	return root;
}

static void
load_fails(const char *paths, const char *want)
{
	struct json_object *root = settings_load(paths, err, sizeof(err));

	cr_assert_null(root, "load should fail with: %s", want);
	cr_assert_str_eq(err, want);
}

static int
ends_with(const char *s, const char *sfx)
{
	size_t n = strlen(s), m = strlen(sfx);

	return n >= m && strcmp(s + n - m, sfx) == 0;
}

Test(settings, folder_files_merge_in_name_order_later_wins_maps_recursive)
{
	struct json_object *root, *list;

	put("10-base.yml", "name: base\na:\n  x: 1\n  y: one\n  list: [1, 2]\n");
	put("20-over.json", "{\"a\": {\"y\": \"two\", \"list\": [3]}, \"extra\": true}\n");
	put("05-first.yaml", "name: first\na: {z: 0}\n");
	root = load_ok(tmp);
	cr_assert_str_eq(json_object_get_string(at(root, "name")), "base");
	cr_assert_eq(json_object_get_int(at(root, "a.x")), 1);
	cr_assert_str_eq(json_object_get_string(at(root, "a.y")), "two");
	cr_assert_eq(json_object_get_int(at(root, "a.z")), 0);
	cr_assert(json_object_get_boolean(at(root, "extra")));
	list = at(root, "a.list");
	cr_assert_eq(json_object_array_length(list), 1);
	cr_assert_eq(json_object_get_int(json_object_array_get_idx(list, 0)), 3);
	cr_assert(ends_with(settings_origin(at(root, "a.y")), "/20-over.json"));
	cr_assert(ends_with(settings_origin(at(root, "a.x")), "/10-base.yml"));
	cr_assert(ends_with(settings_origin(at(root, "a.z")), "/05-first.yaml"));
	json_object_put(root);
}

Test(settings, path_list_merges_files_and_folders_left_to_right)
{
	struct json_object *root;
	char list[3 * PATH_MAX];

	put("d/a.yml", "k: folder\nonly_folder: 1\n");
	snprintf(list, sizeof(list), "%s/d:%s", tmp, put("last.json", "{\"k\": \"file\"}"));
	root = load_ok(list);
	cr_assert_str_eq(json_object_get_string(at(root, "k")), "file");
	cr_assert_eq(json_object_get_int(at(root, "only_folder")), 1);
	json_object_put(root);
}

Test(settings, folder_ignores_names_without_an_anchored_suffix_and_subfolders)
{
	struct json_object *root;

	put("a.yml", "kept: 1\n");
	put("x.json.bak", "{not json");
	put("notes.txt", "bad: [");
	put("y.yml~", "bad: [");
	put("sub.yml/inner.yml", "nested: 1\n");
	root = load_ok(tmp);
	cr_assert_eq(json_object_object_length(root), 1);
	cr_assert_eq(json_object_get_int(at(root, "kept")), 1);
	json_object_put(root);
}

Test(settings, empty_file_is_an_empty_map)
{
	struct json_object *root;

	put("a.yml", "# only a comment\n");
	put("b.json", "  \n");
	root = load_ok(tmp);
	cr_assert(json_object_is_type(root, json_type_object));
	cr_assert_eq(json_object_object_length(root), 0);
	json_object_put(root);
}

Test(settings, top_level_must_be_a_map)
{
	const char *p = put("list.yml", "- a\n- b\n");
	char want[PATH_MAX + 64];

	snprintf(want, sizeof(want), "%s: the top level must be a map", p);
	load_fails(p, want);
}

Test(settings, yaml_plain_scalars_are_typed_and_quoted_ones_are_strings)
{
	struct json_object *root;

	put("s.yml", "n: ~\nn2: null\nt: true\nf: false\ni: -42\nh: 0x1f\nd: 2.5\ns: hello\n"
	    "qi: \"42\"\nqb: 'true'\nver: 1.2.3\ntagged: !!str 7\n");
	root = load_ok(tmp);
	cr_assert(json_object_object_get_ex(root, "n", NULL));
	cr_assert_null(at(root, "n"));
	cr_assert_null(at(root, "n2"));
	cr_assert(json_object_is_type(at(root, "t"), json_type_boolean));
	cr_assert(json_object_get_boolean(at(root, "t")));
	cr_assert_not(json_object_get_boolean(at(root, "f")));
	cr_assert(json_object_is_type(at(root, "i"), json_type_int));
	cr_assert_eq(json_object_get_int64(at(root, "i")), -42);
	cr_assert_eq(json_object_get_int64(at(root, "h")), 31);
	cr_assert(json_object_is_type(at(root, "d"), json_type_double));
	cr_assert_float_eq(json_object_get_double(at(root, "d")), 2.5, 1e-12);
	cr_assert_str_eq(json_object_get_string(at(root, "s")), "hello");
	cr_assert(json_object_is_type(at(root, "qi"), json_type_string));
	cr_assert(json_object_is_type(at(root, "qb"), json_type_string));
	cr_assert_str_eq(json_object_get_string(at(root, "ver")), "1.2.3");
	cr_assert(json_object_is_type(at(root, "tagged"), json_type_string));
	json_object_put(root);
}

Test(settings, yaml_anchors_and_multiple_documents_are_rejected)
{
	const char *p = put("a.yml", "a: &x 1\nb: *x\n");
	char want[PATH_MAX + 64];

	snprintf(want, sizeof(want), "%s: line 1: anchors and aliases are not supported", p);
	load_fails(p, want);
	p = put("m.yml", "a: 1\n---\nb: 2\n");
	snprintf(want, sizeof(want), "%s: line 2: only one YAML document per file", p);
	load_fails(p, want);
}

Test(settings, yaml_duplicate_key_is_rejected)
{
	const char *p = put("d.yml", "a:\n  b: 1\n  b: 2\n");
	char want[PATH_MAX + 64];

	snprintf(want, sizeof(want), "%s: line 3: duplicate key 'b'", p);
	load_fails(p, want);
}

Test(settings, cfg_error_reports_a_caller_found_problem_with_file_and_key)
{
	struct json_object *root;
	struct cfg c, pub;
	const char *p = put("a.yml", "public:\n  mode: sideways\n");
	char want[PATH_MAX + 64];

	root = load_ok(p);
	cfg_root(&c, root);
	cfg_section(&c, "public", 1, &pub);
	cr_assert_eq(cfg_error(&pub, "mode", "must be %s or %s", "up", "down"), -1);
	snprintf(want, sizeof(want), "%s: public.mode: must be up or down", p);
	cr_assert_str_eq(cfg_errstr(&c), want);
	json_object_put(root);
}

Test(settings, dir_expands_to_the_files_folder_and_double_dollar_is_a_dollar)
{
	struct json_object *root;
	char real[PATH_MAX], want[PATH_MAX + 64];

	put("conf/s.yml", "ca: \"$DIR/../certs/root.crt\"\nprice: \"$$5\"\nbraced: ${DIR}\n");
	snprintf(want, sizeof(want), "%s/conf", tmp);
	root = load_ok(want);
	cr_assert_not_null(realpath(tmp, real));
	snprintf(want, sizeof(want), "%s/conf/../certs/root.crt", real);
	cr_assert_str_eq(json_object_get_string(at(root, "ca")), want);
	cr_assert_str_eq(json_object_get_string(at(root, "price")), "$5");
	snprintf(want, sizeof(want), "%s/conf", real);
	cr_assert_str_eq(json_object_get_string(at(root, "braced")), want);
	json_object_put(root);
}

Test(settings, vars_come_from_env_with_default_and_literal_across_files)
{
	struct json_object *root;

	setenv("HP_TEST_SET", "alpha", 1);
	unsetenv("HP_TEST_UNSET");
	put("1.yml", "vars:\n  A: {source: env, variable: HP_TEST_SET, default: nope}\n"
	    "  B: {source: env, variable: HP_TEST_UNSET, default: beta}\n");
	put("2.json", "{\"vars\": {\"C\": {\"source\": \"literal\", \"value\": \"gamma\"}},"
	    " \"x\": \"$A-${B}-$C\", \"list\": [\"$C\"]}");
	root = load_ok(tmp);
	cr_assert_str_eq(json_object_get_string(at(root, "x")), "alpha-beta-gamma");
	cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(at(root, "list"), 0)),
	    "gamma");
	cr_assert_not(json_object_object_get_ex(root, "vars", NULL));
	json_object_put(root);
}

Test(settings, undefined_variable_is_an_error_naming_file_and_key)
{
	const char *p = put("u.yml", "a:\n  b: [ok, \"x$NOPE\"]\n");
	char want[PATH_MAX + 64];

	snprintf(want, sizeof(want), "%s: a.b[1]: undefined variable $NOPE", p);
	load_fails(tmp, want);
}

Test(settings, env_var_without_value_or_default_is_an_error)
{
	const char *p = put("v.yml", "vars:\n  A: {source: env, variable: HP_TEST_UNSET}\n");
	char want[PATH_MAX + 128];

	unsetenv("HP_TEST_UNSET");
	snprintf(want, sizeof(want), "%s: vars.A: environment variable HP_TEST_UNSET is not set "
	    "and there is no default", p);
	load_fails(tmp, want);
}

Test(settings, nonexistent_path_is_an_error)
{
	char path[PATH_MAX + 16], want[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/nope.yml", tmp);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	load_fails(path, want);
}

Test(settings, bad_yaml_syntax_reports_the_line)
{
	const char *p = put("bad.yml", "a: 1\nb: 2\n  c: 3\n");
	char want[PATH_MAX + 64];

	settings_load(p, err, sizeof(err));
	snprintf(want, sizeof(want), "%s: line 3: ", p);
	cr_assert(strncmp(err, want, strlen(want)) == 0, "got: %s", err);
}

Test(settings, bad_json_syntax_reports_the_line)
{
	const char *p = put("bad.json", "{\n  \"a\": 1,\n  \"b\": [1, 2,]\n}\n");
	char want[PATH_MAX + 64];

	cr_assert_null(settings_load(p, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: line 3: ", p);
	cr_assert(strncmp(err, want, strlen(want)) == 0, "got: %s", err);
}

Test(settings, json_with_trailing_garbage_is_rejected)
{
	const char *p = put("t.json", "{\"a\": 1}\n{\"b\": 2}\n");
	char want[PATH_MAX + 64];

	cr_assert_null(settings_load(p, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: line 2: ", p);
	cr_assert(strncmp(err, want, strlen(want)) == 0, "got: %s", err);
}

/* A settings tree with two files, read like the proxy reads `public:`. */
static struct json_object *
two_files(const char *second, const char **p2)
{
	put("1.yml", "public:\n  port: 443\n  tls:\n    key_file: k.pem\n");
	*p2 = put("2.yml", second);
	return load_ok(tmp);
}

Test(settings, unknown_key_is_an_error_naming_file_and_key)
{
	struct json_object *root;
	struct cfg c, pub, tls;
	const char *p2;
	char want[PATH_MAX + 64], *key = NULL;
	long port;
	int verify;

	root = two_files("public:\n  tls:\n    validate_client: false\n", &p2);
	cr_assert_eq(cfg_root(&c, root), 0);
	cr_assert_eq(cfg_section(&c, "public", 1, &pub), 0);
	cr_assert_eq(cfg_int(&pub, "port", 8443, 0, 65535, &port), 0);
	cr_assert_eq(port, 443);
	cr_assert_eq(cfg_section(&pub, "tls", 0, &tls), 0);
	cr_assert_eq(cfg_string(&tls, "key_file", NULL, 1, &key), 0);
	cr_assert_eq(cfg_bool(&tls, "verify_client", 1, &verify), 0);
	cr_assert_eq(verify, 1);
	cr_assert_eq(cfg_done(&tls), -1);
	snprintf(want, sizeof(want), "%s: public.tls.validate_client: unknown key", p2);
	cr_assert_str_eq(cfg_errstr(&c), want);
	free(key);
	json_object_put(root);
}

Test(settings, wrong_type_is_an_error)
{
	struct json_object *root;
	struct cfg c, pub, tls;
	const char *p2;
	char want[PATH_MAX + 64];
	int verify;

	root = two_files("public:\n  tls:\n    verify_client: \"true\"\n", &p2);
	cfg_root(&c, root);
	cfg_section(&c, "public", 1, &pub);
	cfg_section(&pub, "tls", 1, &tls);
	cr_assert_eq(cfg_bool(&tls, "verify_client", 1, &verify), -1);
	snprintf(want, sizeof(want), "%s: public.tls.verify_client: expected a boolean", p2);
	cr_assert_str_eq(cfg_errstr(&c), want);
	json_object_put(root);
}

Test(settings, out_of_range_is_an_error)
{
	struct json_object *root;
	struct cfg c, pub;
	const char *p2;
	char want[PATH_MAX + 64];
	long port;

	root = two_files("public:\n  port: 70000\n", &p2);
	cfg_root(&c, root);
	cfg_section(&c, "public", 1, &pub);
	cr_assert_eq(cfg_int(&pub, "port", 8443, 0, 65535, &port), -1);
	snprintf(want, sizeof(want), "%s: public.port: must be between 0 and 65535", p2);
	cr_assert_str_eq(cfg_errstr(&c), want);
	json_object_put(root);
}

Test(settings, missing_required_key_is_an_error)
{
	struct json_object *root;
	struct cfg c, pub;
	const char *p2;
	char want[PATH_MAX + 64], *name = NULL;

	root = two_files("other: 1\n", &p2);
	cfg_root(&c, root);
	cfg_section(&c, "public", 1, &pub);
	cr_assert_eq(cfg_string(&pub, "name", NULL, 1, &name), -1);
	cr_assert_null(name);
	snprintf(want, sizeof(want), "%s/1.yml: public.name: missing", tmp);
	cr_assert_str_eq(cfg_errstr(&c), want);
	json_object_put(root);
}

Test(settings, first_error_is_kept_and_later_calls_fail)
{
	struct json_object *root;
	struct cfg c, pub;
	const char *p2;
	char want[PATH_MAX + 64];
	long port;
	int b;

	root = two_files("public:\n  port: x\n  flag: 3\n", &p2);
	cfg_root(&c, root);
	cfg_section(&c, "public", 1, &pub);
	cr_assert_eq(cfg_int(&pub, "port", 1, 0, 65535, &port), -1);
	cr_assert_eq(cfg_bool(&pub, "flag", 0, &b), -1);
	cr_assert_eq(cfg_done(&c), -1);
	snprintf(want, sizeof(want), "%s: public.port: expected an integer", p2);
	cr_assert_str_eq(cfg_errstr(&pub), want);
	json_object_put(root);
}

Test(settings, absent_optional_values_take_their_defaults)
{
	struct json_object *root;
	struct cfg c, sec;
	char *s = NULL, **v = NULL;
	long n;
	double t;
	int b;

	root = load_ok(put("a.yml", "{}\n"));
	cfg_root(&c, root);
	cr_assert_eq(cfg_section(&c, "absent", 0, &sec), 0);
	cr_assert_null(sec.obj);
	cr_assert_eq(cfg_string(&sec, "s", "dflt", 0, &s), 0);
	cr_assert_str_eq(s, "dflt");
	cr_assert_eq(cfg_int(&sec, "n", 7, 0, 10, &n), 0);
	cr_assert_eq(n, 7);
	cr_assert_eq(cfg_seconds(&sec, "t", 2.5, 0, 10, &t), 0);
	cr_assert_float_eq(t, 2.5, 1e-12);
	cr_assert_eq(cfg_bool(&sec, "b", 1, &b), 0);
	cr_assert_eq(b, 1);
	cr_assert_eq(cfg_strv(&sec, "v", 0, &v), 0);
	cr_assert_null(v[0]);
	cr_assert_eq(cfg_done(&sec), 0);
	cr_assert_eq(cfg_done(&c), 0);
	cr_assert_str_eq(cfg_errstr(&c), "");
	free(s);
	cfg_strv_free(v);
	json_object_put(root);
}

Test(settings, fractional_seconds_are_kept)
{
	struct json_object *root;
	struct cfg c;
	double a, b, d;

	put("a.yml", "half: 0.5\nwhole: 3\n");
	put("b.json", "{\"quarter\": 0.25}");
	root = load_ok(tmp);
	cfg_root(&c, root);
	cr_assert_eq(cfg_seconds(&c, "half", 1, 0, 60, &a), 0);
	cr_assert_eq(cfg_seconds(&c, "whole", 1, 0, 60, &b), 0);
	cr_assert_eq(cfg_seconds(&c, "quarter", 1, 0, 60, &d), 0);
	cr_assert_eq(a, 0.5);
	cr_assert_eq(b, 3.0);
	cr_assert_eq(d, 0.25);
	cr_assert_eq(cfg_done(&c), 0);
	json_object_put(root);
}

Test(settings, seconds_reject_strings_and_negative_values)
{
	struct json_object *root;
	struct cfg c, n;
	const char *p = put("a.yml", "s: \"5\"\nneg: -0.5\n");
	char want[PATH_MAX + 64];
	double d;

	root = load_ok(p);
	cfg_root(&c, root);
	cr_assert_eq(cfg_seconds(&c, "s", 1, 0, 60, &d), -1);
	snprintf(want, sizeof(want), "%s: s: expected a number of seconds", p);
	cr_assert_str_eq(cfg_errstr(&c), want);
	cfg_root(&n, root);
	cr_assert_eq(cfg_seconds(&n, "neg", 1, -10, 60, &d), -1);
	snprintf(want, sizeof(want), "%s: neg: must not be negative", p);
	cr_assert_str_eq(cfg_errstr(&n), want);
	json_object_put(root);
}

Test(settings, strv_accepts_a_string_or_a_list_of_strings)
{
	struct json_object *root;
	struct cfg c;
	const char *p = put("a.yml", "one: a.pem\nmany: [b.pem, c.pem]\nbad: [d.pem, 3]\n");
	char want[PATH_MAX + 64], **one, **many, **bad;

	root = load_ok(p);
	cfg_root(&c, root);
	cr_assert_eq(cfg_strv(&c, "one", 1, &one), 0);
	cr_assert_str_eq(one[0], "a.pem");
	cr_assert_null(one[1]);
	cr_assert_eq(cfg_strv(&c, "many", 1, &many), 0);
	cr_assert_str_eq(many[0], "b.pem");
	cr_assert_str_eq(many[1], "c.pem");
	cr_assert_null(many[2]);
	cr_assert_eq(cfg_strv(&c, "bad", 1, &bad), -1);
	cr_assert_null(bad);
	snprintf(want, sizeof(want), "%s: bad: item 2: expected a string", p);
	cr_assert_str_eq(cfg_errstr(&c), want);
	cfg_strv_free(one);
	cfg_strv_free(many);
	json_object_put(root);
}

Test(settings, list_of_maps_is_read_element_by_element)
{
	struct json_object *root;
	struct cfg c, ch, set;
	const char *p = put("h.yml",
	    "channels:\n"
	    "  - {name: local, type: jsonrpc_server, settings: {path: /jsonrpc}}\n"
	    "  - name: peers\n"
	    "    type: peer_client\n"
	    "    settings: {pool_size: 4}\n"
	    "    typo: 1\n");
	char want[PATH_MAX + 64], *name, *type, *path;
	long pool;
	int n;

	root = load_ok(p);
	cfg_root(&c, root);
	cr_assert_eq(n = cfg_list_len(&c, "channels"), 2);
	cr_assert_eq(cfg_list_map(&c, "channels", 0, &ch), 0);
	cr_assert_eq(cfg_string(&ch, "name", NULL, 1, &name), 0);
	cr_assert_eq(cfg_string(&ch, "type", NULL, 1, &type), 0);
	cr_assert_str_eq(name, "local");
	cr_assert_str_eq(type, "jsonrpc_server");
	cr_assert_eq(cfg_section(&ch, "settings", 1, &set), 0);
	cr_assert_eq(cfg_string(&set, "path", NULL, 1, &path), 0);
	cr_assert_str_eq(path, "/jsonrpc");
	cr_assert_eq(cfg_done(&set), 0);
	cr_assert_eq(cfg_done(&ch), 0);
	free(name);
	free(type);
	free(path);
	cr_assert_eq(cfg_list_map(&c, "channels", 1, &ch), 0);
	cr_assert_eq(cfg_string(&ch, "name", NULL, 1, &name), 0);
	cr_assert_str_eq(name, "peers");
	cr_assert_eq(cfg_string(&ch, "type", NULL, 1, &type), 0);
	cr_assert_eq(cfg_section(&ch, "settings", 1, &set), 0);
	cr_assert_eq(cfg_int(&set, "pool_size", 8, 1, 64, &pool), 0);
	cr_assert_eq(pool, 4);
	cr_assert_eq(cfg_done(&ch), -1);
	snprintf(want, sizeof(want), "%s: channels[1].typo: unknown key", p);
	cr_assert_str_eq(cfg_errstr(&c), want);
	free(name);
	free(type);
	json_object_put(root);
}

Test(settings, loading_and_failing_leave_no_leaks)
{
	struct json_object *root;
	char bad[PATH_MAX + 16];

	put("a.yml", "vars:\n  X: {source: literal, value: \"$DIR\"}\nk: [\"$X\", 0.5, {m: 1}]\n");
	put("b.json", "{\"k2\": 1.25, \"m\": {\"n\": [true, null]}}");
	for (int i = 0; i < 3; i++) {
		root = load_ok(tmp);
		cr_assert_not_null(at(root, "m.n"));
		json_object_put(root);
	}
	snprintf(bad, sizeof(bad), "%s/c.yml", tmp);
	put("c.yml", "x: [1, {y: \"$UNDEFINED\"}]\n");
	cr_assert_null(settings_load(tmp, err, sizeof(err)));
	put("c.yml", "x: [1, {y: *z}]\n");
	cr_assert_null(settings_load(tmp, err, sizeof(err)));
#if defined(__SANITIZE_ADDRESS__)
	cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks");
#endif
}

/* Found by fuzz_settings: a NUL byte counted as JSON whitespace, and a
 * document that is a JSON null came back as NULL without a message. */
Test(settings, json_with_a_nul_byte_or_a_null_document_is_an_error_with_a_message)
{
	char path[PATH_MAX];
	const char *bodies[] = { "null", "{\"a\": 1}", "  " };
	size_t lens[] = { 5, 9, 3 };    /* each followed by one NUL byte */

	for (int i = 0; i < 3; i++) {
		FILE *fp;

		snprintf(path, sizeof(path), "%s/n%d.json", tmp, i);
		fp = fopen(path, "w");
		cr_assert_not_null(fp);
		fwrite(bodies[i], 1, strlen(bodies[i]), fp);
		fwrite("", 1, lens[i] - strlen(bodies[i]), fp);
		fclose(fp);
		err[0] = '\0';
		cr_assert_null(settings_load(path, err, sizeof(err)), "%s loaded", bodies[i]);
		cr_assert(strncmp(err, path, strlen(path)) == 0, "got: '%s'", err);
	}
	snprintf(path, sizeof(path), "%s/null.json", tmp);
	FILE *fp = fopen(path, "w");
	cr_assert_not_null(fp);
	fputs("null ", fp);
	fclose(fp);
	err[0] = '\0';
	cr_assert_null(settings_load(path, err, sizeof(err)));
	cr_assert(strstr(err, path) != NULL, "got: '%s'", err);
}
