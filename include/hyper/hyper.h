/* hyper.h - the Hyper server (SPEC section 3): settings, lifecycle and
 * routing of JSON-RPC calls between named operators.
 *
 * One struct hyper serves one operator on one event_base (single thread):
 *   local  (jsonrpc_server)  the operator's own applications call out;
 *   app    (jsonrpc_client)  calls addressed to this operator are delivered;
 *   peer   (peer_server)     other Hyper servers call in (mutual TLS);
 *   peers  (peer_client)     calls to other operators go out (mutual TLS),
 *                            one jsonrpc_client per target operator. */
#ifndef HP_HYPER_H
#define HP_HYPER_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "hyper_conf.h"
#include "tls.h"

struct event_base;
struct event;
struct json_object;
struct directory;
struct directory_watch;
struct jsonrpc_server;
struct jsonrpc_client;
struct jsonrpc_call;
struct metrics_server;

/* A peer_client connection pool towards one operator. */
struct hyper_peer {
	struct hyper_peer     *hp_next;
	char                  *hp_name;
	char                  *hp_address;   /* host:port it was created for */
	struct jsonrpc_client *hp_client;
};

struct hyper {
	const struct hyper_conf *h_conf;
	const char              *h_name;
	struct event_base       *h_base;
	struct directory_watch  *h_watch;
	struct directory        *h_dir;       /* current directory (one reference) */
	struct event            *h_poll;      /* directory poll timer */
	SSL_CTX                 *h_local_ctx, *h_peer_ctx, *h_app_ctx, *h_peers_ctx;
	/* What the four were built from (tls_conf_digest, zeros for a channel
	 * without TLS): a reload with the same files keeps them. */
	unsigned char            h_tls_digest[4][TLS_DIGEST_LEN];
	int                      h_tls_digests;  /* known */
	struct jsonrpc_server   *h_local;     /* local ingress */
	struct jsonrpc_server   *h_peer;      /* peer ingress (NULL: none) */
	struct jsonrpc_client   *h_app;       /* local delivery (NULL: none) */
	struct hyper_peer       *h_peers;     /* egress pools by target */
	struct metrics_server   *h_metrics;   /* NULL: off */
	int                      h_inflight;  /* calls waiting for a reply */
	int                      h_stopping;
};

/* Load the directory, build the TLS contexts, start listening.  NULL with a
 * reason in err; *settings_error is set when the reason is a settings or
 * directory problem (exit 2) rather than a runtime one. */
struct hyper *hyper_new(struct event_base *base, const struct hyper_conf *hc,
	    int *settings_error, char *err, size_t errlen);
int  hyper_local_port(const struct hyper *h);
int  hyper_peer_port(const struct hyper *h);
/*
 * Apply new settings nc (read from tree, which names the files in errors) to
 * connections made from now on: TLS contexts, directory, limits, timeouts.
 * Live connections keep theirs.  Everything is checked and built before
 * anything changes: -1 leaves h as it was, with "FILE: KEY: reason" in err
 * (keys bound to a socket, like bind_address, are refused).  On success h
 * uses nc from now on (the caller frees the old settings) and changed lists
 * what changed.
 */
int  hyper_reload(struct hyper *h, const struct hyper_conf *nc, struct json_object *tree,
	    char *changed, size_t clen, char *err, size_t errlen);
/* Stop accepting new calls (they are refused with 503). */
void hyper_stop(struct hyper *h);
/* Free everything; pending calls are answered with 502 first. */
void hyper_free(struct hyper *h);

/* Is leaf bound to h's own name in h's current directory?  (arg: the hyper) */
int  hyper_identity_local(void *arg, X509 *leaf);

#endif
