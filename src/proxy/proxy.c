/* proxy.c - the skeleton both proxy roles run on (proxy.h).
 *
 * Threads: everything here runs on the main thread, which is the io_uring
 * loop's; the side thread is started (control_run) and joined (side_stop)
 * from here. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <bsd/string.h>

#include "control.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "proxy_conf.h"
#include "relay.h"
#include "reload.h"
#include "side.h"
#include "util.h"

/*
 * systemd's readiness protocol (Type=notify), without libsystemd: one
 * datagram to $NOTIFY_SOCKET ("@name" is abstract).  READY=1 once every
 * listener is up, so that `systemctl start` of a successor returns only when
 * it serves (the hand-over, README); STOPPING=1 at a stop.  Nothing when the
 * variable is unset; a failure is logged at debug level only.
 */
static void
proxy_notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	socklen_t len;
	size_t n;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    (n = strlen(path)) >= sizeof(sun.sun_path))
		return;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, n);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
		log_debug("NOTIFY_SOCKET %s: %s", path, strerror(errno));
	close(fd);
}

void
proxy_on_reload(struct proxy *px)
{
	(void)px;
	reload_request();
}

void
proxy_drained(struct proxy *px)
{
	if (px->px_state != PS_RUNNING && px->px_hooks->ph_held(px) == 0)
		loop_stop(px->px_loop);
}

/* One or more signals are queued on the signalfd. */
static void
proxy_signal(struct loop_op *op, int res, unsigned flags)
{
	struct proxy *px = LOOP_CONTAINER_OF(op, struct proxy, px_sigop);
	struct signalfd_siginfo si;

	if (res < 0 && res != -ECANCELED)
		log_warnx("signalfd poll: %s", strerror(-res));
	while (read(px->px_sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			log_info("%s: reload", strsignal(SIGHUP));
			proxy_on_reload(px);
			continue;
		}
		if (px->px_state == PS_RUNNING) {
			log_info("%s: stopping", strsignal((int)si.ssi_signo));
			proxy_notify("STOPPING=1");
			px->px_state = PS_DRAINING;
		} else {
			log_info("%s again: stopping at once", strsignal((int)si.ssi_signo));
			px->px_state = PS_STOPPED;
		}
		loop_stop(px->px_loop);
	}
	if (res != -ECANCELED)
		loop_poll(px->px_loop, &px->px_sigop, px->px_sigfd, POLLIN, 0);
}

/* First expiry: shutdown_timeout is over, end the relays; their reports
 * bring the count to zero.  Second: give up waiting. */
static void
proxy_drain_timeout(struct loop_op *op, int res, unsigned flags)
{
	struct proxy *px = LOOP_CONTAINER_OF(op, struct proxy, px_drainop);

	if (px->px_state == PS_DRAINING) {
		log_warnx("stop: %ld socket(s) still open after shutdown_timeout; closing them",
		    px->px_hooks->ph_held(px));
		px->px_state = PS_FORCED;
		if (px->px_hooks->ph_force)
			px->px_hooks->ph_force(px);
		relay_close_all(px->px_relay);
		loop_timeout(px->px_loop, &px->px_drainop, px->px_hooks->ph_forced_ms);
		return;
	}
	px->px_state = PS_STOPPED;
	loop_stop(px->px_loop);
}

/* The stop order of the control plane, once: join the side thread, free
 * what lived on it, then the JSON-RPC server and client. */
static void
proxy_side_stop(struct proxy *px)
{
	if (px->px_side_stopped)
		return;
	px->px_side_stopped = 1;
	if (px->px_ctl->ct_side != NULL) {
		side_stop(px->px_ctl->ct_side);
		if (px->px_hooks->ph_side_stopped)
			px->px_hooks->ph_side_stopped(px);
	}
	control_stop(px->px_ctl);
}

/* Stop accepting, drop what is not relaying, let the relays finish. */
static int
proxy_drain(struct proxy *px)
{
	const struct proxy_hooks *h = px->px_hooks;
	double secs = px->px_conf->pc_shutdown_timeout;

	if (h->ph_drain)
		h->ph_drain(px);
	if (h->ph_side_first)
		proxy_side_stop(px);
	if (h->ph_held(px) == 0)
		return 0;
	log_info("stopping: relays may drain for up to %.1f s", secs);
	loop_timeout(px->px_loop, &px->px_drainop, (unsigned)(secs * 1000));
	return loop_run(px->px_loop);
}

