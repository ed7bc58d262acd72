/* conf.c - read the public: or private: section of PROXY_SETTINGS. */
#include <bsd/stdlib.h>
#include <bsd/string.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "announce.h"
#include "datastore.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "proxyproto.h"
#include "relay.h"
#include "reload.h"
#include "settings.h"
#include "util.h"

#define DAY (24.0 * 3600)

/* data_rate_limits when absent: new data connections per source address */
static const struct rate_limit data_rate_default = { .rl_window = 1, .rl_limit = 1000 };

static int
conf_rpc(struct cfg *sec, struct proxy_conf *pc)
{
	struct cfg cl, sv;

	if (cfg_section(sec, "jsonrpc_client", 1, &cl) == 0) {
		cfg_string(&cl, "endpoint", NULL, 1, &pc->pc_rpc_client_url);
		tls_conf_read(&cl, "tls", 1, &pc->pc_rpc_client_tls);
		cfg_seconds(&cl, "connect_timeout", 2, 0.001, DAY, &pc->pc_rpc_connect_timeout);
		cfg_seconds(&cl, "timeout", 10, 0.001, DAY, &pc->pc_rpc_timeout);
		cfg_done(&cl);
	}
	if (cfg_section(sec, "jsonrpc_server", 1, &sv) == 0) {
		cfg_string(&sv, "bind_address", NULL, 1, &pc->pc_rpc_server_bind);
		cfg_string(&sv, "path", "/jsonrpc", 0, &pc->pc_rpc_server_path);
		tls_conf_read(&sv, "tls", 1, &pc->pc_rpc_server_tls);
		cfg_done(&sv);
	}
	return 0;
}

/* public: directory {type: json, settings: {path, poll_interval}}, optional:
 * the announcements' allowed_domains are re-checked against it. */
static int
conf_directory(struct cfg *sec, struct proxy_conf *pc)
{
	struct cfg d, st;
	char *type = NULL;

	pc->pc_dir_poll = 2;
	if (cfg_section(sec, "directory", 0, &d) < 0)
		return -1;
	if (d.obj == NULL)
		return 0;
	cfg_string(&d, "type", "json", 0, &type);
	if (type && strcmp(type, "json") != 0)
		cfg_error(&d, "type", "unknown directory type '%s' (expected json)", type);
	free(type);
	if (cfg_section(&d, "settings", 1, &st) == 0) {
		cfg_strv(&st, "path", 1, &pc->pc_dir_paths);
		cfg_seconds(&st, "poll_interval", 2, 0.1, 3600, &pc->pc_dir_poll);
		cfg_done(&st);
	}
	return cfg_done(&d);
}

static int conf_hostport_ok(const char *hp);

static int
conf_datastore(struct cfg *sec, struct proxy_conf *pc)
{
	struct cfg ds, st;
	char *type = NULL;

	if (cfg_section(sec, "datastore", 0, &ds) < 0)
		return -1;
	if (ds.obj == NULL)
		return 0;        /* in memory only */
	cfg_string(&ds, "type", "file", 0, &type);
	if (type && strcmp(type, "redis") == 0)
		pc->pc_datastore_redis = 1;
	else if (type && strcmp(type, "file") != 0)
		cfg_error(&ds, "type", "unknown datastore type '%s' (expected file or redis)",
		    type);
	free(type);
	if (pc->pc_datastore_redis && pc->pc_role != PROXY_PUBLIC)
		cfg_error(&ds, "type", "redis is for the public proxy only");
	if (!pc->pc_datastore_redis) {
		if (cfg_section(&ds, "settings", 1, &st) == 0) {
			cfg_string(&st, "filename", NULL, 1, &pc->pc_datastore_file);
			cfg_done(&st);
		}
		return cfg_done(&ds);
	}
	/* every key has a default: settings may be left out */
	if (cfg_section(&ds, "settings", 0, &st) == 0) {
		int tls = 0;

		cfg_string(&st, "address", DATASTORE_REDIS_ADDRESS, 0, &pc->pc_redis_address);
		cfg_string(&st, "key_prefix", DATASTORE_REDIS_PREFIX, 0, &pc->pc_redis_prefix);
		cfg_string(&st, "password", NULL, 0, &pc->pc_redis_password);
		cfg_seconds(&st, "timeout", DATASTORE_REDIS_TIMEOUT, 0.01, 60,
		    &pc->pc_redis_timeout);
		cfg_bool(&st, "tls", 0, &tls);
		if (tls)
			cfg_error(&st, "tls", "TLS to Redis is not supported yet (use a "
			    "loopback or private link, or a TLS tunnel such as stunnel)");
		if (pc->pc_redis_address != NULL && !conf_hostport_ok(pc->pc_redis_address))
			cfg_error(&st, "address", "%s: expected host:port",
			    pc->pc_redis_address);
		cfg_done(&st);
	}
	return cfg_done(&ds);
}

