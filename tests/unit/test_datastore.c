/* Tests for datastore.c: real files in a fresh temporary folder. */
#include <sys/resource.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "announce.h"
#include "datastore.h"
#include "log.h"
#include "proxyproto.h"
#include "util.h"

static char dir[64], path[128];
static const double NOW = 1790000000;	/* 2026-09-21 */

static void
setup(void)
{
	log_init("test", LOG_LVL_ERROR);
	strcpy(dir, "/tmp/hp-ds-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub/dir/store.jsonl", dir);
}

static void
teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static struct datastore *
open_store(struct announce_table **t)
{
	char err[256] = "";
	struct datastore *ds;

	*t = announce_table_new();
	ds = datastore_open(path, *t, NOW, err, sizeof(err));
	cr_assert_not_null(ds, "open: %s", err);
	return ds;
}

static void
announce(struct datastore *ds, const char *domain, const char *op, double exp)
{
	struct announcement a;
	char err[256];

	cr_assert_eq(announce_make(&a, domain, op, NULL, exp), 0);
	cr_assert_eq(datastore_announce(ds, &a, err, sizeof(err)), 0, "%s", err);
}

static void
write_file(const char *content)
{
	FILE *f;
	char d[160];

	snprintf(d, sizeof(d), "mkdir -p '%s/sub/dir'", dir);
	cr_assert_eq(system(d), 0);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(content, f);
	fclose(f);
}

static off_t
file_size(void)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	return st.st_size;
}

TestSuite(datastore, .init = setup, .fini = teardown);

Test(datastore, appended_announcements_are_replayed_after_reopen)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement out;

	cr_assert_eq(file_size(), 0, "missing folders and file are created");
	announce(ds, "a.example.com", "op1", 0);
	announce(ds, "B.example.com", "op2", NOW + 3600);
	cr_assert_eq(announce_lookup(t, "b.example.com", NULL, NOW, NULL), 0);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 2);
	cr_assert_eq(announce_lookup(t, "b.example.com", NULL, NOW, &out), 0);
	cr_assert_str_eq(out.an_operator, "op2");
	cr_assert_float_eq(out.an_expires_at, NOW + 3600, 1e-6);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, withdrawal_survives_reopen)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	char err[256];

	announce(ds, "a.example.com", "op1", 0);
	announce(ds, "b.example.com", "op1", 0);
	cr_assert_eq(datastore_withdraw(ds, "a.example.com", NULL, "op2", err,
	    sizeof(err)), 0, "another operator's withdrawal removes nothing");
	cr_assert_eq(datastore_withdraw(ds, "a.example.com", NULL, "op1", err,
	    sizeof(err)), 1);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, NULL), -1);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, NULL), -1);
	cr_assert_eq(announce_lookup(t, "b.example.com", NULL, NOW, NULL), 0);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, private_side_keeps_one_entry_per_proxy)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement a;
	char err[256];

	announce_make(&a, "a.example.com", "op1", "pub1", 0);
	cr_assert_eq(datastore_announce(ds, &a, err, sizeof(err)), 0);
	announce_make(&a, "a.example.com", "op1", "pub2", 0);
	cr_assert_eq(datastore_announce(ds, &a, err, sizeof(err)), 0);
	cr_assert_eq(datastore_withdraw(ds, "a.example.com", "pub1", "op1", err,
	    sizeof(err)), 1);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_lookup(t, "a.example.com", "pub2", NOW, NULL), 0);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, proxy_protocol_survives_a_restart)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement a;
	char err[256];

	announce_make(&a, "a.example.com", "op1", "pub1", 0);
	a.an_proxy_protocol = PROXYPROTO_V2;
	cr_assert_eq(datastore_announce(ds, &a, err, sizeof(err)), 0);
	announce_make(&a, "b.example.com", "op1", "pub1", 0);
	cr_assert_eq(datastore_announce(ds, &a, err, sizeof(err)), 0);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_lookup(t, "a.example.com", "pub1", NOW, &a), 0);
	cr_assert_eq(a.an_proxy_protocol, PROXYPROTO_V2);
	cr_assert_eq(announce_lookup(t, "b.example.com", "pub1", NOW, &a), 0);
	cr_assert_eq(a.an_proxy_protocol, PROXYPROTO_OFF);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, bad_proxy_protocol_line_is_skipped)
{
	struct announce_table *t;
	struct datastore *ds;
	struct announcement a;

	write_file("{\"domain\":\"a.example.com\",\"operator\":\"op1\",\"proxy\":\"p\","
	    "\"proxy_protocol\":\"v3\"}\n"
	    "{\"domain\":\"b.example.com\",\"operator\":\"op1\",\"proxy\":\"p\","
	    "\"proxy_protocol\":\"v1\"}\n");
	ds = open_store(&t);
	cr_assert_eq(announce_lookup(t, "a.example.com", "p", NOW, NULL), -1);
	cr_assert_eq(announce_lookup(t, "b.example.com", "p", NOW, &a), 0);
	cr_assert_eq(a.an_proxy_protocol, PROXYPROTO_V1);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, torn_last_line_is_ignored)
{
	struct announce_table *t;
	struct datastore *ds;

	write_file("{\"domain\":\"a.example.com\",\"operator\":\"op1\"}\n"
	    "{\"domain\":\"b.example.com\",\"oper");
	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, NULL), 0);
	/* the torn bytes are gone: a new append lands on its own line */
	announce(ds, "c.example.com", "op1", 0);
	datastore_close(ds);
	announce_table_free(t);
	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 2);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, garbage_in_the_middle_is_skipped)
{
	struct announce_table *t;
	struct datastore *ds;

	write_file("{\"domain\":\"a.example.com\",\"operator\":\"op1\"}\n"
	    "not json at all\n"
	    "\n"
	    "{\"domain\":\"bad..name\",\"operator\":\"op1\"}\n"
	    "{\"domain\":\"x.example.com\",\"operator\":\"op1\",\"expires_at\":\"soon\"}\n"
	    "[1,2]\n"
	    "{\"domain\":\"b.example.com\",\"operator\":\"op1\"} trailing\n"
	    "{\"domain\":\"c.example.com\",\"operator\":\"op1\"}\n");
	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 2);
	cr_assert_eq(announce_lookup(t, "c.example.com", NULL, NOW, NULL), 0);
	datastore_close(ds);
	announce_table_free(t);

	/* the same bytes replayed directly count the skipped lines */
	t = announce_table_new();
	cr_assert_eq(datastore_replay("mem", "x\n{\"withdraw\":\"a.b\"}\n", 20, t, NOW), 2);
	announce_table_free(t);
}

