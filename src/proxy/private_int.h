/* private_int.h - the private proxy's shared state (SPEC section 5), for its
 * files only:
 *   private.c            start and stop (the skeleton's hooks, proxy.h): the
 *                        static announcements, the addresses resolved at start
 *   private_announcer.c  side thread: the announcer, one machine per public
 *                        proxy (struct target)
 *   private_dial.c       loop thread: the dial job, one per handed-over
 *                        connection (struct dial)
 *   private_rpc.c        side thread: incomingConnection and the other
 *                        JSON-RPC methods
 *
 * Threads: the main thread runs the io_uring loop and owns the dial jobs
 * and the relays; the side thread (control.h) runs the JSON-RPC server,
 * the methods and the announcer.  They talk only through loop_post /
 * side_post, the announcement table (which has its own lock) and two
 * atomics (pv_stopping, pv_nsockets).  Each member below says which thread
 * owns it.
 */
#ifndef HP_PRIVATE_INT_H
#define HP_PRIVATE_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "announce.h"
#include "control.h"
#include "loop.h"
#include "proxy.h"
#include "token.h"

struct announce_table;
struct datastore;
struct event;
struct jsonrpc_call;
struct proxy_conf;
struct relay;

#define PRIVATE_BACKOFF_MIN	1.0	/* seconds, first retry of a failed pass */
#define PRIVATE_BACKOFF_MAX	30.0	/* after a pass has been accepted once */
#define PRIVATE_BACKOFF_START	2.0	/* cap until the first accepted pass */
#define PRIVATE_FORCED_MS	2000	/* closed relays get this long to report at a stop */

/* One data endpoint of a public proxy, as named in the settings and as
 * resolved at start. */
struct data_endpoint {
	const char		*ep_name;	/* "host:port", owned by the settings */
	struct sockaddr_storage	 ep_sa;
	socklen_t		 ep_salen;
};

/* The data endpoints of one public proxy; read-only once the side thread runs. */
struct public_peer {
	const char		*pb_name;	/* NULL: every public proxy not listed */
	struct data_endpoint	*pb_eps;
	int			 pb_neps;
};

/*
 * The announcer's machine for one public proxy (private_announcer.c, side
 * thread).  A pass is one announceConnections call with every unexpired
 * announcement to that proxy.
 *
 *   (new) ──kick──> CALLING ──accepted──> IDLE ──timer, kick──> CALLING
 *                     │  ^                  │
 *        announcements│  │accepted          └─a withdrawal to it failed──> FAILING
 *        changed      v  │(a pass at once)
 *                   CALLING_AGAIN
 *
 *   CALLING, CALLING_AGAIN ──error reply──> FAILING ──timer (tg_backoff)──> CALLING
 *   FAILING ──any call to that proxy answered (a withdrawal)──> CALLING at once
 *
 *   IDLE           the proxy accepted the last pass; the timer is armed for
 *                  announce_interval.
 *   FAILING        the last call to the proxy failed: the timer is armed for
 *                  tg_backoff (1 s doubling to 30 s; 2 s at most until a first
 *                  pass has been accepted, so a chain started in any order
 *                  comes up quickly), or for announce_interval when it was a
 *                  withdrawal; a call that succeeds (the proxy may have been
 *                  restarted) starts a pass at once.
 *   CALLING        announceConnections in flight.
 *   CALLING_AGAIN  in flight, and the announcements changed meanwhile: a new
 *                  pass as soon as it is accepted.
 * A pass with nothing to announce leaves the state as it was and looks
 * again after announce_interval.
 */
enum target_state {
	TG_IDLE,		/* accepted; next pass at announce_interval */
	TG_FAILING,		/* last call failed; retry after tg_backoff */
	TG_CALLING,		/* a pass in flight */
	TG_CALLING_AGAIN,	/* in flight, repeat it once it is accepted */
};

struct target {
	TAILQ_ENTRY(target)	 tg_entry;
	struct private		*tg_pv;
	enum target_state	 tg_state;
	char			 tg_proxy[ANNOUNCE_NAME_MAX];
	struct event		*tg_timer;
	int			 tg_accepted;	/* a pass was accepted once (history,
						 * not state: it caps the backoff) */
	double			 tg_backoff;	/* the last retry delay; 0: none */
};

/*
 * A dial job (private_dial.c, loop thread), one per incomingConnection:
 * two ends, the public proxy's data endpoint and the internal server,
 * connected in parallel, each within connect_timeout.
 *
 *   (posted) ──> CONNECTING ──both ends connected──> JOINED ──relay report──> (freed)
 *                   │
 *                   └─an end failed, or a forced stop ──> FAILING ──no connect in flight──> (freed)
 *
 *   CONNECTING  both connects in flight or done.  The public end writes the
 *               token as soon as it is connected; the internal end, when the
 *               announcement has proxy_protocol, its PROXY header.
 *   FAILING     no join.  The internal end failed: the public end still
 *               connects and sends its token, then closes, so the public
 *               proxy drops the client at once instead of after
 *               accept_timeout.  The public end failed: the internal end is
 *               cancelled or closed.  Freed when no connect is in flight.
 *   JOINED      relay_join owns both sockets; its report logs the summary
 *               line and frees the job.
 *
 * Each end: CONNECTING -> CONNECTED | FAILED (refused, timed out,
 * cancelled; its socket closed).
 */
enum dial_state {
	DIAL_CONNECTING,	/* connects in flight */
	DIAL_FAILING,		/* an end failed: waiting for the other, then freed */
	DIAL_JOINED,		/* the relay owns both sockets */
};

