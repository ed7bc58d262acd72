#!/usr/bin/env bash
# make demo-cluster: the seed's demo with two public proxies of one operator
# on one Redis, and two private proxies of one operator (issue #12, part 6).
# All on 127.0.0.1, on the dev ports plus 4434 and 9998:
#   redis-server       a free loopback port, no persistence, its own temp dir
#   public proxy A     TLS 4433, data 9999  } datastore: redis, both; the JSON-RPC
#   public proxy B     TLS 4434, data 9998  } port as described below (DEMO_RPC)
#   the two Hyper servers of the dev settings (5544/5556, 7766/7776)
#   private proxies 1 and 2: operator private-proxy-1.ga, one JSON-RPC port
#                      (8877, reuse_port: true), each with its own datastore file,
#                      both data endpoints in public_proxies[].data_endpoints
#   internal-server    8888
# Settings: the dev role folders (settings/dev/roles, unchanged) plus one
# generated .yml per process in run/demo-cluster/.  Then the seed's curl
# through each public port, and a stress run of DEMO_REQUESTS (200) requests,
# DEMO_JOBS (25) in parallel, spread over both ports.  Every process started
# here is stopped on exit (trap); exit 0 only when every request answered.
#
# DEMO_RPC (environment): how the public Hyper reaches the two instances.
#   separate (default)  B has its own JSON-RPC port (6656) that no Hyper calls;
#                       A takes every call (announcements, tickets), B learns the
#                       announcements and keys from Redis; a client of B that
#                       finds no pooled connection is brokered through the same
#                       Hyper (incomingConnection, dial-back to 9998)
#   shared              A and B both bind 6655 with reuse_port: true; the kernel
#                       spreads the Hyper's keep-alive connections over both
# Either way each private proxy keeps a pool (pool_size 8) at each live
# instance: the instances share their minting keys through Redis, and
# getInstances names them (README "Running several instances").  Each
# process has an instance_id of its own (a, b; private-1, private-2): two
# private proxies of one operator on one host must not share the default,
# the host name.
set -u
cd "$(dirname "$0")/.."
N=${DEMO_REQUESTS:-200}
J=${DEMO_JOBS:-25}
DEMO_RPC=${DEMO_RPC:-separate}
run=run/demo-cluster
export PATH="$PWD/bin:$PATH"
pids=()		# everything but Redis and the private proxies
private_pids=()	# stopped first: they close their pooled connections
redis_pid=""
redis_dir=""

fail() { echo "demo-cluster: $*" >&2; exit 1; }

. scripts/procs.sh	# stop_pids
# The private proxies first (their pooled connections close before the
# public proxies go), Redis last (no public proxy sees it go away).
stop_all() {
	stop_pids "${private_pids[@]}"
	private_pids=()
	stop_pids "${pids[@]}"
	pids=()
	[ -n "$redis_pid" ] && stop_pids "$redis_pid"
	redis_pid=""
	[ -n "$redis_dir" ] && rm -rf "$redis_dir"
	redis_dir=""
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

case $DEMO_RPC in
separate) B_RPC=6656 ;;
shared) B_RPC=6655 ;;
*) fail "DEMO_RPC must be separate or shared, not $DEMO_RPC" ;;
esac
command -v redis-server >/dev/null || fail "redis-server is missing (make deps installs it)"
command -v parallel >/dev/null || fail "GNU parallel is missing (make deps installs it)"
for port in 4433 4434 9999 9998 6655 $B_RPC 5544 5556 7766 7776 8877 8888; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		fail "port $port is already in use (is a demo already running?)"
	fi
