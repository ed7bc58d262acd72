/* postq.h - closures posted from one thread to the thread that owns a loop:
 * a mutex-protected FIFO and an eventfd.  The eventfd is written only when
 * the queue goes from drained to not drained, so a burst of posts costs the
 * consumer one wake-up.  Used by loop_post() (io_uring thread, which reads
 * the eventfd through its ring) and side_post() (libevent side thread).
 *
 * Consumer protocol: once a read of pq_evfd has completed (the counter is
 * back to 0), call postq_run(); a post racing with it either lands in the
 * batch it takes or writes the eventfd again. */
#ifndef HP_POSTQ_H
#define HP_POSTQ_H

#include <pthread.h>
#include <sys/queue.h>

struct postq_item;

struct postq {
	pthread_mutex_t			 pq_lock;	/* pq_items, pq_signalled */
	STAILQ_HEAD(, postq_item)	 pq_items;
	int				 pq_signalled;	/* eventfd written, not yet drained */
	int				 pq_evfd;	/* non-blocking, close-on-exec */
};

/* -1 with errno set when the eventfd cannot be created. */
int	 postq_init(struct postq *q);
/* Frees closures never run (not their arguments) and closes the eventfd. */
void	 postq_free(struct postq *q);
/* Queue fn(arg) (thread-safe).  -1 (ENOMEM): nothing queued. */
int	 postq_post(struct postq *q, void (*fn)(void *), void *arg);
/* Write the eventfd unconditionally (async-signal-safe: a stop request). */
void	 postq_wake(struct postq *q);
/* Consumer thread: run every closure queued so far, in order. */
void	 postq_run(struct postq *q);

#endif
