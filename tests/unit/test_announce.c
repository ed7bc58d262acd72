/* Tests for announce.c: the table and the JSON-RPC validation helpers. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "announce.h"
#include "control.h"
#include "jsonrpc.h"
#include "proxyproto.h"
#include "util.h"

static struct announcement
mk(const char *domain, const char *op, const char *proxy, double exp)
{
	struct announcement a;

	cr_assert_eq(announce_make(&a, domain, op, proxy, exp), 0, "%s", domain);
	return a;
}

Test(announce, lookup_finds_exact_domain_only)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("App.Example.com.", "op1", NULL, 0), out;

	cr_assert_str_eq(a.an_domain, "app.example.com");
	cr_assert_eq(announce_put(t, &a), 0);
	cr_assert_eq(announce_lookup(t, "app.example.com", NULL, 1000, &out), 0);
	cr_assert_str_eq(out.an_operator, "op1");
	cr_assert_eq(announce_lookup(t, "example.com", NULL, 1000, NULL), -1);
	cr_assert_eq(announce_lookup(t, "x.app.example.com", NULL, 1000, NULL), -1);
	announce_table_free(t);
}

Test(announce, lookup_ignores_expired_entries)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("a.example.com", "op1", NULL, 2000);

	announce_put(t, &a);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, 1999, NULL), 0);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, 2000, NULL), -1);
	cr_assert_eq(announce_count(t), 1, "kept until expired entries are dropped");
	cr_assert_eq(announce_expire(t, 2000), 1);
	cr_assert_eq(announce_count(t), 0);
	announce_table_free(t);
}

Test(announce, put_replaces_same_domain_and_proxy)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("a.example.com", "op1", "pub1", 0);
	struct announcement b = mk("a.example.com", "op2", "pub1", 0);
	struct announcement c = mk("a.example.com", "op1", "pub2", 0), out;

	announce_put(t, &a);
	announce_put(t, &b);
	cr_assert_eq(announce_count(t), 1);
	announce_put(t, &c);
	cr_assert_eq(announce_count(t), 2);
	cr_assert_eq(announce_lookup(t, "a.example.com", "pub1", 0, &out), 0);
	cr_assert_str_eq(out.an_operator, "op2");
	cr_assert_eq(announce_lookup(t, "a.example.com", "pub3", 0, NULL), -1);
	announce_table_free(t);
}

Test(announce, remove_respects_operator_and_proxy)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("a.example.com", "op1", "pub1", 0);
	struct announcement b = mk("a.example.com", "op1", "pub2", 0);

	announce_put(t, &a);
	announce_put(t, &b);
	cr_assert_eq(announce_remove(t, "a.example.com", NULL, "op2"), 0);
	cr_assert_eq(announce_remove(t, "a.example.com", "pub1", "op1"), 1);
	cr_assert_eq(announce_lookup(t, "a.example.com", "pub2", 0, NULL), 0);
	cr_assert_eq(announce_remove(t, "a.example.com", NULL, NULL), 1);
	cr_assert_eq(announce_count(t), 0);
	announce_table_free(t);
}

Test(announce, list_by_operator_is_sorted_and_unexpired)
{
	struct announce_table *t = announce_table_new();
	struct announcement *v;
	char d[64];

	/* enough entries to grow the table */
	for (int i = 0; i < 200; i++) {
		snprintf(d, sizeof(d), "h%03d.example.com", i);
		struct announcement a = mk(d, i % 2 ? "odd" : "even", NULL,
		    i == 1 ? 50 : 0);
		cr_assert_eq(announce_put(t, &a), 0);
	}
	cr_assert_eq(announce_list(t, "odd", 100, &v), 99);
	cr_assert_str_eq(v[0].an_domain, "h003.example.com");
	cr_assert_str_eq(v[98].an_domain, "h199.example.com");
	for (int i = 0; i < 99; i++)
		cr_assert_str_eq(v[i].an_operator, "odd");
	free(v);
	cr_assert_eq(announce_list(t, NULL, 100, &v), 199);
	free(v);
	cr_assert_eq(announce_list(t, "nobody", 100, &v), 0);
	cr_assert_null(v);
	for (int i = 0; i < 200; i++) {
		snprintf(d, sizeof(d), "h%03d.example.com", i);
		cr_assert_eq(announce_lookup(t, d, NULL, 0, NULL), 0, "%s", d);
	}
	announce_table_free(t);
}

