#!/usr/bin/env bash
# rotate.sh - certificate rotation under load (README "Reloading settings"):
# while 25 clients run the seed's curl (400 requests), every certificate of
# the chain's JSON-RPC links gets a new key (public-proxy-1.ga: the public
# proxy and its Hyper server; private-proxy-1.ga: the private proxy and its
# Hyper server), in the documented order: the new fingerprints join the
# directory next to the old ones, the files are replaced, every process gets
# a SIGHUP, the old fingerprints leave the directory.  The internal server's
# certificate is rotated in the same step (a new key, a leaf signed by the
# dev root; no fingerprint: clients verify it against the CA).  No request
# fails, and afterwards each of the six TLS listeners presents its new
# certificate, and so does the internal server, directly and through the
# chain.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh
. tests/e2e/five.sh
five_setup

# The certificates the four processes read, in a folder of the test's own
# (settings/dev/certs is shared with every other test).
certs=$E2E_RUN/certs
dir=$E2E_RUN/s/directory
mkdir -p "$certs"
cp "$root"/settings/dev/certs/* "$certs/"
sed -i "s#$root/settings/dev/certs#$certs#g" "$S"/*/*.yml
FIVE_IS_CERT=$certs/internal-server.crt FIVE_IS_KEY=$certs/internal-server.key
five_start_all
check "the chain serves" serves_within 10

NAMES="public-proxy-1.ga private-proxy-1.ga"
fp() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

# A new key and leaf for NAME, signed by the same intermediate (or by CA:
# then the chain file is the leaf alone), in $E2E_RUN/new (SANs as
# scripts/make-certs.sh gives them).
new_leaf() { # NAME [CA]
	local n=$1 ca=${2:-intermediate} d=$E2E_RUN/new
	mkdir -p "$d"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$n.key" 2>/dev/null &&
	openssl req -new -key "$d/$n.key" -subj "/CN=$n" -out "$d/$n.csr" 2>/dev/null &&
	printf '%s\n' "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" \
		"extendedKeyUsage=serverAuth,clientAuth" \
		"subjectAltName=DNS:$n,DNS:*.$n.local" >"$d/$n.ext" &&
	openssl x509 -req -in "$d/$n.csr" -CA "$certs/$ca.crt" \
		-CAkey "$certs/$ca.key" -CAcreateserial -CAserial "$d/serial" -days 30 \
		-sha256 -extfile "$d/$n.ext" -out "$d/$n.leaf" 2>/dev/null &&
	if [ "$ca" = intermediate ]; then
		cat "$d/$n.leaf" "$certs/intermediate.crt" >"$d/$n.crt"
	else
		cp "$d/$n.leaf" "$d/$n.crt"
	fi &&
	chmod 600 "$d/$n.key"
}
new_leaves() {
	local n
	for n in $NAMES; do
		new_leaf "$n" || return 1
		[ "$(fp "$E2E_RUN/new/$n.crt")" != "$(fp "$certs/$n.crt")" ] || return 1
	done
	new_leaf internal-server root &&
	[ "$(fp "$E2E_RUN/new/internal-server.crt")" != "$(fp "$certs/internal-server.crt")" ]
}
check "new keys and certificates for both operators and the internal server" new_leaves

declare -A OLD=() NEW=()
for n in $NAMES internal-server; do
	OLD[$n]=$(fp "$certs/$n.crt")
	NEW[$n]=$(fp "$E2E_RUN/new/$n.crt")
done

# The directory's certificates records for both names, written whole and
# renamed into place (the Hyper servers never read half a file).
certificates() { # "old new" | "new"
	local n f sep="" which=$1 tmp=$dir/.rotation.tmp
	{
		echo '{"records": ['
		for n in $NAMES; do
			printf '%s{"name": "%s", "section": "certificates", "created_at": "%s", "data": [' \
				"$sep" "$n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
			local s2=""
			for f in $which; do
				[ $f = old ] && printf '%s{"fingerprint": "%s"}' "$s2" "${OLD[$n]}"
				[ $f = new ] && printf '%s{"fingerprint": "%s"}' "$s2" "${NEW[$n]}"
				s2=", "
			done
			printf ']}\n'
			sep=","
		done
		echo ']}'
	} >"$tmp" && mv -f "$tmp" "$dir/95-rotation.json"
}

