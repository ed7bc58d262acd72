/* public_int.h - the public proxy's shared state (SPEC section 4), for its
 * files only:
 *   public.c         start and stop (the skeleton's hooks, proxy.h), socket
 *                    accounting and admission (public_admit)
 *   public_client.c  loop thread: the client hello/park machine
 *   public_data.c    loop thread: the data-connection token machine
 *   public_side.c    side thread: incomingConnection, the JSON-RPC methods,
 *                    their commits, the allowed_domains re-checks, sweeps
 *   public_pool.c    loop thread: the warm pool of ticketed data connections
 *   public_tickets.c side thread: requestConnectionTickets, getConnectionPools
 *   public_handover.c loop thread: the link to the other instance of a
 *                    hand-over (reuse_port), data connections passed over it
 *
 * Threads: the main thread runs the io_uring loop and owns every socket,
 * the token table and the rate limiters; the side thread (control.h) runs
 * the JSON-RPC server and calls incomingConnection through the own Hyper.
 * They talk only through loop_post / side_post and the announcement table
 * (which has its own lock).  Each member below says which thread owns it.
 */
#ifndef HP_PUBLIC_INT_H
#define HP_PUBLIC_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "announce.h"
#include "control.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "sni.h"
#include "token.h"

struct datastore;
struct directory;
struct directory_watch;
struct event;
struct json_object;
struct jsonrpc_call;
struct proxy_conf;
struct ratelimit;
struct relay;
struct relay_report;
struct srccap;
struct srccap_entry;
struct public_pool;
struct ticket_book;

/* TLS alert descriptions (RFC 8446 6.2). */
#define ALERT_DECODE_ERROR       50
#define ALERT_INTERNAL_ERROR     80
#define ALERT_UNRECOGNIZED_NAME  112

/* Item error: over max_announcements_per_operator. */
#define PUBLIC_ERR_TOO_MANY      429
/* Call error: the redis datastore is down or slow; nothing was stored. */
#define PUBLIC_ERR_UNAVAILABLE   503

/* Descriptors kept out of max_connections (listeners, ring, RPC, logs). */
#define PUBLIC_FD_RESERVE        64

/* Retries of incomingConnection: the first after PUBLIC_RETRY_FIRST_MS,
 * doubling, each step one timer list, capped by incoming_retry_backoff. */
#define PUBLIC_RETRY_FIRST_MS    100
#define PUBLIC_RETRY_STEPS       10

/*
 * A client connection (public_client.c):
 *
 *   accept ──> HELLO ──SNI announced, token parked──> PARKED ──token claimed, or a pooled──> JOINED ──relay report──> (freed)
 *                │                                      │  ^    connection taken
 *                │                                      │  └─transient failure: retried
 *                └─no/bad SNI, garbage, hello_timeout,  └─accept_timeout, incomingConnection
 *                  peer closed, forced stop ──> CLOSING    refused, forced stop ──> CLOSING ──> (freed)
 *
 *   HELLO    a one-shot POLLIN waits for bytes, then the stream's prefix is
 *            peeked (MSG_PEEK: the bytes stay in the socket and later travel
 *            with the stream) and the new bytes are parsed.  Incomplete: the
 *            socket's SO_RCVLOWAT is raised to the end of the current TLS
 *            record, so the wake-ups are bounded by the number of records.
 *            Bounded by hello_timeout and hello_max_bytes.  On p_hello_timers.
 *   PARKED   in the token table under a fresh token; the side thread calls
 *            <operator>.incomingConnection.  On p_park_timers: it fails only
 *            at accept_timeout or on a definite refusal (403, 404, -32602,
 *            the name no longer announced).  A transient failure (502, 503,
 *            504: a Hyper or the private proxy unreachable or stopping, a
 *            timeout) is tried again with the same token after 0.1 s,
 *            doubling up to incoming_retry_backoff (c_retry on
 *            p_retry_timers[c_tries - 1]).  When its operator's pool is only
 *            empty for the moment (public_pool_expects), the first try
 *            waits up to pool_wait for a replacement (c_retry on
 *            p_pool_wait_timers, c_tries 0);
 *            a late dial-back of an earlier try still finds the token.  A
 *            pooled connection of its operator that arrives meanwhile takes
 *            it at once (public_pool.c).
 *   A stop (public_drain) keeps HELLO and PARKED clients: they are joined or
 *   time out as usual; the data listener and the pool stay open while any
 *   of them is left (public_admit).  A forced stop (shutdown_timeout over)
 *   closes them.
 *   JOINED   the relay owns both sockets (c_fd is -1); its report ends it
 *            with the summary line.
 *   CLOSING  closed (alert sent when due, line logged); waits for the final
 *            completion of its poll when one is in flight, then freed.
 */