Test(announce, make_rejects_bad_fields)
{
	struct announcement a;
	char longop[300];

	memset(longop, 'o', sizeof(longop) - 1);
	longop[sizeof(longop) - 1] = '\0';
	cr_assert_eq(announce_make(&a, "bad..name", "op", NULL, 0), -1);
	cr_assert_eq(announce_make(&a, "a.com", "", NULL, 0), -1);
	cr_assert_eq(announce_make(&a, "a.com", NULL, NULL, 0), -1);
	cr_assert_eq(announce_make(&a, "a.com", longop, NULL, 0), -1);
	cr_assert_eq(announce_make(&a, "a.com", "op", longop, 0), -1);
}

Test(announce, check_domain_normalizes)
{
	char out[ANNOUNCE_DOMAIN_MAX];
	char big[400];

	cr_assert_eq(announce_check_domain("Test.Internal-Server.LOCAL.", out), 0);
	cr_assert_str_eq(out, "test.internal-server.local");
	cr_assert_eq(announce_check_domain("", out), -1);
	cr_assert_eq(announce_check_domain("a.com..", out), -1);
	cr_assert_eq(announce_check_domain("a b.com", out), -1);
	cr_assert_eq(announce_check_domain(NULL, out), -1);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(announce_check_domain(big, out), -1);
}

Test(announce, allowed_domains_need_a_proper_suffix)
{
	const char *allowed[] = { ".internal-server.local", "nodot.com", ".Example.COM" };

	cr_assert_eq(announce_domain_allowed("a.internal-server.local", allowed, 3), 1);
	cr_assert_eq(announce_domain_allowed("internal-server.local", allowed, 3), 0);
	cr_assert_eq(announce_domain_allowed(".internal-server.local", allowed, 3), 0);
	cr_assert_eq(announce_domain_allowed("evilinternal-server.local", allowed, 3), 0);
	cr_assert_eq(announce_domain_allowed("x.nodot.com", allowed, 3), 0,
	    "entries without a leading dot never match");
	cr_assert_eq(announce_domain_allowed("b.example.com", allowed, 3), 1);
	cr_assert_eq(announce_domain_allowed("b.example.com", allowed, 0), 0);
}

Test(announce, expiry_is_limited_to_seven_days)
{
	double now, out = -1, t;
	const char *why = NULL;
	char buf[32];

	cr_assert_eq(rfc3339_parse("2026-01-01T00:00:00Z", &now), 0);
	cr_assert_eq(announce_check_expiry(NULL, now, ANNOUNCE_MAX_EXPIRY, &out, &why), 0);
	cr_assert_eq(out, 0);
	cr_assert_eq(announce_check_expiry("2026-01-08T00:00:00Z", now, ANNOUNCE_MAX_EXPIRY,
	    &out, &why), 0);
	cr_assert_eq(out, now + 7 * 86400);
	cr_assert_eq(announce_check_expiry("2026-01-08T00:00:01Z", now, ANNOUNCE_MAX_EXPIRY,
	    &out, &why), -1);
	cr_assert_str_eq(why, "expires_at is too far in the future");
	cr_assert_eq(announce_check_expiry("2025-12-31T23:59:59Z", now, ANNOUNCE_MAX_EXPIRY,
	    &out, &why), -1);
	cr_assert_str_eq(why, "expires_at is in the past");
	cr_assert_eq(announce_check_expiry("tomorrow", now, ANNOUNCE_MAX_EXPIRY, &out, &why),
	    -1);
	cr_assert_str_eq(why, "expires_at is not an RFC 3339 timestamp");
	t = now + 3600.5;
	rfc3339_format(t, buf, sizeof(buf));
	cr_assert_eq(announce_check_expiry(buf, now, ANNOUNCE_MAX_EXPIRY, &out, &why), 0);
}

