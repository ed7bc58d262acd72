#!/usr/bin/env bash
# hyper.sh - end-to-end tests of bin/hyper (SPEC section 3).
#
# Two real Hyper servers (public-proxy-1.ga = op1, private-proxy-1.ga = op2)
# on free loopback ports, each with a small JSON-RPC echo service playing its
# proxy (tests/e2e/echo-service.c), certificates from scripts/make-certs.sh,
# and a directory with two extra operators: down.test (nothing listens on its
# peer port) and silent.test (accepts TCP, never answers).  Every wait is
# bounded.  HYPER_BIN selects the binary (e.g. build/asan/bin/hyper).
# Last line: "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."

pass=0; fail=0
ok()  { echo "ok - $1"; pass=$((pass + 1)); }
nok() { echo "not ok - $1"; fail=$((fail + 1)); [ -n "${2:-}" ] && echo "   $2"; }

T=$(mktemp -d /tmp/hyper-e2e.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

OP1=public-proxy-1.ga
OP2=private-proxy-1.ga
PKGS="json-c libevent libevent_openssl libevent_pthreads openssl yaml-0.1 libbsd liburing"

# ---- setup ----------------------------------------------------------------
HYPER=${HYPER_BIN:-bin/hyper}
make -s bin/hyper build/rel/libhp.a >"$T/make.log" 2>&1 || { cat "$T/make.log"; echo "0 passed, 1 failed"; exit 1; }
cc -std=gnu11 -D_GNU_SOURCE -Iinclude/common -Iinclude/hyper -Iinclude/proxy -o "$T/echo-service" tests/e2e/echo-service.c \
	build/rel/libhp.a $(pkg-config --cflags --libs $PKGS) -lpthread -lm ||
	{ echo "0 passed, 1 failed"; exit 1; }
scripts/make-certs.sh "$T" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
C=$T/certs

# A certificate from the same CA that no directory entry lists.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$C/stranger.key" 2>/dev/null
openssl req -new -key "$C/stranger.key" -subj "/CN=stranger.test" -out "$T/stranger.csr" 2>/dev/null
printf 'subjectAltName=DNS:stranger.test\nextendedKeyUsage=serverAuth,clientAuth\n' >"$T/stranger.ext"
openssl x509 -req -in "$T/stranger.csr" -CA "$C/intermediate.crt" -CAkey "$C/intermediate.key" \
	-CAcreateserial -days 2 -extfile "$T/stranger.ext" -out "$T/stranger.leaf" 2>/dev/null
cat "$T/stranger.leaf" "$C/intermediate.crt" >"$C/stranger.crt"

read -r L1 P1 A1 L2 P2 A2 DOWN SILENT < <(python3 -c '
import socket
ss = []
for _ in range(8):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))')

cat >"$T/directory/10-operators.json" <<EOF
{"records": [
 {"name": "$OP1", "section": "channels", "created_at": "2026-01-01T00:00:00Z",
  "data": [{"type": "peer_server", "settings": {"address": "127.0.0.1:$P1"}}]},
 {"name": "$OP1", "section": "groups", "created_at": "2026-01-01T00:00:00Z", "data": ["callers"]},
 {"name": "$OP2", "section": "channels", "created_at": "2026-01-01T00:00:00Z",
  "data": [{"type": "peer_server", "settings": {"address": "127.0.0.1:$P2"}}]},
 {"name": "$OP2", "section": "groups", "created_at": "2026-01-01T00:00:00Z", "data": ["others"]},
 {"name": "$OP2", "section": "services", "created_at": "2026-01-01T00:00:00Z",
  "data": [{"name": "svc", "methods": [
    {"name": "echo", "permissions": [{"group": "callers", "rights": ["call"]}]},
    {"name": "fail", "permissions": [{"group": "callers", "rights": ["call"]}]},
    {"name": "secret", "permissions": [{"group": "nobody", "rights": ["call"]}]}]}]},
 {"name": "hd-1", "section": "groups", "created_at": "2026-01-01T00:00:00Z", "data": ["hd"]},
 {"name": "hd-1", "section": "channels", "created_at": "2026-01-01T00:00:00Z",
  "data": [{"type": "peer_server", "settings": {"address": "127.0.0.1:$P2"}}]},
 {"name": "down.test", "section": "channels", "created_at": "2026-01-01T00:00:00Z",
  "data": [{"type": "peer_server", "settings": {"address": "127.0.0.1:$DOWN"}}]},
 {"name": "silent.test", "section": "channels", "created_at": "2026-01-01T00:00:00Z",
  "data": [{"type": "peer_server", "settings": {"address": "127.0.0.1:$SILENT"}}]}
]}
EOF

