/* Tests for log.c: a peer's string cannot end a log line or forge the next. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Run one log_warnx("%s", arg) with stderr sent to a file; the output in buf. */
static size_t
log_capture(const char *arg, char *buf, size_t len)
{
	char path[] = "/tmp/test_log.XXXXXX";
	int fd, saved;
	ssize_t n;

	fd = mkstemp(path);
	cr_assert(fd >= 0);
	unlink(path);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	cr_assert(saved >= 0);
	cr_assert(dup2(fd, STDERR_FILENO) >= 0);
	log_init("test", LOG_LVL_INFO);
	log_warnx("peer said %s", arg);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(fd, buf, len - 1, 0);
	close(fd);
	cr_assert(n > 0);
	buf[n] = '\0';
	return (size_t)n;
}

Test(log, newline_and_escape_from_a_peer_stay_on_one_escaped_line)
{
	char out[2048];
	size_t n;

	n = log_capture("evil\n2026-12-04T00:00:00.000Z proxy info: forged\x1b[2J\x7f\tend", out,
	    sizeof(out));
	/* Exactly one line: the only newline is the last byte. */
	cr_assert_eq(out[n - 1], '\n');
	cr_assert_null(memchr(out, '\n', n - 1), "more than one line: %s", out);
	cr_assert_null(strchr(out, '\x1b'));
	cr_assert_null(strchr(out, '\x7f'));
	cr_assert_null(strchr(out, '\t'));
	cr_assert_not_null(strstr(out,
	    " test warn: peer said evil\\x0a2026-12-04T00:00:00.000Z proxy info: forged"
	    "\\x1b[2J\\x7f\\x09end\n"), "got: %s", out);
}

Test(log, printable_text_is_unchanged)
{
	char out[2048];

	log_capture("test.internal-server.local via 127.0.0.1:9999 \"ok\" \\ 100%", out,
	    sizeof(out));
	cr_assert_not_null(strstr(out,
	    " test warn: peer said test.internal-server.local via 127.0.0.1:9999 \"ok\" \\ 100%\n"),
	    "got: %s", out);
}

Test(log, a_long_message_of_control_bytes_is_bounded_and_terminated)
{
	char in[1500], out[8192];
	size_t n;

	memset(in, '\n', sizeof(in) - 1);
	in[sizeof(in) - 1] = '\0';
	n = log_capture(in, out, sizeof(out));
	cr_assert_eq(out[n - 1], '\n');
	cr_assert_null(memchr(out, '\n', n - 1));
	cr_assert_not_null(strstr(out, "peer said \\x0a\\x0a"));
}
