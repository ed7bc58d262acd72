/*
 * loadgen - HTTPS load generator for the relay benchmarks (bench/run.sh).
 *
 * One process, one thread, one epoll loop, OpenSSL in non-blocking mode.
 * Every request is a new TCP connection and a new TLS handshake (session
 * resumption only with --resume), then one HTTP/1.1 request with
 * "Connection: close", then the whole response is read and checked (status
 * 200, body length equal to Content-Length).  At most --concurrency
 * connections are in flight.  The run ends after --requests requests or at
 * the --duration limit, whichever comes first: connections still in flight
 * at the limit are aborted and counted apart.
 *
 * Modes:
 *   default            GET PATH (--path, default /jsonrpc)
 *   --post BODY        POST PATH with a JSON body
 *   --bytes N          GET /bytes/N, the body is counted (MB/s)
 *   --upload N         POST /sha256 with N bytes, the answer is checked
 *                      against the SHA-256 of what was sent (MB/s)
 *   --handshake-only   TCP + TLS handshake, then close: no HTTP at all (TLS 1.3
 *                      tickets arrive after the handshake and are not read,
 *                      so --resume only resumes TLS 1.2 sessions there)
 *   --hold S           handshake-only, but every connection stays open until
 *                      --requests connections are up, then S more seconds;
 *                      /proc of --pids is sampled while they are all held
 *
 * --pids P,P,...: utime+stime of each process (/proc/P/stat, which sums every
 * thread of the process, dead ones included) before and after the run,
 * reported as CPU microseconds per request; VmHWM (peak RSS) of each; file
 * descriptors of each before and while every connection is held, reported per
 * held connection; the most threads and io-wq workers ("iou-wrk*" in
 * /proc/P/task/T/comm) seen, sampled every 0.5 s; the pipes each holds and
 * their total capacity (F_GETPIPE_SZ through /proc/P/fd), sampled every
 * 0.5 s (most seen) and, with --hold, while every connection is held.
 *
 * Output: one human line (stdout, or stderr with --csv); with --csv, one
 * machine line on stdout:
 *   requests,errors,aborted,seconds,req_per_s,p50_ms,p90_ms,p99_ms,max_ms,
 *   mb_per_s,bytes[,cpu_us_per_req,fds_per_conn,vmhwm_kb for each pid]
 *   [,threads,iou_wrk,pipes,pipe_kb for each pid]
 * Exit status: 0 when at least one request succeeded and none failed, 1 when
 * some failed, 2 on a usage error.
 *
 * Connection states (lg_state):
 *   LG_CONNECTING  non-blocking connect() in progress
 *   LG_HANDSHAKE   SSL_connect() wants I/O
 *   LG_SENDING     request header and body being written
 *   LG_RECEIVING   response being read
 *   LG_HELD        handshake done, kept open (--hold)
 */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "util.h"

#define LG_MAX_PIDS	16
#define LG_HDR_MAX	8192		/* response header bytes kept */
#define LG_IO_CHUNK	(64 * 1024)	/* read and upload buffer */
#define LG_MAX_ERRLOG	5		/* error reasons printed */

enum lg_state {
	LG_CONNECTING,
	LG_HANDSHAKE,
	LG_SENDING,
	LG_RECEIVING,
	LG_HELD
};

enum lg_mode { LG_GET, LG_POST, LG_BYTES, LG_UPLOAD, LG_HANDSHAKE_ONLY, LG_HOLD };

struct lg_conn {
	struct lg_conn	*cn_next;
	struct lg_conn	*cn_prev;
	enum lg_state	 cn_state;
	int		 cn_fd;
	SSL		*cn_ssl;
	double		 cn_start;
	double		 cn_deadline;
	size_t		 cn_req_off;	/* request header bytes written */
	uint64_t	 cn_body_off;	/* upload body bytes written */
	char		 cn_hdr[LG_HDR_MAX];
	size_t		 cn_hdr_len;
	int		 cn_hdr_done;
	uint64_t	 cn_clen;	/* Content-Length of the response */
	uint64_t	 cn_body;	/* response body bytes read */
	char		 cn_resp[128];	/* first bytes of the body (/sha256) */
	size_t		 cn_resp_len;
};

struct lg_proc {
	int		 pr_pid;
	double		 pr_cpu0;	/* seconds of CPU at start */
	double		 pr_cpu1;
	long		 pr_fds0;
	long		 pr_fds1;
	long		 pr_hwm_kb;
	long		 pr_threads;	/* most threads seen */
	long		 pr_iowrk;	/* most io-wq workers seen */
	long		 pr_pipes;	/* most pipes held seen */
	long		 pr_pipe_kb;	/* their capacity, KiB */
};

static struct {
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	const char		*connect;
	const char		*sni;
	const char		*cacert;
	const char		*path;
	const char		*post;
	uint64_t		 nbytes;
	enum lg_mode		 mode;
	long			 concurrency;
	double			 duration;
	long			 requests;
	double			 timeout;
	double			 hold;
	int			 resume;
	int			 csv;
	int			 quiet;
	struct lg_proc		 procs[LG_MAX_PIDS];
	int			 nprocs;
} opt;