done
rm -rf "$run"
mkdir -p "$run"
REDIS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# ---------------------------------------------------------------- settings
# The public instances: the dev public proxy's settings with the redis
# datastore instead of the file.  A key cannot be taken out by a later file
# (a null value still counts as present), so its folder is copied as
# tests/e2e/redis.sh does: the datastore block replaced, $DIR paths made
# absolute.  Then one .yml per instance: B on its own TLS and data ports.
pub=$run/public-proxy-1
mkdir -p "$pub"
python3 - settings/dev/roles/public-proxy-1 "$pub" "$PWD/settings/dev" "$REDIS_PORT" <<'PY' ||
import os, re, sys
src, dst, dev, port = sys.argv[1:]
blocks = 0
for name in sorted(os.listdir(src)):
    if not name.endswith((".yml", ".yaml", ".json")):
        continue
    s = open(os.path.join(src, name)).read().replace("$DIR/../../", dev + "/")
    s, n = re.subn(r'  datastore:\n    type: file\n    settings:\n      filename: [^\n]*\n',
        '  datastore:\n    type: redis\n    settings:\n      address: 127.0.0.1:%s\n'
        '      key_prefix: "demo-cluster:"\n' % port, s)
    blocks += n
    open(os.path.join(dst, name), "w").write(s)
assert blocks == 1, "expected one file datastore block in %s, found %d" % (src, blocks)
PY
	fail "cannot derive the public proxy's settings from settings/dev/roles/public-proxy-1"
reuse=false
[ "$DEMO_RPC" = shared ] && reuse=true
for i in a b; do
	cat >"$run/public-$i.yml" <<-EOF
	# generated by scripts/demo-cluster.sh: public proxy $i
	public:
	  instance_id: $i
	  reuse_port: $reuse
	EOF
done
cat >>"$run/public-b.yml" <<EOF
  tls_bind_address: localhost:4434
  internal_bind_address: localhost:9998
  internal_endpoint: localhost:9998
  jsonrpc_server:
    bind_address: localhost:$B_RPC
EOF
# The private proxies: one operator, one JSON-RPC port shared with
# reuse_port (the kernel hands each of the private Hyper's keep-alive
# connections to one of them), each its own datastore file; both public
# data ports may be dialed.
for i in 1 2; do
	cat >"$run/private-$i.yml" <<-EOF
	# generated by scripts/demo-cluster.sh: private proxy $i of private-proxy-1.ga
	private:
	  instance_id: private-$i
	  reuse_port: true
	  datastore:
	    type: file
	    settings:
	      filename: "\$DIR/private-$i.db"
	  public_proxies:
	    - name: public-proxy-1.ga
	      data_endpoints: ["localhost:9999", "localhost:9998"]
	EOF
done

# ---------------------------------------------------------------- processes
start() { # name, env assignment, command...
	local name=$1; shift
	env "$@" >"$run/$name.log" 2>&1 &
	if [[ $name == private-proxy-* ]]; then private_pids+=($!); else pids+=($!); fi
	echo "started $name (pid $!, log $run/$name.log)"
}
redis_dir=$(mktemp -d "${TMPDIR:-/tmp}/demo-cluster-redis.XXXXXX")
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
	--daemonize no --dir "$redis_dir" >"$run/redis.log" 2>&1 &
redis_pid=$!
echo "started redis-server on 127.0.0.1:$REDIS_PORT (pid $redis_pid, log $run/redis.log)"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 100); do
	[ "$(rcli PING 2>/dev/null)" = PONG ] && break
	kill -0 "$redis_pid" 2>/dev/null || { tail -n 5 "$run/redis.log" >&2; fail "redis-server exited"; }
	sleep 0.1
done
[ "$(rcli PING 2>/dev/null)" = PONG ] || fail "redis-server did not answer within 10 s"
roles=settings/dev/roles
# Callees before callers: the proxies' first calls find their Hyper up.
start internal-server internal-server
start public-hyper HYPER_SETTINGS=$roles/public-proxy-hyper-1 hyper server run
start private-hyper HYPER_SETTINGS=$roles/private-proxy-hyper-1 hyper server run
start public-proxy-a PROXY_SETTINGS=$pub:$run/public-a.yml proxy run public
start public-proxy-b PROXY_SETTINGS=$pub:$run/public-b.yml proxy run public
# The private proxies announce at once: wait (polling, at most 10 s) until
# their Hyper and the public side listen.
for port in 5544 5556 7766 7776 6655 $B_RPC; do
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
		sleep 0.1
	done