enum pconn_state { PC_HELLO, PC_PARKED, PC_JOINED, PC_CLOSING };

struct public;

struct pconn {
	struct public           *c_pub;
	TAILQ_ENTRY(pconn)       c_entry;       /* p_pconns, until freed */
	enum pconn_state         c_state;
	int                      c_fd;
	int                      c_lowat;        /* SO_RCVLOWAT was raised */
	unsigned                 c_wakeups;      /* polls that woke the hello reader */
	size_t                   c_peeked;       /* bytes copied by MSG_PEEK in all */
	int                      c_peekoff;      /* SO_PEEK_OFF works: peek only new bytes */
	struct sni_reader       *c_reader;       /* HELLO only, then freed */
	struct loop_op           c_poll;
	struct loop_timer        c_timer;       /* hello, then accept timeout */
	struct sockaddr_storage  c_peer;
	struct srccap_entry     *c_source;      /* counted toward its source's cap */
	uint64_t                 c_start_ms;
	uint8_t                  c_token[TOKEN_LEN];
	struct loop_timer        c_retry;       /* PARKED: the next try of incomingConnection */
	struct incoming         *c_incoming;     /* its call, kept while c_retry is armed */
	unsigned                 c_tries;        /* tries of incomingConnection that failed */
	const char              *c_via;          /* joined: "pool" or "dial" */
	char                     c_sni[SNI_NAME_MAX];
	char                     c_operator[ANNOUNCE_NAME_MAX];
};

/*
 * A data connection from a private proxy (public_data.c):
 *
 *   accept ──admitted──> TOKEN ──TOKEN_LEN bytes, token claimed──> (joined to its client, freed)
 *                          │
 *                          └─unknown token, EOF, error, token_timeout, shutdown ──> CLOSING ──> (freed)
 *
 *   TOKEN    reads exactly TOKEN_LEN bytes within token_timeout, across as
 *            many reads as it takes (not one byte of the relayed stream is
 *            consumed).  Unauthenticated: its own budget
 *            (max_data_connections, plus one per parked client) and rate
 *            limit (data_rate_limits), not counted in max_connections; its
 *            refusals and failures are logged through a log_limit.  32 bytes
 *            that are neither a token nor a ticket here are passed to the
 *            other instance of a hand-over when one is linked
 *            (public_handover.c); one that came from there starts here with
 *            its bytes read and is never passed back.
 *   CLOSING  waits for the final completion of its recv, then freed.
 */
enum dconn_state { DC_TOKEN, DC_CLOSING };

struct dconn {
	struct public           *dc_pub;
	TAILQ_ENTRY(dconn)       dc_entry;       /* p_dconns, until freed */
	enum dconn_state         dc_state;
	int                      dc_fd;
	struct sockaddr_storage  dc_peer;
	struct loop_op           dc_recv;
	struct loop_timer        dc_timer;
	size_t                   dc_got;
	int                      dc_adopted;     /* came over the hand-over link */
	uint8_t                  dc_token[TOKEN_LEN];
};

