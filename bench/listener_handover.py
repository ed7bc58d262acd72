#!/usr/bin/env python3
"""listener_handover.py - what happens to connections queued on a listener
that closes while a successor listens on the same port (kernel-notes.md,
"Handing a listener over").

Run it as root: it makes its own network namespace for each case (so the
host's net.ipv4.tcp_migrate_req is never touched) and runs itself in there.
Each case: listener A, connections queued on it and never accepted, then A
goes away; B's accept() and each client's first read say which connections
survived.

  reuseport-migrate0  A and B both bind with SO_REUSEPORT, tcp_migrate_req=0
  reuseport-migrate1  the same with tcp_migrate_req=1 (Linux 5.14)
  scm-rights          B has no socket of its own: A passes its listening
                      descriptor to B over a unix socket, then closes it

Prints one line per case: queued on A, reset, moved to B, wall time.
"""
import array
import os
import socket
import subprocess
import sys
import time

N = int(os.environ.get("N", "2000"))     # connections per case (bounded)
PORT = 47001


def clients(n):
    cs = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", PORT))
        except BlockingIOError:
            pass
        cs.append(c)
    return cs


def count(cs, accepted, deadline):
    """Each client: reset (ECONNRESET on read) or alive (its peer was
    accepted); accepted peers write one byte so the client sees it."""
    for a in accepted:
        a.send(b"x")
    reset = alive = 0
    for c in cs:
        c.setblocking(True)
        c.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if c.recv(1) == b"x":
                alive += 1
        except ConnectionResetError:
            reset += 1
        except OSError:
            pass
        c.close()
    return reset, alive


def listener(reuse):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", PORT))
    s.listen(4096)
    return s


def accept_all(s, t):
    s.setblocking(False)
    out = []
    end = time.monotonic() + t
    while time.monotonic() < end:
        try:
            a, _ = s.accept()
            out.append(a)
        except BlockingIOError:
            time.sleep(0.01)
    return out


def case_reuseport():
    a = listener(True)
    b = listener(True)
    t0 = time.monotonic()
    cs = clients(N)
    time.sleep(0.3)                     # handshakes done, all queued
    on_b = accept_all(b, 0.2)           # B's share of the hash
    queued_a = N - len(on_b)
    a.close()                           # A stops
    moved = accept_all(b, 1.0)
    reset, alive = count(cs, on_b + moved, time.monotonic() + 3)
    return queued_a, reset, len(moved), time.monotonic() - t0


def case_scm_rights():
    a = listener(False)
    t0 = time.monotonic()
    cs = clients(N)
    time.sleep(0.3)
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    left.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                           array.array("i", [a.fileno()]))])
    a.close()                           # A stops; B holds the same socket
    msg, anc, _, _ = right.recvmsg(1, socket.CMSG_SPACE(4))
    fd = array.array("i", anc[0][2][:4])[0]
    b = socket.socket(fileno=fd)
    moved = accept_all(b, 1.0)
    reset, alive = count(cs, moved, time.monotonic() + 3)
    return N, reset, len(moved), time.monotonic() - t0


def inner(name):
    if name == "scm-rights":
        r = case_scm_rights()
    else:
        r = case_reuseport()
    print("%-20s queued on A %5d   reset %5d   moved to B %5d   %.2f s" % ((name,) + r))


def main():
    if len(sys.argv) > 1:
        inner(sys.argv[1])
        return
    print("kernel %s, %d connections per case" % (os.uname().release, N))
    for name, migrate in (("reuseport-migrate0", 0), ("reuseport-migrate1", 1),
                          ("scm-rights", 0)):
        ns = "hp-lh-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            "net.ipv4.tcp_migrate_req=%d" % migrate,
                            "net.core.somaxconn=4096",
                            "net.ipv4.tcp_max_syn_backlog=4096"], check=True)
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, name],
                           check=True, timeout=60)
        finally:
            subprocess.run(["ip", "netns", "delete", ns])


if __name__ == "__main__":
    main()
