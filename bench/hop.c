/*
 * hop - one relay hop for the benchmarks (bench/run.sh, setup "hop").
 *
 *   hop --listen HOST:PORT --connect HOST:PORT [--splice-threshold BYTES]
 *       [--pipe-size BYTES] [--max-pipes N]
 *
 * Every accepted connection is joined with a new connection to --connect by
 * the proxies' own relay engine (src/proxy/relay.c on src/proxy/loop.c, with
 * the proxies' default relay settings unless overridden).  Nothing else: no
 * SNI peek, no token, no Hyper call.  This is what the public proxy does
 * with a connection once it is joined, so "bytes through one relay hop" is
 * measured without the second hop of the chain.
 *
 * Prints "hop: listening on HOST:PORT" once ready; runs until SIGTERM or
 * SIGINT, then closes every pair.  Exit status 1 on a setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "relay.h"
#include "util.h"

#define HOP_CONNECT_TIMEOUT_MS	5000

struct hop {
	struct loop		*h_loop;
	struct relay		*h_relay;
	struct loop_listener	 h_listener;
	struct sockaddr_storage	 h_up;
	socklen_t		 h_uplen;
	uint64_t		 h_failed;
};

struct dial {
	struct loop_op		 d_op;
	struct hop		*d_hop;
	int			 d_client;
	int			 d_up;
};

static struct loop *stop_loop;

static void
on_signal(int sig)
{
	(void)sig;
	if (stop_loop != NULL)
		loop_stop(stop_loop);
}

static void
pair_done(const struct relay_report *r, void *arg)
{
	(void)arg;
	log_debug("pair: %s, %llu + %llu bytes, %.3f s", r->reason_str,
	    (unsigned long long)r->bytes_ab, (unsigned long long)r->bytes_ba, r->duration);
}

static void
dial_done(struct loop_op *op, int res, unsigned flags)
{
	struct dial *d = LOOP_CONTAINER_OF(op, struct dial, d_op);

	(void)flags;
	if (res < 0) {
		log_warnx("connect: %s", strerror(-res));
		d->d_hop->h_failed++;
		close(d->d_client);
		close(d->d_up);
	} else
		(void)relay_join(d->d_hop->h_relay, d->d_client, d->d_up, "client", "server",
		    pair_done, NULL);
	free(d);
}

static void
on_accept(struct loop_listener *l, int fd)
{
	struct hop *h = l->ll_arg;
	struct dial *d;
	int one = 1;

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		close(fd);
		return;
	}
	d->d_hop = h;
	d->d_client = fd;
	d->d_up = socket(h->h_up.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (d->d_up == -1) {
		log_warn("socket");
		close(fd);
		free(d);
		return;
	}
	(void)setsockopt(d->d_up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	loop_op_init(&d->d_op, dial_done);
	loop_connect(h->h_loop, &d->d_op, d->d_up, (struct sockaddr *)&h->h_up, h->h_uplen,
	    HOP_CONNECT_TIMEOUT_MS);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: hop --listen HOST:PORT --connect HOST:PORT "
	    "[--splice-threshold BYTES] [--pipe-size BYTES] [--max-pipes N]\n");
}

static size_t
parse_size(const char *name, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		fatalx("--%s: not a number: %s", name, s);
	return (size_t)v;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "splice-threshold", required_argument, NULL, 't' },
		{ "pipe-size", required_argument, NULL, 'p' },
		{ "max-pipes", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct relay_settings rs;
	struct hop h;
	const char *listen_at = NULL, *connect_to = NULL;
	char err[256];
	int c, fd;

	log_init("hop", getenv("HOP_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_INFO);
	relay_settings_default(&rs);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_at = optarg; break;
		case 'c': connect_to = optarg; break;
		case 't': rs.splice_threshold = parse_size("splice-threshold", optarg); break;
		case 'p': rs.pipe_size = parse_size("pipe-size", optarg); break;
		case 'm': rs.max_pipes = (unsigned)parse_size("max-pipes", optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (listen_at == NULL || connect_to == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	memset(&h, 0, sizeof(h));
	if (addr_parse(connect_to, &h.h_up, &h.h_uplen, err, sizeof(err)) == -1)
		fatalx("--connect %s: %s", connect_to, err);
	if ((fd = listen_tcp(listen_at, 1024, err, sizeof(err))) == -1)
		fatalx("--listen %s: %s", listen_at, err);
	if ((h.h_loop = loop_new(4096)) == NULL)
		fatal("io_uring");
	if ((h.h_relay = relay_new(h.h_loop, &rs)) == NULL)
		fatal("relay");
	loop_listener_start(h.h_loop, &h.h_listener, fd, on_accept, &h);
	stop_loop = h.h_loop;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("hop: listening on %s\n", listen_at);
	fflush(stdout);
	if (loop_run(h.h_loop) == -1)
		return 1;
	relay_free(h.h_relay);
	loop_free(h.h_loop);
	if (h.h_failed)
		log_warnx("%llu upstream connects failed", (unsigned long long)h.h_failed);
	return 0;
}
