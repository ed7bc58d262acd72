#!/usr/bin/env python3
"""Regenerates the SNI seed corpus in tests/fuzz/corpus/fuzz_sni/.

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


if __name__ == "__main__":
    main()
