/* test_hyper.c - Hyper settings and method parsing (the routing itself runs
 * with real processes in tests/e2e/hyper.sh). */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <json-c/json.h>

#include "hyper.h"
#include "route.h"

#define TLS "{\"ca_certificate_files\": [\"/ca.crt\"], \"certificate_file\": \"/a.crt\", " \
	"\"key_file\": \"/a.key\"}"
#define LOCAL "{\"name\": \"local\", \"type\": \"jsonrpc_server\", \"settings\": " \
	"{\"bind_address\": \"127.0.0.1:0\", \"tls\": " TLS "}}"

static int
conf_from(const char *text, struct hyper_conf *hc, char *err, size_t len)
{
	struct json_object *tree = json_tokener_parse(text);
	int rc;

	cr_assert_not_null(tree, "test JSON must parse: %s", text);
	rc = hyper_conf_read(tree, hc, err, len);
	json_object_put(tree);
	return rc;
}

Test(hyper_split, operator_is_everything_before_the_last_dot)
{
	char op[64];
	const char *m;

	cr_assert_eq(route_split("private-proxy-1.ga.incomingConnection", op, sizeof(op), &m), 0);
	cr_assert_str_eq(op, "private-proxy-1.ga");
	cr_assert_str_eq(m, "incomingConnection");
}

Test(hyper_split, malformed_methods_are_refused)
{
	char op[8];
	const char *m;

	cr_assert_eq(route_split("nodot", op, sizeof(op), &m), -1);
	cr_assert_eq(route_split(".method", op, sizeof(op), &m), -1);
	cr_assert_eq(route_split("op.", op, sizeof(op), &m), -1);
	cr_assert_eq(route_split("a-much-too-long-operator.m", op, sizeof(op), &m), -1);
	cr_assert_eq(route_split(NULL, op, sizeof(op), &m), -1);
}

Test(hyper_conf, minimal_settings_get_the_documented_defaults)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op.example\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL ", "
	    "{\"name\": \"out\", \"type\": \"peer_client\", \"settings\": {\"tls\": " TLS "}}, "
	    "{\"name\": \"app\", \"type\": \"jsonrpc_client\", \"settings\": "
	    "{\"endpoint\": \"https://localhost:1/jsonrpc\"}}]}", &hc, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(hc.name, "op.example");
	cr_assert_str_eq(hc.dir_paths[0], "/dir");
	cr_assert_null(hc.dir_paths[1]);
	cr_assert_float_eq(hc.dir_poll, 2.0, 1e-9);
	cr_assert_float_eq(hc.stop_timeout, 2.0, 1e-9);
	cr_assert_float_eq(hc.reload_interval, 0.5, 1e-9);
	cr_assert_str_eq(hc.local.path, "/jsonrpc");
	cr_assert_eq(hc.local.max_body, 1L << 20);
	cr_assert_eq(hc.local.max_connections, 1024);
	cr_assert_float_eq(hc.local.handshake_timeout, 10.0, 1e-9);
	cr_assert(hc.peers.set);
	cr_assert_float_eq(hc.peers.connect_timeout, 2.0, 1e-9);
	cr_assert_float_eq(hc.peers.call_timeout, 10.0, 1e-9);
	cr_assert_eq(hc.peers.pool_size, 4);
	cr_assert_float_eq(hc.app.timeout, 10.0, 1e-9);
	cr_assert_float_eq(hc.app.connect_timeout, 2.0, 1e-9);
	cr_assert_not(hc.peer.set);
	hyper_conf_free(&hc);
}

Test(hyper_conf, unknown_key_in_a_channel_is_named)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [{\"name\": \"l\", "
	    "\"type\": \"jsonrpc_server\", \"settings\": {\"bind_address\": \":1\", "
	    "\"bind_adress\": \":2\", \"tls\": " TLS "}}]}", &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "bind_adress") != NULL, "error names the key: %s", err);
}

Test(hyper_conf, reload_interval_is_read_and_range_checked)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"reload_interval\": 2.5, \"directory\": "
	    "{\"type\": \"json\", \"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL "]}",
	    &hc, err, sizeof(err)), 0, "%s", err);
	cr_assert_float_eq(hc.reload_interval, 2.5, 1e-9);
	hyper_conf_free(&hc);
	cr_assert_eq(conf_from("{\"name\": \"op\", \"reload_interval\": -1, \"directory\": "
	    "{\"type\": \"json\", \"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL "]}",
	    &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "reload_interval") != NULL, "error names the key: %s", err);
}

Test(hyper_conf, missing_name_is_an_error)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"directory\": {\"type\": \"json\", \"settings\": "
	    "{\"path\": \"/dir\"}}, \"channels\": [" LOCAL "]}", &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "name") != NULL, "%s", err);
}

Test(hyper_conf, jsonrpc_server_channel_is_required)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": []}", &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "jsonrpc_server") != NULL, "%s", err);
}

Test(hyper_conf, second_channel_of_a_type_is_an_error)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL ", " LOCAL "]}",
	    &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "second jsonrpc_server") != NULL, "%s", err);
}

Test(hyper_conf, unknown_channel_type_is_an_error)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL ", {\"name\": \"g\", "
	    "\"type\": \"grpc_server\", \"settings\": {}}]}", &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "grpc_server") != NULL, "%s", err);
}

Test(hyper_conf, out_of_range_timeout_is_an_error)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL ", {\"name\": \"o\", "
	    "\"type\": \"peer_client\", \"settings\": {\"call_timeout\": -1, \"tls\": " TLS "}}]}",
	    &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "call_timeout") != NULL, "%s", err);
}

Test(hyper_conf, wrong_directory_type_is_an_error)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"grpc\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [" LOCAL "]}",
	    &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "type") != NULL, "%s", err);
}

Test(hyper_conf, ingress_connection_cap_and_handshake_timeout_are_read_and_checked)
{
	struct hyper_conf hc;
	char err[512] = "";

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [{\"name\": \"l\", "
	    "\"type\": \"jsonrpc_server\", \"settings\": {\"bind_address\": \":1\", "
	    "\"max_connections\": 2, \"handshake_timeout\": 0.5, \"tls\": " TLS "}}, "
	    "{\"name\": \"p\", \"type\": \"peer_server\", \"settings\": {\"bind_address\": "
	    "\":2\", \"max_connections\": 3, \"tls\": " TLS "}}]}", &hc, err, sizeof(err)), 0,
	    "%s", err);
	cr_assert_eq(hc.local.max_connections, 2);
	cr_assert_float_eq(hc.local.handshake_timeout, 0.5, 1e-9);
	cr_assert_eq(hc.peer.max_connections, 3);
	cr_assert_float_eq(hc.peer.handshake_timeout, 10.0, 1e-9);
	hyper_conf_free(&hc);

	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [{\"name\": \"l\", "
	    "\"type\": \"jsonrpc_server\", \"settings\": {\"bind_address\": \":1\", "
	    "\"max_connections\": 0, \"tls\": " TLS "}}]}", &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "max_connections") != NULL, "%s", err);
	cr_assert_eq(conf_from("{\"name\": \"op\", \"directory\": {\"type\": \"json\", "
	    "\"settings\": {\"path\": \"/dir\"}}, \"channels\": [{\"name\": \"l\", "
	    "\"type\": \"jsonrpc_server\", \"settings\": {\"bind_address\": \":1\", "
	    "\"handshake_timeout\": 0, \"tls\": " TLS "}}]}", &hc, err, sizeof(err)), -1);
	cr_assert(strstr(err, "handshake_timeout") != NULL, "%s", err);
}