static struct announce_table *shared;
static volatile int stop;

static void *
writer(void *arg)
{
	struct announcement a;
	char d[64];

	for (int i = 0; i < 20000; i++) {
		snprintf(d, sizeof(d), "w%d.example.com", i % 100);
		announce_make(&a, d, "op", NULL, 0);
		announce_put(shared, &a);
		if (i % 3 == 0)
			announce_remove(shared, d, NULL, NULL);
	}
	stop = 1;
	return NULL;
}

Test(announce, concurrent_reader_sees_consistent_entries)
{
	struct announcement out;
	pthread_t th;
	long found = 0;

	shared = announce_table_new();
	struct announcement a = mk("fixed.example.com", "op", NULL, 0);
	announce_put(shared, &a);
	cr_assert_eq(pthread_create(&th, NULL, writer, NULL), 0);
	for (long i = 0; i < 2000000 && !stop; i++)
		if (announce_lookup(shared, "fixed.example.com", NULL, 0, &out) == 0 &&
		    strcmp(out.an_domain, "fixed.example.com") == 0)
			found++;
	pthread_join(th, NULL);
	cr_assert_gt(found, 0);
	cr_assert_eq(announce_lookup(shared, "fixed.example.com", NULL, 0, NULL), 0);
	announce_table_free(shared);
}

Test(announce, missing_expiry_means_the_seven_day_maximum)
{
	cr_assert_float_eq(announce_effective_expiry(0, 1000.75), 1000 + 7 * 86400.0, 1e-9,
	    "whole seconds, 7 days ahead");
	cr_assert_float_eq(announce_effective_expiry(5000, 1000), 5000, 1e-9,
	    "an explicit expiry is kept");
}

Test(announce, cap_expiry_bounds_stored_entries)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("never.example.com", "op1", NULL, 0), out;
	struct announcement b = mk("far.example.com", "op1", NULL, 9000);
	struct announcement c = mk("near.example.com", "op1", NULL, 2000);

	announce_put(t, &a);
	announce_put(t, &b);
	announce_put(t, &c);
	cr_assert_eq(announce_cap_expiry(t, 5000), 2);
	cr_assert_eq(announce_lookup(t, "never.example.com", NULL, 4999, &out), 0);
	cr_assert_float_eq(out.an_expires_at, 5000, 1e-9);
	cr_assert_eq(announce_lookup(t, "never.example.com", NULL, 5000, NULL), -1,
	    "no longer permanent");
	cr_assert_eq(announce_lookup(t, "far.example.com", NULL, 5001, NULL), -1);
	cr_assert_eq(announce_lookup(t, "near.example.com", NULL, 1999, &out), 0);
	cr_assert_float_eq(out.an_expires_at, 2000, 1e-9);
	announce_table_free(t);
}

Test(announce, sweep_drops_expired_entries_only)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("old.example.com", "op1", NULL, 100);
	struct announcement b = mk("new.example.com", "op1", NULL, 300);

	announce_put(t, &a);
	announce_put(t, &b);
	/* before the sweep, an expired entry is already absent for lookups */
	cr_assert_eq(announce_lookup(t, "old.example.com", NULL, 200, NULL), -1);
	cr_assert_eq(announce_count(t), 2);
	cr_assert_eq(announce_expire(t, 200), 1);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_find(t, "old.example.com", NULL, NULL, NULL), -1);
	cr_assert_eq(announce_lookup(t, "new.example.com", NULL, 200, NULL), 0);
	cr_assert_eq(announce_expire(t, 200), 0);
	announce_table_free(t);
}

