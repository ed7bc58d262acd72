/* proxy_conf.h - settings of `proxy run public` and `proxy run private`
 * (SPEC sections 4 and 5), read strictly from PROXY_SETTINGS. */
#ifndef HP_PROXY_CONF_H
#define HP_PROXY_CONF_H

#include <stddef.h>

#include "tls.h"

enum proxy_role { PROXY_PUBLIC, PROXY_PRIVATE };

/* private.pool_size when the settings name none (issue #16; 0: off, every
 * connection brokered by incomingConnection). */
#define POOL_SIZE_DEFAULT		8

/* instance_id (issue #12).  Private: sent as "instance" with each
 * announceConnections and withdrawConnections, so that two private proxies
 * of one operator each hold their own announcements at the public proxy.
 * Public with a redis datastore: its heartbeat key.  Without the setting:
 * private, the host name (a restart replaces its own announcements);
 * public, "<host name>-<8 random hex digits>", new at each start. */
#define PROXY_INSTANCE_ID_MAX		64
#define PROXY_INSTANCE_ID_CHARS \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
/* public.instance_heartbeat: the key lives this many heartbeats */
#define PROXY_INSTANCE_LIVES		3

/* public.handover_socket: an abstract unix socket name, at most this long
 * (sun_path less its leading NUL). */
#define HANDOVER_NAME_MAX		107

struct rate_limit {
	double rl_window;      /* 1, 60 or 3600 seconds */
	long   rl_limit;       /* connections per window per source address */
};

/* The public proxy's data endpoint when the settings name none: the
 * default of its internal_endpoint (SPEC 4). */
#define PROXY_DATA_ENDPOINT_DEFAULT	"localhost:9999"

/* private.public_proxies[]: the only endpoints a public proxy's
 * incomingConnection may make this private proxy dial. */
struct public_proxy {
	char  *pp_name;
	char **pp_data_endpoints;      /* NULL-terminated, at least one */
	long   pp_pool_size;           /* pooled data connections; -1: the section's pool_size */
};

/* rate_limit_prefixes: aggregate buckets of wider prefixes, as multiples
 * of the per-source limits (0: none). */
struct rate_prefixes {
	long   rp_v4_24;
	long   rp_v6_56;
	long   rp_v6_48;
};

struct static_announcement {
	char  *sa_domain;
	char  *sa_proxy;
	double sa_expires_at;  /* 0: never */
	int    sa_proxy_protocol;      /* enum proxyproto_version to the internal server */
};

struct proxy_conf {
	enum proxy_role pc_role;
	char   *pc_name;

	/* public */
	char   *pc_tls_bind;           /* tls_bind_address */
	char   *pc_data_bind;          /* internal_bind_address */
	char   *pc_data_endpoint;      /* internal_endpoint (public: told to private proxies) */
	double  pc_hello_timeout;
	long    pc_hello_max_bytes;
	double  pc_accept_timeout;
	double  pc_token_timeout;
	long    pc_max_per_source;     /* max_connections_per_source, 0: no cap */
	struct rate_limit *pc_rate_limits;
	int     pc_nrate_limits;
	long    pc_max_announce_items;  /* items per announce/withdraw call */
	long    pc_max_per_operator;    /* max_announcements_per_operator */
	double  pc_sweep_interval;      /* announce_sweep_interval */
	char   *pc_admin_group;         /* may call adminWithdrawConnections */
	char  **pc_dir_paths;           /* directory.settings.path; NULL: none */
	double  pc_dir_poll;            /* directory.settings.poll_interval */
	struct rate_limit *pc_data_rate_limits;
	int     pc_ndata_rate_limits;
	struct rate_prefixes pc_rate_prefixes;
	long    pc_max_data_connections;       /* data connections waiting for a token */
	double  pc_ticket_lifetime;     /* an unused pool ticket (issue #16) */
	double  pc_ticket_key_lifetime; /* a minting key; 0: no keys handed out */
	long    pc_max_pooled;          /* tickets + pooled connections per operator */
	double  pc_pool_idle_lifetime;  /* a pooled connection unused this long is closed */
	double  pc_incoming_retry;      /* incoming_retry_backoff: longest wait between two
					 * tries of incomingConnection; 0: no retry */
	double  pc_pool_wait;           /* pool_wait: an empty pool's client waits this long
					 * for a replacement before incomingConnection */