/* A list of {type: second|minute|hour, limit: N} under key.  Absent: the
 * one rule def (NULL: none); an empty list: none. */
static void
conf_rate_limits(struct cfg *sec, const char *key, const struct rate_limit *def,
    struct rate_limit **out, int *nout)
{
	int n;

	if (cfg_raw(sec, key) == NULL) {
		if (def != NULL && (*out = calloc(1, sizeof(**out))) != NULL) {
			**out = *def;
			*nout = 1;
		}
		return;
	}
	if ((n = cfg_list_len(sec, key)) <= 0)
		return;
	*out = calloc((size_t)n, sizeof(**out));
	for (int i = 0; i < n && *out; i++) {
		struct cfg rl;
		char *type = NULL;

		if (cfg_list_map(sec, key, i, &rl) < 0)
			return;
		cfg_string(&rl, "type", NULL, 1, &type);
		cfg_int(&rl, "limit", 0, 1, 1000000000L, &(*out)[i].rl_limit);
		if (type && strcmp(type, "second") == 0)
			(*out)[i].rl_window = 1;
		else if (type && strcmp(type, "minute") == 0)
			(*out)[i].rl_window = 60;
		else if (type && strcmp(type, "hour") == 0)
			(*out)[i].rl_window = 3600;
		else if (type)
			cfg_error(&rl, "type", "must be second, minute or hour");
		free(type);
		cfg_done(&rl);
		*nout = i + 1;
	}
}

static void
conf_rate_prefixes(struct cfg *sec, struct rate_prefixes *rp)
{
	struct cfg sub;

	if (cfg_section(sec, "rate_limit_prefixes", 0, &sub) < 0)
		return;
	cfg_int(&sub, "ipv4_24", 16, 0, 1000000L, &rp->rp_v4_24);
	cfg_int(&sub, "ipv6_56", 16, 0, 1000000L, &rp->rp_v6_56);
	cfg_int(&sub, "ipv6_48", 64, 0, 1000000L, &rp->rp_v6_48);
	cfg_done(&sub);
}

static void
conf_announcements(struct cfg *sec, struct proxy_conf *pc)
{
	int n = cfg_list_len(sec, "announcements");

	if (n <= 0)
		return;
	pc->pc_announcements = calloc((size_t)n, sizeof(*pc->pc_announcements));
	for (int i = 0; i < n && pc->pc_announcements; i++) {
		struct static_announcement *a = &pc->pc_announcements[i];
		struct cfg an;
		char *exp = NULL, *pp = NULL, dom[ANNOUNCE_DOMAIN_MAX];

		if (cfg_list_map(sec, "announcements", i, &an) < 0)
			return;
		pc->pc_nannouncements = i + 1;
		cfg_string(&an, "domain", NULL, 1, &a->sa_domain);
		cfg_string(&an, "proxy", NULL, 1, &a->sa_proxy);
		cfg_string(&an, "expires_at", NULL, 0, &exp);
		cfg_string(&an, "proxy_protocol", "off", 0, &pp);
		if (pp != NULL && (a->sa_proxy_protocol = proxyproto_version_parse(pp)) < 0) {
			cfg_error(&an, "proxy_protocol", "must be v2, v1 or off");
			a->sa_proxy_protocol = PROXYPROTO_OFF;
		}
		free(pp);
		if (a->sa_domain && announce_check_domain(a->sa_domain, dom) < 0)
			cfg_error(&an, "domain", "not a valid DNS name or *.name wildcard");
		else if (a->sa_domain)
			memcpy(a->sa_domain, dom, strlen(dom) + 1);
		if (exp && rfc3339_parse(exp, &a->sa_expires_at) < 0)
			cfg_error(&an, "expires_at", "expected an RFC 3339 time");
		free(exp);
		cfg_done(&an);
	}
}

