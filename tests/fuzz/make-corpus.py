#!/usr/bin/env python3
"""Regenerates the SNI seed corpus in tests/fuzz/corpus/fuzz_sni/, and the
null-value seeds of fuzz_directory and fuzz_settings (`--nulls` writes only
those: they need no network).

Real ClientHellos are captured on loopback: a listener on 127.0.0.1 (port 0)
saves the first 16 KiB a client sends, while `openssl s_client` or `curl`
connects to it.  A large (~12 KB) hello is derived from a captured one by
adding a padding extension and re-encoding every enclosing length, then split
into several records.  The expected name of every file is test.example.com
(the large one: big.example.com)."""
import os
import socket
import struct
import subprocess
import sys
import threading

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_sni")
NAME = "test.example.com"


def capture(cmd_for_port, limit=16384, timeout=3.0):
    """Runs a client against a one-shot listener; returns the bytes it sent."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(timeout)
    port = srv.getsockname()[1]
    got = bytearray()

    def serve():
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            return
        conn.settimeout(1.0)
        try:
            while len(got) < limit:
                b = conn.recv(limit - len(got))
                if not b:
                    break
                got.extend(b)
        except socket.timeout:
            pass  # the client waits for our answer: it sent its whole hello
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    subprocess.run(cmd_for_port(port), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=timeout + 2)
    t.join(timeout + 2)
    srv.close()
    return bytes(got)


def records(data):
    """Concatenated payloads of the handshake records at the start of data."""
    out, pos = bytearray(), 0
    while pos + 5 <= len(data) and data[pos] == 22:
        n = struct.unpack(">H", data[pos + 3:pos + 5])[0]
        out += data[pos + 5:pos + 5 + n]
        pos += 5 + n
    return bytes(out)


def with_padding(hello, pad, name):
    """The ClientHello message `hello` with its SNI replaced by name and a
    padding extension of pad bytes appended."""
    body = hello[4:4 + struct.unpack(">I", b"\0" + hello[1:4])[0]]
    p = 34
    p += 1 + body[p]                                    # session id
    p += 2 + struct.unpack(">H", body[p:p + 2])[0]      # cipher suites
    p += 1 + body[p]                                    # compression
    head, exts, q = body[:p], bytearray(), p + 2
    while q < len(body):
        t, n = struct.unpack(">HH", body[q:q + 4])
        if t == 0:
            hn = name.encode()
            sn = struct.pack(">BH", 0, len(hn)) + hn
            exts += struct.pack(">HHH", 0, len(sn) + 2, len(sn)) + sn
        elif t != 21:
            exts += body[q:q + 4 + n]
        q += 4 + n
    exts += struct.pack(">HH", 21, pad) + bytes(pad)
    body = head + struct.pack(">H", len(exts)) + exts
    return b"\x01" + struct.pack(">I", len(body))[1:] + body


def split(msg, size, version=b"\x03\x01"):
    out = bytearray()
    for i in range(0, len(msg), size):
        frag = msg[i:i + size]
        out += b"\x16" + version + struct.pack(">H", len(frag)) + frag
    return bytes(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    s_client = ["openssl", "s_client", "-servername", NAME, "-connect"]
    runs = {
        "openssl-default": lambda p: s_client + ["127.0.0.1:%d" % p],
        "openssl-tls12": lambda p: s_client + ["127.0.0.1:%d" % p, "-tls1_2"],
        # a long ALPN list pushes the hello past 512 bytes: two records
        "openssl-frag512": lambda p: s_client + ["127.0.0.1:%d" % p,
                                                 "-max_send_frag", "512", "-alpn",
                                                 ",".join("proto-%02d" % i for i in range(40))],
        "curl": lambda p: ["curl", "-sk", "--max-time", "2", "--resolve",
                           "%s:%d:127.0.0.1" % (NAME, p), "https://%s:%d/" % (NAME, p)],
    }
    for name, cmd in runs.items():
        data = capture(cmd)
        if len(data) < 50 or data[0] != 22:
            sys.exit("%s: no ClientHello captured (%d bytes)" % (name, len(data)))
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))
    with open(os.path.join(OUT, "openssl-default.bin"), "rb") as f:
        hello = records(f.read())
    big = with_padding(hello, 12000, "big.example.com")
    with open(os.path.join(OUT, "large-padded.bin"), "wb") as f:
        f.write(split(big, 5000))
    print("large-padded: %d bytes" % (len(big)))


CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
FP = "24123d2ade281f41559ac2328c0e8fbf53aa49110fe7c26008af86a112f342c3"


def rec(name, section, data, created_at="2026-01-01T00:00:00Z"):
    return {"name": name, "section": section, "created_at": created_at, "data": data}


def nulls():
    """Seeds with a JSON null in every optional field (review finding M1),
    and settings items scoped to an operator (M2)."""
    import json
    d = os.path.join(CORPUS, "fuzz_directory")
    optional = {"records": [
        rec("op", "channels", [{"type": "other", "settings": None},
                               {"type": "peer_server", "settings": {"address": "localhost:5556"}}],
            created_at=None),
        rec("op", "services", [{"name": "bare", "permissions": None, "methods": None},
                               {"name": "proxy", "permissions": [{"group": "users", "rights": ["call"]}],
                                "methods": [{"name": "announceConnections", "permissions": None}]}]),
        rec("op", "settings", [{"service": None, "operator": None, "environment": None,
                                "settings": {"allowed_domains": None}},
                               {"service": "proxy", "operator": None,
                                "settings": {"allowed_domains": [None, ".a.local"]}}]),
        rec("op", "certificates", [{"fingerprint": FP, "key_usage": None}]),
        rec("op", "preferences", None),
        rec("caller", "groups", ["users"]),
    ]}
    required = {"records": [
        rec("op", "channels", [{"type": "peer_server", "settings": None}]),
        rec("op", "certificates", [{"fingerprint": None}]),
    ]}
    scoped = {"records": [
        rec("caller", "settings", [
            {"service": "proxy", "operator": "op", "settings": {"allowed_domains": [".op.local"]}},
            {"service": "proxy", "operator": "caller", "settings": {"allowed_domains": [".self.local"]}},
            {"service": "proxy", "environment": "dev", "settings": {"allowed_domains": [".any.local"]}}]),
        rec("op", "groups", ["proxy-providers"]),
    ]}
    for name, doc in (("nulls.json", optional), ("null-required.json", required),
                      ("scoped-settings.json", scoped)):
        with open(os.path.join(d, name), "w") as f:
            json.dump(doc, f)
            f.write("\n")
    s = os.path.join(CORPUS, "fuzz_settings")
    tls = {"ca_certificate_files": None, "certificate_file": None, "key_file": None,
           "server_name": None, "verify_client": None}
    listen = {"bind_address": "localhost:5544", "path": None, "max_body": None,
              "idle_timeout": None, "max_connections": None, "handshake_timeout": None,
              "tls": tls}
    hyper = {
        "vars": None,
        "name": "op", "log_level": None, "stop_timeout": None,
        "directory": {"type": "json", "settings": {"path": "/nonexistent", "poll_interval": None}},
        "channels": [
            {"name": "l", "type": "jsonrpc_server", "settings": listen},
            {"name": "a", "type": "jsonrpc_client",
             "settings": {"endpoint": "https://localhost:6655/jsonrpc", "timeout": None,
                          "connect_timeout": None, "pool_size": None, "tls": None}},
            {"name": "p", "type": "peer_server",
             "settings": {k: v for k, v in listen.items() if k != "path"}},
            {"name": "c", "type": "peer_client",
             "settings": {"connect_timeout": None, "call_timeout": None, "pool_size": None,
                          "tls": tls}}],
    }
    rpc = {"jsonrpc_client": {"endpoint": "https://localhost:5544/jsonrpc", "tls": tls},
           "jsonrpc_server": {"bind_address": "localhost:6655", "path": None, "tls": tls}}
    public = {"log_level": None, "private": None, "public": dict(
        rpc, name="op", tls_bind_address=None, internal_bind_address=None,
        internal_endpoint=None, hello_timeout=None, hello_max_bytes=None,
        accept_timeout=None, token_timeout=None, idle_timeout=None, max_connections=None,
        tcp_rate_limits=None, datastore=None)}
    private = {"public": None, "private": dict(
        rpc, name="op", internal_endpoint={"address": None}, connect_timeout=None,
        announce_interval=None, announcements=[{"domain": "a.local", "proxy": "p",
                                                "expires_at": None}],
        datastore=None)}
    # null where vars needs a value: errors naming the variable
    variables = {"vars": {"A": {"source": "env", "variable": "HP_FUZZ_UNSET", "default": None},
                          "B": None, "C": {"source": "literal", "value": None}},
                 "name": "$A"}
    for name, doc in (("hyper-nulls.json", hyper), ("public-nulls.json", public),
                      ("private-nulls.json", private), ("vars-nulls.json", variables)):
        with open(os.path.join(s, name), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--nulls"]:
        nulls()
    else:
        main()
        nulls()