/* A call to incomingConnection in flight on the side thread. */
struct incoming {
	struct public           *in_pub;
	int                      in_transient;   /* failed with 502/503/504: worth another try */
	uint8_t                  in_token[TOKEN_LEN];
	char                     in_sni[SNI_NAME_MAX];
	char                     in_operator[ANNOUNCE_NAME_MAX];
	int                      in_have_addrs;  /* in_peer and in_local known */
	struct sockaddr_storage  in_peer;        /* the client */
	struct sockaddr_storage  in_local;       /* the address it connected to */
};

/*
 * Announcement calls on the side thread.  A call's changes are staged and
 * written as one batch (one write, one fdatasync) by the datastore's own
 * thread, so the side thread goes on placing incomingConnection calls
 * meanwhile; the call is answered when its batch is durable.  Calls that
 * arrive while a batch is in flight wait in p_waiting and run in order
 * after it, so each call sees the table as the previous ones left it.
 */
struct commit {
	struct public           *cm_pub;
	struct jsonrpc_call     *cm_call;
	int                      cm_announce;    /* else a withdrawal */
	struct json_object      *cm_conns;       /* announce: the items (borrowed from the call) */
	struct json_object      *cm_result;      /* announce: one entry per item */
	int                     *cm_staged;      /* announce: item i staged: 1 + its
						  * op in the batch, -1 nothing to
						  * write, 0 not staged */
	int                      cm_n;
	int                      cm_removed;     /* withdrawal: entries withdrawn */
	char                     cm_caller[ANNOUNCE_NAME_MAX];
};

struct rpc_wait {
	TAILQ_ENTRY(rpc_wait)    w_entry;
	struct jsonrpc_call     *w_call;
};

/*
 * Events of public_admit(): every change of the sockets held goes through
 * it, and it decides the listeners' pauses.
 */
enum public_event {
	PE_CLIENT_ACCEPTED,     /* a client socket is held */
	PE_CLIENT_PARKED,       /* its token is parked: one more data connection due */
	PE_CLIENT_CLOSED,       /* a client socket not joined is closed */
	PE_DATA_ACCEPTED,       /* a data socket waits for its token */
	PE_DATA_CLOSED,         /* one closed before joining */
	PE_PAIR_JOINED,         /* a data socket joined its (unparked) client */
	PE_PAIR_CLOSED,         /* the relay released both sockets of a pair */
	PE_LISTENER_CLOSED,     /* at a stop: the kernel let go of a listener */
	PE_POOL_ADDED,          /* a data socket's ticket redeemed: pooled, idle */
	PE_POOL_CLOSED,         /* a pooled socket closed unused */
	PE_POOL_JOINED,         /* a pooled socket joined a client */
};

/*
 * The hand-over link (public_handover.c): with reuse_port, the one unix
 * connection to the other instance on the same ports, over which a data
 * connection whose token or ticket is not ours is passed on.
 */
struct handover {
	int                      ho_on;          /* reuse_port and a handover_socket */
	int                      ho_listen_fd;   /* we hold the name: listening; -1 */
	int                      ho_fd;          /* the link; -1 */
	int                      ho_closed;      /* torn down: callbacks do nothing */
	pid_t                    ho_peer_pid;
	unsigned long            ho_sent, ho_received;
	struct loop_op           ho_listen_op, ho_link_op, ho_retry_op;
};