static int
keep_example_com(void *arg, const struct announcement *a)
{
	const char *allowed[] = { ".example.com" };

	(*(int *)arg)++;
	return announce_domain_allowed(a->an_domain, allowed, 1);
}

Test(announce, filter_drops_what_is_no_longer_allowed)
{
	struct announce_table *t = announce_table_new();
	struct announcement v[] = {
		mk("a.example.com", "op1", NULL, 0), mk("b.example.net", "op1", NULL, 100),
		mk("c.example.net", "op2", NULL, 0), mk("d.example.com", "op2", NULL, 0),
	};
	int calls = 0;

	for (size_t i = 0; i < 4; i++)
		announce_put(t, &v[i]);
	cr_assert_eq(announce_filter(t, "op1", keep_example_com, &calls), 1,
	    "only op1's entries, the expired one too");
	cr_assert_eq(calls, 2);
	cr_assert_eq(announce_find(t, "b.example.net", NULL, NULL, NULL), -1);
	cr_assert_eq(announce_find(t, "c.example.net", NULL, NULL, NULL), 0);
	cr_assert_eq(announce_filter(t, NULL, keep_example_com, &calls), 1);
	cr_assert_eq(announce_count(t), 2);
	cr_assert_eq(announce_count_operator(t, "op1", 50), 1);
	cr_assert_eq(announce_count_operator(t, "op2", 50), 1);
	cr_assert_eq(announce_count_operator(t, "op3", 50), 0);
	announce_table_free(t);
}

/* The public proxy's own checks on `_client` (control.c): the admin group
 * of adminWithdrawConnections and allowed_domains from a directory entry. */
Test(announce, admin_group_and_allowed_domains_come_from_client_entry)
{
	struct json_object *admin = json_tokener_parse("{\"_client\": {\"name\": \"hd-1\", "
	    "\"entry\": {\"name\": \"hd-1\", \"groups\": [\"proxy-users\", \"proxy-admins\"], "
	    "\"settings\": [{\"service\": \"proxy\", \"settings\": "
	    "{\"allowed_domains\": [\".a.example\", 5]}}]}}}");
	struct json_object *user = json_tokener_parse("{\"_client\": {\"name\": \"p\", "
	    "\"entry\": {\"name\": \"p\", \"groups\": [\"proxy-users\"]}}}");
	struct json_object *spoof = json_tokener_parse("{\"_client\": {\"name\": \"p\", "
	    "\"groups\": [\"proxy-admins\"], \"entry\": {\"groups\": \"proxy-admins\"}}}");
	struct json_object *client, *entry;
	const char **allowed;

	cr_assert_not_null(admin);
	cr_assert(control_caller_in_group(admin, "proxy-admins"));
	cr_assert_not(control_caller_in_group(user, "proxy-admins"));
	cr_assert_not(control_caller_in_group(spoof, "proxy-admins"),
	    "only a list under _client.entry.groups counts");
	cr_assert_not(control_caller_in_group(admin, ""));
	json_object_object_get_ex(admin, "_client", &client);
	json_object_object_get_ex(client, "entry", &entry);
	cr_assert_eq(control_entry_allowed_domains(entry, "public-proxy-1.ga", &allowed), 1);
	cr_assert_str_eq(allowed[0], ".a.example");
	free(allowed);
	json_object_object_get_ex(user, "_client", &client);
	json_object_object_get_ex(client, "entry", &entry);
	cr_assert_eq(control_entry_allowed_domains(entry, "public-proxy-1.ga", &allowed), -1);
	json_object_put(admin);
	json_object_put(user);
	json_object_put(spoof);
}

/* ---- wildcard announcements ---------------------------------------------- */

