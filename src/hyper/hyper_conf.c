/* hyper_conf.c - the Hyper server's settings reader (SPEC section 3).
 *
 * Settings (HYPER_SETTINGS): name, directory {type: json, settings: {path,
 * poll_interval}}, channels [{name, type, settings}], log_level,
 * stop_timeout, reuse_port, metrics, metrics_timeout, reload_interval.  Each channel type
 * appears at most once; jsonrpc_server is required.  Kept apart from hyper.c
 * so that the settings fuzz target does not link the server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "hyper_conf.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "settings.h"
#include "tls.h"

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
	cfg_seconds(&c, "reload_interval", RELOAD_INTERVAL_DEFAULT, 0, 3600,
	    &hc->reload_interval);
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
