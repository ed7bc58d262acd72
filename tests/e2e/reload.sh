#!/usr/bin/env bash
# reload.sh - SIGHUP on the four processes of the chain: a reload with
# nothing changed, a SIGHUP storm while clients run, a broken settings file
# (the process keeps serving and says why), a restart-only key refused.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh
five_setup
five_start_all
check "the chain serves" serves_within 10

logged() { # NAME PATTERN: within 5 s
	local i
	for ((i = 0; i < 50; i++)); do
		grep -q -- "$2" "$E2E_RUN/$1.log" && return 0
		sleep 0.1
	done
	tail -n 5 "$E2E_RUN/$1.log"; return 1
}
for n in public private public-hyper private-hyper; do
	kill -HUP "$(five_pid $n)"
	check "$n: SIGHUP reloads the settings" logged $n "reloaded settings: "
done

storm() {
	local pids i
	seq 1 200 | parallel -j 25 curl -sS -o /dev/null -w "'%{http_code} '" --max-time 20 \
		--cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/jsonrpc" >"$E2E_RUN/p.txt" &
	pids=$!
	for ((i = 0; i < 100; i++)); do
		for n in public private public-hyper private-hyper; do kill -HUP "$(five_pid $n)"; done
		sleep 0.01
	done
	wait $pids
	for n in public private public-hyper private-hyper; do
		kill -0 "$(five_pid $n)" || { echo "$n died"; return 1; }
	done
	ok=$(tr ' ' '\n' <"$E2E_RUN/p.txt" | grep -c '^200$')
	echo "$ok of 200 answered 200"
	[ "$ok" -eq 200 ]
}
check "a SIGHUP storm (100 per process in a second) during 200 requests: no failure, no crash" storm

broken() { # NAME ROLE-DIR
	local f=$S/$2/zz_broken.yml
	echo "log_level: [unclosed" >"$f"
	kill -HUP "$(five_pid $1)"
	logged "$1" "reload failed, keeping the old settings: $f" || return 1
	rm -f "$f"
	serves_within 5
}
check "public: a broken file is refused, the chain keeps serving" broken public public-proxy-1
check "public-hyper: a broken file is refused, the chain keeps serving" broken public-hyper public-proxy-hyper-1

restart_key() {
	local f=$S/public-proxy-1/zz_restart.yml
	printf 'public:\n  tls_bind_address: localhost:1\n' >"$f"
	kill -HUP "$(five_pid public)"
	logged public "reload failed, keeping the old settings: $f: public.tls_bind_address: cannot change without a restart" || return 1
	rm -f "$f"
	serves_within 5
}
check "public: a listen address change is refused with the key named" restart_key
finish