Test(announce, wildcard_matches_exactly_one_label)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("*.Example.COM.", "op1", NULL, 0), out;

	cr_assert_str_eq(a.an_domain, "*.example.com");
	cr_assert_eq(announce_put(t, &a), 0);
	cr_assert_eq(announce_match(t, "a.example.com", NULL, 1000, &out), 0);
	cr_assert_str_eq(out.an_domain, "*.example.com");
	cr_assert_str_eq(out.an_operator, "op1");
	cr_assert_eq(announce_match(t, "example.com", NULL, 1000, NULL), -1);
	cr_assert_eq(announce_match(t, "a.b.example.com", NULL, 1000, NULL), -1);
	cr_assert_eq(announce_match(t, "a.example.org", NULL, 1000, NULL), -1);
	cr_assert_eq(announce_match(t, "com", NULL, 1000, NULL), -1);
	/* a client's name is never a pattern, and the exact lookup stays exact */
	cr_assert_eq(announce_match(t, "*.example.com", NULL, 1000, NULL), -1);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, 1000, NULL), -1);
	announce_table_free(t);
}

Test(announce, wildcard_expires_like_any_entry)
{
	struct announce_table *t = announce_table_new();
	struct announcement a = mk("*.example.com", "op1", NULL, 2000);

	cr_assert_eq(announce_put(t, &a), 0);
	cr_assert_eq(announce_match(t, "a.example.com", NULL, 1999, NULL), 0);
	cr_assert_eq(announce_match(t, "a.example.com", NULL, 2000, NULL), -1);
	announce_table_free(t);
}

Test(announce, exact_announcement_wins_over_wildcard)
{
	struct announce_table *t = announce_table_new();
	struct announcement w = mk("*.example.com", "op1", NULL, 0);
	struct announcement x = mk("a.example.com", "op2", NULL, 3000), out;

	cr_assert_eq(announce_put(t, &w), 0);
	cr_assert_eq(announce_put(t, &x), 0);
	cr_assert_eq(announce_match(t, "a.example.com", NULL, 1000, &out), 0);
	cr_assert_str_eq(out.an_operator, "op2");
	cr_assert_str_eq(out.an_domain, "a.example.com");
	cr_assert_eq(announce_match(t, "b.example.com", NULL, 1000, &out), 0);
	cr_assert_str_eq(out.an_operator, "op1");
	/* the exact one expired: the wildcard serves its name again */
	cr_assert_eq(announce_match(t, "a.example.com", NULL, 3000, &out), 0);
	cr_assert_str_eq(out.an_operator, "op1");
	announce_table_free(t);
}

Test(announce, wildcard_and_exact_name_of_other_operators_do_not_conflict)
{
	struct announce_table *t = announce_table_new();
	struct announcement w = mk("*.example.com", "op1", NULL, 0);
	struct announcement x = mk("a.example.com", "op2", NULL, 0), out;

	/* announceConnections takes a domain as "already taken" when
	 * announce_lookup() finds it held by another operator: a wildcard
	 * holds no concrete name, and a concrete name holds no wildcard. */
	cr_assert_eq(announce_put(t, &w), 0);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, 1000, NULL), -1);
	cr_assert_eq(announce_put(t, &x), 0);
	cr_assert_eq(announce_lookup(t, "*.example.com", NULL, 1000, &out), 0);
	cr_assert_str_eq(out.an_operator, "op1");
	/* but the same pattern by another operator is taken */
	cr_assert_eq(announce_lookup(t, "*.EXAMPLE.com", NULL, 1000, NULL), -1,
	    "keys are normalised before the lookup");
	cr_assert_eq(announce_check_domain("*.EXAMPLE.com.", out.an_domain), 0);
	cr_assert_eq(announce_lookup(t, out.an_domain, NULL, 1000, &out), 0);
	cr_assert_str_eq(out.an_operator, "op1");
	announce_table_free(t);
}

