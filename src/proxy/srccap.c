/* srccap.c - concurrent connections per source (see srccap.h). */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/sys/tree.h>

#include "srccap.h"

struct srccap_entry {
	RB_ENTRY(srccap_entry)	 se_node;
	uint8_t			 se_addr[16];	/* IPv4 mapped, IPv6 cut to /64 */
	long			 se_count;
};

RB_HEAD(srccap_tree, srccap_entry);

struct srccap {
	struct srccap_tree	 sc_tree;
	long			 sc_cap;
	size_t			 sc_sources;
};

static int
srccap_cmp(const struct srccap_entry *a, const struct srccap_entry *b)
{
	return memcmp(a->se_addr, b->se_addr, sizeof(a->se_addr));
}

/* RB_GENERATE_STATIC wants BSD's __unused, which libbsd leaves undefined. */
RB_GENERATE_INTERNAL(srccap_tree, srccap_entry, se_node, srccap_cmp,
    __attribute__((unused)) static)

/* The key of a source: IPv4 as ::ffff:a.b.c.d, IPv6 cut to its /64. */
static int
srccap_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;

		key[10] = key[11] = 0xff;
		memcpy(key + 12, &s4->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;

		memcpy(key, &s6->sin6_addr, 8);
		return 0;
	}
	return -1;
}

struct srccap *
srccap_new(long cap)
{
	struct srccap *sc = calloc(1, sizeof(*sc));

	if (sc == NULL)
		return NULL;
	RB_INIT(&sc->sc_tree);
	sc->sc_cap = cap < 0 ? 0 : cap;
	return sc;
}

void
srccap_free(struct srccap *sc)
{
	struct srccap_entry *e, *next;

	if (sc == NULL)
		return;
	RB_FOREACH_SAFE(e, srccap_tree, &sc->sc_tree, next) {
		RB_REMOVE(srccap_tree, &sc->sc_tree, e);
		free(e);
	}
	free(sc);
}

struct srccap_entry *
srccap_take(struct srccap *sc, const struct sockaddr *sa, int *refused)
{
	struct srccap_entry key, *e;

	*refused = 0;
	if (sc->sc_cap == 0 || srccap_key(sa, key.se_addr) == -1)
		return NULL;
	if ((e = RB_FIND(srccap_tree, &sc->sc_tree, &key)) != NULL) {
		if (e->se_count >= sc->sc_cap) {
			*refused = 1;
			return NULL;
		}
		e->se_count++;
		return e;
	}
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;	/* out of memory: admit, uncounted */
	memcpy(e->se_addr, key.se_addr, sizeof(e->se_addr));
	e->se_count = 1;
	RB_INSERT(srccap_tree, &sc->sc_tree, e);
	sc->sc_sources++;
	return e;
}

void
srccap_release(struct srccap *sc, struct srccap_entry *e)
{
	if (e == NULL || --e->se_count > 0)
		return;
	RB_REMOVE(srccap_tree, &sc->sc_tree, e);
	sc->sc_sources--;
	free(e);
}

size_t
srccap_sources(const struct srccap *sc)
{
	return sc->sc_sources;
}
