#!/usr/bin/env bash
# e2e: bin/internal-server (SPEC section 6) over real TLS, checked with curl.
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/lib.sh

make --no-print-directory -s examples >/dev/null || { echo "build failed"; exit 1; }
scripts/make-certs.sh "$E2E_RUN/pki" >/dev/null || { echo "make-certs.sh failed"; exit 1; }
certs=$E2E_RUN/pki/certs
port=$(free_port)
host=test.internal-server.local
url=https://$host:$port

start_bg server env IS_BIND_ADDRESS="127.0.0.1:$port" IS_THREADS=2 \
	IS_CERT_FILE="$certs/internal-server.crt" IS_KEY_FILE="$certs/internal-server.key" \
	bin/internal-server
server_pid=$E2E_LAST_PID
wait_port 127.0.0.1 "$port" 10

# curl trusting only the dev root: the server must send its intermediate.
c() { curl -sS --max-time 60 --cacert "$certs/root.crt" --resolve "$host:$port:127.0.0.1" "$@"; }

expect_eq() { # WANT GOT
	[ "$1" = "$2" ] && return 0
	printf 'want: %s\ngot:  %s\n' "$1" "$2"
	return 1
}

get_answers_success() {
	expect_eq '{"message": "success"} 200 application/json' \
		"$(c -w ' %{http_code} %{content_type}' "$url/any/path?q=1")"
}
post_object_is_echoed() { expect_eq '{} 200' "$(c -d '{}' -w ' %{http_code}' "$url/")"; }
post_number_is_echoed() { expect_eq '5 200' "$(c -d 5 -w ' %{http_code}' "$url/")"; }
post_literals_are_echoed() {
	local v
	for v in null true false '"text"' '-1.5e3' '[]'; do
		expect_eq "$v 200" "$(c -d "$v" -w ' %{http_code}' "$url/")" || return 1
	done
}
post_nested_value_is_echoed() {
	local v='{"a": [1, 2.5, "x\u00e9", null, true], "b": {"c": false}}'
	expect_eq "$v" "$(c -H 'Content-Type: application/json' -d "$v" "$url/some/path")"
}
post_invalid_json_is_400() {
	expect_eq '{"message": "invalid JSON"} 400' "$(c -d 'not json' -w ' %{http_code}' "$url/")"
}
post_two_values_is_400() {
	expect_eq '{"message": "invalid JSON"} 400' "$(c -d '{} {}' -w ' %{http_code}' "$url/")"
}
bytes_bad_length_is_400() {
	expect_eq '400' "$(c -o /dev/null -w '%{http_code}' "$url/bytes/12abc")"
}

