#!/usr/bin/env bash
# startup.sh - the first ten minutes: start-up checks everything before it
# binds or writes, one exit-code contract (0 clean stop, 1 runtime, 2 usage
# and settings) with one `error` line, a second instance refused unless
# reuse_port says otherwise, strict `hyper call` JSON, -V everywhere, and the
# Makefile's install/certs/deps promises.  STARTUP_BIN=DIR runs other builds
# of the three programs (build/asan/bin).
set -u
cd "$(dirname "$0")/../.." || exit 1
root=$PWD
. tests/e2e/lib.sh

BIN=${STARTUP_BIN:-$root/bin}
make --no-print-directory -s all examples >/dev/null || { echo "build failed"; exit 1; }
S=$E2E_RUN/s
scripts/dev-settings.sh "$S" >/dev/null || { echo "dev-settings.sh failed"; exit 1; }
. "$S/ports.env"
PUB=$S/roles/public-proxy-1
PRIV=$S/roles/private-proxy-1
HYP=$S/roles/public-proxy-hyper-1

listening() { ss -Hltn "sport = :$1" | grep -q .; }
nothing_bound() { # PORT...
	local p
	for p in "$@"; do
		if listening "$p"; then echo "port $p is bound"; return 1; fi
	done
}
# exactly one line on stderr, an error line naming every given word
one_error_line() { # FILE WORD...
	local f=$1 w; shift
	[ "$(wc -l <"$f")" -eq 1 ] || { echo "want one line:"; cat "$f"; return 1; }
	grep -q ' error: ' "$f" || { echo "not an error line:"; cat "$f"; return 1; }
	for w in "$@"; do
		grep -qF -- "$w" "$f" || { echo "no '$w' in:"; cat "$f"; return 1; }
	done
}

# A settings copy whose certificate (or key) is missing.
broken_copy() { # ROLE_DIR OUT KEY (certificate_file|key_file)
	mkdir -p "$2"
	sed "s#$3: .*#$3: \"$E2E_RUN/absent.pem\"#" "$1/000_base.yml" >"$2/000_base.yml"
}

# ---- a missing certificate or key: nothing bound, nothing written, exit 2 ----
public_missing_certificate() {
	broken_copy "$PUB" "$E2E_RUN/pub-nocert" certificate_file
	rm -f "$S/run/public-proxy-1.db"
	PROXY_SETTINGS=$E2E_RUN/pub-nocert timeout 10 "$BIN/proxy" run public 2>"$E2E_RUN/e.err"
	local rc=$?
	[ $rc -eq 2 ] || { echo "exit $rc"; cat "$E2E_RUN/e.err"; return 1; }
	one_error_line "$E2E_RUN/e.err" certificate_file "$E2E_RUN/absent.pem" \
		"No such file or directory" || return 1
	nothing_bound "$TLS_PORT" "$DATA_PORT" "$PUBLIC_RPC_PORT" || return 1
	[ ! -e "$S/run/public-proxy-1.db" ] || { echo "datastore created"; return 1; }
}
check "public proxy with a missing certificate: exit 2, one error line, nothing bound or written" \
	public_missing_certificate

private_missing_key() {
	broken_copy "$PRIV" "$E2E_RUN/priv-nokey" key_file
	rm -f "$S/run/private-proxy-1.db"
	PROXY_SETTINGS=$E2E_RUN/priv-nokey timeout 10 "$BIN/proxy" run private 2>"$E2E_RUN/e.err"
	local rc=$?
	[ $rc -eq 2 ] || { echo "exit $rc"; cat "$E2E_RUN/e.err"; return 1; }
	one_error_line "$E2E_RUN/e.err" key_file "$E2E_RUN/absent.pem" || return 1
	nothing_bound "$PRIVATE_RPC_PORT" || return 1
	[ ! -e "$S/run/private-proxy-1.db" ] || { echo "datastore created"; return 1; }
}
check "private proxy with a missing key: exit 2, one error line, nothing bound or written" \
	private_missing_key

