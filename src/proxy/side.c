/* side.c - the side thread running libevent for the JSON-RPC traffic. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "jsonrpc.h"
#include "log.h"
#include "postq.h"
#include "side.h"

/* The io_uring thread hands work over through sd_posts (postq.h), whose
 * eventfd libevent watches.  Nothing else crosses threads, so libevent runs
 * without its own locking (no evthread_use_pthreads): the base is this
 * thread's alone. */
struct side {
	struct event_base       *sd_base;
	struct event            *sd_wake;     /* EV_READ on sd_posts.pq_evfd */
	struct postq             sd_posts;
	pthread_t                sd_thread;
	int                      sd_running;
};

static void
side_drain(evutil_socket_t fd, short what, void *arg)
{
	struct side *s = arg;
	uint64_t n;

	(void)what;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("side: eventfd read");
	postq_run(&s->sd_posts);
}

struct side *
side_new(char *err, size_t errlen)
{
	struct side *s;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (postq_init(&s->sd_posts) == -1) {
		snprintf(err, errlen, "cannot create the side thread's eventfd: %s",
		    strerror(errno));
		free(s);
		return NULL;
	}
	s->sd_base = jsonrpc_base_new();
	if (s->sd_base == NULL ||
	    (s->sd_wake = event_new(s->sd_base, s->sd_posts.pq_evfd, EV_READ | EV_PERSIST,
	    side_drain, s)) == NULL || event_add(s->sd_wake, NULL) == -1) {
		snprintf(err, errlen, "cannot create the event loop");
		side_free(s);
		return NULL;
	}
	return s;
}

struct event_base *
side_base(struct side *s)
{
	return s->sd_base;
}

static void *
side_main(void *arg)
{
	struct side *s = arg;

	event_base_loop(s->sd_base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

int
side_start(struct side *s, char *err, size_t errlen)
{
	int rc = pthread_create(&s->sd_thread, NULL, side_main, s);

	if (rc != 0) {
		snprintf(err, errlen, "cannot start the side thread: %s", strerror(rc));
		return -1;
	}
	s->sd_running = 1;
	return 0;
}

void
side_post(struct side *s, side_fn fn, void *arg)
{
	if (postq_post(&s->sd_posts, fn, arg) == -1)
		fatal("side_post");
}

static void
side_break(void *arg)
{
	struct side *s = arg;

	event_base_loopbreak(s->sd_base);
}

void
side_stop(struct side *s)
{
	if (!s->sd_running)
		return;
	/* loopbreak must run on the side thread: its base has no locks. */
	side_post(s, side_break, s);
	pthread_join(s->sd_thread, NULL);
	s->sd_running = 0;
}

void
side_free(struct side *s)
{
	if (s == NULL)
		return;
	side_stop(s);
	if (s->sd_wake)
		event_free(s->sd_wake);
	if (s->sd_base)
		event_base_free(s->sd_base);
	postq_free(&s->sd_posts);
	free(s);
}
