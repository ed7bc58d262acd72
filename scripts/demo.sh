#!/usr/bin/env bash
# make demo / make run: start the seed's five processes on the dev ports.
#   demo  start, run the seed's curl and a 1000-request stress test, stop, exit 0 on success
#   run   start and keep running until Ctrl-C
set -u
cd "$(dirname "$0")/.."
mode=${1:-demo}
N=${DEMO_REQUESTS:-1000}
J=${DEMO_JOBS:-25}
run=run/demo
mkdir -p "$run"
export PATH="$PWD/bin:$PATH"
pids=()

. scripts/procs.sh	# stop_pids
stop_all() {
	stop_pids "${pids[@]}"
	pids=()
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

for port in 4433 9999 6655 5544 5556 7766 7776 8877 8888; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "demo: port $port is already in use (is a demo already running?)" >&2
		exit 1
	fi
done

start() { # name, env assignment, command...
	local name=$1; shift
	env "$@" >"$run/$name.log" 2>&1 &
	pids+=($!)
	echo "started $name (pid $!, log $run/$name.log)"
}
start internal-server internal-server
start public-proxy PROXY_SETTINGS=settings/dev/roles/public-proxy-1 proxy run public
start private-proxy PROXY_SETTINGS=settings/dev/roles/private-proxy-1 proxy run private
start public-hyper HYPER_SETTINGS=settings/dev/roles/public-proxy-hyper-1 hyper server run
start private-hyper HYPER_SETTINGS=settings/dev/roles/private-proxy-hyper-1 hyper server run

curl_seed() {
	curl -sS --max-time 5 --cacert settings/dev/certs/root.crt \
		--resolve test.internal-server.local:4433:127.0.0.1 \
		https://test.internal-server.local:4433/jsonrpc "$@"
}

echo "waiting for the chain to serve ..."
answer=""
for _ in $(seq 100); do
	answer=$(curl_seed 2>/dev/null) && [ -n "$answer" ] && break
	answer=""
	for p in "${pids[@]}"; do
		kill -0 "$p" 2>/dev/null || { echo "demo: a process exited; see $run/*.log" >&2; tail -n 5 "$run"/*.log; exit 1; }
	done
	sleep 0.2
done
if [ -z "$answer" ]; then
	echo "demo: the chain did not answer within 20 s; logs in $run/" >&2
	tail -n 5 "$run"/*.log
	exit 1
fi
echo "\$ curl --cacert settings/dev/certs/root.crt --resolve test.internal-server.local:4433:127.0.0.1 https://test.internal-server.local:4433/jsonrpc"
echo "$answer"

if [ "$mode" = run ]; then
	echo "running; Ctrl-C stops all five processes"
	wait
	exit 0
fi

echo "stress test: $N requests, $J in parallel (the seed's command)"
out=$run/stress.txt
start_t=$(date +%s.%N)
seq 1 "$N" | parallel -j "$J" --bar curl -sS -o /dev/null -w "'%{http_code} %{time_total}\n'" \
	--max-time 30 --cacert settings/dev/certs/root.crt \
	--resolve test.internal-server.local:4433:127.0.0.1 \
	https://test.internal-server.local:4433/jsonrpc --data "{}" >"$out" 2>"$run/stress.err"
end_t=$(date +%s.%N)
ok=$(awk '$1 == 200' "$out" | wc -l)
awk '$1 == 200 { print $2 }' "$out" | sort -n >"$run/latency.txt"
pct() { # percentile of the sorted latencies, in ms
	local n; n=$(wc -l <"$run/latency.txt")
	[ "$n" -gt 0 ] || { echo 0; return; }
	awk -v p="$1" -v n="$n" 'NR == int((n - 1) * p) + 1 { printf "%.1f", $1 * 1000 }' "$run/latency.txt"
}
summary=$(awk -v n="$N" -v ok="$ok" -v t0="$start_t" -v t1="$end_t" -v p50="$(pct 0.50)" -v p99="$(pct 0.99)" \
	'BEGIN { printf "%d requests in %.1f s: %.1f requests/s, %d failures, p50 %s ms, p99 %s ms", n, t1 - t0, n / (t1 - t0), n - ok, p50, p99 }')
[ "$ok" -eq "$N" ]
rc=$?
echo "$summary"
# How the public proxy joined the clients: a pooled data connection (the
# default, pool_size 8) or brokered by incomingConnection.
sleep 0.3
echo "public proxy: $(grep -c ' via=pool ' "$run/public-proxy.log") connections via=pool," \
	"$(grep -c ' via=dial ' "$run/public-proxy.log") via=dial"
exit $rc
