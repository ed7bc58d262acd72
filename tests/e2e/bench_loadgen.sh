#!/usr/bin/env bash
# e2e: bench/loadgen against bin/internal-server over real TLS (counts,
# checks, limits and /proc sampling of the load generator), and bench/hop
# (one relay hop of the proxies' relay engine) between the two.
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/lib.sh

make --no-print-directory -s examples bench-bins >/dev/null || { echo "build failed"; exit 1; }
scripts/make-certs.sh "$E2E_RUN/pki" >/dev/null || { echo "make-certs.sh failed"; exit 1; }
certs=$E2E_RUN/pki/certs
port=$(free_port)
lg=${LOADGEN:-build/rel/bench/loadgen}	# LOADGEN=build/asan/bench/loadgen to check it under ASan

start_bg server env IS_BIND_ADDRESS="127.0.0.1:$port" IS_THREADS=2 IS_LOG_LEVEL=error \
	IS_CERT_FILE="$certs/internal-server.crt" IS_KEY_FILE="$certs/internal-server.key" \
	bin/internal-server
server_pid=$E2E_LAST_PID
wait_port 127.0.0.1 "$port" 10

# One CSV line: requests,errors,aborted,seconds,rps,p50,p90,p99,max,mbps,bytes[,cpu,fds,hwm]...
lg_at() { # PORT TIMEOUT ARGS...
	local p=$1 t=$2; shift 2
	timeout "$t" "$lg" --connect "127.0.0.1:$p" --sni test.internal-server.local \
		--cacert "$certs/root.crt" --csv --quiet "$@"
}
L() { lg_at "$port" 30 "$@"; }
field() { cut -d, -f"$1" <<<"$2"; }

expect_eq() { # WANT GOT
	[ "$1" = "$2" ] && return 0
	printf 'want: %s\ngot:  %s\n' "$1" "$2"
	return 1
}

