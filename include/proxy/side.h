/* side.h - the proxies' side thread: one libevent loop that runs the JSON-RPC
 * server and client talking to the Hyper server, beside the io_uring loop.
 *
 * The two threads never share mutable state except through posted closures
 * (side_post here, loop_post on the io_uring side) and the announcement
 * table, which has its own lock. */
#ifndef HP_SIDE_H
#define HP_SIDE_H

#include <stddef.h>

struct event_base;
struct side;

typedef void (*side_fn)(void *arg);

/* Create the event base without starting the thread (libevent without its
 * thread locks: only side_post() crosses threads, through postq.h). */
struct side *side_new(char *err, size_t errlen);
struct event_base *side_base(struct side *s);
/* Start the thread running the base. */
int  side_start(struct side *s, char *err, size_t errlen);
/* Run fn(arg) on the side thread (thread-safe, FIFO, never inline). */
void side_post(struct side *s, side_fn fn, void *arg);
/* Stop the loop, join the thread, drop unrun closures' memory (not their args). */
void side_stop(struct side *s);
void side_free(struct side *s);

#endif
