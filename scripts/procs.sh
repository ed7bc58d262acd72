# procs.sh - sourced by scripts/demo.sh and scripts/demo-cluster.sh.
# stop_pids PID...: SIGTERM to each, up to 5 s for all to exit, then SIGKILL
# to what is left; waits for them.
stop_pids() {
	[ $# -eq 0 ] && return
	kill -TERM "$@" 2>/dev/null
	for _ in $(seq 50); do
		alive=0
		for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive -eq 0 ] && break
		sleep 0.1
	done
	kill -KILL "$@" 2>/dev/null
	wait "$@" 2>/dev/null
}
