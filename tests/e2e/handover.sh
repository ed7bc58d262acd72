#!/usr/bin/env bash
# handover.sh - a public hand-over that loses nothing, on one machine (issue
# #12, part 5).  The seed's five processes run inside a network namespace
# made here (only its loopback), so that net.ipv4.tcp_migrate_req (a
# per-namespace sysctl) is set without touching the host.  The public proxy
# has reuse_port: true.  While 400 requests of the seed's curl run 25 at a
# time, a second `proxy run public` with the same settings starts, and once
# it is ready (and 1 s of both serving) the first one gets SIGTERM: 400 of 400 must be answered 200
# {"message": "success"}.  Done with pool_size 8 and with pool_size 0, each
# time handing over to a fresh instance.  Also: the old process exits 0
# after its connections finish, a slow 24 MiB download running through it
# at the hand-over arrives intact, the new instance gets the pool (its idle
# count back to 8) and the keeper recovers from the old instance's tickets.
# Then, for the record (printed, not checked): the same hand-over with
# tcp_migrate_req 0.  Without the right to create namespaces: one
# "ok - skipped: reason" check.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh

REQUESTS=${HANDOVER_REQUESTS:-400}
PARALLEL=25
NS=hp-ho-$$
NS_MADE=

ho_cleanup() {
	local rc=$?
	stop_all
	[ -n "$NS_MADE" ] && ip netns delete "$NS" 2>/dev/null
	(exit $rc)
	e2e_cleanup
}
trap ho_cleanup EXIT

skip() {
	echo "ok - skipped: $1"
	E2E_PASS=$((E2E_PASS + 1))
	finish
}
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
ip netns add "$NS" 2>"$E2E_RUN/netns.err" ||
	skip "cannot create a network namespace: $(head -n 1 "$E2E_RUN/netns.err")"
NS_MADE=1
ip -n "$NS" link set lo up || skip "cannot bring up lo in the namespace"
nsx() { ip netns exec "$NS" "$@"; }
[ -e /proc/sys/net/ipv4/tcp_migrate_req ] ||
	skip "this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14)"
host_migrate=$(cat /proc/sys/net/ipv4/tcp_migrate_req)
set_migrate() { nsx sysctl -qw net.ipv4.tcp_migrate_req="$1"; }
set_migrate 1 || skip "cannot set net.ipv4.tcp_migrate_req in the namespace"

five_setup
cat >"$S/public-proxy-1/900_handover.yml" <<EOF
public:
  reuse_port: true
