/* control.h - a proxy's control plane: the side thread with the JSON-RPC
 * server its Hyper calls (mutual TLS, only the Hyper's certificate, which
 * carries the proxy's own operator name) and the JSON-RPC client calling
 * out through that Hyper.  Both roles use it. */
#ifndef HP_CONTROL_H
#define HP_CONTROL_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "jsonrpc.h"

struct json_object;
struct proxy_conf;
struct side;

struct control {
	const struct proxy_conf *ct_conf;
	struct side             *ct_side;
	SSL_CTX                 *ct_server_ctx;
	SSL_CTX                 *ct_client_ctx;
	struct jsonrpc_server   *ct_server;
	struct jsonrpc_client   *ct_client;
};

/* Build the contexts, bind the JSON-RPC server (handler runs on the side
 * thread) and the client, then start the side thread.  0; -1 + err on a
 * runtime failure (port in use); -2 + err when a certificate or key of the
 * settings cannot be used (the process then exits 2, like any settings error). */
int  control_start(struct control *ct, const struct proxy_conf *pc,
	     jsonrpc_handler_fn fn, void *arg, char *err, size_t errlen);
/* Stop the side thread and free everything (no callbacks afterwards). */
void control_stop(struct control *ct);

/* Call `<operator>.<method>` through the own Hyper.  Side thread only. */
void control_call(struct control *ct, const char *op, const char *method,
	     struct json_object *params, jsonrpc_reply_fn fn, void *arg);

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

#endif
