#!/usr/bin/env bash
# pool_private.sh - the private proxy's pool keeper (issue #16) against a
# stand-in public proxy (tests/e2e/fake-public.py) that hands out tickets and
# writes start frames, good and bad: a good frame is relayed to the internal
# server; a wrong magic, a frame for a domain not announced, a truncated
# frame (token_timeout) and an oversized body length are each closed with a
# log line, never a crash, and the keeper goes on.  Real private proxy, both
# real Hyper servers, the example internal server, free loopback ports.
# V=asan runs the ASan proxy.  Last line: "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh
T=$E2E_RUN

V=${V:-rel}
PROXY=bin/proxy
[ "$V" = asan ] && PROXY=build/asan/bin/proxy
scripts/dev-settings.sh "$T/s" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
. "$T/s/ports.env"
R=$T/s/roles
C=$PWD/settings/dev/certs
cat >"$R/private-proxy-1/010_test.yml" <<EOF
private:
  pool_size: 2
  pool_batch: 4
  token_timeout: 1
  public_proxies:
    - name: public-proxy-1.ga
      data_endpoints: ["127.0.0.1:$DATA_PORT"]
EOF
H1=$R/public-proxy-hyper-1
H2=$R/private-proxy-hyper-1

# bad_setting ROLE NAME YAML KEY: the proxy refuses to start with exit 2 and
# a message naming KEY.
bad_setting() {
	rm -rf "$T/bad"; mkdir -p "$T/bad"; cp -r "$R/$1-proxy-1" "$T/bad/"
	printf '%s\n' "$3" >"$T/bad/$1-proxy-1/020_bad.yml"
	PROXY_SETTINGS=$T/bad/$1-proxy-1 timeout 10 "$PROXY" run "$1" >"$T/bad.log" 2>&1
	local rc=$? key=$4
	check "$2 (exit 2)" eval '[ $rc = 2 ] && grep -q "$key" "$T/bad.log"'
}
bad_setting private "pool_size 300 is a settings error" 'private: {pool_size: 300}' pool_size
bad_setting private "pool_batch 0 is a settings error" 'private: {pool_batch: 0}' pool_batch
bad_setting private "public_proxies[].pool_size -1 is a settings error" \
	"private: {public_proxies: [{name: public-proxy-1.ga, data_endpoints: [\"127.0.0.1:$DATA_PORT\"], pool_size: -1}]}" \
	pool_size
bad_setting public "max_pooled_per_operator 0 is a settings error" \
	'public: {max_pooled_per_operator: 0}' max_pooled_per_operator
bad_setting public "pool_idle_lifetime as a string is a settings error" \
	'public: {pool_idle_lifetime: "soon"}' pool_idle_lifetime

mkdir -p "$T/fk"
echo hold >"$T/fk/mode"
touch "$T/fk/pool"
start_bg fake python3 tests/e2e/fake-public.py "$PUBLIC_RPC_PORT" "$DATA_PORT" "$C" "$T/fk"
IS_BIND_ADDRESS=127.0.0.1:$INTERNAL_PORT start_bg internal bin/internal-server
HYPER_SETTINGS=$H1 start_bg hyper1 bin/hyper server run
HYPER_SETTINGS=$H2 start_bg hyper2 bin/hyper server run
PROXY_SETTINGS=$R/private-proxy-1 start_bg private "$PROXY" run private --log-level debug
for p in $INTERNAL_PORT $PUBLIC_RPC_PORT $DATA_PORT $PUBLIC_HYPER_PORT $PRIVATE_HYPER_PORT \
	$PRIVATE_RPC_PORT; do
	wait_port 127.0.0.1 "$p" 10 || { echo "port $p never opened"; finish; }
done

