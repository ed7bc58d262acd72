#!/usr/bin/env bash
# pool_mint.sh - refill of the warm pool without the Hyper (issue #16, part 4)
# with the seed's five processes on free loopback ports: pool_size 8 and
# pool_batch 4, so that the stash of issued tickets runs out at once.  Both
# Hyper servers are stopped while 300 requests (10 clients at a time, paced
# over about 10 s) run: every one is answered from the pool, whose
# connections the private proxy keeps replacing with tickets it mints with
# its key, without a single fetch (it fetches no batch while it holds a
# key); the Hyper servers come back, and replacements are still minted.
# Then a ticket minted here, in Python, from a key fetched with `hyper call`:
# pooled once, its replay, a bad MAC and an unknown key id each closed with
# a log line; a short ticket_key_lifetime renews the keeper's key; and a
# public proxy that hands out no key (ticket_key_lifetime 0) gets batches.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/five.sh
five_setup
POOL=8
BATCH=4
cat >"$S/private-proxy-1/900_pool.yml" <<EOF
private:
  pool_size: $POOL
  pool_batch: $BATCH
EOF
five_start_all

pub_call() { timeout 20 env HYPER_SETTINGS=$S/public-proxy-hyper-1 "$BIN/hyper" call "$@"; }
priv_call() { timeout 20 env HYPER_SETTINGS=$S/private-proxy-hyper-1 "$BIN/hyper" call "$@"; }
wait_log() { # FILE PATTERN SECONDS
	local deadline=$((SECONDS + $3))
	while [ $SECONDS -lt "$deadline" ]; do
		grep -q -- "$2" "$1" && return 0
		sleep 0.2
	done
	echo "no '$2' in $1 within $3 s"
	return 1
}
PLOG=$E2E_RUN/public.log
VLOG=$E2E_RUN/private.log
count_via() { grep -c "^.*client .* via=$1 " "$PLOG"; }

check "the seed's request is served within 5 s of the last start" serves_within 5
check "the pool fills to pool_size ($POOL) idle connections" wait_idle $POOL 10
has_key() {
	local keys
	keys=$(pool_field keys)
	echo "keys ${keys:-none}, key_expires_at $(pool_field key_expires_at)"
	[ "${keys:-0}" -ge 1 ]
}
check "the keeper asked for a minting key with its batch (getConnectionPools: keys, key_expires_at)" \
	has_key

# --- both Hyper servers away while clients keep coming --------------------------
# 10 workers of 30 requests each, 0.3 s apart: about 10 s of load on an idle
# machine; bounded in count and in time (every curl --max-time 10, a worker
# stops starting requests after 120 s: those not made count as failed).
load_worker() { # N
	local i deadline=$((SECONDS + 120))
	for i in $(seq 1 30); do
		[ $SECONDS -lt $deadline ] || break
		curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 10 --cacert "$CA" \
			--resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/jsonrpc" --data '{}' 2>/dev/null
		sleep 0.3
	done >"$E2E_RUN/load.$1"
}
outage() {
	local pool0 pool1 ok w pids=() t0
	pool0=$(count_via pool)
	stop_bg public-hyper TERM
	stop_bg private-hyper TERM
	t0=$SECONDS
	for w in $(seq 1 10); do
		load_worker "$w" &
		pids+=($!)
	done
	wait "${pids[@]}"
	ok=$(cat "$E2E_RUN"/load.* | grep -c '^200 ')
	sleep 0.5	# the last summary lines
	pool1=$(count_via pool)
	echo "$ok of 300 answered 200 in $((SECONDS - t0)) s without the Hyper servers" \
		"(slowest $(cat "$E2E_RUN"/load.* | sort -k2 -g | tail -n 1 | cut -d' ' -f2) s);" \
		"via=pool $((pool1 - pool0)) (pool $POOL + stash at most $((2 * BATCH)))" |
		tee "$E2E_RUN/outage.summary"
	[ "$ok" -eq 300 ] && [ $((pool1 - pool0)) -gt $((POOL + 2 * BATCH)) ]
}
check "300 requests (10 at a time) with both Hyper servers stopped: 0 failed, the pool kept refilled" \
	outage
echo "# $(cat "$E2E_RUN/outage.summary" 2>/dev/null)"
check "the keeper holds a key, so it made no requestConnectionTickets call meanwhile" \
	bash -c "! grep -q 'requestConnectionTickets failed' '$VLOG'"
