/* pipepool.h - bounded pool of pipes for splice(2) (HAProxy "maxpipes").
 *
 * A pipe costs two fds and pipe_size bytes of the per-user pipe budget
 * (fs.pipe-user-pages-soft, 64 MiB by default: only 64 pipes of 1 MiB for an
 * unprivileged user).  The pool therefore bounds the number of pipes that
 * exist (pooled + in use) and keeps empty ones for reuse, so a busy relay does
 * not pay two pipe2() and an fcntl() per connection.  Only empty pipes come
 * back to the pool: a pipe with stale bytes would leak them into the next
 * connection, so it is closed instead.  Single-threaded (one pool per loop). */
#ifndef HP_PIPEPOOL_H
#define HP_PIPEPOOL_H

#include <stddef.h>

struct pipepool;

/* max: pipes that may exist at once; size: F_SETPIPE_SZ value (0: kernel
 * default, 64 KiB). */
struct pipepool *pipepool_new(unsigned max, size_t size);
/* Closes the pooled pipes; pipes still out are the caller's to close. */
void	 pipepool_free(struct pipepool *pp);
/* fds[0] read end, fds[1] write end, both non-blocking.  *cap: bytes the
 * pipe holds.  Returns 0, or -1 with errno EAGAIN (pool exhausted, try later),
 * EPERM (pipe budget: F_SETPIPE_SZ refused, do not retry soon), EMFILE... */
int	 pipepool_get(struct pipepool *pp, int fds[2], size_t *cap);
/* Give a pipe back; empty=0 closes it. */
void	 pipepool_put(struct pipepool *pp, int fds[2], int empty);
void	 pipepool_stats(const struct pipepool *pp, unsigned *pooled, unsigned *in_use);

#endif