# hyper_settings DIR NAME LOCAL PEER APP
hyper_settings() {
	mkdir -p "$1"
	local tls="{ca_certificate_files: [\"$C/root.crt\"], certificate_file: \"$C/$2.crt\", key_file: \"$C/$2.key\""
	cat >"$1/hyper.yml" <<-EOF
	name: $2
	log_level: debug
	directory: {type: json, settings: {path: "\$DIR/../directory", poll_interval: 0.2}}
	channels:
	  - name: local
	    type: jsonrpc_server
	    settings: {bind_address: "127.0.0.1:$3", max_body: 4096, tls: $tls}}
	  - name: app
	    type: jsonrpc_client
	    settings: {endpoint: "https://127.0.0.1:$5/jsonrpc", timeout: 3, tls: $tls, server_name: $2}}
	  - name: peers-in
	    type: peer_server
	    settings: {bind_address: "127.0.0.1:$4", tls: $tls}}
	  - name: peers-out
	    type: peer_client
	    settings: {connect_timeout: 1, call_timeout: 2, pool_size: 2, tls: $tls}}
	EOF
}
hyper_settings "$T/h1" $OP1 "$L1" "$P1" "$A1"
hyper_settings "$T/h2" $OP2 "$L2" "$P2" "$A2"

start() { # name cmd... ; stderr to $T/name.log
	local n=$1; shift
	"$@" >"$T/$n.out" 2>"$T/$n.log" &
	pids+=($!)
	eval "PID_$n=$!"
}
wait_port() { # port: up to 5 s
	for _ in $(seq 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

start echo1 "$T/echo-service" "127.0.0.1:$A1" "$C/$OP1.crt" "$C/$OP1.key" "$C/root.crt" $OP1
start echo2 "$T/echo-service" "127.0.0.1:$A2" "$C/$OP2.crt" "$C/$OP2.key" "$C/root.crt" $OP2
start silent python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(0.2)
held, end = [], time.time() + 120
while time.time() < end:
    try: held.append(s.accept()[0])
    except socket.timeout: pass' "$SILENT"
HYPER_SETTINGS=$T/h1 start hyper1 "$HYPER" server run
HYPER_SETTINGS=$T/h2 start hyper2 "$HYPER" server run
for p in "$A1" "$A2" "$SILENT" "$L1" "$P1" "$L2" "$P2"; do
	wait_port "$p" || { echo "port $p never opened"; cat "$T"/*.log; echo "0 passed, 1 failed"; exit 1; }
done

# call OP.METHOD [JSON]: runs `hyper call` from side 1; sets rc, out, err, secs.
call() {
	local t0 t1
	t0=$(date +%s.%N)
	HYPER_SETTINGS=$T/h1 "$HYPER" call "$@" >"$T/call.out" 2>"$T/call.err"
	rc=$?
	t1=$(date +%s.%N)
	grep -E 'Sanitizer|runtime error' "$T/call.err" >>"$T/hyper-call.log"
	out=$(cat "$T/call.out"); err=$(cat "$T/call.err")
	secs=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
}
# js FILE EXPR: evaluate a Python expression on the JSON in FILE (as j).
js() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
lt() { awk "BEGIN { exit !($1 < $2) }"; }
# raw PORT NAME CERT CURL-ARGS...: POST to 127.0.0.1:PORT verifying NAME; body to $T/raw.
raw() {
	local port=$1 name=$2 cert=$3; shift 3
	rm -f "$T/raw"
	curl -s -o "$T/raw" -w '%{http_code}' --max-time 5 --cacert "$C/root.crt" \
		--cert "$C/$cert.crt" --key "$C/$cert.key" \
		--resolve "$name:$port:127.0.0.1" "https://$name:$port/jsonrpc" "$@"
}
rawcall() { # PORT NAME CERT JSON-BODY
	raw "$1" "$2" "$3" -H 'Content-Type: application/json' --data-binary "$4"
}

# ---- routing ----------------------------------------------------------------
call $OP2._ping
if [ $rc = 0 ] && [ "$(js "$T/call.out" 'j["name"]')" = $OP2 ] &&
   [ -n "$(js "$T/call.out" 'j["version"]')" ] &&
   [[ "$(js "$T/call.out" 'j["timestamp"]')" =~ ^20[0-9-]+T[0-9:.]+Z$ ]]; then
	ok "ping of the peer operator through both Hyper servers"
else nok "ping of the peer operator through both Hyper servers" "rc=$rc out=$out err=$err"; fi

call $OP1._ping
if [ $rc = 0 ] && [ "$(js "$T/call.out" 'j["name"]')" = $OP1 ]; then
	ok "ping of the own operator is answered locally"
else nok "ping of the own operator is answered locally" "rc=$rc out=$out err=$err"; fi

call $OP2.echo '{"x": 42}'
if [ $rc = 0 ] && [ "$(js "$T/call.out" 'j["method"]')" = echo ] &&
   [ "$(js "$T/call.out" 'j["params"]["x"]')" = 42 ] &&
   [ "$(js "$T/call.out" 'j["params"]["_client"]["name"]')" = $OP1 ] &&
   [ "$(js "$T/call.out" 'j["params"]["_client"]["entry"]["groups"]')" = "['callers']" ]; then
	ok "call reaches the peer's service with _client naming the caller"
else nok "call reaches the peer's service with _client naming the caller" "rc=$rc out=$out err=$err"; fi

call $OP2.echo '{"_client": {"name": "hd-1", "entry": {"groups": ["nobody"]}}}'
if [ $rc = 0 ] && [ "$(js "$T/call.out" 'j["params"]["_client"]["name"]')" = $OP1 ] &&
   [ "$(js "$T/call.out" 'j["params"]["_client"]["entry"]["name"]')" = $OP1 ]; then
	ok "a spoofed _client is overwritten"
else nok "a spoofed _client is overwritten" "rc=$rc out=$out err=$err"; fi

call $OP1.echo '{"y": "self"}'
if [ $rc = 0 ] && [ "$(js "$T/call.out" 'j["method"]')" = echo ] &&
   [ "$(js "$T/call.out" 'j["params"]["_client"]["name"]')" = $OP1 ]; then
	ok "a call to the own operator goes to its jsonrpc_client with the last segment"
else nok "a call to the own operator goes to its jsonrpc_client with the last segment" "rc=$rc out=$out err=$err"; fi

call $OP2.fail
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = 409 ] &&
   [ "$(js "$T/call.err" 'j["message"]')" = "service refused" ]; then
	ok "an error of the far service flows back unchanged"
else nok "an error of the far service flows back unchanged" "rc=$rc out=$out err=$err"; fi

call nobody.example.echo
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = 404 ] &&
   [ "$(js "$T/call.err" 'j["message"]')" = "unknown operator" ]; then
	ok "unknown operator is 404"
else nok "unknown operator is 404" "rc=$rc out=$out err=$err"; fi

call $OP2.secret
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = 403 ] &&
   [ "$(js "$T/call.err" 'j["message"]')" = "permission denied for method 'secret' and client '$OP1'" ]; then
	ok "a method the caller may not use is 403"
else nok "a method the caller may not use is 403" "rc=$rc out=$out err=$err"; fi

call $OP1._nothing
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = -32601 ]; then
	ok "an unknown internal method is -32601"
else nok "an unknown internal method is -32601" "rc=$rc out=$out err=$err"; fi

call nodot
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = -32601 ]; then
	ok "a method without an operator is refused"
else nok "a method without an operator is refused" "rc=$rc out=$out err=$err"; fi

call down.test.echo
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = 502 ] &&
   [[ "$(js "$T/call.err" 'j["message"]')" == "operator unreachable: "* ]] && lt "$secs" 2.5; then
	ok "a peer Hyper that is down is 502 within the connect timeout (${secs}s)"
else nok "a peer Hyper that is down is 502 within the connect timeout" "rc=$rc secs=$secs err=$err"; fi

call silent.test.echo
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = 504 ] && lt "$secs" 3.5 && lt 0.9 "$secs"; then
	ok "a peer that never answers is 504 within the call timeout (${secs}s)"
else nok "a peer that never answers is 504 within the call timeout" "rc=$rc secs=$secs err=$err"; fi

# hd-1's directory address leads to op2's Hyper, whose certificate is not hd-1's.
call hd-1._ping
if [ $rc = 1 ] && [ "$(js "$T/call.err" 'j["code"]')" = 502 ]; then
	ok "a peer Hyper presenting another operator's certificate is refused ($(js "$T/call.err" 'j["message"]'))"
else nok "a peer Hyper presenting another operator's certificate is refused" "rc=$rc out=$out err=$err"; fi

call $OP2._ping
if [ $rc = 0 ]; then ok "calls keep working after failures"
else nok "calls keep working after failures" "rc=$rc err=$err"; fi

# ---- identity on the local and peer channels --------------------------------
code=$(rawcall "$L1" $OP1 hd-1 '{"jsonrpc":"2.0","method":"'$OP1'._ping","params":{},"id":1}')
if [ "$code" != 200 ] && ! grep -q result "$T/raw" 2>/dev/null; then
	ok "a local client with another operator's certificate is refused"
else nok "a local client with another operator's certificate is refused" "http=$code"; fi

rm -f "$T/raw"
code=$(curl -s -o "$T/raw" -w '%{http_code}' --max-time 5 --cacert "$C/root.crt" \
	--resolve "$OP1:$L1:127.0.0.1" "https://$OP1:$L1/jsonrpc" -H 'Content-Type: application/json' \
	--data-binary '{"jsonrpc":"2.0","method":"'$OP1'._ping","params":{},"id":1}')
if [ "$code" != 200 ] && ! grep -q result "$T/raw" 2>/dev/null; then
	ok "a local client without a certificate is refused"
else nok "a local client without a certificate is refused" "http=$code"; fi

code=$(rawcall "$L1" $OP1 $OP1 '{"jsonrpc":"2.0","method":"'$OP1'._ping","params":{},"id":"abc"}')
if [ "$code" = 200 ] && [ "$(js "$T/raw" 'j["id"]')" = abc ] &&
   [ "$(js "$T/raw" 'j["result"]["name"]')" = $OP1 ]; then
	ok "the local caller gets its own id back"
else nok "the local caller gets its own id back" "http=$code body=$(cat "$T/raw")"; fi

code=$(rawcall "$P2" $OP2 hd-1 '{"jsonrpc":"2.0","method":"'$OP2'.echo","params":{},"id":1}')
if [ "$(js "$T/raw" 'j["error"]["code"]')" = 403 ] &&
   [ "$(js "$T/raw" 'j["error"]["message"]')" = "permission denied for method 'echo' and client 'hd-1'" ]; then
	ok "peer ingress checks the permission of the certificate's operator"
else nok "peer ingress checks the permission of the certificate's operator" "http=$code body=$(cat "$T/raw")"; fi

code=$(rawcall "$P2" $OP2 hd-1 '{"jsonrpc":"2.0","method":"'$OP1'.echo","params":{},"id":1}')
if [ "$(js "$T/raw" 'j["error"]["code"]')" = 400 ]; then
	ok "peer ingress refuses a call for another operator"
else nok "peer ingress refuses a call for another operator" "http=$code body=$(cat "$T/raw")"; fi

code=$(rawcall "$P2" $OP2 hd-1 '{"jsonrpc":"2.0","method":"'$OP2'._ping","params":{},"id":1}')
if [ "$(js "$T/raw" 'j["result"]["name"]')" = $OP2 ]; then
	ok "peer ingress answers _ping to any bound operator"
else nok "peer ingress answers _ping to any bound operator" "http=$code body=$(cat "$T/raw")"; fi

code=$(rawcall "$P2" $OP2 stranger '{"jsonrpc":"2.0","method":"'$OP2'._ping","params":{},"id":1}')
if [ "$code" != 200 ] && ! grep -q result "$T/raw" 2>/dev/null; then
	ok "peer ingress refuses a certificate bound to no operator"
else nok "peer ingress refuses a certificate bound to no operator" "http=$code"; fi

# ---- bad requests on the local channel ---------------------------------------
bad() { # name expected-code curl-args...
	local name=$1 want=$2; shift 2
	rm -f "$T/raw"
	code=$(raw "$L1" $OP1 $OP1 "$@")
	if [ "$(js "$T/raw" 'j["error"]["code"]')" = "$want" ]; then ok "$name"
	else nok "$name" "http=$code body=$(head -c 300 "$T/raw" 2>/dev/null)"; fi
}
bad "malformed JSON is a parse error" -32700 -H 'Content-Type: application/json' --data-binary '{"jsonrpc": "2.0", '
bad "wrong content type is refused" -32700 -H 'Content-Type: text/plain' \
	--data-binary '{"jsonrpc":"2.0","method":"'$OP1'._ping","params":{},"id":1}'
bad "missing method is an invalid request" -32600 -H 'Content-Type: application/json' \
	--data-binary '{"jsonrpc":"2.0","params":{},"id":1}'
head -c 10000 /dev/zero | tr '\0' ' ' >"$T/big"
printf '{"jsonrpc":"2.0","method":"x.y","params":{},"id":1}' >>"$T/big"
code=$(raw "$L1" $OP1 $OP1 -H 'Content-Type: application/json' --data-binary "@$T/big")
if [ "$code" != 200 ] && [ "$code" != 000 ] && ! grep -q '"result"' "$T/raw" 2>/dev/null; then
	ok "an oversize body is refused (http $code)"
else nok "an oversize body is refused" "http=$code"; fi
call $OP1._ping
if [ $rc = 0 ]; then ok "the local channel keeps serving after bad requests"
else nok "the local channel keeps serving after bad requests" "rc=$rc err=$err"; fi

# ---- directory reload ----------------------------------------------------------
# wait_code OP.METHOD CODE: up to 4 s for the call to answer with error CODE.
wait_code() {
	for _ in $(seq 40); do
		call "$1"
		[ "$(js "$T/call.err" 'j["code"]')" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
printf '{"records": [{"name": "late.test", "section": "groups", "created_at": "2026-01-01T00:00:00Z", "data": []}]}\n' \
	>"$T/late.json"
mv "$T/late.json" "$T/directory/20-late.json"
if wait_code late.test.echo 502; then ok "an operator added to the directory is routed while running"
else nok "an operator added to the directory is routed while running" "err=$err"; fi

printf '{"records": [' >"$T/directory/30-broken.json"
sleep 2.5
call late.test.echo; late=$(js "$T/call.err" 'j["code"]')
call $OP2._ping
if [ "$late" = 502 ] && [ $rc = 0 ] && grep -q "30-broken.json" "$T/hyper1.log"; then
	ok "a directory file that fails to parse keeps the last good directory"
else nok "a directory file that fails to parse keeps the last good directory" "late=$late rc=$rc"; fi
rm -f "$T/directory/30-broken.json" "$T/directory/20-late.json"
if wait_code late.test.echo 404; then ok "an operator removed from the directory is unknown again"
else nok "an operator removed from the directory is unknown again" "err=$err"; fi

# A keep-alive client of the local channel whose certificate leaves the
# directory is refused on its next request, on the same connection.
cat >"$T/keepalive.py" <<'EOF'
import json, os, socket, ssl, sys, time
port, name, cert, key, ca, go = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=5),
                    server_hostname=name)
f = s.makefile("rb")
def post(i):
    body = json.dumps({"jsonrpc": "2.0", "method": name + "._ping", "params": {}, "id": i}).encode()
    s.sendall(b"POST /jsonrpc HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (name.encode(), len(body)) + body)
    status = f.readline()
    n = 0
    while True:
        line = f.readline().strip()
        if not line:
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    print(status.split()[1].decode(), f.read(n).decode(), flush=True)
post(1)
end = time.time() + 10
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.05)
try:
    post(2)
except (OSError, IndexError) as e:
    print("closed", repr(e), flush=True)
EOF
python3 "$T/keepalive.py" "$L1" $OP1 "$C/$OP1.crt" "$C/$OP1.key" "$C/root.crt" "$T/go" >"$T/keepalive.out" 2>&1 &
kpid=$!
for _ in $(seq 50); do [ -s "$T/keepalive.out" ] && break; sleep 0.1; done
reloads=$(grep -c "directory reloaded" "$T/hyper1.log")
printf '{"records": [{"name": "%s", "section": "certificates", "created_at": "2026-01-01T00:00:00Z", "data": []}]}\n' \
	$OP1 >"$T/revoke.json"
mv "$T/revoke.json" "$T/directory/95-revoke.json"
for _ in $(seq 50); do
	[ "$(grep -c "directory reloaded" "$T/hyper1.log")" -gt "$reloads" ] && break
	sleep 0.1
done
touch "$T/go"
wait $kpid
first=$(sed -n 1p "$T/keepalive.out"); second=$(sed -n 2p "$T/keepalive.out")
if [[ "$first" == "200 "*'"result"'* ]] && [[ "$second" == *'"code":403'* ]] &&
   [[ "$second" == *"not bound to this operator"* ]]; then
	ok "a keep-alive local client whose certificate left the directory is refused on its next request"
else nok "a keep-alive local client whose certificate left the directory is refused on its next request" \
	"$(cat "$T/keepalive.out")"; fi
rm -f "$T/directory/95-revoke.json" "$T/go"
for _ in $(seq 40); do call $OP1._ping; [ $rc = 0 ] && break; sleep 0.1; done
if [ $rc = 0 ]; then ok "the restored certificate is accepted again"
else nok "the restored certificate is accepted again" "rc=$rc err=$err"; fi

# ---- command line and settings errors ----------------------------------------
mkdir -p "$T/bad"
sed 's/max_body: 4096/max_bodi: 4096/' "$T/h1/hyper.yml" >"$T/bad/hyper.yml"
HYPER_SETTINGS=$T/bad timeout 5 "$HYPER" server run >/dev/null 2>"$T/bad.err"
rc=$?
if [ $rc = 2 ] && [ "$(wc -l <"$T/bad.err")" = 1 ] && grep -q " hyper error: settings: .*$T/bad/hyper.yml.*max_bodi" "$T/bad.err"; then
	ok "a settings error exits 2 naming file and key"
else nok "a settings error exits 2 naming file and key" "rc=$rc $(cat "$T/bad.err")"; fi

grep -v '^name:' "$T/h1/hyper.yml" >"$T/bad/hyper.yml"
HYPER_SETTINGS=$T/bad timeout 5 "$HYPER" call x.y >/dev/null 2>"$T/bad.err"
rc=$?
if [ $rc = 2 ] && grep -q " hyper error: settings: .*name" "$T/bad.err"; then
	ok "hyper call with a settings error exits 2"
else nok "hyper call with a settings error exits 2" "rc=$rc $(cat "$T/bad.err")"; fi

if "$HYPER" --version | grep -q '^hyper [0-9]' && "$HYPER" --help | grep -q 'server run'; then
	ok "--version and --help"
else nok "--version and --help"; fi

# ---- graceful stop --------------------------------------------------------------
(HYPER_SETTINGS=$T/h1 timeout 10 "$HYPER" call silent.test.echo >/dev/null 2>"$T/inflight.err"; echo $? >"$T/inflight.rc") &
inflight=$!
sleep 0.3
t0=$(date +%s.%N)
kill -TERM "$PID_hyper1"
wait "$PID_hyper1"
rc=$?
secs=$(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $t0 }")
wait $inflight
if [ $rc = 0 ] && lt "$secs" 3.5; then ok "SIGTERM stops the server with exit 0 (${secs}s)"
else nok "SIGTERM stops the server with exit 0" "rc=$rc secs=$secs"; fi
if [ "$(cat "$T/inflight.rc")" = 1 ] && [ -n "$(js "$T/inflight.err" 'j["code"]')" ]; then
	ok "a call in flight at SIGTERM still gets a JSON-RPC answer"
else nok "a call in flight at SIGTERM still gets a JSON-RPC answer" "$(cat "$T/inflight.err")"; fi

call $OP2._ping
if [ $rc = 1 ] && [[ "$err" == *"operator unreachable"* ]]; then
	ok "hyper call without a running local Hyper exits 1 saying so"
else nok "hyper call without a running local Hyper exits 1 saying so" "rc=$rc err=$err"; fi

kill -INT "$PID_hyper2"; wait "$PID_hyper2"; rc=$?
if [ $rc = 0 ]; then ok "SIGINT stops the server with exit 0"
else nok "SIGINT stops the server with exit 0" "rc=$rc"; fi

if ! grep -qiE 'AddressSanitizer|LeakSanitizer|runtime error' "$T"/hyper*.log; then ok "no sanitizer reports"
else nok "no sanitizer reports" "$(grep -iE 'AddressSanitizer|LeakSanitizer|runtime error' "$T"/hyper*.log | head -3)"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
