#!/usr/bin/env python3
"""stalled-clients.py: TLS clients that ask for a large download and never read.

  stalled-clients.py HOST PORT SNI CAFILE N SRC_PREFIX SRC_COUNT PATH SECONDS

Opens N TLS connections to HOST:PORT (SNI and certificate name SNI), each from
one of SRC_COUNT loopback source addresses SRC_PREFIX.2, .3, ... in turn, with
a 4 KiB receive buffer set before connecting; each sends "GET PATH" and then
reads nothing.  Prints "established E answering A" once all are set up (A: the
connections where the answer has begun to arrive, unread), then holds them for
SECONDS (bounded) or until stdin closes, and exits.  Used by stall.sh (the
SECURITY.md H1 test); traffic goes to loopback only.
"""
import select
import socket
import ssl
import sys
import time

host, port, sni, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
n, prefix, nsrc = int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
path, hold = sys.argv[8], float(sys.argv[9])
ctx = ssl.create_default_context(cafile=cafile)
conns = []
deadline = time.monotonic() + 120
for i in range(n):
    if time.monotonic() > deadline:
        break
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.bind(("%s.%d" % (prefix, 2 + i % nsrc), 0))
    raw.settimeout(10)
    try:
        raw.connect((host, port))
        s = ctx.wrap_socket(raw, server_hostname=sni)
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, sni)).encode())
        conns.append(s)
    except (OSError, ssl.SSLError) as e:
        print("connection %d: %s" % (i, e), file=sys.stderr)
        raw.close()
time.sleep(1)
answering = 0
for s in conns:
    r, _, _ = select.select([s.fileno()], [], [], 0)
    answering += bool(r)
print("established %d answering %d" % (len(conns), answering), flush=True)
end = time.monotonic() + hold
while time.monotonic() < end:
    r, _, _ = select.select([sys.stdin], [], [], 0.5)
    if r and not sys.stdin.read(1):
        break
for s in conns:
    s.close()
