/* main.c - the hyper command (SPEC sections 1 and 3).
 *
 *   hyper server run                      serve the operator named in HYPER_SETTINGS
 *   hyper call OP.METHOD [JSON]           one call through the local Hyper server
 *
 * Exit codes: 0 success or clean stop, 1 runtime failure (or an error reply
 * to `call`), 2 usage or settings error. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "hyper.h"
#include "jsonrpc.h"
#include "log.h"
#include "settings.h"
#include "tls.h"
#include "util.h"

#define CALL_TIMEOUT_DEFAULT 15.0
#define STOP_CHECK_USEC      50000
/* Reloads at most this often; SIGHUPs in between coalesce into one. */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: hyper [--log-level LEVEL] server run\n"
	    "       hyper [--log-level LEVEL] call [--timeout SECONDS] OPERATOR.METHOD [JSON]\n"
	    "       hyper --help | --version\n"
	    "\n"
	    "Settings are read from HYPER_SETTINGS (colon-separated files and folders).\n"
	    "server run   route JSON-RPC calls between operators (stops on SIGINT/SIGTERM,\n"
	    "             re-reads the settings on SIGHUP)\n"
	    "call         post one call to the local Hyper server's jsonrpc_server channel\n"
	    "             with the operator's own certificate; prints the result (exit 0)\n"
	    "             or the error (stderr, exit 1); JSON must be a strict JSON object\n"
	    "--log-level  error, warn, info (default) or debug; overrides log_level\n"
	    "--timeout    seconds to wait for the reply of `call` (default 15)\n"
	    "\n"
	    "Exit status: 0 success or clean stop, 1 runtime failure (port in use, no reply,\n"
	    "an error reply), 2 usage or settings error (incl. certificates, keys, bad JSON).\n");
}

/* Load HYPER_SETTINGS into hc; exits 2 with one error line on any error. */
static struct json_object *
load_settings(struct hyper_conf *hc)
{
	struct json_object *tree;
	const char *paths = getenv("HYPER_SETTINGS");
	char err[1024];

	if (paths == NULL || *paths == '\0') {
		log_errorx("settings: HYPER_SETTINGS is not set");
		exit(2);
	}
	if ((tree = settings_load(paths, err, sizeof(err))) == NULL ||
	    hyper_conf_read(tree, hc, err, sizeof(err)) == -1) {
		log_errorx("settings: %s", err);
		exit(2);
	}
	return tree;
}

/* ---- hyper server run ---- */

struct server_state {
	struct event_base *base;
	struct hyper      *hyper;
	struct hyper_conf *conf;       /* the settings h uses */
	struct event      *check;
	struct event      *reload;     /* timer: the next reload */
	double             deadline;
	double             reloaded;   /* monotonic time of the last reload */
	int                signals;
	int                loglevel;   /* --log-level, -1 when not given */
};

static void
server_check(evutil_socket_t fd, short ev, void *arg)
{
	struct server_state *st = arg;

	if (st->hyper->h_inflight > 0 && now_mono() < st->deadline)
		return;
	if (st->hyper->h_inflight > 0)
		log_warnx("stopping with %d calls still pending", st->hyper->h_inflight);
	event_base_loopexit(st->base, NULL);
}

static void
server_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct server_state *st = arg;
	struct timeval tv = { 0, STOP_CHECK_USEC };

	if (st->signals++ > 0) {
		log_warnx("second signal: stopping now");
		event_base_loopexit(st->base, NULL);
		return;
	}
	log_info("signal %d: stopping (up to %.1f s for %d pending calls)", (int)sig,
	    st->hyper->h_conf->stop_timeout, st->hyper->h_inflight);
	hyper_stop(st->hyper);
	st->deadline = now_mono() + st->hyper->h_conf->stop_timeout;
	st->check = event_new(st->base, -1, EV_PERSIST, server_check, st);
	if (st->check == NULL || event_add(st->check, &tv) == -1)
		event_base_loopexit(st->base, NULL);
}

/* Re-read HYPER_SETTINGS; the old settings stay on any error. */
static void
server_reload(evutil_socket_t fd, short ev, void *arg)
{
	struct server_state *st = arg;
	struct json_object *tree;
	struct hyper_conf *hc;
	const char *paths = getenv("HYPER_SETTINGS");
	char err[1024], changed[512];

	st->reloaded = now_mono();
	if (st->hyper->h_stopping)
		return;
	if ((hc = calloc(1, sizeof(*hc))) == NULL) {
		log_warnx("reload failed, keeping the old settings: out of memory");
		return;
	}
	if ((tree = settings_load(paths, err, sizeof(err))) == NULL ||
	    hyper_conf_read(tree, hc, err, sizeof(err)) == -1 ||
	    hyper_reload(st->hyper, hc, tree, changed, sizeof(changed), err,
	    sizeof(err)) == -1) {
		log_warnx("reload failed, keeping the old settings: %s", err);
		hyper_conf_free(hc);
		free(hc);
	} else {
		if (st->loglevel == -1 && hc->log_level != NULL)
			log_init("hyper", (enum log_level)log_level_parse(hc->log_level));
		hyper_conf_free(st->conf);
		free(st->conf);
		st->conf = hc;
		log_info("reloaded settings: %s", changed);
	}
	if (tree != NULL)
		json_object_put(tree);
}