	/* private */
	char   *pc_internal_address;   /* internal_endpoint.address */
	double  pc_connect_timeout;
	double  pc_announce_interval;
	struct static_announcement *pc_announcements;
	int     pc_nannouncements;
	struct public_proxy *pc_public_proxies;
	int     pc_npublic_proxies;
	long    pc_pool_size;           /* pooled data connections per public proxy; 0: off */
	char   *pc_instance_id;         /* issue #12; NULL: generated (proxy_instance_id) */
	double  pc_instance_heartbeat;  /* public, redis: seconds; lifetime 3 x */
	double  pc_instances_interval;  /* private: getInstances per pool; 0: never */
	long    pc_pool_batch;          /* tickets fetched per requestConnectionTickets */
	double  pc_frame_timeout;       /* token_timeout: a start frame, from its first byte */

	/* both */
	double  pc_idle_timeout;       /* 0: never */
	double  pc_stall_timeout;      /* 0: never */
	long    pc_relay_buffers;      /* COPY buffers shared by all pairs */
	long    pc_relay_buffer_size;
	double  pc_shutdown_timeout;   /* seconds joined pairs may drain at a stop */
	long    pc_max_connections;
	int     pc_max_connections_set;  /* given in the settings (not the default) */
	int     pc_max_data_connections_set;
	int     pc_reuse_port;         /* SO_REUSEPORT on every listener (hand-over) */
	char   *pc_handover_socket;    /* public, with reuse_port: abstract unix name of
	                                * the link between two instances (hand-over) */
	char   *pc_datastore_file;
	int     pc_datastore_redis;    /* datastore.type redis (public only) */
	char   *pc_redis_address;      /* datastore.settings.address */
	char   *pc_redis_prefix;       /* datastore.settings.key_prefix */
	char   *pc_redis_password;     /* datastore.settings.password; NULL: none */
	double  pc_redis_timeout;      /* datastore.settings.timeout */
	long    pc_splice_threshold;   /* bytes before a direction moves to splice; -1 never */
	long    pc_pipe_size;
	long    pc_max_pipes;
	char   *pc_log_level;
	char   *pc_metrics_bind;       /* metrics: host:port, NULL: off */
	double  pc_metrics_timeout;
	double  pc_reload_interval;    /* seconds between two reloads (side thread) */

	char   *pc_rpc_client_url;     /* jsonrpc_client.endpoint */
	struct tls_conf pc_rpc_client_tls;
	double  pc_rpc_connect_timeout;
	double  pc_rpc_timeout;
	char   *pc_rpc_server_bind;    /* jsonrpc_server.bind_address */
	char   *pc_rpc_server_path;
	struct tls_conf pc_rpc_server_tls;
};

/* Load PROXY_SETTINGS (pathlist) for role.  0, or -1 with "file: key: reason". */
int  proxy_conf_load(const char *pathlist, enum proxy_role role, struct proxy_conf *pc,
	     char *err, size_t errlen);
void proxy_conf_free(struct proxy_conf *pc);
/* 1 when id is 1 to PROXY_INSTANCE_ID_MAX of PROXY_INSTANCE_ID_CHARS. */
int  proxy_instance_id_valid(const char *id);
/* instance_id, or the default (see PROXY_INSTANCE_ID_MAX). */
void proxy_instance_id(const struct proxy_conf *pc, char out[PROXY_INSTANCE_ID_MAX + 1]);

struct relay_settings;
/* The relay engine's settings from a proxy's settings. */
void proxy_conf_relay_settings(const struct proxy_conf *pc, struct relay_settings *rs);

#endif
