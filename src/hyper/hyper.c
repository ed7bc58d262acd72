/* hyper.c - Hyper server lifecycle (SPEC section 3): TLS contexts and
 * identity hooks, listeners, directory poll, reload.  The settings reader is
 * hyper_conf.c.  The directory is watched by polling (directory_watch_poll);
 * the last good copy stays in use when a file fails to parse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "directory.h"
#include "hyper.h"
#include "route.h"
#include "jsonrpc.h"
#include "log.h"
#include "metrics.h"
#include "settings.h"
#include "tls.h"
#include "util.h"

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

static void
hyper_server_conf(const struct hyper *h, const struct hyper_listen_conf *l, SSL_CTX *ctx,
    struct jsonrpc_server_conf *sc)
{
	memset(sc, 0, sizeof(*sc));
	sc->bind_address = l->bind_address;
	sc->path = l->path != NULL ? l->path : "/jsonrpc";
	sc->ssl_ctx = ctx;
	sc->max_body = (size_t)l->max_body;
	sc->timeout = l->idle_timeout;
	sc->reuse_port = h->h_conf->reuse_port;
	sc->max_connections = (int)l->max_connections;
	sc->handshake_timeout = l->handshake_timeout;
}

static int
hyper_listen(struct hyper *h, const struct hyper_listen_conf *l, SSL_CTX *ctx,
    jsonrpc_handler_fn fn, struct jsonrpc_server **out, char *err, size_t errlen)
{
	struct jsonrpc_server_conf sc;
	char why[256];

	hyper_server_conf(h, l, ctx, &sc);
	*out = jsonrpc_server_new(h->h_base, &sc, fn, h, why, sizeof(why));
	if (*out == NULL) {
		snprintf(err, errlen, "channel %s: bind_address: cannot listen on %s", l->chname,
		    why);
		return -1;
	}
	log_info("channel %s: listening on port %d", l->chname, jsonrpc_server_port(*out));
	return 0;
}

static void
hyper_app_conf(const struct hyper_conf *hc, SSL_CTX *ctx, struct jsonrpc_client_conf *cc)
{
	memset(cc, 0, sizeof(*cc));
	cc->url = hc->app.endpoint;
	cc->ssl_ctx = ctx;
	cc->server_name = hc->app.tls.server_name;
	cc->connect_timeout = hc->app.connect_timeout;
	cc->call_timeout = hc->app.timeout;
	cc->pool_size = (int)hc->app.pool_size;
}

/* The four TLS contexts of hc; a NULL slot for a channel that is not set. */
static int
hyper_contexts(struct hyper *h, const struct hyper_conf *hc, SSL_CTX *ctx[4],
    const char **chname, char *err, size_t errlen)
{
	char why[512];

	ctx[0] = ctx[1] = ctx[2] = ctx[3] = NULL;
	*chname = hc->local.chname;
	if ((ctx[0] = tls_server_ctx(&hc->local.tls, hyper_identity_local, h,
	    why, sizeof(why))) == NULL)
		goto fail;
	*chname = hc->peer.chname;
	if (hc->peer.set && (ctx[1] = tls_server_ctx(&hc->peer.tls,
	    hyper_identity_peer, h, why, sizeof(why))) == NULL)
		goto fail;
	*chname = hc->app.chname;
	if (hc->app.set && strncmp(hc->app.endpoint, "https://", 8) == 0 &&
	    (ctx[2] = tls_client_ctx(&hc->app.tls, why, sizeof(why))) == NULL)
		goto fail;
	*chname = hc->peers.chname;
	if (hc->peers.set) {
		if ((ctx[3] = tls_client_ctx(&hc->peers.tls, why, sizeof(why))) == NULL)
			goto fail;
		SSL_CTX_set_cert_verify_callback(ctx[3], hyper_verify_peer_server, h);
	}
	return 0;
fail:
	snprintf(err, errlen, "%s", why);
	for (int i = 0; i < 4; i++)
		SSL_CTX_free(ctx[i]);
	return -1;
}

