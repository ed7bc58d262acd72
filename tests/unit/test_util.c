/* Tests for util.c: base64, addresses, DNS names, RFC 3339, ct_memcmp, listen_tcp. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

Test(util, base64_round_trip_of_a_token)
{
	uint8_t tok[32], back[32];
	char enc[45];

	for (int i = 0; i < 32; i++)
		tok[i] = (uint8_t)(i * 7 + 1);
	cr_assert_eq(b64_encode(tok, 32, enc), 44);
	cr_assert_eq(b64_decode(enc, back, sizeof(back)), 32);
	cr_assert(memcmp(tok, back, 32) == 0);
}

Test(util, base64_rejects_bad_alphabet_length_and_overflow)
{
	uint8_t out[32];

	cr_assert_eq(b64_decode("abc", out, sizeof(out)), -1);
	cr_assert_eq(b64_decode("ab!d", out, sizeof(out)), -1);
	cr_assert_eq(b64_decode("a=bc", out, sizeof(out)), -1);
	cr_assert_eq(b64_decode("", out, sizeof(out)), -1);
	cr_assert_eq(b64_decode("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaA==", out, 32), -1);
	cr_assert_eq(b64_decode("QUJD", out, sizeof(out)), 3);
	cr_assert(memcmp(out, "ABC", 3) == 0);
	cr_assert_eq(b64_decode("QUI=", out, sizeof(out)), 2);
}

Test(util, dns_names_are_lowercased_and_validated)
{
	char a[] = "Test.Internal-Server.LOCAL.";
	char b[] = "bad..name", c[] = "-x.com", d[] = "ok.com-", e[] = "sp ace.com", g[] = "a.com..";
	char f[300];

	cr_assert_eq(dns_name_normalize(a), 0);
	cr_assert_str_eq(a, "test.internal-server.local");
	cr_assert_eq(dns_name_normalize(b), -1);
	cr_assert_eq(dns_name_normalize(c), -1);
	cr_assert_eq(dns_name_normalize(d), -1);
	cr_assert_eq(dns_name_normalize(e), -1);
	cr_assert_eq(dns_name_normalize(g), -1);
	memset(f, 'a', sizeof(f) - 1);
	f[sizeof(f) - 1] = '\0';
	cr_assert_eq(dns_name_normalize(f), -1);
}

Test(util, rfc3339_parses_zones_and_fractions)
{
	double t;
	char buf[32];

	cr_assert_eq(rfc3339_parse("2026-11-26T09:00:00Z", &t), 0);
	cr_assert_str_eq(rfc3339_format(t, buf, sizeof(buf)), "2026-11-26T09:00:00Z");
	double u;
	cr_assert_eq(rfc3339_parse("2026-11-26T10:00:00.5+01:00", &u), 0);
	cr_assert_float_eq(u - t, 0.5, 1e-6);
	cr_assert_eq(rfc3339_parse("yesterday", &u), -1);
	cr_assert_eq(rfc3339_parse("2026-11-26T09:00:00", &u), -1);
}

Test(util, addresses_parse_and_mask)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char err[128], buf[64];

	cr_assert_eq(addr_parse("127.0.0.1:4433", &ss, &sl, err, sizeof(err)), 0);
	cr_assert_str_eq(addr_str((struct sockaddr *)&ss, buf, sizeof(buf)), "127.0.0.1:4433");
	cr_assert_str_eq(addr_str_masked((struct sockaddr *)&ss, buf, sizeof(buf)), "127.0.0.0/16");
	cr_assert_eq(addr_parse("[::1]:9", &ss, &sl, err, sizeof(err)), 0);
	cr_assert_eq(ss.ss_family, AF_INET6);
	cr_assert_eq(addr_parse("nocolon", &ss, &sl, err, sizeof(err)), -1);
	cr_assert_eq(addr_parse("host:", &ss, &sl, err, sizeof(err)), -1);
}

Test(util, numeric_addresses_parse_without_dns_and_compare_by_address_and_port)
{
	struct sockaddr_storage a, b;
	socklen_t al, bl;
	char err[128];

	cr_assert_eq(addr_parse_numeric("127.0.0.1:9999", &a, &al), 0);
	cr_assert_eq(addr_parse("localhost:9999", &b, &bl, err, sizeof(err)), 0);
	cr_assert(addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b));
	cr_assert_eq(addr_parse_numeric("127.0.0.1:9998", &b, &bl), 0);
	cr_assert_not(addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b));
	cr_assert_eq(addr_parse_numeric("127.0.0.2:9999", &b, &bl), 0);
	cr_assert_not(addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b));
	cr_assert_eq(addr_parse_numeric("[::1]:9999", &b, &bl), 0);
	cr_assert_not(addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b));
	cr_assert_eq(addr_parse_numeric("[::1]:9999", &a, &al), 0);
	cr_assert(addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b));
	/* A name is refused, not looked up. */
	cr_assert_eq(addr_parse_numeric("localhost:9999", &b, &bl), -1);
	cr_assert_eq(addr_parse_numeric("example.invalid:9999", &b, &bl), -1);
	cr_assert_eq(addr_parse_numeric("nocolon", &b, &bl), -1);
}

Test(util, constant_time_compare)
{
	cr_assert_eq(ct_memcmp("abcd", "abcd", 4), 0);
	cr_assert_neq(ct_memcmp("abcd", "abce", 4), 0);
}

/* L4: a second listener on a port in use is refused unless both ask for
 * SO_REUSEPORT (the hand-over). */
Test(util, listen_tcp_refuses_a_port_in_use_unless_both_reuse_it)
{
	char err[256], addr[64];
	int a, b, port;

	a = listen_tcp("127.0.0.1:0", 4, err, sizeof(err));
	cr_assert_geq(a, 0, "%s", err);
	port = sock_port(a);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	cr_assert_eq(listen_tcp(addr, 4, err, sizeof(err)), -1);
	cr_assert(strstr(err, "address already in use") != NULL, "%s", err);
	cr_assert(strstr(err, addr) != NULL, "%s", err);
	/* Asking alone is not enough: the first socket did not agree. */
	cr_assert_eq(listen_tcp_opt(addr, 4, 1, err, sizeof(err)), -1);
	close(a);

	a = listen_tcp_opt("127.0.0.1:0", 4, 1, err, sizeof(err));
	cr_assert_geq(a, 0, "%s", err);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", sock_port(a));
	cr_assert_eq(listen_tcp(addr, 4, err, sizeof(err)), -1, "a plain bind is refused");
	b = listen_tcp_opt(addr, 4, 1, err, sizeof(err));
	cr_assert_geq(b, 0, "both ask: %s", err);
	close(a);
	close(b);
}