struct public {
	struct proxy_conf       *p_conf;
	struct proxy             p_px;           /* the skeleton (state, signals) */
	struct loop             *p_loop;
	struct relay            *p_relay;
	struct control           p_ctl;
	struct announce_table   *p_announce;
	/* parked: hand the call to the side thread (public_incoming_post) */
	void                   (*p_on_parked)(struct public *, struct incoming *);
	/* side thread */
	struct datastore        *p_store;        /* memory only without a filename */
	struct event            *p_sweep;        /* drops expired announcements */
	struct event            *p_dirpoll;      /* directory poll, when configured */
	struct directory_watch  *p_watch;        /* directory (NULL: none) */
	struct commit           *p_commit;       /* the call whose batch is being written */
	TAILQ_HEAD(, rpc_wait)   p_waiting;      /* calls arrived meanwhile, in order */
	/* loop thread */
	struct token_table      *p_tokens;
	struct ratelimit        *p_limits;
	struct srccap           *p_sources;      /* max_connections_per_source */
	double                   p_cap_logged;   /* last "per source" line */
	struct ratelimit        *p_data_limits;  /* data_rate_limits */
	struct loop_listener     p_tls_listener, p_data_listener;
	struct loop_timer_list   p_hello_timers, p_park_timers, p_token_timers;
	struct loop_timer_list   p_retry_timers[PUBLIC_RETRY_STEPS];
	struct loop_timer_list   p_pool_wait_timers;     /* pool_wait: the first try's wait */
	int                      p_data_closing; /* stopping: data listener and pool closed */
	int                      p_data_close_posted;    /* public_data_close_posted queued */
	long                     p_nconns;       /* client + joined data sockets held */
	long                     p_ndata;        /* data sockets waiting for a token */
	long                     p_npooled;      /* pooled data sockets, idle */
	struct ticket_book      *p_tickets;      /* shared with the side thread (own lock) */
	char                     p_instance[PROXY_INSTANCE_ID_MAX + 1]; /* issue #12; set at open */
	struct public_pool      *p_pool;         /* loop thread: the idle pooled connections */
	int                      p_nlisteners;   /* not yet closed by the kernel */
	struct log_limit         p_log_dfull, p_log_drate, p_log_dtoken, p_log_dclose;
	struct log_limit         p_log_retry;    /* side thread: transient failures */
	int                      p_tls_paused, p_data_paused;
	double                   p_full_logged;  /* last "max_connections" line */
	unsigned char           *p_peekbuf;      /* hello_max_bytes */
	TAILQ_HEAD(, pconn)      p_pconns;       /* every client until freed */
	TAILQ_HEAD(, dconn)      p_dconns;       /* every data connection until joined or freed */
	int                      p_tls_fd, p_data_fd;    /* bound, not yet listening */
	struct handover          p_handover;     /* loop thread */
};

/* public.c */
void	public_admit(struct public *p, enum public_event ev);
void	public_unmap(struct sockaddr_storage *ss);
/* The loop-thread state (tables, limits, timer lists) for p_conf, p_loop
 * and p_relay; -1 out of memory.  public_loop_free() undoes it. */
int	public_loop_init(struct public *p);
void	public_loop_free(struct public *p);

/* public_client.c (loop thread) */
void	public_tls_accept(struct loop_listener *l, int fd);
void	pconn_hello_expired(struct loop_timer *t, void *arg);
void	pconn_park_expired(struct loop_timer *t, void *arg);
/* With p_loop set: the timer lists of the retries (incoming_retry_backoff). */
void	pconn_retry_timers_init(struct public *p);
/* The parked client c is claimed by its data connection: JOINED (the
 * caller hands both sockets to the relay next). */
void	pconn_joined(struct pconn *c);
/* c leaves PARKED for a pooled connection: its token, timers and pending
 * retry go (the caller makes it JOINED). */
void	pconn_unpark(struct pconn *c);
/* A client that took a pooled connection counts as joined (pconn_unpark
 * has taken it off the parked gauge when it was parked). */
void	pconn_count_pooled(void);
/* incomingConnection failed (posted by the side thread): a client still
 * parked is tried again (in_transient) or closed. */
void	incoming_failed(void *arg);
void	public_relay_done(const struct relay_report *rep, void *arg);
/* Forced stop: close every client not joined (HELLO, PARKED), from p_pconns. */
void	public_clients_drain(struct public *p);
/* Stopping: 1 while a client may still need a data connection (HELLO or
 * PARKED). */
