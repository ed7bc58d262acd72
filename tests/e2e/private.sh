#!/usr/bin/env bash
# private.sh - end-to-end tests of `proxy run private` (SPEC 5).
#
# A real private proxy with both real Hyper servers and the example internal
# server, on free loopback ports (scripts/dev-settings.sh).  The public proxy
# is played first by tests/e2e/fake-public.py (records the announcements,
# answers 409 for "taken." domains, checks the dial-back token, measures how
# fast a data connection is closed), then by the real `proxy run public` for
# the full chain and the restart checks.  Calls come through `hyper call`
# (as public-proxy-1.ga or private-proxy-1.ga) or as hd-1 / internal-server
# straight to the private Hyper's peer port.  V=asan runs the ASan proxy.
# Every wait is bounded.  Last line: "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh
T=$E2E_RUN

V=${V:-rel}
PROXY=bin/proxy
[ "$V" = asan ] && PROXY=build/asan/bin/proxy
if ! make -s bin/proxy bin/hyper examples >"$T/make.log" 2>&1 ||
   { [ "$V" = asan ] && ! make -s V=asan build/asan/bin/proxy >>"$T/make.log" 2>&1; }; then
	cat "$T/make.log"; echo "0 passed, 1 failed"; exit 1
fi
scripts/dev-settings.sh "$T/s" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
. "$T/s/ports.env"
R=$T/s/roles
C=$PWD/settings/dev/certs
DOWN_PORT=$(free_port)
SILENT_PORT=$(free_port)
TRAP_PORT=$(free_port)     # a listener no data_endpoints names: must never be dialed

# internal-server is also an operator (its certificate is in the directory):
# it may call incomingConnection and announceConnection, but has no
# allowed_domains.
cat >"$T/s/directory/20-test.json" <<EOF
{"records": [
 {"name": "internal-server", "section": "groups", "created_at": "2026-01-01T00:00:00Z",
  "data": ["proxy-providers", "hd-users"]}
]}
EOF
cat >"$R/private-proxy-1/010_test.yml" <<EOF
private:
  connect_timeout: 1
  max_connections: 16
  shutdown_timeout: 0.5
  announcements:
    - {domain: test.internal-server.local, proxy: public-proxy-1.ga}
    - {domain: taken.internal-server.local, proxy: public-proxy-1.ga}
  public_proxies:
    - name: public-proxy-1.ga
      data_endpoints: ["localhost:$DATA_PORT", "127.0.0.1:$DOWN_PORT", "127.0.0.1:$SILENT_PORT"]
EOF

