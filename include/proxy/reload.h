/* reload.h - a proxy re-reads PROXY_SETTINGS without a restart (SIGHUP).
 *
 * reload_request() is called from the loop thread (the signal skeleton's
 * proxy_on_reload() hook); the work runs on the side thread:
 *   1. load and check the whole file (proxy_conf_load) into a new copy;
 *   2. compare it with the settings in use: a key bound to a socket or read
 *      only at start (listen addresses, buffers, datastore, ...) refuses the
 *      reload with the key named;
 *   3. build the new TLS contexts (control_reload);
 *   4. apply: side-thread values now (admin_group, announcement limits,
 *      announce_interval, JSON-RPC client timeouts, and through the role's
 *      rr_announcements hook the private proxy's static announcements),
 *      loop-thread values (hello/accept/token/connect/shutdown timeouts,
 *      rate limits) in a closure posted to the loop.
 * Any failure in 1-3 keeps the old settings and logs
 * "reload failed, keeping the old settings: FILE: KEY: REASON"; success logs
 * "reloaded settings: " and what changed.  New settings apply to connections
 * made from now on; live ones keep theirs.  Requests closer together than
 * reload_interval (a setting, reloaded too) coalesce into one reload.
 *
 * One reload state per process (a proxy runs one role).  The role passes
 * the pieces the loop-thread apply needs (NULL where it has none). */
#ifndef HP_RELOAD_H
#define HP_RELOAD_H

struct control;
struct loop;
struct loop_timer_list;
struct proxy_conf;
struct ratelimit;

/* Default of the setting reload_interval (proxies and Hyper servers):
 * seconds between two reloads; the SIGHUPs in between coalesce. */
#define RELOAD_INTERVAL_DEFAULT	0.5

struct reload_role {
	struct loop_timer_list	*rr_hello_timers;	/* hello_timeout */
	struct loop_timer_list	*rr_park_timers;	/* accept_timeout */
	struct loop_timer_list	*rr_token_timers;	/* token_timeout */
	struct ratelimit	**rr_limits;		/* tcp_rate_limits */
	struct ratelimit	**rr_data_limits;	/* data_rate_limits */
	/* Side thread, once a reload can no longer fail: the static
	 * announcements differ between o (as last applied) and n (as read
	 * now).  NULL: a change of `announcements` needs a restart. */
	void			(*rr_announcements)(void *arg, const struct proxy_conf *o,
				    const struct proxy_conf *n);
	void			*rr_arg;
};

/* Before control_run() (the side thread is not running yet).  pc is the
 * live settings the role reads; reload writes them on the thread that reads
 * each value.  Returns 0, or -1 (out of memory: reloading stays off). */
int  reload_init(struct control *ct, struct loop *loop, struct proxy_conf *pc,
	     const struct reload_role *role);
/* Loop thread (or any thread): schedule a reload.  No-op before
 * reload_init. */
void reload_request(void);

#endif