# The next "reloaded settings" (or "reload failed") line of NAME after the
# mark, within 15 s (a loaded machine delays a reload by seconds); it must
# mention every word given.
declare -A MARK=()
mark() { local n; for n in "$@"; do MARK[$n]=$(wc -l <"$E2E_RUN/$n.log"); done; }
since_mark() { tail -n +"$((MARK[$1] + 1))" "$E2E_RUN/$1.log"; }
reloaded() { # NAME [WORD]...
	local n=$1 i line w ok; shift
	for ((i = 0; i < 150; i++)); do
		line=$(since_mark "$n" | grep -m1 -e "reloaded settings: " -e "reload failed")
		if [ -n "$line" ]; then
			echo "$n: $line"
			ok=1
			for w in "$@"; do [[ $line == *"$w"* ]] || ok=0; done
			[ $ok = 1 ] && [[ $line != *"reload failed"* ]]
			return
		fi
		sleep 0.1
	done
	echo "$n: no reload line within 15 s"; return 1
}
# The Hyper server read the directory again: at the reload, or earlier at
# its poll (poll_interval), whichever came first; then the reload is done.
dir_read() { # NAME
	reloaded "$1" || return 1
	since_mark "$1" | grep -m1 -e "directory reloaded" -e "reloaded settings: .*directory"
}
hup() { # NAME...
	local n
	echo "# $(date -u +%T.%N | cut -c1-12) SIGHUP to $*"
	for n in "$@"; do kill -HUP "$(five_pid "$n")"; done
}
HYPERS="public-hyper private-hyper"
ALL="public private public-hyper private-hyper"

# The load: 400 requests of the seed's curl, 25 at a time, each a new
# connection through the whole chain.
REQS=400
seq 1 $REQS | xargs -P 25 -I{} curl -sS -o /dev/null -w '%{http_code}\n' --max-time 30 \
	--cacert "$CA" --resolve "$HOST:$TLS_PORT:127.0.0.1" "$URL/jsonrpc" \
	>"$E2E_RUN/load.txt" 2>"$E2E_RUN/load.err" &
load=$!
sleep 0.5	# under way

# 1. the new fingerprints next to the old ones
mark $HYPERS	# before the file: the poll may read it at once
certificates "old new"
hup $HYPERS
for n in $HYPERS; do
	check "$n: the new fingerprints join the directory" dir_read $n
done
# 2. new keys and certificates in place, every process reloads
for n in $NAMES internal-server; do
	cp "$E2E_RUN/new/$n.key" "$certs/.$n.key" && mv -f "$certs/.$n.key" "$certs/$n.key"
	cp "$E2E_RUN/new/$n.crt" "$certs/.$n.crt" && mv -f "$certs/.$n.crt" "$certs/$n.crt"
done
mark $ALL internal; hup $ALL internal
internal_reloaded() { # within 15 s, the line naming the new leaf
	local i
	for ((i = 0; i < 150; i++)); do
		since_mark internal | grep "reloaded certificate: .*${NEW[internal-server]}" && return 0
		since_mark internal | grep "reload failed" && return 1
		sleep 0.1
	done
	since_mark internal; return 1
}
check "internal: SIGHUP takes the new certificate" internal_reloaded
for n in public private; do
	check "$n: SIGHUP takes both new certificates" reloaded $n \
		"jsonrpc_server certificate" "jsonrpc_client certificate"
done
for n in $HYPERS; do
	check "$n: SIGHUP takes the four channels' new certificates" reloaded $n \
		"jsonrpc_server certificate" "peer_server certificate" \
		"jsonrpc_client certificate" "peer_client certificate"
done
# 3. the old fingerprints leave the directory
mark $HYPERS
certificates "new"
hup $HYPERS
for n in $HYPERS; do
	check "$n: the old fingerprints leave the directory" dir_read $n
done
check "the load was still running when the rotation ended" kill -0 $load

finished() {
	local ok
	wait $load
	ok=$(grep -c '^200$' "$E2E_RUN/load.txt")
	echo "$ok of $REQS answered 200"
	head -n 5 "$E2E_RUN/load.err"
	[ "$ok" -eq $REQS ]
}
check "400 requests at 25 in parallel across the rotation: 0 failures" finished

