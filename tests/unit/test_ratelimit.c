/* Tests for ratelimit.c: per-address token buckets. */
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
	struct ratelimit *rl = ratelimit_new(&r, 1, 100);
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
	struct ratelimit *rl = ratelimit_new(&r, 1, 100);
	struct sockaddr_in a = v4("192.0.2.1"), b = v4("192.0.2.2");

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 5.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 5.0), 0);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&b, 5.0), 1);
	ratelimit_free(rl);
}

Test(ratelimit, every_rule_must_allow)
{
	struct rate_limit r[2] = { { 1, 100 }, { 3600, 2 } };
	struct ratelimit *rl = ratelimit_new(r, 2, 100);
	struct sockaddr_in a = v4("198.51.100.7");

	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 0.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 10.0), 1);
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 20.0), 0);
	ratelimit_free(rl);
}

Test(ratelimit, table_is_bounded_and_forgets_the_oldest)
{
	struct rate_limit r = { .rl_window = 3600, .rl_limit = 1 };
	struct ratelimit *rl = ratelimit_new(&r, 1, 8);
	char ip[32];

	for (int i = 0; i < 50; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i);
		struct sockaddr_in a = v4(ip);
		cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 1.0), 1);
	}
	cr_assert_eq(ratelimit_count(rl), 8);
	struct sockaddr_in last = v4("203.0.113.49");
	cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&last, 1.0), 0);
	ratelimit_free(rl);
}

Test(ratelimit, no_rules_allow_everything)
{
	struct ratelimit *rl = ratelimit_new(NULL, 0, 8);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };

	for (int i = 0; i < 100; i++)
		cr_assert_eq(ratelimit_allow(rl, (struct sockaddr *)&a, 0.0), 1);
	ratelimit_free(rl);
}