static struct {
	SSL_CTX		*ctx;
	SSL_SESSION	*session;	/* latest session, for --resume */
	int		 epfd;
	char		 request[1024];
	size_t		 request_len;
	char		 sha_hex[65];	/* expected /sha256 answer */
	struct lg_conn	*active;	/* list of open connections */
	long		 inflight;	/* open and not held */
	long		 held;
	long		 started;
	long		 ok;
	long		 errors;
	long		 aborted;
	long		 dropped;	/* held connections the peer closed */
	long		 resumed;	/* handshakes that resumed a session */
	long		 errlogged;
	uint64_t	 bytes;
	double		*lat;		/* milliseconds of every success */
	size_t		 nlat;
	size_t		 latcap;
	double		 t0;
	double		 tlast;
} lg;

static uint8_t		 lg_iobuf[LG_IO_CHUNK];
static uint8_t		 lg_pattern[LG_IO_CHUNK];
static volatile sig_atomic_t lg_stop;

static void	lg_usage(void) __attribute__((noreturn));
static void	lg_fail(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
lg_usage(void)
{
	fprintf(stderr,
	    "usage: loadgen --connect HOST:PORT [--sni NAME] [--cacert FILE]\n"
	    "               [--path PATH | --post BODY | --bytes N | --upload N |\n"
	    "                --handshake-only | --hold SECONDS]\n"
	    "               [--concurrency C] [--duration S] [--requests N]\n"
	    "               [--timeout S] [--resume] [--pids PID,...] [--csv] [--quiet]\n"
	    "defaults: --path /jsonrpc --concurrency 1 --duration 10 (60 when\n"
	    "--requests is given) --timeout 10; no verification without --cacert\n");
	exit(2);
}

static void
lg_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "loadgen: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(2);
}

static void
lg_onsignal(int sig)
{
	lg_stop = 1;
}

static uint64_t
lg_parse_u64(const char *s, const char *what)
{
	char		*end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end != '\0' || s[0] == '-')
		lg_fail("%s: not a non-negative integer: %s", what, s);
	return v;
}

static double
lg_parse_secs(const char *s, const char *what)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end != '\0' || !(v >= 0) || v > 1e6)
		lg_fail("%s: not a number of seconds: %s", what, s);
	return v;
}

static void
lg_parse_pids(char *list)
{
	char	*tok, *save = NULL;

	for (tok = strtok_r(list, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (opt.nprocs == LG_MAX_PIDS)
			lg_fail("--pids: at most %d", LG_MAX_PIDS);
		opt.procs[opt.nprocs++].pr_pid =
		    (int)lg_parse_u64(tok, "--pids");
	}
}

static void
lg_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "connect",		required_argument, NULL, 'c' },
		{ "sni",		required_argument, NULL, 's' },
		{ "cacert",		required_argument, NULL, 'a' },
		{ "path",		required_argument, NULL, 'p' },
		{ "post",		required_argument, NULL, 'P' },
		{ "bytes",		required_argument, NULL, 'b' },
		{ "upload",		required_argument, NULL, 'u' },
		{ "handshake-only",	no_argument,	   NULL, 'H' },
		{ "hold",		required_argument, NULL, 'h' },
		{ "concurrency",	required_argument, NULL, 'C' },
		{ "duration",		required_argument, NULL, 'd' },
		{ "requests",		required_argument, NULL, 'n' },
		{ "timeout",		required_argument, NULL, 't' },
		{ "resume",		no_argument,	   NULL, 'r' },
		{ "pids",		required_argument, NULL, 'i' },
		{ "csv",		no_argument,	   NULL, 'v' },
		{ "quiet",		no_argument,	   NULL, 'q' },
		{ "help",		no_argument,	   NULL, '?' },
		{ NULL, 0, NULL, 0 }
	};
	char	 err[256];
	int	 ch, modes = 0, have_duration = 0;

	opt.path = "/jsonrpc";
	opt.concurrency = 1;
	opt.timeout = 10;
	opt.requests = -1;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': opt.connect = optarg; break;
		case 's': opt.sni = optarg; break;
		case 'a': opt.cacert = optarg; break;
		case 'p': opt.path = optarg; break;
		case 'P': opt.post = optarg; opt.mode = LG_POST; modes++; break;
		case 'b':
			opt.nbytes = lg_parse_u64(optarg, "--bytes");
			opt.mode = LG_BYTES;
			modes++;
			break;
		case 'u':
			opt.nbytes = lg_parse_u64(optarg, "--upload");
			opt.mode = LG_UPLOAD;
			modes++;
			break;
		case 'H': opt.mode = LG_HANDSHAKE_ONLY; modes++; break;
		case 'h':
			opt.hold = lg_parse_secs(optarg, "--hold");
			opt.mode = LG_HOLD;
			modes++;
			break;
		case 'C':
			opt.concurrency = (long)lg_parse_u64(optarg, "--concurrency");
			if (opt.concurrency < 1 || opt.concurrency > 1000000)
				lg_fail("--concurrency: 1 to 1000000");
			break;
		case 'd':
			opt.duration = lg_parse_secs(optarg, "--duration");
			have_duration = 1;
			break;
		case 'n':
			opt.requests = (long)lg_parse_u64(optarg, "--requests");
			if (opt.requests < 1 || opt.requests > 100000000)
				lg_fail("--requests: 1 to 100000000");
			break;
		case 't': opt.timeout = lg_parse_secs(optarg, "--timeout"); break;
		case 'r': opt.resume = 1; break;
		case 'i': lg_parse_pids(optarg); break;
		case 'v': opt.csv = 1; break;
		case 'q': opt.quiet = 1; break;
		default: lg_usage();
		}
	}
	if (optind != argc || opt.connect == NULL)
		lg_usage();
	if (modes > 1)
		lg_fail("--post, --bytes, --upload, --handshake-only and --hold "
		    "exclude each other");
	if (opt.mode == LG_HOLD && opt.requests < 0)
		lg_fail("--hold needs --requests (connections to hold)");
	if (!have_duration)
		opt.duration = opt.requests > 0 ? 60 : 10;
	if (opt.timeout <= 0)
		opt.timeout = 10;
	if (addr_parse(opt.connect, &opt.ss, &opt.sslen, err, sizeof(err)) == -1)
		lg_fail("--connect %s: %s", opt.connect, err);
}

