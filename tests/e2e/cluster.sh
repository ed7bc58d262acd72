#!/usr/bin/env bash
# cluster.sh - issue #12 parts 3 and 4 with the real processes and Debian's
# redis-server on a free loopback port (started and killed here):
#  - two public instances A and B on one Redis, each with an instance_id and
#    its own TLS and data ports, sharing one JSON-RPC port (reuse_port), so
#    the public Hyper reaches whichever is alive; both register a heartbeat
#    key and getInstances lists both;
#  - two private proxies of one operator (same certificate, instance_id p1
#    and p2, one JSON-RPC port shared with reuse_port, so the private Hyper
#    reaches either): each holds its own announcement, a withdrawal by one
#    leaves the other's standing;
#  - 400 requests at 25 alternating A and B: all answered; SIGTERM of one
#    private proxy under that load: all answered;
#  - SIGKILL of A: its heartbeat key is gone within 6 s, the private pools
#    leave it, and clients sent to B meanwhile are served.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/redis_lib.sh
. tests/e2e/five.sh
five_setup

B_TLS=$(free_port); B_DATA=$(free_port)
A_METRICS=$(free_port); B_METRICS=$(free_port)
CERTS=$root/settings/dev/certs
PREFIX=e2e-cluster-$$:
REQUESTS=${CLUSTER_REQUESTS:-400}
PARALLEL=25

# Instance A: the dev public proxy on Redis, instance_id a.
pub_a=$S/public-proxy-1
use_redis "$pub_a/000_base.yml" "$PREFIX"
printf 'public:\n  instance_id: a\n  reuse_port: true\n  metrics: "127.0.0.1:%s"\n' "$A_METRICS" \
	>"$pub_a/500_instance.yml"
# Instance B: the same settings on its own ports, instance_id b.
pub_b=$S/public-proxy-b
mkdir -p "$pub_b"
cp "$pub_a/000_base.yml" "$pub_b/"
cat >"$pub_b/500_instance.yml" <<EOT
public:
  instance_id: b
  reuse_port: true
  metrics: "127.0.0.1:$B_METRICS"
  tls_bind_address: 127.0.0.1:$B_TLS
  internal_bind_address: 127.0.0.1:$B_DATA
  internal_endpoint: 127.0.0.1:$B_DATA
EOT
# Private proxies p1 and p2: one operator, one JSON-RPC port (reuse_port),
# both data endpoints allowed, a pool of 4 each, each its own datastore file.
for p in 1 2; do
	d=$S/private-proxy-p$p
	mkdir -p "$d"
	cp "$S/private-proxy-1/000_base.yml" "$d/"
	cat >"$d/500_cluster.yml" <<EOT
private:
  instance_id: p$p
  reuse_port: true
  pool_size: 4
  public_proxies:
    - name: public-proxy-1.ga
      data_endpoints: ["localhost:$DATA_PORT", "127.0.0.1:$B_DATA"]
  datastore:
    type: file
    settings:
      filename: "$E2E_RUN/private-p$p.db"
EOT
done

start_private() { # 1 | 2
	start_bg "private-p$1" env PROXY_SETTINGS=$S/private-proxy-p$1 "$BIN/proxy" run private
}
start_b() { start_bg public-b env PROXY_SETTINGS=$pub_b "$BIN/proxy" run public; }

