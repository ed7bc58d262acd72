#!/usr/bin/env bash
# valgrind/chain.sh - `make check-valgrind`: the five processes of the chain,
# every one under valgrind memcheck, driven through a reduced chain.sh (the
# seed's request, a POST, 20 requests, 8 MiB each way), then stopped with
# SIGTERM.  Passes when every process exits 0 (valgrind exits 99 on any
# memory error or definitely lost block) and its log says so.
#
# The proxies run under valgrind too: valgrind 3.19 knows io_uring_setup,
# io_uring_enter and io_uring_register; it runs io_uring_enter with signals
# blocked, which loop.c works around (slices of 10 ms under valgrind only).
# VALGRIND_ONLY="public-hyper ..." restricts valgrind to some processes.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh

VG="valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=30 --fair-sched=yes"
only=${VALGRIND_ONLY:-$FIVE_NAMES}
five_setup
for n in $FIVE_NAMES; do
	case " $only " in
	*" $n "*) FIVE_PRE[$n]="$VG --log-file=$E2E_RUN/vg.$n.log" ;;
	esac
done
# The wrapper goes before env's command: env runs valgrind, valgrind the program.
five_start_vg() {
	local n=$1 pre=${FIVE_PRE[$1]:-}
	FIVE_PRE[$n]=""
	FIVE_WRAP=$pre five_start "$n"
	FIVE_PRE[$n]=$pre
}
for n in private public private-hyper public-hyper internal; do
	five_start_vg "$n"
done
for p in $TLS_PORT $DATA_PORT $PUBLIC_RPC_PORT $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT \
	$PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT $PRIVATE_RPC_PORT $INTERNAL_PORT; do
	wait_port 127.0.0.1 "$p" 120 || true
done
cv() { c --max-time 120 "$@"; }

check "the seed's request succeeds within 120 s (valgrind is slow)" serves_within 120
check "seed request body is exact" bash -c "[ \"\$(curl -sS --max-time 120 --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc)\" = '{\"message\": \"success\"}' ]"
check "POST of a JSON value is echoed" bash -c "[ \"\$(curl -sS --max-time 120 --cacert $CA --resolve $HOST:$TLS_PORT:127.0.0.1 $URL/jsonrpc --data '{\"a\": [1, 2]}' | tr -d ' ')\" = '{\"a\":[1,2]}' ]"
twenty() {
	local i ok=0
	for ((i = 0; i < 20; i++)); do
		[ "$(cv "$URL/jsonrpc" --data "$i")" = "$i" ] && ok=$((ok + 1))
	done
	echo "$ok of 20"
	[ "$ok" -eq 20 ]
}
check "20 requests in a row" twenty
N=$((8 << 20))
download8() {
	local got want
	got=$(cv "$URL/bytes/$N" | sha256sum | cut -d' ' -f1)
	want=$(python3 -c "import sys; sys.stdout.buffer.write((bytes(range(251))*($N//251+1))[:$N])" | sha256sum | cut -d' ' -f1)
	echo "got $got want $want"
	[ "$got" = "$want" ]
}
upload8() {
	local f=$E2E_RUN/up.bin want got
	head -c "$N" /dev/urandom >"$f"
	want=$(sha256sum "$f" | cut -d' ' -f1)
	got=$(cv "$URL/sha256" --data-binary "@$f" -H 'Content-Type: application/octet-stream')
	rm -f "$f"
	echo "want $want got $got"
	[[ "$got" == *"$want"* ]]
}
check "8 MiB download intact" download8
check "8 MiB upload intact" upload8

# SIGTERM: valgrind needs time to check the heap, so wait up to 60 s.
stop_vg() { # NAME
	local n=$1 pid=${E2E_PID[$1]} i rc
	kill -TERM "$pid"
	for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	stop_bg "$n"
	rc=$?
	echo "exit $rc"
	[ -f "$E2E_RUN/vg.$n.log" ] || { [ "$rc" -eq 0 ]; return; }
	grep -E 'definitely lost|ERROR SUMMARY|All heap blocks' "$E2E_RUN/vg.$n.log"
	grep -A 40 -E 'definitely lost in|Invalid|uninitialised|Syscall param' "$E2E_RUN/vg.$n.log" | head -80
	[ "$rc" -eq 0 ] && grep -q 'ERROR SUMMARY: 0 errors' "$E2E_RUN/vg.$n.log" &&
		! grep -E 'definitely lost: [1-9]' "$E2E_RUN/vg.$n.log"
}
for n in public private public-hyper private-hyper internal; do
	case " $only " in
	*" $n "*) what="under valgrind: exit 0 on SIGTERM, 0 errors, 0 bytes definitely lost" ;;
	*) what="(native) exits 0 on SIGTERM" ;;
	esac
	check "$n $what" stop_vg "$n"
done
[ "$E2E_FAIL" -eq 0 ] || { mkdir -p build; cp "$E2E_RUN"/vg.*.log build/ 2>/dev/null; echo "# valgrind logs copied to build/vg.*.log"; }
finish