H1=$R/public-proxy-hyper-1
H2=$R/private-proxy-hyper-1
# js FILE EXPR: a Python expression on the JSON in FILE (as j).
js() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
lt() { awk "BEGIN { exit !($1 < $2) }"; }
now() { date +%s.%N; }
token() { head -c "${1:-32}" /dev/urandom | base64 -w0; }
# hcall HYPER_DIR OP.METHOD JSON: sets rc; result in call.out, error in call.err.
hcall() {
	HYPER_SETTINGS=$1 timeout 10 bin/hyper call "$2" "$3" >"$T/call.out" 2>"$T/call.err"
	rc=$?
}
# incoming DOMAIN TOKEN [ENDPOINT]: incomingConnection as public-proxy-1.ga.
incoming() {
	hcall "$H1" private-proxy-1.ga.incomingConnection \
		"{\"domain\": \"$1\", \"token\": \"$2\", \"endpoint\": \"${3:-127.0.0.1:$DATA_PORT}\"}"
}
# opcall CERT METHOD PARAMS: as operator CERT, to the private Hyper's peer port.
opcall() {
	curl -s -o "$T/raw" --max-time 5 --cacert "$C/root.crt" --cert "$C/$1.crt" --key "$C/$1.key" \
		--resolve "private-proxy-1.ga:$PRIVATE_PEER_PORT:127.0.0.1" \
		"https://private-proxy-1.ga:$PRIVATE_PEER_PORT/jsonrpc" -H 'Content-Type: application/json' \
		--data-binary "{\"jsonrpc\":\"2.0\",\"method\":\"private-proxy-1.ga.$2\",\"params\":$3,\"id\":1}"
}
errcode() { js "$T/raw" 'j["error"]["code"]'; }
errmsg() { js "$T/raw" 'j["error"]["message"]'; }
# wait_for SECONDS CMD...: poll CMD every 0.1 s.
wait_for() {
	local deadline; deadline=$(awk "BEGIN { printf \"%.3f\", $(now) + $1 }"); shift
	while lt "$(now)" "$deadline"; do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
# data_line TOKEN: the fake's record of the data connection carrying TOKEN.
data_line() { grep -F "\"token\": \"$1\"" "$T/fk/data.jsonl" 2>/dev/null | tail -1 >"$T/line.json" && [ -s "$T/line.json" ]; }
announced() { # DOMAIN [METHOD]: the fake received it in an announceConnections call
	grep -F "\"${2:-announceConnections}\"" "$T/fk/calls.jsonl" 2>/dev/null | grep -qF "\"$1\""
}
count_calls() { grep -c "\"${1:-announceConnections}\"" "$T/fk/calls.jsonl" 2>/dev/null || echo 0; }
alive() { kill -0 "${E2E_PID[private]}" 2>/dev/null; }
plog() { cat "$T/private.log"; }

start_private() { PROXY_SETTINGS=$R/private-proxy-1 start_bg private "$PROXY" run private --log-level debug; }
start_fake() {
	mkdir -p "$T/fk"
	start_bg fake python3 tests/e2e/fake-public.py "$PUBLIC_RPC_PORT" "$DATA_PORT" "$C" "$T/fk"
}
start_internal() { IS_BIND_ADDRESS=127.0.0.1:$INTERNAL_PORT start_bg internal bin/internal-server; }

# ---- settings: public_proxies ---------------------------------------------
# bad_settings NAME YAML: the private proxy refuses to start with exit 2 and a
# message naming public_proxies.
bad_settings() {
	rm -rf "$T/bad"; mkdir -p "$T/bad"; cp -r "$R/private-proxy-1" "$T/bad/"
	printf '%s\n' "$2" >"$T/bad/private-proxy-1/020_bad.yml"
	PROXY_SETTINGS=$T/bad/private-proxy-1 timeout 10 "$PROXY" run private >"$T/bad.log" 2>&1
	local rc=$?
	check "$1 (exit 2)" eval '[ $rc = 2 ] && grep -q "private.public_proxies" "$T/bad.log"'
}
bad_settings "public_proxies: an entry without data_endpoints is a settings error" \
	'private: {public_proxies: [{name: public-proxy-1.ga}]}'
bad_settings "public_proxies: an empty data_endpoints is a settings error" \
	'private: {public_proxies: [{name: public-proxy-1.ga, data_endpoints: []}]}'
bad_settings "public_proxies: a data endpoint without a port is a settings error" \
	'private: {public_proxies: [{name: public-proxy-1.ga, data_endpoints: [nohostport]}]}'
bad_settings "public_proxies: the same public proxy listed twice is a settings error" \
	'private: {public_proxies: [{name: a.ga, data_endpoints: ["localhost:1"]}, {name: a.ga, data_endpoints: ["localhost:2"]}]}'
bad_settings "public_proxies: an unknown key is a settings error" \
	'private: {public_proxies: [{name: a.ga, data_endpoint: ["localhost:1"]}]}'

# ---- start order: the private proxy first, its peers 2 s later -------------
start_private
sleep 2
check "the private proxy waits for its Hyper and keeps retrying" \
	eval 'alive && grep -q "retry in" "$T/private.log"'
start_internal
start_fake
HYPER_SETTINGS=$H1 start_bg hyper1 bin/hyper server run
HYPER_SETTINGS=$H2 start_bg hyper2 bin/hyper server run
for p in $INTERNAL_PORT $PUBLIC_RPC_PORT $DATA_PORT $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT \
	$PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT $PRIVATE_RPC_PORT; do
	wait_port 127.0.0.1 "$p" 10 || { echo "port $p never opened"; finish; }
done
check "static announcements reach the public proxy within 5 s of the Hyper being up" \
	wait_for 5 announced test.internal-server.local
check "a 409 for one domain of a batch is logged with the domain and the reason" \
	wait_for 3 grep -q "announce taken.internal-server.local to public-proxy-1.ga: refused: 409 already taken" \
	"$T/private.log"

# ---- incomingConnection ----------------------------------------------------
echo tls >"$T/fk/mode"
tok=$(token)
incoming test.internal-server.local "$tok"
check "incomingConnection answers ok at once" \
	eval '[ $rc = 0 ] && [ "$(js "$T/call.out" "j[\"message\"]")" = ok ]'
check "the dial-back sends the token first, then relays TLS to the internal server" \
	eval 'wait_for 5 data_line "$tok" && [ "$(js "$T/line.json" "j[\"body\"]")" = "{\"message\": \"success\"}" ]'
check "one summary line per closed connection: sni, operator, endpoint, bytes, end" \
	wait_for 3 grep -qE "client [^ ]+ sni=test.internal-server.local operator=[^ ]+ via=dial endpoint=127.0.0.1:$DATA_PORT duration=[0-9.]+s bytes_in=[1-9][0-9]* bytes_out=[1-9][0-9]* end=eof$" \
	"$T/private.log"

bad_params() { # NAME PARAMS-JSON
	hcall "$H1" private-proxy-1.ga.incomingConnection "$2"
	check "$1 is -32602" eval '[ $rc = 1 ] && [ "$(js "$T/call.err" "j[\"code\"]")" = -32602 ]'
}
bad_params "a token that is not base64" \
	"{\"domain\": \"test.internal-server.local\", \"token\": \"not base64!!\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
bad_params "a token of 31 bytes" \
	"{\"domain\": \"test.internal-server.local\", \"token\": \"$(token 31)\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
bad_params "a token of 33 bytes" \
	"{\"domain\": \"test.internal-server.local\", \"token\": \"$(token 33)\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
bad_params "a missing domain" "{\"token\": \"$(token)\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
bad_params "an endpoint that is not host:port" \
	"{\"domain\": \"test.internal-server.local\", \"token\": \"$(token)\", \"endpoint\": \"nowhere\"}"

check "each bad token is refused with one warning" \
	eval '[ "$(grep -c "refused: token is not base64 of 32 bytes" "$T/private.log")" = 3 ] &&
	[ "$(grep -c "incomingConnection for test.internal-server.local from public-proxy-1.ga refused: token is not base64" "$T/private.log")" = 3 ]'

incoming nothing.internal-server.local "$(token)"
check "an unannounced domain is 404" eval '[ $rc = 1 ] && [ "$(js "$T/call.err" "j[\"code\"]")" = 404 ] &&
	[ "$(js "$T/call.err" "j[\"message\"]")" = "no matching connection found" ]'
opcall internal-server incomingConnection \
	"{\"domain\": \"test.internal-server.local\", \"token\": \"$(token)\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
check "incomingConnection from an operator nothing is announced to is 403, with one warning" \
	eval '[ "$(errcode)" = 403 ] && [ "$(errmsg)" = "not a public proxy of this private proxy" ] &&
	[ "$(grep -c "incomingConnection for test.internal-server.local from internal-server refused: nothing is announced to it" "$T/private.log")" = 1 ]'

# A listener that records every connection: an endpoint outside the public
# proxy's data_endpoints must be refused before anything is dialed.
start_bg trap python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(0.1)
end = time.time() + 120
while time.time() < end:
    try: c = s.accept()[0]
    except socket.timeout: continue
    open(sys.argv[2], "a").write("connected\n"); c.close()' "$TRAP_PORT" "$T/trap.hits"
wait_port 127.0.0.1 "$TRAP_PORT" 5
rm -f "$T/trap.hits"     # wait_port's own probe
for ep in "127.0.0.1:$TRAP_PORT" "localhost:$TRAP_PORT" "[::1]:$DATA_PORT" "127.0.0.2:$DATA_PORT"; do
	incoming test.internal-server.local "$(token)" "$ep"
	check "an endpoint outside the public proxy's data_endpoints ($ep) is -32602, with one warning" \
		eval '[ $rc = 1 ] && [ "$(js "$T/call.err" "j[\"code\"]")" = -32602 ] &&
		[ "$(grep -cF "refused: endpoint $ep is not one of its data_endpoints" "$T/private.log")" = 1 ]'
done
incoming test.internal-server.local "$(token)" "LOCALHOST:$DATA_PORT"
check "a data endpoint matches by its settings text or its address (LOCALHOST:port, 127.0.0.1:port)" \
	eval '[ $rc = 0 ]'
sleep 1
check "no refused endpoint was ever dialed" eval '[ ! -e "$T/trap.hits" ]'
stop_bg trap

# Per public proxy: hd-1 announces a name to another operator (internal-server).
opcall hd-1 announceConnection '{"domain": "other.internal-server.local", "proxy": "internal-server"}'
check "an operator may announce a name to a second public proxy" eval '[ "$(js "$T/raw" "j[\"result\"]")" = ok ]'
opcall internal-server incomingConnection \
	"{\"domain\": \"test.internal-server.local\", \"token\": \"$(token)\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
check "a public proxy asking for a domain announced to another one is 404, with one warning" \
	eval '[ "$(errcode)" = 404 ] &&
	[ "$(grep -c "incomingConnection for test.internal-server.local from internal-server refused: the domain is not announced to it" "$T/private.log")" = 1 ]'
opcall internal-server incomingConnection \
	"{\"domain\": \"other.internal-server.local\", \"token\": \"$(token)\", \"endpoint\": \"127.0.0.1:$DATA_PORT\"}"
check "another public proxy's data endpoint is -32602 (unlisted proxies get only localhost:9999)" \
	eval '[ "$(errcode)" = -32602 ]'
opcall hd-1 withdrawConnection '{"domain": "other.internal-server.local", "proxy": "internal-server"}'
opcall internal-server incomingConnection \
	"{\"domain\": \"other.internal-server.local\", \"token\": \"$(token)\", \"endpoint\": \"localhost:9999\"}"
check "once its last domain is withdrawn, that public proxy is 403 again" eval '[ "$(errcode)" = 403 ]'

incoming test.internal-server.local "$(token)" "127.0.0.1:$DOWN_PORT"
check "a refusing public endpoint is logged and the proxy carries on" \
	eval '[ $rc = 0 ] && wait_for 3 grep -q "public endpoint 127.0.0.1:$DOWN_PORT: Connection refused" "$T/private.log" && alive'

# Accepts, never reads, closes each connection after 2 s.
start_bg silent python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(0.1)
held, end = [], time.time() + 60
while time.time() < end:
    try: held.append((s.accept()[0], time.time()))
    except socket.timeout: pass
    for c, t in [h for h in held if time.time() - h[1] > 2]:
        c.close(); held.remove((c, t))' "$SILENT_PORT"
wait_port 127.0.0.1 "$SILENT_PORT" 5
incoming test.internal-server.local "$(token)" "127.0.0.1:$SILENT_PORT"
rc1=$rc
hcall "$H2" private-proxy-1.ga.getAnnouncements '{}'
check "a public endpoint that accepts and never reads does not block the proxy" \
	eval '[ $rc1 = 0 ] && [ $rc = 0 ] && alive'

# ---- internal server down / closing mid-stream ---------------------------
stop_bg internal
echo eof >"$T/fk/mode"
tok=$(token)
incoming test.internal-server.local "$tok"
check "internal server down: the public data connection is closed at once (< 1 s)" \
	eval 'wait_for 5 data_line "$tok" && lt "$(js "$T/line.json" "j[\"eof_after\"]")" 1 &&
	[ "$(js "$T/line.json" "j[\"rest\"]")" = 0 ]'
check "internal server down is logged with its address" \
	grep -q "internal server 127.0.0.1:$INTERNAL_PORT: Connection refused" "$T/private.log"
start_internal
wait_port 127.0.0.1 "$INTERNAL_PORT" 5

echo midstream >"$T/fk/mode"
rm -f "$T/fk/streaming"
tok=$(token)
incoming test.internal-server.local "$tok"
if wait_for 5 test -e "$T/fk/streaming"; then
	{ stop_bg internal KILL; } 2>/dev/null
fi
check "internal server closing mid-stream ends the relay at once" \
	eval 'wait_for 5 data_line "$tok" && [ -n "$(js "$T/line.json" "j[\"end\"]")" ] &&
	lt "$(js "$T/line.json" "j[\"t_end\"] - j[\"t_streaming\"]")" 2'
check "the mid-stream close is logged with its bytes" \
	wait_for 3 grep -qE "client [^ ]+ sni=test.internal-server.local .*bytes_out=[0-9]{5,} end=(eof|reset by internal|error on internal)$" \
	"$T/private.log"
start_internal
wait_port 127.0.0.1 "$INTERNAL_PORT" 5

# ---- max_connections (16 sockets: 8 relayed connections) -----------------
echo hold >"$T/fk/mode"
sleep 2.2   # the silent endpoint's connection is gone by now
ok=0
for i in $(seq 8); do incoming test.internal-server.local "$(token)"; [ $rc = 0 ] && ok=$((ok + 1)); done
incoming test.internal-server.local "$(token)"
check "beyond max_connections a dial is refused with an error reply and a warning" \
	eval '[ $ok = 8 ] && [ $rc = 1 ] && [ "$(js "$T/call.err" "j[\"code\"]")" = 502 ] &&
	grep -q "max_connections (16) reached" "$T/private.log"'
echo tls >"$T/fk/mode"
tryone() { tok=$(token); incoming test.internal-server.local "$tok"; [ $rc = 0 ]; }
check "connections are accepted again once the held ones closed" wait_for 6 tryone

# ---- announceConnection / withdrawConnection / getAnnouncements ----------
inday() { python3 -c "import datetime as d; print((d.datetime.now(d.timezone.utc)+d.timedelta(days=$1)).strftime('%Y-%m-%dT%H:%M:%SZ'))"; }
opcall internal-server announceConnection '{"domain": "x.internal-server.local", "proxy": "public-proxy-1.ga"}'
check "announceConnection from an operator without allowed_domains is 403 not authorized" \
	eval '[ "$(errcode)" = 403 ] && [ "$(errmsg)" = "not authorized" ]'
opcall hd-1 announceConnection '{"domain": "x.internal-server.local", "proxy": "private-proxy-1.ga"}'
check "announceConnection for the private proxy's own name is 400" eval '[ "$(errcode)" = 400 ]'
opcall hd-1 announceConnection "{\"domain\": \"x.internal-server.local\", \"proxy\": \"public-proxy-1.ga\", \"expires_at\": \"$(inday 8)\"}"
check "announceConnection with expires_at beyond 7 days is -32602" eval '[ "$(errcode)" = -32602 ]'
opcall hd-1 announceConnection '{"domain": "x.example.com", "proxy": "public-proxy-1.ga"}'
check "announceConnection outside allowed_domains is 403 not allowed" \
	eval '[ "$(errcode)" = 403 ] && [ "$(errmsg)" = "not allowed" ]'
opcall hd-1 announceConnection '{"domain": "taken.internal-server.local", "proxy": "public-proxy-1.ga"}'
check "announceConnection of a domain another operator holds here is 409" eval '[ "$(errcode)" = 409 ]'
opcall hd-1 announceConnection "{\"domain\": \"HD.internal-server.local.\", \"proxy\": \"public-proxy-1.ga\", \"expires_at\": \"$(inday 1)\"}"
check "announceConnection is accepted and announced to the public proxy at once" \
	eval '[ "$(js "$T/raw" "j[\"result\"]")" = ok ] && wait_for 2 announced hd.internal-server.local'
opcall hd-1 getAnnouncements '{}'
check "getAnnouncements lists only the caller's own announcements" \
	eval '[ "$(js "$T/raw" "\",\".join(a[\"domain\"] for a in j[\"result\"])")" = hd.internal-server.local ] &&
	[ "$(js "$T/raw" "j[\"result\"][0][\"proxy\"]")" = public-proxy-1.ga ] &&
	[ -n "$(js "$T/raw" "j[\"result\"][0][\"expires_at\"]")" ]'
incoming hd.internal-server.local "$(token)"
check "an operator's announcement can be dialed by its public proxy" eval '[ $rc = 0 ]'
opcall hd-1 withdrawConnection '{"domain": "hd.internal-server.local", "proxy": "public-proxy-1.ga"}'
check "withdrawConnection removes it and tells the public proxy" \
	eval '[ "$(js "$T/raw" "j[\"result\"]")" = ok ] && wait_for 2 announced hd.internal-server.local withdrawConnections'
incoming hd.internal-server.local "$(token)"
check "a withdrawn domain is 404 again" eval '[ $rc = 1 ] && [ "$(js "$T/call.err" "j[\"code\"]")" = 404 ]'
hcall "$H2" private-proxy-1.ga.noSuchMethod '{}'
check "an unknown method is -32601" eval '[ $rc = 1 ] && [ "$(js "$T/call.err" "j[\"code\"]")" = -32601 ]'

touch "$T/fk/refuse"
n0=$(count_calls)
opcall hd-1 announceConnection '{"domain": "hd2.internal-server.local", "proxy": "public-proxy-1.ga"}'
wait_for 3 eval '[ "$(count_calls)" -ge $((n0 + 2)) ]'
rm -f "$T/fk/refuse"
n1=$(count_calls)
check "a refused announcement is retried with backoff until accepted" \
	eval 'wait_for 6 eval "[ \$(count_calls) -gt $n1 ]" && grep -q "refused for the test; retry in 2 s" "$T/private.log"'

# ---- stop and restart with the datastore ---------------------------------
echo hold >"$T/fk/mode"
incoming test.internal-server.local "$(token)"
sleep 0.3
t0=$(now)
stop_bg private TERM; rc=$?
secs=$(awk "BEGIN { printf \"%.2f\", $(now) - $t0 }")
check "SIGTERM with a relay in flight drains for shutdown_timeout (0.5 s), exits 0 within 2 s (${secs}s)" \
	eval '[ $rc = 0 ] && lt $secs 2 && grep -q "after shutdown_timeout; closing" "$T/private.log"'
mv "$T/private.log" "$T/private.1.log"

# ---- the real public proxy: full chain and restarts ----------------------
stop_bg fake
PROXY_SETTINGS=$R/public-proxy-1 start_bg public bin/proxy run public
wait_port 127.0.0.1 "$TLS_PORT" 5
start_private
wait_port 127.0.0.1 "$PRIVATE_RPC_PORT" 5
opcall hd-1 getAnnouncements '{}'
check "announcements made over JSON-RPC survive a restart (datastore)" \
	eval '[ "$(js "$T/raw" "\",\".join(a[\"domain\"] for a in j[\"result\"])")" = hd2.internal-server.local ]'
curl_ok() {
	curl -s --max-time 2 --cacert "$C/root.crt" \
		--resolve "test.internal-server.local:$TLS_PORT:127.0.0.1" \
		"https://test.internal-server.local:$TLS_PORT/" 2>/dev/null | grep -q success
}
check "curl through the real public proxy reaches the internal server" wait_for 10 curl_ok

# restart NAME PORT CMD...: kill -9, start again, the chain works within 5 s
# of PORT being open again.
restart() {
	local name=$1 port=$2 t; shift 2
	stop_bg "$name" KILL
	mv "$T/$name.log" "$T/$name.$(date +%s%N).log"
	"$@"
	wait_port 127.0.0.1 "$port" 10
	t=$(now)
	wait_for 5 curl_ok
	local r=$?
	echo "# $name back after $(awk "BEGIN { printf \"%.2f\", $(now) - $t }") s" >&2
	return $r
}
check "the chain is back within 5 s of a restarted private proxy" \
	restart private "$PRIVATE_RPC_PORT" start_private
check "the chain is back within 5 s of a restarted private Hyper" \
	restart hyper2 "$PRIVATE_PEER_PORT" eval 'HYPER_SETTINGS=$H2 start_bg hyper2 bin/hyper server run'
check "the chain is back within 5 s of a restarted public Hyper" \
	restart hyper1 "$PUBLIC_HYPER_PORT" eval 'HYPER_SETTINGS=$H1 start_bg hyper1 bin/hyper server run'
check "the chain is back within 5 s of a restarted public proxy" \
	restart public "$TLS_PORT" eval 'PROXY_SETTINGS=$R/public-proxy-1 start_bg public bin/proxy run public'

stop_bg private INT; rc=$?
check "SIGINT exits 0" eval '[ $rc = 0 ]'
check "no sanitizer reports" eval '! grep -qiE "AddressSanitizer|LeakSanitizer|runtime error" "$T"/private*.log'
finish