done
start private-proxy-1 PROXY_SETTINGS=$roles/private-proxy-1:$run/private-1.yml proxy run private
start private-proxy-2 PROXY_SETTINGS=$roles/private-proxy-1:$run/private-2.yml proxy run private

curl_seed() { # PORT [ARGS...]
	local port=$1; shift
	curl -sS --max-time 5 --cacert settings/dev/certs/root.crt \
		--resolve "test.internal-server.local:$port:127.0.0.1" \
		"https://test.internal-server.local:$port/jsonrpc" "$@"
}
all_alive() {
	local p
	for p in "${pids[@]}" "${private_pids[@]}" "$redis_pid"; do
		kill -0 "$p" 2>/dev/null || { echo "demo-cluster: a process exited; see $run/*.log" >&2
			tail -n 5 "$run"/*.log >&2; return 1; }
	done
}

echo "waiting for both public proxies to serve ..."
for port in 4433 4434; do
	answer=""
	for _ in $(seq 100); do
		answer=$(curl_seed "$port" 2>/dev/null) && [ -n "$answer" ] && break
		answer=""
		all_alive || exit 1
		sleep 0.2
	done
	if [ -z "$answer" ]; then
		tail -n 5 "$run"/*.log >&2
		fail "port $port did not answer within 20 s; logs in $run/"
	fi
	echo "\$ curl --cacert settings/dev/certs/root.crt --resolve test.internal-server.local:$port:127.0.0.1 https://test.internal-server.local:$port/jsonrpc"
	echo "$answer"
	[ "$answer" = '{"message": "success"}' ] || fail "port $port answered something else"
done

# ---------------------------------------------------------------- stress
echo "stress test: $N requests, $J in parallel, alternating between ports 4433 and 4434"
out=$run/stress.txt
start_t=$(date +%s.%N)
seq 1 "$N" | awk '{ print ($1 % 2) ? 4433 : 4434 }' |
	timeout 60 parallel -j "$J" curl -sS -o /dev/null -w "'{} %{http_code} %{time_total}\n'" \
	--max-time 30 --cacert settings/dev/certs/root.crt \
	--resolve 'test.internal-server.local:{}:127.0.0.1' \
	'https://test.internal-server.local:{}/jsonrpc' --data "{}" >"$out" 2>"$run/stress.err"
prc=$?
end_t=$(date +%s.%N)
[ $prc -eq 124 ] && echo "demo-cluster: the stress run was cut off after 60 s" >&2
ok=$(awk '$2 == 200' "$out" | wc -l)
summary=$(awk -v n="$N" -v ok="$ok" -v t0="$start_t" -v t1="$end_t" \
	'BEGIN { printf "%d requests in %.1f s: %.1f requests/s, %d failures", n, t1 - t0, n / (t1 - t0), n - ok }')
echo "$summary"
for port in 4433 4434; do
	echo "port $port: $(awk -v p=$port '$1 == p && $2 == 200' "$out" | wc -l) of" \
		"$(( N / 2 + (port == 4433 ? N % 2 : 0) )) answered 200"
done
# How each instance joined its clients: a pooled data connection or brokered
# by incomingConnection; and which private proxy relayed them.
sleep 0.3
for i in a b; do
	echo "public proxy $i: $(grep -c ' via=pool ' "$run/public-proxy-$i.log") connections via=pool," \
		"$(grep -c ' via=dial ' "$run/public-proxy-$i.log") via=dial"
done
for i in 1 2; do
	echo "private proxy $i: $(grep -c ' via=pool' "$run/private-proxy-$i.log") connections via=pool," \
		"$(grep -c ' via=dial' "$run/private-proxy-$i.log") via=dial"
done
echo "redis: $(rcli --scan --pattern 'demo-cluster:*' | wc -l) key(s) under demo-cluster:," \
	"$(rcli INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p') commands processed"
if [ "$ok" -ne "$N" ]; then
	head -n 5 "$run/stress.err" >&2
	fail "$((N - ok)) of $N requests failed; logs in $run/"
fi
echo "demo-cluster: ok"
