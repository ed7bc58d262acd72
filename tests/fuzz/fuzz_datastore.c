/* fuzz_datastore.c - libFuzzer target for the datastore replay (make fuzz).
 * fuzz-sources: src/proxy/datastore.c src/proxy/datastore_redis.c src/proxy/announce.c src/common/proxyproto.c src/common/util.c src/common/log.c
 *
 * The input is a store file's content, replayed into a fresh table; every
 * entry that comes out must be a normalized, unexpired announcement. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "announce.h"
#include "datastore.h"
#include "log.h"

#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct announce_table *t;
	struct announcement *v;
	char dom[ANNOUNCE_DOMAIN_MAX];
	const double now = 1790000000;
	int n;

	log_init("fuzz", LOG_LVL_ERROR);
	if ((t = announce_table_new()) == NULL)
		return 0;
	datastore_replay("fuzz", (const char *)data, size, t, now);
	n = announce_list(t, NULL, now, &v);
	check(n >= 0 && (size_t)n == announce_count(t));
	for (int i = 0; i < n; i++) {
		check(announce_check_domain(v[i].an_domain, dom) == 0);
		check(strcmp(dom, v[i].an_domain) == 0);
		check(v[i].an_operator[0] != '\0');
		check(v[i].an_expires_at == 0 || v[i].an_expires_at > now);
		check(announce_lookup(t, v[i].an_domain, v[i].an_proxy, now, NULL) == 0);
	}
	free(v);
	announce_table_free(t);
	return 0;
}
