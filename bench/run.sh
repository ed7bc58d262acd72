#!/usr/bin/env bash
# bench/run.sh - the relay benchmarks (`make bench`, `make bench-quick`).
#
#   bench/run.sh [--quick] [--reps N]
#                [--setups "direct hop chain chain-dial haproxy sniproxy cluster"]
#                [--scenarios "rate latency bulk handshake stress memory profile"]
#                [--base GIT-REF]
#
# Setups (every one ends at the same internal-server, all on 127.0.0.1):
#   direct    client -> internal-server
#   hop       client -> one relay hop (bench/hop.c: the proxies' relay engine
#             alone) -> internal-server
#   chain     client -> public proxy -> private proxy -> internal-server, with
#             the default settings: pooled data connections (pool_size 8), a
#             Hyper call only for tickets and for the clients the pool cannot
#             take (bin/proxy, bin/hyper; skipped when they fail)
#   chain-dial  the same with pool_size 0: every connection brokered by
#             incomingConnection through the two Hyper servers and a
#             dial-back (processes named *-dial)
#   haproxy   client -> HAProxy (mode tcp, SNI routing) -> HAProxy (tcp) -> internal-server
#   sniproxy  client -> sniproxy (SNI routing) -> internal-server (first hop only)
#   chain-base  the chain with bin/proxy and bin/hyper built from GIT-REF
#             (--base; its processes are named *-base): a before/after
#             comparison of a change in one run, alternated with chain
#   cluster   client -> public proxy A or B (one Redis datastore, B with its
#             own ports; the public Hyper calls A) -> private proxy ->
#             internal-server; two loadgens at half concurrency, one per
#             instance, summed.  Only when named in --setups (after chain: its
#             req/s per repetition is also recorded against chain's as
#             req_s_vs_chain); Redis commands per connection from INFO
#             commandstats (redis_cmds_req).  Processes cluster-*
# Scenarios:
#   rate       new TLS connection + GET per request, concurrency 25 and 100
#   latency    concurrency 1: p50/p99 and the latency added to direct
#   bulk       GET /bytes and POST /sha256, 1 and 16 streams: MB/s, CPU s/GiB
#   handshake  TCP + TLS handshake only: brokered connections per second
#   stress     the seed's `seq 1 N | parallel -j 25 curl ...` command
#   memory     idle TLS connections held: peak RSS and fds per connection,
#              threads and io-wq workers, pipes held
#   profile    perf record -g / perf trace -s of the chain during rate c25
#              (bench/results/<date>.perf.txt; not in --quick)
# --quick: shorter runs (see below), setups "direct chain chain-dial haproxy"
# unless --setups names others, memory measured once; about 3 minutes.
# Setups alternate (A B A B ...) within each scenario; every figure is the
# median of the repetitions with min-max, and its ratio to direct.
# Output: bench/results/<date>.csv (one measurement a row), <date>.png
# (gnuplot), and a table on stdout.  Every process started here is stopped on
# exit; every wait is bounded.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

# Descriptors inherited from the caller (a pipe of a CI runner or a terminal
# multiplexer) would pass to every process started here and be counted as
# theirs: close all but stdio and bash's own script descriptor (255).
for fd in /proc/$$/fd/*; do
	fd=${fd##*/}
	[ "$fd" -gt 2 ] && [ "$fd" != 255 ] && eval "exec $fd>&-" 2>/dev/null
done

# Bench-only Debian packages, installed when missing.
BENCH_PACKAGES="haproxy sniproxy gnuplot-nox"

QUICK=0
REPS=3
SETUPS=""
BASE_REF=""
SCENARIOS="rate latency bulk handshake stress memory profile"
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--reps) REPS=${2:?}; shift ;;
	--setups) SETUPS=${2:?}; shift ;;
	--scenarios) SCENARIOS=${2:?}; shift ;;
	--base) BASE_REF=${2:?}; shift ;;
	-h|--help) sed -n '2,48p' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

# Quick: no hop or sniproxy unless asked for (--setups), memory measured once.
[ -n "$SETUPS" ] || { [ $QUICK = 1 ] && SETUPS="direct chain chain-dial haproxy" ||
	SETUPS="direct hop chain chain-dial haproxy sniproxy"; }
[ -n "$BASE_REF" ] && [[ " $SETUPS " != *" chain-base "* ]] && SETUPS+=" chain-base"
MEM_REPS=$REPS
[ $QUICK = 1 ] && MEM_REPS=1
# Quick: no profile unless asked for.
[ $QUICK = 1 ] && [ "$SCENARIOS" = "rate latency bulk handshake stress memory profile" ] &&
	SCENARIOS="rate latency bulk handshake stress memory"
GiB=1073741824
MiB=1048576
if [ $QUICK = 1 ]; then
	RATE_SECS=5; RATE_CONC="25"; LAT_REQS=300; BULK_DOWN=$((64 * MiB))
	BULK_UP=$((128 * MiB)); HS_SECS=2; STRESS_N=300; MEM_CONNS=1000
else
	RATE_SECS=10; RATE_CONC="25 100"; LAT_REQS=2000; BULK_DOWN=$GiB
	BULK_UP=$((256 * MiB)); HS_SECS=10; STRESS_N=2000; MEM_CONNS=10000
fi

SNI=test.internal-server.local
CERTS=$ROOT/settings/dev/certs
LOADGEN=$ROOT/build/rel/bench/loadgen
DATE=$(date +%Y%m%d-%H%M%S)
OUTDIR=$ROOT/bench/results
CSV=$OUTDIR/$DATE.csv
RUN=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
mkdir -p "$RUN/log" "$OUTDIR"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- processes
declare -A PID=()		# process name -> pid
declare -A SETUP_ADDR=()	# setup -> host:port the client connects to
declare -A SETUP_ADDR2=()	# setup -> a second host:port (cluster: instance B)
declare -A SETUP_REDIS=()	# setup -> port of its redis-server (cluster)
declare -A SETUP_PROCS=()	# setup -> process names whose CPU is sampled

start_proc() { # NAME CMD... (env assignments through `env`, which execs)
	local name=$1; shift
	"$@" </dev/null >"$RUN/log/$name.log" 2>&1 &
	PID[$name]=$!
}

stop_proc() { # NAME
	local name=$1 pid=${PID[$1]:-} i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	unset "PID[$name]"
}

stop_all() {
	local n
	for n in "${!PID[@]}"; do stop_proc "$n"; done
}

