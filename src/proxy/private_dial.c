/* private_dial.c - the private proxy's dial job (SPEC 5): for one
 * connection handed over by incomingConnection, connect to the public
 * proxy's data endpoint and to the internal server in parallel, write the
 * token (and the PROXY header, when the announcement asks for one), then
 * join the two sockets in the relay.  The machine (enum dial_state) is
 * drawn in private_int.h.
 *
 * Thread: the loop thread (the io_uring loop), except dial_new, which the
 * side thread calls before it loop_post()s dial_start. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bsd/string.h>

#include "log.h"
#include "loop.h"
#include "announce.h"
#include "frame.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "proxyproto.h"
#include "relay.h"
#include "util.h"
#include "private_int.h"

/* Counted once per job: "ok" when joined, else why it ended. */
METRIC_COUNTER(m_dials, "private_dials_total",
    "Dial jobs of handed-over connections, by outcome (ok, refused, timeout, error, stopped).",
    "outcome")

static const char *
dial_outcome(const struct dial *d)
{
	switch (d->dl_err) {
	case 0:
	case ECANCELED:		/* cancelled by a stop (the other end's failure
				 * sets dl_err first) */
		return atomic_load(&d->dl_pv->pv_stopping) ? "stopped" : "error";
	case ECONNREFUSED:
		return "refused";
	case ETIMEDOUT:
		return "timeout";
	default:
		return "error";
	}
}

struct dial *
dial_new(struct private *pv, const uint8_t token[TOKEN_LEN], const char *domain,
    const char *operator, const struct sockaddr_storage *client,
    const struct data_endpoint *de, const uint8_t *pp, size_t pplen)
{
	struct dial *d;

	if ((d = calloc(1, sizeof(*d) + pplen)) == NULL)
		return NULL;
	d->dl_pv = pv;
	d->dl_state = DIAL_CONNECTING;
	d->dl_pub.dn_fd = d->dl_int.dn_fd = -1;
	memcpy(d->dl_token, token, sizeof(d->dl_token));
	if (pplen > 0)
		memcpy(d->dl_pp, pp, pplen);
	d->dl_pplen = pplen;
	strlcpy(d->dl_domain, domain, sizeof(d->dl_domain));
	strlcpy(d->dl_operator, operator, sizeof(d->dl_operator));
	if (client != NULL)
		memcpy(&d->dl_client, client, sizeof(d->dl_client));
	memcpy(&d->dl_pub.dn_sa, &de->ep_sa, de->ep_salen);
	d->dl_pub.dn_salen = de->ep_salen;
	addr_str((struct sockaddr *)&d->dl_pub.dn_sa, d->dl_endpoint, sizeof(d->dl_endpoint));
	memcpy(&d->dl_int.dn_sa, &pv->pv_int_sa, pv->pv_int_salen);
	d->dl_int.dn_salen = pv->pv_int_salen;
	return d;
}

/* A stop lets the jobs in flight finish (the public proxy was told "ok",
 * its client waits for this dial-back); only a forced stop ends them. */
static int
dial_forced(const struct private *pv)
{
	return pv->pv_px.px_state == PS_FORCED || pv->pv_px.px_state == PS_STOPPED;
}

/* The job's two sockets are released (closed, or by the relay). */
static void
dial_release(struct private *pv)
{
	atomic_fetch_sub(&pv->pv_nsockets, 2);
	proxy_drained(&pv->pv_px);
}

static void
dial_free(struct dial *d)
{
	struct private *pv = d->dl_pv;

	if (d->dl_pub.dn_fd >= 0)
		close(d->dl_pub.dn_fd);
	if (d->dl_int.dn_fd >= 0)
		close(d->dl_int.dn_fd);
	if (d->dl_state != DIAL_JOINED) {
		TAILQ_REMOVE(&pv->pv_dials, d, dl_entry);
		metric_inc(&m_dials, dial_outcome(d));
	}
	explicit_bzero(d->dl_token, sizeof(d->dl_token));
	free(d);
	dial_release(pv);
}

/* The relay's report: the summary line (proxy.h), then the job goes. */
static void
dial_done(const struct relay_report *rep, void *arg)
{
	struct dial *d = arg;
	struct proxy_summary s = {
		.ps_kind = "client",
		.ps_peer = (struct sockaddr *)&d->dl_client,
		.ps_sni = d->dl_domain,
		.ps_operator = d->dl_operator,
		.ps_via = d->dl_pooled ? "pool" : "dial",
		.ps_endpoint = (struct sockaddr *)&d->dl_pub.dn_sa,
		.ps_duration = (double)(loop_now_ms(d->dl_pv->pv_loop) - d->dl_start_ms) / 1000.0,
		.ps_bytes_in = rep->bytes_ab,
		.ps_bytes_out = rep->bytes_ba,
		.ps_end = rep->reason_str,
	};

	proxy_log_summary(&s);
	dial_free(d);
}

