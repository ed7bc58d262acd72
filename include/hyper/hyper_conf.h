/* hyper_conf.h - the Hyper server's settings (SPEC section 3), read strictly
 * from the HYPER_SETTINGS tree.  No server code: the settings fuzz target
 * links only this reader. */
#ifndef HP_HYPER_CONF_H
#define HP_HYPER_CONF_H

#include <stddef.h>

#include "tls.h"

struct json_object;

/* A listening channel (jsonrpc_server or peer_server). */
struct hyper_listen_conf {
	int              set;
	char            *chname;       /* channel name from the settings */
	char            *bind_address;
	char            *path;         /* jsonrpc_server only; peers use /jsonrpc */
	struct tls_conf  tls;
	long             max_body;     /* request size limit, bytes */
	double           idle_timeout; /* idle/read timeout of a connection */
	long             max_connections;   /* served at once */
	double           handshake_timeout; /* accept to end of TLS handshake */
};

struct hyper_conf {
	char   *name;                  /* own operator name */
	char  **dir_paths;             /* directory.settings.path */
	double  dir_poll;              /* directory.settings.poll_interval */
	double  stop_timeout;          /* grace for in-flight calls on stop */
	char   *log_level;             /* NULL: keep the current level */
	int     reuse_port;            /* SO_REUSEPORT on the listeners (hand-over) */
	char   *metrics;               /* metrics listener host:port, NULL: off */
	double  metrics_timeout;
	double  reload_interval;       /* seconds between two reloads (SIGHUP) */
	struct hyper_listen_conf local;  /* jsonrpc_server (required) */
	struct hyper_listen_conf peer;   /* peer_server */
	struct {
		int              set;
		char            *chname;
		char            *endpoint;
		struct tls_conf  tls;
		double           timeout, connect_timeout;
		long             pool_size;
	} app;                           /* jsonrpc_client */
	struct {
		int              set;
		char            *chname;
		struct tls_conf  tls;
		double           connect_timeout, call_timeout;
		long             pool_size;
	} peers;                         /* peer_client */
};

/* Read and check the whole settings tree strictly.  Returns 0, or -1 with
 * "file: key: reason" in err. */
int  hyper_conf_read(struct json_object *tree, struct hyper_conf *hc, char *err, size_t errlen);
void hyper_conf_free(struct hyper_conf *hc);

#endif