enum dial_end_state {
	DN_CONNECTING,		/* loop_connect in flight */
	DN_CONNECTED,		/* connected (public: token written) */
	DN_FAILED,		/* refused, timed out, cancelled; fd closed */
};

struct dial_end {
	struct loop_op		 dn_op;
	int			 dn_fd;
	enum dial_end_state	 dn_state;
	struct sockaddr_storage	 dn_sa;
	socklen_t		 dn_salen;
};

struct dial {
	TAILQ_ENTRY(dial)	 dl_entry;	/* pv_dials until joined */
	struct private		*dl_pv;
	enum dial_state		 dl_state;
	int			 dl_err;	/* errno of the first failure, 0: none */
	struct dial_end	 dl_pub;	/* the public proxy's data endpoint */
	struct dial_end	 dl_int;	/* the internal server */
	int			 dl_pooled;	/* issue #16: dl_pub came from the pool */
	uint8_t			 dl_token[TOKEN_LEN];
	size_t			 dl_pplen;	/* 0: proxy_protocol off */
	char			 dl_domain[ANNOUNCE_DOMAIN_MAX];
	char			 dl_operator[ANNOUNCE_NAME_MAX];	/* of the announcement */
	struct sockaddr_storage	 dl_client;	/* as the public proxy told it;
						 * AF_UNSPEC: not told */
	uint64_t		 dl_start_ms;	/* posted, loop clock */
	char			 dl_endpoint[64];
	uint8_t			 dl_pp[];	/* dl_pplen bytes: the PROXY header,
						 * first to the internal server */
};

struct private {
	struct proxy_conf	*pv_conf;
	struct proxy		 pv_px;		/* the skeleton (state, signals) */
	struct announce_table	*pv_table;
	struct datastore	*pv_store;	/* memory only without a filename; side thread */
	struct control		 pv_ctl;
	atomic_int		 pv_stopping;
	struct public_peer	*pv_publics;	/* settings, then the default last */
	int			 pv_npublics;
	struct sockaddr_storage	 pv_int_sa;	/* the internal server, resolved at start */
	socklen_t		 pv_int_salen;
	atomic_long		 pv_nsockets;	/* reserved by the side thread, freed by the loop */

	/* side thread */
	TAILQ_HEAD(, target)	 pv_targets;

	/* loop thread */
	struct loop		*pv_loop;
	struct relay		*pv_relay;
	TAILQ_HEAD(, dial)	 pv_dials;

	struct private_pool	*pv_pool;	/* issue #16: private_pool.h */
	char			 pv_instance[PROXY_INSTANCE_ID_MAX + 1];	/* issue #12: set at
						 * open, "instance" of each announcement call */
};

/* private.c */
struct static_announcement;
/* One static announcement of the settings into a (operator: this proxy);
 * -1, logged, when it cannot be served (proxy is this proxy's own name). */
int	private_static_make(struct private *pv, const struct static_announcement *sa,
	    struct announcement *a);

/* private_announcer.c (side thread) */
/* First closure on the side thread: one target per proxy, announce all. */
void	private_announce_start(void *arg);
/* The announcements to proxy changed: a pass now, or as soon as the one in
 * flight is accepted. */
void	private_target_kick(struct private *pv, const char *proxy);
/* Tell proxy that domain is withdrawn (withdrawConnections); its answer
 * feeds the target's machine. */
void	private_withdraw_send(struct private *pv, const char *proxy, const char *domain);
/* reload.h's rr_announcements (side thread): the static announcements of
 * the settings changed from o to n.  Added or changed ones go into the table
 * and are announced at once; removed ones leave the table (and the
 * datastore) and are withdrawn from their public proxy. */
void	private_static_reload(void *arg, const struct proxy_conf *o,
	    const struct proxy_conf *n);
/* The side thread is joined: free the targets and their timers. */
void	private_targets_free(struct private *pv);

/* private_dial.c (loop thread, except dial_new) */
/* A job for one handed-over connection, not started (any thread); client
 * is the client's address (NULL: unknown), pp the PROXY header (pplen 0:
 * none).  NULL: out of memory. */
struct dial *dial_new(struct private *pv, const uint8_t token[TOKEN_LEN], const char *domain,
	    const char *operator, const struct sockaddr_storage *client,
	    const struct data_endpoint *de, const uint8_t *pp, size_t pplen);
/* loop_post()ed by the side thread: start both connects.  The two sockets
 * were reserved in pv_nsockets; the job releases them. */
void	dial_start(void *arg);
/* Forced stop (shutdown_timeout over): cancel every connect in flight (the
 * jobs then free themselves).  A plain stop lets them finish and join. */
void	private_dials_cancel(struct private *pv);
/* issue #16 (private_pool.h, pe_join; loop thread): pooled connection fd
 * read its start frame f for announcement an: dial the internal server and
 * join, as a dial-back does.  fd and one socket of pv_nsockets are ours. */
struct frame;
void	private_pool_join(struct private *pv, int fd, const struct announcement *an,
	    const struct frame *f, const char *endpoint);

/* private_rpc.c (side thread) */
void	private_rpc(void *arg, struct jsonrpc_call *call);
/* issue #16 (private_pool.h, pe_endpoint; side thread): the address of
 * data endpoint `endpoint` of public proxy `proxy`, or NULL. */
const struct sockaddr_storage *private_pool_endpoint(struct private *pv, const char *proxy,
	    const char *endpoint, socklen_t *len);

#endif