check "no client needed incomingConnection meanwhile (no via=dial)" \
	bash -c "! grep -q 'via=dial' '$PLOG'"

five_start public-hyper
five_start private-hyper
for p in $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT $PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT; do
	wait_port 127.0.0.1 "$p" 10 || true
done
minted_redeemed() {
	local m
	m=$(pool_field minted)
	echo "minted ${m:-none} (getConnectionPools)" | tee "$E2E_RUN/minted.summary"
	[ "${m:-0}" -gt $((POOL + 2 * BATCH)) ]
}
check "getConnectionPools counts the minted tickets redeemed during the outage" minted_redeemed
echo "# $(cat "$E2E_RUN/minted.summary" 2>/dev/null)"
check "the pool is back to $POOL idle" wait_idle $POOL 10
# One client at a time, the Hyper servers back: each replacement is minted
# (its first batch used up, the keeper fetches none while it holds a key).
one_by_one() {
	local m0 m1 i ok=0
	m0=$(pool_field minted)
	for i in $(seq 1 20); do
		[ "$(c --max-time 5 "$URL/jsonrpc")" = '{"message": "success"}' ] && ok=$((ok + 1))
		sleep 0.1
	done
	sleep 0.5
	m1=$(pool_field minted)
	echo "$ok of 20 served; minted $((m1 - m0)) more; outstanding $(pool_field outstanding)"
	[ "$ok" -eq 20 ] && [ $((m1 - m0)) -ge 20 ]
}
check "the Hyper servers back, 20 clients one at a time: served, every replacement minted" \
	one_by_one

# --- tickets minted by hand --------------------------------------------------------
# mint.py KEYJSON NONCE MODE -> hex of a ticket minted with the key (README
# "Tickets"): MODE good, badmac (last MAC byte flipped), forged (key id changed).
cat >"$E2E_RUN/mint.py" <<'EOF'
import base64, hashlib, hmac, json, struct, sys, time
key = json.loads(sys.argv[1])
op, nonce, mode = b"private-proxy-1.ga", int(sys.argv[2]), sys.argv[3]
kid = base64.b64decode(key["id"])
if mode == "forged":
    kid = bytes([kid[0] ^ 1]) + kid[1:]
expiry = min(int(time.time()) + 30, key["expiry"])
head = kid + struct.pack(">II", expiry, nonce)
mac = hmac.new(base64.b64decode(key["secret"]), b"HPT1" + bytes([len(op)]) + op + head,
               hashlib.sha256).digest()[:16]
if mode == "badmac":
    mac = mac[:15] + bytes([mac[15] ^ 1])
print((head + mac).hex())
EOF
# Send bytes to the data port; "closed" when the public proxy closes within
# 2 s, "open" otherwise.
data_send() { # HEX
	python3 -c "
import socket
s = socket.create_connection(('127.0.0.1', $DATA_PORT), timeout=2)
s.sendall(bytes.fromhex('$1'))
try:
    print('closed' if s.recv(1) == b'' else 'bytes')
except socket.timeout:
    print('open')
except ConnectionResetError:
    print('closed')"
}
KEY=
get_key() {
	local out
	out=$(priv_call public-proxy-1.ga.requestConnectionTickets '{"count": 0, "key": true}')
	echo "$out" | jq -c '{tickets, data_endpoint, key: (.key | {expiry, expires_at, expires_in, ticket_lifetime})}'
	KEY=$(echo "$out" | jq -c '.key')
	[ "$(echo "$out" | jq '.tickets | length')" = 0 ] &&
		echo "$KEY" | jq -e '(.id | length) == 12 and (.secret | length) == 44 and .expires_in > 590' >/dev/null
}
check "requestConnectionTickets {count: 0, key: true}: a key and no ticket" get_key
count_zero_without_key() {
	local out
	out=$(priv_call public-proxy-1.ga.requestConnectionTickets '{"count": 0}' 2>&1)
	echo "$out"
	[[ "$out" == *-32602* ]]
}
check "count 0 without \"key\": true: -32602" count_zero_without_key
others_no_key() {
	local out
	out=$(pub_call public-proxy-1.ga.requestConnectionTickets '{"count": 0, "key": true}' 2>&1)
	echo "$out"
	[[ "$out" == *403* ]]
}
check "an operator without allowed_domains gets no key (403)" others_no_key
minted_by_hand() {
	local t first second m0 m1
	m0=$(pool_field minted)
	t=$(python3 "$E2E_RUN/mint.py" "$KEY" 7 good) || return 1
	first=$(data_send "$t")
	second=$(data_send "$t")
	m1=$(pool_field minted)
	echo "first $first, second $second; minted $m0 -> $m1"
	[ "$first" = open ] && [ "$second" = closed ] && [ $((m1 - m0)) -eq 1 ] &&
		wait_log "$PLOG" 'ticket refused: ticket replayed, operator private-proxy-1.ga' 3
}
check "a ticket minted here is pooled once; its replay is closed (ticket replayed)" minted_by_hand
bad_mac() {
	local got
	got=$(data_send "$(python3 "$E2E_RUN/mint.py" "$KEY" 8 badmac)")
	echo "$got"
	[ "$got" = closed ] &&
		wait_log "$PLOG" 'ticket refused: bad ticket MAC, operator private-proxy-1.ga' 3
}
check "a minted ticket with a bad MAC is closed (bad ticket MAC)" bad_mac
forged_key() {
	local got n0 n1
	n0=$(grep -c 'closed: unknown or used token' "$PLOG")
	sleep 1.1	# past the log's rate limit of about one line a second
	got=$(data_send "$(python3 "$E2E_RUN/mint.py" "$KEY" 9 forged)")
	n1=$(grep -c 'closed: unknown or used token' "$PLOG")
	echo "$got; unknown-token lines $n0 -> $n1"
	[ "$got" = closed ] && [ "$n1" -gt "$n0" ]
}
check "a ticket of a forged key id is closed (unknown or used token)" forged_key
check "still served after the bad input" serves_within 5

