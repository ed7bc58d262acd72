/* announce.c - the table of announcements and its validation helpers.
 *
 * A chained hash table keyed by the domain (several proxies may share a
 * domain on the private side, so they share a chain), doubled when the
 * load passes one.  A pthread rwlock guards it: lookups from the relay
 * thread take the read lock, changes from the JSON-RPC thread the write
 * lock.  Expired entries stay until announce_expire() (the public proxy
 * runs it from a timer) or a replacement, but no lookup ever sees them.
 * A wildcard "*.example.com" is an entry under that very key: matching
 * "a.example.com" probes the exact key, then "*.example.com".
 */
#include <bsd/string.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "announce.h"
#include "jsonrpc.h"
#include "proxyproto.h"
#include "util.h"

struct announce_entry {
	struct announce_entry	*ae_next;
	struct announcement	 ae_an;
};

struct announce_table {
	pthread_rwlock_t	 at_lock;
	struct announce_entry	**at_buckets;
	size_t			 at_nbuckets;	/* power of two */
	size_t			 at_count;
};

/* FNV-1a: domains come from authorized operators, not from strangers. */
static size_t
announce_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return (size_t)h;
}

static int
announce_live(const struct announcement *a, double now)
{
	return a->an_expires_at == 0 || a->an_expires_at > now;
}

struct announce_table *
announce_table_new(void)
{
	struct announce_table *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->at_nbuckets = 64;
	if ((t->at_buckets = calloc(t->at_nbuckets, sizeof(*t->at_buckets))) == NULL) {
		free(t);
		return NULL;
	}
	if (pthread_rwlock_init(&t->at_lock, NULL) != 0) {
		free(t->at_buckets);
		free(t);
		return NULL;
	}
	return t;
}

void
announce_table_free(struct announce_table *t)
{
	struct announce_entry *e, *next;

	if (t == NULL)
		return;
	for (size_t i = 0; i < t->at_nbuckets; i++)
		for (e = t->at_buckets[i]; e != NULL; e = next) {
			next = e->ae_next;
			free(e);
		}
	pthread_rwlock_destroy(&t->at_lock);
	free(t->at_buckets);
	free(t);
}

int
announce_make(struct announcement *a, const char *domain, const char *op,
    const char *proxy, double expires_at)
{
	memset(a, 0, sizeof(*a));
	if (proxy == NULL)
		proxy = "";
	if (announce_check_domain(domain, a->an_domain) == -1 || op == NULL ||
	    op[0] == '\0' || strlen(op) >= sizeof(a->an_operator) ||
	    strlen(proxy) >= sizeof(a->an_proxy) || expires_at < 0)
		return -1;
	strlcpy(a->an_operator, op, sizeof(a->an_operator));
	strlcpy(a->an_proxy, proxy, sizeof(a->an_proxy));
	a->an_expires_at = expires_at;
	return 0;
}

/* Double the bucket array; on ENOMEM the table just stays more loaded. */
static void
announce_grow(struct announce_table *t)
{
	size_t n = t->at_nbuckets * 2;
	struct announce_entry **b, *e, *next;

	if ((b = calloc(n, sizeof(*b))) == NULL)
		return;
	for (size_t i = 0; i < t->at_nbuckets; i++)
		for (e = t->at_buckets[i]; e != NULL; e = next) {
			size_t h = announce_hash(e->ae_an.an_domain) & (n - 1);
			next = e->ae_next;
			e->ae_next = b[h];
			b[h] = e;
		}
	free(t->at_buckets);
	t->at_buckets = b;
	t->at_nbuckets = n;
}

int
announce_put(struct announce_table *t, const struct announcement *a)
{
	struct announce_entry *e, **head;
	int rc = 0;

	pthread_rwlock_wrlock(&t->at_lock);
	head = &t->at_buckets[announce_hash(a->an_domain) & (t->at_nbuckets - 1)];
	for (e = *head; e != NULL; e = e->ae_next)
		if (strcmp(e->ae_an.an_domain, a->an_domain) == 0 &&
		    strcmp(e->ae_an.an_proxy, a->an_proxy) == 0)
			break;
	if (e != NULL)
		e->ae_an = *a;
	else if ((e = calloc(1, sizeof(*e))) == NULL)
		rc = -1;
	else {
		e->ae_an = *a;
		e->ae_next = *head;
		*head = e;
		if (++t->at_count > t->at_nbuckets)
			announce_grow(t);
	}
	pthread_rwlock_unlock(&t->at_lock);
	return rc;
}