# /bytes/N: byte i is i mod 251.
pattern_sha256() {
	python3 -c 'import hashlib, sys
n = int(sys.argv[1]); block = bytes(range(251)) * 4096; h = hashlib.sha256()
while n > 0:
    k = min(n, len(block)); h.update(block[:k]); n -= k
print(h.hexdigest())' "$1"
}
bytes_streams_the_pattern() {
	local n=67108864 want got
	want=$(pattern_sha256 $n)
	got=$(c "$url/bytes/$n" | sha256sum | cut -d' ' -f1)
	expect_eq "$want" "$got"
}
bytes_stream_keeps_memory_small() {
	# Peak resident size after streaming 64 MiB stays far below 64 MiB.
	local hwm
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status")
	echo "VmHWM ${hwm} kB"
	[ -n "$hwm" ] && [ "$hwm" -lt 49152 ]
}
bytes_client_abort_leaves_server_serving() {
	c "$url/bytes/10737418240" | head -c 1000000 >/dev/null
	c --max-time 1 -o /dev/null "$url/bytes/10737418240"
	get_answers_success
}
sha256_of_64mib_body() {
	head -c 67108864 /dev/urandom >"$E2E_RUN/body"
	expect_eq "$(sha256sum <"$E2E_RUN/body" | cut -d' ' -f1)" \
		"$(c --data-binary @"$E2E_RUN/body" "$url/sha256")"
}
tls12_client_works() {
	local out
	out=$(c -v --tls-max 1.2 "$url/" 2>&1)
	grep -q 'SSL connection using TLSv1.2' <<<"$out" && grep -q '"success"' <<<"$out"
}
tls13_client_works() {
	local out
	out=$(c -v --tlsv1.3 "$url/" 2>&1)
	grep -q 'SSL connection using TLSv1.3' <<<"$out" && grep -q '"success"' <<<"$out"
}
parallel_200_posts_all_succeed() {
	# Like the seed's stress command: GNU parallel replaces {} by the number.
	local codes
	codes=$(seq 200 | parallel -q -j 25 curl -sS --max-time 60 --cacert "$certs/root.crt" \
		--resolve "$host:$port:127.0.0.1" -o /dev/null -w '%{http_code}\n' -d {} "$url/")
	echo "$codes" | sort | uniq -c
	[ "$(grep -c '^200$' <<<"$codes")" -eq 200 ]
}
keepalive_reuses_connection() {
	c -v "$url/a" "$url/b" 2>&1 | grep -q 'Re-using existing connection'
}
keepalive_requests_are_not_delayed() {
	# 50 requests on one connection: a Nagle/delayed-ACK stall would cost ~40 ms each.
	local urls=() i start ms
	for ((i = 0; i < 50; i++)); do urls+=("$url/$i"); done
	start=$(date +%s%N)
	c -o /dev/null "${urls[@]}" >/dev/null || return 1
	ms=$((($(date +%s%N) - start) / 1000000))
	echo "50 requests in $ms ms"
	[ "$ms" -lt 1000 ]
}
connection_close_sends_close_notify() {
	# OpenSSL reports "unexpected eof" when the server closes without close_notify.
	local out
	out=$(printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" |
		timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername "$host" \
		-CAfile "$certs/root.crt" -verify_return_error -ign_eof 2>&1)
	echo "$out" | tail -n 5
	grep -q '"success"' <<<"$out" && ! grep -q 'unexpected eof' <<<"$out"
}
version_and_help_exit_0() {
	bin/internal-server --version | grep -q '^internal-server ' && bin/internal-server --help >/dev/null
}
missing_cert_exits_2_with_one_line() {
	local out rc
	out=$(IS_BIND_ADDRESS=127.0.0.1:0 IS_CERT_FILE="$E2E_RUN/absent.crt" \
		timeout 10 bin/internal-server 2>&1)
	rc=$?
	echo "rc=$rc out=$out"
	[ $rc -eq 2 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'absent.crt' <<<"$out"
}
second_server_on_same_port_exits_1() {
	# SO_REUSEPORT must not let a second server silently share the port.
	local out rc
	out=$(IS_BIND_ADDRESS="127.0.0.1:$port" IS_CERT_FILE="$certs/internal-server.crt" \
		IS_KEY_FILE="$certs/internal-server.key" timeout 10 bin/internal-server 2>&1)
	rc=$?
	echo "rc=$rc out=$out"
	[ $rc -eq 1 ] && grep -q 'in use' <<<"$out"
}
sigterm_exits_0() { stop_bg server TERM; }
asan_server_is_clean_after_aborts_and_shutdown() {
	# ASan/LSan build: aborted streams, streams in flight at SIGTERM, no leak.
	local aport rc
	make --no-print-directory -s examples V=asan >/dev/null || return 1
	aport=$(free_port)
	start_bg asan env ASAN_OPTIONS=detect_leaks=1 IS_LOG_LEVEL=debug IS_BIND_ADDRESS="127.0.0.1:$aport" \
		IS_THREADS=2 IS_CERT_FILE="$certs/internal-server.crt" \
		IS_KEY_FILE="$certs/internal-server.key" build/asan/bin/internal-server
	wait_port 127.0.0.1 "$aport" 20 || return 1
	local u=https://$host:$aport
	c --resolve "$host:$aport:127.0.0.1" -d '[1, {"a": 2}]' "$u/" &&
	c --resolve "$host:$aport:127.0.0.1" "$u/bytes/100000000" | head -c 100000 >/dev/null
	local cpids=() i
	for ((i = 0; i < 4; i++)); do
		c --resolve "$host:$aport:127.0.0.1" -o /dev/null "$u/bytes/10000000000" 2>/dev/null &
		cpids+=($!)
	done
	sleep 0.5
	stop_bg asan TERM
	rc=$?
	wait "${cpids[@]}"
	echo "exit $rc"; cat "$E2E_RUN/asan.log"
	[ $rc -eq 0 ] && ! grep -q 'Sanitizer' "$E2E_RUN/asan.log"
}

check "GET any path answers {\"message\": \"success\"}" get_answers_success
check "POST {} is echoed" post_object_is_echoed
check "POST 5 (a number) is echoed" post_number_is_echoed
check "POST null, true, false, a string, -1.5e3, [] are echoed" post_literals_are_echoed
check "POST a nested JSON value is echoed verbatim" post_nested_value_is_echoed
check "POST 'not json' is 400 invalid JSON" post_invalid_json_is_400
check "POST two JSON values is 400" post_two_values_is_400
check "GET /bytes/12abc is 400" bytes_bad_length_is_400
check "GET /bytes/67108864 streams the i mod 251 pattern" bytes_streams_the_pattern
check "streaming /bytes keeps the server's memory small" bytes_stream_keeps_memory_small
check "a client aborting /bytes leaves the server serving" bytes_client_abort_leaves_server_serving
check "POST 64 MiB to /sha256 equals sha256sum" sha256_of_64mib_body
check "TLS 1.2 client works" tls12_client_works
check "TLS 1.3 client works" tls13_client_works
check "200 POSTs with parallel -j 25 all answer 200" parallel_200_posts_all_succeed
check "two URLs in one curl reuse the connection" keepalive_reuses_connection
check "50 keep-alive requests take under 1 s (no Nagle stall)" keepalive_requests_are_not_delayed
check "Connection: close ends with a TLS close_notify" connection_close_sends_close_notify
check "--version and --help exit 0" version_and_help_exit_0
check "a missing certificate exits 2 with a one-line reason" missing_cert_exits_2_with_one_line
check "a second server on the same port exits 1" second_server_on_same_port_exits_1
check "SIGTERM stops the server with exit code 0" sigterm_exits_0
check "ASan build: aborts, streams at SIGTERM, no error or leak" \
	asan_server_is_clean_after_aborts_and_shutdown
finish
