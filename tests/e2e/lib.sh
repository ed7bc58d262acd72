# lib.sh - helpers for the end-to-end scripts in tests/e2e (source it, bash only).
#
#   E2E_RUN               temporary run directory (logs, certificates, scratch files);
#                         removed on exit when every check passed, kept otherwise
#   free_port             print a TCP port the kernel just reported free on 127.0.0.1
#   wait_port H P T       wait up to T seconds until H:P accepts connections
#   start_bg NAME CMD...  run CMD in the background, output in $E2E_RUN/NAME.log (an
#                         earlier NAME.log is kept as NAME.log.N);
#                         its pid is in E2E_PID[NAME] (and E2E_LAST_PID)
#   stop_bg NAME [SIG]    send SIG (TERM), KILL after 5 s, reap; returns its exit code
#   stop_all              stop_bg for everything still running (runs on EXIT)
#   check NAME CMD...     run CMD, print "ok - NAME" or "not ok - NAME" (+ its output)
#   finish                print "N passed, N failed" as the last line, exit 1 on failures
#
# Every wait is bounded; nothing started here outlives the script.

E2E_RUN=$(mktemp -d "${TMPDIR:-/tmp}/e2e.XXXXXX")
E2E_PASS=0
E2E_FAIL=0
E2E_LAST_PID=
E2E_FINISHED=
declare -A E2E_PID=()

free_port() {
	python3 - <<-'EOF'
	import socket
	s = socket.socket()
	s.bind(("127.0.0.1", 0))
	print(s.getsockname()[1])
	s.close()
	EOF
}

wait_port() { # HOST PORT TIMEOUT_SECONDS
	local host=$1 port=$2 deadline=$((SECONDS + ${3:-10}))
	while [ $SECONDS -le $deadline ]; do
		# A subshell opens and closes the connection; no data is sent.
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "# $host:$port did not open within ${3:-10} s" >&2
	return 1
}

start_bg() { # NAME CMD...
	local name=$1 log n=1; shift
	log=$E2E_RUN/$name.log
	# A restarted process keeps its predecessor's log as NAME.log.N.
	if [ -e "$log" ]; then
		while [ -e "$log.$n" ]; do n=$((n + 1)); done
		mv "$log" "$log.$n"
	fi
	"$@" >"$log" 2>&1 &
	E2E_LAST_PID=$!
	E2E_PID[$name]=$E2E_LAST_PID
}

stop_bg() { # NAME [SIGNAL] -> exit code of the process
	local name=$1 sig=${2:-TERM} pid=${E2E_PID[$1]:-} i rc
	[ -n "$pid" ] || return 127
	kill -"$sig" "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "# $name (pid $pid) ignored SIG$sig for 5 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	rc=$?
	unset "E2E_PID[$name]"
	return $rc
}

stop_all() {
	local name
	for name in "${!E2E_PID[@]}"; do
		stop_bg "$name"
	done
}

check() { # NAME CMD...
	local name=$1 out; shift
	out=$E2E_RUN/check.$((E2E_PASS + E2E_FAIL)).out
	if "$@" >"$out" 2>&1; then
		E2E_PASS=$((E2E_PASS + 1))
		echo "ok - $name"
	else
		E2E_FAIL=$((E2E_FAIL + 1))
		echo "not ok - $name"
		tail -n 15 "$out" | sed 's/^/#   /'
	fi
}

finish() {
	stop_all
	[ "$E2E_FAIL" -eq 0 ] || echo "# logs kept in $E2E_RUN"
	echo "$E2E_PASS passed, $E2E_FAIL failed"
	E2E_FINISHED=1
	[ "$E2E_FAIL" -eq 0 ] || exit 1
	exit 0
}

e2e_cleanup() {
	local rc=$?
	stop_all
	if [ "$rc" -eq 0 ] && [ "$E2E_FAIL" -eq 0 ]; then
		rm -rf "$E2E_RUN"
	elif [ -z "${E2E_FINISHED:-}" ]; then
		echo "# stopped before finish (exit $rc); logs kept in $E2E_RUN" >&2
	fi
	return $rc
}
trap e2e_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The warm pool (issue #16), for scripts that define pub_call (a `hyper
# call` through the public proxy's Hyper server).
# One field of private-proxy-1.ga's pool at the public proxy.
pool_field() { # FIELD
	pub_call public-proxy-1.ga.getConnectionPools '{}' 2>/dev/null |
		jq -r ".[] | select(.operator == \"private-proxy-1.ga\") | .$1"
}
# Wait until that pool has at least N idle connections, for up to SECONDS.
wait_idle() { # N SECONDS
	local deadline=$((SECONDS + $2)) got
	while [ $SECONDS -lt "$deadline" ]; do
		got=$(pool_field idle)
		[ "${got:-0}" -ge "$1" ] && { echo "idle $got"; return 0; }
		sleep 0.2
	done
	echo "idle ${got:-none} after $2 s"
	return 1
}

# wait_for SECONDS CMD...: CMD succeeds within SECONDS (tried every 0.1 s);
# only the last try's output is shown.
wait_for() {
	local deadline=$((SECONDS + $1)) out; shift
	while :; do
		if out=$("$@" 2>&1); then
			[ -n "$out" ] && echo "$out"
			return 0
		fi
		[ $SECONDS -ge "$deadline" ] && break
		sleep 0.1
	done
	echo "$out"
	return 1
}
