/* Tests for control.c: which allowed_domains a caller's directory entry
 * grants to the proxy evaluating it (review findings M1, M2). */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "control.h"
#include "directory.h"

static char tmp[256];

static void
tmp_setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/hp-test-control.XXXXXX");
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

TestSuite(control, .init = tmp_setup, .fini = tmp_teardown);

/* params as the Hyper builds them: _client from the real directory view of
 * an operator "caller" whose settings section is `items`. */
static struct json_object *
params_from_directory(const char *items)
{
	char path[PATH_MAX], err[512], *paths[] = { path, NULL };
	struct json_object *params, *client;
	struct directory *d;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/a.json", tmp);
	cr_assert_not_null(fp = fopen(path, "w"));
	fprintf(fp, "{\"records\": [{\"name\": \"caller\", \"section\": \"settings\", "
	    "\"data\": %s}]}", items);
	cr_assert_eq(fclose(fp), 0);
	d = directory_load(paths, err, sizeof(err));
	cr_assert_not_null(d, "%s", err);
	client = json_object_new_object();
	json_object_object_add(client, "name", json_object_new_string("caller"));
	json_object_object_add(client, "entry", directory_client_entry(d, "caller"));
	params = json_object_new_object();
	json_object_object_add(params, "_client", client);
	directory_unref(d);
	return params;
}

/* The granted list as "a,b", or "-" when the caller has none. */
static const char *
granted(struct json_object *params, const char *self)
{
	static char buf[256];
	const char **v;
	int n;

	if ((n = control_allowed_domains(params, self, &v)) < 0) {
		cr_assert_null(v);
		return "-";
	}
	buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (i)
			strcat(buf, ",");
		strcat(buf, v[i]);
	}
	free(v);
	return buf;
}

Test(control, an_item_scoped_to_another_proxy_grants_nothing_here)
{
	struct json_object *p = params_from_directory("[{\"service\": \"proxy\", "
	    "\"operator\": \"other-proxy.ga\", "
	    "\"settings\": {\"allowed_domains\": [\".elsewhere.local\"]}}]");

	cr_assert_str_eq(granted(p, "public-proxy-1.ga"), "-");
	cr_assert_str_eq(granted(p, "other-proxy.ga"), ".elsewhere.local");
	json_object_put(p);
}

Test(control, an_item_naming_this_proxy_wins_over_an_unscoped_one)
{
	struct json_object *p = params_from_directory("["
	    "{\"service\": \"proxy\", \"operator\": \"other-proxy.ga\","
	    " \"settings\": {\"allowed_domains\": [\".elsewhere.local\"]}},"
	    "{\"service\": \"proxy\", \"settings\": {\"allowed_domains\": [\".any.local\"]}},"
	    "{\"service\": \"proxy\", \"operator\": \"public-proxy-1.ga\","
	    " \"settings\": {\"allowed_domains\": [\".mine.local\", \".also.local\"]}}]");

	cr_assert_str_eq(granted(p, "public-proxy-1.ga"), ".mine.local,.also.local");
	cr_assert_str_eq(granted(p, "other-proxy.ga"), ".elsewhere.local");
	cr_assert_str_eq(granted(p, "third.ga"), ".any.local");
	json_object_put(p);
}

Test(control, items_of_other_services_are_ignored)
{
	struct json_object *p = params_from_directory("["
	    "{\"service\": \"mail\", \"settings\": {\"allowed_domains\": [\".mail.local\"]}},"
	    "{\"settings\": {\"allowed_domains\": [\".noservice.local\"]}}]");

	cr_assert_str_eq(granted(p, "public-proxy-1.ga"), "-");
	json_object_put(p);
}

/* What the Hyper sends is input too: nulls anywhere never crash the proxy. */
Test(control, null_values_from_the_wire_are_absent_values)
{
	static const char *wire[] = {
		"{}",
		"{\"_client\": null}",
		"{\"_client\": {\"entry\": null}}",
		"{\"_client\": {\"entry\": {\"settings\": null}}}",
		"{\"_client\": {\"entry\": {\"settings\": [null, 1, \"x\"]}}}",
		"{\"_client\": {\"entry\": {\"settings\": [{\"service\": null,"
		    " \"settings\": {\"allowed_domains\": [\".a.local\"]}}]}}}",
		"{\"_client\": {\"entry\": {\"settings\": [{\"service\": \"proxy\","
		    " \"settings\": null}]}}}",
		"{\"_client\": {\"entry\": {\"settings\": [{\"service\": \"proxy\","
		    " \"settings\": {\"allowed_domains\": null}}]}}}",
		"{\"_client\": {\"entry\": {\"settings\": [{\"service\": \"proxy\","
		    " \"operator\": 7, \"settings\": {\"allowed_domains\": [\".a.local\"]}}]}}}",
	};
	struct json_object *p;

	for (size_t i = 0; i < sizeof(wire) / sizeof(wire[0]); i++) {
		cr_assert_not_null(p = json_tokener_parse(wire[i]), "%s", wire[i]);
		cr_assert_str_eq(granted(p, "public-proxy-1.ga"), "-", "%s", wire[i]);
		json_object_put(p);
	}
	p = json_tokener_parse("{\"_client\": {\"name\": null, \"entry\": {\"settings\": ["
	    "{\"service\": \"proxy\", \"operator\": null,"
	    " \"settings\": {\"allowed_domains\": [null, \".a.local\"]}}]}}}");
	cr_assert_null(control_caller(p));
	cr_assert_str_eq(granted(p, "public-proxy-1.ga"), ".a.local",
	    "a null operator is no operator");
	json_object_put(p);
}
