/* echo-service.c - a tiny JSON-RPC service playing a proxy behind its Hyper
 * in tests/e2e/hyper.sh.  mTLS: only certificates carrying HYPER_NAME.
 *
 *   echo-service BIND CERT KEY CA HYPER_NAME
 *
 * Methods: anything -> {"method": M, "params": P} (P incl. _client);
 * "fail" -> error 409 "service refused". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "jsonrpc.h"
#include "log.h"
#include "tls.h"

static const char *echo_hyper;

static int
echo_identity(void *arg, X509 *leaf)
{
	return tls_cert_has_name(leaf, echo_hyper);
}

static void
echo_handle(void *arg, struct jsonrpc_call *call)
{
	struct json_object *r;

	if (strcmp(jsonrpc_call_method(call), "fail") == 0) {
		jsonrpc_call_error(call, HP_ERR_CONFLICT, "service refused");
		return;
	}
	r = json_object_new_object();
	json_object_object_add(r, "method", json_object_new_string(jsonrpc_call_method(call)));
	json_object_object_add(r, "params", json_object_get(jsonrpc_call_params(call)));
	jsonrpc_call_reply(call, r);
}

static void
echo_stop(evutil_socket_t sig, short ev, void *arg)
{
	event_base_loopexit(arg, NULL);
}

int
main(int argc, char **argv)
{
	struct jsonrpc_server_conf sc;
	struct jsonrpc_server *s;
	struct event_base *base;
	struct event *sig;
	struct tls_conf t;
	char *cas[2];
	SSL_CTX *ctx;
	char err[512];

	if (argc != 6) {
		fprintf(stderr, "usage: echo-service BIND CERT KEY CA HYPER_NAME\n");
		return 2;
	}
	log_init("echo-service", LOG_LVL_WARN);
	signal(SIGPIPE, SIG_IGN);
	echo_hyper = argv[5];
	memset(&t, 0, sizeof(t));
	cas[0] = argv[4];
	cas[1] = NULL;
	t.ca_files = cas;
	t.cert_file = argv[2];
	t.key_file = argv[3];
	t.verify_client = 1;
	if ((ctx = tls_server_ctx(&t, echo_identity, NULL, err, sizeof(err))) == NULL)
		fatalx("%s", err);
	base = event_base_new();
	memset(&sc, 0, sizeof(sc));
	sc.bind_address = argv[1];
	sc.path = "/jsonrpc";
	sc.ssl_ctx = ctx;
	if ((s = jsonrpc_server_new(base, &sc, echo_handle, NULL, err, sizeof(err))) == NULL)
		fatalx("%s", err);
	sig = evsignal_new(base, SIGTERM, echo_stop, base);
	evsignal_add(sig, NULL);
	event_base_dispatch(base);
	jsonrpc_server_free(s);
	event_free(sig);
	event_base_free(base);
	SSL_CTX_free(ctx);
	return 0;
}
