#!/usr/bin/env bash
# pool.sh - the warm pool of ticketed data connections (issue #16) with the
# seed's five processes on free loopback ports: pool_size 8, 500 requests 25
# at a time served at least 95 % from the pool, a burst larger than the pool
# served through the incomingConnection fallback, pooled connections killed
# from outside (ss -K) skipped without a failed client, the getter through
# `hyper call`, bad input on the data port (random bytes, a reused ticket),
# the ticket cap, the idle lifetime, and a restart of each proxy.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/five.sh
five_setup
POOL=8
cat >"$S/private-proxy-1/900_pool.yml" <<EOF
private:
  pool_size: $POOL
  pool_batch: 16
EOF
five_start_all

# hyper call as the public proxy's operator / as the private proxy's operator
pub_call() { timeout 20 env HYPER_SETTINGS=$S/public-proxy-hyper-1 "$BIN/hyper" call "$@"; }
priv_call() { timeout 20 env HYPER_SETTINGS=$S/private-proxy-hyper-1 "$BIN/hyper" call "$@"; }
PLOG=$E2E_RUN/public.log
count_via() { # WHAT -> client lines of the current public log with via=WHAT
	grep -c "^.*client .* via=$1 " "$PLOG"
}

check "the seed's request is served within 5 s of the last start" serves_within 5
check "the pool fills to pool_size ($POOL) idle connections" wait_idle $POOL 10
check "getConnectionPools through hyper call lists the counters" \
	bash -c "pub_call() { env HYPER_SETTINGS=$S/public-proxy-hyper-1 $BIN/hyper call \"\$@\"; }
	pub_call public-proxy-1.ga.getConnectionPools '{}' | tee /dev/stderr |
	jq -e '.[0] | has(\"idle\") and has(\"outstanding\") and has(\"used\") and has(\"replaced\") and has(\"dead\")' >/dev/null"

# --- 500 requests at 25 in parallel -----------------------------------------
parallel_500() {
	local pool0 dial0 pool1 dial1 ok
	pool0=$(count_via pool); dial0=$(count_via dial)
	seq 1 500 | parallel -j 25 curl -sS -o /dev/null -w "'%{http_code} '" --max-time 20 \
		--cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/jsonrpc" --data '{}' \
		>"$E2E_RUN/p.txt"
	ok=$(tr ' ' '\n' <"$E2E_RUN/p.txt" | grep -c '^200$')
	sleep 0.5	# the last summary lines
	pool1=$(count_via pool); dial1=$(count_via dial)
	echo "$ok of 500 answered 200; via=pool $((pool1 - pool0)), via=dial $((dial1 - dial0))" |
		tee "$E2E_RUN/p.summary"
	[ "$ok" -eq 500 ] && [ $(((pool1 - pool0) * 100)) -ge $((95 * 500)) ]
}
check "500 requests, 25 in parallel: no failure, at least 95 % via=pool" parallel_500
echo "# $(cat "$E2E_RUN/p.summary" 2>/dev/null)"
check "the pool is back to $POOL idle" wait_idle $POOL 10

# --- a burst larger than the pool -------------------------------------------
burst() {
	local ok dial0 dial1
	dial0=$(count_via dial)
	seq 1 120 | parallel -j 60 curl -sS -o /dev/null -w "'%{http_code} '" --max-time 20 \
		--cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/bytes/200000" \
		>"$E2E_RUN/b.txt"
	ok=$(tr ' ' '\n' <"$E2E_RUN/b.txt" | grep -c '^200$')
	sleep 0.5
	dial1=$(count_via dial)
	echo "$ok of 120 answered 200; via=dial $((dial1 - dial0))" | tee "$E2E_RUN/b.summary"
	[ "$ok" -eq 120 ]
}
check "a burst of 120 at 60 in parallel (pool of $POOL): every client served" burst
echo "# $(cat "$E2E_RUN/b.summary" 2>/dev/null)"
check "the pool is back to $POOL idle after the burst" wait_idle $POOL 10
# The pool refills faster than curl starts clients: empty it for sure by
# stopping the private proxy while 20 clients arrive.  8 take the pooled
# connections (their frames wait in the socket), the 12 others are brokered
# by incomingConnection, answered once the private proxy runs again.
burst_beyond() {
	local pid=${E2E_PID[private]} d0 d1 ok=0 i pids=()
	wait_idle $POOL 10 || return 1
	d0=$(grep -c 'via=dial' "$E2E_RUN/private.log")
	kill -STOP "$pid"
	for i in $(seq 1 20); do
		c --max-time 15 "$URL/jsonrpc" >"$E2E_RUN/burst.$i" 2>&1 &
		pids+=($!)
	done
	sleep 1.5
	kill -CONT "$pid"
	wait "${pids[@]}"	# only the clients: the five processes are children too
	for i in $(seq 1 20); do
		[ "$(cat "$E2E_RUN/burst.$i")" = '{"message": "success"}' ] && ok=$((ok + 1))
	done
	sleep 0.5
	d1=$(grep -c 'via=dial' "$E2E_RUN/private.log")
	echo "$ok of 20 served; $((d1 - d0)) dial-backs (incomingConnection)" | tee "$E2E_RUN/bb.summary"
	[ "$ok" -eq 20 ] && [ $((d1 - d0)) -ge $((20 - POOL)) ]
}
check "20 clients while the pool cannot refill: every one served, the 12 beyond the pool by incomingConnection" \
	burst_beyond
echo "# $(cat "$E2E_RUN/bb.summary" 2>/dev/null)"
check "the pool is back to $POOL idle" wait_idle $POOL 10

