/* log.c - one-line logging to stderr.
 *
 * Messages often carry strings from peers (domains, operator names, error
 * texts): control bytes (< 0x20 and 0x7f) of the formatted message are
 * written as \xNN, so nothing a peer sends can end a line or forge the
 * next one, nor reach a terminal as an escape sequence. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *log_prog = "hp";
static enum log_level log_lvl = LOG_LVL_INFO;
static const char *const log_names[] = { "error", "warn", "info", "debug" };

void
log_init(const char *progname, enum log_level level)
{
	log_prog = progname;
	log_lvl = level;
}

int
log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, log_names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

enum log_level
log_get_level(void)
{
	return log_lvl;
}

/* Copy in to out (size outlen >= 1) with control bytes as \xNN; truncated
 * at a whole character, always terminated. */
static void
log_escape(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (; *in != '\0'; in++) {
		unsigned char c = (unsigned char)*in;

		if (c < 0x20 || c == 0x7f) {
			if (o + 4 >= outlen)
				break;
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		} else {
			if (o + 1 >= outlen)
				break;
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
}

static void
log_vemit(enum log_level lvl, int err, const char *fmt, va_list ap)
{
	char raw[1024], msg[4 * sizeof(raw)], stamp[32];
	struct timespec ts;
	struct tm tm;

	if (lvl > log_lvl)
		return;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	log_escape(raw, msg, sizeof(msg));
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf per line: stdio locks the stream, so lines never interleave. */
	if (err)
		fprintf(stderr, "%s.%03ldZ %s %s: %s: %s\n", stamp, ts.tv_nsec / 1000000,
		    log_prog, log_names[lvl], msg, strerror(err));
	else
		fprintf(stderr, "%s.%03ldZ %s %s: %s\n", stamp, ts.tv_nsec / 1000000,
		    log_prog, log_names[lvl], msg);
}

static void __attribute__((format(printf, 2, 3)))
log_emit(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(lvl, 0, fmt, ap);
	va_end(ap);
}

#define LOG_BODY(lvl, err) do { va_list ap; va_start(ap, fmt); \
	log_vemit((lvl), (err), fmt, ap); va_end(ap); } while (0)

/* A token bucket per limiter: LOG_LIMIT_BURST lines at once, then one per
 * second; the next line printed tells how many were left out. */
#define LOG_LIMIT_BURST 5

void
log_limited(struct log_limit *ll, enum log_level lvl, const char *fmt, ...)
{
	char msg[1024];
	struct timespec ts;
	va_list ap;
	double now;

	if (lvl > log_lvl)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (ll->ll_last == 0)
		ll->ll_tokens = LOG_LIMIT_BURST;
	else
		ll->ll_tokens += now - ll->ll_last;
	if (ll->ll_tokens > LOG_LIMIT_BURST)
		ll->ll_tokens = LOG_LIMIT_BURST;
	ll->ll_last = now;
	if (ll->ll_tokens < 1) {
		ll->ll_suppressed++;
		return;
	}
	ll->ll_tokens -= 1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ll->ll_suppressed > 0)
		log_emit(lvl, "%s (%lu more like it not logged)", msg, ll->ll_suppressed);
	else
		log_emit(lvl, "%s", msg);
	ll->ll_suppressed = 0;
}

void log_warn(const char *fmt, ...)  { int e = errno; LOG_BODY(LOG_LVL_WARN, e); }
void log_warnx(const char *fmt, ...) { LOG_BODY(LOG_LVL_WARN, 0); }
void log_errorx(const char *fmt, ...) { LOG_BODY(LOG_LVL_ERROR, 0); }
void log_info(const char *fmt, ...)  { LOG_BODY(LOG_LVL_INFO, 0); }
void log_debug(const char *fmt, ...) { LOG_BODY(LOG_LVL_DEBUG, 0); }
void fatal(const char *fmt, ...)     { int e = errno; LOG_BODY(LOG_LVL_ERROR, e); exit(1); }
void fatalx(const char *fmt, ...)    { LOG_BODY(LOG_LVL_ERROR, 0); exit(1); }
