/* hyper.c - Hyper server settings and lifecycle (SPEC section 3).
 *
 * Settings (HYPER_SETTINGS): name, directory {type: json, settings: {path,
 * poll_interval}}, channels [{name, type, settings}], log_level,
 * stop_timeout, reuse_port, metrics, metrics_timeout.  Each channel type
 * appears at most once; jsonrpc_server is required.  The directory is watched by polling (directory_watch_poll); the
 * last good copy stays in use when a file fails to parse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "directory.h"
#include "hyper.h"
#include "jsonrpc.h"
#include "log.h"
#include "metrics.h"
#include "settings.h"
#include "tls.h"
#include "util.h"

#define HYPER_MAX_BODY_MIN   1024L
#define HYPER_MAX_BODY_MAX   (64L << 20)

static int
hyper_conf_listen(struct cfg *s, struct hyper_listen_conf *l, int with_path)
{
	l->set = 1;
	cfg_string(s, "bind_address", NULL, 1, &l->bind_address);
	if (with_path) {
		cfg_string(s, "path", "/jsonrpc", 0, &l->path);
		if (l->path != NULL && l->path[0] != '/')
			cfg_error(s, "path", "must start with '/'");
	}
	cfg_int(s, "max_body", 1L << 20, HYPER_MAX_BODY_MIN, HYPER_MAX_BODY_MAX, &l->max_body);
	cfg_seconds(s, "idle_timeout", 30, 0.1, 86400, &l->idle_timeout);
	cfg_int(s, "max_connections", 1024, 1, 1L << 20, &l->max_connections);
	cfg_seconds(s, "handshake_timeout", 10, 0.1, 3600, &l->handshake_timeout);
	return tls_conf_read(s, "tls", 1, &l->tls);
}

static int
hyper_conf_channel(struct cfg *c, int i, struct hyper_conf *hc)
{
	struct cfg ch, s;
	char *name = NULL, *type = NULL;
	char **chname = NULL;

	if (cfg_list_map(c, "channels", i, &ch) == -1)
		return -1;
	cfg_string(&ch, "name", NULL, 1, &name);
	cfg_string(&ch, "type", NULL, 1, &type);
	if (cfg_section(&ch, "settings", 1, &s) == -1 || type == NULL)
		goto out;
	if (strcmp(type, "jsonrpc_server") == 0 && !hc->local.set) {
		chname = &hc->local.chname;
		hyper_conf_listen(&s, &hc->local, 1);
	} else if (strcmp(type, "peer_server") == 0 && !hc->peer.set) {
		chname = &hc->peer.chname;
		hyper_conf_listen(&s, &hc->peer, 0);
	} else if (strcmp(type, "jsonrpc_client") == 0 && !hc->app.set) {
		chname = &hc->app.chname;
		hc->app.set = 1;
		cfg_string(&s, "endpoint", NULL, 1, &hc->app.endpoint);
		if (hc->app.endpoint != NULL && strncmp(hc->app.endpoint, "https://", 8) != 0 &&
		    strncmp(hc->app.endpoint, "http://", 7) != 0)
			cfg_error(&s, "endpoint", "must be an http:// or https:// URL");
		cfg_seconds(&s, "timeout", 10, 0.001, 3600, &hc->app.timeout);
		cfg_seconds(&s, "connect_timeout", 2, 0.001, 3600, &hc->app.connect_timeout);
		cfg_int(&s, "pool_size", 4, 1, 1024, &hc->app.pool_size);
		tls_conf_read(&s, "tls", 0, &hc->app.tls);
	} else if (strcmp(type, "peer_client") == 0 && !hc->peers.set) {
		chname = &hc->peers.chname;
		hc->peers.set = 1;
		cfg_seconds(&s, "connect_timeout", 2, 0.001, 3600, &hc->peers.connect_timeout);
		cfg_seconds(&s, "call_timeout", 10, 0.001, 3600, &hc->peers.call_timeout);
		cfg_int(&s, "pool_size", 4, 1, 1024, &hc->peers.pool_size);
		tls_conf_read(&s, "tls", 1, &hc->peers.tls);
	} else if (strcmp(type, "jsonrpc_server") == 0 || strcmp(type, "peer_server") == 0 ||
	    strcmp(type, "jsonrpc_client") == 0 || strcmp(type, "peer_client") == 0) {
		cfg_error(&ch, "type", "a second %s channel is not allowed", type);
	} else {
		cfg_error(&ch, "type", "unknown channel type '%s' (expected jsonrpc_server, "
		    "jsonrpc_client, peer_server or peer_client)", type);
	}
	cfg_done(&s);
out:
	cfg_done(&ch);
	free(type);
	if (chname != NULL) {
		*chname = name;
		name = NULL;
	}
	free(name);
	return c->root->failed ? -1 : 0;
}

int
hyper_conf_read(struct json_object *tree, struct hyper_conf *hc, char *err, size_t errlen)
{
	struct cfg c, d, ds;
	char *type = NULL;
	int n;

	memset(hc, 0, sizeof(*hc));
	if (cfg_root(&c, tree) == -1)
		goto fail;
	cfg_string(&c, "name", NULL, 1, &hc->name);
	if (hc->name != NULL && (hc->name[0] == '\0' || strchr(hc->name, '/') != NULL))
		cfg_error(&c, "name", "must be a non-empty operator name");
	if (cfg_section(&c, "directory", 1, &d) == 0) {
		cfg_string(&d, "type", NULL, 1, &type);
		if (type != NULL && strcmp(type, "json") != 0)
			cfg_error(&d, "type", "unknown directory type '%s' (expected json)", type);
		free(type);
		if (cfg_section(&d, "settings", 1, &ds) == 0) {
			cfg_strv(&ds, "path", 1, &hc->dir_paths);
			cfg_seconds(&ds, "poll_interval", 2, 0.1, 3600, &hc->dir_poll);
			cfg_done(&ds);
		}
		cfg_done(&d);
	}
	n = cfg_list_len(&c, "channels");
	if (n == -1)
		cfg_error(&c, "channels", "must be a list of {name, type, settings}");
	for (int i = 0; i < n && !c.root->failed; i++)
		hyper_conf_channel(&c, i, hc);
	if (!c.root->failed && !hc->local.set)
		cfg_error(&c, "channels", "a jsonrpc_server channel is required");
	cfg_string(&c, "log_level", NULL, 0, &hc->log_level);
	if (hc->log_level != NULL && log_level_parse(hc->log_level) == -1)
		cfg_error(&c, "log_level", "expected error, warn, info or debug");
	cfg_seconds(&c, "stop_timeout", 2, 0, 60, &hc->stop_timeout);
	cfg_bool(&c, "reuse_port", 0, &hc->reuse_port);
	cfg_string(&c, "metrics", NULL, 0, &hc->metrics);
	if (hc->metrics != NULL && !metrics_address_ok(hc->metrics))
		cfg_error(&c, "metrics", "%s: expected host:port", hc->metrics);
	cfg_seconds(&c, "metrics_timeout", METRICS_TIMEOUT_DEFAULT, 0.001, 3600,
	    &hc->metrics_timeout);
	if (cfg_done(&c) == -1)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "%s", cfg_errstr(&c));
	hyper_conf_free(hc);
	return -1;
}

static void
hyper_listen_conf_free(struct hyper_listen_conf *l)
{
	free(l->chname);
	free(l->bind_address);
	free(l->path);
	tls_conf_free(&l->tls);
}

void
hyper_conf_free(struct hyper_conf *hc)
{
	free(hc->name);
	cfg_strv_free(hc->dir_paths);
	free(hc->log_level);
	free(hc->metrics);
	hyper_listen_conf_free(&hc->local);
	hyper_listen_conf_free(&hc->peer);
	free(hc->app.chname);
	free(hc->app.endpoint);
	tls_conf_free(&hc->app.tls);
	free(hc->peers.chname);
	tls_conf_free(&hc->peers.tls);
	memset(hc, 0, sizeof(*hc));
}

/* Local ingress (SPEC 3.2 fix): only a certificate bound to our own name.
 * Checked in the handshake and again for every request (route_local). */
