/* announce.h - the announcements a proxy serves (SPEC 4.1, 4.3, 5).
 *
 * An in-memory table of {domain, operator, proxy, expires_at}, keyed by
 * (domain, proxy).  On the public proxy proxy is "" and a domain has at
 * most one entry; on the private proxy proxy names the public proxy the
 * domain is announced to.  Thread-safe: a rwlock lets the io_uring thread
 * look names up while the JSON-RPC thread writes.  Also the validation
 * helpers the JSON-RPC methods share. */
#ifndef HP_ANNOUNCE_H
#define HP_ANNOUNCE_H

#include <stddef.h>

#define ANNOUNCE_DOMAIN_MAX	254	/* 253 bytes + NUL */
#define ANNOUNCE_NAME_MAX	256	/* operator and proxy names, with NUL */
#define ANNOUNCE_MAX_EXPIRY	(7 * 86400.0)	/* expires_at at most 7 days ahead */

struct announcement {
	char	an_domain[ANNOUNCE_DOMAIN_MAX];		/* lower-case */
	char	an_operator[ANNOUNCE_NAME_MAX];		/* who announced it */
	char	an_proxy[ANNOUNCE_NAME_MAX];		/* "" on the public side */
	double	an_expires_at;				/* epoch seconds; 0 = never */
	int	an_proxy_protocol;	/* private side: enum proxyproto_version
					 * written to the internal server; 0 off */
};

struct announce_table;

struct announce_table *announce_table_new(void);
void	announce_table_free(struct announce_table *t);

/* Fill a from its fields (an_proxy_protocol off); -1 when a name is too long or the domain is
 * invalid (domain is normalized: lower-case, no trailing dot).  proxy may
 * be NULL for "". */
int	announce_make(struct announcement *a, const char *domain, const char *op,
	    const char *proxy, double expires_at);
/* Add, or replace the entry with the same (domain, proxy).  0 or -1 (ENOMEM). */
int	announce_put(struct announce_table *t, const struct announcement *a);
/* Remove the entry (domain, proxy) when op is NULL or owns it; proxy NULL
 * means "any proxy".  Returns the number removed. */
int	announce_remove(struct announce_table *t, const char *domain, const char *proxy,
	    const char *op);
/* Copy into out (may be NULL) the entry for exactly domain that has not
 * expired at now (wall clock); proxy NULL matches any.  0 found, -1 not. */
int	announce_lookup(struct announce_table *t, const char *domain, const char *proxy,
	    double now, struct announcement *out);
/* As announce_lookup() for a concrete name (a client's SNI): the exact
 * entry, else the wildcard "*.parent" one ("*.example.com" matches
 * "a.example.com", never "example.com" nor "a.b.example.com").  A name
 * starting with '*' never matches.  0 found, -1 not. */
int	announce_match(struct announce_table *t, const char *name, const char *proxy,
	    double now, struct announcement *out);
/* Unexpired entries (now 0: all) of op (NULL: everyone), sorted by domain then proxy,
 * in a malloc'ed array (*out, NULL when none) the caller frees.  Returns
 * the count, or -1 when out of memory. */
int	announce_list(struct announce_table *t, const char *op, double now,
	    struct announcement **out);
/* Copy into out (may be NULL) the entry for domain, expired or not, with
 * proxy (NULL: any) and operator op (NULL: any).  0 found, -1 not. */
int	announce_find(struct announce_table *t, const char *domain, const char *proxy,
	    const char *op, struct announcement *out);
/* Unexpired domains announced by op (a domain held by several instances
 * counts once). */
size_t	announce_count_operator(struct announce_table *t, const char *op, double now);
/* Drop every entry (expired or not) of op (NULL: everyone) for which keep(arg, a) returns 0;
 * returns how many, or -1 when out of memory.  keep runs on a copy of the
 * entries, without the lock; only one thread may change the table. */
typedef int (*announce_keep_fn)(void *arg, const struct announcement *a);
int	announce_filter(struct announce_table *t, const char *op, announce_keep_fn keep,
	    void *arg);
/* Entries that never expire (0) or expire after latest now expire at
 * latest; returns how many changed. */
int	announce_cap_expiry(struct announce_table *t, double latest);
/* Drop the entries expired at now; returns how many. */
int	announce_expire(struct announce_table *t, double now);
size_t	announce_count(struct announce_table *t);

/* Validation for the JSON-RPC methods. */
/* Lower-case, drop one trailing dot and validate in into out.  0 or -1.
 * A wildcard is "*." and a name of two labels or more; any other '*' is
 * refused. */
int	announce_check_domain(const char *in, char out[ANNOUNCE_DOMAIN_MAX]);
/* The same, with on -1 a message for the caller in *why (may be NULL). */
int	announce_check_name(const char *in, char out[ANNOUNCE_DOMAIN_MAX],
	    const char **why);
/* 1 when domain ends with one of allowed[0..n) (each starting with '.')
 * and is longer than it, else 0.  Entries not starting with '.' never match. */
int	announce_domain_allowed(const char *domain, const char *const *allowed, size_t n);
/* expires_at (RFC 3339, NULL or "" = never) into *out (0 = never).
 * Returns 0, or -1 with a reason in *why: unparsable, not in the future, or
 * more than max_seconds after now. */
int	announce_check_expiry(const char *expires_at, double now, double max_seconds,
	    double *out, const char **why);
/* The public proxy's expiry for an announcement: expires_at, or when it is
 * 0 (none given) ANNOUNCE_MAX_EXPIRY after now, in whole seconds. */
double	announce_effective_expiry(double expires_at, double now);

/*
 * The announcement methods of both roles (public: announceConnections,
 * withdrawConnections, getAnnouncements; private: announceConnection,
 * withdrawConnection, getAnnouncements) check their items here, so each
 * rule and each error has one wording.
 */
#define ANNOUNCE_MSG_NOT_AUTHORIZED	"not authorized"	/* 403: no allowed_domains */
#define ANNOUNCE_MSG_NOT_ALLOWED	"not allowed"		/* 403: not under them */
#define ANNOUNCE_MSG_TAKEN		"already taken"		/* 409 */
#define ANNOUNCE_MSG_NO_MATCH		"no matching connection found"	/* 404 */

struct json_object;

/* item's "domain": a string, a valid name (announce_check_name) into dom,
 * under one of allowed[0..n).  0, or the JSON-RPC error code
 * (JSONRPC_INVALID_PARAMS, HP_ERR_FORBIDDEN) with its message in *why.
 * item may be anything (not an object: no domain). */
int	announce_item_domain(struct json_object *item, const char *const *allowed, size_t n,
	    char dom[ANNOUNCE_DOMAIN_MAX], const char **why);
/* item's "expires_at": absent or null (*out 0: none given), or an RFC 3339
 * string as announce_check_expiry() takes it, at most ANNOUNCE_MAX_EXPIRY
 * ahead.  0, or JSONRPC_INVALID_PARAMS with its message in *why. */
int	announce_item_expiry(struct json_object *item, double now, double *out,
	    const char **why);
/* One entry of getAnnouncements: {"domain", "proxy" (private side only),
 * "expires_at" (null: never), "proxy_protocol" (when on), "operator" (when
 * with_operator)}.  A new reference. */
struct json_object *announce_item_json(const struct announcement *a, int with_operator);

#endif
