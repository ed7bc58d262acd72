/* Tests for ratelimit.c: per-source token buckets, prefix aggregates, the
 * bounded table. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>

#include "proxy_conf.h"
#include "ratelimit.h"

static struct sockaddr_in
v4(const char *ip)
{
	struct sockaddr_in s = { .sin_family = AF_INET };

	inet_pton(AF_INET, ip, &s.sin_addr);
	return s;
}

Test(ratelimit, allows_the_limit_then_refuses_within_the_window)
{
	struct rate_limit r = { .rl_window = 60, .rl_limit = 3 };
	struct ratelimit *rl = ratelimit_new(&r, 1, NULL, 100);
	struct sockaddr_in a = v4("192.0.2.1");

	for (int i = 0; i < 3; i++)
		cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 100.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 100.5), 0);
	/* one token back after window/limit = 20 s */
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 121.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 121.0), 0);
	ratelimit_free(rl);
}

Test(ratelimit, addresses_are_counted_separately)
{
	struct rate_limit r = { .rl_window = 1, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, NULL, 100);
	struct sockaddr_in a = v4("192.0.2.1"), b = v4("192.0.2.2");

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 5.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 5.0), 0);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&b, 5.0), 1);
	ratelimit_free(rl);
}

Test(ratelimit, every_rule_must_allow)
{
	struct rate_limit r[2] = { { 1, 100 }, { 3600, 2 } };
	struct ratelimit *rl = ratelimit_new(r, 2, NULL, 100);
	struct sockaddr_in a = v4("198.51.100.7");

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 0.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 10.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 20.0), 0);
	ratelimit_free(rl);
}

Test(ratelimit, table_is_bounded_and_forgets_only_refilled_entries)
{
	struct rate_limit r = { .rl_window = 10, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, NULL, 8);
	char ip[32];

	for (int i = 0; i < 8; i++) {
		snprintf(ip, sizeof(ip), "203.0.%d.1", i);
		struct sockaddr_in a = v4(ip);
		cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 1.0), 1);
	}
	cr_assert_eq(ratelimit_count(rl), 8);
	/* every entry still limits its source: a new one is refused */
	struct sockaddr_in n = v4("198.51.100.1");
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&n, 2.0), 0);
	/* 10 s later all have refilled: the oldest is forgotten for it */
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&n, 11.5), 1);
	cr_assert_eq(ratelimit_count(rl), 8);
	ratelimit_free(rl);
}

Test(ratelimit, filling_the_table_does_not_reset_a_limited_source)
{
	struct rate_limit r = { .rl_window = 3600, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, NULL, 64);
	struct sockaddr_in attacker = v4("192.0.2.66");
	char ip[32];
	int allowed = 0;

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&attacker, 1.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&attacker, 1.0), 0);
	/* 1000 other sources push the attacker's entry to the end of the
	 * table, then try to push it out */
	for (int i = 0; i < 1000; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
		struct sockaddr_in a = v4(ip);
		allowed += ratelimit_allow(rl, (struct sockaddr *)&a, 2.0);
	}
	cr_assert_eq(allowed, 63, "only the free slots were handed out: %d", allowed);
	cr_assert_eq(ratelimit_count(rl), 64);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&attacker, 3.0), 0,
	    "the attacker got a fresh bucket");
	ratelimit_free(rl);
}

static const struct rate_prefixes agg = { .rp_v4_24 = 16, .rp_v6_56 = 16, .rp_v6_48 = 64 };

Test(ratelimit, the_64s_of_one_56_are_limited_by_its_aggregate)
{
	struct rate_limit r = { .rl_window = 60, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, &agg, 65536);
	char ip[64];
	int allowed = 0;

	/* 256 /64s of 2001:db8:0:ab00::/56, within one second */
	for (int i = 0; i < 256; i++) {
		struct sockaddr_in6 a;

		snprintf(ip, sizeof(ip), "2001:db8:0:ab%02x::1", i);
		a = (struct sockaddr_in6){ .sin6_family = AF_INET6 };
		inet_pton(AF_INET6, ip, &a.sin6_addr);
		allowed += ratelimit_allow(rl, (struct sockaddr *)&a, 100.0 + i / 256.0);
	}
	cr_assert_eq(allowed, 16, "%d of 256 /64s allowed", allowed);
	ratelimit_free(rl);
}

Test(ratelimit, the_56s_of_one_48_are_limited_by_its_aggregate)
{
	struct rate_limit r = { .rl_window = 60, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, &agg, 65536);
	char ip[64];
	int allowed = 0;

	/* 256 /56s of 2001:db8:7::/48, one /64 each */
	for (int i = 0; i < 256; i++) {
		struct sockaddr_in6 a;

		snprintf(ip, sizeof(ip), "2001:db8:7:%02x00::1", i);
		a = (struct sockaddr_in6){ .sin6_family = AF_INET6 };
		inet_pton(AF_INET6, ip, &a.sin6_addr);
		allowed += ratelimit_allow(rl, (struct sockaddr *)&a, 100.0);
	}
	cr_assert_eq(allowed, 64, "%d of 256 /56s allowed", allowed);
	ratelimit_free(rl);
}

Test(ratelimit, the_addresses_of_one_ipv4_24_are_limited_by_its_aggregate)
{
	struct rate_limit r = { .rl_window = 60, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, &agg, 65536);
	char ip[32];
	int allowed = 0;

	for (int i = 0; i < 256; i++) {
		snprintf(ip, sizeof(ip), "198.51.100.%d", i);
		struct sockaddr_in a = v4(ip);
		allowed += ratelimit_allow(rl, (struct sockaddr *)&a, 100.0);
	}
	cr_assert_eq(allowed, 16, "%d of 256 addresses allowed", allowed);
	/* the same /24 through a dual-stack listener is the same aggregate */
	struct sockaddr_in6 m = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, "::ffff:198.51.100.7", &m.sin6_addr);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&m, 100.0), 0);
	/* another /24 is not affected */
	struct sockaddr_in o = v4("198.51.101.1");
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&o, 100.0), 1);
	ratelimit_free(rl);
}

Test(ratelimit, no_rules_allow_everything)
{
	struct ratelimit *rl = ratelimit_new(NULL, 0, NULL, 8);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };

	for (int i = 0; i < 100; i++)
		cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 0.0), 1);
	ratelimit_free(rl);
}

static struct sockaddr_in6
v6(const char *ip)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6 };

	inet_pton(AF_INET6, ip, &s.sin6_addr);
	return s;
}

Test(ratelimit, ipv6_addresses_of_one_64_share_a_bucket)
{
	struct rate_limit r = { .rl_window = 1, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, NULL, 100);
	struct sockaddr_in6 a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2:ffff::9"),
	    c = v6("2001:db8:1:3::1");

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 5.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&b, 5.0), 0);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&c, 5.0), 1);
	ratelimit_free(rl);
}

Test(ratelimit, ipv4_mapped_addresses_count_as_ipv4)
{
	struct rate_limit r = { .rl_window = 1, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, NULL, 100);
	struct sockaddr_in a = v4("192.0.2.1");
	struct sockaddr_in6 same = v6("::ffff:192.0.2.1"), other = v6("::ffff:192.0.2.2");

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 5.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&same, 5.0), 0);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&other, 5.0), 1);
	ratelimit_free(rl);
}
