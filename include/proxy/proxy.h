/* proxy.h - the skeleton both proxy roles run on, and the two roles.
 *
 * proxy_run() owns what the roles share: the start-up order, one signalfd
 * read through the io_uring loop, the two-phase drain and the stop order
 * side_stop -> the role's side-thread objects -> control_stop.  A role
 * plugs in through struct proxy_hooks and keeps its own state behind
 * px_role.
 *
 * Life cycle (enum proxy_state):
 *
 *   RUNNING ──SIGINT/SIGTERM──> DRAINING ──shutdown_timeout──> FORCED ──ph_forced_ms──> STOPPED
 *      │                           │  held 0                     │  held 0                  ^
 *      │                           └─────────────────────────────┴──────────────────────────┤
 *      │                           └──second SIGINT/SIGTERM (also in FORCED)────────────────┤
 *      └──loop failure─────────────────────────────────────────────────────────────────────┘
 *   SIGHUP in any state: proxy_on_reload(), the process goes on.
 *
 *   DRAINING  ph_drain() has stopped accepting new work; what was accepted
 *             before (relays, and what a role lets finish: parked clients,
 *             dial-backs in flight) may finish for shutdown_timeout.
 *   FORCED    ph_force() and relay_close_all(): the reports bring ph_held() to 0;
 *             ph_forced_ms bounds the wait (public 1000 ms, private 2000 ms,
 *             as before the skeleton).
 */
#ifndef HP_PROXY_H
#define HP_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

struct control;
struct proxy;
struct proxy_conf;
struct relay;

enum proxy_state {
	PS_RUNNING,		/* serving */
	PS_DRAINING,		/* first signal: relays may finish */
	PS_FORCED,		/* shutdown_timeout over: relays closed */
	PS_STOPPED,		/* leaving: second signal, drained, or failure */
};

/*
 * Called in this order, each from the main thread; every hook gets the
 * proxy (px->px_role is the role's state).  NULL hooks are skipped.
 *   ph_bind          after the settings loaded: bind every port, the JSON-RPC
 *                    server too (control_bind); -1 + err: exit 1
 *   ph_open          tables, datastore; -1 (logged by the role): exit 1
 *   ph_start         the loop and the relay exist (px_loop, px_relay): timer
 *                    lists, listeners
 *   ph_started       the side thread runs: post its first work, log "ready"
 *   ph_drain         first signal: stop accepting, drop what cannot finish
 *   ph_force         shutdown_timeout over: end what ph_drain let finish and
 *                    is not relaying (the relays are closed right after)
 *   ph_held          sockets (and listeners) still held; the drain ends at 0
 *   ph_side_stopped  the side thread is joined, control_stop comes next: free
 *                    what lives on the side thread
 *   ph_free          the loop is gone: free the rest (no callbacks any more)
 */
struct proxy_hooks {
	int	(*ph_bind)(struct proxy *px, char *err, size_t errlen);
	int	(*ph_open)(struct proxy *px);
	void	(*ph_start)(struct proxy *px);
	void	(*ph_started)(struct proxy *px);
	void	(*ph_drain)(struct proxy *px);
	void	(*ph_force)(struct proxy *px);
	long	(*ph_held)(struct proxy *px);
	void	(*ph_side_stopped)(struct proxy *px);
	void	(*ph_free)(struct proxy *px);
	unsigned ph_forced_ms;		/* FORCED lasts at most this long */
	int	 ph_side_first;		/* stop the side thread before the drain */
};

struct proxy {
	struct proxy_conf	*px_conf;
	const struct proxy_hooks *px_hooks;
	void			*px_role;
	struct control		*px_ctl;	/* the role's control plane */
	struct loop		*px_loop;
	struct relay		*px_relay;
	enum proxy_state	 px_state;
	int			 px_side_stopped;
	int			 px_sigfd;
	struct loop_op		 px_sigop;
	struct loop_op		 px_drainop;
};

/* Run a role until it is stopped.  Returns the exit status: 0 on a clean
 * stop, 1 on a runtime failure (a port that cannot be bound, ...), 2 on a
 * settings error. */
int	 proxy_run(struct proxy *px, struct proxy_conf *pc, struct control *ctl,
	     const struct proxy_hooks *h, void *role);
/* A socket was released: while draining, stop once ph_held() is 0. */
void	 proxy_drained(struct proxy *px);
/* SIGHUP: reload_request() (reload.h); the process goes on either way. */
void	 proxy_on_reload(struct proxy *px);

/* The one per-connection summary line of both roles, key=value:
 * "<kind> <peer> sni=S operator=O via=V [endpoint=E] duration=1.234s bytes_in=N bytes_out=N end=WHY"
 * (peer masked as addr_str_masked() does, "-" when unknown; NULL or empty
 * strings as "-"; via: pool or dial, how the pair was joined, "-" when it
 * was not; endpoint= only when ps_endpoint is set).  The public proxy logs
 * "client <client> ..."; the private proxy the same client, as the public
 * proxy told it (incomingConnection or the start frame), and endpoint= the
 * public proxy's data endpoint it used.  bytes_in went towards the backend,
 * bytes_out came back. */
struct proxy_summary {
	const char		*ps_kind;	/* "client" */
	const struct sockaddr	*ps_peer;	/* NULL or AF_UNSPEC: unknown */
	const char		*ps_sni;
	const char		*ps_operator;	/* the announcement's operator */
	const char		*ps_via;	/* "pool", "dial" or NULL (not joined) */
	const struct sockaddr	*ps_endpoint;	/* private: the data endpoint, or NULL */
	double			 ps_duration;	/* seconds */
	uint64_t		 ps_bytes_in;
	uint64_t		 ps_bytes_out;
	const char		*ps_end;
};
void	 proxy_log_summary(const struct proxy_summary *s);

/* Return the process exit status (see proxy_run). */
int	 public_run(struct proxy_conf *pc);
int	 private_run(struct proxy_conf *pc);

#endif