/* SIGHUP: one reload soon; a storm of them is one reload per interval. */
static void
server_hup(evutil_socket_t sig, short ev, void *arg)
{
	struct server_state *st = arg;
	struct timeval tv;
	double wait;

	if (evtimer_pending(st->reload, NULL))
		return;
	wait = st->reloaded + st->conf->reload_interval - now_mono();
	tv = tv_seconds(wait > 0 ? wait : 0);
	evtimer_add(st->reload, &tv);
}

static int
server_run(int loglevel)
{
	struct hyper_conf *hc;
	struct json_object *tree;
	struct server_state st;
	struct event *sigint, *sigterm, *sighup;
	char err[1024];
	int settings_error;

	if ((hc = calloc(1, sizeof(*hc))) == NULL)
		fatalx("out of memory");
	tree = load_settings(hc);
	if (loglevel == -1 && hc->log_level != NULL)
		log_init("hyper", (enum log_level)log_level_parse(hc->log_level));
	/* A peer closing mid-write must not kill the process. */
	signal(SIGPIPE, SIG_IGN);
	memset(&st, 0, sizeof(st));
	st.conf = hc;
	st.loglevel = loglevel;
	if ((st.base = jsonrpc_base_new()) == NULL)
		fatalx("cannot create the event loop");
	if ((st.hyper = hyper_new(st.base, hc, &settings_error, err, sizeof(err))) == NULL) {
		log_errorx("%s%s", settings_error ? "settings: " : "", err);
		exit(settings_error ? 2 : 1);
	}
	sigint = evsignal_new(st.base, SIGINT, server_signal, &st);
	sigterm = evsignal_new(st.base, SIGTERM, server_signal, &st);
	sighup = evsignal_new(st.base, SIGHUP, server_hup, &st);
	st.reload = evtimer_new(st.base, server_reload, &st);
	if (sigint == NULL || sigterm == NULL || sighup == NULL || st.reload == NULL ||
	    evsignal_add(sigint, NULL) == -1 || evsignal_add(sigterm, NULL) == -1 ||
	    evsignal_add(sighup, NULL) == -1)
		fatalx("cannot install signal handlers");
	event_base_dispatch(st.base);
	hyper_free(st.hyper);
	if (st.check != NULL)
		event_free(st.check);
	event_free(st.reload);
	event_free(sigint);
	event_free(sigterm);
	event_free(sighup);
	event_base_free(st.base);
	hyper_conf_free(st.conf);
	free(st.conf);
	json_object_put(tree);
	log_info("stopped");
	return 0;
}

/* ---- hyper call ---- */

struct call_state {
	struct event_base *base;
	int                rc;
};

static void
call_done(void *arg, struct json_object *result, struct json_object *error)
{
	struct call_state *st = arg;
	const int flags = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
	    JSON_C_TO_STRING_NOSLASHESCAPE;

	if (error != NULL) {
		fprintf(stderr, "%s\n", json_object_to_json_string_ext(error, flags));
		st->rc = 1;
	} else {
		printf("%s\n", json_object_to_json_string_ext(result, flags));
		st->rc = 0;
	}
	event_base_loopbreak(st->base);
}

/* https URL of the local jsonrpc_server: a wildcard bind address is reached
 * on loopback. */
static int
call_url(const struct hyper_conf *hc, char *url, size_t len)
{
	const char *bind = hc->local.bind_address, *colon, *host;
	char h[256];
	size_t n;

	if ((colon = strrchr(bind, ':')) == NULL || colon[1] == '\0' ||
	    strcmp(colon + 1, "0") == 0)
		return -1;
	n = (size_t)(colon - bind);
	if (n >= sizeof(h))
		return -1;
	memcpy(h, bind, n);
	h[n] = '\0';
	host = h;
	if (n == 0 || strcmp(h, "0.0.0.0") == 0 || strcmp(h, "*") == 0)
		host = n == 0 ? "localhost" : "127.0.0.1";
	else if (strcmp(h, "[::]") == 0)
		host = "[::1]";
	snprintf(url, len, "https://%s:%s%s", host, colon + 1,
	    hc->local.path != NULL ? hc->local.path : "/jsonrpc");
	return 0;
}

/*
 * The JSON argument of `call`, parsed strictly (RFC 8259: no single quotes,
 * no bare keys, no trailing commas or characters).  NULL after one error line
 * that says where and why.
 */
