/* pipepool.c - bounded pool of empty pipes (see pipepool.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "metrics.h"
#include "pipepool.h"

/* Gauges move with the pool's own counts (one function per event below). */
METRIC_GAUGE(m_pipes, "pipes", "Splice pipes that exist, by state (pooled, in_use).", "state")
METRIC_COUNTER(m_pipes_created, "pipes_created_total", "Pipes created for splice(2).")
METRIC_COUNTER(m_pipe_refused, "pipes_unavailable_total",
    "Pipe requests refused, by reason (exhausted: max_pipes; budget: "
    "F_SETPIPE_SZ refused; error: pipe2 failed).", "reason")

struct pipepool {
	unsigned	 pp_max;
	unsigned	 pp_in_use;
	unsigned	 pp_npooled;
	size_t		 pp_size;	/* requested size, 0: default */
	size_t		 pp_cap;	/* size the kernel gave (pooled pipes) */
	int		(*pp_fds)[2];	/* stack of pooled pipes, pp_max slots */
};

struct pipepool *
pipepool_new(unsigned max, size_t size)
{
	struct pipepool *pp;

	if ((pp = calloc(1, sizeof(*pp))) == NULL)
		return NULL;
	if (max && (pp->pp_fds = calloc(max, sizeof(*pp->pp_fds))) == NULL) {
		free(pp);
		return NULL;
	}
	pp->pp_max = max;
	pp->pp_size = size;
	pp->pp_cap = size ? size : 65536;
	return pp;
}

void
pipepool_free(struct pipepool *pp)
{
	if (pp == NULL)
		return;
	while (pp->pp_npooled > 0) {
		pp->pp_npooled--;
		metric_dec(&m_pipes, "pooled");
		close(pp->pp_fds[pp->pp_npooled][0]);
		close(pp->pp_fds[pp->pp_npooled][1]);
	}
	free(pp->pp_fds);
	free(pp);
}

int
pipepool_get(struct pipepool *pp, int fds[2], size_t *cap)
{
	int ret, saved;

	if (pp->pp_npooled > 0) {
		pp->pp_npooled--;
		fds[0] = pp->pp_fds[pp->pp_npooled][0];
		fds[1] = pp->pp_fds[pp->pp_npooled][1];
		pp->pp_in_use++;
		metric_dec(&m_pipes, "pooled");
		metric_inc(&m_pipes, "in_use");
		*cap = pp->pp_cap;
		return 0;
	}
	if (pp->pp_in_use >= pp->pp_max) {
		metric_inc(&m_pipe_refused, "exhausted");
		errno = EAGAIN;
		return -1;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1) {
		metric_inc(&m_pipe_refused, "error");
		return -1;
	}
	if (pp->pp_size) {
		/* EPERM: the per-user pipe budget is used up (unprivileged);
		 * a smaller pipe would make splice cost more than copying. */
		if ((ret = fcntl(fds[1], F_SETPIPE_SZ, (int)pp->pp_size)) == -1) {
			saved = errno;
			metric_inc(&m_pipe_refused, saved == EPERM ? "budget" : "error");
			close(fds[0]);
			close(fds[1]);
			errno = saved;
			return -1;
		}
		pp->pp_cap = (size_t)ret;	/* rounded up to a power of two pages */
	}
	pp->pp_in_use++;
	metric_inc(&m_pipes_created);
	metric_inc(&m_pipes, "in_use");
	*cap = pp->pp_cap;
	return 0;
}

void
pipepool_put(struct pipepool *pp, int fds[2], int empty)
{
	pp->pp_in_use--;
	metric_dec(&m_pipes, "in_use");
	if (empty && pp->pp_npooled < pp->pp_max) {
		pp->pp_fds[pp->pp_npooled][0] = fds[0];
		pp->pp_fds[pp->pp_npooled][1] = fds[1];
		pp->pp_npooled++;
		metric_inc(&m_pipes, "pooled");
	} else {
		close(fds[0]);
		close(fds[1]);
	}
	fds[0] = fds[1] = -1;
}

void
pipepool_stats(const struct pipepool *pp, unsigned *pooled, unsigned *in_use)
{
	*pooled = pp->pp_npooled;
	*in_use = pp->pp_in_use;
}
