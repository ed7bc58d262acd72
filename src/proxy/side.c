/* side.c - the side thread running libevent for the JSON-RPC traffic. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "jsonrpc.h"
#include "log.h"
#include "side.h"

struct side_msg {
	STAILQ_ENTRY(side_msg) sm_entry;
	side_fn                sm_fn;
	void                  *sm_arg;
};

/* The io_uring thread hands work over through sd_queue and wakes this
 * thread with an eventfd, written only when the queue was not already
 * signalled.  Nothing else crosses threads, so libevent runs without its
 * own locking (no evthread_use_pthreads): the base is this thread's alone. */
struct side {
	struct event_base       *sd_base;
	struct event            *sd_wake;     /* EV_READ on sd_evfd */
	int                      sd_evfd;
	pthread_t                sd_thread;
	int                      sd_running;
	pthread_mutex_t          sd_lock;     /* sd_queue, sd_signalled */
	int                      sd_signalled;
	STAILQ_HEAD(, side_msg)  sd_queue;
};

static void
side_drain(evutil_socket_t fd, short what, void *arg)
{
	struct side *s = arg;
	STAILQ_HEAD(, side_msg) batch = STAILQ_HEAD_INITIALIZER(batch);
	struct side_msg *m;
	uint64_t n;

	(void)fd;
	(void)what;
	if (read(s->sd_evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("side: eventfd read");
	pthread_mutex_lock(&s->sd_lock);
	STAILQ_CONCAT(&batch, &s->sd_queue);
	s->sd_signalled = 0;
	pthread_mutex_unlock(&s->sd_lock);
	while ((m = STAILQ_FIRST(&batch)) != NULL) {
		STAILQ_REMOVE_HEAD(&batch, sm_entry);
		m->sm_fn(m->sm_arg);
		free(m);
	}
}

struct side *
side_new(char *err, size_t errlen)
{
	struct side *s;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->sd_lock, NULL);
	STAILQ_INIT(&s->sd_queue);
	s->sd_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->sd_base = jsonrpc_base_new();
	if (s->sd_evfd == -1 || s->sd_base == NULL ||
	    (s->sd_wake = event_new(s->sd_base, s->sd_evfd, EV_READ | EV_PERSIST, side_drain,
	    s)) == NULL || event_add(s->sd_wake, NULL) == -1) {
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
	struct side_msg *m = malloc(sizeof(*m));
	uint64_t one = 1;
	int wake;

	if (m == NULL)
		fatal("side_post");
	m->sm_fn = fn;
	m->sm_arg = arg;
	pthread_mutex_lock(&s->sd_lock);
	STAILQ_INSERT_TAIL(&s->sd_queue, m, sm_entry);
	wake = !s->sd_signalled;
	s->sd_signalled = 1;
	pthread_mutex_unlock(&s->sd_lock);
	/* EAGAIN: the counter is saturated, the thread wakes anyway. */
	if (wake && write(s->sd_evfd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("side: eventfd write");
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
	struct side_msg *m;

	if (s == NULL)
		return;
	side_stop(s);
	while ((m = STAILQ_FIRST(&s->sd_queue)) != NULL) {
		STAILQ_REMOVE_HEAD(&s->sd_queue, sm_entry);
		free(m);
	}
	if (s->sd_wake)
		event_free(s->sd_wake);
	if (s->sd_base)
		event_base_free(s->sd_base);
	if (s->sd_evfd != -1)
		close(s->sd_evfd);
	pthread_mutex_destroy(&s->sd_lock);
	free(s);
}
