/* control.h - a proxy's control plane: the side thread with the JSON-RPC
 * server its Hyper calls (mutual TLS, only the Hyper's certificate, which
 * carries the proxy's own operator name) and the JSON-RPC client calling
 * out through that Hyper.  Both roles use it. */
#ifndef HP_CONTROL_H
#define HP_CONTROL_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "jsonrpc.h"
#include "tls.h"

struct json_object;
struct proxy_conf;
struct side;

struct control {
	const struct proxy_conf *ct_conf;
	struct side             *ct_side;
	SSL_CTX                 *ct_server_ctx;
	SSL_CTX                 *ct_client_ctx;
	/* What the two contexts were built from (tls_conf_digest); a reload
	 * with the same files keeps them, and the client's pooled connections. */
	unsigned char            ct_server_digest[TLS_DIGEST_LEN];
	unsigned char            ct_client_digest[TLS_DIGEST_LEN];
	int                      ct_digests;    /* both known */
	struct jsonrpc_server   *ct_server;
	struct jsonrpc_client   *ct_client;
	struct metrics_server   *ct_metrics;    /* NULL: the metrics setting is off */
};

/*
 * Start-up in three steps, so that a settings error is found before anything
 * is bound and a port in use before any file is touched:
 *   control_init  load the certificates and keys into the TLS contexts,
 *                 create the side thread's base and the client (its endpoint
 *                 URL checked); -1 + err ("public.jsonrpc_server.tls:
 *                 certificate_file F: why") is a settings error (exit 2);
 *   control_bind  bind the JSON-RPC server and the metrics listener
 *                 (SO_REUSEPORT only with reuse_port); -1 + err is a
 *                 runtime failure (port in use: exit 1);
 *   control_run   start the side thread: the handler runs from now on.
 * After any of them, control_stop() frees what was made.
 */
int  control_init(struct control *ct, const struct proxy_conf *pc, char *err, size_t errlen);
int  control_bind(struct control *ct, jsonrpc_handler_fn fn, void *arg, char *err,
	     size_t errlen);
int  control_run(struct control *ct, char *err, size_t errlen);
/* Reload (side thread, or before control_run): new TLS contexts and client
 * timeouts from nc for connections made from now on; live ones keep theirs.
 * Contexts whose settings and files did not change are kept as they are.
 * -1 changes nothing: *key is the settings key below the role's section
 * ("jsonrpc_server.tls") and why the reason ("key_file PATH: ..."). */
int  control_reload(struct control *ct, const struct proxy_conf *nc, const char **key,
	     char *why, size_t whylen);
/* Stop the side thread and free everything (no callbacks afterwards). */
void control_stop(struct control *ct);

/* The side thread's event base (its timers; side thread only) and its post
 * queue (fn(arg) runs there; any thread), so the roles need not reach
 * into struct side. */
struct event_base *control_base(struct control *ct);
void control_post(struct control *ct, void (*fn)(void *), void *arg);
/* Call `<operator>.<method>` through the own Hyper.  Side thread only. */
void control_call(struct control *ct, const char *op, const char *method,
	     struct json_object *params, jsonrpc_reply_fn fn, void *arg);

/* The JSON-RPC methods of a role, for control_dispatch(): a table ended by
 * a NULL mt_name.  mt_fn answers the call; caller is `_client.name`. */
struct control_method {
	const char	*mt_name;
	void		(*mt_fn)(void *arg, struct jsonrpc_call *call, const char *caller,
			    struct json_object *params);
};
/* Run the method of call from methods with arg, or answer the errors both
 * roles word alike: -32601 "method not found: NAME", -32602 "missing
 * _client" (the Hyper server always injects it). */
void control_dispatch(const struct control_method *methods, void *arg,
	     struct jsonrpc_call *call);
/* `_client.name` injected by the Hyper server, or NULL. */
const char *control_caller(struct json_object *params);
/* The caller's `allowed_domains` granted to the proxy named self: the
 * settings item of service "proxy" in `_client.entry.settings` whose
 * `operator` is self, else the first such item without `operator` (items
 * naming another operator are skipped).  Out: a malloc'ed array of borrowed
 * strings (free only the array).  Returns the count, or -1 when the caller
 * has none. */
int  control_allowed_domains(struct json_object *params, const char *self,
	     const char ***out);
/* The same from a directory entry {"name","groups","settings"}. */
int  control_entry_allowed_domains(struct json_object *entry, const char *self,
	     const char ***out);
/* 1 when `_client.entry.groups` lists group, else 0. */
int  control_caller_in_group(struct json_object *params, const char *group);

#endif