# --- pooled connections killed from outside ---------------------------------
killed() {
	local ok=0 i
	wait_idle $POOL 10 || return 1
	# every established socket of the data port on the public side: only
	# idle pooled ones, nothing is relaying now
	ss -K -t state established "( sport = :$DATA_PORT )" >/dev/null
	for i in $(seq 1 20); do
		[ "$(c --max-time 5 "$URL/jsonrpc")" = '{"message": "success"}' ] && ok=$((ok + 1))
	done
	echo "$ok of 20 served after the kill; dead=$(pool_field dead) closed=$(pool_field closed)"
	[ "$ok" -eq 20 ]
}
check "pooled connections killed with ss -K: every later client served" killed
check "the pool refills after the kill" wait_idle $POOL 10
killed_private_side() {
	local ok=0 i
	wait_idle $POOL 10 || return 1
	ss -K -t state established "( dport = :$DATA_PORT )" >/dev/null
	for i in $(seq 1 20); do
		[ "$(c --max-time 5 "$URL/jsonrpc")" = '{"message": "success"}' ] && ok=$((ok + 1))
	done
	echo "$ok of 20 served; dead=$(pool_field dead) closed=$(pool_field closed)"
	[ "$ok" -eq 20 ]
}
check "the private proxy's pooled sockets killed with ss -K: every later client served" \
	killed_private_side
check "the pool refills after that kill" wait_idle $POOL 10

# --- bad input on the data port ---------------------------------------------
# Send bytes to the data port; print "closed" when the public proxy closes
# within 2 s, "open" otherwise.
data_send() { # HEX
	python3 -c "
import socket, sys
s = socket.create_connection(('127.0.0.1', $DATA_PORT), timeout=2)
s.sendall(bytes.fromhex('$1'))
try:
    print('closed' if s.recv(1) == b'' else 'bytes')
except socket.timeout:
    print('open')
except ConnectionResetError:
    print('closed')"
}
random_bytes() {
	local got
	got=$(data_send "$(head -c 32 /dev/urandom | xxd -p -c 64)")
	echo "$got"
	[ "$got" = closed ]
}
check "32 random bytes on the data port: closed" random_bytes
reused_ticket() {
	local t hex first second
	t=$(priv_call public-proxy-1.ga.requestConnectionTickets '{"count": 1}' | jq -r '.tickets[0]')
	hex=$(printf '%s' "$t" | base64 -d | xxd -p -c 64)
	[ ${#hex} -eq 64 ] || { echo "no ticket: $t"; return 1; }
	first=$(data_send "$hex")
	second=$(data_send "$hex")
	echo "first $first, second $second"
	[ "$first" = open ] && [ "$second" = closed ] && grep -q 'ticket already used' "$PLOG"
}
check "a ticket is pooled once; the same ticket again is closed (ticket already used)" reused_ticket
bad_count() {
	local out
	out=$(priv_call public-proxy-1.ga.requestConnectionTickets '{"count": 1000}' 2>&1)
	echo "$out"
	[[ "$out" == *-32602* ]]
}
check "requestConnectionTickets with count 1000: -32602" bad_count
cap_reached() {
	local out i
	for i in 1 2 3 4 5; do
		out=$(priv_call public-proxy-1.ga.requestConnectionTickets '{"count": 256}' 2>&1)
		[[ "$out" == *429* ]] && { echo "$out"; return 0; }
	done
	echo "$out"
	return 1
}
check "requestConnectionTickets beyond max_pooled_per_operator: 429" cap_reached
others_refused() {
	local out
	out=$(pub_call public-proxy-1.ga.requestConnectionTickets '{"count": 1}' 2>&1)
	echo "$out"
	[[ "$out" == *403* ]]
}
check "an operator without allowed_domains gets no ticket (403)" others_refused
check "still served after the bad input" serves_within 5

# --- the private proxy stops: idle pooled connections go first ----------------
private_stop() {
	wait_idle $POOL 10 || return 1
	stop_bg private TERM
	grep -q 'pooled connection(s) closed' "$E2E_RUN/private.log" || return 1
	local deadline=$((SECONDS + 5))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(pool_field idle)" = 0 ] && return 0
		sleep 0.2
	done
	echo "idle $(pool_field idle) after the private proxy stopped"
	return 1
}
check "SIGTERM of the private proxy closes its pooled connections; the public pool empties" \
	private_stop
five_start private
check "a new private proxy is served within 5 s" serves_within 5
check "and refills its pool" wait_idle $POOL 10

# --- the public proxy restarts with a short idle lifetime --------------------
cat >"$S/public-proxy-1/900_pool.yml" <<EOF
public:
  pool_idle_lifetime: 1
EOF
stop_bg public TERM
five_start public
PLOG=$E2E_RUN/public.log
check "a restarted public proxy serves within 5 s" serves_within 5
check "the private proxy refills the new public proxy's pool" wait_idle $POOL 15
idle_lifetime() {
	local deadline=$((SECONDS + 10)) r
	while [ $SECONDS -lt $deadline ]; do
		r=$(pool_field replaced)
		[ "${r:-0}" -ge $((2 * POOL)) ] && { echo "replaced $r"; wait_idle $POOL 5; return; }
		sleep 0.5
	done
	echo "replaced ${r:-none}"
	return 1
}
check "pool_idle_lifetime closes idle connections and the private proxy replaces them" \
	idle_lifetime
check "served via the pool after replacements" \
	bash -c "for i in 1 2 3 4 5; do curl -sS --max-time 5 --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc >/dev/null || exit 1; done; sleep 0.3; grep -q 'via=pool ' $PLOG"

for n in $FIVE_NAMES; do
	check "$n exits 0 on SIGTERM" stop_bg "$n" TERM
done
finish