/* Latest session of the server, kept for --resume. */
static int
lg_new_session(SSL *ssl, SSL_SESSION *sess)
{
	if (lg.session != NULL)
		SSL_SESSION_free(lg.session);
	lg.session = sess;
	return 1;	/* we keep the reference */
}

static void
lg_tls_init(void)
{
	lg.ctx = SSL_CTX_new(TLS_client_method());
	if (lg.ctx == NULL)
		lg_fail("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(lg.ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(lg.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (opt.cacert != NULL) {
		if (SSL_CTX_load_verify_locations(lg.ctx, opt.cacert, NULL) != 1)
			lg_fail("--cacert %s: cannot load", opt.cacert);
		SSL_CTX_set_verify(lg.ctx, SSL_VERIFY_PEER, NULL);
	} else
		SSL_CTX_set_verify(lg.ctx, SSL_VERIFY_NONE, NULL);
	if (opt.resume) {
		SSL_CTX_set_session_cache_mode(lg.ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(lg.ctx, lg_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(lg.ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(lg.ctx, SSL_OP_NO_TICKET);
	}
}

static void
lg_request_init(void)
{
	const char	*host = opt.sni != NULL ? opt.sni : "localhost";
	int		 n = 0;
	size_t		 i;

	for (i = 0; i < sizeof(lg_pattern); i++)
		lg_pattern[i] = (uint8_t)('a' + i % 26);
	switch (opt.mode) {
	case LG_GET:
		n = snprintf(lg.request, sizeof(lg.request),
		    "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		    opt.path, host);
		break;
	case LG_POST:
		n = snprintf(lg.request, sizeof(lg.request),
		    "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
		    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		    "\r\n%s", opt.path, host, strlen(opt.post), opt.post);
		break;
	case LG_BYTES:
		n = snprintf(lg.request, sizeof(lg.request),
		    "GET /bytes/%" PRIu64 " HTTP/1.1\r\nHost: %s\r\n"
		    "Connection: close\r\n\r\n", opt.nbytes, host);
		break;
	case LG_UPLOAD: {
		EVP_MD_CTX	*md = EVP_MD_CTX_new();
		unsigned char	 dig[32];
		uint64_t	 left = opt.nbytes;

		/* The answer is checked against the digest of what is sent. */
		if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
			lg_fail("EVP_DigestInit failed");
		while (left > 0) {
			size_t chunk = left < sizeof(lg_pattern) ?
			    (size_t)left : sizeof(lg_pattern);
			EVP_DigestUpdate(md, lg_pattern, chunk);
			left -= chunk;
		}
		EVP_DigestFinal_ex(md, dig, NULL);
		EVP_MD_CTX_free(md);
		for (i = 0; i < 32; i++)
			snprintf(lg.sha_hex + 2 * i, 3, "%02x", dig[i]);
		n = snprintf(lg.request, sizeof(lg.request),
		    "POST /sha256 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
		    "Content-Type: application/octet-stream\r\n"
		    "Content-Length: %" PRIu64 "\r\n\r\n", host, opt.nbytes);
		break;
	}
	case LG_HANDSHAKE_ONLY:
	case LG_HOLD:
		break;
	}
	if (n < 0 || (size_t)n >= sizeof(lg.request))
		lg_fail("request too long (path or --post body)");
	lg.request_len = (size_t)n;
}

/* utime+stime in seconds of a whole process (all threads), -1 if gone. */
static double
lg_proc_cpu(int pid)
{
	char		 path[64], buf[1024], *p;
	unsigned long	 ut, st;
	FILE		*f;
	size_t		 n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: skip to the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		return -1;
	/* Fields after ')': 3 state ... 14 utime 15 stime. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	    &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long
lg_proc_fds(int pid)
{
	char		 path[64];
	struct dirent	*de;
	DIR		*d;
	long		 n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static long
lg_proc_hwm(int pid)
{
	char	 path[64], line[256];
	long	 kb = -1;
	FILE	*f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmHWM: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Threads of a process and how many of them are io-wq workers. */
static void
lg_proc_threads(int pid, long *threads, long *iowrk)
{
	char		 path[300], comm[64];
	struct dirent	*de;
	DIR		*d;
	FILE		*f;

	*threads = *iowrk = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	if ((d = opendir(path)) == NULL) {
		*threads = *iowrk = -1;
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		(*threads)++;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", pid,
		    de->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;	/* the thread just exited */
		if (fgets(comm, sizeof(comm), f) != NULL &&
		    strncmp(comm, "iou-wrk", 7) == 0)
			(*iowrk)++;
		fclose(f);
	}
	closedir(d);
}

struct lg_pipefd {
	ino_t	 pf_ino;
	int	 pf_fd;		/* descriptor number in the process */
};

static int
lg_cmp_pipefd(const void *a, const void *b)
{
	ino_t x = ((const struct lg_pipefd *)a)->pf_ino;
	ino_t y = ((const struct lg_pipefd *)b)->pf_ino;

	return (x > y) - (x < y);
}

/*
 * Pipes a process holds (both ends of one pipe count once) and their
 * capacity: one end of each pipe is reopened through /proc (a FIFO open of
 * the same pipe) to ask F_GETPIPE_SZ.  Capacity is an upper bound of the
 * kernel memory: pages are allocated only while data sits in the pipe.
 */
static void
lg_proc_pipes(int pid, long *pipes, long *kb)
{
	char			 path[300], link[64];
	struct lg_pipefd	*pf = NULL, *np;
	struct dirent		*de;
	struct stat		 st;
	size_t			 n = 0, cap = 0, i;
	DIR			*d;
	ssize_t			 len;
	long			 bytes = 0;
	int			 fd, sz;

	*pipes = *kb = -1;
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	if ((d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%s", pid, de->d_name);
		len = readlink(path, link, sizeof(link) - 1);
		if (len <= 0)
			continue;	/* closed meanwhile */
		link[len] = '\0';
		if (strncmp(link, "pipe:", 5) != 0 || stat(path, &st) == -1)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			if ((np = realloc(pf, cap * sizeof(*np))) == NULL)
				break;
			pf = np;
		}
		pf[n].pf_ino = st.st_ino;
		pf[n].pf_fd = atoi(de->d_name);
		n++;
	}
	closedir(d);
	*pipes = *kb = 0;
	if (n > 0)
		qsort(pf, n, sizeof(*pf), lg_cmp_pipefd);
	for (i = 0; i < n; i++) {
		if (i > 0 && pf[i].pf_ino == pf[i - 1].pf_ino)
			continue;	/* the other end of the same pipe */
		(*pipes)++;
		sz = 65536;	/* default when the pipe went away meanwhile */
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, pf[i].pf_fd);
		/* O_NONBLOCK: a FIFO open never waits for the other end. */
		if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) != -1) {
			if ((sz = fcntl(fd, F_GETPIPE_SZ)) == -1)
				sz = 65536;
			close(fd);
		}
		bytes += sz;
	}
	free(pf);
	*kb = bytes / 1024;
}

/* Most threads, io-wq workers and pipes seen; pipes only when asked. */
static void
lg_procs_sample_tasks(int pipes)
{
	long	 t, w, p, kb;
	int	 i;

	for (i = 0; i < opt.nprocs; i++) {
		struct lg_proc *pr = &opt.procs[i];

		lg_proc_threads(pr->pr_pid, &t, &w);
		if (t > pr->pr_threads)
			pr->pr_threads = t;
		if (w > pr->pr_iowrk)
			pr->pr_iowrk = w;
		if (!pipes)
			continue;
		lg_proc_pipes(pr->pr_pid, &p, &kb);
		if (p > pr->pr_pipes) {
			pr->pr_pipes = p;
			pr->pr_pipe_kb = kb;
		}
	}
}

static void
lg_procs_sample(int before)
{
	int	 i;

	for (i = 0; i < opt.nprocs; i++) {
		struct lg_proc *pr = &opt.procs[i];

		if (before) {
			pr->pr_cpu0 = lg_proc_cpu(pr->pr_pid);
			pr->pr_fds0 = lg_proc_fds(pr->pr_pid);
			pr->pr_fds1 = pr->pr_fds0;
		} else {
			pr->pr_cpu1 = lg_proc_cpu(pr->pr_pid);
			pr->pr_hwm_kb = lg_proc_hwm(pr->pr_pid);
		}
	}
}

/* File descriptors while every connection is held (--hold). */
static void
lg_procs_sample_fds(void)
{
	int	 i;

	for (i = 0; i < opt.nprocs; i++)
		opt.procs[i].pr_fds1 = lg_proc_fds(opt.procs[i].pr_pid);
	lg_procs_sample_tasks(1);
}

static void
lg_errorf(const char *fmt, ...)
{
	va_list	ap;

	lg.errors++;
	if (opt.quiet || lg.errlogged++ >= LG_MAX_ERRLOG)
		return;
	fprintf(stderr, "loadgen: error: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (lg.errlogged == LG_MAX_ERRLOG)
		fprintf(stderr, "loadgen: (further errors not shown)\n");
}

static void
lg_close(struct lg_conn *cn)
{
	if (cn->cn_state != LG_HELD)
		lg.inflight--;
	else
		lg.held--;
	if (cn->cn_ssl != NULL)
		SSL_free(cn->cn_ssl);
	/* close() also removes the descriptor from the epoll set. */
	close(cn->cn_fd);
	if (cn->cn_prev != NULL)
		cn->cn_prev->cn_next = cn->cn_next;
	else
		lg.active = cn->cn_next;
	if (cn->cn_next != NULL)
		cn->cn_next->cn_prev = cn->cn_prev;
	free(cn);
}

/*
 * A finished exchange: mark the TLS connection as shut down without sending
 * anything.  SSL_free() of a connection that was not shut down marks its
 * session not resumable, which would defeat --resume.
 */
static void
lg_quiet_shutdown(struct lg_conn *cn)
{
	SSL_set_shutdown(cn->cn_ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

static void
lg_success(struct lg_conn *cn)
{
	double	 now = now_mono();

	if (lg.nlat == lg.latcap) {
		size_t	 cap = lg.latcap ? lg.latcap * 2 : 4096;
		double	*p = realloc(lg.lat, cap * sizeof(*p));

		if (p == NULL)
			lg_fail("out of memory for latencies");
		lg.lat = p;
		lg.latcap = cap;
	}
	lg.lat[lg.nlat++] = (now - cn->cn_start) * 1000.0;
	lg.ok++;
	lg.tlast = now;
}

/* A short reason for a failed SSL call; clears the error queue. */
static const char *
lg_ssl_reason(int rc, int sslerr)
{
	static char	 buf[256];
	unsigned long	 e = ERR_get_error();

	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	else if (sslerr == SSL_ERROR_SYSCALL)
		snprintf(buf, sizeof(buf), "%s",
		    rc == 0 || errno == 0 ? "unexpected EOF" : strerror(errno));
	else if (sslerr == SSL_ERROR_ZERO_RETURN)
		snprintf(buf, sizeof(buf), "closed by peer");
	else
		snprintf(buf, sizeof(buf), "SSL error %d", sslerr);
	ERR_clear_error();
	return buf;
}

/* Parse the response header: status 200 and a Content-Length. */
static int
lg_parse_header(struct lg_conn *cn)
{
	char		*line, *end, *save = NULL;
	int		 status = 0, have_len = 0;

	cn->cn_hdr[cn->cn_hdr_len] = '\0';
	end = strstr(cn->cn_hdr, "\r\n\r\n");
	*end = '\0';
	line = strtok_r(cn->cn_hdr, "\r\n", &save);
	if (line == NULL || sscanf(line, "HTTP/1.%*d %d", &status) != 1) {
		lg_errorf("malformed status line");
		return -1;
	}
	while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
		if (strncasecmp(line, "Content-Length:", 15) == 0) {
			char *e;

			errno = 0;
			cn->cn_clen = strtoull(line + 15, &e, 10);
			have_len = errno == 0 && e != line + 15;
		}
	}
	if (status != 200) {
		lg_errorf("HTTP status %d", status);
		return -1;
	}
	if (!have_len) {
		lg_errorf("response without Content-Length");
		return -1;
	}
	return 0;
}

/* Body bytes just read; returns 1 when the response is complete. */
static int
lg_body(struct lg_conn *cn, const uint8_t *p, size_t n)
{
	size_t	 room = sizeof(cn->cn_resp) - 1 - cn->cn_resp_len;

	if (room > 0) {
		size_t k = n < room ? n : room;

		memcpy(cn->cn_resp + cn->cn_resp_len, p, k);
		cn->cn_resp_len += k;
	}
	cn->cn_body += n;
	return cn->cn_body >= cn->cn_clen;
}

/* The response is complete: check it, count it, close. */
static void
lg_done(struct lg_conn *cn)
{
	if (cn->cn_body != cn->cn_clen)
		lg_errorf("body of %" PRIu64 " bytes, Content-Length %" PRIu64,
		    cn->cn_body, cn->cn_clen);
	else if (opt.mode == LG_UPLOAD &&
	    (cn->cn_resp[cn->cn_resp_len] = '\0',
	    strstr(cn->cn_resp, lg.sha_hex) == NULL))
		lg_errorf("/sha256 answer does not match: %s", cn->cn_resp);
	else {
		lg_success(cn);
		lg_quiet_shutdown(cn);
		if (opt.mode == LG_BYTES)
			lg.bytes += cn->cn_body;
		else if (opt.mode == LG_UPLOAD)
			lg.bytes += opt.nbytes;
	}
	lg_close(cn);
}

/* Returns 1 when the connection is finished (closed), 0 when it waits. */
static int
lg_receive(struct lg_conn *cn)
{
	for (;;) {
		int	 rc, err;
		size_t	 off = 0;

		rc = SSL_read(cn->cn_ssl, lg_iobuf, sizeof(lg_iobuf));
		if (rc <= 0) {
			err = SSL_get_error(cn->cn_ssl, rc);
			if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
				return 0;
			lg_errorf("read after %" PRIu64 " body bytes: %s",
			    cn->cn_body, lg_ssl_reason(rc, err));
			lg_close(cn);
			return 1;
		}
		if (!cn->cn_hdr_done) {
			size_t	 take = (size_t)rc;
			char	*end;

			if (take > LG_HDR_MAX - 1 - cn->cn_hdr_len)
				take = LG_HDR_MAX - 1 - cn->cn_hdr_len;
			memcpy(cn->cn_hdr + cn->cn_hdr_len, lg_iobuf, take);
			cn->cn_hdr_len += take;
			cn->cn_hdr[cn->cn_hdr_len] = '\0';
			end = strstr(cn->cn_hdr, "\r\n\r\n");
			if (end == NULL) {
				if (cn->cn_hdr_len == LG_HDR_MAX - 1) {
					lg_errorf("response header too long");
					lg_close(cn);
					return 1;
				}
				continue;
			}
			/* Body bytes that came with the header. */
			off = (size_t)(end + 4 - cn->cn_hdr) -
			    (cn->cn_hdr_len - take);
			cn->cn_hdr_done = 1;
			if (lg_parse_header(cn) == -1) {
				lg_close(cn);
				return 1;
			}
		}
		if (lg_body(cn, lg_iobuf + off, (size_t)rc - off) ||
		    cn->cn_clen == 0) {
			lg_done(cn);
			return 1;
		}
	}
}

/* Returns 1 when the connection is finished (closed), 0 when it waits. */
static int
lg_send(struct lg_conn *cn)
{
	int	 rc, err;

	while (cn->cn_req_off < lg.request_len ||
	    (opt.mode == LG_UPLOAD && cn->cn_body_off < opt.nbytes)) {
		const void	*p;
		int		 len;

		if (cn->cn_req_off < lg.request_len) {
			p = lg.request + cn->cn_req_off;
			len = (int)(lg.request_len - cn->cn_req_off);
		} else {
			/* Byte i of the body is lg_pattern[i % size], whatever
			 * the partial writes: the digest depends on it. */
			uint64_t left = opt.nbytes - cn->cn_body_off;
			size_t	 at = (size_t)(cn->cn_body_off % sizeof(lg_pattern));
			size_t	 room = sizeof(lg_pattern) - at;

			p = lg_pattern + at;
			len = left < room ? (int)left : (int)room;
		}
		rc = SSL_write(cn->cn_ssl, p, len);
		if (rc <= 0) {
			err = SSL_get_error(cn->cn_ssl, rc);
			if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
				return 0;
			lg_errorf("write: %s", lg_ssl_reason(rc, err));
			lg_close(cn);
			return 1;
		}
		if (cn->cn_req_off < lg.request_len)
			cn->cn_req_off += (size_t)rc;
		else
			cn->cn_body_off += (uint64_t)rc;
	}
	cn->cn_state = LG_RECEIVING;
	return lg_receive(cn);
}

/* Drive one connection as far as it goes without blocking. */
static void
lg_drive(struct lg_conn *cn, uint32_t events)
{
	int	 rc, err, soerr;
	socklen_t slen = sizeof(soerr);

	switch (cn->cn_state) {
	case LG_CONNECTING:
		if (getsockopt(cn->cn_fd, SOL_SOCKET, SO_ERROR, &soerr,
		    &slen) == -1)
			soerr = errno;
		if (soerr == EINPROGRESS || (soerr == 0 && !(events & EPOLLOUT)))
			return;
		if (soerr != 0) {
			lg_errorf("connect %s: %s", opt.connect, strerror(soerr));
			lg_close(cn);
			return;
		}
		cn->cn_state = LG_HANDSHAKE;
		/* FALLTHROUGH */
	case LG_HANDSHAKE:
		rc = SSL_connect(cn->cn_ssl);
		if (rc != 1) {
			err = SSL_get_error(cn->cn_ssl, rc);
			if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
				return;
			lg_errorf("TLS handshake: %s", lg_ssl_reason(rc, err));
			lg_close(cn);
			return;
		}
		if (SSL_session_reused(cn->cn_ssl))
			lg.resumed++;
		if (opt.mode == LG_HANDSHAKE_ONLY) {
			lg_success(cn);
			lg_quiet_shutdown(cn);
			lg_close(cn);
			return;
		}
		if (opt.mode == LG_HOLD) {
			lg_success(cn);
			cn->cn_state = LG_HELD;
			lg.inflight--;
			lg.held++;
			return;
		}
		cn->cn_state = LG_SENDING;
		/* FALLTHROUGH */
	case LG_SENDING:
		lg_send(cn);
		return;
	case LG_RECEIVING:
		lg_receive(cn);
		return;
	case LG_HELD:
		/* Session tickets and the like are dropped; EOF means the peer closed. */
		rc = SSL_read(cn->cn_ssl, lg_iobuf, sizeof(lg_iobuf));
		if (rc > 0)
			return;
		err = SSL_get_error(cn->cn_ssl, rc);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			return;
		ERR_clear_error();
		lg.dropped++;
		lg_close(cn);
		return;
	}
}

static void
lg_start(void)
{
	struct epoll_event	 ev;
	struct lg_conn		*cn;
	int			 fd, one = 1;

	lg.started++;
	fd = socket(opt.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		lg_errorf("socket: %s", strerror(errno));
		return;
	}
	/* Requests are small: do not let Nagle hold the last segment. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((cn = calloc(1, sizeof(*cn))) == NULL)
		lg_fail("out of memory");
	cn->cn_fd = fd;
	cn->cn_start = now_mono();
	cn->cn_deadline = cn->cn_start + opt.timeout;
	cn->cn_state = LG_CONNECTING;
	cn->cn_next = lg.active;
	if (lg.active != NULL)
		lg.active->cn_prev = cn;
	lg.active = cn;
	lg.inflight++;
	if ((cn->cn_ssl = SSL_new(lg.ctx)) == NULL ||
	    SSL_set_fd(cn->cn_ssl, fd) != 1) {
		lg_errorf("SSL_new failed");
		lg_close(cn);
		return;
	}
	if (opt.sni != NULL) {
		SSL_set_tlsext_host_name(cn->cn_ssl, opt.sni);
		if (opt.cacert != NULL)
			SSL_set1_host(cn->cn_ssl, opt.sni);
	}
	if (opt.resume && lg.session != NULL)
		SSL_set_session(cn->cn_ssl, lg.session);
	SSL_set_connect_state(cn->cn_ssl);
	ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
	ev.data.ptr = cn;
	if (epoll_ctl(lg.epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		lg_errorf("epoll_ctl: %s", strerror(errno));
		lg_close(cn);
		return;
	}
	if (connect(fd, (struct sockaddr *)&opt.ss, opt.sslen) == -1) {
		/* EINPROGRESS: the usual case, finished by EPOLLOUT. */
		if (errno != EINPROGRESS) {
			/* EADDRNOTAVAIL: ephemeral ports exhausted, counted as an error. */
			lg_errorf("connect %s: %s", opt.connect, strerror(errno));
			lg_close(cn);
		}
	}
}

/* Connections past their timeout fail; at the end every one is aborted. */
static void
lg_sweep(double now, int abort_all)
{
	struct lg_conn	*cn, *next;

	for (cn = lg.active; cn != NULL; cn = next) {
		next = cn->cn_next;
		if (abort_all) {
			if (cn->cn_state != LG_HELD)
				lg.aborted++;
			else
				lg_quiet_shutdown(cn);
			lg_close(cn);
		} else if (cn->cn_state != LG_HELD && now >= cn->cn_deadline) {
			lg_errorf("timeout after %.1f s in state %d", opt.timeout,
			    (int)cn->cn_state);
			lg_close(cn);
		}
	}
}

static int
lg_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double
lg_pct(double p)
{
	size_t	 i;

	if (lg.nlat == 0)
		return 0;
	i = (size_t)(p * (double)(lg.nlat - 1) + 0.5);
	return lg.lat[i];
}

static void
lg_report(double secs)
{
	FILE	*h = opt.csv ? stderr : stdout;
	double	 rps = secs > 0 ? (double)lg.ok / secs : 0;
	double	 mbps = secs > 0 ? (double)lg.bytes / 1e6 / secs : 0;
	long	 per = opt.mode == LG_HOLD ? lg.ok : lg.ok + lg.errors;
	int	 i;

	if (lg.nlat > 0)
		qsort(lg.lat, lg.nlat, sizeof(*lg.lat), lg_cmp);
	fprintf(h, "%ld requests, %ld errors, %ld aborted in %.2f s: %.1f req/s, "
	    "latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f",
	    lg.ok, lg.errors, lg.aborted, secs, rps, lg_pct(0.50),
	    lg_pct(0.90), lg_pct(0.99), lg_pct(1.0));
	if (lg.bytes > 0)
		fprintf(h, ", %.1f MB/s", mbps);
	if (opt.resume)
		fprintf(h, ", %ld resumed", lg.resumed);
	if (opt.mode == LG_HOLD)
		fprintf(h, ", %ld held, %ld dropped", lg.ok - lg.dropped,
		    lg.dropped);
	for (i = 0; i < opt.nprocs; i++) {
		struct lg_proc *pr = &opt.procs[i];
		double cpu = pr->pr_cpu0 < 0 || pr->pr_cpu1 < 0 || per == 0 ? -1 :
		    (pr->pr_cpu1 - pr->pr_cpu0) * 1e6 / (double)per;

		fprintf(h, ", pid %d %.0f us/req", pr->pr_pid, cpu);
		if (opt.mode == LG_HOLD && lg.ok > 0)
			fprintf(h, " %.2f fds/conn", (double)(pr->pr_fds1 -
			    pr->pr_fds0) / (double)lg.ok);
		fprintf(h, " hwm %ld kB", pr->pr_hwm_kb);
	}
	fprintf(h, "\n");
	if (!opt.csv)
		return;
	printf("%ld,%ld,%ld,%.3f,%.1f,%.3f,%.3f,%.3f,%.3f,%.2f,%" PRIu64,
	    lg.ok, lg.errors, lg.aborted, secs, rps, lg_pct(0.50), lg_pct(0.90),
	    lg_pct(0.99), lg_pct(1.0), mbps, lg.bytes);
	for (i = 0; i < opt.nprocs; i++) {
		struct lg_proc *pr = &opt.procs[i];
		double cpu = pr->pr_cpu0 < 0 || pr->pr_cpu1 < 0 || per == 0 ? -1 :
		    (pr->pr_cpu1 - pr->pr_cpu0) * 1e6 / (double)per;
		double fpc = lg.ok > 0 && pr->pr_fds0 >= 0 && pr->pr_fds1 >= 0 ?
		    (double)(pr->pr_fds1 - pr->pr_fds0) / (double)lg.ok : 0;

		printf(",%.1f,%.3f,%ld", cpu, fpc, pr->pr_hwm_kb);
	}
	for (i = 0; i < opt.nprocs; i++)
		printf(",%ld,%ld,%ld,%ld", opt.procs[i].pr_threads,
		    opt.procs[i].pr_iowrk, opt.procs[i].pr_pipes,
		    opt.procs[i].pr_pipe_kb);
	printf("\n");
	fflush(stdout);
}

/* Soft file limit up to the hard one: --hold may keep thousands open. */
static void
lg_raise_nofile(void)
{
	struct rlimit	 rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int
main(int argc, char **argv)
{
	struct epoll_event	 evs[256];
	struct sigaction	 sa;
	double			 now, deadline, last_sweep, last_task, hold_end = 0;
	long			 limit, i;
	int			 n, k;

	lg_options(argc, argv);
	lg_raise_nofile();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = lg_onsignal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A peer that resets a connection must not kill us on write. */
	signal(SIGPIPE, SIG_IGN);
	lg_tls_init();
	lg_request_init();
	if ((lg.epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		lg_fail("epoll_create1: %s", strerror(errno));

	limit = opt.requests > 0 ? opt.requests : LONG_MAX;
	lg_procs_sample(1);
	lg.t0 = lg.tlast = last_sweep = last_task = now_mono();
	deadline = lg.t0 + opt.duration;
	for (;;) {
		now = now_mono();
		if (lg_stop || now >= deadline)
			break;
		if (opt.mode == LG_HOLD && hold_end == 0 && lg.inflight == 0 &&
		    lg.started >= limit) {
			/* Every connection is up (or failed): sample, then hold. */
			lg_procs_sample_fds();
			if (!opt.quiet)
				fprintf(stderr, "loadgen: %ld connections held, "
				    "holding %.1f s\n", lg.held, opt.hold);
			hold_end = now + opt.hold;
		}
		if (hold_end > 0 && now >= hold_end)
			break;
		if (opt.mode != LG_HOLD && lg.inflight == 0 && lg.started >= limit)
			break;
		/* Bounded: a connect() refused at once must not spin here. */
		for (i = 0; i < opt.concurrency && lg.inflight < opt.concurrency &&
		    lg.started < limit; i++)
			lg_start();
		n = epoll_wait(lg.epfd, evs, 256, 50);
		if (n == -1 && errno != EINTR)
			lg_fail("epoll_wait: %s", strerror(errno));
		for (k = 0; k < n; k++)
			lg_drive(evs[k].data.ptr, evs[k].events);
		now = now_mono();
		if (now - last_sweep >= 0.1) {
			lg_sweep(now, 0);
			last_sweep = now;
		}
		/* Pipes are not sampled while thousands of connections are
		 * held (one readlink per descriptor): once, when all are up. */
		if (opt.nprocs > 0 && now - last_task >= 0.5) {
			lg_procs_sample_tasks(opt.mode != LG_HOLD);
			last_task = now;
		}
	}
	if (opt.mode == LG_HOLD && hold_end == 0)
		lg_procs_sample_fds();
	now = now_mono();
	lg_procs_sample(0);
	if (opt.nprocs > 0)
		lg_procs_sample_tasks(opt.mode != LG_HOLD);
	lg_sweep(now, 1);
	/* Seconds: until the last completion, or the limit when cut short. */
	lg_report((lg.aborted > 0 ? now : lg.tlast) - lg.t0);
	if (lg.session != NULL)
		SSL_SESSION_free(lg.session);
	SSL_CTX_free(lg.ctx);
	free(lg.lat);
	close(lg.epfd);
	return lg.errors > 0 || lg.ok == 0 ? 1 : 0;
}