/* "host:port" or "[v6]:port" with a port of 1-65535 (the host is resolved
 * at start, not here). */
static int
conf_hostport_ok(const char *hp)
{
	const char *port = strrchr(hp, ':');
	char *end;
	long n;

	if (port == NULL || port == hp || (hp[0] == '[' && port[-1] != ']'))
		return 0;
	n = strtol(port + 1, &end, 10);
	return port[1] >= '0' && port[1] <= '9' && *end == '\0' && n >= 1 && n <= 65535;
}

static void
conf_public_proxies(struct cfg *sec, struct proxy_conf *pc)
{
	int n = cfg_list_len(sec, "public_proxies");

	if (n <= 0)
		return;
	pc->pc_public_proxies = calloc((size_t)n, sizeof(*pc->pc_public_proxies));
	for (int i = 0; i < n && pc->pc_public_proxies; i++) {
		struct public_proxy *pp = &pc->pc_public_proxies[i];
		struct cfg c;

		if (cfg_list_map(sec, "public_proxies", i, &c) < 0)
			return;
		pc->pc_npublic_proxies = i + 1;
		cfg_string(&c, "name", NULL, 1, &pp->pp_name);
		cfg_strv(&c, "data_endpoints", 1, &pp->pp_data_endpoints);
		cfg_int(&c, "pool_size", -1, 0, 256, &pp->pp_pool_size);
		if (pp->pp_name != NULL && *pp->pp_name == '\0')
			cfg_error(&c, "name", "must not be empty");
		for (int j = 0; pp->pp_name != NULL && j < i; j++)
			if (pc->pc_public_proxies[j].pp_name != NULL &&
			    strcmp(pc->pc_public_proxies[j].pp_name, pp->pp_name) == 0)
				cfg_error(&c, "name", "%s is listed twice", pp->pp_name);
		if (pp->pp_data_endpoints != NULL && pp->pp_data_endpoints[0] == NULL)
			cfg_error(&c, "data_endpoints", "must list at least one host:port");
		for (char **e = pp->pp_data_endpoints; e != NULL && *e != NULL; e++)
			if (!conf_hostport_ok(*e)) {
				cfg_error(&c, "data_endpoints", "%s: expected host:port", *e);
				break;
			}
		cfg_done(&c);
	}
}