/* The digests of the four TLS blocks hyper_contexts builds from; 0, or -1
 * when a file cannot be read. */
static int
hyper_tls_digests(const struct hyper_conf *hc, unsigned char d[4][TLS_DIGEST_LEN])
{
	memset(d, 0, 4 * TLS_DIGEST_LEN);
	if (tls_conf_digest(&hc->local.tls, d[0]) == -1 ||
	    (hc->peer.set && tls_conf_digest(&hc->peer.tls, d[1]) == -1) ||
	    (hc->app.set && strncmp(hc->app.endpoint, "https://", 8) == 0 &&
	    tls_conf_digest(&hc->app.tls, d[2]) == -1) ||
	    (hc->peers.set && tls_conf_digest(&hc->peers.tls, d[3]) == -1))
		return -1;
	return 0;
}

struct hyper *
hyper_new(struct event_base *base, const struct hyper_conf *hc, int *settings_error,
    char *err, size_t errlen)
{
	struct hyper *h;
	struct jsonrpc_client_conf cc;
	struct timeval tv;
	SSL_CTX *ctx[4];
	const char *chname;
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
	if (hyper_contexts(h, hc, ctx, &chname, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "channel %s: tls: %s", chname, why);
		goto fail;
	}
	h->h_local_ctx = ctx[0];
	h->h_peer_ctx = ctx[1];
	h->h_app_ctx = ctx[2];
	h->h_peers_ctx = ctx[3];
	h->h_tls_digests = hyper_tls_digests(hc, h->h_tls_digest) == 0;
	if (hc->app.set) {
		hyper_app_conf(hc, h->h_app_ctx, &cc);
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

/* ---- reload (SIGHUP) ---- */

static int
hyper_streq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int
hyper_strveq(char *const *a, char *const *b)
{
	for (; a != NULL && b != NULL && *a != NULL && *b != NULL; a++, b++)
		if (strcmp(*a, *b) != 0)
			return 0;
	return (a == NULL || *a == NULL) && (b == NULL || *b == NULL);
}

/* "channels[i]" of the channel named chname in tree ("channels" when gone). */
static void
hyper_channel_key(struct json_object *tree, const char *chname, char *out, size_t len)
{
	struct json_object *list, *ch, *name;
	size_t n;

	snprintf(out, len, "channels");
	if (chname == NULL || !json_object_object_get_ex(tree, "channels", &list) ||
	    !json_object_is_type(list, json_type_array))
		return;
	n = json_object_array_length(list);
	for (size_t i = 0; i < n; i++) {
		ch = json_object_array_get_idx(list, i);
		if (json_object_object_get_ex(ch, "name", &name) &&
		    json_object_is_type(name, json_type_string) &&
		    strcmp(json_object_get_string(name), chname) == 0) {
			snprintf(out, len, "channels[%zu]", i);
			return;
		}
	}
}

/* "FILE: KEY: reason" for a channel's key (sub may be NULL: the channel). */
static void
hyper_reload_error(struct json_object *tree, const char *chname, const char *sub,
    const char *why, char *err, size_t errlen)
{
	char key[300], ch[64];

	hyper_channel_key(tree, chname, ch, sizeof(ch));
	if (sub != NULL)
		snprintf(key, sizeof(key), "%s.settings.%s", ch, sub);
	else
		snprintf(key, sizeof(key), "%s", ch);
	snprintf(err, errlen, "%s: %s: %s", settings_origin_at(tree, key), key, why);
}

/* Keys bound to a socket or to the process: refused with the key named. */
static int
hyper_restart_only(const struct hyper_conf *o, const struct hyper_conf *n,
    struct json_object *tree, char *err, size_t errlen)
{
	const char *key = NULL, *ch = NULL, *sub = NULL;
	char why[128];

	if (!hyper_streq(o->name, n->name))
		key = "name";
	else if (o->reuse_port != n->reuse_port)
		key = "reuse_port";
	else if (!hyper_streq(o->metrics, n->metrics))
		key = "metrics";
	else if (!hyper_streq(o->local.bind_address, n->local.bind_address))
		ch = n->local.chname, sub = "bind_address";
	else if (!hyper_streq(o->local.path, n->local.path))
		ch = n->local.chname, sub = "path";
	else if (o->peer.set != n->peer.set)
		ch = n->peer.set ? n->peer.chname : o->peer.chname;
	else if (n->peer.set && !hyper_streq(o->peer.bind_address, n->peer.bind_address))
		ch = n->peer.chname, sub = "bind_address";
	else if (o->app.set != n->app.set)
		ch = n->app.set ? n->app.chname : o->app.chname;
	else if (n->app.set && !hyper_streq(o->app.endpoint, n->app.endpoint))
		ch = n->app.chname, sub = "endpoint";
	else if (n->app.set && !hyper_streq(o->app.tls.server_name, n->app.tls.server_name))
		ch = n->app.chname, sub = "tls.server_name";
	else if (o->peers.set != n->peers.set)
		ch = n->peers.set ? n->peers.chname : o->peers.chname;
	else
		return 0;
	if (key != NULL) {
		snprintf(err, errlen, "%s: %s: cannot change without a restart",
		    settings_origin_at(tree, key), key);
		return -1;
	}
	snprintf(why, sizeof(why), "%s without a restart", sub != NULL ?
	    "cannot change" : "cannot add or remove a channel");
	hyper_reload_error(tree, ch, sub, why, err, errlen);
	return -1;
}

static void
hyper_changed(char *buf, size_t len, const char *what)
{
	size_t n = strlen(buf);

	snprintf(buf + n, len - n, "%s%s", n > 0 ? ", " : "", what);
}

static int
hyper_listen_limits_eq(const struct hyper_listen_conf *a, const struct hyper_listen_conf *b)
{
	return a->max_body == b->max_body && a->idle_timeout == b->idle_timeout &&
	    a->max_connections == b->max_connections &&
	    a->handshake_timeout == b->handshake_timeout;
}

int
hyper_reload(struct hyper *h, const struct hyper_conf *nc, struct json_object *tree,
    char *changed, size_t clen, char *err, size_t errlen)
{
	const struct hyper_conf *oc = h->h_conf;
	struct directory_watch *watch = NULL;
	struct jsonrpc_server_conf sc;
	struct jsonrpc_client_conf cc;
	struct hyper_peer *hp;
	struct timeval tv;
	SSL_CTX *ctx[4], **old[4] = { &h->h_local_ctx, &h->h_peer_ctx, &h->h_app_ctx,
	    &h->h_peers_ctx };
	static const char *names[4] = { "jsonrpc_server certificate",
	    "peer_server certificate", "jsonrpc_client certificate",
	    "peer_client certificate" };
	const char *chname;
	char why[512], a[65], b[65];
	unsigned char digest[4][TLS_DIGEST_LEN];
	int digests, same;

	changed[0] = '\0';
	if (hyper_restart_only(oc, nc, tree, err, errlen) == -1)
		return -1;
	/* Everything that can fail first; nothing is applied until all of it
	 * is ready. */
	if (!hyper_strveq(oc->dir_paths, nc->dir_paths) &&
	    (watch = directory_watch_new(nc->dir_paths, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "%s: directory.settings.path: %s",
		    settings_origin_at(tree, "directory.settings.path"), why);
		return -1;
	}
	/* The same TLS settings and files: keep the contexts, and with them
	 * the clients' pooled connections (a SIGHUP storm builds nothing). */
	digests = hyper_tls_digests(nc, digest) == 0;
	same = digests && h->h_tls_digests && memcmp(digest, h->h_tls_digest, sizeof(digest)) == 0;
	if (!same && hyper_contexts(h, nc, ctx, &chname, why, sizeof(why)) == -1) {
		hyper_reload_error(tree, chname, "tls", why, err, errlen);
		if (watch != NULL)
			directory_watch_free(watch);
		return -1;
	}

	for (int i = 0; i < 4 && !same; i++) {
		tls_ctx_fingerprint(*old[i], a);
		tls_ctx_fingerprint(ctx[i], b);
		if (strcmp(a, b) != 0)
			hyper_changed(changed, clen, names[i]);
		SSL_CTX_free(*old[i]);
		*old[i] = ctx[i];
	}
	if (!same) {
		memcpy(h->h_tls_digest, digest, sizeof(digest));
		h->h_tls_digests = digests;
	}
	h->h_conf = nc;
	h->h_name = nc->name;
	if (watch != NULL) {
		directory_watch_free(h->h_watch);
		h->h_watch = watch;
		directory_unref(h->h_dir);
		h->h_dir = directory_watch_get(h->h_watch);
		hyper_changed(changed, clen, "directory.settings.path");
	} else if (directory_watch_poll(h->h_watch) == 1) {
		/* Permissions and groups live in the directory: read now. */
		directory_unref(h->h_dir);
		h->h_dir = directory_watch_get(h->h_watch);
		hyper_changed(changed, clen, "directory");
	}
	if (oc->dir_poll != nc->dir_poll) {
		tv = tv_seconds(nc->dir_poll);
		event_add(h->h_poll, &tv);
		hyper_changed(changed, clen, "directory.settings.poll_interval");
	}
	hyper_server_conf(h, &nc->local, h->h_local_ctx, &sc);
	jsonrpc_server_update(h->h_local, &sc);
	if (!hyper_listen_limits_eq(&oc->local, &nc->local))
		hyper_changed(changed, clen, "jsonrpc_server limits");
	if (h->h_peer != NULL) {
		hyper_server_conf(h, &nc->peer, h->h_peer_ctx, &sc);
		jsonrpc_server_update(h->h_peer, &sc);
		if (!hyper_listen_limits_eq(&oc->peer, &nc->peer))
			hyper_changed(changed, clen, "peer_server limits");
	}
	if (h->h_app != NULL) {
		hyper_app_conf(nc, h->h_app_ctx, &cc);
		jsonrpc_client_update(h->h_app, &cc);
		if (oc->app.timeout != nc->app.timeout ||
		    oc->app.connect_timeout != nc->app.connect_timeout ||
		    oc->app.pool_size != nc->app.pool_size)
			hyper_changed(changed, clen, "jsonrpc_client timeouts");
	}
	for (hp = h->h_peers; hp != NULL; hp = hp->hp_next) {
		memset(&cc, 0, sizeof(cc));
		cc.ssl_ctx = h->h_peers_ctx;
		cc.connect_timeout = nc->peers.connect_timeout;
		cc.call_timeout = nc->peers.call_timeout;
		cc.pool_size = (int)nc->peers.pool_size;
		jsonrpc_client_update(hp->hp_client, &cc);
	}
	if (nc->peers.set && (oc->peers.connect_timeout != nc->peers.connect_timeout ||
	    oc->peers.call_timeout != nc->peers.call_timeout ||
	    oc->peers.pool_size != nc->peers.pool_size))
		hyper_changed(changed, clen, "peer_client timeouts");
	if (oc->stop_timeout != nc->stop_timeout)
		hyper_changed(changed, clen, "stop_timeout");
	if (oc->reload_interval != nc->reload_interval)
		hyper_changed(changed, clen, "reload_interval");
	if (!hyper_streq(oc->log_level, nc->log_level))
		hyper_changed(changed, clen, "log_level");
	if (changed[0] == '\0')
		snprintf(changed, clen, "nothing changed");
	return 0;
}