hyper_missing_certificate() {
	broken_copy "$HYP" "$E2E_RUN/hyp-nocert" certificate_file
	HYPER_SETTINGS=$E2E_RUN/hyp-nocert timeout 10 "$BIN/hyper" server run 2>"$E2E_RUN/e.err"
	local rc=$?
	[ $rc -eq 2 ] || { echo "exit $rc"; cat "$E2E_RUN/e.err"; return 1; }
	one_error_line "$E2E_RUN/e.err" certificate_file "$E2E_RUN/absent.pem" || return 1
	nothing_bound "$PUBLIC_HYPER_PORT" "$PUBLIC_PEER_PORT"
}
check "hyper server with a missing certificate: exit 2, one error line, nothing bound" \
	hyper_missing_certificate

settings_typo_is_one_error_line() {
	mkdir -p "$E2E_RUN/typo"
	sed 's/hello_timeout:/hello_timout:/' "$PUB/000_base.yml" >"$E2E_RUN/typo/000_base.yml"
	PROXY_SETTINGS=$E2E_RUN/typo timeout 10 "$BIN/proxy" run public 2>"$E2E_RUN/e.err"
	local rc=$?
	[ $rc -eq 2 ] || { echo "exit $rc"; return 1; }
	one_error_line "$E2E_RUN/e.err" "$E2E_RUN/typo/000_base.yml" public.hello_timout "unknown key"
}
check "a misspelt key: exit 2, one error line naming file and key" settings_typo_is_one_error_line

# ---- a second instance on the same ports is refused ---------------------------
duplicate_proxy_refused() {
	# A small descriptor limit: max_connections is then chosen from it (info).
	start_bg pub1 bash -c "ulimit -n 4096 && PROXY_SETTINGS='$PUB' exec '$BIN/proxy' run public"
	wait_port 127.0.0.1 "$TLS_PORT" 10 && wait_port 127.0.0.1 "$PUBLIC_RPC_PORT" 10 || return 1
	local ino rc
	ino=$(stat -c %i "$S/run/public-proxy-1.db") || return 1
	PROXY_SETTINGS=$PUB timeout 10 "$BIN/proxy" run public 2>"$E2E_RUN/dup.err"
	rc=$?
	[ $rc -eq 1 ] || { echo "exit $rc"; cat "$E2E_RUN/dup.err"; return 1; }
	one_error_line "$E2E_RUN/dup.err" public.tls_bind_address "localhost:$TLS_PORT" \
		"address already in use" || return 1
	# The second one did not compact (rewrite) the first one's datastore.
	[ "$(stat -c %i "$S/run/public-proxy-1.db")" = "$ino" ] || { echo "datastore rewritten"; return 1; }
	kill -0 "${E2E_PID[pub1]}" || { echo "first instance died"; return 1; }
}
check "a second public proxy on the same ports exits 1: address already in use" duplicate_proxy_refused

max_connections_default_is_quiet() {
	grep -q 'info: max_connections [0-9]* (from RLIMIT_NOFILE 4096)' "$E2E_RUN/pub1.log" &&
		! grep -q 'warn' "$E2E_RUN/pub1.log" || { cat "$E2E_RUN/pub1.log"; return 1; }
}
check "the default max_connections follows RLIMIT_NOFILE at info level, no warning" \
	max_connections_default_is_quiet

first_proxy_stops_cleanly() { stop_bg pub1; }
check "the first public proxy still stops with exit 0" first_proxy_stops_cleanly

duplicate_hyper_refused() {
	start_bg hyp1 env HYPER_SETTINGS="$HYP" "$BIN/hyper" server run
	wait_port 127.0.0.1 "$PUBLIC_HYPER_PORT" 10 || return 1
	HYPER_SETTINGS=$HYP timeout 10 "$BIN/hyper" server run 2>"$E2E_RUN/dup.err"
	local rc=$?
	[ $rc -eq 1 ] || { echo "exit $rc"; cat "$E2E_RUN/dup.err"; return 1; }
	one_error_line "$E2E_RUN/dup.err" bind_address "localhost:$PUBLIC_HYPER_PORT" \
		"address already in use" || return 1
	kill -0 "${E2E_PID[hyp1]}" || { echo "first instance died"; return 1; }
	stop_bg hyp1
}
check "a second hyper server on the same ports exits 1: address already in use" duplicate_hyper_refused