int
proxy_conf_load(const char *pathlist, enum proxy_role role, struct proxy_conf *pc,
    char *err, size_t errlen)
{
	struct json_object *tree;
	struct cfg root, sec;
	const char *secname = role == PROXY_PUBLIC ? "public" : "private";

	memset(pc, 0, sizeof(*pc));
	pc->pc_role = role;
	if (pathlist == NULL || *pathlist == '\0') {
		snprintf(err, errlen, "PROXY_SETTINGS is not set");
		return -1;
	}
	if ((tree = settings_load(pathlist, err, errlen)) == NULL)
		return -1;
	cfg_root(&root, tree);
	/* A settings folder may hold both roles; the other one is not read. */
	cfg_raw(&root, role == PROXY_PUBLIC ? "private" : "public");
	cfg_string(&root, "log_level", "info", 0, &pc->pc_log_level);
	if (cfg_section(&root, secname, 1, &sec) == 0) {
		cfg_string(&sec, "name", NULL, 1, &pc->pc_name);
		if (role == PROXY_PUBLIC) {
			cfg_string(&sec, "tls_bind_address", "localhost:443", 0, &pc->pc_tls_bind);
			cfg_string(&sec, "internal_bind_address", "localhost:9999", 0, &pc->pc_data_bind);
			cfg_string(&sec, "internal_endpoint", PROXY_DATA_ENDPOINT_DEFAULT, 0,
			    &pc->pc_data_endpoint);
			cfg_seconds(&sec, "hello_timeout", 5, 0.001, DAY, &pc->pc_hello_timeout);
			cfg_int(&sec, "hello_max_bytes", 16384, 512, 1 << 20, &pc->pc_hello_max_bytes);
			cfg_seconds(&sec, "accept_timeout", 10, 0.001, DAY, &pc->pc_accept_timeout);
			cfg_seconds(&sec, "token_timeout", 5, 0.001, DAY, &pc->pc_token_timeout);
			cfg_int(&sec, "max_connections_per_source", 256, 0, 1 << 24,
			    &pc->pc_max_per_source);
			cfg_int(&sec, "max_announce_items", 256, 1, 1 << 20,
			    &pc->pc_max_announce_items);
			cfg_int(&sec, "max_announcements_per_operator", 1024, 1, 1 << 24,
			    &pc->pc_max_per_operator);
			cfg_seconds(&sec, "announce_sweep_interval", 5, 0.1, 3600,
			    &pc->pc_sweep_interval);
			cfg_string(&sec, "admin_group", "proxy-admins", 0, &pc->pc_admin_group);
			conf_directory(&sec, pc);
			cfg_int(&sec, "max_data_connections", 1024, 1, 1 << 24,
			    &pc->pc_max_data_connections);
			cfg_seconds(&sec, "ticket_lifetime", 60, 1, DAY, &pc->pc_ticket_lifetime);
			/* a keeper asks for a new key at half its lifetime */
			cfg_seconds(&sec, "ticket_key_lifetime", 600, 0, DAY,
			    &pc->pc_ticket_key_lifetime);
			if (pc->pc_ticket_key_lifetime > 0 && pc->pc_ticket_key_lifetime < 10)
				cfg_error(&sec, "ticket_key_lifetime",
				    "must be 0 (no keys) or between 10 and 86400");
			cfg_int(&sec, "max_pooled_per_operator", 64, 1, 1 << 20,
			    &pc->pc_max_pooled);
			cfg_seconds(&sec, "pool_idle_lifetime", 60, 1, DAY,
			    &pc->pc_pool_idle_lifetime);
			cfg_seconds(&sec, "incoming_retry_backoff", 1, 0, 60,
			    &pc->pc_incoming_retry);
			cfg_seconds(&sec, "pool_wait", 0.05, 0, 10, &pc->pc_pool_wait);
			conf_rate_limits(&sec, "tcp_rate_limits", NULL, &pc->pc_rate_limits,
			    &pc->pc_nrate_limits);
			conf_rate_limits(&sec, "data_rate_limits", &data_rate_default,
			    &pc->pc_data_rate_limits, &pc->pc_ndata_rate_limits);
			conf_rate_prefixes(&sec, &pc->pc_rate_prefixes);
		} else {
			struct cfg ie;

			if (cfg_section(&sec, "internal_endpoint", 0, &ie) == 0) {
				cfg_string(&ie, "address", "localhost:8888", 0, &pc->pc_internal_address);
				cfg_done(&ie);
			}
			cfg_seconds(&sec, "connect_timeout", 5, 0.001, DAY, &pc->pc_connect_timeout);
			/* re-announce well before an announcement without expires_at
			 * lapses at the public proxy (ANNOUNCE_MAX_EXPIRY) */
			cfg_seconds(&sec, "announce_interval", 300, 1, ANNOUNCE_MAX_EXPIRY / 2,
			    &pc->pc_announce_interval);
			conf_announcements(&sec, pc);
			conf_public_proxies(&sec, pc);
			cfg_int(&sec, "pool_size", POOL_SIZE_DEFAULT, 0, 256, &pc->pc_pool_size);
			cfg_int(&sec, "pool_batch", 32, 1, 256, &pc->pc_pool_batch);
			cfg_seconds(&sec, "instances_interval", 2, 0, 3600,
			    &pc->pc_instances_interval);
			cfg_seconds(&sec, "token_timeout", 5, 0.001, DAY, &pc->pc_frame_timeout);
		}
		cfg_seconds(&sec, "idle_timeout", 3600, 0, 365 * DAY, &pc->pc_idle_timeout);
		cfg_seconds(&sec, "stall_timeout", 60, 0, 365 * DAY, &pc->pc_stall_timeout);
		cfg_int(&sec, "relay_buffers", 256, 1, 32768, &pc->pc_relay_buffers);
		cfg_int(&sec, "relay_buffer_size", 64 * 1024, 4096, 1 << 24, &pc->pc_relay_buffer_size);
		if ((pc->pc_relay_buffers & (pc->pc_relay_buffers - 1)) != 0)
			cfg_error(&sec, "relay_buffers", "must be a power of two");
		cfg_seconds(&sec, "shutdown_timeout", 10, 0, DAY, &pc->pc_shutdown_timeout);
		cfg_int(&sec, "max_connections", 65536, 16, 1 << 24, &pc->pc_max_connections);
		{
			struct json_object *v;

			/* A null value counts as absent, like everywhere else. */
			pc->pc_max_connections_set = sec.obj != NULL &&
			    json_object_object_get_ex(sec.obj, "max_connections", &v) && v != NULL;
			pc->pc_max_data_connections_set = sec.obj != NULL &&
			    json_object_object_get_ex(sec.obj, "max_data_connections", &v) &&
			    v != NULL;
		}
		cfg_bool(&sec, "reuse_port", 0, &pc->pc_reuse_port);
		/* issue #12: a public instance's id in Redis; a private
		 * proxy's "instance" in its announcement calls */
		cfg_string(&sec, "instance_id", NULL, 0, &pc->pc_instance_id);
		if (pc->pc_instance_id != NULL && !proxy_instance_id_valid(pc->pc_instance_id))
			cfg_error(&sec, "instance_id", "1 to %d letters, digits or . _ : -",
			    PROXY_INSTANCE_ID_MAX);
		if (role == PROXY_PUBLIC) {
			char def[HANDOVER_NAME_MAX + 1];

			cfg_seconds(&sec, "instance_heartbeat", 2, 0.1, 60,
			    &pc->pc_instance_heartbeat);

			/* one group of listeners per data address and namespace
			 * (truncated: a long address still gives a valid name) */
			snprintf(def, sizeof(def), "hyper-relay-public:%s",
			    pc->pc_data_bind ? pc->pc_data_bind : "");
			cfg_string(&sec, "handover_socket", def, 0, &pc->pc_handover_socket);
			if (pc->pc_handover_socket != NULL &&
			    strlen(pc->pc_handover_socket) > HANDOVER_NAME_MAX)
				cfg_error(&sec, "handover_socket", "longer than %d bytes",
				    HANDOVER_NAME_MAX);
		}
		cfg_int(&sec, "splice_threshold", 256 * 1024, -1, 1L << 40, &pc->pc_splice_threshold);
		cfg_int(&sec, "pipe_size", 1 << 20, 4096, 1 << 30, &pc->pc_pipe_size);
		cfg_int(&sec, "max_pipes", 1024, 0, 1 << 20, &pc->pc_max_pipes);
		cfg_string(&sec, "metrics", NULL, 0, &pc->pc_metrics_bind);
		if (pc->pc_metrics_bind != NULL && !metrics_address_ok(pc->pc_metrics_bind))
			cfg_error(&sec, "metrics", "%s: expected host:port", pc->pc_metrics_bind);
		cfg_seconds(&sec, "metrics_timeout", METRICS_TIMEOUT_DEFAULT, 0.001, 3600,
		    &pc->pc_metrics_timeout);
		cfg_seconds(&sec, "reload_interval", RELOAD_INTERVAL_DEFAULT, 0, 3600,
		    &pc->pc_reload_interval);
		conf_datastore(&sec, pc);
		conf_rpc(&sec, pc);
		cfg_done(&sec);
	}
	cfg_done(&root);
	if (root.failed)
		snprintf(err, errlen, "%s", cfg_errstr(&root));
	json_object_put(tree);
	if (root.failed) {
		proxy_conf_free(pc);
		return -1;
	}
	return 0;
}