Test(datastore, reopen_compacts_the_file)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	char err[256];
	off_t big;

	for (int i = 0; i < 50; i++) {
		announce(ds, "flappy.example.com", "op1", 0);
		cr_assert_eq(datastore_withdraw(ds, "flappy.example.com", NULL, "op1", err,
		    sizeof(err)), 1);
	}
	announce(ds, "kept.example.com", "op1", 0);
	datastore_close(ds);
	announce_table_free(t);
	big = file_size();

	ds = open_store(&t);
	cr_assert_lt(file_size(), big / 50, "%lld bytes after compaction",
	    (long long)file_size());
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_lookup(t, "kept.example.com", NULL, NOW, NULL), 0);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, expired_entries_are_dropped_at_open)
{
	struct announce_table *t;
	struct datastore *ds;
	char line[512], t1[32], t2[32];

	snprintf(line, sizeof(line),
	    "{\"domain\":\"old.example.com\",\"operator\":\"op1\",\"expires_at\":\"%s\"}\n"
	    "{\"domain\":\"new.example.com\",\"operator\":\"op1\",\"expires_at\":\"%s\"}\n",
	    rfc3339_format(NOW - 10, t1, sizeof(t1)), rfc3339_format(NOW + 3600, t2, sizeof(t2)));
	write_file(line);
	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_lookup(t, "new.example.com", NULL, NOW, NULL), 0);
	datastore_close(ds);
	cr_assert_lt(file_size(), (off_t)strlen(line) * 2 / 3, "expired line not rewritten");
	announce_table_free(t);
}

Test(datastore, unwritable_folder_is_an_error)
{
	struct announce_table *t = announce_table_new();
	char err[256] = "", blocker[128];

	/* a regular file where a folder should be: fails even for root */
	snprintf(blocker, sizeof(blocker), "%s/sub", dir);
	cr_assert_eq(close(open(blocker, O_CREAT | O_WRONLY, 0600)), 0);
	cr_assert_null(datastore_open(path, t, NOW, err, sizeof(err)));
	cr_assert(strstr(err, "Not a directory") != NULL || strstr(err, "exists") != NULL,
	    "error: %s", err);
	announce_table_free(t);
}

Test(datastore, failed_append_is_reported_and_cut_off)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement a;
	struct rlimit rl;
	char err[256] = "";
	off_t before;

	announce(ds, "a.example.com", "op1", 0);
	before = file_size();
	/* a file size limit makes the next write stop half way (EFBIG) */
	signal(SIGXFSZ, SIG_IGN);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	struct rlimit small = { (rlim_t)before + 10, rl.rlim_max };
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
	announce_make(&a, "b.example.com", "op1", NULL, 0);
	cr_assert_eq(datastore_announce(ds, &a, err, sizeof(err)), -1);
	cr_assert(strstr(err, "append") != NULL, "error: %s", err);
	cr_assert_eq(announce_lookup(t, "b.example.com", NULL, NOW, NULL), -1,
	    "not stored, so not served");
	cr_assert_eq(file_size(), before, "the partial line was cut off");
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	announce(ds, "c.example.com", "op1", 0);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 2);
	datastore_close(ds);
	announce_table_free(t);
}
