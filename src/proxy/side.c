/* side.c - the side thread running libevent for the JSON-RPC traffic. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "jsonrpc.h"
#include "log.h"
#include "side.h"

struct side_msg {
	STAILQ_ENTRY(side_msg) sm_entry;
	side_fn                sm_fn;
	void                  *sm_arg;
};

struct side {
	struct event_base       *sd_base;
	struct event            *sd_wake;     /* activated by side_post */
	pthread_t                sd_thread;
	int                      sd_running;
	pthread_mutex_t          sd_lock;
	STAILQ_HEAD(, side_msg)  sd_queue;
};

static void
side_drain(evutil_socket_t fd, short what, void *arg)
{
	struct side *s = arg;
	STAILQ_HEAD(, side_msg) batch = STAILQ_HEAD_INITIALIZER(batch);
	struct side_msg *m;

	pthread_mutex_lock(&s->sd_lock);
	STAILQ_CONCAT(&batch, &s->sd_queue);
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
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct side *s;

	/* libevent must know about threads before any base exists, so that
	 * event_active() from the io_uring thread wakes this loop. */
	pthread_once(&once, (void (*)(void))evthread_use_pthreads);
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->sd_lock, NULL);
	STAILQ_INIT(&s->sd_queue);
	s->sd_base = jsonrpc_base_new();
	if (s->sd_base == NULL ||
	    (s->sd_wake = event_new(s->sd_base, -1, 0, side_drain, s)) == NULL) {
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

	if (m == NULL)
		fatal("side_post");
	m->sm_fn = fn;
	m->sm_arg = arg;
	pthread_mutex_lock(&s->sd_lock);
	STAILQ_INSERT_TAIL(&s->sd_queue, m, sm_entry);
	pthread_mutex_unlock(&s->sd_lock);
	event_active(s->sd_wake, 0, 0);
}

void
side_stop(struct side *s)
{
	if (!s->sd_running)
		return;
	event_base_loopbreak(s->sd_base);
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
	pthread_mutex_destroy(&s->sd_lock);
	free(s);
}
