#!/usr/bin/env bash
# pool_restart.sh - restarts under load (issue #16, parts 5 and 6) with the
# seed's five processes on free loopback ports and pool_size 8: while 400
# requests of the seed's curl run 25 at a time, in three separate runs, the
# private proxy gets SIGTERM and is started again, the public proxy's Hyper
# server is restarted, the private proxy's Hyper server is restarted.  Each
# run must answer 400 of 400 with 200 {"message": "success"}: a client that
# finds the pool empty waits parked while its incomingConnection is tried
# again (502/504), and a pooled connection that arrives meanwhile takes it.
# A public proxy stopped with clients parked serves them before it exits.
# Then the same three runs with pool_size 0, for comparison only (numbers
# printed, not checked; POOL_RESTART_COMPARE=0 skips them).
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/five.sh
five_setup
POOL=8
REQUESTS=${POOL_RESTART_REQUESTS:-400}
PARALLEL=25
set_pool() { # SIZE
	cat >"$S/private-proxy-1/900_pool.yml" <<EOF
private:
  pool_size: $1
EOF
}
set_pool $POOL
five_start_all

pub_call() { timeout 20 env HYPER_SETTINGS=$S/public-proxy-hyper-1 "$BIN/hyper" call "$@"; }
now() { date +%s.%N; }
count_in_log() { grep -c -- "$1" "$E2E_RUN/public.log"; }   # lines of the public proxy's log
since() { awk "BEGIN { printf \"%.2f\", $(now) - $1 }"; }

# The load: REQUESTS of the seed's curl, PARALLEL at a time, each bounded by
# --max-time, the whole by timeout; one line per request, written at once
# (the bodies have no newline, so curl's own writes would interleave): the
# body, a space, the status code.
load_start() { # OUT
	seq 1 "$REQUESTS" | CA=$CA RESOLVE=$HOST:$TLS_PORT:127.0.0.1 U=$URL/jsonrpc \
		timeout 180 xargs -P "$PARALLEL" -n 1 sh -c \
		'r=$(curl -sS --max-time 25 --cacert "$CA" --resolve "$RESOLVE" -w " %{http_code}" "$U"); echo "$r"' \
		>"$1" 2>"$1.err" &
	LOAD_PID=$!
	E2E_PID[load]=$LOAD_PID         # stopped with the rest if the script ends early
}

# Stop NAME (SIGTERM, waited for: bounded by stop_bg), start it again and
# wait for its ports.
restart() { # NAME
	stop_bg "$1" TERM
	five_start "$1"
	for p in $(five_port_of "$1"); do
		wait_port 127.0.0.1 "$p" 10 || return 1
	done
}

# One run: the load, and NAME restarted 0.3 s into it.  Prints the numbers;
# true when every request was answered 200 {"message": "success"}.
under_load() { # NAME LABEL
	local out=$E2E_RUN/load.$2 t0 tk tr ok running p0 d0 r0
	p0=$(count_in_log 'via=pool '); d0=$(count_in_log 'via=dial '); r0=$(count_in_log 'trying again')
	load_start "$out"
	t0=$(now)
	sleep 0.3
	kill -0 "$LOAD_PID" 2>/dev/null && running=yes || running=no
	tk=$(since "$t0")
	restart "$1" || { echo "$1 did not come back"; stop_bg load; return 1; }
	tr=$(since "$t0")
	wait "$LOAD_PID"
	unset "E2E_PID[load]"
	ok=$(grep -c '^{"message": "success"} 200$' "$out")
	echo "$2: $ok of $REQUESTS answered 200 {\"message\": \"success\"} in $(since "$t0") s;" \
		"$1 stopped at ${tk} s (load still running: $running), back at ${tr} s;" \
		"via=pool $(($(count_in_log 'via=pool ') - p0)) via=dial $(($(count_in_log 'via=dial ') - d0))" \
		"retry log lines $(($(count_in_log 'trying again') - r0)) (at most about one a second);" \
		"curl errors: $(sort "$out.err" | uniq -c | sort -rn | head -n 3 | tr -s ' \n' ' ')" |
		tee "$E2E_RUN/summary.$2"
	[ "$running" = yes ] && [ "$ok" -eq "$REQUESTS" ]
}
summary() { echo "# $(cat "$E2E_RUN/summary.$1" 2>/dev/null)"; }

check "the seed's request is served within 5 s of the last start" serves_within 5
check "the pool fills to pool_size ($POOL) idle connections" wait_idle $POOL 10

