#!/usr/bin/env bash
# netns.sh - the chain over a real network: three network namespaces made
# here (client, public side, private side) joined by veth pairs in
# 10.200.1.0/24 (client - public) and 10.200.2.0/24 (public - private), with
# `netem delay 20ms loss 1%` on both ends of the public - private link.  The
# addresses exist only inside these namespaces.  Public proxy and Hyper run in
# the public namespace, private proxy, Hyper and internal server in the
# private one (ip netns exec), settings rewritten for those addresses.
# NETNS_REQUESTS requests 25 at a time (200; 1000 for the long run) must all
# succeed and 64 MiB must arrive intact.  Without the right to create
# namespaces: one "ok - skipped: reason" check.  The namespaces are always
# deleted on exit.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh

REQUESTS=${NETNS_REQUESTS:-200}
tag=$$
NS_CLI=hp-cli-$tag NS_PUB=hp-pub-$tag NS_PRIV=hp-priv-$tag
NS_MADE=()

netns_cleanup() {
	local rc=$? ns
	stop_all
	for ns in "${NS_MADE[@]}"; do ip netns delete "$ns" 2>/dev/null; done
	(exit $rc)
	e2e_cleanup
}
trap netns_cleanup EXIT

skip() {
	echo "ok - skipped: $1"
	E2E_PASS=$((E2E_PASS + 1))
	finish
}
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v tc >/dev/null || skip "tc (iproute2) is not installed"
ip netns add "$NS_CLI" 2>"$E2E_RUN/netns.err" || skip "cannot create network namespaces: $(head -n 1 "$E2E_RUN/netns.err")"
NS_MADE+=("$NS_CLI")
ip netns add "$NS_PUB" && NS_MADE+=("$NS_PUB") || skip "second namespace refused"
ip netns add "$NS_PRIV" && NS_MADE+=("$NS_PRIV") || skip "third namespace refused"

# veth pairs are created inside the namespaces directly: nothing appears in
# the caller's namespace, even for a moment.
net_setup() {
	local ns
	for ns in "$NS_CLI" "$NS_PUB" "$NS_PRIV"; do ip -n "$ns" link set lo up || return 1; done
	ip -n "$NS_CLI" link add vc type veth peer name vp1 netns "$NS_PUB" || return 1
	ip -n "$NS_PUB" link add vp2 type veth peer name vv netns "$NS_PRIV" || return 1
	ip -n "$NS_CLI" addr add 10.200.1.2/24 dev vc
	ip -n "$NS_PUB" addr add 10.200.1.1/24 dev vp1
	ip -n "$NS_PUB" addr add 10.200.2.1/24 dev vp2
	ip -n "$NS_PRIV" addr add 10.200.2.2/24 dev vv
	ip -n "$NS_CLI" link set vc up && ip -n "$NS_PUB" link set vp1 up &&
		ip -n "$NS_PUB" link set vp2 up && ip -n "$NS_PRIV" link set vv up || return 1
}
net_setup 2>"$E2E_RUN/net.err" || skip "cannot set up veth pairs: $(head -n 1 "$E2E_RUN/net.err")"
# netem is a kernel option (CONFIG_NET_SCH_NETEM): without it the link runs
# unimpaired, and the output says so.
NETEM=1
if ! ip netns exec "$NS_PUB" tc qdisc add dev vp2 root netem delay 20ms loss 1% 2>"$E2E_RUN/tc.err" ||
	! ip netns exec "$NS_PRIV" tc qdisc add dev vv root netem delay 20ms loss 1% 2>>"$E2E_RUN/tc.err"; then
	NETEM=0
	echo "# netem unavailable ($(head -n 1 "$E2E_RUN/tc.err")): public - private link without delay and loss"
fi

