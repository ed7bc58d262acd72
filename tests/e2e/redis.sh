#!/usr/bin/env bash
# redis.sh - two public proxies of one operator on one Redis (datastore type
# redis): Debian's redis-server on a free loopback port, started and killed
# here.  Instance A is the one the public Hyper delivers to (it gets the
# private proxy's announcements); instance B has its own TLS, data and
# JSON-RPC ports and the same Redis.  Real curl clients go through B; B's
# own view is read from its JSON-RPC server with the public Hyper's
# certificate (what the Hyper does when it delivers a call).
set -u
cd "$(dirname "$0")/../.."
root=$PWD
. tests/e2e/lib.sh

. tests/e2e/redis_lib.sh
. tests/e2e/five.sh
five_setup

B_TLS=$(free_port); B_DATA=$(free_port); B_RPC=$(free_port)
CERTS=$root/settings/dev/certs
PREFIX=e2e-$$:

# Instance A: the dev public proxy with the redis datastore instead of the file.
pub_a=$E2E_RUN/s/roles/public-proxy-1
use_redis "$pub_a/000_base.yml" "$PREFIX" 0.5
# Instance B: the same settings on its own ports.
pub_b=$E2E_RUN/s/roles/public-proxy-b
mkdir -p "$pub_b"
cp "$pub_a/000_base.yml" "$pub_b/"
cat >"$pub_b/500_instance.yml" <<EOF
public:
  tls_bind_address: 127.0.0.1:$B_TLS
  internal_bind_address: 127.0.0.1:$B_DATA
  internal_endpoint: 127.0.0.1:$B_DATA
  jsonrpc_server:
    bind_address: 127.0.0.1:$B_RPC
EOF
# The private proxy may dial both instances' data ports.
cat >"$E2E_RUN/s/roles/private-proxy-1/500_instances.yml" <<EOF
private:
  public_proxies:
    - name: public-proxy-1.ga
      data_endpoints: ["localhost:$DATA_PORT", "127.0.0.1:$B_DATA"]
EOF

start_b() {
	start_bg public-b env PROXY_SETTINGS=$pub_b "$BIN/proxy" run public
}
cb() { curl -sS --max-time 10 --cacert "$CA" --resolve "$1:$B_TLS:127.0.0.1" "https://$1:$B_TLS/jsonrpc"; }
ca() { curl -sS --max-time 10 --cacert "$CA" --resolve "$1:$TLS_PORT:127.0.0.1" "https://$1:$TLS_PORT/jsonrpc"; }

# rpc PORT CALLER METHOD PARAMS: a call delivered to an instance's JSON-RPC
# server as its Hyper delivers it (_client injected, with allowed_domains).
rpc() {
	local body inner client
	client="\"_client\": {\"name\": \"$2\", \"entry\": {\"name\": \"$2\", \"groups\": [],
		\"settings\": [{\"service\": \"proxy\", \"settings\": {\"allowed_domains\": [\".internal-server.local\"]}}]}}"
	inner=${4#\{}; inner=${inner%\}}
	[[ "$inner" =~ [^[:space:]] ]] && client="$client, $inner"
	body="{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"$3\", \"params\": {$client}}"
	curl -sS --max-time 10 --cacert "$CA" --cert "$CERTS/public-proxy-1.ga.crt" \
		--key "$CERTS/public-proxy-1.ga.key" --resolve "public-proxy-1.ga:$1:127.0.0.1" \
		"https://public-proxy-1.ga:$1/jsonrpc" -H 'Content-Type: application/json' -d "$body"
}
announce() { # PORT CALLER DOMAIN [EXPIRES_AT]
	local exp=${4:+, \"expires_at\": \"$4\"}
	rpc "$1" "$2" announceConnections "{\"connections\": [{\"domain\": \"$3\"$exp}]}"
}
# has PORT DOMAIN: the instance's table holds DOMAIN for private-proxy-1.ga
has() { rpc "$1" private-proxy-1.ga getAnnouncements '{}' | grep -q "\"$2\""; }
# within SECONDS CMD...: CMD succeeds within SECONDS (polled every 20 ms)
within() {
	local t=$1 ms start now; shift
	ms=$(awk "BEGIN { print int($t * 1000) }")
	start=$(date +%s%3N)
	while :; do
		"$@" >/dev/null 2>&1 && { echo "after $(( $(date +%s%3N) - start )) ms"; return 0; }
		now=$(date +%s%3N)
		[ $((now - start)) -gt "$ms" ] && { echo "not within $ms ms"; return 1; }
		sleep 0.02
	done
}
success() { [ "$("$@")" = '{"message": "success"}' ]; }
not_has() { ! has "$@"; }
# unrecognized PORT DOMAIN: a ClientHello for DOMAIN gets the unrecognized_name alert
unrecognized() {
	echo | timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername "$2" 2>&1 |
		grep -qi 'unrecognized name'
}

check "redis-server starts on a free loopback port" start_redis
five_start_all
start_b
wait_port 127.0.0.1 "$B_TLS" 10
wait_port 127.0.0.1 "$B_RPC" 10

check "the chain serves through instance A" serves_within 10
check "a client arriving at instance B is served (announced through A only)" success cb "$HOST"
key_ok() {
	[ "$(rcli HGET "${PREFIX}d:$HOST" =)" = private-proxy-1.ga ] &&
	rcli HVALS "${PREFIX}d:$HOST" | grep -q '"operator":"private-proxy-1.ga"' &&
	[ "$(rcli PTTL "${PREFIX}d:$HOST")" -gt 0 ]
}
check "the announcement is a Redis key under the prefix, with an expiry" key_ok

# --- an announcement made at A reaches B's table within 100 ms ------------------
announced() { # PORT CALLER DOMAIN [EXPIRES_AT]: [null]
	announce "$@" | tee /dev/stderr | jq -e '.result == [null]' >/dev/null
}
# One keep-alive connection to each instance: announce at A, then poll B's
# getAnnouncements until it lists the name (or 1 s); prints the delays.
follow_ms() {
	timeout 60 python3 - "$PUBLIC_RPC_PORT" "$B_RPC" "$CA" "$CERTS" <<'PY'
import http.client, json, ssl, sys, time
a, b, ca, certs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(certs + "/public-proxy-1.ga.crt", certs + "/public-proxy-1.ga.key")
client = {"name": "private-proxy-1.ga", "entry": {"name": "private-proxy-1.ga", "groups": [],
    "settings": [{"service": "proxy", "settings": {"allowed_domains": [".internal-server.local"]}}]}}
def call(c, method, params):
    params = dict(params, _client=client)
    c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
        "params": params}), {"Content-Type": "application/json"})
    return json.loads(c.getresponse().read())