/* Unlink and free the entry *pp points at; *pp then points at the next. */
static void
announce_drop(struct announce_table *t, struct announce_entry **pp)
{
	struct announce_entry *e = *pp;

	*pp = e->ae_next;
	free(e);
	t->at_count--;
}

int
announce_remove(struct announce_table *t, const char *domain, const char *proxy,
    const char *op)
{
	struct announce_entry *e, **pp;
	int n = 0;

	pthread_rwlock_wrlock(&t->at_lock);
	pp = &t->at_buckets[announce_hash(domain) & (t->at_nbuckets - 1)];
	while ((e = *pp) != NULL) {
		if (strcmp(e->ae_an.an_domain, domain) == 0 &&
		    (proxy == NULL || strcmp(e->ae_an.an_proxy, proxy) == 0) &&
		    (op == NULL || strcmp(e->ae_an.an_operator, op) == 0)) {
			announce_drop(t, pp);
			n++;
		} else
			pp = &e->ae_next;
	}
	pthread_rwlock_unlock(&t->at_lock);
	return n;
}

/* The live entry for exactly domain (and proxy, NULL: any); the lock is held. */
static struct announce_entry *
announce_get(struct announce_table *t, const char *domain, const char *proxy,
    double now)
{
	struct announce_entry *e;

	for (e = t->at_buckets[announce_hash(domain) & (t->at_nbuckets - 1)]; e != NULL;
	    e = e->ae_next)
		if (strcmp(e->ae_an.an_domain, domain) == 0 &&
		    (proxy == NULL || strcmp(e->ae_an.an_proxy, proxy) == 0) &&
		    announce_live(&e->ae_an, now))
			return e;
	return NULL;
}

int
announce_lookup(struct announce_table *t, const char *domain, const char *proxy,
    double now, struct announcement *out)
{
	struct announce_entry *e;

	pthread_rwlock_rdlock(&t->at_lock);
	if ((e = announce_get(t, domain, proxy, now)) != NULL && out != NULL)
		*out = e->ae_an;
	pthread_rwlock_unlock(&t->at_lock);
	return e != NULL ? 0 : -1;
}

int
announce_match(struct announce_table *t, const char *name, const char *proxy,
    double now, struct announcement *out)
{
	struct announce_entry *e;
	char key[ANNOUNCE_DOMAIN_MAX + 1];
	const char *dot;

	/* a client's name is never a pattern (sni.c refuses '*' anyway) */
	if (name[0] == '*')
		return -1;
	pthread_rwlock_rdlock(&t->at_lock);
	/* two hash probes at most: the exact name, then "*." and its parent */
	if ((e = announce_get(t, name, proxy, now)) == NULL &&
	    (dot = strchr(name, '.')) != NULL &&
	    (size_t)snprintf(key, sizeof(key), "*%s", dot) < sizeof(key))
		e = announce_get(t, key, proxy, now);
	if (e != NULL && out != NULL)
		*out = e->ae_an;
	pthread_rwlock_unlock(&t->at_lock);
	return e != NULL ? 0 : -1;
}

int
announce_find(struct announce_table *t, const char *domain, const char *proxy,
    const char *op, struct announcement *out)
{
	struct announce_entry *e;
	int rc = -1;

	pthread_rwlock_rdlock(&t->at_lock);
	for (e = t->at_buckets[announce_hash(domain) & (t->at_nbuckets - 1)]; e != NULL;
	    e = e->ae_next)
		if (strcmp(e->ae_an.an_domain, domain) == 0 &&
		    (proxy == NULL || strcmp(e->ae_an.an_proxy, proxy) == 0) &&
		    (op == NULL || strcmp(e->ae_an.an_operator, op) == 0)) {
			if (out != NULL)
				*out = e->ae_an;
			rc = 0;
			break;
		}
	pthread_rwlock_unlock(&t->at_lock);
	return rc;
}

