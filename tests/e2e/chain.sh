#!/usr/bin/env bash
# chain.sh - the seed's five processes on free loopback ports, driven by real
# curl and openssl clients: the seed's request, POST, TLS 1.2 and 1.3, 64 MiB
# each way checked byte for byte, 500 requests 25 at a time, bad input on both
# public ports, and a restart of every process with recovery.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/five.sh
five_setup
# Started in the "wrong" order on purpose: callers come up before their callees.
five_start_all

check "the seed's request prints the success message within 5 s of the last start" serves_within 5
check "seed request body is exact" \
	bash -c "[ \"\$(curl -sS --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc)\" = '{\"message\": \"success\"}' ]"
check "the seed's request piped into jq, as in the README" \
	bash -c "curl -sS --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc | jq -e '.message == \"success\"' >/dev/null"
check "POST of a JSON value is echoed" \
	bash -c "[ \"\$(curl -sS --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc --data '{\"a\": [1, 2]}' | tr -d ' ')\" = '{\"a\":[1,2]}' ]"
check "TLS 1.2 client" c --tls-max 1.2 -o /dev/null -f "$URL/"
check "TLS 1.3 client" c --tlsv1.3 -o /dev/null -f "$URL/"
check "upper-case SNI with a trailing dot still routes" \
	bash -c "echo | timeout 5 openssl s_client -connect 127.0.0.1:$TLS_PORT -servername TEST.Internal-Server.LOCAL -CAfile $CA -verify_return_error -brief 2>&1 | grep -q 'Verification: OK'"

# 64 MiB each way, compared byte for byte.
N=$((64 << 20))
download_matches() {
	local a b
	a=$(c --max-time 60 "$URL/bytes/$N" | sha256sum | cut -d' ' -f1)
	b=$(curl -sS --max-time 60 --cacert "$CA" --resolve "$HOST:$INTERNAL_PORT:127.0.0.1" \
		"https://$HOST:$INTERNAL_PORT/bytes/$N" | sha256sum | cut -d' ' -f1)
	echo "chain $a direct $b"
	[ -n "$a" ] && [ "$a" = "$b" ]
}
upload_matches() {
	local f=$E2E_RUN/upload.bin want got
	head -c "$N" /dev/urandom >"$f"
	want=$(sha256sum "$f" | cut -d' ' -f1)
	got=$(c --max-time 60 "$URL/sha256" --data-binary "@$f" -H 'Content-Type: application/octet-stream')
	rm -f "$f"
	echo "want $want got $got"
	[[ "$got" == *"$want"* ]]
}
parallel_500() {
	seq 1 500 | parallel -j 25 curl -sS -o /dev/null -w "'%{http_code} '" --max-time 20 \
		--cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/jsonrpc" --data '{}' \
		>"$E2E_RUN/p.txt"
	local ok
	ok=$(tr ' ' '\n' <"$E2E_RUN/p.txt" | grep -c '^200$')
	echo "$ok of 500 answered 200"
	[ "$ok" -eq 500 ]
}
check "64 MiB download through the chain matches /bytes/N read directly" download_matches
check "64 MiB upload through the chain arrives intact (/sha256)" upload_matches
check "500 requests, 25 in parallel, no failure" parallel_500