# reuse_port: true on both is the deliberate hand-over: both run.
reuse_port_allows_a_hand_over() {
	mkdir -p "$E2E_RUN/reuse"
	{ cat "$HYP/000_base.yml"; echo "reuse_port: true"; } >"$E2E_RUN/reuse/000_base.yml"
	start_bg old env HYPER_SETTINGS="$E2E_RUN/reuse" "$BIN/hyper" server run
	wait_port 127.0.0.1 "$PUBLIC_HYPER_PORT" 10 || return 1
	start_bg new env HYPER_SETTINGS="$E2E_RUN/reuse" "$BIN/hyper" server run
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q 'ready' "$E2E_RUN/new.log" && break
		sleep 0.1
	done
	grep -q 'ready' "$E2E_RUN/new.log" || { cat "$E2E_RUN/new.log"; return 1; }
	stop_bg old && stop_bg new
}
check "with reuse_port: true a second hyper server starts (hand-over)" reuse_port_allows_a_hand_over

# ---- hyper call: strict JSON, usage errors exit 2 ---------------------------------
call_rejects() { # JSON OFFSET
	HYPER_SETTINGS=$HYP timeout 10 "$BIN/hyper" call public-proxy-1.ga._ping "$1" \
		>/dev/null 2>"$E2E_RUN/call.err"
	local rc=$?
	[ $rc -eq 2 ] || { echo "exit $rc"; cat "$E2E_RUN/call.err"; return 1; }
	one_error_line "$E2E_RUN/call.err" "JSON" "at offset $2"
}
check "hyper call with single quotes exits 2 naming the offset" call_rejects "{'domain': 'a.b'}" 11
check "hyper call with what the shell makes of single quotes exits 2 naming the offset" \
	call_rejects '{domain: a.b}' 1
check "hyper call with a trailing comma exits 2 naming the offset" call_rejects '{"domain": "a.b",}' 17
check "hyper call with trailing characters exits 2 naming the offset" call_rejects '{"a": 1} x' 9
call_array_is_not_parameters() {
	HYPER_SETTINGS=$HYP timeout 10 "$BIN/hyper" call x._ping '[1]' 2>"$E2E_RUN/call.err"
	[ $? -eq 2 ] && one_error_line "$E2E_RUN/call.err" "must be an object"
}
check "hyper call with an array exits 2" call_array_is_not_parameters

usage_errors_exit_2() {
	local rc
	"$BIN/hyper" --bogus 2>/dev/null; rc=$?; [ $rc -eq 2 ] || { echo "hyper $rc"; return 1; }
	"$BIN/proxy" run nowhere 2>/dev/null; rc=$?; [ $rc -eq 2 ] || { echo "proxy $rc"; return 1; }
	"$BIN/internal-server" --bogus 2>/dev/null; rc=$?; [ $rc -eq 2 ] || { echo "is $rc"; return 1; }
}
check "usage errors exit 2 in all three programs" usage_errors_exit_2

version_everywhere() {
	local p
	for p in hyper proxy internal-server; do
		"$BIN/$p" -V | grep -qx "$p [0-9.]*" || { echo "$p -V"; return 1; }
		"$BIN/$p" --version | grep -qx "$p [0-9.]*" || { echo "$p --version"; return 1; }
	done
}
check "-V and --version print the version in all three programs" version_everywhere

internal_server_from_elsewhere() {
	local port
	port=$(free_port)
	start_bg is bash -c "cd / && IS_BIND_ADDRESS=127.0.0.1:$port IS_THREADS=1 exec '$BIN/internal-server'"
	wait_port 127.0.0.1 "$port" 10 || { cat "$E2E_RUN/is.log"; return 1; }
	curl -sS --max-time 10 --cacert "$root/settings/dev/certs/root.crt" \
		--resolve "test.internal-server.local:$port:127.0.0.1" \
		"https://test.internal-server.local:$port/" | grep -q success || return 1
	stop_bg is
}
check "internal-server finds its dev certificate from any working directory" internal_server_from_elsewhere

# ---- Makefile and dev settings --------------------------------------------------
check "make -n install runs no certificate or package step" \
	bash -c '! make -n install 2>&1 | grep -E "make-certs|certs-check|apt-get|dpkg"'
check "make certs FORCE=1 regenerates" bash -c 'make -n certs FORCE=1 | grep -q -- "make-certs.sh settings/dev --force"'
check "jq is in DEB_PACKAGES and installed" \
	bash -c 'grep -A3 "^DEB_PACKAGES" Makefile | grep -qw jq && command -v jq >/dev/null'
check "dev settings never reach above settings/dev" \
	bash -c '! grep -rn "\$DIR/\.\./\.\./\.\." settings/dev'

finish
