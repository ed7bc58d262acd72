/* Tests for srccap.c: max_connections_per_source. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "srccap.h"

static struct sockaddr_storage
addr(const char *s)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(s, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, s, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, s, &s4->sin_addr), 1);
	}
	return ss;
}

static struct srccap_entry *
take(struct srccap *sc, const char *s, int *refused)
{
	struct sockaddr_storage ss = addr(s);

	return srccap_take(sc, (struct sockaddr *)&ss, refused);
}

Test(srccap, a_source_holds_at_most_cap_connections)
{
	struct srccap *sc = srccap_new(3);
	struct srccap_entry *e[3], *x;
	int refused;

	for (int i = 0; i < 3; i++) {
		e[i] = take(sc, "192.0.2.7", &refused);
		cr_assert_not_null(e[i]);
		cr_assert_eq(refused, 0);
	}
	x = take(sc, "192.0.2.7", &refused);
	cr_assert_null(x);
	cr_assert_eq(refused, 1, "the fourth connection must be refused");
	/* Another address is not affected. */
	x = take(sc, "192.0.2.8", &refused);
	cr_assert_not_null(x);
	cr_assert_eq(srccap_sources(sc), 2);
	srccap_release(sc, x);
	/* One ends: one more may come. */
	srccap_release(sc, e[0]);
	e[0] = take(sc, "192.0.2.7", &refused);
	cr_assert_not_null(e[0]);
	for (int i = 0; i < 3; i++)
		srccap_release(sc, e[i]);
	cr_assert_eq(srccap_sources(sc), 0, "an entry lives only while it holds connections");
	srccap_free(sc);
}

Test(srccap, an_ipv6_source_is_its_64)
{
	struct srccap *sc = srccap_new(2);
	struct srccap_entry *a, *b, *c;
	int refused;

	a = take(sc, "2001:db8:1:2::1", &refused);
	b = take(sc, "2001:db8:1:2:ffff::9", &refused);
	cr_assert(a && b);
	cr_assert_eq(a, b, "one /64, one entry");
	cr_assert_null(take(sc, "2001:db8:1:2:aaaa::1", &refused));
	cr_assert_eq(refused, 1);
	c = take(sc, "2001:db8:1:3::1", &refused);
	cr_assert_not_null(c, "another /64 has its own count");
	srccap_release(sc, a);
	srccap_release(sc, b);
	srccap_release(sc, c);
	cr_assert_eq(srccap_sources(sc), 0);
	srccap_free(sc);
}

Test(srccap, no_cap_counts_nothing)
{
	struct srccap *sc = srccap_new(0);
	int refused;

	for (int i = 0; i < 1000; i++) {
		cr_assert_null(take(sc, "192.0.2.7", &refused));
		cr_assert_eq(refused, 0);
	}
	cr_assert_eq(srccap_sources(sc), 0);
	srccap_release(sc, NULL);
	srccap_free(sc);
}

Test(srccap, many_sources_then_all_released)
{
	struct srccap *sc = srccap_new(1);
	struct srccap_entry *e[4096];
	char a[64];
	int refused;

	for (int i = 0; i < 4096; i++) {
		snprintf(a, sizeof(a), "10.%d.%d.1", i / 256, i % 256);
		cr_assert_not_null(e[i] = take(sc, a, &refused));
	}
	cr_assert_eq(srccap_sources(sc), 4096);
	for (int i = 0; i < 4096; i += 2)
		srccap_release(sc, e[i]);
	cr_assert_eq(srccap_sources(sc), 2048);
	srccap_free(sc);	/* frees what is left */
}