five_setup
# Listeners that cross namespaces move to the veth addresses; the rest stays
# on each namespace's own loopback.
for f in "$S"/*/*.yml "$E2E_RUN"/s/directory/*.json; do
	sed -i -e "s/localhost:$TLS_PORT\\b/10.200.1.1:$TLS_PORT/g" \
		-e "s/localhost:$DATA_PORT\\b/10.200.2.1:$DATA_PORT/g" \
		-e "s/localhost:$PUBLIC_PEER_PORT\\b/10.200.2.1:$PUBLIC_PEER_PORT/g" \
		-e "s/localhost:$PRIVATE_PEER_PORT\\b/10.200.2.2:$PRIVATE_PEER_PORT/g" "$f"
done
FIVE_PRE[public]="ip netns exec $NS_PUB"
FIVE_PRE[public-hyper]="ip netns exec $NS_PUB"
FIVE_PRE[private]="ip netns exec $NS_PRIV"
FIVE_PRE[private-hyper]="ip netns exec $NS_PRIV"
FIVE_PRE[internal]="ip netns exec $NS_PRIV"
FIVE_TLS_IP=10.200.1.1
c() { ip netns exec "$NS_CLI" curl -sS --max-time 30 --cacert "$CA" --resolve "$HOST:$TLS_PORT:10.200.1.1" "$@"; }

ns_wait_port() { # NS HOST PORT
	local i
	for ((i = 0; i < 100; i++)); do
		ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "# $2:$3 in $1 did not open" >&2
	return 1
}
five_start_all
ns_wait_port "$NS_PUB" 10.200.1.1 "$TLS_PORT"
ns_wait_port "$NS_PUB" 10.200.2.1 "$PUBLIC_PEER_PORT"
ns_wait_port "$NS_PRIV" 10.200.2.2 "$PRIVATE_PEER_PORT"
ns_wait_port "$NS_PRIV" 127.0.0.1 "$INTERNAL_PORT"

check "the client namespace cannot reach the private side (no route)" bash -c \
	"! ip netns exec $NS_CLI bash -c 'exec 3<>/dev/tcp/10.200.2.2/$PRIVATE_PEER_PORT' 2>/dev/null"
if [ "$NETEM" = 1 ]; then
	check "netem is on the public - private link" bash -c \
		"ip netns exec $NS_PUB tc qdisc show dev vp2 | grep -q 'delay 20ms loss 1%'"
else
	echo "ok - skipped: netem delay 20ms loss 1% (not in this kernel)"
	E2E_PASS=$((E2E_PASS + 1))
fi
check "the seed's request through the namespaces within 20 s of the start" serves_within 20

parallel_n() {
	local t0=$SECONDS ok
	seq 1 "$REQUESTS" | ip netns exec "$NS_CLI" parallel -j 25 curl -sS -o /dev/null \
		-w "'%{http_code} '" --max-time 30 --cacert "$CA" \
		--resolve "$HOST:$TLS_PORT:10.200.1.1" "$URL/jsonrpc" --data '{}' >"$E2E_RUN/p.txt"
	ok=$(tr ' ' '\n' <"$E2E_RUN/p.txt" | grep -c '^200$')
	echo "$ok of $REQUESTS answered 200 in $((SECONDS - t0)) s"
	[ "$ok" -eq "$REQUESTS" ]
}
check "$REQUESTS requests, 25 in parallel, between the namespaces: all succeed" parallel_n
sed -n 1p "$E2E_RUN/check.$((E2E_PASS + E2E_FAIL - 1)).out" | sed 's/^/# /'

N=$((64 << 20))
download_intact() {
	local t0=$SECONDS got want
	got=$(c --max-time 300 "$URL/bytes/$N" | sha256sum | cut -d' ' -f1)
	want=$(python3 -c "import sys; sys.stdout.buffer.write((bytes(range(251))*($N//251+1))[:$N])" | sha256sum | cut -d' ' -f1)
	echo "64 MiB in $((SECONDS - t0)) s: got $got want $want"
	[ "$got" = "$want" ]
}
check "64 MiB download between the namespaces arrives intact" download_intact
sed -n 1p "$E2E_RUN/check.$((E2E_PASS + E2E_FAIL - 1)).out" | sed 's/^/# /'

for n in public private public-hyper private-hyper internal; do
	check "$n exits 0 on SIGTERM" stop_bg "$n"
done
finish