Test(announce, wildcard_per_proxy_on_the_private_side)
{
	struct announce_table *t = announce_table_new();
	struct announcement w = mk("*.internal-server.local", "op1", "pub1", 0), out;

	cr_assert_eq(announce_put(t, &w), 0);
	cr_assert_eq(announce_match(t, "other.internal-server.local", "pub1", 0, &out), 0);
	cr_assert_str_eq(out.an_proxy, "pub1");
	cr_assert_eq(announce_match(t, "other.internal-server.local", "pub2", 0, NULL), -1);
	cr_assert_eq(announce_match(t, "a.b.internal-server.local", "pub1", 0, NULL), -1);
	announce_table_free(t);
}

Test(announce, wildcard_patterns_are_validated)
{
	static const char *bad[] = {
		"*", "*.", "*.com", "*.com.", "*.*.example.com", "a*.example.com",
		"*example.com", "a.*.example.com", "example.*", "**.example.com",
		"*.example.com..", "*..example.com", "*.-a.example.com", ".*.example.com",
	};
	char out[ANNOUNCE_DOMAIN_MAX], big[260];
	const char *why;

	cr_assert_eq(announce_check_domain("*.Example.com.", out), 0);
	cr_assert_str_eq(out, "*.example.com");
	cr_assert_eq(announce_check_domain("*.sub.example.com", out), 0);
	cr_assert_str_eq(out, "*.sub.example.com");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		cr_assert_eq(announce_check_name(bad[i], out, &why), -1, "%s", bad[i]);
		cr_assert_not_null(why, "%s", bad[i]);
		cr_assert_eq(announce_make(&(struct announcement){ 0 }, bad[i], "op", NULL, 0),
		    -1, "%s", bad[i]);
	}
	cr_assert_eq(announce_check_name("*.*.example.com", out, &why), -1);
	cr_assert(strstr(why, "leftmost") != NULL, "%s", why);
	cr_assert_eq(announce_check_name("*.com", out, &why), -1);
	cr_assert(strstr(why, "not *.com") != NULL, "%s", why);
	/* "*." plus a 253-byte name is longer than a DNS name may be */
	memset(big, 'a', sizeof(big));
	big[0] = '*';
	big[1] = '.';
	for (size_t i = 2 + 63; i < 2 + 253; i += 64)
		big[i] = '.';
	big[2 + 253] = '\0';
	cr_assert_eq(announce_check_domain(big + 2, out), 0, "253 bytes are a name");
	cr_assert_eq(announce_check_domain(big, out), -1);
	big[2 + 251] = '\0';
	cr_assert_eq(announce_check_domain(big, out), 0, "*. and 251 bytes are 253");
}

Test(announce, allowed_domains_for_wildcards)
{
	const char *allowed[] = { ".example.com" };

	/* a pattern is allowed exactly when each name it matches would be */
	cr_assert_eq(announce_domain_allowed("*.example.com", allowed, 1), 1);
	cr_assert_eq(announce_domain_allowed("*.sub.example.com", allowed, 1), 1);
	cr_assert_eq(announce_domain_allowed("*.com", allowed, 1), 0);
	cr_assert_eq(announce_domain_allowed("*.other.com", allowed, 1), 0);
	cr_assert_eq(announce_domain_allowed("*.evilexample.com", allowed, 1), 0);
}

/* --- the announcement methods' items (both roles) ---------------------------- */

