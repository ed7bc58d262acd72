/* control.c - the proxies' JSON-RPC server and client on the side thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "control.h"
#include "log.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "side.h"
#include "tls.h"

/* Only our own Hyper may call us; it presents the operator's certificate. */
static int
control_identity(void *arg, X509 *leaf)
{
	const struct proxy_conf *pc = arg;

	if (tls_cert_has_name(leaf, pc->pc_name))
		return 1;
	log_warnx("control: refused a JSON-RPC client whose certificate is not %s's",
	    pc->pc_name);
	return 0;
}

int
control_init(struct control *ct, const struct proxy_conf *pc, char *err, size_t errlen)
{
	const char *sec = pc->pc_role == PROXY_PUBLIC ? "public" : "private";
	struct jsonrpc_client_conf cc;
	char why[512];

	memset(ct, 0, sizeof(*ct));
	ct->ct_conf = pc;
	ct->ct_server_ctx = tls_server_ctx(&pc->pc_rpc_server_tls, control_identity,
	    (void *)(uintptr_t)pc, why, sizeof(why));
	if (ct->ct_server_ctx == NULL) {
		snprintf(err, errlen, "%s.jsonrpc_server.tls: %s", sec, why);
		goto fail;
	}
	ct->ct_client_ctx = tls_client_ctx(&pc->pc_rpc_client_tls, why, sizeof(why));
	if (ct->ct_client_ctx == NULL) {
		snprintf(err, errlen, "%s.jsonrpc_client.tls: %s", sec, why);
		goto fail;
	}
	ct->ct_digests = tls_conf_digest(&pc->pc_rpc_server_tls, ct->ct_server_digest) == 0 &&
	    tls_conf_digest(&pc->pc_rpc_client_tls, ct->ct_client_digest) == 0;
	/* The side thread's base (no socket, no file yet) and the client, whose
	 * endpoint URL is checked here. */
	if ((ct->ct_side = side_new(why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "%s", why);
		goto fail;
	}
	memset(&cc, 0, sizeof(cc));
	cc.url = pc->pc_rpc_client_url;
	cc.ssl_ctx = ct->ct_client_ctx;
	cc.server_name = pc->pc_rpc_client_tls.server_name;
	cc.connect_timeout = pc->pc_rpc_connect_timeout;
	cc.call_timeout = pc->pc_rpc_timeout;
	cc.pool_size = 4;
	ct->ct_client = jsonrpc_client_new(side_base(ct->ct_side), &cc, why, sizeof(why));
	if (ct->ct_client == NULL) {
		snprintf(err, errlen, "%s.jsonrpc_client.endpoint: %s", sec, why);
		goto fail;
	}
	return 0;
fail:
	control_stop(ct);
	return -1;
}

int
control_bind(struct control *ct, jsonrpc_handler_fn fn, void *arg, char *err, size_t errlen)
{
	const struct proxy_conf *pc = ct->ct_conf;
	const char *sec = pc->pc_role == PROXY_PUBLIC ? "public" : "private";
	struct jsonrpc_server_conf sc;
	char why[512];

	memset(&sc, 0, sizeof(sc));
	sc.bind_address = pc->pc_rpc_server_bind;
	sc.path = pc->pc_rpc_server_path;
	sc.ssl_ctx = ct->ct_server_ctx;
	sc.reuse_port = pc->pc_reuse_port;
	ct->ct_server = jsonrpc_server_new(side_base(ct->ct_side), &sc, fn, arg, why, sizeof(why));
	if (ct->ct_server == NULL) {
		snprintf(err, errlen, "%s.jsonrpc_server.bind_address: cannot listen on %s", sec,
		    why);
		return -1;
	}
	log_info("JSON-RPC server listening on %s", pc->pc_rpc_server_bind);
	if (pc->pc_metrics_bind != NULL) {
		ct->ct_metrics = metrics_server_new(side_base(ct->ct_side), pc->pc_metrics_bind,
		    pc->pc_metrics_timeout, pc->pc_reuse_port, why, sizeof(why));
		if (ct->ct_metrics == NULL) {
			snprintf(err, errlen, "%s.metrics: cannot listen on %s", sec, why);
			return -1;
		}
		log_info("metrics listening on %s", pc->pc_metrics_bind);
	}
	return 0;
}

int
control_run(struct control *ct, char *err, size_t errlen)
{
	return side_start(ct->ct_side, err, errlen);
}

int
control_reload(struct control *ct, const struct proxy_conf *nc, const char **key,
    char *why, size_t whylen)
{
	const struct proxy_conf *pc = ct->ct_conf;
	struct jsonrpc_server_conf sc;
	struct jsonrpc_client_conf cc;
	SSL_CTX *server, *client;
	unsigned char sd[TLS_DIGEST_LEN], cd[TLS_DIGEST_LEN];
	int digests;

	digests = tls_conf_digest(&nc->pc_rpc_server_tls, sd) == 0 &&
	    tls_conf_digest(&nc->pc_rpc_client_tls, cd) == 0;
	if (digests && ct->ct_digests && memcmp(sd, ct->ct_server_digest, sizeof(sd)) == 0 &&
	    memcmp(cd, ct->ct_client_digest, sizeof(cd)) == 0) {
		/* Same files: nothing to build, the pooled connections stay
		 * (a SIGHUP storm costs a read of the files, not handshakes). */
		memset(&cc, 0, sizeof(cc));
		cc.ssl_ctx = ct->ct_client_ctx;
		cc.connect_timeout = nc->pc_rpc_connect_timeout;
		cc.call_timeout = nc->pc_rpc_timeout;
		cc.pool_size = 4;
		jsonrpc_client_update(ct->ct_client, &cc);
		return 0;
	}
	/* The identity hook keeps the live settings: the name cannot change. */
	server = tls_server_ctx(&nc->pc_rpc_server_tls, control_identity,
	    (void *)(uintptr_t)pc, why, whylen);
	if (server == NULL) {
		*key = "jsonrpc_server.tls";
		return -1;
	}
	if ((client = tls_client_ctx(&nc->pc_rpc_client_tls, why, whylen)) == NULL) {
		*key = "jsonrpc_client.tls";
		SSL_CTX_free(server);
		return -1;
	}
	memset(&sc, 0, sizeof(sc));
	sc.ssl_ctx = server;
	if (ct->ct_server != NULL)
		jsonrpc_server_update(ct->ct_server, &sc);
	memset(&cc, 0, sizeof(cc));
	cc.ssl_ctx = client;
	cc.connect_timeout = nc->pc_rpc_connect_timeout;
	cc.call_timeout = nc->pc_rpc_timeout;
	cc.pool_size = 4;
	jsonrpc_client_update(ct->ct_client, &cc);
	SSL_CTX_free(ct->ct_server_ctx);
	SSL_CTX_free(ct->ct_client_ctx);
	ct->ct_server_ctx = server;
	ct->ct_client_ctx = client;
	memcpy(ct->ct_server_digest, sd, sizeof(sd));
	memcpy(ct->ct_client_digest, cd, sizeof(cd));
	ct->ct_digests = digests;
	return 0;
}

void
control_stop(struct control *ct)
{
	if (ct->ct_side)
		side_stop(ct->ct_side);
	if (ct->ct_client)
		jsonrpc_client_free(ct->ct_client);
	if (ct->ct_server)
		jsonrpc_server_free(ct->ct_server);
	if (ct->ct_metrics)
		metrics_server_free(ct->ct_metrics);
	if (ct->ct_side)
		side_free(ct->ct_side);
	if (ct->ct_server_ctx)
		SSL_CTX_free(ct->ct_server_ctx);
	if (ct->ct_client_ctx)
		SSL_CTX_free(ct->ct_client_ctx);
	memset(ct, 0, sizeof(*ct));
}

struct event_base *
control_base(struct control *ct)
{
	return side_base(ct->ct_side);
}

void
control_post(struct control *ct, void (*fn)(void *), void *arg)
{
	side_post(ct->ct_side, fn, arg);
}

void
control_call(struct control *ct, const char *op, const char *method,
    struct json_object *params, jsonrpc_reply_fn fn, void *arg)
{
	char full[512];

	snprintf(full, sizeof(full), "%s.%s", op, method);
	jsonrpc_client_call(ct->ct_client, full, params, fn, arg);
}

void
control_dispatch(const struct control_method *methods, void *arg, struct jsonrpc_call *call)
{
	struct json_object *params = jsonrpc_call_params(call);
	const char *method = jsonrpc_call_method(call);
	const char *caller;

	for (; methods->mt_name != NULL; methods++)
		if (strcmp(methods->mt_name, method) == 0)
			break;
	if (methods->mt_name == NULL) {
		jsonrpc_call_error(call, JSONRPC_METHOD_NOT_FOUND, "method not found: %s", method);
		return;
	}
	if ((caller = control_caller(params)) == NULL) {
		jsonrpc_call_error(call, JSONRPC_INVALID_PARAMS, "missing _client");
		return;
	}
	methods->mt_fn(arg, call, caller, params);
}

const char *
control_caller(struct json_object *params)
{
	struct json_object *client, *name;

	if (!json_object_object_get_ex(params, "_client", &client) ||
	    !json_object_object_get_ex(client, "name", &name) ||
	    !json_object_is_type(name, json_type_string))
		return NULL;
	return json_object_get_string(name);
}

/* A string member of o, or NULL when absent, null or of another type. */
static const char *
control_string(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The allowed_domains list of a settings item for service "proxy" that
 * applies to the proxy named self, or NULL.  An item naming an operator
 * applies to that operator only; one without applies to every proxy. */
static struct json_object *
control_item_domains(struct json_object *item, const char *self, int *scoped)
{
	struct json_object *inner, *allowed;
	const char *svc, *op;

	if (!json_object_is_type(item, json_type_object) ||
	    (svc = control_string(item, "service")) == NULL || strcmp(svc, "proxy") != 0)
		return NULL;
	if (json_object_object_get_ex(item, "operator", &inner) && inner != NULL) {
		/* A malformed scope grants nothing rather than everything. */
		if ((op = control_string(item, "operator")) == NULL || self == NULL ||
		    strcmp(op, self) != 0)
			return NULL;
		*scoped = 1;
	} else
		*scoped = 0;
	if (!json_object_object_get_ex(item, "settings", &inner) ||
	    !json_object_object_get_ex(inner, "allowed_domains", &allowed) ||
	    !json_object_is_type(allowed, json_type_array))
		return NULL;
	return allowed;
}

int
control_allowed_domains(struct json_object *params, const char *self, const char ***out)
{
	struct json_object *client, *entry;

	*out = NULL;
	if (!json_object_object_get_ex(params, "_client", &client) ||
	    !json_object_object_get_ex(client, "entry", &entry))
		return -1;
	return control_entry_allowed_domains(entry, self, out);
}

int
control_entry_allowed_domains(struct json_object *entry, const char *self, const char ***out)
{
	struct json_object *settings, *allowed = NULL, *a;
	const char **v;
	size_t n;
	int k = 0, scoped;

	*out = NULL;
	if (!json_object_object_get_ex(entry, "settings", &settings) ||
	    !json_object_is_type(settings, json_type_array))
		return -1;
	/* The first item naming this proxy wins; else the first one naming
	 * no operator. */
	for (size_t i = 0; i < json_object_array_length(settings); i++) {
		if ((a = control_item_domains(json_object_array_get_idx(settings, i), self,
		    &scoped)) == NULL)
			continue;
		if (scoped) {
			allowed = a;
			break;
		}
		if (allowed == NULL)
			allowed = a;
	}
	if (allowed == NULL)
		return -1;
	n = json_object_array_length(allowed);
	if ((v = calloc(n + 1, sizeof(*v))) == NULL)
		return -1;
	for (size_t j = 0; j < n; j++) {
		struct json_object *d = json_object_array_get_idx(allowed, j);

		if (json_object_is_type(d, json_type_string))
			v[k++] = json_object_get_string(d);
	}
	*out = v;
	return k;
}

int
control_caller_in_group(struct json_object *params, const char *group)
{
	struct json_object *client, *entry, *groups;

	if (group == NULL || group[0] == '\0' ||
	    !json_object_object_get_ex(params, "_client", &client) ||
	    !json_object_object_get_ex(client, "entry", &entry) ||
	    !json_object_object_get_ex(entry, "groups", &groups) ||
	    !json_object_is_type(groups, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(groups); i++) {
		struct json_object *g = json_object_array_get_idx(groups, i);

		if (json_object_is_type(g, json_type_string) &&
		    strcmp(json_object_get_string(g), group) == 0)
			return 1;
	}
	return 0;
}