static void
dial_close(struct dial_end *s)
{
	if (s->dn_fd >= 0)
		close(s->dn_fd);
	s->dn_fd = -1;
}

/* Both connects are over: join, or give up. */
static void
dial_check(struct dial *d)
{
	struct private *pv = d->dl_pv;
	int pub, in;

	if (d->dl_pub.dn_op.lo_busy || d->dl_int.dn_op.lo_busy)
		return;
	if (d->dl_state == DIAL_FAILING || dial_forced(pv)) {
		dial_free(d);
		return;
	}
	pub = d->dl_pub.dn_fd;
	in = d->dl_int.dn_fd;
	d->dl_pub.dn_fd = d->dl_int.dn_fd = -1;
	TAILQ_REMOVE(&pv->pv_dials, d, dl_entry);
	d->dl_state = DIAL_JOINED;
	log_debug("connection %s via %s: joined", d->dl_domain, d->dl_endpoint);
	if (relay_join(pv->pv_relay, pub, in, "public", "internal", dial_done, d) == NULL) {
		/* relay_join closed both sockets and will not call back. */
		log_warnx("connection %s via %s: cannot join: out of memory", d->dl_domain,
		    d->dl_endpoint);
		metric_inc(&m_dials, "error");
		dial_free(d);
		return;
	}
	metric_inc(&m_dials, "ok");
}

static void
dial_fail(struct dial *d, struct dial_end *s, int err)
{
	char abuf[64];
	int first = d->dl_state != DIAL_FAILING;

	s->dn_state = DN_FAILED;
	dial_close(s);
	d->dl_state = DIAL_FAILING;
	if (first)
		d->dl_err = err;
	if (s == &d->dl_pub) {
		if (first)
			log_warnx("connection %s: public endpoint %s: %s; internal end closed",
			    d->dl_domain, d->dl_endpoint, strerror(err));
		/* Nothing to relay: drop the internal end, connected or not. */
		if (d->dl_int.dn_state == DN_CONNECTING)
			loop_cancel(d->dl_pv->pv_loop, &d->dl_int.dn_op);
		else
			dial_close(&d->dl_int);
		return;
	}
	if (first)
		log_warnx("connection %s via %s: internal server %s: %s; public data connection "
		    "closed", d->dl_domain, d->dl_endpoint,
		    addr_str((struct sockaddr *)&d->dl_int.dn_sa, abuf, sizeof(abuf)),
		    strerror(err));
	/* The public end closes right after its token (dial_pub_cb), so the
	 * public proxy drops the waiting client now, not after accept_timeout. */
	if (d->dl_pub.dn_state == DN_CONNECTED)
		dial_close(&d->dl_pub);
}

static void
dial_pub_cb(struct loop_op *op, int res, unsigned flags)
{
	struct dial *d = LOOP_CONTAINER_OF(op, struct dial, dl_pub.dn_op);
	ssize_t n;

	if (res < 0) {
		dial_fail(d, &d->dl_pub, -res);
		dial_check(d);
		return;
	}
	/* A fresh connection has an empty send buffer: 32 bytes go at once;
	 * anything short means the peer is gone. */
	n = send(d->dl_pub.dn_fd, d->dl_token, sizeof(d->dl_token), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(d->dl_token)) {
		dial_fail(d, &d->dl_pub, n < 0 ? errno : EIO);
		dial_check(d);
		return;
	}
	d->dl_pub.dn_state = DN_CONNECTED;
	/* The internal end failed already: the token told the public proxy
	 * which client to drop; closing now makes it do so at once. */
	if (d->dl_state == DIAL_FAILING)
		dial_close(&d->dl_pub);
	dial_check(d);
}

static void
dial_int_cb(struct loop_op *op, int res, unsigned flags)
{
	struct dial *d = LOOP_CONTAINER_OF(op, struct dial, dl_int.dn_op);
	ssize_t n;

	if (res < 0) {
		dial_fail(d, &d->dl_int, -res);
		dial_check(d);
		return;
	}
	/* proxy_protocol: the header goes first, before the relay carries a
	 * byte.  The socket is fresh, its send buffer empty: the few hundred
	 * bytes go at once, and a short write means the server is gone. */
	if (d->dl_pplen > 0 && d->dl_state != DIAL_FAILING) {
		n = send(d->dl_int.dn_fd, d->dl_pp, d->dl_pplen, MSG_NOSIGNAL);
		if (n != (ssize_t)d->dl_pplen) {
			dial_fail(d, &d->dl_int, n < 0 ? errno : EIO);
			dial_check(d);
			return;
		}
	}
	d->dl_int.dn_state = DN_CONNECTED;
	if (d->dl_state == DIAL_FAILING)
		dial_close(&d->dl_int);
	dial_check(d);
}

