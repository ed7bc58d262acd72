/* util.h - small helpers shared by every program. */
#ifndef HP_UTIL_H
#define HP_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

/* Monotonic clock in seconds (double) and milliseconds. */
double   now_mono(void);
/* Seconds as a struct timeval (libevent timers). */
struct timeval tv_seconds(double secs);
uint64_t now_mono_ms(void);
/* Wall clock, seconds since the epoch (fractions kept). */
double   now_wall(void);

/* Standard base64 with padding.  encode writes a NUL-terminated string and
 * returns its length; out must hold 4*((len+2)/3)+1 bytes.  decode returns the
 * decoded length, or -1 on invalid input or when it would exceed outlen. */
size_t   b64_encode(const uint8_t *in, size_t len, char *out);
int      b64_decode(const char *in, uint8_t *out, size_t outlen);

/* "host:port", "[v6]:port" or ":port" (host defaults to localhost) into a
 * sockaddr, resolving names with getaddrinfo.  Returns 0 or -1 with a reason
 * in err. */
int      addr_parse(const char *hostport, struct sockaddr_storage *ss, socklen_t *len,
	     char *err, size_t errlen);
/* As addr_parse, but only an IP literal is accepted ("127.0.0.1:9999",
 * "[::1]:9999"): never asks DNS, never blocks.  0, or -1. */
int      addr_parse_numeric(const char *hostport, struct sockaddr_storage *ss, socklen_t *len);
/* 1 when a and b are the same IPv4/IPv6 address and port. */
int      addr_equal(const struct sockaddr *a, const struct sockaddr *b);
/* addr_parse through a one-entry cache: the same hostport within ttl
 * seconds is not resolved again (getaddrinfo reads /etc/hosts and friends on
 * every call).  Not thread-safe: one cache per thread. */
struct addr_cache {
	char                    ac_key[256];
	struct sockaddr_storage ac_ss;
	socklen_t               ac_len;
	double                  ac_until;       /* monotonic */
};
int      addr_parse_cached(struct addr_cache *c, const char *hostport, double ttl,
	     struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);
/* Printable "ip:port" / "[ip]:port"; buf of 64 bytes is enough. */
const char *addr_str(const struct sockaddr *sa, char *buf, size_t len);
/* Shortened client address for logs: IPv4 /16, IPv6 /32 ("10.1.0.0/16"). */
const char *addr_str_masked(const struct sockaddr *sa, char *buf, size_t len);

int      fd_set_nonblock(int fd);
/* Non-blocking listening TCP socket with SO_REUSEADDR (and TCP_NODELAY).  A
 * port in use fails with "HOST:PORT: address already in use" in err. */
int      listen_tcp(const char *hostport, int backlog, char *err, size_t errlen);
/* The same; reuse_port also sets SO_REUSEPORT, which lets another socket of
 * the same user bind the port too (hand-over, per-thread listeners). */
int      listen_tcp_opt(const char *hostport, int backlog, int reuse_port, char *err,
	     size_t errlen);
/* Port a bound socket listens on. */
int      sock_port(int fd);

/* Constant-time comparison; 0 when equal. */
int      ct_memcmp(const void *a, const void *b, size_t len);

/* RFC 3339 timestamp into seconds since the epoch; -1 on error. */
int      rfc3339_parse(const char *s, double *out);
/* seconds since the epoch to "2026-11-26T09:10:52Z" (buf >= 32). */
const char *rfc3339_format(double t, char *buf, size_t len);

/* Lower-case and validate a DNS name in place (drops one trailing dot).
 * Returns 0 when it is a valid name of at most 253 bytes, else -1. */
int      dns_name_normalize(char *name);

#endif