# --- the private proxy: SIGTERM, then a new one --------------------------------
check "$REQUESTS requests at $PARALLEL in parallel while the private proxy restarts: all answered" \
	under_load private private
summary private
stopped_in_order() {
	local log=$E2E_RUN/private.log.1
	# the idle pooled connections go first; then the stop may take its relays
	grep -E 'stopping|pooled connection\(s\) closed|stopped' "$log"
	grep -q 'pooled connection(s) closed' "$log" && grep -q 'stopped' "$log"
}
check "the stopped private proxy closed its pooled connections first and exited" stopped_in_order
check "the new private proxy refills its pool to $POOL" wait_idle $POOL 10
waited_not_failed() {
	# clients that met the gap were parked and tried again, none refused
	grep -c 'trying again while the client waits' "$E2E_RUN/public.log"
	! grep -q 'end=incomingConnection failed' "$E2E_RUN/public.log" &&
		! grep -q 'end=not claimed' "$E2E_RUN/public.log"
}
check "no client of the public proxy ended unjoined (incomingConnection failures were retried)" \
	waited_not_failed

# --- the public proxy's Hyper server --------------------------------------------
check "$REQUESTS requests while the public proxy's Hyper server restarts: all answered" \
	under_load public-hyper public-hyper
summary public-hyper
check "the pool is back to $POOL" wait_idle $POOL 35

# --- the private proxy's Hyper server -------------------------------------------
check "$REQUESTS requests while the private proxy's Hyper server restarts: all answered" \
	under_load private-hyper private-hyper
summary private-hyper
check "the pool is back to $POOL" wait_idle $POOL 35
check "no client of the public proxy ended unjoined in the three runs" \
	bash -c "! grep -E 'end=(incomingConnection failed|not claimed|shutdown)' '$E2E_RUN/public.log'"

# --- the public proxy stops while clients wait --------------------------------------
# The private proxy is frozen (SIGSTOP) while 20 clients arrive: 8 take the
# pooled connections (their frames wait in the sockets), 12 are parked
# behind incomingConnection.  Then SIGTERM to the public proxy: it stops
# accepting, but keeps its parked clients and its data listener; after
# SIGCONT every one of the 20 is served, and the public proxy exits 0.
public_stop_keeps_parked() {
	local priv=${E2E_PID[private]} ok=0 i pids=() rc
	wait_idle $POOL 10 || return 1
	kill -STOP "$priv"
	for i in $(seq 1 20); do
		c --max-time 15 "$URL/jsonrpc" >"$E2E_RUN/ps.$i" 2>&1 &
		pids+=($!)
	done
	sleep 1.5
	kill -TERM "${E2E_PID[public]}"
	sleep 0.5
	if (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; then
		echo "the TLS listener still accepts"; kill -CONT "$priv"; return 1
	fi
	kill -CONT "$priv"
	wait "${pids[@]}"
	for i in $(seq 1 20); do
		[ "$(cat "$E2E_RUN/ps.$i")" = '{"message": "success"}' ] && ok=$((ok + 1))
	done
	# it exits once the pairs are done (bounded: shutdown_timeout 10 s)
	for i in $(seq 1 150); do
		kill -0 "${E2E_PID[public]}" 2>/dev/null || break
		sleep 0.1
	done
	stop_bg public 0; rc=$?		# signal 0: only reap (KILL after 5 s more)
	grep -E 'stopping|parked client' "$E2E_RUN/public.log"
	echo "$ok of 20 served; the public proxy exited $rc" | tee "$E2E_RUN/summary.pubstop"
	[ "$ok" -eq 20 ] && [ "$rc" = 0 ] && grep -q 'parked client(s)' "$E2E_RUN/public.log"
}
check "SIGTERM to the public proxy with 12 clients parked: all 20 served, then exit 0" \
	public_stop_keeps_parked
summary pubstop
five_start public
check "a new public proxy serves within 5 s" serves_within 5
check "and gets its pool refilled" wait_idle $POOL 15

# --- the same with pool_size 0, for comparison (not checked) ----------------------
if [ "${POOL_RESTART_COMPARE:-1}" != 0 ]; then
	set_pool 0
	restart private >/dev/null
	serves_within 10 >/dev/null
	for n in private public-hyper private-hyper; do
		under_load "$n" "dial-$n" >/dev/null
		echo "# pool_size 0 (comparison): $(cat "$E2E_RUN/summary.dial-$n")"
		serves_within 10 >/dev/null
	done
fi

for n in $FIVE_NAMES; do
	check "$n exits 0 on SIGTERM" stop_bg "$n" TERM
done
finish