static int
dial_socket(struct dial_end *s)
{
	int one = 1;

	s->dn_fd = socket(s->dn_sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* The relay forwards whole chunks: Nagle would only delay them. */
	if (s->dn_fd >= 0)
		(void)setsockopt(s->dn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return s->dn_fd;
}

void
dial_start(void *arg)
{
	struct dial *d = arg;
	struct private *pv = d->dl_pv;
	unsigned ms = (unsigned)(pv->pv_conf->pc_connect_timeout * 1000);

	TAILQ_INSERT_TAIL(&pv->pv_dials, d, dl_entry);
	d->dl_start_ms = loop_now_ms(pv->pv_loop);
	if (dial_forced(pv)) {
		dial_free(d);
		return;
	}
	if (ms == 0)
		ms = 1;
	/* a pooled dl_pub is connected already (issue #16) */
	if ((!d->dl_pooled && dial_socket(&d->dl_pub) < 0) || dial_socket(&d->dl_int) < 0) {
		/* EMFILE and the like: the public proxy times the client out. */
		d->dl_err = errno ? errno : EMFILE;
		log_warn("connection %s via %s: socket", d->dl_domain, d->dl_endpoint);
		dial_free(d);
		return;
	}
	loop_op_init(&d->dl_pub.dn_op, dial_pub_cb);
	loop_op_init(&d->dl_int.dn_op, dial_int_cb);
	if (!d->dl_pooled)
		loop_connect(pv->pv_loop, &d->dl_pub.dn_op, d->dl_pub.dn_fd,
		    (struct sockaddr *)&d->dl_pub.dn_sa, d->dl_pub.dn_salen, ms);
	loop_connect(pv->pv_loop, &d->dl_int.dn_op, d->dl_int.dn_fd,
	    (struct sockaddr *)&d->dl_int.dn_sa, d->dl_int.dn_salen, ms);
}

void
private_dials_cancel(struct private *pv)
{
	struct dial *d;

	TAILQ_FOREACH(d, &pv->pv_dials, dl_entry) {
		loop_cancel(pv->pv_loop, &d->dl_pub.dn_op);
		loop_cancel(pv->pv_loop, &d->dl_int.dn_op);
	}
}

void
private_pool_join(struct private *pv, int fd, const struct announcement *an,
    const struct frame *f, const char *endpoint)
{
	struct proxyproto_info pi;
	uint8_t pp[PROXYPROTO_WRITE_MAX];
	ssize_t pplen = 0;
	struct dial *d;

	atomic_fetch_add(&pv->pv_nsockets, 1);  /* the internal side */
	memset(&pi, 0, sizeof(pi));
	pi.pi_src = f->fr_client;
	pi.pi_dst = f->fr_local;
	pi.pi_local = f->fr_client.ss_family != f->fr_local.ss_family;
	if (an->an_proxy_protocol != PROXYPROTO_OFF) {
		strlcpy(pi.pi_authority, f->fr_sni, sizeof(pi.pi_authority));
		pplen = proxyproto_write(an->an_proxy_protocol, &pi, pp, sizeof(pp));
	}
	if (pplen < 0 || (d = calloc(1, sizeof(*d) + (size_t)pplen)) == NULL) {
		log_warnx("connection %s via %s: %s", f->fr_sni, endpoint, pplen < 0 ?
		    "cannot write the PROXY header" : "out of memory");
		close(fd);
		atomic_fetch_sub(&pv->pv_nsockets, 2);
		proxy_drained(&pv->pv_px);
		return;
	}
	d->dl_pv = pv;
	d->dl_state = DIAL_CONNECTING;
	d->dl_pooled = 1;
	d->dl_pub.dn_fd = fd;
	d->dl_pub.dn_state = DN_CONNECTED;
	d->dl_int.dn_fd = -1;
	memcpy(d->dl_pp, pp, (size_t)pplen);
	d->dl_pplen = (size_t)pplen;
	strlcpy(d->dl_domain, f->fr_sni, sizeof(d->dl_domain));
	strlcpy(d->dl_operator, an->an_operator, sizeof(d->dl_operator));
	d->dl_client = f->fr_client;
	strlcpy(d->dl_endpoint, endpoint, sizeof(d->dl_endpoint));
	memcpy(&d->dl_int.dn_sa, &pv->pv_int_sa, pv->pv_int_salen);
	d->dl_int.dn_salen = pv->pv_int_salen;
	dial_start(d);
}
