#!/usr/bin/env bash
# proxyproto.sh - the PROXY protocol from the private proxy to the internal
# server, through the whole chain (tests/e2e/five.sh): curl binds its source
# to 127.0.0.5 and the internal server must report exactly that address and
# curl's port, over TLS 1.2 and 1.3, for proxy_protocol v1 and v2 (v2 also
# through the pool, where the addresses travel in the start frame) (a
# settings file in the private proxy's role folder, IS_PROXY_PROTOCOL in the
# internal server's environment); with proxy_protocol off the answer is the
# seed's, byte for byte.  Also: the announceConnection parameter, malformed
# "client" parameters of incomingConnection (-32602), and bad headers sent
# straight to the internal server (logged, closed, no crash).
# Every wait is bounded.  Last line: "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
T=$E2E_RUN

if ! make -s bin/proxy bin/hyper examples >"$T/make.log" 2>&1; then
	cat "$T/make.log"; echo "0 passed, 1 failed"; exit 1
fi
. tests/e2e/five.sh
five_setup
SRC=127.0.0.5

# client_is URL_PATH WANT ARGS...: curl from $SRC through the chain; the
# answer must be WANT with @PORT@ replaced by curl's own source port.
client_is() {
	local want=$1 out ip port; shift
	out=$(c --interface "$SRC" -w '\n%{local_ip} %{local_port}' "$@" "$URL/jsonrpc") || return 1
	ip=$(tail -n 1 <<<"$out" | cut -d' ' -f1)
	port=$(tail -n 1 <<<"$out" | cut -d' ' -f2)
	out=$(head -n 1 <<<"$out")
	want=${want//@PORT@/$port}
	echo "source $ip:$port, answer: $out"
	[ "$ip" = "$SRC" ] && [ "$out" = "$want" ]
}
answers_within() { # SECONDS WANT
	local deadline=$((SECONDS + $1))
	while [ $SECONDS -lt "$deadline" ]; do
		client_is "$2" --max-time 2 >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	client_is "$2" --max-time 2
}
# restart_pp MODE: the private proxy and the internal server again, with
# proxy_protocol MODE on the seed's announcement and IS_PROXY_PROTOCOL=MODE.
restart_pp() {
	local n
	for n in private internal; do
		stop_bg "$n"
		[ -f "$T/$n.log" ] && mv "$T/$n.log" "$T/$n.$(date +%s%N).log"
	done
	cat >"$S/private-proxy-1/010_proxyproto.yml" <<-EOF
	private:
	  announcements:
	    - {domain: test.internal-server.local, proxy: public-proxy-1.ga, proxy_protocol: $1}
	EOF
	export IS_PROXY_PROTOCOL=$1 IS_PROXY_PROTOCOL_TIMEOUT=1
	five_start internal
	five_start private
	wait_port 127.0.0.1 "$INTERNAL_PORT" 10
	wait_port 127.0.0.1 "$PRIVATE_RPC_PORT" 10
}

# ---- the setting is checked at start -------------------------------------------
bad_setting() {
	rm -rf "$T/bad"; mkdir -p "$T/bad"; cp -r "$S/private-proxy-1" "$T/bad/"
	cat >"$T/bad/private-proxy-1/010_bad.yml" <<-EOF
	private:
	  announcements:
	    - {domain: test.internal-server.local, proxy: public-proxy-1.ga, proxy_protocol: v3}
	EOF
	PROXY_SETTINGS=$T/bad/private-proxy-1 timeout 10 "$BIN/proxy" run private >"$T/bad.log" 2>&1
	local rc=$?
	cat "$T/bad.log"
	[ $rc = 2 ] && grep -q "proxy_protocol: must be v2, v1 or off" "$T/bad.log"
}
check "proxy_protocol: v3 on an announcement: exit 2 naming the key" bad_setting
bad_env() {
	IS_PROXY_PROTOCOL=v3 timeout 10 "$BIN/internal-server" >"$T/bad.log" 2>&1
	local rc=$?
	cat "$T/bad.log"
	[ $rc = 2 ] && grep -q "IS_PROXY_PROTOCOL=v3: expected v2, v1 or off" "$T/bad.log"
}
check "IS_PROXY_PROTOCOL=v3: internal-server exits 2 naming the variable" bad_env

# ---- off (the default) -------------------------------------------------------
five_start_all
check "proxy_protocol off: the seed's answer, byte for byte" \
	answers_within 10 '{"message": "success"}'
check "proxy_protocol off: TLS 1.2 answer unchanged" client_is '{"message": "success"}' --tls-max 1.2
check "proxy_protocol off: TLS 1.3 answer unchanged" client_is '{"message": "success"}' --tlsv1.3

# ---- v1 and v2 -------------------------------------------------------------------
for mode in v1 v2; do
	restart_pp $mode
	want="{\"message\": \"success\", \"client\": \"$SRC:@PORT@\"}"
	check "proxy_protocol $mode: the internal server reports curl's address and port" \
		answers_within 10 "$want"
	check "proxy_protocol $mode: TLS 1.2, address and port match" client_is "$want" --tls-max 1.2
	check "proxy_protocol $mode: TLS 1.3, address and port match" client_is "$want" --tlsv1.3
	check "proxy_protocol $mode: a 1 MiB download after the header is intact" \
		bash -c "[ \"\$(curl -sS --max-time 20 --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 \
			$URL/bytes/1048576 | sha256sum | cut -d' ' -f1)\" = \
			\"\$(python3 -c 'import sys; sys.stdout.buffer.write((bytes(range(251))*4200)[:1048576])' |
			sha256sum | cut -d' ' -f1)\" ]"