# rpc PORT METHOD PARAMS: a call delivered to the instances' JSON-RPC port (the
# kernel picks A or B) as their Hyper delivers it, from private-proxy-1.ga
# (allowed_domains injected).
rpc() {
	local body inner client
	client="\"_client\": {\"name\": \"private-proxy-1.ga\", \"entry\": {\"name\": \"private-proxy-1.ga\", \"groups\": [],
		\"settings\": [{\"service\": \"proxy\", \"settings\": {\"allowed_domains\": [\".internal-server.local\"]}}]}}"
	inner=${3#\{}; inner=${inner%\}}
	[[ "$inner" =~ [^[:space:]] ]] && client="$client, $inner"
	body="{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"$2\", \"params\": {$client}}"
	curl -sS --max-time 10 --cacert "$CA" --cert "$CERTS/public-proxy-1.ga.crt" \
		--key "$CERTS/public-proxy-1.ga.key" --resolve "public-proxy-1.ga:$1:127.0.0.1" \
		"https://public-proxy-1.ga:$1/jsonrpc" -H 'Content-Type: application/json' -d "$body"
}
success_at() { # TLS_PORT
	[ "$(curl -sS --max-time 10 --cacert "$CA" --resolve "$HOST:$1:127.0.0.1" \
		"https://$HOST:$1/jsonrpc")" = '{"message": "success"}' ]
}
# pooled METRICS_PORT: the idle pooled connections of private-proxy-1.ga at one
# instance (its own metrics listener: the JSON-RPC port is shared)
pooled() {
	curl -sS --max-time 5 "http://127.0.0.1:$1/metrics" |
		awk '/^hyper_relay_public_pooled\{operator="private-proxy-1.ga"\}/ { print $2; f = 1 } END { if (!f) print 0 }'
}
at_least() { local want=$1; shift; local got; got=$("$@"); echo "got $got, want at least $want"; [ "${got:-0}" -ge "$want" ]; }
# instances PORT: the ids getInstances lists, sorted, on one line
instances() { rpc "$1" getInstances '{}' | jq -r '[.result.instances[].id] | sort | join(" ")'; }
# holders PORT: the instances holding $HOST at that public instance
holders() {
	rpc "$1" getAnnouncements '{}' |
		jq -r "[.result[] | select(.domain == \"$HOST\") | .instance] | sort | join(\" \")"
}
is() { local want=$1; shift; local got; got=$("$@"); echo "got '$got', want '$want'"; [ "$got" = "$want" ]; }

# The load: REQUESTS of the seed's curl, PARALLEL at a time, alternating the
# TLS ports of A and B; one line per request: body, a space, status code.
load_start() { # OUT PORT_ODD PORT_EVEN
	seq 1 "$REQUESTS" | CA=$CA H=$HOST PA=$2 PB=$3 \
		timeout 180 xargs -P "$PARALLEL" -n 1 sh -c \
		'p=$PA; [ $(($0 % 2)) = 0 ] && p=$PB
		 r=$(curl -sS --max-time 25 --cacert "$CA" --resolve "$H:$p:127.0.0.1" -w " %{http_code}" "https://$H:$p/jsonrpc"); echo "$r"' \
		>"$1" 2>"$1.err" &
	LOAD_PID=$!
	E2E_PID[load]=$LOAD_PID
}
load_wait() { # OUT -> LOAD_OK: the count answered 200 success
	wait "$LOAD_PID"
	unset "E2E_PID[load]"
	LOAD_OK=$(grep -c '^{"message": "success"} 200$' "$1")
}

check "redis-server starts on a free loopback port" start_redis
for n in public private-hyper public-hyper internal; do five_start "$n"; done
start_b
start_private 1
start_private 2
for p in $TLS_PORT $DATA_PORT $PUBLIC_RPC_PORT $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT \
	$PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT $PRIVATE_RPC_PORT $INTERNAL_PORT $B_TLS $B_DATA; do
	wait_port 127.0.0.1 "$p" 10 || true
done

check "the seed's request is served through A" wait_for 10 success_at "$TLS_PORT"
check "and through B" wait_for 10 success_at "$B_TLS"
check "both instances registered a heartbeat key with a lifetime of at most 6 s" \
	eval '[ "$(rcli PTTL "${PREFIX}i:a")" -gt 0 ] && [ "$(rcli PTTL "${PREFIX}i:a")" -le 6000 ] &&
	      [ "$(rcli PTTL "${PREFIX}i:b")" -gt 0 ] && rcli GET "${PREFIX}i:b" | grep -q "\"data_endpoint\":\"127.0.0.1:$B_DATA\""'
check "getInstances lists A and B (asked 4 times)" eval 'for i in 1 2 3 4; do wait_for 5 is "a b" instances "$PUBLIC_RPC_PORT" || exit 1; done'
check "each private proxy holds its own announcement of the name (seen at A)" \
	wait_for 10 is "p1 p2" holders "$PUBLIC_RPC_PORT"
check "every instance sees both (asked 4 times)" eval 'for i in 1 2 3 4; do wait_for 5 is "p1 p2" holders "$PUBLIC_RPC_PORT" || exit 1; done'
check "getAnnouncements lists the name once per instance holding it (2)" \
	eval '[ "$(rpc "$PUBLIC_RPC_PORT" getAnnouncements "{}" | jq "[.result[] | select(.domain == \"$HOST\")] | length")" = 2 ]'

# --- part 3: a pool to each instance (keys shared through Redis) -----------------
check "each private proxy keeps a pool at A and one at B: 8 idle at A" wait_for 15 at_least 8 pooled "$A_METRICS"
check "and 8 idle at B" wait_for 15 at_least 8 pooled "$B_METRICS"
check "the minting keys are shared through Redis (<prefix>k:*)" eval '[ "$(rcli --scan --pattern "${PREFIX}k:*" | wc -l)" -ge 1 ]'

# --- part 4: one instance's withdrawal leaves the other's ----------------------
check "p2 withdraws the name: withdrawn 1" eval \
	'rpc "$PUBLIC_RPC_PORT" withdrawConnections "{\"domains\": [\"$HOST\"], \"instance\": \"p2\"}" | jq -e ".result.withdrawn == 1"'
check "p1's announcement stands at A and B (asked 4 times)" eval 'for i in 1 2 3 4; do wait_for 5 is "p1" holders "$PUBLIC_RPC_PORT" || exit 1; done'
check "the name is still served at A and at B" eval 'success_at "$TLS_PORT" && success_at "$B_TLS"'
check "an instance id with a bad character is refused (-32602)" eval \
	'rpc "$PUBLIC_RPC_PORT" announceConnections "{\"connections\": [{\"domain\": \"$HOST\"}], \"instance\": \"p 2\"}" | jq -e ".error.code == -32602"'
check "p2 announces it again" eval \
	'rpc "$PUBLIC_RPC_PORT" announceConnections "{\"connections\": [{\"domain\": \"$HOST\"}], \"instance\": \"p2\"}" | jq -e ".result == [null]" &&
	 wait_for 5 is "p1 p2" holders "$PUBLIC_RPC_PORT"'

# --- 400 at 25 alternating A and B ---------------------------------------------
via() { cat "$E2E_RUN/public.log" "$E2E_RUN/public-b.log" | grep -c "via=$1 "; }
alternating() {
	local out=$E2E_RUN/load.alt ok p0 d0 p d
	p0=$(via pool); d0=$(via dial)
	load_start "$out" "$TLS_PORT" "$B_TLS"
	load_wait "$out"
	ok=$LOAD_OK
	p=$(($(via pool) - p0)); d=$(($(via dial) - d0))
	echo "$ok of $REQUESTS answered; via=pool $p, via=dial $d; curl errors: $(sort "$out.err" | uniq -c | head -n 3)" |
		tee "$E2E_RUN/alt.summary"
	[ "$ok" -eq "$REQUESTS" ] && [ $((p * 100)) -ge $((95 * REQUESTS)) ]
}
check "$REQUESTS requests at $PARALLEL alternating A and B: all answered, at least 95 % via=pool" alternating
echo "# $(cat "$E2E_RUN/alt.summary" 2>/dev/null)"

# --- SIGTERM of one private proxy under load -----------------------------------
term_p2() {
	local out=$E2E_RUN/load.term ok
	load_start "$out" "$TLS_PORT" "$B_TLS"
	sleep 0.5
	stop_bg private-p2 TERM
	load_wait "$out"
	ok=$LOAD_OK
	echo "$ok of $REQUESTS answered; curl errors: $(sort "$out.err" | uniq -c | head -n 3)"
	[ "$ok" -eq "$REQUESTS" ]
}
check "$REQUESTS requests at $PARALLEL over A and B while p2 gets SIGTERM: all answered" term_p2
check "p2 back: it announces and serves again" eval 'start_private 2 && wait_for 10 is "p1 p2" holders "$PUBLIC_RPC_PORT"'

# --- SIGKILL of one private proxy under load -------------------------------------
# Only requests whose pair was already joined through p2 may fail: at most the
# PARALLEL in flight at the kill.  The test counts them.
kill_p2() {
	local out=$E2E_RUN/load.kill
	sleep 1		# p2's pool refilled
	load_start "$out" "$TLS_PORT" "$B_TLS"
	sleep 0.5
	stop_bg private-p2 KILL
	load_wait "$out"
	echo "$LOAD_OK of $REQUESTS answered, $((REQUESTS - LOAD_OK)) failed (at most $PARALLEL allowed:" \
		"the ones joined through p2 at the kill); curl errors: $(sort "$out.err" | uniq -c | head -n 3)"
	[ $((REQUESTS - LOAD_OK)) -le "$PARALLEL" ]
}
check "$REQUESTS requests at $PARALLEL while p2 gets SIGKILL: only those joined through it may fail" kill_p2
summary_kill() { echo "# $(tail -n 1 "$E2E_RUN/check.$((E2E_PASS + E2E_FAIL - 1)).out")"; }
summary_kill
check "p2 started again: it announces again" eval 'start_private 2 && wait_for 10 is "p1 p2" holders "$PUBLIC_RPC_PORT"'

# --- SIGKILL of A ---------------------------------------------------------------
killed_a() {
	local t0 gone=""
	t0=$(date +%s%3N)
	stop_bg public KILL
	for ((i = 0; i < 80; i++)); do
		[ "$(rcli EXISTS "${PREFIX}i:a")" = 0 ] && { gone=$(( $(date +%s%3N) - t0 )); break; }
		sleep 0.1
	done
	echo "A's heartbeat key gone after ${gone:-more than 8000} ms"
	[ -n "$gone" ] && [ "$gone" -le 6500 ]
}
check "A killed with SIGKILL: its heartbeat key is gone within 6 s" killed_a
check "getInstances (now answered by B) lists only B" wait_for 5 is "b" instances "$PUBLIC_RPC_PORT"
b_clients() {
	local ok=0
	for ((i = 0; i < 50; i++)); do success_at "$B_TLS" && ok=$((ok + 1)); done
	echo "$ok of 50 served at B"
	[ "$ok" -eq 50 ]
}
check "clients sent to B meanwhile are served: 50 of 50" b_clients
# dials_to_a: the failed pooled dials to A's data port logged so far
dials_to_a() { cat "$E2E_RUN"/private-p*.log | grep -c "pooled connection to .*:$DATA_PORT): " ; }
left_a() {
	local before after
	grep -h 'pool moves' "$E2E_RUN"/private-p*.log
	before=$(dials_to_a)
	sleep 3
	after=$(dials_to_a)
	echo "failed pooled dials to A: $before before, $after 3 s later"
	[ "$after" = "$before" ]
}
pools_at_b() {
	local idle
	idle=$(rpc "$PUBLIC_RPC_PORT" getConnectionPools '{}' | jq -r '.result[] | select(.operator == "private-proxy-1.ga") | .idle')
	echo "idle at B: ${idle:-none}"
	[ "${idle:-0}" -ge 8 ]
}
check "the private pools leave A: both pools (4 + 4) are idle at B within 10 s" wait_for 10 pools_at_b
check "the private proxies stopped dialing A (no failed dial to it in 3 s)" left_a

for n in public-b private-p1 private-p2; do
	check "$n exits 0 on SIGTERM" stop_bg "$n" TERM
done
check "B deleted its heartbeat key at its clean stop" eval '[ "$(rcli EXISTS "${PREFIX}i:b")" = 0 ]'
finish