# --- bad input on the public ports -------------------------------------------
# Send stdin's bytes to the TLS port, print what comes back (hex) until close.
answer_to() {
	python3 -c "
import socket, sys
s = socket.create_connection(('127.0.0.1', $TLS_PORT), timeout=5)
s.sendall(sys.stdin.buffer.read())
out = b''
while len(out) < 64:
    d = s.recv(64)
    if not d: break
    out += d
print(out.hex())"
}
decode_error_for_http() {
	local got
	got=$(printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' | answer_to)
	echo "answer: $got"
	[ "$got" = 15030300020232 ]
}
decode_error_for_garbage_record() {
	local got
	# a handshake record whose ClientHello length exceeds the record
	got=$(printf '\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00' | answer_to)
	echo "answer: $got"
	[ "$got" = 15030300020232 ] || [ -z "$got" ]
}
check "non-TLS bytes get a decode_error alert" decode_error_for_http
check "a malformed ClientHello gets a decode_error alert or a close" decode_error_for_garbage_record
check "unknown SNI gets an unrecognized_name alert" bash -c "
	echo | timeout 5 openssl s_client -connect 127.0.0.1:$TLS_PORT -servername nobody.example 2>&1 | grep -qi 'unrecognized name'"
check "no SNI gets an unrecognized_name alert" bash -c "
	echo | timeout 5 openssl s_client -connect 127.0.0.1:$TLS_PORT -noservername 2>&1 | grep -qi 'unrecognized name'"
check "a ClientHello split into 1-byte segments still routes" timeout 60 python3 - "$TLS_PORT" "$CA" "$HOST" <<'PY'
import socket, ssl, sys, time
port, ca, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=host)
try: tls.do_handshake()
except ssl.SSLWantReadError: pass
hello = out.read()
s = socket.create_connection(('127.0.0.1', port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(0, 300):
    s.send(hello[i:i+1]); time.sleep(0.002)
s.sendall(hello[300:])
for _ in range(1000):
    try:
        tls.do_handshake(); break
    except ssl.SSLWantReadError:
        o = out.read()
        if o: s.sendall(o)
        d = s.recv(65536)
        if not d: sys.exit("closed during handshake")
        inc.write(d)
o = out.read()
if o: s.sendall(o)
tls.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); s.sendall(out.read())
body = b""
for _ in range(10000):
    try:
        d = tls.read(65536)
        if not d: break            # close_notify: the server is done
        body += d
    except ssl.SSLWantReadError:
        d = s.recv(65536)
        if not d: break
        inc.write(d)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError): break
print(body[-40:])
sys.exit(0 if b'"success"' in body else 1)
PY
check "a wrong token on the data port is closed, the proxy keeps serving" bash -c "
	python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', $DATA_PORT), timeout=5)
s.sendall(b'A' * 32)
assert s.recv(10) == b''\" && curl -sS -f -o /dev/null --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/"
check "a short token then silence is dropped, the proxy keeps serving" bash -c "
	python3 -c \"
import socket
s = socket.create_connection(('127.0.0.1', $DATA_PORT), timeout=5)
s.sendall(b'A' * 5); s.close()\" && curl -sS -f -o /dev/null --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/"

# --- a settings item scoped to another operator grants nothing here -------------
# The private side calls its public proxy's announceConnections by hand; a later
# directory file replaces private-proxy-1.ga's settings with one item.
announce_by_hand() { # -> prints the result or the error; 0 on a result
	HYPER_SETTINGS=$S/private-proxy-hyper-1 timeout 10 "$BIN/hyper" call \
		public-proxy-1.ga.announceConnections "{\"connections\": [{\"domain\": \"$HOST\"}]}" 2>&1
}
scope_to() { # OPERATOR|-: write (or remove) the scoped settings record
	local f=$E2E_RUN/s/directory/50-scoped.json
	if [ "$1" = - ]; then rm -f "$f"; return; fi
	printf '{"records": [{"name": "private-proxy-1.ga", "section": "settings", "created_at": "2026-12-01T00:00:00Z", "data": [{"service": "proxy", "operator": "%s", "settings": {"allowed_domains": [".internal-server.local"]}}]}]}\n' \
		"$1" >"$f.tmp" && mv "$f.tmp" "$f"
}
announce_until() { # GREP-PATTERN on the answer without blanks: up to 8 s (the Hypers poll
	local out     # the directory every 2 s)
	for _ in $(seq 40); do
		out=$(announce_by_hand | tr -d ' \n')
		if grep -q "$1" <<<"$out"; then echo "$out"; return 0; fi
		sleep 0.2
	done
	echo "last answer: $out"
	return 1
}
check "announceConnections by hand is accepted with the unscoped settings item" announce_until '^\[null\]$'
scope_to other-proxy.ga
check "a proxy settings item scoped to another operator grants nothing: 403 not authorized" \
	announce_until '"code":403,"message":"notauthorized"'
scope_to public-proxy-1.ga
check "a proxy settings item scoped to this public proxy grants its allowed_domains" \
	announce_until '^\[null\]$'
scope_to -
check "back to the unscoped item" announce_until '^\[null\]$'

# --- restarts ------------------------------------------------------------------
restart() { # NAME
	stop_bg "$1" KILL
	five_start "$1"
	serves_within 5
}
for name in internal public private public-hyper private-hyper; do
	check "kill -9 and restart of $name: the chain serves again within 5 s" restart "$name"
done

for n in public private public-hyper private-hyper internal; do
	check "$n exits 0 on SIGTERM" stop_bg "$n"
done
finish
