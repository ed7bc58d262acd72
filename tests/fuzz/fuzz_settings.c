/* fuzz_settings.c - libFuzzer target for the settings loader and the cfg
 * readers (make fuzz).
 * fuzz-sources: src/common/settings.c src/hyper/hyper_conf.c src/common/tls.c src/common/directory.c src/common/util.c src/common/log.c src/proxy/conf.c src/proxy/announce.c src/common/proxyproto.c src/proxy/relay.c src/proxy/loop.c src/proxy/pipepool.c src/proxy/postq.c src/common/metrics.c
 *
 * The input is written once per run to a file in /dev/shm named .yml and
 * loaded with settings_load(), then once more named .json (the suffix picks
 * the parser).  A loaded tree is read by hyper_conf_read() (the Hyper's real
 * reader), by proxy_conf_load() for both roles (the proxies' reader) and by
 * a generic walk that calls every cfg reader on every key.
 * Checks, besides memory safety: a load either gives a map or an error
 * text, and a failed read always leaves an error text. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "hyper_conf.h"
#include "log.h"
#include "proxy_conf.h"
#include "settings.h"

#include "fuzz.h"

static char yml[64], jsn[64];

static void
cleanup(void)
{
	unlink(yml);
	unlink(jsn);
}

static void
put_file(const char *path, const uint8_t *data, size_t size)
{
	int fd;

	check((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0);
	check(write(fd, data, size) == (ssize_t)size);
	close(fd);
}

/* Reads every key of c with a reader picked from the key's first byte, and
 * descends into maps and lists of maps (bounded depth). */
static void
walk(struct cfg *c, int depth)
{
	struct cfg sub;
	char *s, **v;
	long l;
	double d;
	int b, n;

	if (c->obj == NULL || !json_object_is_type(c->obj, json_type_object))
		return;
	json_object_object_foreach(c->obj, k, val) {
		if (depth < 8 && json_object_is_type(val, json_type_object)) {
			if (cfg_section(c, k, 0, &sub) == 0) {
				walk(&sub, depth + 1);
				cfg_done(&sub);
			}
			continue;
		}
		if (depth < 8 && json_object_is_type(val, json_type_array) &&
		    (n = cfg_list_len(c, k)) > 0 &&
		    json_object_is_type(json_object_array_get_idx(val, 0), json_type_object)) {
			for (int i = 0; i < n && i < 16; i++)
				if (cfg_list_map(c, k, i, &sub) == 0) {
					walk(&sub, depth + 1);
					cfg_done(&sub);
				}
			continue;
		}
		switch ((unsigned char)k[0] % 6) {
		case 0:
			if (cfg_string(c, k, "def", 0, &s) == 0)
				check(s != NULL);
			free(s);
			break;
		case 1:
			if (cfg_int(c, k, 5, -100, 100000, &l) == 0)
				check(l >= -100 && l <= 100000);
			break;
		case 2:
			if (cfg_bool(c, k, 1, &b) == 0)
				check(b == 0 || b == 1);
			break;
		case 3:
			if (cfg_seconds(c, k, 2, 0, 3600, &d) == 0)
				check(d >= 0 && d <= 3600);
			break;
		case 4:
			v = NULL;
			if (cfg_strv(c, k, 0, &v) == 0 && v != NULL)
				for (int i = 0; v[i] != NULL; i++)
					check(v[i] != NULL);
			cfg_strv_free(v);
			break;
		default:
			cfg_raw(c, k);
			break;
		}
	}
}

static void
try_load(const char *path, const uint8_t *data, size_t size)
{
	struct json_object *t;
	struct hyper_conf hc;
	struct proxy_conf pc;
	struct cfg c;
	char err[512];

	put_file(path, data, size);
	err[0] = '\0';
	if ((t = settings_load(path, err, sizeof(err))) == NULL) {
		check(err[0] != '\0');
		return;
	}
	check(json_object_is_type(t, json_type_object));
	check(settings_origin(t) != NULL);
	err[0] = '\0';
	if (hyper_conf_read(t, &hc, err, sizeof(err)) == 0)
		hyper_conf_free(&hc);
	else
		check(err[0] != '\0');
	for (int role = 0; role < 2; role++) {
		err[0] = '\0';
		if (proxy_conf_load(path, role == 0 ? PROXY_PUBLIC : PROXY_PRIVATE, &pc,
		    err, sizeof(err)) == 0)
			proxy_conf_free(&pc);
		else
			check(err[0] != '\0');
	}
	if (cfg_root(&c, t) == 0) {
		walk(&c, 0);
		if (cfg_done(&c) == -1)
			check(cfg_errstr(&c)[0] != '\0');
	}
	json_object_put(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (yml[0] == '\0') {
		log_init("fuzz", LOG_LVL_ERROR);
		snprintf(yml, sizeof(yml), "/dev/shm/fuzz-settings-%d.yml", (int)getpid());
		snprintf(jsn, sizeof(jsn), "/dev/shm/fuzz-settings-%d.json", (int)getpid());
		atexit(cleanup);
	}
	try_load(yml, data, size);
	try_load(jsn, data, size);
	return 0;
}
