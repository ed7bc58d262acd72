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
#include "jsonrpc.h"
#include "log.h"
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