get_requests_all_succeed() {
	local out
	out=$(L --requests 40 --concurrency 5) || return 1
	expect_eq "40,0,0" "$(cut -d, -f1-3 <<<"$out")"
}
post_body_is_accepted() {
	local out
	out=$(L --post '{"n": 1}' --requests 10 --concurrency 2) || return 1
	expect_eq "10,0" "$(cut -d, -f1-2 <<<"$out")"
}
bytes_counts_every_body_byte() {
	local out
	out=$(L --bytes 1000003 --requests 3 --concurrency 3) || return 1
	expect_eq "3,0,3000009" "$(field 1,2,11 "$out")"
}
upload_answer_matches_the_digest_sent() {
	local out
	out=$(L --upload 3000001 --requests 2 --concurrency 2) || return 1
	expect_eq "2,0,6000002" "$(field 1,2,11 "$out")"
}
bad_status_is_an_error() {
	local out rc
	out=$(L --path /bytes/not-a-number --requests 3); rc=$?
	expect_eq "1 0,3" "$rc $(field 1,2 "$out")"
}
wrong_server_name_fails_verification() {
	local out rc
	out=$("$lg" --connect "127.0.0.1:$port" --sni other.example --cacert "$certs/root.crt" \
		--csv --quiet --requests 2); rc=$?
	expect_eq "1 0,2" "$rc $(field 1,2 "$out")"
}
handshake_only_sends_no_request() {
	local out
	out=$(L --handshake-only --requests 20 --concurrency 4) || return 1
	expect_eq "20,0,0" "$(field 1,2,11 "$out")"
}
resume_reuses_sessions() {
	local out human
	out=$(L --resume --requests 20 --concurrency 1 2>"$E2E_RUN/resume.txt") || return 1
	expect_eq "20,0" "$(field 1,2 "$out")" || return 1
	# The first handshake is a full one; the session is reused afterwards.
	human=$(cat "$E2E_RUN/resume.txt")
	grep -Eq ', 1[0-9] resumed' <<<"$human" || { echo "$human"; return 1; }
}
no_resume_by_default() {
	local out
	out=$(L --requests 5 --concurrency 1 2>&1 >/dev/null)
	! grep -q resumed <<<"$out" || { echo "$out"; return 1; }
	! "$lg" --connect "127.0.0.1:$port" --requests 1 --resume --csv 2>&1 >/dev/null |
		grep -Eq ', [1-9][0-9]* resumed'
}
duration_limits_an_unbounded_run() {
	local out t0=$SECONDS secs
	out=$(L --duration 1 --concurrency 4)
	secs=$(field 4 "$out")
	[ $((SECONDS - t0)) -le 3 ] || { echo "ran $((SECONDS - t0)) s"; return 1; }
	awk -v s="$secs" 'BEGIN { exit !(s > 0.5 && s < 1.5) }' || { echo "seconds: $secs"; return 1; }
	[ "$(field 1 "$out")" -gt 0 ] || { echo "$out"; return 1; }
}
hold_counts_server_fds_per_connection() {
	local out
	out=$(L --hold 0.2 --requests 30 --concurrency 10 --pids "$server_pid") || return 1
	expect_eq "30,0,1.000" "$(field 1,2,13 "$out")"
	[ "$(field 14 "$out")" -gt 0 ] || { echo "VmHWM: $out"; return 1; }
}
cpu_of_a_live_pid_is_sampled_and_a_dead_one_is_minus_one() {
	local out
	out=$(L --requests 20 --pids "$server_pid,999999999") || return 1
	awk -F, '{ exit !($12 >= 0 && $15 == -1) }' <<<"$out" || { echo "$out"; return 1; }
}
threads_and_pipes_of_a_pid_are_reported() {
	local out
	# One pid: cpu,fds,hwm at 12-14, then threads,iou_wrk,pipes,pipe_kb at 15-18.
	out=$(L --requests 20 --concurrency 4 --pids "$server_pid") || return 1
	awk -F, -v want="$(ls /proc/"$server_pid"/task | wc -l)" \
		'{ exit !(NF == 18 && $15 == want && $16 == 0 && $17 >= 0 && $18 == $17 * 64) }' \
		<<<"$out" || { echo "$out (threads now: $(ls /proc/"$server_pid"/task | wc -l))"; return 1; }
}
pipes_are_counted_once_with_their_size() {
	local out pid i
	# A process holding one 1 MiB pipe (both ends) and one default pipe
	# and nothing else (no inherited descriptor, stdio on /dev/null).
	# It says when both pipes are made (a file), so that a slow start under
	# load is not sampled half-way.
	rm -f "$E2E_RUN/pipes.ready"
	python3 -c 'import os, sys, fcntl, time
os.closerange(3, 4096)
r, w = os.pipe(); fcntl.fcntl(w, 1031, 1 << 20)
r2, w2 = os.pipe(); open(sys.argv[1], "w").close(); time.sleep(10)' "$E2E_RUN/pipes.ready" \
		</dev/null >/dev/null 2>&1 &
	pid=$!
	for i in $(seq 100); do [ -e "$E2E_RUN/pipes.ready" ] && break; sleep 0.1; done
	[ -e "$E2E_RUN/pipes.ready" ] || { kill "$pid"; echo "the pipe holder did not start"; return 1; }
	out=$(L --requests 1 --pids "$pid"); kill "$pid"; wait "$pid" 2>/dev/null
	expect_eq "2,1088" "$(field 17,18 "$out")"
}
refused_connections_are_errors() {
	local dead out rc
	dead=$(free_port)
	out=$("$lg" --connect "127.0.0.1:$dead" --csv --quiet --requests 5 --duration 5); rc=$?
	expect_eq "1 0,5" "$rc $(field 1,2 "$out")"
}
usage_errors_exit_2() {
	"$lg" --requests 5 >/dev/null 2>&1; [ $? -eq 2 ] || return 1
	"$lg" --connect 127.0.0.1:1 --bytes 5 --post x >/dev/null 2>&1; [ $? -eq 2 ] || return 1
	"$lg" --connect 127.0.0.1:1 --concurrency 0 >/dev/null 2>&1; [ $? -eq 2 ] || return 1
	"$lg" --connect 127.0.0.1:1 --hold 1 >/dev/null 2>&1; [ $? -eq 2 ]
}

