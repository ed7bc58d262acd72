#!/usr/bin/env bash
# demo_cluster.sh - `make demo-cluster` (scripts/demo-cluster.sh): two public
# proxies on one Redis and two private proxies of one operator, on the dev
# ports (4433/4434, 9999/9998, ...).  Runs the script twice in a row (each
# JSON-RPC arrangement once) and checks its exit code, its output, and that
# nothing it started is left; then that a port in use stops it at once with
# a clear message.  Uses bin/ (make all examples).
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

DEMO_PORTS="4433 4434 9999 9998 6655 6656 5544 5556 7766 7776 8877 8888"
demo_out=$E2E_RUN/demo.out

demo() { # DEMO_RPC: run the demo, its output in $demo_out; its exit code
	DEMO_RPC=$1 timeout 120 scripts/demo-cluster.sh >"$demo_out" 2>&1
	local rc=$?
	cp "$demo_out" "$E2E_RUN/demo-$1.out"
	cat "$demo_out"
	return $rc
}
# The answer printed after the curl line of PORT is the seed's.
seed_answer() { # PORT
	grep -A1 -F -- "--resolve test.internal-server.local:$1:127.0.0.1 https://" "$demo_out" |
		tail -n 1 | grep -qx '{"message": "success"}'
}
all_answered() {
	grep -E '^200 requests in [0-9.]+ s: [0-9.]+ requests/s, 0 failures$' "$demo_out" &&
	grep -qx 'port 4433: 100 of 100 answered 200' "$demo_out" &&
	grep -qx 'port 4434: 100 of 100 answered 200' "$demo_out" &&
	[ "$(tail -n 1 "$demo_out")" = "demo-cluster: ok" ]
}
# Each public instance joined at least its 101 clients (the seed's curl and 100),
# pooled or brokered.
instances_served() {
	local i n
	for i in a b; do
		n=$(sed -n "s/^public proxy $i: \([0-9]*\) connections via=pool, \([0-9]*\) via=dial$/\1 + \2/p" "$demo_out")
		echo "public proxy $i: $n"
		[ -n "$n" ] && [ $((n)) -ge 101 ] || return 1
	done
}
both_private() { # each private proxy relayed some of them
	local i n
	for i in 1 2; do
		n=$(sed -n "s/^private proxy $i: \([0-9]*\) connections via=pool, \([0-9]*\) via=dial$/\1 + \2/p" "$demo_out")
		echo "private proxy $i: $n"
		[ -n "$n" ] && [ $((n)) -gt 0 ] || return 1
	done
}
redis_shared() { grep -E '^redis: [1-9][0-9]* key\(s\) under demo-cluster:' "$demo_out"; }
# Nothing it started outlives it: no pid of a "started" line is alive, no
# port of the demo or of its Redis accepts connections, Redis's temp dir is gone.
nothing_left() {
	local pid port rport ok=0
	for pid in $(sed -n 's/^started .*(pid \([0-9]*\), log .*/\1/p' "$demo_out"); do
		kill -0 "$pid" 2>/dev/null && { echo "pid $pid still runs: $(ps -o args= -p "$pid")"; ok=1; }
	done
	rport=$(sed -n 's/^started redis-server on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$demo_out")
	[ -n "$rport" ] || { echo "no redis-server line"; return 1; }
	for port in $DEMO_PORTS $rport; do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "port $port still open"; ok=1; }
	done
	ls -d "${TMPDIR:-/tmp}"/demo-cluster-redis.* 2>/dev/null && ok=1
	return $ok
}
ports_free() {
	local port
	for port in $DEMO_PORTS; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "port $port is in use: is a demo running?"
			return 1
		fi
	done
}

check "the dev ports are free" ports_free
check "make demo-cluster's script exits 0 (B on its own JSON-RPC port)" demo separate
check "the seed's curl through port 4433 prints {\"message\": \"success\"}" seed_answer 4433
check "the seed's curl through port 4434 prints {\"message\": \"success\"}" seed_answer 4434
check "200 of 200 stress requests answered, 100 through each port" all_answered
check "each public instance joined its 101 clients" instances_served
check "both private proxies relayed connections" both_private
check "the announcement is in Redis" redis_shared
check "nothing it started is left (processes, ports, Redis's temp dir)" nothing_left

check "run again at once, both instances on one JSON-RPC port (reuse_port): exits 0" demo shared
check "again: the seed's curl through port 4433" seed_answer 4433
check "again: the seed's curl through port 4434" seed_answer 4434
check "again: 200 of 200 stress requests answered" all_answered
check "again: each public instance joined its 101 clients" instances_served
check "again: nothing it started is left" nothing_left

# A port in use: the script stops before starting anything, with the port named.
port_taken() {
	python3 -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 4434)); s.listen(1); time.sleep(30)' &
	local holder=$! rc
	wait_port 127.0.0.1 4434 5 || { kill "$holder"; return 1; }
	timeout 30 scripts/demo-cluster.sh >"$demo_out" 2>&1
	rc=$?
	kill "$holder"; wait "$holder" 2>/dev/null
	cat "$demo_out"
	[ $rc -ne 0 ] && grep -q 'port 4434 is already in use' "$demo_out" && ! grep -q '^started' "$demo_out"
}
check "port 4434 in use: exits non-zero at once, naming the port, starting nothing" port_taken
bad_mode() {
	local rc
	DEMO_RPC=both timeout 30 scripts/demo-cluster.sh >"$demo_out" 2>&1
	rc=$?
	cat "$demo_out"
	[ $rc -ne 0 ] && grep -q 'DEMO_RPC must be separate or shared' "$demo_out" && ! grep -q '^started' "$demo_out"
}
check "an unknown DEMO_RPC is refused with a message, starting nothing" bad_mode
finish
