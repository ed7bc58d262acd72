/* Tests for datastore.c: real files in a fresh temporary folder. */
#include <sys/resource.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
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

Test(datastore, flapping_is_compacted_while_running)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	char err[256];

	/* no expiry: the commits compact with the real clock, past NOW */
	announce(ds, "kept.example.com", "op1", 0);
	for (int i = 0; i < 200; i++) {
		announce(ds, "flappy.example.com", "op1", 0);
		cr_assert_eq(datastore_withdraw(ds, "flappy.example.com", NULL, "op1", err,
		    sizeof(err)), 1);
		cr_assert_leq(datastore_lines(ds), 2 * announce_count(t) +
		    DATASTORE_COMPACT_SLACK, "%zu lines after %d flaps", datastore_lines(ds), i);
	}
	cr_assert_lt(file_size(), 200 * 40, "%lld bytes", (long long)file_size());
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(announce_lookup(t, "kept.example.com", NULL, NOW, NULL), 0);
	cr_assert_eq(datastore_lines(ds), 1);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, compaction_keeps_content)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement out;
	char err[256], name[64];

	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "d%d.example.com", i);
		announce(ds, name, i % 2 ? "op1" : "op2", NOW + 60 + i);
	}
	cr_assert_eq(datastore_withdraw(ds, "d7.example.com", NULL, "op1", err,
	    sizeof(err)), 1);
	cr_assert_eq(datastore_lines(ds), 101);
	cr_assert_eq(datastore_compact(ds, NOW, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(datastore_lines(ds), 99);
	/* appends go to the new file */
	announce(ds, "late.example.com", "op3", NOW + 10);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 100);
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "d%d.example.com", i);
		if (i == 7) {
			cr_assert_eq(announce_lookup(t, name, NULL, NOW, NULL), -1);
			continue;
		}
		cr_assert_eq(announce_lookup(t, name, NULL, NOW, &out), 0, "%s", name);
		cr_assert_str_eq(out.an_operator, i % 2 ? "op1" : "op2");
		cr_assert_float_eq(out.an_expires_at, NOW + 60 + i, 1e-6);
	}
	cr_assert_eq(announce_lookup(t, "late.example.com", NULL, NOW, NULL), 0);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, noop_changes_write_no_line)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	char err[256];
	off_t size;

	/* 3 identical announces and 3 withdrawals of nothing: one line */
	for (int i = 0; i < 3; i++)
		announce(ds, "a.example.com", "op1", NOW + 3600);
	size = file_size();
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(datastore_withdraw(ds, "a.example.com", NULL, "op2", err,
		    sizeof(err)), 0);
		cr_assert_eq(datastore_withdraw(ds, "none.example.com", NULL, "op1", err,
		    sizeof(err)), 0);
	}
	cr_assert_eq(datastore_lines(ds), 1);
	cr_assert_eq(file_size(), size);
	/* a new expiry is a change */
	announce(ds, "a.example.com", "op1", NOW + 7200);
	cr_assert_eq(datastore_lines(ds), 2);
	datastore_close(ds);
	announce_table_free(t);
}

Test(datastore, a_batch_is_one_append_applied_after_its_commit)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement a;
	char err[256], name[64];

	announce(ds, "old.example.com", "op1", NOW + 60);
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "b%d.example.com", i);
		announce_make(&a, name, "op1", NULL, NOW + 60);
		cr_assert_eq(datastore_stage_announce(ds, &a), 0);
	}
	cr_assert_eq(datastore_stage_withdraw(ds, "old.example.com", NULL, "op1"), 1);
	cr_assert_eq(datastore_stage_withdraw(ds, "old.example.com", NULL, "op1"), 0,
	    "staged once");
	cr_assert_eq(announce_lookup(t, "b0.example.com", NULL, NOW, NULL), -1,
	    "not served before it is durable");
	cr_assert_eq(announce_lookup(t, "old.example.com", NULL, NOW, NULL), 0);
	cr_assert_eq(datastore_commit(ds, NOW, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(datastore_lines(ds), 5);
	cr_assert_eq(announce_lookup(t, "b2.example.com", NULL, NOW, NULL), 0);
	cr_assert_eq(announce_lookup(t, "old.example.com", NULL, NOW, NULL), -1);
	cr_assert_eq(datastore_commit(ds, NOW, err, sizeof(err)), 0, "nothing staged");
	datastore_close(ds);
	announce_table_free(t);
}

static int
keep_example_com(void *arg, const struct announcement *a)
{
	const char *allowed[] = { ".example.com" };

	return announce_domain_allowed(a->an_domain, allowed, 1);
}

Test(datastore, replay_then_filter_drops_disallowed_for_good)
{
	struct announce_table *t;
	struct datastore *ds;
	char err[256];

	write_file("{\"domain\":\"a.example.com\",\"operator\":\"op1\"}\n"
	    "{\"domain\":\"b.example.net\",\"operator\":\"op1\"}\n"
	    "{\"domain\":\"c.example.net\",\"operator\":\"op2\"}\n");
	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 3);
	cr_assert_eq(datastore_filter(ds, NULL, keep_example_com, NULL, NOW, err,
	    sizeof(err)), 2, "%s", err);
	cr_assert_eq(announce_count(t), 1);
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1, "the drop is durable");
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, NULL), 0);
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