ctx.check_hostname = False
ca_, cb_ = http.client.HTTPSConnection("127.0.0.1", a, context=ctx, timeout=5), \
    http.client.HTTPSConnection("127.0.0.1", b, context=ctx, timeout=5)
delays = []
for i in range(5):
    d = "follow%d.internal-server.local" % i
    r = call(ca_, "announceConnections", {"connections": [{"domain": d}]})
    assert r.get("result") == [None], r
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1:
        if any(x["domain"] == d for x in call(cb_, "getAnnouncements", {})["result"]):
            break
    delays.append((time.monotonic() - t0) * 1000)
delays.sort()
print("delays (ms):", " ".join("%.1f" % x for x in delays))
sys.exit(0 if delays[2] < 100 and delays[4] < 1000 else 1)
PY
}
check "announced at A: [null]" announced "$PUBLIC_RPC_PORT" private-proxy-1.ga fresh.internal-server.local
check "instance B's table follows A's announcements: median of 5 under 100 ms" follow_ms
withdraw_b() {
	rpc "$B_RPC" private-proxy-1.ga withdrawConnections \
		'{"domains": ["fresh.internal-server.local"]}' | grep -q '"withdrawn": *1' &&
	within 0.1 not_has "$PUBLIC_RPC_PORT" fresh.internal-server.local
}
check "a withdrawal at B leaves A's table within 100 ms" withdraw_b

# --- conflicts ----------------------------------------------------------------
taken_at() { # PORT: hd-1 is refused 409 for the private proxy's domain
	announce "$1" hd-1 "$HOST" | tee /dev/stderr | jq -e '.result[0].code == 409' >/dev/null
}
check "another operator is refused 409 at A" taken_at "$PUBLIC_RPC_PORT"
check "another operator is refused 409 at B" taken_at "$B_RPC"
race() { # the same new domain at A and B by two operators at once: one wins
	local i ok=0 a b
	for i in 1 2 3 4 5; do
		announce "$PUBLIC_RPC_PORT" private-proxy-1.ga "race$i.internal-server.local" >"$E2E_RUN/ra" &
		announce "$B_RPC" hd-1 "race$i.internal-server.local" >"$E2E_RUN/rb"
		wait $!
		a=$(jq -c '.result[0]' "$E2E_RUN/ra"); b=$(jq -c '.result[0]' "$E2E_RUN/rb")
		echo "race$i: A $a B $b owner $(rcli HGET "${PREFIX}d:race$i.internal-server.local" =)"
		if { [ "$a" = null ] && [[ "$b" == *409* ]]; } || { [ "$b" = null ] && [[ "$a" == *409* ]]; }; then
			ok=$((ok + 1))
		fi
	done
	[ "$ok" -eq 5 ]
}
check "two operators racing for one domain at A and B: exactly one wins, 5 times" race