# bench/hop between loadgen and the server: every byte must arrive intact,
# short flows (COPY) and long ones (spliced after 256 KiB) alike.
hop=build/rel/bench/hop
hop_port=$(free_port)
start_bg hop "$hop" --listen "127.0.0.1:$hop_port" --connect "127.0.0.1:$port"
wait_port 127.0.0.1 "$hop_port" 10
H() { lg_at "$hop_port" 60 "$@"; }
hop_relays_gets_downloads_and_uploads_intact() {
	local out
	out=$(H --requests 40 --concurrency 8) || return 1
	expect_eq "40,0,0" "$(cut -d, -f1-3 <<<"$out")" || return 1
	out=$(H --bytes 3000017 --requests 4 --concurrency 4) || return 1
	expect_eq "4,0,12000068" "$(field 1,2,11 "$out")" || return 1
	out=$(H --upload 3000001 --requests 2 --concurrency 2) || return 1
	expect_eq "2,0,6000002" "$(field 1,2,11 "$out")"
}
hop_holds_no_connection_once_pairs_ended() {
	# Only the listening socket is left once every pair has ended (the last
	# ones may still be closing for a moment after loadgen returned).
	local n i
	for ((i = 0; i < 20; i++)); do
		n=$(ls -l /proc/"${E2E_PID[hop]}"/fd 2>/dev/null | grep -c 'socket:')
		[ "$n" -le 1 ] && return 0
		sleep 0.1
	done
	echo "hop holds $n sockets after its pairs ended"
	return 1
}
hop_with_a_dead_upstream_fails_requests_and_stays_up() {
	local dead hp out rc
	dead=$(free_port); hp=$(free_port)
	start_bg hopdead "$hop" --listen "127.0.0.1:$hp" --connect "127.0.0.1:$dead"
	wait_port 127.0.0.1 "$hp" 10
	out=$(timeout 30 "$lg" --connect "127.0.0.1:$hp" --csv --quiet --requests 5 --duration 10); rc=$?
	expect_eq "1 0,5" "$rc $(field 1,2 "$out")" || return 1
	kill -0 "${E2E_PID[hopdead]}" || { echo "hop died"; return 1; }
	stop_bg hopdead
}
hop_usage_errors_exit_2_and_sigterm_exits_0() {
	"$hop" >/dev/null 2>&1; [ $? -eq 2 ] || return 1
	"$hop" --listen 127.0.0.1:1 >/dev/null 2>&1; [ $? -eq 2 ] || return 1
	"$hop" --listen 127.0.0.1:1 --connect 127.0.0.1:2 extra >/dev/null 2>&1; [ $? -eq 2 ] || return 1
	stop_bg hop
}

check "GET requests all succeed" get_requests_all_succeed
check "POST body is accepted" post_body_is_accepted
check "--bytes counts every body byte" bytes_counts_every_body_byte
check "--upload answer matches the digest sent" upload_answer_matches_the_digest_sent
check "a non-200 status is an error" bad_status_is_an_error
check "a wrong server name fails verification" wrong_server_name_fails_verification
check "--handshake-only sends no request" handshake_only_sends_no_request
check "--resume reuses sessions" resume_reuses_sessions
check "no resumption by default" no_resume_by_default
check "--duration limits an unbounded run" duration_limits_an_unbounded_run
check "--hold counts server fds per connection" hold_counts_server_fds_per_connection
check "CPU of a live pid is sampled, a dead one is -1" cpu_of_a_live_pid_is_sampled_and_a_dead_one_is_minus_one
check "threads and pipes of a pid are reported" threads_and_pipes_of_a_pid_are_reported
check "pipes are counted once, with their size" pipes_are_counted_once_with_their_size
check "refused connections are errors" refused_connections_are_errors
check "usage errors exit 2" usage_errors_exit_2
check "hop relays GETs, 3 MB downloads and 3 MB uploads intact" hop_relays_gets_downloads_and_uploads_intact
check "hop holds no connection once its pairs ended" hop_holds_no_connection_once_pairs_ended
check "hop with a dead upstream fails requests and stays up" hop_with_a_dead_upstream_fails_requests_and_stays_up
check "hop: usage errors exit 2, SIGTERM exits 0" hop_usage_errors_exit_2_and_sigterm_exits_0
finish