# Each TLS listener presents the new certificate of its operator.
presents() { # PORT NAME
	local got
	got=$(openssl s_client -connect "127.0.0.1:$1" -servername "$2" -CAfile "$CA" \
		-cert "$certs/$2.crt" -key "$certs/$2.key" </dev/null 2>/dev/null |
		openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1)
	echo "port $1 ($2): $got, new ${NEW[$2]}, old ${OLD[$2]}"
	[ "$got" = "${NEW[$2]}" ]
}
check "public: its JSON-RPC server presents the new certificate" \
	presents "$PUBLIC_RPC_PORT" public-proxy-1.ga
check "public-hyper: its jsonrpc_server presents the new certificate" \
	presents "$PUBLIC_HYPER_PORT" public-proxy-1.ga
check "public-hyper: its peer_server presents the new certificate" \
	presents "$PUBLIC_PEER_PORT" public-proxy-1.ga
check "private: its JSON-RPC server presents the new certificate" \
	presents "$PRIVATE_RPC_PORT" private-proxy-1.ga
check "private-hyper: its jsonrpc_server presents the new certificate" \
	presents "$PRIVATE_HYPER_PORT" private-proxy-1.ga
check "private-hyper: its peer_server presents the new certificate" \
	presents "$PRIVATE_PEER_PORT" private-proxy-1.ga

# The internal server presents its new certificate: to a direct client,
# and through the chain (the relays pass the handshake through untouched).
presents_internal() { # PORT
	local got
	got=$(openssl s_client -connect "127.0.0.1:$1" -servername "$HOST" -CAfile "$CA" \
		-verify_return_error </dev/null 2>/dev/null |
		openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1)
	echo "port $1 ($HOST): $got, new ${NEW[internal-server]}, old ${OLD[internal-server]}"
	[ "$got" = "${NEW[internal-server]}" ]
}
check "internal: it presents the new certificate" presents_internal "$INTERNAL_PORT"
check "internal: the chain's clients get the new certificate, verified against the dev root" \
	presents_internal "$TLS_PORT"

# An old key is no identity any more: a client with it is refused by the
# Hyper server (the directory no longer lists its fingerprint).
old_refused() {
	local out
	out=$(curl -sS --max-time 5 --cacert "$CA" --cert "$root/settings/dev/certs/public-proxy-1.ga.crt" \
		--key "$root/settings/dev/certs/public-proxy-1.ga.key" \
		--resolve "public-proxy-1.ga:$PUBLIC_HYPER_PORT:127.0.0.1" \
		-H 'Content-Type: application/json' \
		-d '{"jsonrpc":"2.0","method":"public-proxy-1.ga._ping","params":{},"id":1}' \
		"https://public-proxy-1.ga:$PUBLIC_HYPER_PORT/jsonrpc" 2>&1)
	echo "old key: $out"
	[[ $out != *'"result"'* ]] || return 1
	out=$(curl -sS --max-time 5 --cacert "$CA" --cert "$certs/public-proxy-1.ga.crt" \
		--key "$certs/public-proxy-1.ga.key" \
		--resolve "public-proxy-1.ga:$PUBLIC_HYPER_PORT:127.0.0.1" \
		-H 'Content-Type: application/json' \
		-d '{"jsonrpc":"2.0","method":"public-proxy-1.ga._ping","params":{},"id":1}' \
		"https://public-proxy-1.ga:$PUBLIC_HYPER_PORT/jsonrpc" 2>&1)
	echo "new key: $out"
	[[ $out == *'"result"'* ]]
}
check "public-hyper: the old key is refused, the new one accepted" old_refused

# New connections everywhere: restart nothing, but wait out the pooled
# keep-alive connections by making fresh requests; the chain serves.
check "the chain serves after the rotation" serves_within 10
for n in $ALL; do
	check "$n: still running" kill -0 "$(five_pid $n)"
done
# Under ASan (CHAIN_BIN=build/asan/bin) a leak or an error is exit 1 here.
for n in $ALL internal; do
	check "$n: stops cleanly (exit 0)" stop_bg $n
done
finish