# --- expiry -------------------------------------------------------------------
exp=
short_routed() {
	exp=$(date -u -d '+10 seconds' +%FT%TZ)
	announced "$PUBLIC_RPC_PORT" private-proxy-1.ga short.internal-server.local "$exp" &&
	within 3 has "$B_RPC" short.internal-server.local &&
	! unrecognized "$B_TLS" short.internal-server.local
}
check "a 10 s announcement at A is routed at B" short_routed
sleep_until_expired() {
	local t
	t=$(( $(date -d "$exp" +%s) - $(date +%s) + 1 ))
	[ "$t" -gt 0 ] && sleep "$t"
	! has "$PUBLIC_RPC_PORT" short.internal-server.local && ! has "$B_RPC" short.internal-server.local &&
		unrecognized "$TLS_PORT" short.internal-server.local &&
		unrecognized "$B_TLS" short.internal-server.local &&
		[ "$(rcli EXISTS "${PREFIX}d:short.internal-server.local")" = 0 ]
}
check "after its expiry: gone from both tables, both refuse the name, the key expired" \
	sleep_until_expired

# --- Redis killed ----------------------------------------------------------------
stop_bg redis KILL
sleep 0.5
check "Redis down: A still routes" serves_within 5
check "Redis down: B still routes" success cb "$HOST"
refused() { # PORT: 503 datastore unavailable
	announce "$1" private-proxy-1.ga down.internal-server.local | tee /dev/stderr |
		jq -e '.error.code == 503 and (.error.message | startswith("datastore unavailable: "))' >/dev/null
}
check "Redis down: a new announcement at A is refused: 503 datastore unavailable" refused "$PUBLIC_RPC_PORT"
check "Redis down: a new announcement at B is refused: 503 datastore unavailable" refused "$B_RPC"
late() { # the private proxy stores and announces a name; A refuses it for now
	HYPER_SETTINGS=$S/private-proxy-hyper-1 timeout 10 "$BIN/hyper" call \
		private-proxy-1.ga.announceConnection \
		"{\"domain\": \"late.internal-server.local\", \"proxy\": \"public-proxy-1.ga\"}"
}
check "Redis down: the private proxy takes a new name (its announce to A is refused)" late
logged_once() {
	sleep 1
	grep 'datastore: redis' "$E2E_RUN/public.log" "$E2E_RUN/public-b.log"
	[ "$(grep -c 'datastore: redis .* unavailable:' "$E2E_RUN/public.log")" = 1 ] &&
	[ "$(grep -c 'datastore: redis .* unavailable:' "$E2E_RUN/public-b.log")" = 1 ]
}
check "the outage is logged once by each instance" logged_once
check "Redis down: both still route, after the refusals" serves_within 5

# --- Redis back (empty: --save '') -------------------------------------------------
start_redis
key_back() { [ "$(rcli EXISTS "${PREFIX}d:$HOST")" = 1 ]; }
check "Redis back: the tables are written back into the empty Redis" within 10 key_back
check "Redis back: an announcement at B succeeds" \
	within 10 announced "$B_RPC" private-proxy-1.ga back.internal-server.local
check "Redis back: the refused name arrives on the private proxy's retry and is served at B" \
	within 40 success cb late.internal-server.local
both_serve() { success ca "$HOST" && success cb "$HOST"; }
check "Redis back: the seed's name is still served at A and at B" both_serve
back_logged() {
	grep -q 'datastore: redis .* is back' "$E2E_RUN/public.log" &&
	grep -q 'datastore: redis .* is back' "$E2E_RUN/public-b.log"
}
check "each instance logged that Redis is back" back_logged

# --- bad settings -------------------------------------------------------------------
bad_settings() { # KEY-LINES EXPECTED
	local d=$E2E_RUN/bad
	rm -rf "$d"; mkdir -p "$d"
	cp "$pub_b/000_base.yml" "$d/"
	printf 'public:\n  datastore:\n    type: redis\n    settings:\n%s\n' "$1" >"$d/600_bad.yml"
	PROXY_SETTINGS=$d "$BIN/proxy" run public >"$d/out" 2>&1
	local rc=$?
	cat "$d/out"
	[ $rc -eq 2 ] && grep -q "$2" "$d/out"
}
check "tls: true is refused at start (not supported yet), exit 2" \
	bad_settings "      tls: true" "not supported"
check "a bad address is refused at start, exit 2" \
	bad_settings "      address: nowhere" "expected host:port"

check "B exits 0 on SIGTERM" stop_bg public-b
check "A exits 0 on SIGTERM" stop_bg public
finish