int
proxy_instance_id_valid(const char *id)
{
	size_t n = strlen(id);

	return n > 0 && n <= PROXY_INSTANCE_ID_MAX && strspn(id, PROXY_INSTANCE_ID_CHARS) == n;
}

void
proxy_instance_id(const struct proxy_conf *pc, char out[PROXY_INSTANCE_ID_MAX + 1])
{
	char host[256] = "";
	int n;

	if (pc->pc_instance_id != NULL) {
		strlcpy(out, pc->pc_instance_id, PROXY_INSTANCE_ID_MAX + 1);
		return;
	}
	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = '\0';
	/* the host name up to a character an id may not hold, at most 40 */
	n = (int)strspn(host, PROXY_INSTANCE_ID_CHARS);
	if (n > 40)
		n = 40;
	/* private: the host name alone, so that a restart replaces its own
	 * announcements instead of leaving them to expire beside the new
	 * ones; public: one per start (two run side by side in a hand-over) */
	if (pc->pc_role == PROXY_PRIVATE)
		snprintf(out, PROXY_INSTANCE_ID_MAX + 1, "%.*s", n > 0 ? n : 7,
		    n > 0 ? host : "private");
	else
		snprintf(out, PROXY_INSTANCE_ID_MAX + 1, "%.*s%s%08x", n, host, n > 0 ? "-" : "",
		    arc4random());
}