# --- a short key lifetime: the keeper renews its key at half of it ---------------------
cat >"$S/public-proxy-1/900_pool.yml" <<EOF
public:
  ticket_key_lifetime: 10
EOF
stop_bg public TERM
five_start public
PLOG=$E2E_RUN/public.log
check "a restarted public proxy serves within 5 s" serves_within 5
check "and the private proxy refills its pool" wait_idle $POOL 15
renewed() {
	local deadline=$((SECONDS + 20)) k
	while [ $SECONDS -lt $deadline ]; do
		k=$(pool_field keys)
		[ "${k:-0}" -ge 3 ] && { echo "keys $k"; return 0; }
		sleep 0.5
	done
	echo "keys ${k:-none}"
	return 1
}
check "ticket_key_lifetime 10: the keeper asks for a new key about every 5 s" renewed
check "ticket_key_lifetime 5 is refused at start (0, or 10-86400)" \
	bash -c "printf 'public:\n  ticket_key_lifetime: 5\n' >'$E2E_RUN/bad.yml'
	env PROXY_SETTINGS=$S/public-proxy-1:$E2E_RUN/bad.yml timeout 10 $BIN/proxy run public 2>&1 |
	tee /dev/stderr | grep -q 'ticket_key_lifetime'; [ \${PIPESTATUS[0]} -eq 2 ]"

# --- no keys: batches ---------------------------------------------------------------
printf 'public:\n  ticket_key_lifetime: 0\n' >"$S/public-proxy-1/900_pool.yml"
stop_bg public TERM
five_start public
PLOG=$E2E_RUN/public.log
check "a public proxy with ticket_key_lifetime 0 serves within 5 s" serves_within 5
check "and the private proxy refills its pool from batches" wait_idle $POOL 40
no_key_batches() {
	local m0 m1 i ok=0 out0 out1
	m0=$(pool_field minted); out0=$(pool_field outstanding)
	for i in $(seq 1 20); do
		[ "$(c --max-time 5 "$URL/jsonrpc")" = '{"message": "success"}' ] && ok=$((ok + 1))
		sleep 0.1
	done
	sleep 0.5
	m1=$(pool_field minted); out1=$(pool_field outstanding)
	echo "$ok of 20 served; minted $((m1 - m0)); keys $(pool_field keys);" \
		"outstanding tickets $out0 -> $out1"
	[ "$ok" -eq 20 ] && [ $((m1 - m0)) -eq 0 ] && [ "$(pool_field keys)" = 0 ] &&
		[ "${out1:-0}" -ge 1 ]
}
check "without a key, 20 clients one at a time: served, nothing minted, batches refetched" \
	no_key_batches

for n in $FIVE_NAMES; do
	check "$n exits 0 on SIGTERM" stop_bg "$n" TERM
done
finish