size_t
announce_count_operator(struct announce_table *t, const char *op, double now)
{
	struct announce_entry *e;
	size_t n = 0;

	pthread_rwlock_rdlock(&t->at_lock);
	for (size_t i = 0; i < t->at_nbuckets; i++)
		for (e = t->at_buckets[i]; e != NULL; e = e->ae_next) {
			struct announce_entry *f;

			if (strcmp(e->ae_an.an_operator, op) != 0 ||
			    !announce_live(&e->ae_an, now))
				continue;
			/* a domain held by several instances counts once: only
			 * its first live entry in the chain is counted */
			for (f = t->at_buckets[i]; f != e; f = f->ae_next)
				if (strcmp(f->ae_an.an_domain, e->ae_an.an_domain) == 0 &&
				    announce_live(&f->ae_an, now))
					break;
			if (f == e)
				n++;
		}
	pthread_rwlock_unlock(&t->at_lock);
	return n;
}

int
announce_filter(struct announce_table *t, const char *op, announce_keep_fn keep,
    void *arg)
{
	struct announcement *v;
	int n, dropped = 0;

	/* keep() runs on a copy, without the lock: lookups go on meanwhile.
	 * The caller is the only writer, so nothing changes in between. */
	if ((n = announce_list(t, op, 0, &v)) <= 0)
		return n;
	for (int i = 0; i < n; i++)
		if (!keep(arg, &v[i]))
			dropped += announce_remove(t, v[i].an_domain, v[i].an_proxy,
			    v[i].an_operator);
	free(v);
	return dropped;
}

int
announce_cap_expiry(struct announce_table *t, double latest)
{
	struct announce_entry *e;
	int n = 0;

	pthread_rwlock_wrlock(&t->at_lock);
	for (size_t i = 0; i < t->at_nbuckets; i++)
		for (e = t->at_buckets[i]; e != NULL; e = e->ae_next)
			if (e->ae_an.an_expires_at == 0 || e->ae_an.an_expires_at > latest) {
				e->ae_an.an_expires_at = latest;
				n++;
			}
	pthread_rwlock_unlock(&t->at_lock);
	return n;
}

static int
announce_cmp(const void *a, const void *b)
{
	const struct announcement *x = a, *y = b;
	int c = strcmp(x->an_domain, y->an_domain);

	return c != 0 ? c : strcmp(x->an_proxy, y->an_proxy);
}

int
announce_list(struct announce_table *t, const char *op, double now,
    struct announcement **out)
{
	struct announce_entry *e;
	struct announcement *v;
	size_t n = 0;

	*out = NULL;
	pthread_rwlock_rdlock(&t->at_lock);
	if (t->at_count == 0 ||
	    (v = calloc(t->at_count, sizeof(*v))) == NULL) {
		pthread_rwlock_unlock(&t->at_lock);
		return t->at_count == 0 ? 0 : -1;
	}
	for (size_t i = 0; i < t->at_nbuckets; i++)
		for (e = t->at_buckets[i]; e != NULL; e = e->ae_next)
			if ((op == NULL || strcmp(e->ae_an.an_operator, op) == 0) &&
			    announce_live(&e->ae_an, now))
				v[n++] = e->ae_an;
	pthread_rwlock_unlock(&t->at_lock);
	if (n == 0) {
		free(v);
		return 0;
	}
	qsort(v, n, sizeof(*v), announce_cmp);
	*out = v;
	return (int)n;
}

int
announce_expire(struct announce_table *t, double now)
{
	struct announce_entry *e, **pp;
	int n = 0;

	pthread_rwlock_wrlock(&t->at_lock);
	for (size_t i = 0; i < t->at_nbuckets; i++) {
		pp = &t->at_buckets[i];
		while ((e = *pp) != NULL) {
			if (!announce_live(&e->ae_an, now)) {
				announce_drop(t, pp);
				n++;
			} else
				pp = &e->ae_next;
		}
	}
	pthread_rwlock_unlock(&t->at_lock);
	return n;
}

size_t
announce_count(struct announce_table *t)
{
	size_t n;

	pthread_rwlock_rdlock(&t->at_lock);
	n = t->at_count;
	pthread_rwlock_unlock(&t->at_lock);
	return n;
}