void
proxy_conf_free(struct proxy_conf *pc)
{
	free(pc->pc_name);
	free(pc->pc_tls_bind);
	free(pc->pc_data_bind);
	free(pc->pc_handover_socket);
	free(pc->pc_instance_id);
	free(pc->pc_data_endpoint);
	free(pc->pc_rate_limits);
	free(pc->pc_data_rate_limits);
	free(pc->pc_internal_address);
	for (int i = 0; i < pc->pc_nannouncements; i++) {
		free(pc->pc_announcements[i].sa_domain);
		free(pc->pc_announcements[i].sa_proxy);
	}
	free(pc->pc_announcements);
	for (int i = 0; i < pc->pc_npublic_proxies; i++) {
		free(pc->pc_public_proxies[i].pp_name);
		cfg_strv_free(pc->pc_public_proxies[i].pp_data_endpoints);
	}
	free(pc->pc_public_proxies);
	free(pc->pc_datastore_file);
	free(pc->pc_redis_address);
	free(pc->pc_redis_prefix);
	free(pc->pc_redis_password);
	free(pc->pc_admin_group);
	cfg_strv_free(pc->pc_dir_paths);
	free(pc->pc_log_level);
	free(pc->pc_metrics_bind);
	free(pc->pc_rpc_client_url);
	free(pc->pc_rpc_server_bind);
	free(pc->pc_rpc_server_path);
	tls_conf_free(&pc->pc_rpc_client_tls);
	tls_conf_free(&pc->pc_rpc_server_tls);
	memset(pc, 0, sizeof(*pc));
}

void
proxy_conf_relay_settings(const struct proxy_conf *pc, struct relay_settings *rs)
{
	relay_settings_default(rs);
	rs->splice_threshold = pc->pc_splice_threshold < 0 ? SIZE_MAX :
	    (size_t)pc->pc_splice_threshold;
	rs->pipe_size = (size_t)pc->pc_pipe_size;
	rs->max_pipes = (unsigned)pc->pc_max_pipes;
	rs->idle_timeout = pc->pc_idle_timeout;
	rs->stall_timeout = pc->pc_stall_timeout;
	rs->buf_count = (unsigned)pc->pc_relay_buffers;
	rs->buf_size = (size_t)pc->pc_relay_buffer_size;
}
