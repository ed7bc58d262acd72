#!/usr/bin/env bash
# metrics.sh - the five processes with the metrics listener on for the four
# that have one: a bounded load (the seed's curl, a download, connections
# with an unknown SNI, without SNI, closed at once, not TLS), every process
# scraped before and after, `promtool check metrics`, and the counters moved
# by exactly what the load caused (bytes: at least), the private proxy's
# incomingConnection results by reason (refusals made with `hyper call`);
# with the pool on, the public proxy's pool gauges per operator match
# getConnectionPools and each pooled client counts once; a non-GET request, an
# unknown path and a request that never finishes are answered or closed and
# the processes stay up; a metrics address in use exits 1, a malformed one 2.
# The exact counts of incomingConnection calls, Hyper routes and dial-backs
# are those of the brokered path: the first load runs with pool_size 0; the
# same load then runs again with the default pool (pool_size 8), where each
# client is joined either from the pool (via=pool) or by a dial-back.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/five.sh
five_setup
declare -A MPORT=()
for n in public private public-hyper private-hyper; do
	MPORT[$n]=$(free_port)
done
printf 'public:\n  metrics: "127.0.0.1:%s"\n  metrics_timeout: 1\n' "${MPORT[public]}" \
	>"$S/public-proxy-1/900_metrics.yml"
printf 'private:\n  metrics: "127.0.0.1:%s"\n' "${MPORT[private]}" \
	>"$S/private-proxy-1/900_metrics.yml"
printf 'private:\n  pool_size: 0\n' >"$S/private-proxy-1/900_pool.yml"
printf 'metrics: "127.0.0.1:%s"\nmetrics_timeout: 1\n' "${MPORT[public-hyper]}" \
	>"$S/public-proxy-hyper-1/900_metrics.yml"
printf 'metrics: "127.0.0.1:%s"\n' "${MPORT[private-hyper]}" \
	>"$S/private-proxy-hyper-1/900_metrics.yml"
five_start_all
for n in "${!MPORT[@]}"; do
	wait_port 127.0.0.1 "${MPORT[$n]}" 10 || true
done

check "the chain serves within 10 s" serves_within 10

scrape() { # NAME OUT
	curl -sS --max-time 5 "http://127.0.0.1:${MPORT[$1]}/metrics" >"$2"
}
# Sum of the samples of metric NAME whose labels include every k=v given.
mval() { # FILE NAME [k=v]...
	python3 - "$@" <<-'EOF'
	import re, sys
	f, name, want = sys.argv[1], sys.argv[2], sys.argv[3:]
	tot = 0.0
	for line in open(f):
	    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line.strip())
	    if not m or m.group(1) != name:
	        continue
	    labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ''))
	    if all(labels.get(k) == v for k, v in (w.split('=', 1) for w in want)):
	        tot += float(m.group(4))
	print(int(tot))
	EOF
}

for n in "${!MPORT[@]}"; do
	scrape "$n" "$E2E_RUN/$n.before"
done

# The load: 40 requests of the seed's curl, 5 at a time, and one 2 MB download
# (past splice_threshold, so the relays splice).
LOAD=40
DL=2000000
load() {
	seq 1 $LOAD | parallel -j 5 curl -sS -o /dev/null -w "'%{http_code} '" --max-time 20 \
		--cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/jsonrpc" >"$E2E_RUN/load.txt"
	local ok
	ok=$(tr ' ' '\n' <"$E2E_RUN/load.txt" | grep -c '^200$')
	echo "$ok of $LOAD answered 200"
	[ "$ok" -eq $LOAD ] || return 1
	[ "$(c --max-time 30 "$URL/bytes/$DL" | wc -c)" -eq $DL ]
}
check "a bounded load of the seed's curl and a 2 MB download succeed" load