int
announce_check_name(const char *in, char out[ANNOUNCE_DOMAIN_MAX], const char **why)
{
	char buf[ANNOUNCE_DOMAIN_MAX + 2];	/* 253 bytes, a dot, NUL, slack */
	char *name = buf;
	const char *w = "invalid domain";

	if (in == NULL || strlen(in) >= sizeof(buf) - 1)
		goto bad;
	memcpy(buf, in, strlen(in) + 1);
	if (buf[0] == '*' && buf[1] == '.')
		name = buf + 2;
	if (strchr(name, '*') != NULL) {
		w = "invalid domain: '*' is allowed only as the whole leftmost "
		    "label, as in *.example.com";
		goto bad;
	}
	/* dns_name_normalize() drops only one dot: "a.com.." stays "a.com." */
	if (dns_name_normalize(name) == -1 || name[strlen(name) - 1] == '.')
		goto bad;
	if (name != buf && strchr(name, '.') == NULL) {
		w = "invalid domain: a wildcard must stand for a label under a name "
		    "of two labels or more (*.example.com, not *.com)";
		goto bad;
	}
	if (strlen(buf) >= ANNOUNCE_DOMAIN_MAX)
		goto bad;
	memcpy(out, buf, strlen(buf) + 1);
	return 0;
bad:
	if (why != NULL)
		*why = w;
	return -1;
}

int
announce_check_domain(const char *in, char out[ANNOUNCE_DOMAIN_MAX])
{
	return announce_check_name(in, out, NULL);
}

int
announce_domain_allowed(const char *domain, const char *const *allowed, size_t n)
{
	size_t dl = strlen(domain), al;

	for (size_t i = 0; i < n; i++) {
		if (allowed[i] == NULL || allowed[i][0] != '.')
			continue;
		al = strlen(allowed[i]);
		if (dl > al && strcasecmp(domain + dl - al, allowed[i]) == 0)
			return 1;
	}
	return 0;
}

double
announce_effective_expiry(double expires_at, double now)
{
	if (expires_at > 0)
		return expires_at;
	/* whole seconds: the store writes RFC 3339 without fractions */
	return (double)(long long)now + ANNOUNCE_MAX_EXPIRY;
}

int
announce_check_expiry(const char *expires_at, double now, double max_seconds,
    double *out, const char **why)
{
	double t;

	*out = 0;
	if (expires_at == NULL || expires_at[0] == '\0')
		return 0;
	if (rfc3339_parse(expires_at, &t) == -1) {
		*why = "expires_at is not an RFC 3339 timestamp";
		return -1;
	}
	if (t <= now) {
		*why = "expires_at is in the past";
		return -1;
	}
	if (t - now > max_seconds) {
		*why = "expires_at is too far in the future";
		return -1;
	}
	*out = t;
	return 0;
}

/* --- the announcement methods' items -------------------------------------- */

int
announce_item_domain(struct json_object *item, const char *const *allowed, size_t n,
    char dom[ANNOUNCE_DOMAIN_MAX], const char **why)
{
	struct json_object *v;

	if (!json_object_is_type(item, json_type_object) ||
	    !json_object_object_get_ex(item, "domain", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		*why = "domain must be a string";
		return JSONRPC_INVALID_PARAMS;
	}
	if (announce_check_name(json_object_get_string(v), dom, why) < 0)
		return JSONRPC_INVALID_PARAMS;
	if (!announce_domain_allowed(dom, allowed, n)) {
		*why = ANNOUNCE_MSG_NOT_ALLOWED;
		return HP_ERR_FORBIDDEN;
	}
	return 0;
}

int
announce_item_expiry(struct json_object *item, double now, double *out, const char **why)
{
	struct json_object *v;

	*out = 0;
	if (!json_object_object_get_ex(item, "expires_at", &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_string)) {
		*why = "expires_at is not an RFC 3339 timestamp";
		return JSONRPC_INVALID_PARAMS;
	}
	if (announce_check_expiry(json_object_get_string(v), now, ANNOUNCE_MAX_EXPIRY, out,
	    why) < 0)
		return JSONRPC_INVALID_PARAMS;
	return 0;
}

struct json_object *
announce_item_json(const struct announcement *a, int with_operator)
{
	struct json_object *o = json_object_new_object();
	char ts[32];

	json_object_object_add(o, "domain", json_object_new_string(a->an_domain));
	if (a->an_proxy[0] != '\0')
		json_object_object_add(o, "proxy", json_object_new_string(a->an_proxy));
	json_object_object_add(o, "expires_at", a->an_expires_at > 0 ?
	    json_object_new_string(rfc3339_format(a->an_expires_at, ts, sizeof(ts))) : NULL);
	if (a->an_proxy_protocol != PROXYPROTO_OFF)
		json_object_object_add(o, "proxy_protocol", json_object_new_string(
		    proxyproto_version_str(a->an_proxy_protocol)));
	if (with_operator)
		json_object_object_add(o, "operator", json_object_new_string(a->an_operator));
	return o;
}
