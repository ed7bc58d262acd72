/* postq.c - closures posted to another thread's loop (see postq.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "postq.h"

struct postq_item {
	STAILQ_ENTRY(postq_item)	 pi_entry;
	void				(*pi_fn)(void *);
	void				*pi_arg;
};

int
postq_init(struct postq *q)
{
	if ((q->pq_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		return -1;
	pthread_mutex_init(&q->pq_lock, NULL);
	STAILQ_INIT(&q->pq_items);
	q->pq_signalled = 0;
	return 0;
}

void
postq_free(struct postq *q)
{
	struct postq_item *it;

	if (q->pq_evfd == -1)
		return;
	while ((it = STAILQ_FIRST(&q->pq_items)) != NULL) {
		STAILQ_REMOVE_HEAD(&q->pq_items, pi_entry);
		free(it);
	}
	pthread_mutex_destroy(&q->pq_lock);
	close(q->pq_evfd);
	q->pq_evfd = -1;
}

void
postq_wake(struct postq *q)
{
	uint64_t one = 1;
	int saved = errno;

	/* EAGAIN: the counter is saturated, the consumer wakes anyway. */
	ssize_t n = write(q->pq_evfd, &one, sizeof(one));

	(void)n;
	errno = saved;
}

int
postq_post(struct postq *q, void (*fn)(void *), void *arg)
{
	struct postq_item *it;
	int wake;

	if ((it = malloc(sizeof(*it))) == NULL)
		return -1;
	it->pi_fn = fn;
	it->pi_arg = arg;
	pthread_mutex_lock(&q->pq_lock);
	STAILQ_INSERT_TAIL(&q->pq_items, it, pi_entry);
	wake = !q->pq_signalled;
	q->pq_signalled = 1;
	pthread_mutex_unlock(&q->pq_lock);
	if (wake)
		postq_wake(q);
	return 0;
}

void
postq_run(struct postq *q)
{
	STAILQ_HEAD(, postq_item) batch = STAILQ_HEAD_INITIALIZER(batch);
	struct postq_item *it;

	pthread_mutex_lock(&q->pq_lock);
	STAILQ_CONCAT(&batch, &q->pq_items);
	q->pq_signalled = 0;
	pthread_mutex_unlock(&q->pq_lock);
	while ((it = STAILQ_FIRST(&batch)) != NULL) {
		STAILQ_REMOVE_HEAD(&batch, pi_entry);
		it->pi_fn(it->pi_arg);
		free(it);
	}
}