int
hyper_identity_local(void *arg, X509 *leaf)
{
	struct hyper *h = arg;
	char fp[65];

	if (!tls_cert_has_name(leaf, h->h_name))
		return 0;
	tls_fingerprint(leaf, fp);
	return directory_has_fingerprint(h->h_dir, h->h_name, fp);
}

/* Peer ingress: any certificate bound to some operator of the directory. */
static int
hyper_identity_peer(void *arg, X509 *leaf)
{
	struct hyper *h = arg;
	char name[256];

	return tls_identity(h->h_dir, leaf, name, sizeof(name)) == 0;
}

/* Peer egress: the server leaf must be bound to the operator we dialled (the
 * TLS server name), not only carry its name. */
static int
hyper_verify_peer_server(X509_STORE_CTX *xs, void *arg)
{
	struct hyper *h = arg;
	SSL *ssl;
	X509 *leaf;
	const char *want;
	char fp[65];

	if (X509_verify_cert(xs) != 1)
		return 0;
	ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	leaf = X509_STORE_CTX_get0_cert(xs);
	want = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
	if (leaf == NULL || want == NULL || !tls_cert_has_name(leaf, want))
		goto refuse;
	tls_fingerprint(leaf, fp);
	if (directory_has_fingerprint(h->h_dir, want, fp))
		return 1;
refuse:
	X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static void
hyper_poll(evutil_socket_t fd, short ev, void *arg)
{
	struct hyper *h = arg;

	if (directory_watch_poll(h->h_watch) != 1)
		return;
	directory_unref(h->h_dir);
	h->h_dir = directory_watch_get(h->h_watch);
	log_info("directory reloaded");
}

static int
hyper_listen(struct hyper *h, const struct hyper_listen_conf *l, SSL_CTX *ctx,
    jsonrpc_handler_fn fn, struct jsonrpc_server **out, char *err, size_t errlen)
{
	struct jsonrpc_server_conf sc;
	char why[256];

	memset(&sc, 0, sizeof(sc));
	sc.bind_address = l->bind_address;
	sc.path = l->path != NULL ? l->path : "/jsonrpc";
	sc.ssl_ctx = ctx;
	sc.max_body = (size_t)l->max_body;
	sc.timeout = l->idle_timeout;
	sc.reuse_port = h->h_conf->reuse_port;
	sc.max_connections = (int)l->max_connections;
	sc.handshake_timeout = l->handshake_timeout;
	*out = jsonrpc_server_new(h->h_base, &sc, fn, h, why, sizeof(why));
	if (*out == NULL) {
		snprintf(err, errlen, "channel %s: bind_address: cannot listen on %s", l->chname,
		    why);
		return -1;
	}
	log_info("channel %s: listening on port %d", l->chname, jsonrpc_server_port(*out));
	return 0;
}

struct hyper *
hyper_new(struct event_base *base, const struct hyper_conf *hc, int *settings_error,
    char *err, size_t errlen)
{
	struct hyper *h;
	struct jsonrpc_client_conf cc;
	struct timeval tv;
	char why[512];

	*settings_error = 1;
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		snprintf(err, errlen, "out of memory");
		*settings_error = 0;
		return NULL;
	}
	h->h_conf = hc;
	h->h_name = hc->name;
	h->h_base = base;
	if ((h->h_watch = directory_watch_new(hc->dir_paths, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "directory: %s", why);
		goto fail;
	}
	h->h_dir = directory_watch_get(h->h_watch);
	if (directory_entry(h->h_dir, h->h_name) == NULL)
		log_warnx("own operator %s is not in the directory: local clients will be "
		    "refused until it is", h->h_name);

	/* TLS contexts first: a bad certificate is a settings error. */
	if ((h->h_local_ctx = tls_server_ctx(&hc->local.tls, hyper_identity_local, h,
	    why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "channel %s: tls: %s", hc->local.chname, why);
		goto fail;
	}
	if (hc->peer.set && (h->h_peer_ctx = tls_server_ctx(&hc->peer.tls,
	    hyper_identity_peer, h, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "channel %s: tls: %s", hc->peer.chname, why);
		goto fail;
	}
	if (hc->app.set && strncmp(hc->app.endpoint, "https://", 8) == 0 &&
	    (h->h_app_ctx = tls_client_ctx(&hc->app.tls, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "channel %s: tls: %s", hc->app.chname, why);
		goto fail;
	}
	if (hc->peers.set) {
		if ((h->h_peers_ctx = tls_client_ctx(&hc->peers.tls, why, sizeof(why))) == NULL) {
			snprintf(err, errlen, "channel %s: tls: %s", hc->peers.chname, why);
			goto fail;
		}
		SSL_CTX_set_cert_verify_callback(h->h_peers_ctx, hyper_verify_peer_server, h);
	}
	if (hc->app.set) {
		memset(&cc, 0, sizeof(cc));
		cc.url = hc->app.endpoint;
		cc.ssl_ctx = h->h_app_ctx;
		cc.server_name = hc->app.tls.server_name;
		cc.connect_timeout = hc->app.connect_timeout;
		cc.call_timeout = hc->app.timeout;
		cc.pool_size = (int)hc->app.pool_size;
		if ((h->h_app = jsonrpc_client_new(base, &cc, why, sizeof(why))) == NULL) {
			snprintf(err, errlen, "channel %s: %s", hc->app.chname, why);
			goto fail;
		}
	}

	*settings_error = 0;
	if (hyper_listen(h, &hc->local, h->h_local_ctx, route_local, &h->h_local,
	    err, errlen) == -1)
		goto fail;
	if (hc->peer.set && hyper_listen(h, &hc->peer, h->h_peer_ctx, route_peer,
	    &h->h_peer, err, errlen) == -1)
		goto fail;
	if (hc->metrics != NULL) {
		if ((h->h_metrics = metrics_server_new(base, hc->metrics, hc->metrics_timeout,
		    hc->reuse_port, why, sizeof(why))) == NULL) {
			snprintf(err, errlen, "metrics: cannot listen on %s", why);
			goto fail;
		}
		log_info("metrics listening on %s", hc->metrics);
	}

	h->h_poll = event_new(base, -1, EV_PERSIST, hyper_poll, h);
	tv = tv_seconds(hc->dir_poll);
	if (h->h_poll == NULL || event_add(h->h_poll, &tv) == -1) {
		snprintf(err, errlen, "cannot start the directory poll timer");
		goto fail;
	}
	log_info("operator %s ready", h->h_name);
	return h;
fail:
	hyper_free(h);
	return NULL;
}

int
hyper_local_port(const struct hyper *h)
{
	return jsonrpc_server_port(h->h_local);
}

int
hyper_peer_port(const struct hyper *h)
{
	return h->h_peer != NULL ? jsonrpc_server_port(h->h_peer) : -1;
}

void
hyper_stop(struct hyper *h)
{
	h->h_stopping = 1;
	if (h->h_poll != NULL)
		event_del(h->h_poll);
}

void
hyper_free(struct hyper *h)
{
	if (h == NULL)
		return;
	if (h->h_poll != NULL)
		event_free(h->h_poll);
	/* Clients first: cancelling them answers pending calls on servers that
	 * are still alive. */
	route_peers_free(h);
	if (h->h_app != NULL)
		jsonrpc_client_free(h->h_app);
	if (h->h_local != NULL)
		jsonrpc_server_free(h->h_local);
	if (h->h_peer != NULL)
		jsonrpc_server_free(h->h_peer);
	metrics_server_free(h->h_metrics);
	SSL_CTX_free(h->h_local_ctx);
	SSL_CTX_free(h->h_peer_ctx);
	SSL_CTX_free(h->h_app_ctx);
	SSL_CTX_free(h->h_peers_ctx);
	if (h->h_dir != NULL)
		directory_unref(h->h_dir);
	if (h->h_watch != NULL)
		directory_watch_free(h->h_watch);
	free(h);
}
