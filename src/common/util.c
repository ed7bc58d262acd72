/* util.c - small helpers shared by every program. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "util.h"

double
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

uint64_t
now_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double
now_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

size_t
b64_encode(const uint8_t *in, size_t len, char *out)
{
	return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

int
b64_decode(const char *in, uint8_t *out, size_t outlen)
{
	size_t n = strlen(in), pad = 0;
	unsigned char tmp[4096];
	int r;

	/* EVP_DecodeBlock accepts whitespace and ignores padding: check the
	 * alphabet and length ourselves so only canonical base64 passes. */
	if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(tmp))
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '=') {
			if (i < n - 2)
				return -1;
			pad++;
		} else if (pad || !(isalnum(c) || c == '+' || c == '/'))
			return -1;
	}
	r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (r < 0 || (size_t)r < pad)
		return -1;
	r -= (int)pad;
	if ((size_t)r > outlen)
		return -1;
	memcpy(out, tmp, (size_t)r);
	return r;
}

static int
addr_resolve(const char *hostport, int flags, struct sockaddr_storage *ss, socklen_t *len,
    char *err, size_t errlen)
{
	char host[256];
	const char *port, *h = hostport;
	size_t hl;
	struct addrinfo hints, *res;
	int rc;

	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');
		if (end == NULL || end[1] != ':')
			goto bad;
		h = hostport + 1;
		hl = (size_t)(end - h);
		port = end + 2;
	} else {
		port = strrchr(hostport, ':');
		if (port == NULL)
			goto bad;
		hl = (size_t)(port - hostport);
		port++;
	}
	if (hl >= sizeof(host) || *port == '\0')
		goto bad;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (hl == 0)
		strcpy(host, "localhost");
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | flags;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s: %s", hostport, gai_strerror(rc));
		return -1;
	}
	/* Prefer IPv4 for "localhost": the dev layout binds and dials 127.0.0.1. */
	struct addrinfo *pick = res;
	for (struct addrinfo *a = res; a; a = a->ai_next)
		if (a->ai_family == AF_INET) {
			pick = a;
			break;
		}
	memcpy(ss, pick->ai_addr, pick->ai_addrlen);
	*len = pick->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	snprintf(err, errlen, "%s: expected host:port", hostport);
	return -1;
}

int
addr_parse(const char *hostport, struct sockaddr_storage *ss, socklen_t *len,
    char *err, size_t errlen)
{
	return addr_resolve(hostport, 0, ss, len, err, errlen);
}

int
addr_parse_numeric(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
	char err[16];

	/* AI_NUMERICHOST: getaddrinfo fails at once instead of asking DNS. */
	return addr_resolve(hostport, AI_NUMERICHOST, ss, len, err, sizeof(err));
}

int
addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return 0;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)(const void *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)(const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)(const void *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)(const void *)b;

		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return 0;
}

int
addr_parse_cached(struct addr_cache *c, const char *hostport, double ttl,
    struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
	double now = now_mono();

	if (now < c->ac_until && strcmp(c->ac_key, hostport) == 0) {
		*ss = c->ac_ss;
		*len = c->ac_len;
		return 0;
	}
	if (addr_parse(hostport, ss, len, err, errlen) < 0)
		return -1;
	if (strlen(hostport) < sizeof(c->ac_key)) {
		strcpy(c->ac_key, hostport);
		c->ac_ss = *ss;
		c->ac_len = *len;
		c->ac_until = now + ttl;
	}
	return 0;
}

const char *
addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%d", ip, ntohs(s->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%d", ip, ntohs(s->sin6_port));
	} else
		snprintf(buf, len, "?");
	return buf;
}

const char *
addr_str_masked(const struct sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		struct in_addr a = ((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		a.s_addr &= htonl(0xffff0000u);
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
		snprintf(buf, len, "%s/16", ip);
	} else if (sa->sa_family == AF_INET6) {
		struct in6_addr a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		memset(a.s6_addr + 4, 0, 12);
		inet_ntop(AF_INET6, &a, ip, sizeof(ip));
		snprintf(buf, len, "%s/32", ip);
	} else
		snprintf(buf, len, "?");
	return buf;
}

int
fd_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int
listen_tcp(const char *hostport, int backlog, char *err, size_t errlen)
{
	return listen_tcp_opt(hostport, backlog, 0, err, errlen);
}

int
listen_tcp_opt(const char *hostport, int backlog, int reuse_port, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1;

	if (addr_parse(hostport, &ss, &sl, err, errlen) < 0)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", hostport, strerror(errno));
		return -1;
	}
	/* SO_REUSEADDR only skips TIME_WAIT; a port someone listens on stays refused. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/*
	 * SO_REUSEPORT lets any process of the same user bind the same port and
	 * take a share of the connections: only on request (a hand-over, or
	 * several sockets of one process).
	 */
	if (reuse_port)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* Accepted sockets inherit it: no setsockopt per connection. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, backlog) < 0) {
		snprintf(err, errlen, "%s: %s", hostport, errno == EADDRINUSE ?
		    "address already in use" : strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int
sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

int
ct_memcmp(const void *a, const void *b, size_t len)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;

	for (size_t i = 0; i < len; i++)
		d |= x[i] ^ y[i];
	return d;
}

int
rfc3339_parse(const char *s, double *out)
{
	struct tm tm;
	const char *p;
	double frac = 0;
	long off = 0;

	memset(&tm, 0, sizeof(tm));
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL)
		return -1;
	if (*p == '.') {
		char *end;
		frac = strtod(p, &end);
		if (end == p + 1)
			return -1;
		p = end;
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		int hh, mm;
		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || strlen(p) != 6)
			return -1;
		off = (hh * 60 + mm) * 60L * (*p == '+' ? 1 : -1);
		p += 6;
	} else
		return -1;
	if (*p != '\0')
		return -1;
	*out = (double)timegm(&tm) - (double)off + frac;
	return 0;
}

const char *
rfc3339_format(double t, char *buf, size_t len)
{
	time_t s = (time_t)t;
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

int
dns_name_normalize(char *name)
{
	size_t n = strlen(name), label = 0;

	if (n > 0 && name[n - 1] == '.')
		name[--n] = '\0';
	if (n == 0 || n > 253)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return -1;
			label = 0;
			continue;
		}
		if (isupper(c))
			name[i] = (char)tolower(c);
		else if (!(islower(c) || isdigit(c) || c == '-' || c == '_'))
			return -1;
		if (c == '-' && label == 0)
			return -1;
		if (++label > 63)
			return -1;
	}
	/* Only one trailing dot is dropped: "a.com.." ends in an empty label. */
	return name[n - 1] == '-' || name[n - 1] == '.' ? -1 : 0;
}

struct timeval
tv_seconds(double secs)
{
	struct timeval tv;

	tv.tv_sec = (time_t)secs;
	tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
	return tv;
}
