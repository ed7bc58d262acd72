#!/usr/bin/env bash
# soak/run.sh - `make soak`: SOAK_SECONDS (600) of mixed load on the chain,
# then every process must be back to its idle figures.
#   short requests   4 curl loops (POST of a JSON value)
#   bulk             1 loop: 8 MiB down, then 8 MiB up (checked)
#   slow clients     2 loops: a real ClientHello trickled 1 byte / 30 ms
#                    (longer than hello_timeout: the proxy must drop them)
#   bad input        1 loop: garbage on the TLS port, wrong tokens and short
#                    tokens on the data port, garbage on the JSON-RPC ports
#   restarts         the internal server restarted every RESTART_EVERY (30) s
# Idle figures (open fds from /proc/PID/fd, VmRSS, client sockets the public
# proxy holds on its TLS port, which bounds its parked tokens) are taken
# after a warm-up, and again after the load once hello/accept timeouts have
# passed.  Tolerances: fds +SOAK_FD_SLACK (hyper keep-alive pools; 4), RSS
# +max(25 %, 8 MiB) (+16 MiB relay buffer ring for the proxies), public proxy's TLS-port sockets 0.  At most ~12 clients.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh

SOAK_SECONDS=${SOAK_SECONDS:-600}
RESTART_EVERY=${RESTART_EVERY:-30}
FD_SLACK=${SOAK_FD_SLACK:-4}
five_setup
soak_cleanup() {
	local rc=$?
	touch "$E2E_RUN/stop"
	wait_load
	(exit $rc)
	e2e_cleanup
}
trap soak_cleanup EXIT

five_start_all
check "the chain serves within 10 s of the start" serves_within 10

# --- figures ------------------------------------------------------------------
tls_socks() { # public proxy's connected sockets on the TLS port
	ss -Htn state established "( sport = :$TLS_PORT )" 2>/dev/null | wc -l
}
figures() { # -> lines "name fds rss_kib"
	local n pid
	for n in $FIVE_NAMES; do
		pid=${E2E_PID[$n]}
		echo "$n $(ls "/proc/$pid/fd" | wc -l) $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
	done
	echo "public-tls-sockets $(tls_socks) 0"
}
warm_up() {
	local i
	for ((i = 0; i < 30; i++)); do c -o /dev/null "$URL/jsonrpc" --data "$i" || return 1; done
	c -o /dev/null "$URL/bytes/$((8 << 20))" || return 1
	head -c $((8 << 20)) /dev/zero | c -o /dev/null "$URL/sha256" --data-binary @- || return 1
}
check "warm-up: 30 requests and 8 MiB each way" warm_up
sleep 6		# hello_timeout passes for anything left half-open
figures >"$E2E_RUN/idle.before"

LOAD_PIDS=()
wait_load() { local p; for p in "${LOAD_PIDS[@]}"; do wait "$p" 2>/dev/null; done; LOAD_PIDS=(); }

