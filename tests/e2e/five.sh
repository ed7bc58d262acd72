# five.sh - the chain's five processes for the e2e, fault, soak and valgrind
# scripts (source it after lib.sh, bash only; not a test itself).
#
#   five_setup            settings on free loopback ports (scripts/dev-settings.sh),
#                         sets the *_PORT variables, S (roles), CA, HOST, URL
#   five_start NAME       start one of: internal public private public-hyper
#                         private-hyper; the command is prefixed by $FIVE_WRAP
#                         (e.g. valgrind ...) and by FIVE_PRE[NAME] (e.g.
#                         "ip netns exec ns1"), then NAME.log in $E2E_RUN
#   five_start_all        all five, callers before callees, then waits for ports
#   five_pid NAME         pid of the program itself (not of a wrapper)
#   c ARGS...             curl through the chain (to $URL's host via $TLS_PORT)
#   serves_within S       the seed's request succeeds within S seconds
#   FIVE_NAMES            the five names, in a stable order
#   FIVE_IS_CERT, FIVE_IS_KEY  the internal server's certificate and key
#                         (default: settings/dev/certs/internal-server.*)
#
# Every wait is bounded.

BIN=${CHAIN_BIN:-$root/bin}
FIVE_WRAP=${FIVE_WRAP:-}
FIVE_NAMES="public private public-hyper private-hyper internal"
FIVE_TLS_IP=${FIVE_TLS_IP:-127.0.0.1}
declare -A FIVE_PRE=()

five_setup() {
	scripts/dev-settings.sh "$E2E_RUN/s" >/dev/null || { echo "dev-settings failed"; exit 1; }
	. "$E2E_RUN/s/ports.env"
	S=$E2E_RUN/s/roles
	CA=$root/settings/dev/certs/root.crt
	HOST=test.internal-server.local
	URL=https://$HOST:$TLS_PORT
}

five_start() { # NAME
	local pre=${FIVE_PRE[$1]:-}
	case $1 in
	internal)
		start_bg internal $pre env IS_BIND_ADDRESS=${FIVE_INTERNAL_ADDR:-127.0.0.1:$INTERNAL_PORT} \
			IS_THREADS=${IS_THREADS:-2} \
			IS_CERT_FILE="${FIVE_IS_CERT:-$root/settings/dev/certs/internal-server.crt}" \
			IS_KEY_FILE="${FIVE_IS_KEY:-$root/settings/dev/certs/internal-server.key}" \
			$FIVE_WRAP "$BIN/internal-server" ;;
	public)
		start_bg public $pre env PROXY_SETTINGS=$S/public-proxy-1 $FIVE_WRAP "$BIN/proxy" run public ;;
	private)
		start_bg private $pre env PROXY_SETTINGS=$S/private-proxy-1 $FIVE_WRAP "$BIN/proxy" run private ;;
	public-hyper)
		start_bg public-hyper $pre env HYPER_SETTINGS=$S/public-proxy-hyper-1 $FIVE_WRAP "$BIN/hyper" server run ;;
	private-hyper)
		start_bg private-hyper $pre env HYPER_SETTINGS=$S/private-proxy-hyper-1 $FIVE_WRAP "$BIN/hyper" server run ;;
	*)
		echo "five_start: unknown process $1" >&2; return 1 ;;
	esac
}

five_port_of() { # NAME -> the ports it listens on
	case $1 in
	internal) echo "$INTERNAL_PORT" ;;
	public) echo "$TLS_PORT $DATA_PORT $PUBLIC_RPC_PORT" ;;
	private) echo "$PRIVATE_RPC_PORT" ;;
	public-hyper) echo "$PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT" ;;
	private-hyper) echo "$PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT" ;;
	esac
}

five_start_all() { # [WAIT_SECONDS]
	local n
	for n in private public private-hyper public-hyper internal; do
		five_start "$n"
	done
	[ -n "${FIVE_PRE[*]:-}" ] && return 0	# ports are inside namespaces
	for p in $TLS_PORT $DATA_PORT $PUBLIC_RPC_PORT $PUBLIC_HYPER_PORT $PUBLIC_PEER_PORT \
		$PRIVATE_HYPER_PORT $PRIVATE_PEER_PORT $PRIVATE_RPC_PORT $INTERNAL_PORT; do
		wait_port 127.0.0.1 "$p" "${1:-10}" || true
	done
}

# The pid of the program itself: start_bg's pid is env's, which execs it, or
# a wrapper's (ip netns exec also execs).
five_pid() { # NAME
	echo "${E2E_PID[$1]:-}"
}

c() { curl -sS --max-time 20 --cacert "$CA" --resolve "$HOST:$TLS_PORT:$FIVE_TLS_IP" "$@"; }

serves_within() { # SECONDS
	local deadline=$((SECONDS + $1))
	while [ $SECONDS -lt "$deadline" ]; do
		[ "$(c --max-time 2 "$URL/jsonrpc" 2>/dev/null)" = '{"message": "success"}' ] && return 0
		sleep 0.1
	done
	return 1
}
