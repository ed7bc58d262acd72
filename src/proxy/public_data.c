/* public_data.c - the public proxy's data-connection token machine
 * (SPEC 4.2; states in public_int.h, enum dconn_state).
 *
 * Thread: the io_uring loop (main thread) only.  A data connection that
 * delivers a parked client's token is joined to it and handed to the relay
 * (dconn_join); the client's machine (public_client.c) logs the pair's end. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "ratelimit.h"
#include "relay.h"
#include "ticket.h"
#include "token.h"
#include "util.h"
#include "public_int.h"

/* "accepted" at accept, then exactly one of "joined" (a token), "pooled"
 * (a ticket: an idle pooled connection now), a refusal at accept or the
 * result of dconn_close. */
METRIC_COUNTER(m_data, "public_data_connections_total",
    "Data connections of the public proxy: accepted, refused at accept, ended "
    "before their token (by reason), joined (a token) and pooled (a ticket).", "result")

static void
dconn_free(struct dconn *d)
{
	struct public *p = d->dc_pub;

	TAILQ_REMOVE(&p->p_dconns, d, dc_entry);
	if (d->dc_fd >= 0) {
		loop_close(p->p_loop, d->dc_fd);
		public_admit(p, PE_DATA_CLOSED);
	}
	free(d);
}

/* ll: the kind of failure, each logged at most about once a second (the
 * data port is open to anyone); NULL for a stop.  result: its label in
 * public_data_connections_total. */
static void
dconn_close(struct dconn *d, struct log_limit *ll, const char *result, const char *why)
{
	char addr[64];

	if (d->dc_state == DC_CLOSING)
		return;
	d->dc_state = DC_CLOSING;
	metric_inc(&m_data, result);
	loop_timer_disarm(&d->dc_pub->p_token_timers, &d->dc_timer);
	/* A data connection that delivers its token is never logged on its own. */
	addr_str((struct sockaddr *)&d->dc_peer, addr, sizeof(addr));
	if (ll != NULL)
		log_limited(ll, LOG_LVL_INFO, "data connection %s closed: %s", addr, why);
	else
		log_debug("data connection %s closed: %s", addr, why);
	if (d->dc_recv.lo_busy)
		loop_cancel(d->dc_pub->p_loop, &d->dc_recv);
	else
		dconn_free(d);
}

void
dconn_token_expired(struct loop_timer *t, void *arg)
{
	struct dconn *d = LOOP_CONTAINER_OF(t, struct dconn, dc_timer);

	dconn_close(d, &d->dc_pub->p_log_dtoken, "token_timeout", "no token within token_timeout");
}

static void
dconn_join(struct dconn *d)
{
	struct public *p = d->dc_pub;
	struct pconn *c;
	int cfd, dfd;

	loop_timer_disarm(&p->p_token_timers, &d->dc_timer);
	if ((c = token_claim(p->p_tokens, d->dc_token)) == NULL) {
		char why[TICKET_OP_MAX + 96];
		int rc;

		/* issue #16: a ticket, issued or minted, makes it a pooled
		 * connection; a refusal is logged with its reason (at most
		 * about once a second, like an unknown token) */
		if ((rc = public_pool_redeem(p, d->dc_fd, &d->dc_peer, d->dc_token, why,
		    sizeof(why))) == 0) {
			metric_inc(&m_data, "pooled");
			d->dc_fd = -1;   /* the pool's now */
			TAILQ_REMOVE(&p->p_dconns, d, dc_entry);
			free(d);
			return;
		}
		/* Not ours, or we are stopping with nobody left to serve: the
		 * other instance of a hand-over may know it. */
		if ((rc == -1 || rc == -3) && !d->dc_adopted &&
		    public_handover_forward(p, d->dc_fd, &d->dc_peer, d->dc_token) == 0) {
			/* the other instance's token or ticket (hand-over) */
			metric_inc(&m_data, "handed_over");
			d->dc_fd = -1;
			TAILQ_REMOVE(&p->p_dconns, d, dc_entry);
			free(d);
			public_admit(p, PE_DATA_CLOSED);
			return;
		}
		dconn_close(d, &p->p_log_dtoken, rc == -1 ? "unknown_token" :
		    rc == -3 ? "shutdown" : "ticket_refused", why);
		return;
	}
	metric_inc(&m_data, "joined");
	c->c_via = "dial";
	pconn_joined(c);
	cfd = c->c_fd;
	dfd = d->dc_fd;
	c->c_fd = -1;
	d->dc_fd = -1;
	TAILQ_REMOVE(&p->p_dconns, d, dc_entry);
	free(d);
	/* The relay owns both sockets now, also when it fails. */
	if (relay_join(p->p_relay, cfd, dfd, "client", "private", public_relay_done, c) == NULL) {
		struct relay_report rep;

		/* the same line and count as a pair the relay ended */
		memset(&rep, 0, sizeof(rep));
		snprintf(rep.reason_str, sizeof(rep.reason_str), "relay failed");
		public_relay_done(&rep, c);
	}
}