EOF
set_pool() { # SIZE
	cat >"$S/private-proxy-1/900_pool.yml" <<EOF
private:
  pool_size: $1
EOF
}
set_pool 8
for n in $FIVE_NAMES; do FIVE_PRE[$n]="ip netns exec $NS"; done
c() { nsx curl -sS --max-time 20 --cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$@"; }

ns_wait_port() { # PORT
	local i
	for ((i = 0; i < 100; i++)); do
		nsx bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "# 127.0.0.1:$1 in $NS did not open" >&2
	return 1
}
pub_call() { timeout 20 ip netns exec "$NS" env HYPER_SETTINGS=$S/public-proxy-hyper-1 "$BIN/hyper" call "$@"; }
now() { date +%s.%N; }
since() { awk "BEGIN { printf \"%.2f\", $(now) - $1 }"; }

# The public proxy instances are public, public.2, public.3 ...; CUR is the
# one serving now.  Each logs to its own file.
GEN=1
CUR=public
start_public() { # NAME
	start_bg "$1" ip netns exec "$NS" env PROXY_SETTINGS=$S/public-proxy-1 "$BIN/proxy" run public
}
wait_log() { # NAME REGEX SECONDS
	local deadline=$((SECONDS + $3))
	while [ $SECONDS -lt "$deadline" ]; do
		grep -qE "$2" "$E2E_RUN/$1.log" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "# no /$2/ in $1.log within $3 s" >&2
	return 1
}

for n in private public-hyper private-hyper internal; do five_start "$n"; done
start_public public
for p in $TLS_PORT $DATA_PORT $PUBLIC_RPC_PORT $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT \
	$PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT $PRIVATE_RPC_PORT $INTERNAL_PORT; do
	ns_wait_port "$p" || true
done

check "net.ipv4.tcp_migrate_req is 1 in the test's namespace, the host's unchanged ($host_migrate)" \
	bash -c "[ \"\$(ip netns exec $NS cat /proc/sys/net/ipv4/tcp_migrate_req)\" = 1 ] &&
		[ \"\$(cat /proc/sys/net/ipv4/tcp_migrate_req)\" = $host_migrate ]"
check "the seed's request is served within 10 s of the start" serves_within 10
check "the first instance holds the hand-over name" wait_log public 'hand-over: holding @' 2

# The load: REQUESTS of the seed's curl, PARALLEL at a time, each bounded by
# --max-time, the whole by timeout; one line per request: body, status.
load_start() { # OUT
	seq 1 "$REQUESTS" | CA=$CA RESOLVE=$HOST:$TLS_PORT:127.0.0.1 U=$URL/jsonrpc \
		timeout 180 ip netns exec "$NS" xargs -P "$PARALLEL" -n 1 sh -c \
		'r=$(curl -sS --max-time 25 --cacert "$CA" --resolve "$RESOLVE" -w " %{http_code}" "$U"); echo "$r"' \
		>"$1" 2>"$1.err" &
	LOAD_PID=$!
}

# A slow download through the instance that serves now, started before the
# hand-over so that it runs through the old one: 24 MiB at 6 MiB/s.
BIG=$((24 << 20))
slow_start() { # OUT
	nsx curl -sS --max-time 60 --limit-rate 6M --cacert "$CA" \
		--resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/bytes/$BIG" 2>"$1.err" |
		sha256sum | cut -d' ' -f1 >"$1" &
	SLOW_PID=$!
}
BIG_SUM=$(python3 -c "import sys; sys.stdout.buffer.write((bytes(range(251))*($BIG//251+1))[:$BIG])" |
	sha256sum | cut -d' ' -f1)

# One hand-over under load: the slow download, the load, a new instance 0.3 s
# into it, SIGTERM to the old one as soon as the new one says it is ready.
# Prints the numbers; true when every request got 200 {"message": "success"}.
handover_under_load() { # LABEL
	local out=$E2E_RUN/load.$1 old=$CUR new t0 tr tk ok running
	GEN=$((GEN + 1))
	new=public.$GEN
	slow_start "$E2E_RUN/slow.$1"
	sleep 0.5
	load_start "$out"
	t0=$(now)
	sleep 0.3
	start_public "$new"
	wait_log "$new" 'public proxy .* ready' "${HANDOVER_READY_WAIT:-30}" || { wait "$LOAD_PID"; return 1; }
	tr=$(since "$t0")
	# both instances serve for a moment: dial-backs and pooled connections
	# reach either one, and must be passed over the link
	sleep "${HANDOVER_OVERLAP:-1}"
	kill -0 "$LOAD_PID" 2>/dev/null && running=yes || running=no
	OLD_PID=${E2E_PID[$old]}
	kill -TERM "$OLD_PID"
	tk=$(since "$t0")
	CUR=$new
	wait "$LOAD_PID"
	ok=$(grep -c '^{"message": "success"} 200$' "$out")
	echo "$1: $ok of $REQUESTS answered 200 {\"message\": \"success\"} in $(since "$t0") s;" \
		"new instance ready at ${tr} s, old one got SIGTERM at ${tk} s (load still running:" \
		"$running); curl errors: $(sort "$out.err" | uniq -c | sort -rn | head -n 3 | tr -s ' \n' ' ')" |
		tee "$E2E_RUN/summary.$1"
	OLD=$old
	[ "$running" = yes ] && [ "$ok" -eq "$REQUESTS" ]
}
summary() { echo "# $(cat "$E2E_RUN/summary.$1" 2>/dev/null)"; }

# The old instance: exits by itself (it got SIGTERM already), with 0.
old_exits_0() { # SECONDS
	local pid=$OLD_PID i rc
	for ((i = 0; i < $1 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "still running after $1 s"
		return 1
	fi
	wait "$pid"
	rc=$?
	unset "E2E_PID[$OLD]"
	grep -E 'stopping|hand-over|stopped' "$E2E_RUN/$OLD.log" | tail -n 8
	echo "exit $rc"
	[ "$rc" -eq 0 ]
}
slow_intact() { # LABEL
	wait "$SLOW_PID"
	echo "got $(cat "$E2E_RUN/slow.$1") want $BIG_SUM; $(cat "$E2E_RUN/slow.$1.err")"
	[ "$(cat "$E2E_RUN/slow.$1")" = "$BIG_SUM" ]
}
# The slow download was relayed by the old instance, and ended there.
slow_via_old() {
	grep -E 'bytes_(in|out)=[0-9]{8}' "$E2E_RUN/$OLD.log" | tail -n 1
	grep -qE 'bytes_(in|out)=[0-9]{8}' "$E2E_RUN/$OLD.log"
}
no_client_lost() { # NAME...
	local n
	for n in "$@"; do
		! grep -E 'end=(incomingConnection failed|not claimed|shutdown)' "$E2E_RUN/$n.log" ||
			return 1
	done
}

# --- pool_size 8 -----------------------------------------------------------------
check "the pool fills to 8 idle connections" wait_idle 8 15
check "hand-over with pool_size 8: $REQUESTS requests at $PARALLEL in parallel, all answered" \
	handover_under_load pool
summary pool
check "the new instance linked to the old one" \
	wait_log "$CUR" 'hand-over: linked to the running instance' 1
check "the old instance closed its JSON-RPC server at SIGTERM" \
	wait_log "$OLD" 'JSON-RPC server closed' 1
check "the old instance exits 0 once its connections are done" old_exits_0 20
check "the slow 24 MiB download through the old instance arrives intact" slow_intact pool
check "... and it was relayed by the old instance" slow_via_old
check "no client of either instance ended unjoined" no_client_lost "$OLD" "$CUR"
passed_on() {
	grep -h 'hand-over: link to pid .* closed\|data connection(s) passed' "$E2E_RUN/$OLD.log" \
		"$E2E_RUN/$CUR.log"
	grep -q 'hand-over: link to pid .* closed' "$E2E_RUN/$CUR.log"
}
check "the new instance saw the link close when the old one exited" passed_on
sed -n 's/^/# /p' "$E2E_RUN/check.$((E2E_PASS + E2E_FAIL - 1)).out" | head -n 3
check "the new instance takes over the hand-over name" wait_log "$CUR" 'hand-over: holding @' 3
check "the keeper refills the pool at the new instance (8 idle within 15 s)" wait_idle 8 15
check "the seed's request is served by the new instance" serves_within 5

# --- pool_size 0 -----------------------------------------------------------------
set_pool 0
stop_bg private TERM
five_start private
ns_wait_port "$PRIVATE_RPC_PORT"
serves_within 10 >/dev/null
check "hand-over with pool_size 0: $REQUESTS requests at $PARALLEL in parallel, all answered" \
	handover_under_load dial
summary dial
check "the old instance exits 0 once its connections are done" old_exits_0 20
check "the slow 24 MiB download through the old instance arrives intact" slow_intact dial
check "no client of either instance ended unjoined" no_client_lost "$OLD" "$CUR"
dial_passed() {
	# with the pool off, dial-backs reach either instance: some were passed on
	grep -h 'data connection(s) passed' "$E2E_RUN/$OLD.log" "$E2E_RUN/$CUR.log"
	grep -qE 'passed on, [0-9]+ taken|[1-9][0-9]* data connection\(s\) passed' "$E2E_RUN/$OLD.log"
}
check "dial-backs that reached the wrong instance were passed over the link" dial_passed

# --- tcp_migrate_req 0, for the record (not checked) -------------------------------
if [ "${HANDOVER_COMPARE:-1}" != 0 ]; then
	set_migrate 0
	sleep 1
	handover_under_load nomigrate >/dev/null
	old_exits_0 20 >/dev/null
	wait "$SLOW_PID" 2>/dev/null
	echo "# tcp_migrate_req 0 (for comparison): $(cat "$E2E_RUN/summary.nomigrate")"
	set_migrate 1
fi

check "the current instance exits 0 on SIGTERM" stop_bg "$CUR" TERM
for n in private public-hyper private-hyper internal; do
	check "$n exits 0 on SIGTERM" stop_bg "$n" TERM
done
finish
