#!/usr/bin/env bash
# reload.sh - SIGHUP on the four processes of the chain: a reload with
# nothing changed, a SIGHUP storm while clients run, a broken settings file,
# a wrong value, a missing or broken key file (the process keeps serving and
# says `file: key: reason`; the internal server: its variable, file and
# reason), a restart-only key refused, reload_interval; the
# private proxy's static announcements: a name added is announced and served,
# a name removed is withdrawn from the public proxy and refused there, a
# changed proxy_protocol applies to the next connection, a broken
# announcement keeps the old ones.
# Certificate rotation under load: rotate.sh.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh
five_setup
# The certificates in a folder of the test's own: one is broken on purpose.
certs=$E2E_RUN/certs
mkdir -p "$certs"
cp "$root"/settings/dev/certs/* "$certs/"
sed -i "s#$root/settings/dev/certs#$certs#g" "$S"/*/*.yml
FIVE_IS_CERT=$certs/internal-server.crt FIVE_IS_KEY=$certs/internal-server.key
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
		for n in public private public-hyper private-hyper internal; do
			kill -HUP "$(five_pid $n)"
		done
		sleep 0.01
	done
	wait $pids
	for n in public private public-hyper private-hyper internal; do
		kill -0 "$(five_pid $n)" || { echo "$n died"; return 1; }
	done
	ok=$(tr ' ' '\n' <"$E2E_RUN/p.txt" | grep -c '^200$')
	echo "$ok of 200 answered 200"
	[ "$ok" -eq 200 ]
}
check "a SIGHUP storm (100 per process, the internal server's too, in a second) during 200 requests: no failure, no crash" storm

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

# A value of the wrong type: the file, the key and the reason.
wrong_value() {
	local f=$S/private-proxy-1/zz_wrong.yml
	printf 'private:\n  connect_timeout: soon\n' >"$f"
	kill -HUP "$(five_pid private)"
	logged private "reload failed, keeping the old settings: $f: private.connect_timeout: " ||
		return 1
	serves_within 5 || return 1	# while the file is still there
	rm -f "$f"
}
check "private: a wrong value is refused with its file and key, the chain keeps serving" \
	wrong_value

# A key file that is not there: the settings file that names it, the key.
missing_key() {
	local f=$S/public-proxy-1/zz_key.yml
	printf 'public:\n  jsonrpc_server:\n    tls:\n      key_file: %s\n' "$E2E_RUN/nowhere.key" >"$f"
	kill -HUP "$(five_pid public)"
	logged public "reload failed, keeping the old settings: $f: public.jsonrpc_server.tls.key_file: key_file $E2E_RUN/nowhere.key: No such file or directory" ||
		return 1
	serves_within 5 || return 1
	rm -f "$f"
}
check "public: a missing key file is refused with the file and key naming it" missing_key

# A key file whose content is broken (the settings unchanged): every TLS
# block that reads it fails, the old contexts stay.
broken_key() { # NAME PATTERN
	broken_key_file private-proxy-1.ga.key "$@"
}
broken_key_file() { # KEY NAME PATTERN
	local k=$certs/$1; shift
	cp "$k" "$E2E_RUN/key.good"
	echo "not a key" >"$k"
	kill -HUP "$(five_pid $1)"
	logged $1 "$2" && serves_within 5	# while the file is still broken
	local rc=$?
	cp "$E2E_RUN/key.good" "$k"
	return $rc
}
check "private-hyper: a broken key file keeps the old certificates and says which" \
	broken_key private-hyper "reload failed, keeping the old settings: $S/private-proxy-hyper-1/000_base.yml: channels\[0\].settings.tls: key_file $certs/private-proxy-1.ga.key: "
check "private: a broken key file keeps the old certificates and says which" \
	broken_key private "reload failed, keeping the old settings: $S/private-proxy-1/000_base.yml: private.jsonrpc_server.tls.key_file: key_file $certs/private-proxy-1.ga.key: "
check "internal: a broken key file keeps the old certificate and says which" \
	broken_key_file internal-server.key internal "reload failed, keeping the old certificate: IS_KEY_FILE: key $certs/internal-server.key: "
check "every process still runs" bash -c "kill -0 $(five_pid public) $(five_pid private) \
$(five_pid public-hyper) $(five_pid private-hyper) $(five_pid internal)"

restart_key() {
	local f=$S/public-proxy-1/zz_restart.yml
	printf 'public:\n  tls_bind_address: localhost:1\n' >"$f"
	kill -HUP "$(five_pid public)"
	logged public "reload failed, keeping the old settings: $f: public.tls_bind_address: cannot change without a restart" || return 1
	rm -f "$f"
	serves_within 5
}
check "public: a listen address change is refused with the key named" restart_key

# reload_interval: reloaded itself; the next SIGHUP waits for the interval
# (a lower bound: a loaded machine only makes it later).
interval() {
	local f=$S/public-proxy-1/zz_interval.yml n t0 t1 i
	printf 'public:\n  reload_interval: 4\n' >"$f"
	n=$(grep -c "reloaded settings" "$E2E_RUN/public.log")
	kill -HUP "$(five_pid public)"
	logged public "reloaded settings: reload_interval" || return 1
	t0=$(date +%s.%N)
	kill -HUP "$(five_pid public)"
	for ((i = 0; i < 150; i++)); do
		[ "$(grep -c "reloaded settings" "$E2E_RUN/public.log")" -ge $((n + 2)) ] && break
		sleep 0.1
	done
	t1=$(date +%s.%N)
	echo "the second reload came $(awk "BEGIN { print $t1 - $t0 }") s after its SIGHUP"
	[ "$(grep -c "reloaded settings" "$E2E_RUN/public.log")" -ge $((n + 2)) ] &&
		awk "BEGIN { exit !($t1 - $t0 >= 3) }"
}
check "public: reload_interval spaces the reloads" interval