int
proxy_run(struct proxy *px, struct proxy_conf *pc, struct control *ctl,
    const struct proxy_hooks *h, void *role)
{
	struct relay_settings rs;
	sigset_t mask;
	char err[512];
	int rc = 1;

	memset(px, 0, sizeof(*px));
	px->px_conf = pc;
	px->px_hooks = h;
	px->px_role = role;
	px->px_ctl = ctl;
	px->px_sigfd = -1;
	px->px_state = PS_RUNNING;
	/* splice(2) to a socket cannot pass MSG_NOSIGNAL. */
	signal(SIGPIPE, SIG_IGN);
	/* Blocked before any thread starts, so only the signalfd sees them. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if ((px->px_sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		log_errorx("signalfd: %s", strerror(errno));
		goto out;
	}

	/*
	 * Start-up order: settings (certificates and keys) first, then every
	 * port, and only then the datastore.  A settings error (exit 2) leaves
	 * no trace; a port in use (exit 1) does not touch a running proxy's
	 * datastore.
	 */
	if (control_init(ctl, pc, err, sizeof(err)) < 0) {
		log_errorx("settings: %s", err);
		rc = 2;
		goto out;
	}
	if (h->ph_bind && h->ph_bind(px, err, sizeof(err)) < 0) {
		log_errorx("%s", err);
		goto out;
	}
	if (h->ph_open && h->ph_open(px) < 0)
		goto out;
	if ((px->px_loop = loop_new(4096)) == NULL) {
		log_errorx("io_uring setup: %s", strerror(errno));
		goto out;
	}
	proxy_conf_relay_settings(pc, &rs);
	if ((px->px_relay = relay_new(px->px_loop, &rs)) == NULL) {
		log_errorx("relay setup: %s", strerror(errno));
		goto out;
	}
	loop_op_init(&px->px_sigop, proxy_signal);
	loop_op_init(&px->px_drainop, proxy_drain_timeout);
	if (h->ph_start)
		h->ph_start(px);
	loop_poll(px->px_loop, &px->px_sigop, px->px_sigfd, POLLIN, 0);
	if (control_run(ctl, err, sizeof(err)) < 0) {
		log_errorx("%s", err);
		goto out;
	}
	if (h->ph_started)
		h->ph_started(px);
	proxy_notify("READY=1");

	rc = loop_run(px->px_loop) < 0 ? 1 : 0;
	if (rc != 0)
		log_warnx("io_uring loop failed");
	else if (px->px_state == PS_DRAINING && proxy_drain(px) < 0)
		rc = 1;
	log_info("stopped");
out:
	px->px_state = PS_STOPPED;
	proxy_side_stop(px);
	if (px->px_relay)
		relay_free(px->px_relay);
	if (px->px_loop)
		loop_free(px->px_loop);
	px->px_relay = NULL;
	px->px_loop = NULL;
	if (h->ph_free)
		h->ph_free(px);
	if (px->px_sigfd >= 0)
		close(px->px_sigfd);
	return rc;
}

void
proxy_log_summary(const struct proxy_summary *s)
{
	char addr[64], via[80] = "";

	if (s->ps_peer == NULL || s->ps_peer->sa_family == AF_UNSPEC)
		strlcpy(addr, "-", sizeof(addr));
	else
		addr_str_masked(s->ps_peer, addr, sizeof(addr));
	if (s->ps_endpoint != NULL) {
		strlcpy(via, " endpoint=", sizeof(via));
		addr_str(s->ps_endpoint, via + 10, sizeof(via) - 10);
	}
	log_info("%s %s sni=%s operator=%s via=%s%s duration=%.3fs bytes_in=%llu "
	    "bytes_out=%llu end=%s", s->ps_kind, addr, s->ps_sni && s->ps_sni[0] ? s->ps_sni : "-",
	    s->ps_operator && s->ps_operator[0] ? s->ps_operator : "-",
	    s->ps_via ? s->ps_via : "-", via, s->ps_duration,
	    (unsigned long long)s->ps_bytes_in, (unsigned long long)s->ps_bytes_out,
	    s->ps_end && s->ps_end[0] ? s->ps_end : "-");
}