wait_for() { # SECONDS CMD...
	local deadline=$((SECONDS + $1)); shift
	while [ $SECONDS -lt "$deadline" ]; do "$@" && return 0; sleep 0.2; done
	"$@"
}
calls() { grep -c '"requestConnectionTickets"' "$T/fk/calls.jsonl" 2>/dev/null || echo 0; }
lines() { grep -c "\"mode\": \"$1\"" "$T/fk/data.jsonl" 2>/dev/null || echo 0; }
alive() { kill -0 "${E2E_PID[private]}" 2>/dev/null; }
PLOG=$T/private.log

check "the keeper fetches tickets once the announcement is accepted" wait_for 10 \
	bash -c "[ \$(grep -c '\"requestConnectionTickets\"' $T/fk/calls.jsonl 2>/dev/null) -ge 1 ]"
check "it dials pool_size (2) data connections that write a ticket and wait" wait_for 5 \
	bash -c "[ \$(ss -Htn state established '( dport = :$DATA_PORT )' | wc -l) -eq 2 ]"

# Each new pooled connection gets the mode at accept: release the two held
# ones (3 s), then every replacement acts on the new mode.
good_frame() {
	local n
	n=$(grep '"mode": "frame-tls"' "$T/fk/data.jsonl" 2>/dev/null | grep -c 'success')
	echo "$n pooled connections relayed {\"message\": \"success\"}"
	[ "$n" -ge 8 ] && grep -q 'via=pool' "$PLOG"
}
echo frame-tls >"$T/fk/mode"
check "a good start frame: the pooled connection is relayed to the internal server (via=pool)" \
	wait_for 15 good_frame
check "each used connection is replaced: tickets are fetched in batches, not one call each" \
	bash -c "n=\$(grep -c '\"requestConnectionTickets\"' $T/fk/calls.jsonl); u=\$(grep -c 'via=pool' $PLOG); echo \"\$n calls for \$u used\"; [ \$((n * 2)) -le \$u ]"

bad_frame() { # MODE LOG-WORDS
	echo "$1" >"$T/fk/mode"
	wait_for 35 bash -c "grep -q '\"mode\": \"$1\"' $T/fk/data.jsonl && grep -q '$2' $PLOG" || {
		echo "no line '$2'"; return 1; }
	local after
	after=$(grep "\"mode\": \"$1\"" "$T/fk/data.jsonl" | head -1 |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["eof_after"])')
	echo "$1: closed after $after s"
	alive && python3 -c "import sys; sys.exit(0 if $after < ${3:-2} else 1)"
}
check "a wrong magic where the frame belongs: closed and logged" \
	bad_frame frame-badmagic 'bad start frame: wrong magic'
check "a frame for a domain not announced to that proxy: closed and logged" \
	bad_frame frame-unannounced 'other.internal-server.local, which is not announced'
check "a body length over the limit: closed and logged" \
	bad_frame frame-badlength 'bad start frame: bad body length'
check "a truncated frame: closed after token_timeout (1 s)" \
	bad_frame frame-partial 'no complete start frame within token_timeout' 3
check "failures back off: the keeper does not spin" \
	bash -c "n=\$(grep -cE '\"mode\": \"frame-(badmagic|unannounced|badlength|partial)' $T/fk/data.jsonl); echo \"\$n bad-frame connections in all\"; [ \$n -lt 40 ]"
echo frame-tls >"$T/fk/mode"
check "after the bad frames, a good one is relayed again" wait_for 40 \
	bash -c "[ \$(grep '\"mode\": \"frame-tls\"' $T/fk/data.jsonl | grep -c success) -gt $(grep '"mode": "frame-tls"' "$T/fk/data.jsonl" | grep -c success) ]"
echo hold >"$T/fk/mode"
check "pooled connections wait again (the stand-in holds them)" wait_for 20 \
	bash -c "[ \$(ss -Htn state established '( dport = :$DATA_PORT )' | wc -l) -ge 1 ]"
check "the private proxy exits 0 on SIGTERM" stop_bg private TERM
check "its pooled connections were closed first" grep -q 'pooled connection(s) closed' "$PLOG"
finish
