#!/usr/bin/env bash
# wildcard.sh - wildcard announcements through the seed's five processes: the
# private proxy announces *.internal-server.local (a static announcement) and
# an operator announces *.hd.internal-server.local (announceConnection); a
# name one label under either is routed to the internal server, a name two
# labels under is refused with the unrecognized_name alert, the exact
# announcement still wins, and bad patterns are refused by both proxies.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/five.sh
five_setup
C=$root/settings/dev/certs
# A second static announcement, after the seed's exact one.
sed -i 's/^      proxy: public-proxy-1.ga$/&\n    - domain: "*.Internal-Server.local."\n      proxy: public-proxy-1.ga/' \
	"$S/private-proxy-1/000_base.yml"
grep -q '\*.Internal-Server' "$S/private-proxy-1/000_base.yml" || { echo "settings edit failed"; exit 1; }
five_start_all

# hello NAME: an openssl client with SNI NAME; its output in $E2E_RUN/hello.txt.
hello() {
	echo | timeout 10 openssl s_client -connect "127.0.0.1:$TLS_PORT" -servername "$1" \
		-CAfile "$CA" -brief >"$E2E_RUN/hello.txt" 2>&1
	cat "$E2E_RUN/hello.txt"
}
# routed NAME: the handshake completes with the internal server's certificate.
routed() {
	hello "$1"
	grep -q 'Verification: OK' "$E2E_RUN/hello.txt" &&
		grep -q 'CN = internal-server' "$E2E_RUN/hello.txt"
}
# refused NAME: the public proxy answers the unrecognized_name alert.
refused() {
	hello "$1"
	grep -qi 'unrecognized name' "$E2E_RUN/hello.txt" &&
		! grep -q 'Verification: OK' "$E2E_RUN/hello.txt"
}
# answers NAME: a request with that SNI reaches the internal server's HTTP.
answers() {
	[ "$(curl -sS -k --max-time 10 --resolve "$1:$TLS_PORT:127.0.0.1" \
		"https://$1:$TLS_PORT/jsonrpc")" = '{"message": "success"}' ]
}
routed_within() { # SECONDS NAME
	local deadline=$((SECONDS + $1))
	while [ $SECONDS -lt "$deadline" ]; do
		routed "$2" >/dev/null && return 0
		sleep 0.2
	done
	routed "$2"
}
opcall() { # CERT METHOD PARAMS: as operator CERT, to the private Hyper's peer port.
	curl -s -o "$E2E_RUN/raw" --max-time 5 --cacert "$C/root.crt" --cert "$C/$1.crt" \
		--key "$C/$1.key" --resolve "private-proxy-1.ga:$PRIVATE_PEER_PORT:127.0.0.1" \
		"https://private-proxy-1.ga:$PRIVATE_PEER_PORT/jsonrpc" -H 'Content-Type: application/json' \
		--data-binary "{\"jsonrpc\":\"2.0\",\"method\":\"private-proxy-1.ga.$2\",\"params\":$3,\"id\":1}"
	cat "$E2E_RUN/raw"; echo
}
# pubcall PARAMS EXPECTED: announceConnections to the public proxy as the private one.
pubcall() {
	local out
	out=$(HYPER_SETTINGS=$S/private-proxy-hyper-1 timeout 15 "$BIN/hyper" call --timeout 10 \
		public-proxy-1.ga.announceConnections "$1" 2>&1 | tr -d ' \n')
	echo "$1 -> $out"
	[[ "$out" == *"$2"* ]]
}

check "the seed's exact name still serves" serves_within 5
check "other.internal-server.local is routed by *.internal-server.local" \
	routed_within 5 other.internal-server.local
check "a request for other.internal-server.local reaches the internal server" \
	answers other.internal-server.local
check "upper case and a trailing dot match the wildcard too" routed OTHER.Internal-Server.LOCAL.
check "a.b.internal-server.local (two labels under) is refused with unrecognized_name" \
	refused a.b.internal-server.local
check "internal-server.local itself is refused with unrecognized_name" \
	refused internal-server.local

check "private announceConnection of *.*.internal-server.local is -32602 with a reason" \
	eval 'opcall hd-1 announceConnection "{\"domain\": \"*.*.internal-server.local\", \"proxy\": \"public-proxy-1.ga\"}" |
	grep -q "\"code\": *-32602.*leftmost"'
check "private announceConnection of *.local is -32602" \
	eval 'opcall hd-1 announceConnection "{\"domain\": \"*.local\", \"proxy\": \"public-proxy-1.ga\"}" |
	grep -q "\"code\": *-32602"'
check "private announceConnection of *.example.com (outside allowed_domains) is 403" \
	eval 'opcall hd-1 announceConnection "{\"domain\": \"*.example.com\", \"proxy\": \"public-proxy-1.ga\"}" |
	grep -q "\"code\": *403"'
check "x.hd.internal-server.local is refused before the operator's wildcard" \
	refused x.hd.internal-server.local
check "private announceConnection of *.hd.internal-server.local is accepted" \
	eval 'opcall hd-1 announceConnection "{\"domain\": \"*.hd.internal-server.local\", \"proxy\": \"public-proxy-1.ga\"}" |
	grep -q "\"result\": *\"ok\""'
check "x.hd.internal-server.local is then routed by it" routed_within 5 x.hd.internal-server.local

# Conflicts (README, decisions): the same pattern held by another operator is
# 409; an exact name under another operator's wildcard is not.
check "hd-1 announcing *.internal-server.local, held by private-proxy-1.ga, is 409" \
	eval 'opcall hd-1 announceConnection "{\"domain\": \"*.Internal-Server.local\", \"proxy\": \"public-proxy-1.ga\"}" |
	grep -q "\"code\": *409"'
check "hd-1 announcing y.internal-server.local under that wildcard is accepted" \
	eval 'opcall hd-1 announceConnection "{\"domain\": \"y.internal-server.local\", \"proxy\": \"public-proxy-1.ga\"}" |
	grep -q "\"result\": *\"ok\""'
check "y.internal-server.local is routed" routed_within 5 y.internal-server.local
opcall hd-1 getAnnouncements '{}' >/dev/null
check "hd-1 holds its exact name and its wildcard, not the other operator's" \
	eval 'python3 -c "import json; print(sorted(a[\"domain\"] for a in json.load(open(\"$E2E_RUN/raw\"))[\"result\"]))" |
	grep -qx "\[.\*\.hd\.internal-server\.local., .y\.internal-server\.local.\]"'

for p in '*' '*.' '*.*.internal-server.local' 'a*.internal-server.local' '*internal-server.local' \
	'*.local'; do
	check "public announceConnections refuses the pattern '$p' with an item -32602" \
		pubcall "{\"connections\": [{\"domain\": \"$p\"}]}" '"code":-32602'
done
check "public announceConnections of *.example.com is an item 403" \
	pubcall '{"connections": [{"domain": "*.example.com"}]}' '"code":403'
# Same operator: an exact name under its own wildcard is accepted (the
# conflict rule compares exact keys; see README, decisions).
check "public announceConnections of an exact name under a held wildcard is accepted" \
	pubcall '{"connections": [{"domain": "exact.internal-server.local"}]}' '[null]'

finish
