/* log.h - one-line logging to stderr, relayd style. */
#ifndef HP_LOG_H
#define HP_LOG_H

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Program name used as prefix; level filters what is printed. Thread-safe. */
void log_init(const char *progname, enum log_level level);
/* Parse "error|warn|info|debug"; returns -1 when unknown. */
int  log_level_parse(const char *s);
enum log_level log_get_level(void);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* appends strerror(errno) */
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error the caller ends the program for itself (with its own exit code). */
void log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));  /* with strerror, exit 1 */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn)); /* exit 1 */

/* Lines an outsider can cause, one per event (a refused connection): at
 * most a burst of 5, then one per second per limiter; the next line
 * printed ends with the count of those left out.  A limiter is zeroed
 * before its first use and belongs to one thread. */
struct log_limit {
	double        ll_last;          /* monotonic seconds, 0: never */
	double        ll_tokens;
	unsigned long ll_suppressed;
};
void log_limited(struct log_limit *ll, enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