done

# ---- v2 through the pool (issue #16): the addresses come in the start frame --------
# pool_size 2: sequential clients each find an idle pooled connection once
# the pool is full (a used one is replaced at once).
pub_call() { timeout 20 env HYPER_SETTINGS=$S/public-proxy-hyper-1 "$BIN/hyper" call "$@"; }
pool_idle() { # within 10 s, 2 idle pooled connections of the private proxy
	local i got
	for ((i = 0; i < 50; i++)); do
		got=$(pub_call public-proxy-1.ga.getConnectionPools '{}' 2>/dev/null |
			jq -r '.[] | select(.operator == "private-proxy-1.ga") | .idle')
		[ "${got:-0}" -ge 2 ] && return 0
		sleep 0.2
	done
	echo "idle: ${got:-none}"; return 1
}
via_pool() { grep -c " via=pool " "$T/public.log"; }
printf 'private:\n  pool_size: 2\n' >"$S/private-proxy-1/020_pool.yml"
restart_pp v2
want="{\"message\": \"success\", \"client\": \"$SRC:@PORT@\"}"
check "proxy_protocol v2 with the pool: the pool fills" pool_idle
pooled_client() { # CURL-ARGS...: served from the pool, with curl's address
	local n0 i
	n0=$(via_pool)
	pool_idle || return 1
	client_is "$want" "$@" || return 1
	for ((i = 0; i < 50; i++)); do
		[ "$(via_pool)" -gt "$n0" ] && return 0
		sleep 0.1
	done
	echo "no via=pool line in the public log"; return 1
}
check "proxy_protocol v2 through the pool: TLS 1.2, address and port match" \
	pooled_client --tls-max 1.2
check "proxy_protocol v2 through the pool: TLS 1.3, address and port match" \
	pooled_client --tlsv1.3
rm -f "$S/private-proxy-1/020_pool.yml"
restart_pp v2

