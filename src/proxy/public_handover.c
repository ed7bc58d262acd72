/* public_handover.c - the link between two public proxies that share their
 * ports (reuse_port): a hand-over that loses no data connection.
 *
 * Theory of operation.  With SO_REUSEPORT a second `proxy run public` with
 * the same settings binds the same TLS, data and JSON-RPC ports, and the
 * kernel spreads new connections over both.  A client is parked at the
 * instance that accepted it, under a token only that instance knows; its
 * dial-back (or a pooled connection with a ticket) reaches the data port
 * and so either instance.  The two instances therefore keep one link, a
 * unix SOCK_SEQPACKET connection on an abstract name (handover_socket,
 * one per data address and network namespace): a data connection whose 32
 * bytes are neither a token nor a ticket here is passed to the other
 * instance with SCM_RIGHTS, together with those bytes, and that instance
 * joins it as if it had read them itself (public_data_adopt).  A connection
 * that came over the link is never passed back.
 *
 * Who holds the name: the first instance binds it and listens; a second one
 * finds it taken and connects (its predecessor).  The holder takes one link
 * at a time (a third instance is refused while two are linked).  An instance
 * whose link ends and that holds no name tries again every second: bind
 * (the predecessor is gone: it becomes the holder) or connect.  Both sides
 * check the peer's uid (SO_PEERCRED): only a process of the same user is
 * linked.  Abstract names have no file to clean up after a crash; they live
 * in the network namespace, like the ports.
 *
 * Message (fixed size, one per data connection, the descriptor attached):
 *   magic "HPH1" (4 bytes), the 32 bytes read, the peer's sockaddr_storage.
 * Another size or magic (another version on the other side) is logged and
 * the descriptor closed.
 *
 * Thread: the io_uring loop (main thread) only; public_handover_bind runs
 * on the main thread before the loop starts. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy_conf.h"
#include "public_int.h"

#define HANDOVER_MAGIC          0x48504831u     /* "HPH1" */
#define HANDOVER_RETRY_MS       1000

METRIC_COUNTER(m_handover, "public_handover_connections_total",
    "Data connections passed over the hand-over link to the other instance "
    "(sent) or taken from it (received).", "direction")

struct handover_msg {
	uint32_t                 hm_magic;
	uint8_t                  hm_token[TOKEN_LEN];
	struct sockaddr_storage  hm_peer;
};

static void handover_listen_cb(struct loop_op *, int, unsigned);
static void handover_link_cb(struct loop_op *, int, unsigned);
static void handover_retry_cb(struct loop_op *, int, unsigned);

static socklen_t
handover_addr(const char *name, struct sockaddr_un *sun)
{
	size_t n = strlen(name);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	/* abstract: a leading NUL, no file; n <= HANDOVER_NAME_MAX (conf.c) */
	memcpy(sun->sun_path + 1, name, n);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* The peer's pid when it runs as our user, else 0 (logged). */
static pid_t
handover_peer_ok(int fd, const char *name)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) {
		log_warnx("hand-over: @%s: SO_PEERCRED: %s", name, strerror(errno));
		return 0;
	}
	if (uc.uid != geteuid()) {
		log_warnx("hand-over: @%s: the other end runs as uid %u, not %u: not linked",
		    name, (unsigned)uc.uid, (unsigned)geteuid());
		return 0;
	}
	return uc.pid;
}

/* Bind the name (we hold it: listen) or, when taken, connect to its holder.
 * Blocking is fine: an abstract unix connect completes at once or fails. */