static void
dconn_recv_cb(struct loop_op *op, int res, unsigned flags)
{
	struct dconn *d = LOOP_CONTAINER_OF(op, struct dconn, dc_recv);

	if (d->dc_state == DC_CLOSING) {
		dconn_free(d);
		return;
	}
	if (res <= 0) {
		dconn_close(d, &d->dc_pub->p_log_dclose, res == 0 ? "closed" : "error",
		    res == 0 ? "closed before its token" : strerror(-res));
		return;
	}
	/* A token may arrive in pieces: read exactly what is still missing,
	 * so not one byte of the relayed stream is consumed here. */
	d->dc_got += (size_t)res;
	if (d->dc_got < TOKEN_LEN) {
		loop_recv(d->dc_pub->p_loop, &d->dc_recv, d->dc_fd, d->dc_token + d->dc_got,
		    TOKEN_LEN - d->dc_got, -1);
		return;
	}
	dconn_join(d);
}

/*
 * The data port is open to anyone until a token is read: admit a new
 * connection only within data_rate_limits for its source, and while fewer
 * than max_data_connections wait for their token, plus one per parked
 * client (each still needs its data connection, also when the budget is
 * full of strangers).  Over either, close it at once.
 */
static int
dconn_admit(struct public *p, const struct sockaddr_storage *ss)
{
	long max = p->p_conf->pc_max_data_connections + (long)token_count(p->p_tokens);
	char addr[64];

	if (!ratelimit_allow(p->p_data_limits, (const struct sockaddr *)ss, now_mono())) {
		log_limited(&p->p_log_drate, LOG_LVL_INFO,
		    "data connection %s refused: over data_rate_limits",
		    addr_str((const struct sockaddr *)ss, addr, sizeof(addr)));
		metric_inc(&m_data, "rate_limit");
		return 0;
	}
	if (p->p_ndata >= max) {
		log_limited(&p->p_log_dfull, LOG_LVL_WARN,
		    "max_data_connections (%ld) waiting for a token: data connection %s refused",
		    p->p_conf->pc_max_data_connections,
		    addr_str((const struct sockaddr *)ss, addr, sizeof(addr)));
		metric_inc(&m_data, "limit");
		return 0;
	}
	return 1;
}

void
public_data_accept(struct loop_listener *l, int fd)
{
	struct public *p = l->ll_arg;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct dconn *d;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		close(fd);      /* reset before we looked at it */
		return;
	}
	public_unmap(&ss);
	if (!dconn_admit(p, &ss)) {
		close(fd);
		return;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		metric_inc(&m_data, "out_of_memory");
		close(fd);
		return;
	}
	d->dc_pub = p;
	TAILQ_INSERT_TAIL(&p->p_dconns, d, dc_entry);
	d->dc_fd = fd;
	d->dc_peer = ss;
	d->dc_state = DC_TOKEN;
	metric_inc(&m_data, "accepted");
	loop_op_init(&d->dc_recv, dconn_recv_cb);
	public_admit(p, PE_DATA_ACCEPTED);
	loop_timer_arm(&p->p_token_timers, &d->dc_timer);
	loop_recv(p->p_loop, &d->dc_recv, fd, d->dc_token, TOKEN_LEN, -1);
}

void
public_data_adopt(struct public *p, int fd, const struct sockaddr_storage *peer,
    const uint8_t token[TOKEN_LEN])
{
	struct dconn *d;

	if (p->p_data_closing) {
		/* stopped taking data connections: its private proxy dials again */
		log_debug("data connection from the hand-over link closed: stopping");
		metric_inc(&m_data, "shutdown");
		close(fd);
		return;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		metric_inc(&m_data, "out_of_memory");
		close(fd);
		return;
	}
	d->dc_pub = p;
	TAILQ_INSERT_TAIL(&p->p_dconns, d, dc_entry);
	d->dc_fd = fd;
	d->dc_peer = *peer;
	d->dc_state = DC_TOKEN;
	d->dc_adopted = 1;
	d->dc_got = TOKEN_LEN;
	memcpy(d->dc_token, token, TOKEN_LEN);
	loop_op_init(&d->dc_recv, dconn_recv_cb);
	metric_inc(&m_data, "accepted");
	public_admit(p, PE_DATA_ACCEPTED);
	dconn_join(d);
}

/* --- stop ------------------------------------------------------------------ */

void
public_data_drain(struct public *p)
{
	struct dconn *d, *next;

	for (d = TAILQ_FIRST(&p->p_dconns); d != NULL; d = next) {
		next = TAILQ_NEXT(d, dc_entry);
		dconn_close(d, NULL, "shutdown", "shutdown");
	}
}

void
public_data_free(struct public *p)
{
	struct dconn *d;

	while ((d = TAILQ_FIRST(&p->p_dconns)) != NULL) {
		TAILQ_REMOVE(&p->p_dconns, d, dc_entry);
		if (d->dc_fd >= 0)
			close(d->dc_fd);
		free(d);
	}
}