# ---- announceConnection carries the setting ---------------------------------------
# hd-1 may announce *.internal-server.local; the internal server now wants v2.
opcall() { # CERT METHOD PARAMS
	curl -s -o "$T/raw" --max-time 5 --cacert "$CA" --cert "$root/settings/dev/certs/$1.crt" \
		--key "$root/settings/dev/certs/$1.key" \
		--resolve "private-proxy-1.ga:$PRIVATE_PEER_PORT:127.0.0.1" \
		"https://private-proxy-1.ga:$PRIVATE_PEER_PORT/jsonrpc" -H 'Content-Type: application/json' \
		--data-binary "{\"jsonrpc\":\"2.0\",\"method\":\"private-proxy-1.ga.$2\",\"params\":$3,\"id\":1}"
}
js() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
opcall hd-1 announceConnection '{"domain": "pp.internal-server.local", "proxy": "public-proxy-1.ga", "proxy_protocol": "v3"}'
check "announceConnection with proxy_protocol v3 is -32602" \
	eval '[ "$(js "$T/raw" "j[\"error\"][\"code\"]")" = -32602 ]'
opcall hd-1 announceConnection '{"domain": "pp.internal-server.local", "proxy": "public-proxy-1.ga", "proxy_protocol": 2}'
check "announceConnection with proxy_protocol 2 (not a string) is -32602" \
	eval '[ "$(js "$T/raw" "j[\"error\"][\"code\"]")" = -32602 ]'
opcall hd-1 announceConnection '{"domain": "pp.internal-server.local", "proxy": "public-proxy-1.ga", "proxy_protocol": "v2"}'
check "announceConnection with proxy_protocol v2 is accepted" eval '[ "$(js "$T/raw" "j[\"result\"]")" = ok ]'
opcall hd-1 getAnnouncements '{}'
check "getAnnouncements shows proxy_protocol v2" \
	eval '[ "$(js "$T/raw" "[a.get(\"proxy_protocol\") for a in j[\"result\"] if a[\"domain\"] == \"pp.internal-server.local\"][0]")" = v2 ]'
pp_host_ok() {
	local out
	out=$(curl -sS --max-time 2 --cacert "$CA" --interface "$SRC" \
		--resolve "pp.internal-server.local:$TLS_PORT:127.0.0.1" \
		"https://pp.internal-server.local:$TLS_PORT/" -w ' %{local_port}') || return 1
	echo "$out"
	[ "$out" = "{\"message\": \"success\", \"client\": \"$SRC:${out##* }\"} ${out##* }" ]
}
check "a domain announced by announceConnection with v2 gets the header" \
	bash -c "for i in \$(seq 50); do $(declare -f pp_host_ok); CA=$CA SRC=$SRC TLS_PORT=$TLS_PORT; pp_host_ok && exit 0; sleep 0.1; done; exit 1"

# ---- malformed "client" parameters of incomingConnection -------------------------
H1=$S/public-proxy-hyper-1
bad_client() { # NAME CLIENT-JSON
	local tok
	tok=$(head -c 32 /dev/urandom | base64 -w0)
	HYPER_SETTINGS=$H1 timeout 10 "$BIN/hyper" call private-proxy-1.ga.incomingConnection \
		"{\"domain\": \"$HOST\", \"token\": \"$tok\", \"endpoint\": \"localhost:$DATA_PORT\", \"client\": $2}" \
		>"$T/call.out" 2>"$T/call.err"
	check "incomingConnection with $1 is -32602" \
		eval '[ "$(js "$T/call.err" "j[\"code\"]")" = -32602 ]'
}
bad_client "client not an object" '"203.0.113.7:51234"'
bad_client "a client address that is a host name" \
	'{"address": "localhost", "port": 1, "local_address": "127.0.0.1", "local_port": 4433}'
bad_client "a client port of 0" \
	'{"address": "203.0.113.7", "port": 0, "local_address": "127.0.0.1", "local_port": 4433}'
bad_client "a client port of 65536" \
	'{"address": "203.0.113.7", "port": 65536, "local_address": "127.0.0.1", "local_port": 4433}'
bad_client "a client port given as a string" \
	'{"address": "203.0.113.7", "port": "51234", "local_address": "127.0.0.1", "local_port": 4433}'