cleanup() {
	stop_all
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "run directory kept: $RUN"
	else
		rm -rf "$RUN"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until PID listens on PORT, and make sure nobody else does: a listener
# with SO_REUSEPORT would otherwise silently share the port with ours.
wait_listen() { # PID PORT SECONDS
	local pid=$1 port=$2 i lines
	for ((i = 0; i < ${3:-10} * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 1
		lines=$(ss -Hltnp "sport = :$port" 2>/dev/null)
		if grep -q "pid=$pid," <<<"$lines"; then
			if grep -v "pid=$pid," <<<"$lines" | grep -q "pid="; then
				echo "port $port is shared with another process:" >&2
				echo "$lines" >&2
				return 1
			fi
			return 0
		fi
		sleep 0.1
	done
	return 1
}

proc_cpu_ticks() { # PID -> utime+stime of the whole process, in clock ticks
	local line rest
	read -r line <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
	rest=${line##*) }
	set -- $rest
	echo $(( ${12} + ${13} ))
}

proc_rss_kb() { # PID -> VmRSS
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

pids_of() { # SETUP -> comma-separated pids, in SETUP_PROCS order
	local n out=""
	for n in ${SETUP_PROCS[$1]}; do out+=${out:+,}${PID[$n]}; done
	echo "$out"
}

# ---------------------------------------------------------------- setups
start_internal() {
	local port
	port=$(free_port)
	start_proc internal env IS_BIND_ADDRESS=127.0.0.1:$port IS_LOG_LEVEL=warn \
		IS_CERT_FILE="$CERTS/internal-server.crt" IS_KEY_FILE="$CERTS/internal-server.key" \
		"$ROOT/bin/internal-server"
	wait_listen "${PID[internal]}" "$port" 10 || { echo "internal-server did not start" >&2; tail -5 "$RUN/log/internal.log" >&2; return 1; }
	INTERNAL_PORT=$port
}

setup_direct() {
	SETUP_ADDR[direct]=127.0.0.1:$INTERNAL_PORT
	SETUP_PROCS[direct]="internal"
}

setup_haproxy() {
	local p1 p2 maxconn
	p1=$(free_port); p2=$(free_port)
	# HAProxy sizes its file limit from maxconn (2 sockets + pipes each).
	# 2 sockets per connection, up to maxpipes pipes (2 fds each) for splicing.
	maxconn=$((($(ulimit -n) - 2200) / 2))
	command -v haproxy >/dev/null || { echo "haproxy: not installed"; return 1; }
	# Hop 1 reads the ClientHello and routes on its SNI, like the public proxy.
	cat >"$RUN/haproxy1.cfg" <<-EOF
	global
	    maxconn $maxconn
	    maxpipes 512
	defaults
	    mode tcp
	    option splice-auto
	    timeout connect 5s
	    timeout client 1h
	    timeout server 1h
	frontend public
	    bind 127.0.0.1:$p1
	    tcp-request inspect-delay 5s
	    tcp-request content accept if { req.ssl_hello_type 1 }
	    use_backend private if { req.ssl_sni -i $SNI }
	backend private
	    server hop2 127.0.0.1:$p2
	EOF
	# Hop 2 is a plain TCP relay, like the private proxy.
	cat >"$RUN/haproxy2.cfg" <<-EOF
	global
	    maxconn $maxconn
	    maxpipes 512
	defaults
	    mode tcp
	    option splice-auto
	    timeout connect 5s
	    timeout client 1h
	    timeout server 1h
	frontend private
	    bind 127.0.0.1:$p2
	    default_backend internal
	backend internal
	    server internal 127.0.0.1:$INTERNAL_PORT
	EOF
	start_proc haproxy2 haproxy -db -f "$RUN/haproxy2.cfg"
	start_proc haproxy1 haproxy -db -f "$RUN/haproxy1.cfg"
	wait_listen "${PID[haproxy2]}" "$p2" 10 && wait_listen "${PID[haproxy1]}" "$p1" 10 ||
		{ echo "haproxy: did not start (see below)"; tail -n 3 "$RUN"/log/haproxy*.log; return 1; }
	SETUP_ADDR[haproxy]=127.0.0.1:$p1
	SETUP_PROCS[haproxy]="haproxy1 haproxy2 internal"
}

# One relay hop: the proxies' relay engine alone (bench/hop.c: accept, dial,
# relay_join with the default relay settings), no SNI, token or Hyper call.
setup_hop() {
	local p
	p=$(free_port)
	start_proc hop "$ROOT/build/rel/bench/hop" --listen "127.0.0.1:$p" \
		--connect "127.0.0.1:$INTERNAL_PORT"
	wait_listen "${PID[hop]}" "$p" 10 ||
		{ echo "hop: did not start"; tail -3 "$RUN/log/hop.log"; return 1; }
	SETUP_ADDR[hop]=127.0.0.1:$p
	SETUP_PROCS[hop]="hop internal"
}

setup_sniproxy() {
	local p
	p=$(free_port)
	command -v sniproxy >/dev/null || { echo "sniproxy: not installed"; return 1; }
	cat >"$RUN/sniproxy.conf" <<-EOF
	user $(id -un)
	error_log {
	    filename $RUN/log/sniproxy-error.log
	    priority warning
	}
	listener 127.0.0.1:$p {
	    protocol tls
	    table bench
	}
	table bench {
	    $SNI 127.0.0.1:$INTERNAL_PORT
	}
	EOF
	start_proc sniproxy sniproxy -f -c "$RUN/sniproxy.conf"
	wait_listen "${PID[sniproxy]}" "$p" 10 ||
		{ echo "sniproxy: did not start"; tail -3 "$RUN/log/sniproxy.log"; return 1; }
	SETUP_ADDR[sniproxy]=127.0.0.1:$p
	SETUP_PROCS[sniproxy]="sniproxy internal"
}

# settings/dev copied to $RUN/SETUP with its ports rewritten to free ones
# (CHAIN_PORT: dev port -> its port here), its certificate and data paths made
# absolute, and the public proxy's 900_bench.yml added.
chain_settings() { # SETUP BINDIR
	local s=$1 bin=$2 dir=$RUN/$1 port new
	[ -x "$bin/proxy" ] && [ -x "$bin/hyper" ] ||
		{ echo "$s: $bin/proxy or $bin/hyper is missing (make all failed?)"; return 1; }
	rm -rf "$dir"
	mkdir -p "$dir/roles" "$dir/directory" "$dir/data"
	cp -r "$ROOT"/settings/dev/roles/* "$dir/roles/"
	cp "$ROOT"/settings/dev/directory/* "$dir/directory/"
	local sed_args=(-e "s#\\\$DIR/\\.\\./\\.\\./certs#$CERTS#g"
		-e "s#\\\$DIR/\\.\\./\\.\\./run#$dir/data#g"
		-e "s#\\(localhost\\|127\\.0\\.0\\.1\\):8888\\b#127.0.0.1:$INTERNAL_PORT#g")
	declare -gA CHAIN_PORT=()
	for port in 4433 9999 6655 5544 5556 7766 7776 8877; do
		new=$(free_port)
		CHAIN_PORT[$port]=$new
		sed_args+=(-e "s#\\(localhost\\|127\\.0\\.0\\.1\\):$port\\b#127.0.0.1:$new#g")
	done
	find "$dir/roles" "$dir/directory" -type f -exec sed -i "${sed_args[@]}" {} +
	if grep -rq -e '\$DIR/\.\./\.\./certs' -e ':4433\b' "$dir/roles"; then
		echo "$s: settings rewrite incomplete"; return 1
	fi
	# The memory scenario holds thousands of connections from 127.0.0.1.
	printf 'public:\n  max_connections_per_source: 0\n' >"$dir/roles/public-proxy-1/900_bench.yml"
}

# Ready once the announcement went through: a request to ADDR succeeds end
# to end (tried for up to 20 s).
chain_ready() { # ADDR
	local i
	for ((i = 0; i < 40; i++)); do
		"$LOADGEN" "${LG_TLS[@]}" --connect "$1" --requests 1 --timeout 2 --duration 3 \
			--quiet >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	return 1
}

# Wait until each NAME:PORT (a process of PID, a dev port of CHAIN_PORT or a
# port) listens; else show its log, stop SETUP and fail.
setup_listening() { # SETUP NAME:PORT...
	local s=$1 np port; shift
	for np; do
		port=${np##*:}
		port=${CHAIN_PORT[$port]:-$port}
		if ! wait_listen "${PID[${np%%:*}]}" "$port" 10; then
			echo "$s: ${np%%:*} did not start; its log:"
			tail -5 "$RUN/log/${np%%:*}.log"
			stop_setup "$s"
			return 1
		fi
	done
}

# The five processes of the seed on free ports (chain_settings).
#   chain_start SETUP BINDIR [YAML]: processes named ROLE (setup chain) or
#   ROLE-VARIANT (setup chain-VARIANT); YAML, a settings document with
#   public: and/or private: sections, is added to both proxies' settings
#   (each reads its own section).
chain_start() {
	local s=$1 bin=$2 yaml=${3:-} dir=$RUN/$1 sfx=""
	[ "$s" = chain ] || sfx=-${s#chain-}
	chain_settings "$s" "$bin" || return 1
	if [ -n "$yaml" ]; then
		printf '%s\n' "$yaml" >"$dir/roles/public-proxy-1/910_variant.yml"
		printf '%s\n' "$yaml" >"$dir/roles/private-proxy-1/910_variant.yml"
	fi
	start_proc "public-hyper$sfx" env HYPER_SETTINGS="$dir/roles/public-proxy-hyper-1" \
		"$bin/hyper" server run
	start_proc "private-hyper$sfx" env HYPER_SETTINGS="$dir/roles/private-proxy-hyper-1" \
		"$bin/hyper" server run
	start_proc "public-proxy$sfx" env PROXY_SETTINGS="$dir/roles/public-proxy-1" \
		"$bin/proxy" run public
	start_proc "private-proxy$sfx" env PROXY_SETTINGS="$dir/roles/private-proxy-1" \
		"$bin/proxy" run private
	SETUP_PROCS[$s]="public-proxy$sfx public-hyper$sfx private-hyper$sfx private-proxy$sfx internal"
	setup_listening "$s" "public-hyper$sfx:5544" "private-hyper$sfx:7766" \
		"public-proxy$sfx:4433" "private-proxy$sfx:8877" || return 1
	SETUP_ADDR[$s]=127.0.0.1:${CHAIN_PORT[4433]}
	if ! chain_ready "${SETUP_ADDR[$s]}"; then
		echo "$s: no request went through within 20 s; logs:"
		tail -n 3 "$RUN"/log/p*-*"$sfx".log
		stop_setup "$s"
		return 1
	fi
	chain_wait_pool "$s" "$bin"
}

# Two public proxies of one operator on one Redis (issue #12): instance A is
# the chain's public proxy with the redis datastore, instance B the same
# settings on its own TLS, data and JSON-RPC ports (as in tests/e2e/redis.sh:
# the public Hyper delivers every call to A, B follows A's announcements
# through Redis and brokers its clients through the same Hyper); one private
# proxy that may dial both data ports; redis-server on a free port.  The
# clients are spread over A and B (lg_exec).  Processes cluster-*.
setup_cluster() {
	local s=cluster bin=$ROOT/bin dir=$RUN/cluster rport b_tls b_data b_rpc
	command -v redis-server >/dev/null || { echo "cluster: redis-server is not installed (make deps)"; return 1; }
	chain_settings "$s" "$bin" || return 1
	rport=$(free_port); b_tls=$(free_port); b_data=$(free_port); b_rpc=$(free_port)
	SETUP_PROCS[$s]="cluster-public-a cluster-public-b cluster-public-hyper cluster-private-hyper cluster-private cluster-redis internal"
	mkdir -p "$dir/redis"
	start_proc cluster-redis redis-server --port "$rport" --bind 127.0.0.1 --save '' \
		--appendonly no --daemonize no --dir "$dir/redis"
	setup_listening "$s" "cluster-redis:$rport" || return 1
	SETUP_REDIS[$s]=$rport
	# The file datastore block replaced (a key cannot be removed by a later
	# settings file).
	python3 - "$dir/roles/public-proxy-1/000_base.yml" "$rport" <<-'PY' ||
	import re, sys
	f, port = sys.argv[1], sys.argv[2]
	s = open(f).read()
	s, n = re.subn(r'  datastore:\n    type: file\n    settings:\n      filename: [^\n]*\n',
	    '  datastore:\n    type: redis\n    settings:\n      address: 127.0.0.1:%s\n' % port, s)
	assert n == 1, "no file datastore block in " + f
	open(f, "w").write(s)
	PY
		{ stop_setup "$s"; return 1; }
	mkdir -p "$dir/roles/public-proxy-b"
	cp "$dir"/roles/public-proxy-1/* "$dir/roles/public-proxy-b/"
	cat >"$dir/roles/public-proxy-b/920_instance.yml" <<-EOF
	public:
	  tls_bind_address: 127.0.0.1:$b_tls
	  internal_bind_address: 127.0.0.1:$b_data
	  internal_endpoint: 127.0.0.1:$b_data
	  jsonrpc_server:
	    bind_address: 127.0.0.1:$b_rpc
	EOF
	cat >"$dir/roles/private-proxy-1/920_instances.yml" <<-EOF
	private:
	  public_proxies:
	    - name: public-proxy-1.ga
	      data_endpoints: ["127.0.0.1:${CHAIN_PORT[9999]}", "127.0.0.1:$b_data"]
	EOF
	start_proc cluster-public-hyper env HYPER_SETTINGS="$dir/roles/public-proxy-hyper-1" \
		"$bin/hyper" server run
	start_proc cluster-private-hyper env HYPER_SETTINGS="$dir/roles/private-proxy-hyper-1" \
		"$bin/hyper" server run
	start_proc cluster-public-a env PROXY_SETTINGS="$dir/roles/public-proxy-1" \
		"$bin/proxy" run public
	start_proc cluster-public-b env PROXY_SETTINGS="$dir/roles/public-proxy-b" \
		"$bin/proxy" run public
	start_proc cluster-private env PROXY_SETTINGS="$dir/roles/private-proxy-1" \
		"$bin/proxy" run private
	setup_listening "$s" cluster-public-hyper:5544 cluster-private-hyper:7766 \
		cluster-public-a:4433 "cluster-public-b:$b_tls" cluster-private:8877 || return 1
	SETUP_ADDR[$s]=127.0.0.1:${CHAIN_PORT[4433]}
	SETUP_ADDR2[$s]=127.0.0.1:$b_tls
	if ! chain_ready "${SETUP_ADDR[$s]}" || ! chain_ready "${SETUP_ADDR2[$s]}"; then
		echo "$s: no request went through A and B within 20 s each; logs:"
		tail -n 3 "$RUN"/log/cluster-*.log
		stop_setup "$s"
		return 1
	fi
	chain_wait_pool "$s" "$bin"
}

# Wait (at most 10 s) until the public proxy of SETUP holds its full pool
# (getConnectionPools through its Hyper), so that measuring starts warm; a
# pool that stays empty (pool_size 0, a base without the pool) ends it at
# once.  Says what it saw.
chain_wait_pool() { # SETUP BINDIR
	local s=$1 bin=$2 i idle="" want=8
	grep -qs 'pool_size: 0' "$RUN/$s/roles/private-proxy-1/910_variant.yml" && return 0
	for ((i = 0; i < 50; i++)); do
		idle=$(HYPER_SETTINGS="$RUN/$s/roles/public-proxy-hyper-1" timeout 5 \
			"$bin/hyper" call --timeout 3 public-proxy-1.ga.getConnectionPools '{}' 2>/dev/null |
			jq -r '.[] | select(.operator == "private-proxy-1.ga") | .idle' 2>/dev/null)
		[ -n "$idle" ] || { [ $i -ge 5 ] && break; }
		[ "${idle:-0}" -ge "$want" ] && break
		sleep 0.2
	done
	echo "$s: ${idle:-no} idle pooled connection(s) at the start"
}
setup_chain() { chain_start chain "$ROOT/bin"; }
setup_chain-dial() { chain_start chain-dial "$ROOT/bin" $'private:\n  pool_size: 0'; }
setup_chain-base() { chain_start chain-base "$RUN/base/bin"; }

# bin/proxy and bin/hyper of BASE_REF, built in $RUN/base from `git archive`.
build_base() {
	rm -rf "$RUN/base" && mkdir -p "$RUN/base" &&
		git -C "$ROOT" archive --format=tar "$BASE_REF" | tar -x -C "$RUN/base" &&
		make --no-print-directory -s -C "$RUN/base" bin/proxy bin/hyper \
			>"$RUN/base.make.log" 2>&1 ||
		{ tail -20 "$RUN/base.make.log"; return 1; }
}

stop_setup() { # SETUP
	local n
	for n in ${SETUP_PROCS[$1]:-}; do [ "$n" = internal ] || stop_proc "$n"; done
}

LG_TLS=(--sni "$SNI" --cacert "$CERTS/root.crt")
ACTIVE=""	# setups that started and answered

# ---------------------------------------------------------------- results
echo "scenario,variant,setup,rep,metric,value" >"$CSV"
record() { # SCENARIO VARIANT SETUP REP METRIC VALUE
	echo "$1,$2,$3,$4,$5,$6" >>"$CSV"
}

# One loadgen run; its CSV line is split into rows.  Prints a progress line.
# LG line: requests,errors,aborted,seconds,rps,p50,p90,p99,max,mbps,bytes,
#          then cpu_us_per_req,fds_per_conn,vmhwm_kb per pid.
lg_run() { # SCENARIO VARIANT SETUP REP LOADGEN-ARGS...
	local sc=$1 va=$2 s=$3 rep=$4 out names i=11 j n f cpu np=0 via0 via1 rcmds=""
	shift 4
	via0=$(via_counts "$s")
	redis_calls "$s" >"$RUN/redis0.txt"
	out=$(lg_exec "$s" "$@" 2>"$RUN/lg.err")
	if [ -z "$out" ]; then
		log "  $sc $va $s #$rep: loadgen failed: $(head -c 300 "$RUN/lg.err")"
		return 1
	fi
	IFS=, read -r -a f <<<"$out"
	record "$sc" "$va" "$s" "$rep" requests "${f[0]}"
	record "$sc" "$va" "$s" "$rep" errors "${f[1]}"
	record "$sc" "$va" "$s" "$rep" req_s "${f[4]}"
	record "$sc" "$va" "$s" "$rep" p50_ms "${f[5]}"
	record "$sc" "$va" "$s" "$rep" p90_ms "${f[6]}"
	record "$sc" "$va" "$s" "$rep" p99_ms "${f[7]}"
	record "$sc" "$va" "$s" "$rep" max_ms "${f[8]}"
	[ "${f[10]}" != 0 ] && record "$sc" "$va" "$s" "$rep" mb_s "${f[9]}"
	for n in ${SETUP_PROCS[$s]}; do
		cpu=${f[i]}
		if [ "${f[10]}" != 0 ]; then
			# CPU seconds per GiB moved: us/req * requests / bytes.
			record "$sc" "$va" "$s" "$rep" "cpu_s_gib.$n" \
				"$(awk -v c="$cpu" -v r="${f[0]}" -v b="${f[10]}" 'BEGIN { printf "%.3f", c * r / 1e6 / (b / 1073741824) }')"
		else
			record "$sc" "$va" "$s" "$rep" "cpu_us_req.$n" "$cpu"
		fi
		if [ "$sc" = memory ]; then
			record "$sc" "$va" "$s" "$rep" "fds_conn.$n" "${f[i + 1]}"
			record "$sc" "$va" "$s" "$rep" "hwm_kb.$n" "${f[i + 2]}"
		fi
		i=$((i + 3))
		np=$((np + 1))
	done
	# Then threads,iou_wrk,pipes,pipe_kb of each process (most seen).
	j=$i
	for n in ${SETUP_PROCS[$s]}; do
		record "$sc" "$va" "$s" "$rep" "threads.$n" "${f[j]:--1}"
		record "$sc" "$va" "$s" "$rep" "iou_wrk.$n" "${f[j + 1]:--1}"
		record "$sc" "$va" "$s" "$rep" "pipes.$n" "${f[j + 2]:--1}"
		record "$sc" "$va" "$s" "$rep" "pipe_kb.$n" "${f[j + 3]:--1}"
		j=$((j + 4))
	done
	via1=$(via_counts "$s")
	if [ -n "$via1" ]; then
		# Share of this run's client connections the pool took (the rest
		# were brokered by incomingConnection).
		record "$sc" "$va" "$s" "$rep" via_pool_pct "$(awk -v a="$via0" -v b="$via1" 'BEGIN {
			split(a, x, " "); split(b, y, " "); p = y[1] - x[1]; d = y[2] - x[2]
			printf "%.1f", p + d ? 100 * p / (p + d) : 0 }')"
	fi
	if [ -n "${SETUP_REDIS[$s]:-}" ]; then
		# Redis commands during the run (the bench's own INFO left out):
		# in all and per request, and which ones.
		redis_calls "$s" >"$RUN/redis1.txt"
		# The heartbeats (SET, SCAN, GET every instance_heartbeat) and
		# the idle PINGs come with time, not with connections: the
		# rest (EVALSHA, PUBLISH, HGETALL, ...) is what connections
		# could have caused, counted apart (redis_conn_cmds_req).
		rcmds=$(awk 'NR == FNR { a[$1] = $2; next } $2 - a[$1] > 0 {
			d = $2 - a[$1]; n += d; l = l (l == "" ? "" : ", ") substr($1, 9) " " d
			if ($1 !~ /^cmdstat_(set|scan|get|ping)$/) c += d }
			END { printf "%d|%d|%s", n, c, l }' "$RUN/redis0.txt" "$RUN/redis1.txt")
		local rtot=${rcmds%%|*} rest=${rcmds#*|}
		local rconn=${rest%%|*} rlist=${rest#*|}
		record "$sc" "$va" "$s" "$rep" redis_cmds "$rtot"
		record "$sc" "$va" "$s" "$rep" redis_cmds_req \
			"$(awk -v d="$rtot" -v r="${f[0]}" 'BEGIN { printf "%.4f", r ? d / r : 0 }')"
		record "$sc" "$va" "$s" "$rep" redis_conn_cmds_req \
			"$(awk -v d="$rconn" -v r="${f[0]}" 'BEGIN { printf "%.4f", r ? d / r : 0 }')"
		rcmds=", Redis: $rtot commands${rlist:+ ($rlist)}"
	fi
	# The cluster against the chain of the same repetition (measured just
	# before it: setups alternate in --setups order).
	if [ "$s" = cluster ] && [ "${f[10]}" = 0 ]; then
		local chain_rps
		chain_rps=$(awk -F, -v sc="$sc" -v va="$va" -v rep="$rep" \
			'$1 == sc && $2 == va && $3 == "chain" && $4 == rep && $5 == "req_s" { v = $6 } END { print v }' "$CSV")
		[ -n "$chain_rps" ] && record "$sc" "$va" "$s" "$rep" req_s_vs_chain \
			"$(awk -v c="${f[4]}" -v h="$chain_rps" 'BEGIN { printf "%.3f", h ? c / h : 0 }')"
	fi
	PROGRESS=$((PROGRESS + 1))
	log "  [$PROGRESS] $sc $va $s #$rep: ${f[0]} ok, ${f[1]} errors, ${f[4]} req/s, p50 ${f[5]} ms, p99 ${f[7]} ms$([ "${f[10]}" != 0 ] && echo ", ${f[9]} MB/s")$rcmds"
	LAST_LG=("${f[@]}")
}
PROGRESS=0

# "POOLED DIALED": client connections the public proxies of a chain or the
# cluster setup have logged so far with via=pool and via=dial; nothing for
# other setups.
via_counts() { # SETUP
	local s=$1 f=()
	case $s in
	chain) f=("$RUN/log/public-proxy.log") ;;
	chain-*) f=("$RUN/log/public-proxy-${s#chain-}.log") ;;
	cluster) f=("$RUN/log/cluster-public-a.log" "$RUN/log/cluster-public-b.log") ;;
	*) return 0 ;;
	esac
	cat "${f[@]}" >/dev/null 2>&1 || return 0
	echo "$(cat "${f[@]}" | grep -c ' via=pool ') $(cat "${f[@]}" | grep -c ' via=dial ')"
}

# "COMMAND CALLS" lines from INFO commandstats of the setup's Redis (INFO
# itself left out: the bench's own reads); nothing for a setup without one.
redis_calls() { # SETUP
	local p=${SETUP_REDIS[$1]:-}
	[ -n "$p" ] || return 0
	redis-cli -h 127.0.0.1 -p "$p" INFO commandstats | tr -d '\r' |
		awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { print $1, $3 }'
}

# One loadgen run against SETUP: its CSV line on stdout (lg_run's format).
# A setup with a second address (SETUP_ADDR2, the cluster) gets two loadgens
# started together, one per address, each with half of --concurrency and
# --requests (the first the larger half; the first alone, with everything,
# when a half would be 0), and one line merged from theirs: counts, req/s,
# MB/s and bytes summed, seconds and max latency the larger, p50/p90/p99 the
# mean of the two weighted by requests (an approximation), and per process
# the first loadgen's figures (only it samples --pids), CPU and fds per
# request taken over the requests of both.
lg_exec() { # SETUP LOADGEN-ARGS...
	local s=$1; shift
	local a1=() a2=() i h split=0 l1 l2
	if [ -n "${SETUP_ADDR2[$s]:-}" ]; then
		split=1
		for ((i = 1; i <= $#; i++)); do
			case ${!i} in
			--concurrency|--requests)
				a1+=("${!i}"); a2+=("${!i}"); i=$((i + 1))
				h=$(((${!i} + 1) / 2))
				a1+=("$h"); a2+=($((${!i} - h)))
				[ $((${!i} - h)) -gt 0 ] || split=0 ;;
			*) a1+=("${!i}"); a2+=("${!i}") ;;
			esac
		done
	fi
	if [ $split = 0 ]; then
		"$LOADGEN" "${LG_TLS[@]}" --connect "${SETUP_ADDR[$s]}" --csv --quiet \
			--pids "$(pids_of "$s")" "$@"
		return
	fi
	"$LOADGEN" "${LG_TLS[@]}" --connect "${SETUP_ADDR2[$s]}" --csv --quiet "${a2[@]}" \
		>"$RUN/lg2.csv" 2>"$RUN/lg2.err" &
	h=$!
	l1=$("$LOADGEN" "${LG_TLS[@]}" --connect "${SETUP_ADDR[$s]}" --csv --quiet \
		--pids "$(pids_of "$s")" "${a1[@]}")
	wait "$h"
	l2=$(cat "$RUN/lg2.csv")
	[ -n "$l2" ] || cat "$RUN/lg2.err" >&2
	[ -n "$l1" ] && [ -n "$l2" ] || return 1
	awk -v a="$l1" -v b="$l2" 'BEGIN {
		n = split(a, f, ","); split(b, g, ",")
		r = f[1] + g[1]; w = f[1] + f[2] + g[1] + g[2]
		w = w ? (f[1] + f[2]) / w : 1
		o = sprintf("%d,%d,%d,%.3f,%.1f", r, f[2] + g[2], f[3] + g[3],
		    f[4] > g[4] ? f[4] : g[4], f[5] + g[5])
		for (i = 6; i <= 8; i++)
			o = o sprintf(",%.3f", r ? (f[i] * f[1] + g[i] * g[1]) / r : 0)
		o = o sprintf(",%.3f,%.2f,%.0f", f[9] > g[9] ? f[9] : g[9], f[10] + g[10], f[11] + g[11])
		np = (n - 11) / 7
		for (i = 12; i < 12 + 3 * np; i += 3)
			o = o sprintf(",%.1f,%.3f,%s", f[i] < 0 ? -1 : f[i] * w, f[i + 1] * w, f[i + 2])
		for (; i <= n; i++)
			o = o "," f[i]
		print o
	}'
}

# ---------------------------------------------------------------- scenarios
each_rep() { # FUNCTION ARGS...: for rep: for setup (A B A B ...)
	local rep s reps=${EACH_REPS:-$REPS}
	for ((rep = 1; rep <= reps; rep++)); do
		for s in $ACTIVE; do "$@" "$s" "$rep"; done
	done
}

sc_rate() { # CONC SETUP REP
	lg_run rate "c$1" "$2" "$3" --concurrency "$1" --duration "$RATE_SECS" --timeout 10
}
sc_latency() { # SETUP REP
	lg_run latency c1 "$1" "$2" --concurrency 1 --requests "$LAT_REQS" \
		--duration "$((LAT_REQS / 10 + 30))" --timeout 10
}
sc_bulk() { # KIND STREAMS SETUP REP
	local kind=$1 streams=$2 total each
	[ "$kind" = down ] && total=$BULK_DOWN || total=$BULK_UP
	each=$((total / streams))
	if [ "$kind" = down ]; then
		lg_run bulk "down$streams" "$3" "$4" --bytes "$each" --requests "$streams" \
			--concurrency "$streams" --timeout 300 --duration 300
	else
		lg_run bulk "up$streams" "$3" "$4" --upload "$each" --requests "$streams" \
			--concurrency "$streams" --timeout 300 --duration 300
	fi
}
sc_handshake() { # SETUP REP
	lg_run handshake c25 "$1" "$2" --handshake-only --concurrency 25 \
		--duration "$HS_SECS" --timeout 10
}

# The seed's stress command, as written, against the setup's address.
sc_stress() { # SETUP REP
	local s=$1 rep=$2 port=${SETUP_ADDR[$1]##*:} n t0 t1 out=$RUN/stress.txt summary
	declare -A c0=()
	for n in ${SETUP_PROCS[$s]}; do c0[$n]=$(proc_cpu_ticks "${PID[$n]}"); done
	local curl=(curl -sS -o /dev/null -w "'%{http_code} %{time_total}\n'" --max-time 30
		--cacert "$CERTS/root.crt")
	t0=$(date +%s.%N)
	if [ -n "${SETUP_ADDR2[$s]:-}" ]; then
		# Two addresses (the cluster): the input is the port, alternating.
		seq 1 "$STRESS_N" | awk -v a="$port" -v b="${SETUP_ADDR2[$s]##*:}" '{ print $1 % 2 ? a : b }' |
			timeout 600 parallel -j 25 "${curl[@]}" --resolve "$SNI:{}:127.0.0.1" \
			"https://$SNI:{}/jsonrpc" --data "{}" >"$out" 2>"$RUN/stress.err"
	else
		seq 1 "$STRESS_N" | timeout 600 parallel -j 25 "${curl[@]}" \
			--resolve "$SNI:$port:127.0.0.1" "https://$SNI:$port/jsonrpc" --data "{}" \
			>"$out" 2>"$RUN/stress.err"
	fi
	t1=$(date +%s.%N)
	# The latencies of the successes, sorted, give p50 and p99.
	summary=$(awk '$1 == 200 { print $2 }' "$out" | sort -g | awk -v n="$STRESS_N" -v t0="$t0" -v t1="$t1" '
		{ lat[NR] = $1 }
		END {
			p50 = NR ? lat[int((NR - 1) * 0.50 + 0.5) + 1] * 1000 : 0
			p99 = NR ? lat[int((NR - 1) * 0.99 + 0.5) + 1] * 1000 : 0
			printf "%.3f %.1f %d %.2f %.2f\n", t1 - t0, n / (t1 - t0), n - NR, p50, p99
		}')
	set -- $summary
	record stress "j25" "$s" "$rep" wall_s "$1"
	record stress "j25" "$s" "$rep" req_s "$2"
	record stress "j25" "$s" "$rep" errors "$3"
	record stress "j25" "$s" "$rep" p50_ms "$4"
	record stress "j25" "$s" "$rep" p99_ms "$5"
	local tck
	tck=$(getconf CLK_TCK)
	for n in ${SETUP_PROCS[$s]}; do
		record stress "j25" "$s" "$rep" "cpu_s.$n" \
			"$(awk -v a="${c0[$n]}" -v b="$(proc_cpu_ticks "${PID[$n]}")" -v t="$tck" 'BEGIN { printf "%.2f", (b - a) / t }')"
	done
	PROGRESS=$((PROGRESS + 1))
	log "  [$PROGRESS] stress j25 $s #$rep: $STRESS_N requests in $1 s, $2 req/s, $3 failures, p50 $4 ms, p99 $5 ms"
}

# Idle connections held through fresh processes: peak RSS, fds per connection.
sc_memory() { # SETUP REP
	local s=$1 rep=$2 n
	stop_all
	start_internal || return 1
	unset "SETUP_ADDR[$s]" "SETUP_ADDR2[$s]" "SETUP_REDIS[$s]"
	if ! setup_"$s" >"$RUN/setup-$s.txt" 2>&1; then
		log "  memory $s #$rep: setup failed: $(head -c 300 "$RUN/setup-$s.txt")"
		return 1
	fi
	declare -A rss0=()
	for n in ${SETUP_PROCS[$s]}; do rss0[$n]=$(proc_rss_kb "${PID[$n]}"); done
	lg_run memory "n$MEM_CONNS" "$s" "$rep" --hold 2 --requests "$MEM_CONNS" \
		--concurrency 50 --timeout 30 --duration $((MEM_CONNS / 20 + 60)) || return 1
	local i=11
	for n in ${SETUP_PROCS[$s]}; do
		# Peak RSS above the idle process, per connection held.
		record memory "n$MEM_CONNS" "$s" "$rep" "kb_conn.$n" \
			"$(awk -v h="${LAST_LG[i + 2]}" -v r="${rss0[$n]}" -v c="${LAST_LG[0]}" 'BEGIN { printf "%.2f", c ? (h - r) / c : 0 }')"
		i=$((i + 3))
	done
}

# perf on the chain processes during a c25 rate run (not measured): the top
# functions (perf record -g) and the syscalls (perf trace -s) of each.
sc_profile() {
	local out=$OUTDIR/$DATE.perf.txt pids secs=$RATE_SECS lgpid
	[[ " $ACTIVE " == *" chain "* ]] || { log "profile: no chain setup"; return; }
	command -v perf >/dev/null || { log "profile: perf missing (linux-perf)"; return; }
	pids=$(IFS=,; echo "${PID[public-proxy]},${PID[private-proxy]},${PID[public-hyper]},${PID[private-hyper]}")
	# One load run; perf record first, then perf trace (each would show in
	# the other's profile if they ran together).
	"$LOADGEN" "${LG_TLS[@]}" --connect "${SETUP_ADDR[chain]}" --concurrency 25 \
		--duration $((2 * secs + 2)) --timeout 10 --quiet >"$RUN/profile-lg.txt" 2>&1 &
	lgpid=$!
	sleep 1
	timeout $((secs + 10)) perf record -q -g -F 999 -p "$pids" -o "$RUN/perf.data" \
		-- sleep "$secs" >"$RUN/perf-record.log" 2>&1
	timeout $((secs + 10)) perf trace -s -p "${PID[public-proxy]},${PID[private-proxy]}" \
		-o "$RUN/perf-trace.txt" -- sleep "$((secs / 2))" >"$RUN/perf-trace.log" 2>&1
	wait "$lgpid" 2>/dev/null
	{
		echo "# perf during rate c25 through the chain ($secs s), $(date -u +%FT%TZ)"
		echo "# pids: public-proxy ${PID[public-proxy]}, private-proxy ${PID[private-proxy]}," \
			"public-hyper ${PID[public-hyper]}, private-hyper ${PID[private-hyper]}"
		echo "# loadgen: $(cat "$RUN/profile-lg.txt")"
		echo
		echo "## perf report --no-children --sort pid,sym (self time, top entries)"
		perf report -i "$RUN/perf.data" --stdio --no-children --sort pid,sym -g none \
			--percent-limit 0.25 2>/dev/null | grep -v "^#" | grep -v "^$" | head -60
		echo
		echo "## perf report --sort pid,dso (where the time goes: kernel, libcrypto, libc, ...)"
		perf report -i "$RUN/perf.data" --stdio --no-children --sort pid,dso -g none \
			--percent-limit 1 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
		echo
		echo "## perf report --sort pid (share of samples per process)"
		perf report -i "$RUN/perf.data" --stdio --no-children --sort pid -g none \
			2>/dev/null | grep -v '^#' | grep -v '^$' | head -10
		echo
		echo "## perf trace -s (syscalls of the two proxies)"
		grep -v '^$' "$RUN/perf-trace.txt" 2>/dev/null | head -80
	} >"$out"
	log "profile: $out"
}

# ---------------------------------------------------------------- summary
summarize() {
	python3 - "$CSV" "$OUTDIR/$DATE" "$MEM_CONNS" <<-'EOF'
	import csv, statistics, sys, collections
	rows = list(csv.DictReader(open(sys.argv[1])))
	base = sys.argv[2]
	mem_conns = int(sys.argv[3])
	CHAIN4 = ("public-proxy", "public-hyper", "private-hyper", "private-proxy")
	PROXIES = ("public-proxy", "private-proxy")
	# The cluster's relay processes: both public proxies, both Hyper servers
	# and the private proxy (its redis-server apart, cpu_us_req.cluster-redis).
	CLUSTER5 = ("cluster-public-a", "cluster-public-b", "cluster-public-hyper",
	            "cluster-private-hyper", "cluster-private")
	# CPU per connection summed over processes, per repetition: the four
	# chain processes, the two Hyper servers alone, HAProxy's two hops, the
	# cluster's five.
	SUMS = (("chain4", CHAIN4), ("hypers2", ("public-hyper", "private-hyper")),
	        ("haproxy1+2", ("haproxy1", "haproxy2")), ("cluster5", CLUSTER5))
	vals = collections.OrderedDict()
	setups = []
	sums = collections.OrderedDict()
	for r in rows:
	    key = (r["scenario"], r["variant"], r["metric"])
	    vals.setdefault(key, collections.OrderedDict()).setdefault(r["setup"], []).append(float(r["value"]))
	    if r["setup"] not in setups:
	        setups.append(r["setup"])
	    me = r["metric"]
	    if not me.startswith("cpu_us_req."):
	        continue
	    # (Setup chain-X names its processes ROLE-X.)
	    st = r["setup"]
	    sfx = "-" + st[6:] if st.startswith("chain-") else ""
	    proc = me[11:]
	    if sfx and not proc.endswith(sfx):
	        continue
	    proc = proc[:len(proc) - len(sfx)]
	    for name, procs in SUMS:
	        if proc in procs:
	            k = (r["scenario"], r["variant"], "cpu_us_req." + name, r["rep"], st)
	            sums[k] = sums.get(k, 0.0) + float(r["value"])
	sv = collections.OrderedDict()
	for (sc, va, me, rep, st), v in sums.items():
	    sv.setdefault((sc, va, me), collections.OrderedDict()).setdefault(st, []).append(v)
	# The sums go after the last row of their scenario and variant.
	keys, ordered = list(vals), collections.OrderedDict()
	for i, k in enumerate(keys):
	    ordered[k] = vals[k]
	    if i + 1 == len(keys) or keys[i + 1][:2] != k[:2]:
	        for name, _ in SUMS:
	            if k[:2] + ("cpu_us_req." + name,) in sv:
	                ordered[k[:2] + ("cpu_us_req." + name,)] = sv[k[:2] + ("cpu_us_req." + name,)]
	vals = ordered
	med = {}
	for (sc, va, me), per in vals.items():
	    for s, v in per.items():
	        med[(sc, va, me, s)] = statistics.median(v)
	def m(sc, va, me, s):
	    return med.get((sc, va, me, s))

	# Targets (2 cores, ratios from this run): (label, value text, met, rows marked).
	targets = []
	def target(label, value, ok, cond, mark=(), tag=""):
	    if value is None:
	        targets.append((label, cond, "no data", "n/a", mark, tag))
	    else:
	        targets.append((label, cond, value, "met" if ok else "NOT met", mark, tag))
	def ratio_target(label, key, other, want, setup="chain", tag=None):
	    c, o = m(*key, setup), m(*key, other)
	    if c is None or not o:
	        target(label, None, False, ">= %.2fx %s" % (want, other))
	        return
	    target(label, "%.2fx (%s vs %s)" % (c / o, fmt(c), fmt(o)), c / o >= want,
	           ">= %.2fx %s" % (want, other), [key + (setup,)], tag or " vs " + other)
	def fmt(x):
	    return "%.0f" % x if abs(x) >= 1000 else "%.4g" % x
	ratio_target("rate c25 req/s vs direct", ("rate", "c25", "req_s"), "direct", 0.85)
	ratio_target("rate c25 req/s vs haproxy", ("rate", "c25", "req_s"), "haproxy", 1.05)
	for sc in ("handshake", "rate"):
	    v = m(sc, "c25", "cpu_us_req.chain4", "chain")
	    target("CPU of the 4 chain processes per connection (%s c25)" % sc,
	           None if v is None else "%.0f us" % v, v is not None and v <= 400, "<= 400 us",
	           [(sc, "c25", "cpu_us_req.chain4", "chain")])
	for me, lim in (("p50_ms", 1.0), ("p99_ms", 3.0)):
	    c, d = m("latency", "c1", me, "chain"), m("latency", "c1", me, "direct")
	    ok = c is not None and d is not None and c - d <= lim
	    target("added latency c1 %s (chain - direct)" % me[:3],
	           None if c is None or d is None else "%+.2f ms" % (c - d), ok,
	           "<= %g ms" % lim, [("latency", "c1", me, "chain")])
	for va in ("down1", "down16"):
	    ratio_target("bulk %s MB/s vs direct" % va, ("bulk", va, "mb_s"), "direct", 0.9)
	    ratio_target("bulk %s MB/s vs haproxy" % va, ("bulk", va, "mb_s"), "haproxy", 1.3)
	# One relay hop (setup hop): throughput against direct, and relay CPU
	# per GiB against the best variant of shared/research/relay-techniques.md
	# at the same stream count (A_epoll_splice_1M: 0.51 s/GB at 1 stream,
	# 0.35 at 16; 1 GiB = 1.074 GB).
	for va, best_gb in (("down1", 0.51), ("down16", 0.35)):
	    ratio_target("one hop: bulk %s MB/s vs direct" % va, ("bulk", va, "mb_s"), "direct", 0.9,
	                 setup="hop")
	    v = m("bulk", va, "cpu_s_gib.hop", "hop")
	    lim = best_gb * 1.073741824
	    target("one hop: relay CPU per GiB, bulk %s" % va,
	           None if v is None else "%.2f s/GiB" % v, v is not None and v <= lim,
	           "<= %.2f s/GiB (research best)" % lim, [("bulk", va, "cpu_s_gib.hop", "hop")])
	for sc in ("rate", "handshake"):
	    v = m(sc, "c25", "cpu_us_req.public-proxy", "chain")
	    target("public proxy CPU (both threads) per brokered connection (%s c25)" % sc,
	           None if v is None else "%.0f us" % v, v is not None and v < 150, "< 150 us",
	           [(sc, "c25", "cpu_us_req.public-proxy", "chain")])
	# Issue #16 (the warm pool): the pooled chain against HAProxy and direct.
	for sc in ("rate", "handshake"):
	    c, h = m(sc, "c25", "cpu_us_req.chain4", "chain"), m(sc, "c25", "cpu_us_req.haproxy1+2", "haproxy")
	    target("#16: CPU of the 4 chain processes vs HAProxy's 2 (%s c25)" % sc,
	           None if c is None or h is None else "%.0f vs %.0f us" % (c, h),
	           c is not None and h is not None and c <= h, "<= haproxy1+2",
	           [(sc, "c25", "cpu_us_req.chain4", "chain")], " vs haproxy")
	    v = m(sc, "c25", "cpu_us_req.hypers2", "chain")
	    target("#16: CPU of the 2 Hyper servers per connection (%s c25)" % sc,
	           None if v is None else "%.1f us" % v, v is not None and v <= 10, "<= 10 us",
	           [(sc, "c25", "cpu_us_req.hypers2", "chain")])
	ratio_target("#16: rate c25 req/s vs haproxy", ("rate", "c25", "req_s"), "haproxy", 1.2,
	             tag=" vs haproxy (#16)")
	ratio_target("#16: rate c25 req/s vs direct", ("rate", "c25", "req_s"), "direct", 0.8,
	             tag=" vs direct (#16)")
	for me, lim in (("p50_ms", 0.35), ("p99_ms", 1.0)):
	    c, d = m("latency", "c1", me, "chain"), m("latency", "c1", me, "direct")
	    target("#16: added latency c1 %s (chain - direct)" % me[:3],
	           None if c is None or d is None else "%+.2f ms" % (c - d),
	           c is not None and d is not None and c - d <= lim, "<= %g ms" % lim,
	           [("latency", "c1", me, "chain")], " (#16)")
	memva = next((va for (sc, va, me) in vals if sc == "memory"), None)
	for p in PROXIES:
	    v = m("memory", memva, "kb_conn." + p, "chain")
	    target("user-space memory per idle connection, %s (%s)" % (p, memva),
	           None if v is None else "%.2f KiB" % v, v is not None and v <= 2.0, "<= 2 KiB",
	           [("memory", memva, "kb_conn." + p, "chain")])
	# io-wq workers: the most seen in any scenario, against connections held.
	wrk = [max(v) for (sc, va, me), per in vals.items() for s, v in per.items()
	       if s == "chain" and me.startswith("iou_wrk.") and me[8:] in CHAIN4]
	if wrk:
	    target("io-wq (iou-wrk) threads of the chain, most seen in any scenario",
	           "%d (with up to %d connections held)" % (max(wrk), mem_conns),
	           max(wrk) <= 4, "none per connection (<= 4)")
	else:
	    target("io-wq (iou-wrk) threads of the chain", None, False, "none per connection")
	# Before/after (--base): the chain against chain-base, within 5 %.
	for sc, va, me in (("rate", "c25", "req_s"), ("rate", "c25", "cpu_us_req.chain4"),
	                   ("handshake", "c25", "cpu_us_req.chain4")):
	    c, b = m(sc, va, me, "chain"), m(sc, va, me, "chain-base")
	    if b:
	        target("%s %s %s vs chain-base" % (sc, va, me), "%.3fx (%s vs %s)" % (c / b, fmt(c), fmt(b))
	               if c is not None else None, c is not None and abs(c / b - 1) <= 0.05,
	               "within 5 %", [(sc, va, me, "chain")], " vs chain-base")
	marks = {}
	for label, cond, value, status, mark, tag in targets:
	    for k in mark:
	        marks[k] = (marks[k] + ", " if k in marks else "") + status + tag

	print("%-10s %-7s %-30s %-10s %30s %8s  %s" % ("scenario", "variant", "metric", "setup", "median [min-max]", "/direct", "target"))
	for (sc, va, me), per in vals.items():
	    # The CSV keeps everything; the table skips what says little.
	    proc = me.split(".", 1)[1] if "." in me else ""
	    if me in ("requests", "redis_cmds") or (sc == "bulk" and me in ("req_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")) \
	            or (sc == "memory" and me in ("req_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")) \
	            or (sc not in ("rate", "stress") and me in ("p90_ms", "max_ms")):
	        continue
	    if me.split(".")[0] in ("threads", "iou_wrk", "pipes", "pipe_kb"):
	        # Threads and pipes: proxies only, where they tell something.
	        if proc in ("internal", "cluster-redis") or sc not in ("rate", "bulk", "memory") or \
	                (sc == "rate" and va != "c25") or (sc == "bulk" and va != "down16"):
	            continue
	    for s, v in per.items():
	        mm = med[(sc, va, me, s)]
	        d = med.get((sc, va, me, "direct"))
	        ratio = "%.2f" % (mm / d) if d and s != "direct" else ""
	        extra = ""
	        if me in ("p50_ms", "p99_ms") and d is not None and s != "direct":
	            extra = "(%+.2f ms) " % (mm - d)
	        print("%-10s %-7s %-30s %-10s %30s %8s  %s%s" % (sc, va, me, s,
	              "%s [%s-%s]" % (fmt(mm), fmt(min(v)), fmt(max(v))), ratio, extra,
	              marks.get((sc, va, me, s), "")))
	print()
	print("%-66s %-26s %-40s %s" % ("target (chain unless it says one hop)", "wanted", "measured (medians)", "met?"))
	for label, cond, value, status, mark, tag in targets:
	    print("%-66s %-26s %-40s %s" % (label, cond, value, status))
	# The cluster (issue #12) beside the chain: no target, what two public
	# proxies on one Redis cost and how much they ask of Redis.
	if "cluster" in setups:
	    print()
	    print("cluster: two public proxies on one Redis, the clients split over both, one private proxy")
	    for (sc, va, me) in vals:
	        if sc in ("rate", "handshake") and me == "req_s":
	            c, h = m(sc, va, me, "cluster"), m(sc, va, me, "chain")
	            if c is not None and h:
	                r = m(sc, va, "req_s_vs_chain", "cluster")
	                print("  %-9s %-4s req/s cluster / chain: %.2fx (medians %s vs %s%s)" % (sc, va, c / h,
	                      fmt(c), fmt(h), "; per repetition %.2fx" % r if r is not None else ""))
	            cc, hc = m(sc, va, "cpu_us_req.cluster5", "cluster"), m(sc, va, "cpu_us_req.chain4", "chain")
	            if cc is not None and hc is not None:
	                print("  %-9s %-4s CPU per connection: cluster's 5 relay processes %.0f us, chain's 4 %.0f us"
	                      % (sc, va, cc, hc))
	            rq = m(sc, va, "redis_cmds_req", "cluster")
	            if rq is not None:
	                print("  %-9s %-4s Redis commands per connection: %.4f (%s in the run, with the periodic"
	                      " heartbeats and PINGs); other than those: %.4f" % (sc, va, rq,
	                      fmt(m(sc, va, "redis_cmds", "cluster")),
	                      m(sc, va, "redis_conn_cmds_req", "cluster") or 0))
	            vp = m(sc, va, "via_pool_pct", "cluster")
	            if vp is not None:
	                print("  %-9s %-4s connections via=pool: %.1f %% (the rest brokered by incomingConnection)"
	                      % (sc, va, vp))
	print()
	print("stress: each request starts a curl process (fork, exec, TLS handshake in curl);")
	print("        its req/s is bounded by that, not by the relay (compare rate c25).")
	print("memory: kb_conn = (VmHWM - idle VmRSS) / connections held (user space);")
	print("        pipe_kb = pipes held x F_GETPIPE_SZ (upper bound of pipe buffer memory:")
	print("        pages exist only while data sits in a pipe).")
	# Chart data: one file per panel, a row per variant, a column per setup.
	def panel(name, items):
	    with open("%s.%s.dat" % (base, name), "w") as f:
	        f.write("label " + " ".join(setups) + "\n")
	        if not any((sc, va, me, s) in med for _, sc, va, me in items for s in setups):
	            f.write("none" + " 0" * len(setups) + "\n")
	        for label, sc, va, me in items:
	            if not any((sc, va, me, s) in med for s in setups):
	                continue
	            f.write(label + " " + " ".join("%g" % med.get((sc, va, me, s), 0) for s in setups) + "\n")
	panel("rate", [("GET_c25", "rate", "c25", "req_s"), ("GET_c100", "rate", "c100", "req_s"),
	               ("handshake_c25", "handshake", "c25", "req_s"), ("stress_j25", "stress", "j25", "req_s")])
	panel("latency", [("p50_c1", "latency", "c1", "p50_ms"), ("p99_c1", "latency", "c1", "p99_ms")])
	panel("bulk", [("down1", "bulk", "down1", "mb_s"), ("down16", "bulk", "down16", "mb_s"),
	               ("up1", "bulk", "up1", "mb_s"), ("up16", "bulk", "up16", "mb_s")])
	mem = []
	for (sc, va, me), per in vals.items():
	    if sc == "memory" and me.startswith("kb_conn."):
	        mem.append((me[8:], sc, va, me))
	panel("memory", mem)
	EOF
}

chart() {
	local b=$OUTDIR/$DATE ncol
	command -v gnuplot >/dev/null || { log "gnuplot missing: no chart"; return; }
	ncol=$(head -1 "$b.rate.dat" | wc -w)
	gnuplot <<-EOF 2>"$RUN/gnuplot.err" || log "gnuplot failed: $(head -c 300 "$RUN/gnuplot.err")"
	set terminal pngcairo size 1400,1000 noenhanced
	set output "$b.png"
	set style data histogram
	set style histogram cluster gap 1
	set style fill solid 0.8 border -1
	set key top right
	set grid ytics
	set yrange [0:*]
	set multiplot layout 2,2 title "relay benchmarks $DATE"
	set title "connections per second (one request per TLS connection)"
	plot for [i=2:$ncol] "$b.rate.dat" using i:xtic(1) title columnheader(i)
	set title "latency at concurrency 1 (ms)"
	plot for [i=2:$ncol] "$b.latency.dat" using i:xtic(1) title columnheader(i)
	set title "bulk throughput (MB/s)"
	plot for [i=2:$ncol] "$b.bulk.dat" using i:xtic(1) title columnheader(i)
	set title "peak RSS per idle connection held (kB), per process"
	set xtics rotate by -30
	plot for [i=2:$ncol] "$b.memory.dat" using i:xtic(1) title columnheader(i)
	unset multiplot
	EOF
	rm -f "$b".*.dat
	[ -f "$b.png" ] && log "chart: $b.png"
}

# ---------------------------------------------------------------- main
install_missing() {
	local p missing=""
	for p in $BENCH_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=" $p"; done
	[ -z "$missing" ] && return
	log "installing bench packages:$missing"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } \
		>"$RUN/apt.log" 2>&1 || log "apt-get failed (see $RUN/apt.log); setups needing them are skipped"
}

# Each process has its own limit: a relay hop holds 2 sockets per idle
# connection (pipes only while data moves), the public proxy keeps 64 + 2 x
# max_pipes (1024) descriptors out of max_connections, HAProxy wants 3 per
# maxconn.  So a limit L holds about (L - 2200) / 2 idle connections.
raise_nofile() {
	local want=$((MEM_CONNS * 2 + 2200)) hard
	ulimit -Hn "$want" 2>/dev/null
	hard=$(ulimit -Hn)
	[ "$hard" = unlimited ] && hard=1048576
	ulimit -n "$hard" 2>/dev/null
	if [ "$hard" -lt "$want" ]; then
		local fit=$(((hard - 2200) / 2))
		log "memory: the hard file limit is $hard (cannot raise it to $want): holding $fit connections instead of $MEM_CONNS"
		MEM_CONNS=$fit
	fi
}

main() {
	local s t_start=$SECONDS
	install_missing
	raise_nofile
	log "building (make examples bench-bins; make all for the chain)"
	make --no-print-directory -s examples bench-bins >"$RUN/make.log" 2>&1 ||
		{ cat "$RUN/make.log"; echo "run.sh: build failed" >&2; exit 1; }
	[ -f "$CERTS/root.crt" ] || make --no-print-directory -s certs >>"$RUN/make.log" 2>&1
	if [[ " $SETUPS " == *" chain "* ]]; then
		make --no-print-directory -s all >>"$RUN/make.log" 2>&1 ||
			log "make all failed: the chain setup will be skipped"
	fi
	if [[ " $SETUPS " == *" chain-base "* ]]; then
		log "building $BASE_REF for chain-base"
		build_base || { log "building $BASE_REF failed: chain-base will be skipped"; SETUPS=${SETUPS/chain-base/}; }
	fi
	log "benchmarks $([ $QUICK = 1 ] && echo quick || echo full), $REPS repetitions, results in $CSV"
	start_internal || exit 1
	for s in $SETUPS; do
		unset "SETUP_ADDR[$s]" "SETUP_ADDR2[$s]" "SETUP_REDIS[$s]"
		if setup_"$s" >"$RUN/setup-$s.txt" 2>&1; then
			ACTIVE+="$s "
		else
			log "skipping $s: $(tr '\n' ' ' <"$RUN/setup-$s.txt" | head -c 600)"
		fi
	done
	# Each setup must serve one request before it is measured.
	for s in $ACTIVE; do
		if ! "$LOADGEN" "${LG_TLS[@]}" --connect "${SETUP_ADDR[$s]}" --requests 1 \
			--duration 5 >"$RUN/check-$s.txt" 2>&1 || { [ -n "${SETUP_ADDR2[$s]:-}" ] &&
			! "$LOADGEN" "${LG_TLS[@]}" --connect "${SETUP_ADDR2[$s]}" --requests 1 \
			--duration 5 >>"$RUN/check-$s.txt" 2>&1; }; then
			log "skipping $s: a test request failed: $(tr '\n' ' ' <"$RUN/check-$s.txt" | head -c 300)"
			ACTIVE=${ACTIVE/$s /}
		fi
	done
	[[ " $ACTIVE " == *" direct "* ]] || { log "direct setup failed: nothing to compare"; exit 1; }
	log "setups: $ACTIVE"
	local c kind st
	for sc in $SCENARIOS; do
		case $sc in
		rate)
			for c in $RATE_CONC; do
				log "rate: one request per new TLS connection, concurrency $c, $RATE_SECS s"
				each_rep sc_rate "$c"
			done ;;
		latency)
			log "latency: concurrency 1, $LAT_REQS requests"
			each_rep sc_latency ;;
		bulk)
			for kind in down up; do
				for st in 1 16; do
					log "bulk: $kind, $st stream(s), $([ $kind = down ] && echo $((BULK_DOWN / MiB)) || echo $((BULK_UP / MiB))) MiB in total"
					each_rep sc_bulk "$kind" "$st"
				done
			done ;;
		handshake)
			log "handshake: TCP + TLS handshake only, concurrency 25, $HS_SECS s"
			each_rep sc_handshake ;;
		stress)
			log "stress: seq 1 $STRESS_N | parallel -j 25 curl ..."
			each_rep sc_stress ;;
		memory) ;;
		profile)
			log "profile: perf record -g and perf trace -s on the chain, rate c25"
			sc_profile ;;
		*) log "unknown scenario $sc" ;;
		esac
	done
	if [[ " $SCENARIOS " == *" memory "* ]]; then
		log "memory: $MEM_CONNS idle TLS connections held, fresh processes each time"
		EACH_REPS=$MEM_REPS each_rep sc_memory
	fi
	stop_all
	log "done in $((SECONDS - t_start)) s; results: $CSV"
	summarize | tee "$OUTDIR/$DATE.txt"
	chart
}

main