/* datastore_commit_async: the post function hands the completion back to
 * this thread, as side_post does on the public proxy. */
static void (*posted_fn)(void *);
static void *posted_arg;
static pthread_mutex_t posted_lock = PTHREAD_MUTEX_INITIALIZER;
static int done_rc = 99;

static void
test_post(void *ctx, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&posted_lock);
	posted_fn = fn;
	posted_arg = arg;
	pthread_mutex_unlock(&posted_lock);
}

static void
test_done(void *arg, int rc, const char *err)
{
	done_rc = rc;
}

Test(datastore, async_commit_writes_on_its_own_thread_then_applies)
{
	struct announce_table *t;
	struct datastore *ds = open_store(&t);
	struct announcement a;
	void (*fn)(void *) = NULL;
	void *arg = NULL;

	announce_make(&a, "a.example.com", "op1", NULL, 0);
	cr_assert_eq(datastore_stage_announce(ds, &a), 0);
	cr_assert_eq(datastore_commit_async(ds, test_post, NULL, test_done, NULL), 1);
	cr_assert(datastore_busy(ds));
	announce_make(&a, "b.example.com", "op1", NULL, 0);
	cr_assert_eq(datastore_stage_announce(ds, &a), -1, "busy while in flight");
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, NULL), -1,
	    "not served before it is durable");
	for (int i = 0; i < 500 && fn == NULL; i++) {
		pthread_mutex_lock(&posted_lock);
		fn = posted_fn;
		arg = posted_arg;
		pthread_mutex_unlock(&posted_lock);
		if (fn == NULL)
			usleep(10000);
	}
	cr_assert_not_null(fn, "the flush thread posted its completion");
	cr_assert_eq(done_rc, 99, "done runs only on the owner's thread");
	fn(arg);
	cr_assert_eq(done_rc, 0);
	cr_assert_not(datastore_busy(ds));
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, NULL), 0);
	cr_assert_eq(datastore_lines(ds), 1);
	cr_assert_eq(datastore_commit_async(ds, test_post, NULL, test_done, NULL), 0,
	    "nothing staged");
	datastore_close(ds);
	announce_table_free(t);

	ds = open_store(&t);
	cr_assert_eq(announce_count(t), 1);
	datastore_close(ds);
	announce_table_free(t);
}

/* Without a filename the datastore is memory only: the same calls, the
 * table changes, no file appears, and an asynchronous commit is refused so
 * the caller commits at once. */
Test(datastore, memory_only_changes_the_table_and_writes_nothing)
{
	struct announce_table *t = announce_table_new();
	struct announcement a;
	struct datastore *ds;
	struct stat st;
	char err[256] = "";

	cr_assert_not_null(ds = datastore_open(NULL, t, NOW, err, sizeof(err)), "%s", err);
	announce(ds, "a.example.com", "op1", NOW + 3600);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, &a), 0);
	cr_assert_str_eq(a.an_operator, "op1");

	/* a batch: applied only by its commit */
	cr_assert_eq(announce_make(&a, "b.example.com", "op1", NULL, NOW + 3600), 0);
	cr_assert_eq(datastore_stage_announce(ds, &a), 0);
	cr_assert_eq(datastore_stage_withdraw(ds, "a.example.com", NULL, "op1"), 1);
	cr_assert_eq(announce_count(t), 1);
	cr_assert_eq(datastore_commit_async(ds, NULL, NULL, NULL, NULL), -1);
	cr_assert_eq(datastore_commit(ds, NOW, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(datastore_removed(ds), 1);
	cr_assert_eq(announce_lookup(t, "a.example.com", NULL, NOW, &a), -1);
	cr_assert_eq(announce_lookup(t, "b.example.com", NULL, NOW, &a), 0);

	cr_assert_eq(datastore_withdraw(ds, "b.example.com", NULL, "op2", err, sizeof(err)), 0);
	cr_assert_eq(datastore_withdraw(ds, "b.example.com", NULL, "op1", err, sizeof(err)), 1);
	cr_assert_eq(announce_count(t), 0);
	cr_assert_eq(datastore_compact(ds, NOW, err, sizeof(err)), 0);
	cr_assert_eq(datastore_lines(ds), 0);
	cr_assert_eq(stat(path, &st), -1, "no file is written");
	datastore_close(ds);
	announce_table_free(t);
}