bad_client "no local_port" '{"address": "203.0.113.7", "port": 51234, "local_address": "127.0.0.1"}'
bad_client "an unknown key" \
	'{"address": "203.0.113.7", "port": 51234, "local_address": "127.0.0.1", "local_port": 4433, "x": 1}'
bad_client "mixed families" \
	'{"address": "2001:db8::1", "port": 51234, "local_address": "127.0.0.1", "local_port": 4433}'
check "the chain still serves after the refused calls" \
	client_is "{\"message\": \"success\", \"client\": \"$SRC:@PORT@\"}"

# ---- bad headers straight to the internal server (v2 mode, 1 s timeout) ----------
# send_raw HEX HOLD: send the bytes, keep the connection open up to HOLD s
# (0: half-close at once), print how long the server took to close it.
send_raw() {
	python3 - "$INTERNAL_PORT" "$1" "$2" <<-'EOF'
	import socket, sys, time
	s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=float(sys.argv[3]) + 3)
	t = time.monotonic()
	s.sendall(bytes.fromhex(sys.argv[2]))
	if sys.argv[3] == "0":
	    s.shutdown(socket.SHUT_WR)
	try:
	    while s.recv(4096):
	        pass
	except (ConnectionResetError, socket.timeout):
	    pass
	print("closed after %.2f s" % (time.monotonic() - t))
	EOF
}
SIG=0d0a0d0a000d0a515549540a
logged() { grep -c "$1" "$T/internal.log"; }
bad_header() { # NAME HEX LOG-PATTERN
	local before
	before=$(logged "$3")
	check "$1: closed with a log line" \
		eval "send_raw $2 2 && sleep 0.2 && [ \$(logged '$3') -gt $before ]"
}
bad_header "a TLS ClientHello without a header" 160301002e010000 "bad PROXY v2 header: no PROXY header signature"
bad_header "a v1 line to a v2 server" "$(printf 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n' | od -An -tx1 | tr -d ' \n')" \
	"bad PROXY v2 header: no PROXY header signature"
bad_header "version 3" "${SIG}3111000c" "bad PROXY v2 header: unknown version"
bad_header "command 2" "${SIG}2211000c" "bad PROXY v2 header: unknown command"
bad_header "family UNIX" "${SIG}213100d8" "bad PROXY v2 header: unsupported address family"
bad_header "a length over IS_PROXY_PROTOCOL_MAX_BYTES" "${SIG}2111ffff" "bad PROXY v2 header: header too long"
bad_header "TCP4 with a 4-byte address block" "${SIG}2111000401020304" "bad PROXY v2 header: malformed"
before_eof=$(logged "connection closed inside the PROXY header")
check "a truncated header, then EOF: closed with a log line" \
	eval "send_raw ${SIG}2111000c0102 0 && sleep 0.2 && [ \$(logged 'connection closed inside the PROXY header') -gt $before_eof ]"
held_closed() {
	local out
	out=$(send_raw "${SIG}2111000c0102" 4) || return 1
	echo "$out"
	awk -v o="$out" 'BEGIN { split(o, f, " "); exit !(f[3] >= 0.9 && f[3] < 3) }' &&
	[ "$(logged "no complete PROXY header within 1 s")" -ge 1 ]
}
check "a truncated header held open is closed after IS_PROXY_PROTOCOL_TIMEOUT" held_closed
check "the internal server is alive and serves after the bad headers" \
	client_is "{\"message\": \"success\", \"client\": \"$SRC:@PORT@\"}" --tlsv1.3
for n in internal private; do
	stop_bg $n; rc=$?
	check "$n exits 0 on SIGTERM" eval "[ $rc = 0 ]"
done
check "no crash or sanitizer report in the logs (CHAIN_BIN=build/asan/bin for ASan)" \
	eval '! grep -qiE "AddressSanitizer|LeakSanitizer|runtime error|segmentation" "$T"/*.log'
finish