static void
handover_attach(struct handover *ho, const char *name, int quiet)
{
	struct sockaddr_un sun;
	socklen_t len = handover_addr(name, &sun);
	int fd;

	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
		log_warnx("hand-over: socket: %s", strerror(errno));
		return;
	}
	if (bind(fd, (struct sockaddr *)&sun, len) == 0) {
		if (listen(fd, 4) < 0) {
			log_warnx("hand-over: @%s: listen: %s", name, strerror(errno));
			close(fd);
			return;
		}
		ho->ho_listen_fd = fd;
		log_info("hand-over: holding @%s (a successor started with the same settings "
		    "links here)", name);
		return;
	}
	if (errno != EADDRINUSE) {
		log_warnx("hand-over: @%s: bind: %s", name, strerror(errno));
		close(fd);
		return;
	}
	close(fd);
	if ((fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return;
	if (connect(fd, (struct sockaddr *)&sun, len) < 0) {
		/* the holder is on its way out: the retry timer binds it later */
		if (!quiet)
			log_info("hand-over: @%s: connect: %s", name, strerror(errno));
		close(fd);
		return;
	}
	if ((ho->ho_peer_pid = handover_peer_ok(fd, name)) == 0) {
		close(fd);
		return;
	}
	ho->ho_fd = fd;
	log_info("hand-over: linked to the running instance (pid %d) over @%s",
	    (int)ho->ho_peer_pid, name);
}

void
public_handover_bind(struct public *p)
{
	struct handover *ho = &p->p_handover;
	struct proxy_conf *pc = p->p_conf;

	ho->ho_listen_fd = ho->ho_fd = -1;
	loop_op_init(&ho->ho_listen_op, handover_listen_cb);
	loop_op_init(&ho->ho_link_op, handover_link_cb);
	loop_op_init(&ho->ho_retry_op, handover_retry_cb);
	if (!pc->pc_reuse_port || pc->pc_handover_socket == NULL ||
	    pc->pc_handover_socket[0] == '\0')
		return;
	ho->ho_on = 1;
	handover_attach(ho, pc->pc_handover_socket, 0);
}

/* Arm whatever is there to wait for (loop running). */
static void
handover_arm(struct public *p)
{
	struct handover *ho = &p->p_handover;

	if (ho->ho_listen_fd >= 0 && !ho->ho_listen_op.lo_busy)
		loop_poll(p->p_loop, &ho->ho_listen_op, ho->ho_listen_fd, POLLIN, 0);
	if (ho->ho_fd >= 0 && !ho->ho_link_op.lo_busy)
		loop_poll(p->p_loop, &ho->ho_link_op, ho->ho_fd, POLLIN | POLLRDHUP, 0);
	if (ho->ho_listen_fd < 0 && ho->ho_fd < 0 && !ho->ho_retry_op.lo_busy &&
	    p->p_px.px_state == PS_RUNNING)
		loop_timeout(p->p_loop, &ho->ho_retry_op, HANDOVER_RETRY_MS);
}

void
public_handover_start(struct public *p)
{
	if (p->p_handover.ho_on)
		handover_arm(p);
}

static void
handover_retry_cb(struct loop_op *op, int res, unsigned flags)
{
	struct public *p = LOOP_CONTAINER_OF(op, struct public, p_handover.ho_retry_op);
	struct handover *ho = &p->p_handover;

	(void)res;
	(void)flags;
	if (p->p_handover.ho_closed || p->p_px.px_state != PS_RUNNING)
		return;
	if (ho->ho_listen_fd < 0 && ho->ho_fd < 0)
		handover_attach(ho, p->p_conf->pc_handover_socket, 1);
	handover_arm(p);
}

/* A successor connects to the name we hold. */
static void
handover_listen_cb(struct loop_op *op, int res, unsigned flags)
{
	struct public *p = LOOP_CONTAINER_OF(op, struct public, p_handover.ho_listen_op);
	struct handover *ho = &p->p_handover;
	const char *name = p->p_conf->pc_handover_socket;
	pid_t pid;
	int fd;

	(void)flags;
	if (ho->ho_closed || res == -ECANCELED)
		return;
	while ((fd = accept4(ho->ho_listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
		if ((pid = handover_peer_ok(fd, name)) == 0) {
			close(fd);
			continue;
		}
		if (ho->ho_fd >= 0) {
			log_warnx("hand-over: pid %d wants a link, but pid %d is linked: "
			    "refused (hand over one instance at a time)", (int)pid,
			    (int)ho->ho_peer_pid);
			close(fd);
			continue;
		}
		ho->ho_fd = fd;
		ho->ho_peer_pid = pid;
		log_info("hand-over: successor (pid %d) linked over @%s", (int)pid, name);
	}
	handover_arm(p);
}

/* The link ended: forget it (the retry timer looks for a new one). */
static void
handover_unlink(struct public *p, const char *why)
{
	struct handover *ho = &p->p_handover;

	log_info("hand-over: link to pid %d closed (%s); %lu data connection(s) passed "
	    "on, %lu taken over it", (int)ho->ho_peer_pid, why, ho->ho_sent, ho->ho_received);
	close(ho->ho_fd);
	ho->ho_fd = -1;
	ho->ho_peer_pid = 0;
}

static void
handover_link_cb(struct loop_op *op, int res, unsigned flags)
{
	struct public *p = LOOP_CONTAINER_OF(op, struct public, p_handover.ho_link_op);
	struct handover *ho = &p->p_handover;
	union {
		char            buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr  align;
	} cbuf;
	struct handover_msg m;
	struct iovec iov;
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t n;
	int fd;

	(void)flags;
	if (ho->ho_closed || res == -ECANCELED || ho->ho_fd < 0)
		return;
	for (;;) {
		iov.iov_base = &m;
		iov.iov_len = sizeof(m);
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		n = recvmsg(ho->ho_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			handover_unlink(p, n == 0 ? "the other instance is gone" : strerror(errno));
			break;
		}
		fd = -1;
		for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
			    cm->cmsg_len == CMSG_LEN(sizeof(int)))
				memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		if (fd < 0 || n != (ssize_t)sizeof(m) || m.hm_magic != HANDOVER_MAGIC ||
		    (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
			log_warnx("hand-over: a message of %zd bytes %s from pid %d: not ours "
			    "(another version?), dropped", n, fd < 0 ? "without a socket" :
			    "with a socket", (int)ho->ho_peer_pid);
			if (fd >= 0)
				close(fd);
			continue;
		}
		ho->ho_received++;
		metric_inc(&m_handover, "received");
		public_data_adopt(p, fd, &m.hm_peer, m.hm_token);
	}
	handover_arm(p);
}

int
public_handover_forward(struct public *p, int fd, const struct sockaddr_storage *peer,
    const uint8_t token[TOKEN_LEN])
{
	struct handover *ho = &p->p_handover;
	union {
		char            buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr  align;
	} cbuf;
	struct handover_msg m;
	struct iovec iov;
	struct msghdr mh;
	struct cmsghdr *cm;

	if (!ho->ho_on || ho->ho_fd < 0)
		return -1;
	memset(&m, 0, sizeof(m));
	m.hm_magic = HANDOVER_MAGIC;
	memcpy(m.hm_token, token, TOKEN_LEN);
	m.hm_peer = *peer;
	iov.iov_base = &m;
	iov.iov_len = sizeof(m);
	memset(&mh, 0, sizeof(mh));
	memset(&cbuf, 0, sizeof(cbuf));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf.buf;
	mh.msg_controllen = sizeof(cbuf.buf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	/* EAGAIN: the other instance is far behind; the caller closes it */
	if (sendmsg(ho->ho_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		return -1;
	close(fd);      /* the other instance holds it now */
	ho->ho_sent++;
	metric_inc(&m_handover, "sent");
	return 0;
}

int
public_handover_linked(const struct public *p)
{
	return p->p_handover.ho_on && p->p_handover.ho_fd >= 0;
}

void
public_handover_close(struct public *p)
{
	struct handover *ho = &p->p_handover;

	if (!ho->ho_on)
		return;
	ho->ho_closed = 1;
	if (ho->ho_fd >= 0) {
		log_info("hand-over: %lu data connection(s) passed on, %lu taken over the link",
		    ho->ho_sent, ho->ho_received);
		close(ho->ho_fd);
	}
	if (ho->ho_listen_fd >= 0)
		close(ho->ho_listen_fd);
	ho->ho_fd = ho->ho_listen_fd = -1;
}