int	public_clients_waiting(struct public *p);
/* The loop is gone: free what is left, closing its socket. */
void	public_clients_free(struct public *p);

/* public_data.c (loop thread) */
void	public_data_accept(struct loop_listener *l, int fd);
void	dconn_token_expired(struct loop_timer *t, void *arg);
void	public_data_drain(struct public *p);
void	public_data_free(struct public *p);
/* A data connection passed over the hand-over link with the 32 bytes the
 * other instance read from it: joined, pooled or closed here, never passed
 * back.  Takes fd. */
void	public_data_adopt(struct public *p, int fd, const struct sockaddr_storage *peer,
	    const uint8_t token[TOKEN_LEN]);

/* public_handover.c (loop thread; public_handover_bind on the main thread
 * before the loop runs) */
/* With reuse_port: hold the handover_socket name, or link to its holder. */
void	public_handover_bind(struct public *p);
/* The loop runs: wait for a successor, the link's messages, or retry. */
void	public_handover_start(struct public *p);
/* Pass fd (its 32 bytes read) to the other instance: 0 and fd is closed
 * here; -1 (no link, or the link is full) and fd is still the caller's. */
int	public_handover_forward(struct public *p, int fd, const struct sockaddr_storage *peer,
	    const uint8_t token[TOKEN_LEN]);
/* 1 while linked to another instance. */
int	public_handover_linked(const struct public *p);
/* The loop is gone: close the link and the name. */
void	public_handover_close(struct public *p);

/* public_pool.c (loop thread, except public_pool_init: main, before the
 * side thread runs) */
/* The ticket book and the pool; -1 out of memory. */
int	public_pool_init(struct public *p);
/* With p_loop set: the idle-lifetime timers. */
void	public_pool_start(struct public *p);
/* A data connection wrote 32 bytes that are no token: a valid ticket,
 * issued or minted, makes it a pooled connection (0: the pool owns fd now).
 * -1: no ticket either; -2: a ticket refused (used, expired, bad MAC,
 * replayed, over the cap...); -3: not redeemed because the proxy is
 * stopping with no client waiting.  why: the words for the log line. */
int	public_pool_redeem(struct public *p, int fd, const struct sockaddr_storage *peer,
	    const uint8_t ticket[TOKEN_LEN], char *why, size_t whylen);
/* A client of an announced name (c_operator set, HELLO or PARKED): join it to an
 * idle pooled connection of its operator after writing the start frame.
 * 0: joined (the relay owns the client now); -1: none usable, go on with
 * incomingConnection. */
int	public_pool_take(struct public *p, struct pconn *c);
/* 1 when operator op runs a pool whose replacements are on their way: it
 * redeemed a ticket within pool_idle_lifetime (its private proxy keeps a
 * pool here), so a client that found it empty waits pool_wait for one. */
int	public_pool_expects(struct public *p, const char *op);
/* Stop: close every idle pooled connection. */
void	public_pool_drain(struct public *p);
/* The loop is gone: free what is left. */
void	public_pool_free(struct public *p);

/* public_tickets.c (side thread): the pool's methods, 1 when method was one. */
/* A line another instance shared through the datastore: its minting key
 * (datastore_share_fn, side thread). */
void	public_key_shared(void *arg, const char *line);
int	public_tickets_rpc(struct public *p, struct jsonrpc_call *call, const char *method,
	    const char *caller, struct json_object *params);

/* public_side.c (side thread) */
void	public_incoming_post(struct public *p, struct incoming *in);
void	public_rpc(void *arg, struct jsonrpc_call *call);
void	public_side_timers(void *arg);
int	public_recheck_directory(struct public *p, struct directory *dir, const char *why);
/* The side thread is joined: free its timers, pending calls, datastore. */
void	public_side_free(struct public *p);

#endif
