#!/usr/bin/env python3
"""fake-public.py - a stand-in public proxy for tests/e2e/private.sh.

  fake-public.py RPC_PORT DATA_PORT CERTS_DIR OUT_DIR

JSON-RPC (HTTPS, mutual TLS, only the Hyper of public-proxy-1.ga) on RPC_PORT:
  announceConnections  each call appended to OUT_DIR/calls.jsonl; a domain
                       starting with "taken." gets item error 409; while
                       OUT_DIR/refuse exists the whole call fails (-32603)
  withdrawConnections  appended to OUT_DIR/calls.jsonl, result "ok"
  requestConnectionTickets  while OUT_DIR/pool exists: count random tickets
                       for 127.0.0.1:DATA_PORT, valid 60 s; else -32601
Data listener (plain TCP) on DATA_PORT: reads the 32-byte token, then acts
after OUT_DIR/mode (read per connection), one JSON line per connection in
OUT_DIR/data.jsonl:
  tls        TLS to the internal server through the relay, GET /, records body
  eof        records the seconds until the private proxy closes
  hold       reads nothing more, closes after 3 s
  midstream  TLS GET /bytes/1000000000, touches OUT_DIR/streaming after 64 KiB,
             then reads until the stream ends and records how it ended
  frame-tls  (a pooled connection, issue #16) writes a start frame for
             test.internal-server.local, then TLS GET / as with tls
  frame-badmagic, frame-unannounced, frame-partial, frame-badlength:
             writes an HTTP request where the frame belongs / a frame for
             other.internal-server.local / the first 10 bytes of a frame /
             a head declaring a 400-byte body, then records the seconds until
             the private proxy closes (eof_after)
Every wait is bounded; the process exits after 300 s at the latest.
"""
import base64
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

rpc_port, data_port, certs, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()


def record(name, obj):
    with lock, open(os.path.join(out, name), "a") as f:
        f.write(json.dumps(obj) + "\n")


class Rpc(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = json.loads(body)
        method, params = req.get("method"), req.get("params", {})
        record("calls.jsonl", {"method": method, "params": params, "t": time.time()})
        resp = {"jsonrpc": "2.0", "id": req.get("id")}
        if method == "announceConnections":
            if os.path.exists(os.path.join(out, "refuse")):
                resp["error"] = {"code": -32603, "message": "refused for the test"}
            else:
                resp["result"] = [
                    {"code": 409, "message": "already taken"}
                    if c.get("domain", "").startswith("taken.") else None
                    for c in params.get("connections", [])]
        elif method == "withdrawConnections":
            resp["result"] = "ok"
        elif method == "requestConnectionTickets" and os.path.exists(os.path.join(out, "pool")):
            n = int(params.get("count", 1))
            resp["result"] = {
                "tickets": [base64.b64encode(os.urandom(32)).decode() for _ in range(n)],
                "data_endpoint": "127.0.0.1:%d" % data_port,
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)),
                "expires_in": 60}
        else:
            resp["error"] = {"code": -32601, "message": "method not found"}
        data = json.dumps(resp).encode()
        self.send_response(200 if "result" in resp else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_rpc():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{certs}/public-proxy-1.ga.crt", f"{certs}/public-proxy-1.ga.key")
    ctx.load_verify_locations(f"{certs}/root.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = ThreadingHTTPServer(("127.0.0.1", rpc_port), Rpc)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def tls_client(s):
    ctx = ssl.create_default_context(cafile=f"{certs}/root.crt")
    return ctx.wrap_socket(s, server_hostname="test.internal-server.local")


def frame(sni):
    """A start frame (README "The start frame"): client 10.0.0.1:40000 to
    192.0.2.7:443, connection id 1."""
    body = (struct.pack(">Q", 1) + bytes([4]) + socket.inet_aton("10.0.0.1") + struct.pack(">H", 40000)
            + bytes([4]) + socket.inet_aton("192.0.2.7") + struct.pack(">H", 443)
            + bytes([len(sni)]) + sni.encode())
    return b"HPSF" + bytes([1, 0]) + struct.pack(">H", len(body)) + body


def data_conn(s):
    t0 = time.time()
    s.settimeout(5)
    rec = {"t_accept": t0}
    try:
        tok = read_exact(s, 32)
        rec["token"] = base64.b64encode(tok).decode()
        try:
            mode = open(os.path.join(out, "mode")).read().strip()
        except OSError:
            mode = "tls"
        rec["mode"] = mode
        bad = {"frame-badmagic": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
               "frame-unannounced": frame("other.internal-server.local"),
               "frame-partial": frame("test.internal-server.local")[:10],
               "frame-badlength": b"HPSF" + bytes([1, 0]) + struct.pack(">H", 400)}
        if mode == "frame-tls":
            s.sendall(frame("test.internal-server.local"))
            mode = "tls"
        if mode in bad:
            s.sendall(bad[mode])
            s.settimeout(10)
            try:
                rest = s.recv(1)
            except ConnectionResetError:
                rest = b""
            rec["eof_after"] = time.time() - t0
            rec["rest"] = len(rest)
        elif mode == "tls":
            t = tls_client(s)
            t.sendall(b"GET / HTTP/1.1\r\nHost: test.internal-server.local\r\nConnection: close\r\n\r\n")
            resp = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                resp += chunk
            rec["body"] = resp.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
        elif mode == "eof":
            rest = s.recv(1)
            rec["eof_after"] = time.time() - t0
            rec["rest"] = len(rest)
        elif mode == "hold":
            time.sleep(3)
        elif mode == "midstream":
            t = tls_client(s)
            t.settimeout(10)
            t.sendall(b"GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            got = 0
            touched = False
            try:
                while True:
                    chunk = t.recv(65536)
                    if not chunk:
                        rec["end"] = "eof"
                        break
                    got += len(chunk)
                    if got > 65536 and not touched:
                        open(os.path.join(out, "streaming"), "w").close()
                        touched = True
                        rec["t_streaming"] = time.time()
            except (OSError, ssl.SSLError) as e:
                rec["end"] = "error: %s" % e
            rec["bytes"] = got
            rec["t_end"] = time.time()
    except (OSError, ssl.SSLError) as e:
        rec["error"] = str(e)
    finally:
        s.close()
    record("data.jsonl", rec)


def serve_data():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", data_port))
    ls.listen(64)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=data_conn, args=(s,), daemon=True).start()


threading.Thread(target=serve_rpc, daemon=True).start()
threading.Thread(target=serve_data, daemon=True).start()
time.sleep(300)