# Refused clients: M with a name nobody announced, K without SNI (curl sends
# none to an IP address), C that close before a byte, G that speak no TLS.
M=7 K=5 C=4 G=3
refused() {
	local i
	for ((i = 0; i < M; i++)); do
		curl -sS -o /dev/null --max-time 5 --cacert "$CA" \
			--resolve "other.example.com:$TLS_PORT:127.0.0.1" \
			"https://other.example.com:$TLS_PORT/" 2>/dev/null && return 1
	done
	for ((i = 0; i < K; i++)); do
		curl -sS -o /dev/null --max-time 5 -k "https://127.0.0.1:$TLS_PORT/" 2>/dev/null &&
			return 1
	done
	for ((i = 0; i < C; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") || return 1
	done
	for ((i = 0; i < G; i++)); do
		python3 -c "
import socket
s = socket.create_connection(('127.0.0.1', $TLS_PORT), timeout=5)
s.sendall(b'GET / HTTP/1.0\r\n\r\n')
assert s.recv(100)[:1] == b'\x15'	# a TLS alert record
" || return 1
	done
}
check "clients with an unknown name, without SNI, silent or not speaking TLS are refused" refused

# incomingConnection refused by the private proxy, called as the public
# proxy's operator through both Hyper servers: a name not announced, a token
# that is not 32 bytes, an endpoint that is not the public proxy's data port,
# a missing parameter.  R calls in all.
pub_call() { timeout 20 env HYPER_SETTINGS=$S/public-proxy-hyper-1 "$BIN/hyper" call "$@"; }
TOK=$(head -c 32 /dev/urandom | base64 -w0)
EP=localhost:$DATA_PORT
R=4
incoming_refused() {
	local out
	out=$(pub_call private-proxy-1.ga.incomingConnection \
		"{\"domain\": \"nothere.internal-server.local\", \"token\": \"$TOK\", \"endpoint\": \"$EP\"}" 2>&1)
	echo "$out"; [[ $out == *404* ]] || return 1
	out=$(pub_call private-proxy-1.ga.incomingConnection \
		"{\"domain\": \"$HOST\", \"token\": \"c2hvcnQ=\", \"endpoint\": \"$EP\"}" 2>&1)
	echo "$out"; [[ $out == *-32602* ]] || return 1
	out=$(pub_call private-proxy-1.ga.incomingConnection \
		"{\"domain\": \"$HOST\", \"token\": \"$TOK\", \"endpoint\": \"localhost:1\"}" 2>&1)
	echo "$out"; [[ $out == *-32602* ]] || return 1
	out=$(pub_call private-proxy-1.ga.incomingConnection "{\"domain\": \"$HOST\"}" 2>&1)
	echo "$out"; [[ $out == *-32602* ]]
}
check "private: incomingConnection refusals answer with their codes" incoming_refused

# The relays report a pair when both of its sides have closed, the public
# proxy a client that closes first when it sees the EOF: wait until every
# pair has ended and every accepted client has its result (no refusal at
# accept happens here, so each accepted one counts twice in the total).
settled() {
	local i n acc all
	for ((i = 0; i < 100; i++)); do
		n=0
		for p in public private; do
			scrape $p "$E2E_RUN/$p.now" || return 1
			[ "$(mval "$E2E_RUN/$p.now" hyper_relay_relay_pairs_active)" = 0 ] || n=1
		done
		acc=$(mval "$E2E_RUN/public.now" hyper_relay_public_connections_total result=accepted)
		all=$(mval "$E2E_RUN/public.now" hyper_relay_public_connections_total)
		[ "$all" -eq $((2 * acc)) ] || n=1
		[ $n = 0 ] && return 0
		sleep 0.1
	done
	echo "pairs still active, or $all results for $acc accepted"
	return 1
}
check "every pair has ended within 10 s" settled

for n in "${!MPORT[@]}"; do
	scrape "$n" "$E2E_RUN/$n.after"
	check "$n: the scrape passes promtool check metrics" \
		bash -c "promtool check metrics <'$E2E_RUN/$n.after'"
done

# Every metric the example Grafana dashboard draws exists: in a scrape, or
# declared in the code (a metric with labels shows up in a scrape only once
# one of its label sets has been counted).
dashboard() {
	grep -rhoE 'METRIC_(COUNTER|GAUGE|HISTOGRAM)\([a-z_]+, *"[a-z_]+"' "$root/src" |
		sed -E 's/.*"([a-z_]+)"/# TYPE hyper_relay_\1 declared/' >"$E2E_RUN/declared.after"
	python3 - "$root/examples/grafana/hyper-relay.json" "$E2E_RUN"/*.after <<-'EOF'
	import json, re, sys
	d = json.load(open(sys.argv[1]))
	used = set()
	for p in d["panels"]:
	    for t in p.get("targets", []):
	        for m in re.findall(r"hyper_relay_[a-z_]+", t["expr"]):
	            used.add(re.sub(r"_(bucket|count|sum)$", "", m))
	served = set()
	for f in sys.argv[2:]:
	    served |= set(re.findall(r"^# TYPE (\S+) ", open(f).read(), re.M))
	missing = sorted(used - served)
	print("%d metrics drawn, missing: %s" % (len(used), missing))
	sys.exit(1 if missing or not used else 0)
	EOF
}
check "every metric of the example Grafana dashboard is served" dashboard

# The exact change of a counter between the two scrapes.
delta() { # NAME METRIC WANT [k=v]...
	local n=$1 m=$2 want=$3 a b; shift 3
	b=$(mval "$E2E_RUN/$n.before" "hyper_relay_$m" "$@")
	a=$(mval "$E2E_RUN/$n.after" "hyper_relay_$m" "$@")
	echo "$n $m $*: $b -> $a (want +$want exactly)"
	[ $((a - b)) -eq "$want" ]
}
JOINED=$((LOAD + 1))
check "public: connections accepted: every one the test made" delta public \
	public_connections_total $((JOINED + M + K + C + G)) result=accepted
check "public: connections joined" delta public public_connections_total $JOINED result=joined
check "public: unknown names" delta public public_connections_total $M result=unknown_name
check "public: no SNI" delta public public_connections_total $K result=no_sni
check "public: closed before a byte" delta public public_connections_total $C result=closed
check "public: not TLS" delta public public_connections_total $G result=malformed
check "public: no other result" delta public public_connections_total \
	$((2 * (JOINED + M + K + C + G)))
check "public: nobody parked after the load" \
	bash -c "grep -q '^hyper_relay_public_parked 0\$' '$E2E_RUN/public.after'"
check "public: data connections accepted" delta public public_data_connections_total $JOINED \
	result=accepted
check "public: data connections joined" delta public public_data_connections_total $JOINED \
	result=joined
check "public: no other data connection result" delta public public_data_connections_total \
	$((2 * JOINED))
check "public: announcements per operator" \
	bash -c "grep -q '^hyper_relay_announcements{operator=\"private-proxy-1.ga\"} 1\$' '$E2E_RUN/public.after'"
for n in public private; do
	check "$n: relay_pairs_total: one per joined client" delta $n relay_pairs_total $JOINED
	check "$n: relay_ends_total: one per pair" delta $n relay_ends_total $JOINED
	check "$n: relay_pair_duration_seconds counts every pair" \
		delta $n relay_pair_duration_seconds_count $JOINED
done
check "public: one incomingConnection call per joined client" delta public \
	jsonrpc_client_calls_total $JOINED method=private-proxy-1.ga.incomingConnection outcome=ok
check "private: its JSON-RPC server answered each incomingConnection" delta private \
	jsonrpc_server_calls_total $JOINED method=incomingConnection outcome=ok
check "private: the server's latency histogram counts each" delta private \
	jsonrpc_server_call_duration_seconds_count $((JOINED + R)) method=incomingConnection
check "public-hyper: local route calls, exactly" delta public-hyper route_calls_total \
	$((JOINED + R)) via=local method=incomingConnection
check "public-hyper: outcomes per code, exactly" delta public-hyper route_outcomes_total $JOINED \
	via=local code=ok
check "public-hyper: the refusals' outcomes per code" delta public-hyper route_outcomes_total \
	$((R - 1)) via=local code=-32602
check "public-hyper: the duration histogram counts every call" \
	delta public-hyper route_duration_seconds_count $((JOINED + R)) via=local
check "private-hyper: peer route calls, exactly" delta private-hyper route_calls_total \
	$((JOINED + R)) via=peer method=incomingConnection
check "private: incomingConnection accepted, exactly" delta private private_incoming_total \
	$JOINED result=ok
check "private: incomingConnection refused: not announced" delta private private_incoming_total \
	1 result=not_announced
check "private: incomingConnection refused: bad token" delta private private_incoming_total \
	1 result=bad_token
check "private: incomingConnection refused: bad endpoint" delta private private_incoming_total \
	1 result=bad_endpoint
check "private: incomingConnection refused: missing parameters" delta private \
	private_incoming_total 1 result=bad_params
check "private: no other incomingConnection result" delta private private_incoming_total \
	$((JOINED + R))

moved() { # NAME METRIC MIN [k=v]...
	local n=$1 m=$2 min=$3 a b; shift 3
	b=$(mval "$E2E_RUN/$n.before" "hyper_relay_$m" "$@")
	a=$(mval "$E2E_RUN/$n.after" "hyper_relay_$m" "$@")
	echo "$n $m $*: $b -> $a (want +$min)"
	[ $((a - b)) -ge "$min" ]
}
for n in public private; do
	check "$n: relay_bytes_total{direction=down} moved by the download" \
		moved $n relay_bytes_total $DL direction=down
	check "$n: the download was spliced" \
		moved $n relay_bytes_total 1 direction=down engine=splice
	check "$n: relay_bytes_total{direction=up} moved by the requests" \
		moved $n relay_bytes_total $((LOAD * 100)) direction=up
done
check "private: private_dials_total{outcome=ok}, exactly" \
	delta private private_dials_total $JOINED outcome=ok
check "private: private_announce_calls_total{result=ok} counts the accepted passes" \
	eval '[ "$(mval "$E2E_RUN/private.after" hyper_relay_private_announce_calls_total result=ok)" -ge 1 ]'
check "private: open descriptors are reported" \
	bash -c "[ \$(grep -c '^hyper_relay_open_fds [1-9]' '$E2E_RUN/private.after') -eq 1 ]"
check "public: pipes are reported" \
	bash -c "grep -q '^hyper_relay_pipes{state=\"pooled\"} ' '$E2E_RUN/public.after'"

# --- bad requests ------------------------------------------------------------
status() { # NAME CURL-ARGS... -> prints the HTTP status
	curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$@"
}
for n in public public-hyper; do
	p=${MPORT[$n]}
	check "$n: POST /metrics is 405" \
		bash -c "[ \"\$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X POST http://127.0.0.1:$p/metrics)\" = 405 ]"
	check "$n: GET /other is 404" \
		bash -c "[ \"\$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:$p/other)\" = 404 ]"
	check "$n: HEAD /metrics is 200 without a body" \
		bash -c "[ \"\$(curl -sS -I -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:$p/metrics)\" = 200 ]"
	# metrics_timeout is 1 s for these two.
	check "$n: a request that never finishes is closed after metrics_timeout" \
		python3 -c "
import socket, time
s = socket.create_connection(('127.0.0.1', $p), timeout=10)
s.sendall(b'GET /metr')
t = time.time()
d = s.recv(100)
el = time.time() - t
print('closed after %.1f s, got %r' % (el, d))
assert d == b'' and 0.5 < el < 5"
done
check "every process is still up" bash -c "kill -0 ${E2E_PID[public]} ${E2E_PID[private]} \
${E2E_PID[public-hyper]} ${E2E_PID[private-hyper]}"
check "the chain still serves" serves_within 5

# --- the same load with the pool (the default) --------------------------------
pool_idle() {
	HYPER_SETTINGS=$S/public-proxy-hyper-1 timeout 10 "$BIN/hyper" call \
		public-proxy-1.ga.getConnectionPools '{}' 2>/dev/null |
		jq -r '.[] | select(.operator == "private-proxy-1.ga") | .idle'
}
wait_pool_idle() { # N SECONDS
	local deadline=$((SECONDS + $2)) got
	while [ $SECONDS -lt "$deadline" ]; do
		got=$(pool_idle)
		[ "${got:-0}" -ge "$1" ] && { echo "pool: $got idle"; return 0; }
		sleep 0.2
	done
	echo "pool: ${got:-none} idle after $2 s (wanted $1)"
	return 1
}
count_via() { grep -c "client .* via=$1 " "$E2E_RUN/public.log"; }
rm -f "$S/private-proxy-1/900_pool.yml"
pooled_restart() {
	stop_bg private || return 1
	five_start private
	wait_port 127.0.0.1 "$PRIVATE_RPC_PORT" 5 && wait_port 127.0.0.1 "${MPORT[private]}" 5 &&
		serves_within 10 && wait_pool_idle 8 10 && settled
}
check "the private proxy restarted with its default pool: 8 idle pooled connections" pooled_restart
for n in "${!MPORT[@]}"; do
	scrape "$n" "$E2E_RUN/$n.before"
done
POOLED0=$(count_via pool)
check "pooled: the same load of the seed's curl and a 2 MB download succeed" load
# Every used pooled connection is replaced, one for one, before the scrape.
settled_and_full() { settled && wait_pool_idle 8 10; }
check "pooled: every pair has ended and the pool is full again" settled_and_full
for n in "${!MPORT[@]}"; do
	scrape "$n" "$E2E_RUN/$n.after"
done
POOLED=$(( $(count_via pool) - POOLED0 ))
echo "# pooled: $POOLED of $JOINED clients via=pool"
check "pooled: connections joined, exactly (a client from the pool counts as joined)" \
	delta public public_connections_total $JOINED result=joined
check "pooled: nobody parked after the load" \
	bash -c "grep -q '^hyper_relay_public_parked 0\$' '$E2E_RUN/public.after'"
check "pooled: at least one client came from the pool" test "$POOLED" -ge 1
check "pooled: every other client was brokered: incomingConnection calls = joined - via=pool" \
	delta public jsonrpc_client_calls_total $((JOINED - POOLED)) \
	method=private-proxy-1.ga.incomingConnection outcome=ok
check "pooled: data connections with a token joined = the brokered clients" \
	delta public public_data_connections_total $((JOINED - POOLED)) result=joined
check "pooled: data connections with a ticket (result pooled) = the pooled connections used, each replaced" \
	delta public public_data_connections_total $POOLED result=pooled
for n in public private; do
	check "pooled, $n: relay_pairs_total: one per joined client" delta $n relay_pairs_total $JOINED
done
check "pooled, private: private_dials_total{outcome=ok}: one per client, pooled or brokered" \
	delta private private_dials_total $JOINED outcome=ok

# --- the pool (issue #16) ---------------------------------------------------
# The private proxy again with pool_size 2: the public proxy's pool gauges
# agree with getConnectionPools, and P clients, each sent once the pool is
# full again, each take a pooled connection: used moves by exactly P.
stop_bg private
printf 'private:\n  pool_size: 2\n  pool_batch: 4\n' >"$S/private-proxy-1/950_pool.yml"
five_start private
OP='operator=private-proxy-1.ga'
pooled_now() { # -> the public proxy's public_pooled gauge for the operator
	scrape public "$E2E_RUN/public.pool" && mval "$E2E_RUN/public.pool" hyper_relay_public_pooled $OP
}
pool_full() { # within 10 s
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(pooled_now)" = 2 ] && return 0
		sleep 0.1
	done
	echo "public_pooled: $(pooled_now)"; return 1
}
check "public: public_pooled reaches pool_size (2) for the operator" pool_full
pool_agrees() {
	local got want
	for ((i = 0; i < 20; i++)); do
		want=$(pub_call public-proxy-1.ga.getConnectionPools '{}' |
			jq -r '.[] | select(.operator == "private-proxy-1.ga") | "\(.idle) \(.outstanding) \(.used)"')
		scrape public "$E2E_RUN/public.pool" || return 1
		got="$(mval "$E2E_RUN/public.pool" hyper_relay_public_pooled $OP) $(mval "$E2E_RUN/public.pool" hyper_relay_public_pool_tickets $OP) $(mval "$E2E_RUN/public.pool" hyper_relay_public_pool_leaves_total $OP reason=used)"
		echo "getConnectionPools: $want, scrape: $got"
		[ "$got" = "$want" ] && return 0
		sleep 0.2
	done
	return 1
}
check "public: the pool metrics agree with getConnectionPools (idle, outstanding, used)" pool_agrees
P=5
pooled_clients() {
	local i
	for ((i = 0; i < P; i++)); do
		pool_full >/dev/null || { echo "pool not full before client $i"; return 1; }
		[ "$(c "$URL/jsonrpc")" = '{"message": "success"}' ] || return 1
	done
	pool_full
}
scrape public "$E2E_RUN/public.before"
check "$P clients through the pool succeed" pooled_clients
scrape public "$E2E_RUN/public.after"
check "public: public_pool_leaves_total{reason=used} moved by exactly $P" \
	delta public public_pool_leaves_total $P $OP reason=used
check "public: no pooled connection left otherwise" delta public public_pool_leaves_total $P $OP
check "public: no incomingConnection for a pooled client" delta public \
	jsonrpc_client_calls_total 0 method=private-proxy-1.ga.incomingConnection
check "public: the scrape with the pool passes promtool check metrics" \
	bash -c "promtool check metrics <'$E2E_RUN/public.after'"

# --- start-up errors ---------------------------------------------------------
stop_bg public-hyper
printf 'metrics: "127.0.0.1:%s"\n' "${MPORT[private-hyper]}" >"$S/public-proxy-hyper-1/900_metrics.yml"
in_use() {
	local rc
	HYPER_SETTINGS=$S/public-proxy-hyper-1 timeout 10 "$BIN/hyper" server run \
		>"$E2E_RUN/inuse.log" 2>&1
	rc=$?
	cat "$E2E_RUN/inuse.log"
	[ $rc -eq 1 ] && grep -q "metrics: cannot listen on .*address already in use" "$E2E_RUN/inuse.log"
}
check "hyper: a metrics address in use exits 1 and says so" in_use
stop_bg private
printf 'private:\n  metrics: "nowhere"\n' >"$S/private-proxy-1/900_metrics.yml"
bad_address() {
	local rc
	PROXY_SETTINGS=$S/private-proxy-1 timeout 10 "$BIN/proxy" run private >"$E2E_RUN/bad.log" 2>&1
	rc=$?
	cat "$E2E_RUN/bad.log"
	[ $rc -eq 2 ] && grep -q "metrics: nowhere: expected host:port" "$E2E_RUN/bad.log"
}
check "proxy: a malformed metrics address exits 2 and says so" bad_address
finish
