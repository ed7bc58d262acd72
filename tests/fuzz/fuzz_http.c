/* fuzz_http.c - libFuzzer target for the JSON-RPC server's HTTP handling
 * (make fuzz).
 * fuzz-sources: src/common/jsonrpc.c src/common/util.c src/common/log.c src/common/metrics.c
 *
 * One real jsonrpc_server (plain HTTP, evhttp) lives on an event_base in
 * this process, on an ephemeral 127.0.0.1 port.  Each input is written as
 * the raw bytes of one client connection, which then shuts down writing;
 * the loop runs until the server has closed the connection and every
 * deferred reply has been sent, at most FUZZ_INPUT_SECONDS per input.
 * Methods: "echo" answers its params, "later" answers from a timer (so
 * replies race with the client going away), "fail" answers an error.
 * An input ending in a NUL byte resets its connection as soon as a
 * deferred call is pending, so that reply goes to a closed connection.
 * Checks, besides memory safety: whatever the server writes starts as an
 * HTTP status line (evhttp answers in the version of the request, "HTTP/0.1" included), and the server still answers a valid call after
 * every input. */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "jsonrpc.h"
#include "log.h"

#define FUZZ_INPUT_SECONDS	2
#define FUZZ_KEEP		4096	/* reply bytes kept for the checks */

#include "fuzz.h"

static struct event_base *base;
static struct jsonrpc_server *server;
static int port, pending;

/* one client connection */
struct peer {
	int		 fd;
	const uint8_t	*data;
	size_t		 size, sent;
	char		 got[FUZZ_KEEP + 1];
	size_t		 ngot;
	int		 eof, expired;
	int		 abrupt;	/* reset the connection once a call is pending */
	struct event	*rev, *wev, *deadline;
};

static void
later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct jsonrpc_call *c = arg;

	pending--;
	jsonrpc_call_reply(c, json_object_get(jsonrpc_call_params(c)));
}

static void
handler(void *arg, struct jsonrpc_call *c)
{
	const char *m = jsonrpc_call_method(c);
	struct timeval tv = { 0, 1000 };

	if (strcmp(m, "later") == 0) {
		if (event_base_once(base, -1, EV_TIMEOUT, later_cb, c, &tv) == 0) {
			pending++;
			return;
		}
	}
	if (strcmp(m, "fail") == 0)
		jsonrpc_call_error(c, HP_ERR_CONFLICT, "already taken");
	else
		jsonrpc_call_reply(c, json_object_get(jsonrpc_call_params(c)));
}

static void
peer_read(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	char buf[8192];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		size_t k = (size_t)n < FUZZ_KEEP - p->ngot ? (size_t)n : FUZZ_KEEP - p->ngot;

		memcpy(p->got + p->ngot, buf, k);
		p->ngot += k;
	}
	/* EAGAIN: more later; 0 or an error (reset): the server is done */
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	p->eof = 1;
	event_del(p->rev);
	event_del(p->wev);
}

static void
peer_write(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	ssize_t n;

	while (p->sent < p->size) {
		n = send(fd, p->data + p->sent, p->size - p->sent, MSG_NOSIGNAL);
		if (n < 0) {
			/* EAGAIN: wait for room; else the server closed early */
			if (errno != EAGAIN && errno != EINTR)
				p->sent = p->size;
			return;
		}
		p->sent += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	event_del(p->wev);
}

static void
peer_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;

	p->expired = 1;
}

/* Sends data as one connection; p->got is what the server wrote back. */
static void
peer_run(struct peer *p, const uint8_t *data, size_t size)
{
	struct sockaddr_in sin;
	struct timeval tv = { FUZZ_INPUT_SECONDS, 0 };
	struct sockaddr_in src;
	static unsigned nconn;
	int one = 1, err;

	memset(p, 0, sizeof(*p));
	/* a last byte NUL: this client resets the connection instead of
	 * waiting for a deferred reply */
	p->abrupt = size > 0 && data[size - 1] == '\0';
	p->data = data;
	p->size = size;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	check((p->fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	/* The client closes first (SHUT_WR), so each connection leaves a
	 * TIME_WAIT behind for a minute: spread the source over 127.1.0.0/20
	 * so the ephemeral ports of one source address never run out. */
	memset(&src, 0, sizeof(src));
	src.sin_family = AF_INET;
	src.sin_addr.s_addr = htonl(0x7f010000u | (nconn++ & 0xfffu));
	setsockopt(p->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	check(bind(p->fd, (struct sockaddr *)&src, sizeof(src)) == 0);
	/* loopback: the connect completes from the backlog, before accept */
	if (connect(p->fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		struct pollfd pfd = { p->fd, POLLOUT, 0 };
		socklen_t sl = sizeof(err);

		/* EINTR (libFuzzer's timer signal): the connect goes on */
		check(errno == EINTR && poll(&pfd, 1, 1000) == 1);
		check(getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0);
	}
	check(evutil_make_socket_nonblocking(p->fd) == 0);
	p->rev = event_new(base, p->fd, EV_READ | EV_PERSIST, peer_read, p);
	p->wev = event_new(base, p->fd, EV_WRITE | EV_PERSIST, peer_write, p);
	p->deadline = evtimer_new(base, peer_deadline, p);
	check(p->rev != NULL && p->wev != NULL && p->deadline != NULL);
	event_add(p->rev, NULL);
	event_add(p->wev, NULL);
	evtimer_add(p->deadline, &tv);
	while (!p->expired && (!p->eof || pending > 0)) {
		if (p->abrupt && !p->eof && p->sent == p->size && pending > 0) {
			struct linger lg = { 1, 0 };

			/* gone before the reply: a reset, not a FIN */
			setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			event_del(p->rev);
			event_del(p->wev);
			close(p->fd);
			p->fd = -1;
			p->eof = 1;
			continue;
		}
		event_base_loop(base, EVLOOP_ONCE);
	}
	event_free(p->rev);
	event_free(p->wev);
	event_free(p->deadline);
	if (p->fd != -1)
		close(p->fd);
	p->got[p->ngot] = '\0';
}

static void
setup(void)
{
	struct jsonrpc_server_conf conf = {
		.bind_address = "127.0.0.1:0",
		.path = "/jsonrpc",
		.max_body = 4096,	/* small, to reach the 413 path */
		.timeout = 1,
	};
	char err[256];

	log_init("fuzz", LOG_LVL_ERROR);
	check((base = event_base_new()) != NULL);
	server = jsonrpc_server_new(base, &conf, handler, NULL, err, sizeof(err));
	if (server == NULL) {
		fprintf(stderr, "fuzz_http: %s\n", err);
		abort();
	}
	port = jsonrpc_server_port(server);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char probe[] = "POST /jsonrpc HTTP/1.1\r\nHost: x\r\n"
	    "Content-Type: application/json\r\nContent-Length: 46\r\n\r\n"
	    "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":\"probe\"}";
	static struct peer p;
	static unsigned long runs;

	if (base == NULL)
		setup();
	peer_run(&p, data, size);
	if (p.ngot > 0)
		check(strncmp(p.got, "HTTP/", p.ngot < 5 ? p.ngot : 5) == 0);
	/* now and then: the server still serves a well-formed call */
	if (++runs % 256 == 1) {
		peer_run(&p, (const uint8_t *)probe, sizeof(probe) - 1);
		check(strncmp(p.got, "HTTP/1.1 200", 12) == 0);
		check(strstr(p.got, "\"id\":\"probe\"") != NULL);
	}
	return 0;
}
