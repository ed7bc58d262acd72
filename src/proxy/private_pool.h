/* private_pool.h - the private proxy's pool keepers (issue #16): per public
 * proxy served, pool_size data connections dialed ahead of demand, each
 * having written a ticket, waiting for the start frame that binds it to a
 * client.  For private.c only.
 *
 * Threads: private_pool_announced and the ticket fetches run on the side
 * thread; the pooled connections live on the loop thread; each crosses with
 * loop_post / side_post.  private_pool_new, _start, _side_stopped and _free
 * run on the main thread at start and stop, as their names say.
 *
 * What the pool borrows from the private proxy is handed over once, in
 * struct private_pool_env; the pool never sees struct private. */
#ifndef HP_PRIVATE_POOL_H
#define HP_PRIVATE_POOL_H

#include <stdatomic.h>
#include <sys/socket.h>

struct announce_table;
struct announcement;
struct control;
struct frame;
struct loop;
struct private;
struct private_pool;
struct proxy_conf;

struct private_pool_env {
	struct private		*pe_pv;
	struct proxy_conf	*pe_conf;
	struct control		*pe_ctl;
	struct announce_table	*pe_table;
	atomic_long		*pe_nsockets;	/* every socket held, reserved before a dial */
	atomic_int		*pe_stopping;
	/* side thread: the address of data endpoint `endpoint` of public proxy
	 * `proxy` (one of its data_endpoints), or NULL */
	const struct sockaddr_storage *(*pe_endpoint)(struct private *pv, const char *proxy,
		    const char *endpoint, socklen_t *len);
	/* loop thread: the pooled connection fd read a start frame f for
	 * announcement an: dial the internal server and join.  Takes fd and
	 * its one socket of pe_nsockets. */
	void			(*pe_join)(struct private *pv, int fd,
		    const struct announcement *an, const struct frame *f, const char *endpoint);
	/* loop thread: a socket was given back while stopping */
	void			(*pe_drained)(struct private *pv);
};

/* NULL: out of memory. */
struct private_pool *private_pool_new(const struct private_pool_env *env);
/* Main thread, with the loop (before the side thread runs). */
void	private_pool_start(struct private_pool *pp, struct loop *loop);
/* Side thread: proxy accepted an announcement pass; keep its pool full. */
void	private_pool_announced(struct private_pool *pp, const char *proxy);
/* Loop thread, at SIGTERM: close every pooled connection not joined. */
void	private_pool_drain(struct private_pool *pp);
/* Main thread, the side thread joined: free the keepers. */
void	private_pool_side_stopped(struct private_pool *pp);
/* Main thread, the loop gone: free the rest. */
void	private_pool_free(struct private_pool *pp);

#endif