Test(announce, item_domain_checks_type_name_and_allowed_domains)
{
	const char *allowed[] = { ".example.com" };
	char dom[ANNOUNCE_DOMAIN_MAX];
	const char *why = NULL;
	struct json_object *o;

	o = json_tokener_parse("{\"domain\": \"App.Example.COM.\"}");
	cr_assert_eq(announce_item_domain(o, allowed, 1, dom, &why), 0);
	cr_assert_str_eq(dom, "app.example.com");
	json_object_put(o);

	o = json_tokener_parse("{\"domain\": 7}");
	cr_assert_eq(announce_item_domain(o, allowed, 1, dom, &why), JSONRPC_INVALID_PARAMS);
	cr_assert_str_eq(why, "domain must be a string");
	json_object_put(o);

	o = json_tokener_parse("[\"app.example.com\"]");	/* not an object */
	cr_assert_eq(announce_item_domain(o, allowed, 1, dom, &why), JSONRPC_INVALID_PARAMS);
	json_object_put(o);

	o = json_tokener_parse("{\"domain\": \"bad_name!.example.com\"}");
	cr_assert_eq(announce_item_domain(o, allowed, 1, dom, &why), JSONRPC_INVALID_PARAMS);
	cr_assert_str_eq(why, "invalid domain");
	json_object_put(o);

	o = json_tokener_parse("{\"domain\": \"app.example.org\"}");
	cr_assert_eq(announce_item_domain(o, allowed, 1, dom, &why), HP_ERR_FORBIDDEN);
	cr_assert_str_eq(why, ANNOUNCE_MSG_NOT_ALLOWED);
	cr_assert_eq(announce_item_domain(o, NULL, 0, dom, &why), HP_ERR_FORBIDDEN);
	json_object_put(o);
}

Test(announce, item_expiry_is_absent_null_or_a_near_rfc3339_time)
{
	double now = 1700000000, exp = -1;
	const char *why = NULL;
	struct json_object *o;

	o = json_tokener_parse("{\"domain\": \"a.example.com\"}");
	cr_assert_eq(announce_item_expiry(o, now, &exp, &why), 0);
	cr_assert_eq(exp, 0);
	json_object_put(o);

	o = json_tokener_parse("{\"expires_at\": null}");
	cr_assert_eq(announce_item_expiry(o, now, &exp, &why), 0);
	cr_assert_eq(exp, 0);
	json_object_put(o);

	o = json_tokener_parse("{\"expires_at\": \"2023-11-15T00:00:00Z\"}");
	cr_assert_eq(announce_item_expiry(o, now, &exp, &why), 0);
	cr_assert_gt(exp, now);
	json_object_put(o);

	o = json_tokener_parse("{\"expires_at\": 1700003600}");
	cr_assert_eq(announce_item_expiry(o, now, &exp, &why), JSONRPC_INVALID_PARAMS);
	cr_assert_str_eq(why, "expires_at is not an RFC 3339 timestamp");
	json_object_put(o);

	o = json_tokener_parse("{\"expires_at\": \"2023-11-01T00:00:00Z\"}");
	cr_assert_eq(announce_item_expiry(o, now, &exp, &why), JSONRPC_INVALID_PARAMS);
	cr_assert_str_eq(why, "expires_at is in the past");
	json_object_put(o);
}

Test(announce, item_json_shows_what_the_side_has)
{
	struct announcement a;
	struct json_object *o, *v;

	/* public side: no proxy, no proxy_protocol, no operator */
	cr_assert_eq(announce_make(&a, "a.example.com", "op1", NULL, 0), 0);
	o = announce_item_json(&a, 0);
	cr_assert_str_eq(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
	    "{\"domain\":\"a.example.com\",\"expires_at\":null}");
	json_object_put(o);

	/* private side, the own operator asking */
	cr_assert_eq(announce_make(&a, "a.example.com", "op1", "pub1", 1700000000), 0);
	a.an_proxy_protocol = PROXYPROTO_V2;
	o = announce_item_json(&a, 1);
	cr_assert(json_object_object_get_ex(o, "proxy", &v));
	cr_assert_str_eq(json_object_get_string(v), "pub1");
	cr_assert(json_object_object_get_ex(o, "expires_at", &v));
	cr_assert_str_eq(json_object_get_string(v), "2023-11-14T22:13:20Z");
	cr_assert(json_object_object_get_ex(o, "proxy_protocol", &v));
	cr_assert_str_eq(json_object_get_string(v), "v2");
	cr_assert(json_object_object_get_ex(o, "operator", &v));
	cr_assert_str_eq(json_object_get_string(v), "op1");
	json_object_put(o);
}