# --- load -----------------------------------------------------------------------
DEADLINE=$((SECONDS + SOAK_SECONDS))
running() { [ ! -e "$E2E_RUN/stop" ] && [ $SECONDS -lt $DEADLINE ]; }
short_loop() {
	local i=0 code
	while running && [ $i -lt 1000000 ]; do
		code=$(c -o /dev/null -w '%{http_code}' "$URL/jsonrpc" --data "$i" 2>/dev/null)
		echo "${code:-000}" >>"$E2E_RUN/short.$1"
		i=$((i + 1))
	done
}
bulk_loop() {
	local n=$((8 << 20)) f=$E2E_RUN/bulk.bin want got
	head -c "$n" /dev/urandom >"$f"
	want=$(sha256sum "$f" | cut -d' ' -f1)
	while running; do
		got=$(c --max-time 60 "$URL/bytes/$n" | wc -c)
		echo "down $got" >>"$E2E_RUN/bulk.log"
		got=$(c --max-time 60 "$URL/sha256" --data-binary "@$f" -H 'Content-Type: application/octet-stream')
		# A hash that differs is corruption; no hash is a failed request
		# (the internal server restarting under it).
		if [[ "$got" == *"$want"* ]]; then echo "up ok"
		elif [[ "$got" =~ [0-9a-f]{64} ]]; then echo "up bad $got"
		else echo "up failed"; fi >>"$E2E_RUN/bulk.log"
	done
}
slow_loop() {
	while running; do
		python3 - "$TLS_PORT" "$HOST" <<-'PY' >>"$E2E_RUN/slow.log" 2>&1
		import socket, ssl, sys, time
		port, host = int(sys.argv[1]), sys.argv[2]
		ctx = ssl.create_default_context()
		inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
		tls = ctx.wrap_bio(inc, out, server_hostname=host)
		try: tls.do_handshake()
		except ssl.SSLWantReadError: pass
		hello = out.read()
		s = socket.create_connection(('127.0.0.1', port), timeout=10)
		s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
		try:
		    for i in range(len(hello)):
		        s.send(hello[i:i+1]); time.sleep(0.03)
		    print("sent all")
		except OSError as e:
		    print("dropped after", i, "bytes:", e)
		s.close()
		PY
	done
}
bad_loop() {
	local ports="$PUBLIC_RPC_PORT $PRIVATE_RPC_PORT $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT"
	while running; do
		python3 - "$TLS_PORT" "$DATA_PORT" $ports <<-'PY' >>"$E2E_RUN/bad.log" 2>&1
		import os, socket, sys
		tls, data, others = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
		def poke(port, payload):
		    try:
		        s = socket.create_connection(('127.0.0.1', port), timeout=5)
		        s.sendall(payload)
		        s.recv(64)
		        s.close()
		    except OSError:
		        pass
		poke(tls, os.urandom(200))
		poke(tls, b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
		poke(data, os.urandom(32))          # a wrong token
		poke(data, b'A' * 5)                # a short one
		for p in others:
		    poke(p, os.urandom(100))        # not TLS
		PY
		sleep 0.2
	done
}
LOAD_PIDS=()
for i in 1 2 3 4; do short_loop "$i" & LOAD_PIDS+=($!); done
bulk_loop & LOAD_PIDS+=($!)
slow_loop & LOAD_PIDS+=($!)
slow_loop & LOAD_PIDS+=($!)
bad_loop & LOAD_PIDS+=($!)
# The restarts run here (start_bg must run in this shell to keep the pids).
restarts=0
next=$((SECONDS + RESTART_EVERY))
while [ $SECONDS -lt $DEADLINE ]; do
	if [ $SECONDS -ge "$next" ]; then
		cat "$E2E_RUN/internal.log" >>"$E2E_RUN/internal.prev.log"
		stop_bg internal
		five_start internal
		restarts=$((restarts + 1))
		next=$((SECONDS + RESTART_EVERY))
	fi
	sleep 1
done
touch "$E2E_RUN/stop"
wait_load

# --- back to idle ----------------------------------------------------------------
short_ok=$(cat "$E2E_RUN"/short.* | grep -c '^200$')
short_all=$(cat "$E2E_RUN"/short.* | wc -l)
echo "# load: $short_all short requests ($short_ok answered 200), $(grep -c '^down' "$E2E_RUN/bulk.log") downloads, $(grep -c 'up ok' "$E2E_RUN/bulk.log") uploads intact ($(grep -c 'up bad' "$E2E_RUN/bulk.log") corrupt, $(grep -c 'up failed' "$E2E_RUN/bulk.log") failed), $(grep -c . "$E2E_RUN/slow.log") slow clients, $(wc -l <"$E2E_RUN/bad.log") bad-input rounds with output, $restarts restarts of the internal server"
check "no bulk upload through the chain arrived corrupt" bash -c "! grep -q 'up bad' $E2E_RUN/bulk.log"
check "the chain still serves after the load" serves_within 5

# The proxies' relay keeps a ring of buf_count x buf_size COPY buffers
# (256 x 64 KiB) whose pages are touched lazily: allowed on top.
ring_kib() { case $1 in public|private) echo 16384 ;; *) echo 0 ;; esac; }
back_to_idle() {
	local i n f0 r0 f1 r1 bad
	for ((i = 0; i < 30; i++)); do
		figures >"$E2E_RUN/idle.after"
		bad=0
		while read -r n f0 r0; do
			read -r _ f1 r1 < <(grep "^$n " "$E2E_RUN/idle.after")
			if [ "$n" = public-tls-sockets ]; then
				[ "$f1" -eq 0 ] || bad=1
				continue
			fi
			[ "$n" = internal ] && continue	# restarted: a new process
			[ "$f1" -le $((f0 + FD_SLACK)) ] || bad=1
			[ "$r1" -le $((r0 + (r0 / 4 > 8192 ? r0 / 4 : 8192) + $(ring_kib "$n"))) ] || bad=1
		done <"$E2E_RUN/idle.before"
		[ $bad = 0 ] && break
		sleep 1
	done
	printf '%-20s %12s %12s %14s %14s\n' process fds-before fds-after rss-before-KiB rss-after-KiB
	while read -r n f0 r0; do
		read -r _ f1 r1 < <(grep "^$n " "$E2E_RUN/idle.after")
		printf '%-20s %12s %12s %14s %14s\n' "$n" "$f0" "$f1" "$r0" "$r1"
	done <"$E2E_RUN/idle.before"
	echo "(internal was restarted during the load; public-tls-sockets bounds the parked tokens)"
	return $bad
}
check "fds, RSS and parked connections back to idle (fds +$FD_SLACK, RSS +25 % or 8 MiB, + the 16 MiB relay ring for proxies)" back_to_idle
sed 's/^/# /' "$E2E_RUN/check.$((E2E_PASS + E2E_FAIL - 1)).out"
for n in public private public-hyper private-hyper internal; do
	check "$n exits 0 on SIGTERM" stop_bg "$n"
done
finish
