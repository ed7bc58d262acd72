/* loop_wait.h - the machine tests' way to run a real loop until a
 * condition holds: a 5 ms timer re-checks pred() and stops the loop when it
 * holds or when the time is up.  Header only; included by the tests that
 * drive the role machines through loopback sockets. */
#ifndef HP_TEST_LOOP_WAIT_H
#define HP_TEST_LOOP_WAIT_H

#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>

#include "loop.h"
#include "util.h"

struct loop_waiter {
	struct loop_op   w_op;
	struct loop     *w_loop;
	int            (*w_pred)(void);
	uint64_t         w_deadline;
	int              w_met;
};

static void
loop_waiter_cb(struct loop_op *op, int res, unsigned flags)
{
	struct loop_waiter *w = LOOP_CONTAINER_OF(op, struct loop_waiter, w_op);

	(void)res;
	(void)flags;
	if (w->w_pred != NULL && w->w_pred()) {
		w->w_met = 1;
		loop_stop(w->w_loop);
	} else if (now_mono_ms() >= w->w_deadline)
		loop_stop(w->w_loop);
	else
		loop_timeout(w->w_loop, &w->w_op, 5);
}

/* Run l until pred() (NULL: for ms), at most ms.  1 when it held. */
static inline int
loop_run_until(struct loop *l, int (*pred)(void), unsigned ms)
{
	struct loop_waiter w;

	memset(&w, 0, sizeof(w));
	loop_op_init(&w.w_op, loop_waiter_cb);
	w.w_loop = l;
	w.w_pred = pred;
	w.w_deadline = now_mono_ms() + ms;
	loop_nop(l, &w.w_op);
	cr_assert_eq(loop_run(l), 0);
	return w.w_met;
}

#endif