static struct json_object *
call_params(const char *json)
{
	struct json_tokener *tok;
	struct json_object *o;
	enum json_tokener_error e;
	size_t len = strlen(json), end;

	if ((tok = json_tokener_new()) == NULL)
		fatalx("out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, json, (int)len);
	e = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (o == NULL && e == json_tokener_continue)
		log_errorx("call: JSON: unexpected end of input at offset %zu", len);
	else if (o == NULL && end < len && json[end] > ' ' && json[end] < 0x7f)
		log_errorx("call: JSON: %s at offset %zu ('%c')", json_tokener_error_desc(e),
		    end, json[end]);
	else if (o == NULL)
		log_errorx("call: JSON: %s at offset %zu", json_tokener_error_desc(e), end);
	else {
		while (end < len && strchr(" \t\r\n", json[end]) != NULL)
			end++;
		if (end < len)
			log_errorx("call: JSON: unexpected characters after the value at "
			    "offset %zu", end);
		else if (!json_object_is_type(o, json_type_object))
			log_errorx("call: JSON: parameters must be an object, not %s",
			    json_type_to_name(json_object_get_type(o)));
		else
			return o;
		json_object_put(o);
	}
	return NULL;
}

static int
call_run(const char *method, const char *json, double timeout)
{
	struct hyper_conf hc;
	struct json_object *tree, *params;
	struct jsonrpc_client_conf cc;
	struct jsonrpc_client *client;
	struct call_state st;
	SSL_CTX *ctx;
	char url[600], err[512];

	if (json != NULL) {
		if ((params = call_params(json)) == NULL)
			return 2;
	} else
		params = json_object_new_object();
	tree = load_settings(&hc);
	if (call_url(&hc, url, sizeof(url)) == -1) {
		log_errorx("settings: channel %s: bind_address %s cannot be called",
		    hc.local.chname, hc.local.bind_address);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* The operator's own certificate, as its applications present it. */
	if ((ctx = tls_client_ctx(&hc.local.tls, err, sizeof(err))) == NULL) {
		log_errorx("settings: channel %s: tls: %s", hc.local.chname, err);
		return 2;
	}
	if ((st.base = jsonrpc_base_new()) == NULL)
		fatalx("cannot create the event loop");
	memset(&cc, 0, sizeof(cc));
	cc.url = url;
	cc.ssl_ctx = ctx;
	cc.server_name = hc.name;
	cc.connect_timeout = timeout < 2 ? timeout : 2;
	cc.call_timeout = timeout;
	cc.pool_size = 1;
	if ((client = jsonrpc_client_new(st.base, &cc, err, sizeof(err))) == NULL) {
		log_errorx("call: %s", err);
		return 1;
	}
	st.rc = -1;
	jsonrpc_client_call(client, method, params, call_done, &st);
	event_base_dispatch(st.base);
	if (st.rc == -1) {
		log_errorx("call: no reply from %s", url);
		st.rc = 1;
	}
	jsonrpc_client_free(client);
	event_base_free(st.base);
	SSL_CTX_free(ctx);
	json_object_put(params);
	json_object_put(tree);
	hyper_conf_free(&hc);
	return st.rc;
}

int
main(int argc, char **argv)
{
	const char *pos[4];
	const char *val;
	double timeout = CALL_TIMEOUT_DEFAULT;
	int npos = 0, loglevel = -1;
	char *end;

	log_init("hyper", LOG_LVL_INFO);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			printf("hyper %s\n", HP_VERSION);
			return 0;
		}
		if (strcmp(a, "--log-level") == 0 || strcmp(a, "--timeout") == 0) {
			if (i + 1 >= argc) {
				log_errorx("%s needs a value (see --help)", a);
				return 2;
			}
			val = argv[++i];
		} else if (strncmp(a, "--log-level=", 12) == 0 || strncmp(a, "--timeout=", 10) == 0)
			val = strchr(a, '=') + 1;
		else if (a[0] == '-' && a[1] != '\0') {
			log_errorx("unknown option %s (see --help)", a);
			return 2;
		} else {
			if (npos == 4) {
				log_errorx("too many arguments (see --help)");
				return 2;
			}
			pos[npos++] = a;
			continue;
		}
		if (strncmp(a, "--log-level", 11) == 0) {
			if ((loglevel = log_level_parse(val)) == -1) {
				log_errorx("--log-level: expected error, warn, info or debug");
				return 2;
			}
			log_init("hyper", (enum log_level)loglevel);
		} else {
			timeout = strtod(val, &end);
			if (*val == '\0' || *end != '\0' || !(timeout > 0 && timeout <= 3600)) {
				log_errorx("--timeout: expected seconds in (0, 3600]");
				return 2;
			}
		}
	}
	if (npos == 2 && strcmp(pos[0], "server") == 0 && strcmp(pos[1], "run") == 0)
		return server_run(loglevel);
	if ((npos == 2 || npos == 3) && strcmp(pos[0], "call") == 0)
		return call_run(pos[1], npos == 3 ? pos[2] : NULL, timeout);
	usage(stderr);
	return 2;
}