# --- the private proxy's static announcements ---------------------------------
# A later file replaces the whole list (lists are not merged).
NEW=new.internal-server.local
ann_file=$S/private-proxy-1/zz_announcements.yml
announcements() { # DOMAIN[=proxy_protocol]...
	local d
	{
		echo "private:"
		echo "  announcements:"
		for d in "$@"; do
			echo "    - domain: ${d%%=*}"
			echo "      proxy: public-proxy-1.ga"
			[[ $d == *=* ]] && echo "      proxy_protocol: ${d#*=}"
		done
	} >"$ann_file"
}
# The announcements the public proxy holds for private-proxy-1.ga.
held() {
	HYPER_SETTINGS=$S/private-proxy-hyper-1 timeout 10 "$BIN/hyper" call \
		public-proxy-1.ga.getAnnouncements '{}' 2>&1
}
# A name through the chain: its answer, or curl's error.
via() { # DOMAIN
	curl -sS --max-time 5 --cacert "$CA" --resolve "$1:$TLS_PORT:127.0.0.1" \
		"https://$1:$TLS_PORT/" 2>&1
}
reload_private() { # PATTERN: SIGHUP, then the reload line says PATTERN
	local n
	n=$(grep -c -e "reloaded settings" -e "reload failed" "$E2E_RUN/private.log")
	kill -HUP "$(five_pid private)"
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -c -e "reloaded settings" -e "reload failed" "$E2E_RUN/private.log")" -gt "$n" ] &&
			break
		sleep 0.1
	done
	grep -e "reloaded settings" -e "reload failed" "$E2E_RUN/private.log" | tail -n 1 |
		tee /dev/stderr | grep -q -- "$1"
}
# within 5 s, CMD's output matches PATTERN (or, with !, does not)
eventually() { # [!] PATTERN CMD...
	local neg=0 pat i out
	[ "$1" = "!" ] && { neg=1; shift; }
	pat=$1; shift
	for ((i = 0; i < 50; i++)); do
		out=$("$@")
		if [[ $out == *$pat* ]]; then [ $neg = 0 ] && return 0
		else [ $neg = 1 ] && return 0; fi
		sleep 0.1
	done
	echo "$out"; return 1
}
added() {
	announcements "$HOST" "$NEW"
	reload_private "reloaded settings: .*announcements" || return 1
	logged private "announcement $NEW to public-proxy-1.ga: added by the settings" || return 1
	eventually "\"$NEW\"" held || return 1
	eventually '{"message": "success"}' via "$NEW" && serves_within 5
}
check "private: a static announcement added on SIGHUP is announced and served" added
removed() {
	announcements "$NEW"
	reload_private "reloaded settings: .*announcements" || return 1
	logged private "announcement $HOST to public-proxy-1.ga: removed from the settings, withdrawing it" ||
		return 1
	logged private "withdrew $HOST from public-proxy-1.ga" || return 1
	eventually ! "\"$HOST\"" held || return 1
	echo "$HOST now: $(via "$HOST")"
	[[ $(via "$HOST") != *success* ]] || return 1
	eventually '{"message": "success"}' via "$NEW"
}
check "private: a static announcement removed on SIGHUP is withdrawn, the other one still served" \
	removed
# The internal server expects no PROXY header: with proxy_protocol on, the
# next connection to that name fails there; live settings apply at once.
changed() {
	announcements "$HOST" "$NEW=v2"
	reload_private "reloaded settings: .*announcements" || return 1
	logged private "announcement $NEW to public-proxy-1.ga: changed by the settings" || return 1
	serves_within 5 || return 1
	[[ $(via "$NEW") != *success* ]] || return 1
	announcements "$HOST" "$NEW"
	reload_private "reloaded settings: .*announcements" || return 1
	eventually '{"message": "success"}' via "$NEW"
}
check "private: a changed proxy_protocol applies to the next connection" changed
broken_announcement() {
	printf 'private:\n  announcements:\n    - domain: "*.*.internal-server.local"\n      proxy: public-proxy-1.ga\n' \
		>"$ann_file"
	reload_private "reload failed, keeping the old settings: $ann_file: private.announcements\[0\].domain: not a valid DNS name" ||
		return 1
	serves_within 5 && eventually '{"message": "success"}' via "$NEW"
}
check "private: a broken announcement is refused with file and key, both names still served" \
	broken_announcement
restored() {
	rm -f "$ann_file"
	reload_private "reloaded settings: .*announcements" || return 1
	eventually ! "\"$NEW\"" held || return 1
	serves_within 5
}
check "private: back to the settings' one name" restored
# Under ASan (CHAIN_BIN=build/asan/bin) a leak or an error is exit 1 here.
for n in public private public-hyper private-hyper internal; do
	check "$n: stops cleanly (exit 0)" stop_bg $n
done
finish
