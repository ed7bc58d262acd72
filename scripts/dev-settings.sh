#!/usr/bin/env bash
# dev-settings.sh OUT: a copy of settings/dev on free loopback ports, so tests
# and benchmarks never collide with a demo on the default ports.
#
# Writes OUT/roles/*, OUT/directory/* (certificates stay in settings/dev/certs)
# and OUT/ports.env with one NAME=PORT line per listener:
#   TLS_PORT DATA_PORT PUBLIC_RPC_PORT PUBLIC_HYPER_PORT PUBLIC_PEER_PORT
#   PRIVATE_HYPER_PORT PRIVATE_PEER_PORT PRIVATE_RPC_PORT INTERNAL_PORT
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=$1
[ -f "$root/settings/dev/certs/root.crt" ] || "$root/scripts/make-certs.sh" "$root/settings/dev" >/dev/null
mkdir -p "$out"
read -r -a ports <<<"$(python3 - <<'PY'
import socket
socks = []
for _ in range(9):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
names=(TLS_PORT DATA_PORT PUBLIC_RPC_PORT PUBLIC_HYPER_PORT PUBLIC_PEER_PORT
	PRIVATE_HYPER_PORT PRIVATE_PEER_PORT PRIVATE_RPC_PORT INTERNAL_PORT)
defaults=(4433 9999 6655 5544 5556 7766 7776 8877 8888)
sedargs=(-e "s#\\\$DIR/\\.\\./\\.\\./certs#$root/settings/dev/certs#g"
	-e "s#\\\$DIR/\\.\\./\\.\\./directory#$out/directory#g"
	-e "s#\\\$DIR/\\.\\./\\.\\./run#$out/run#g")
: >"$out/ports.env"
for i in "${!names[@]}"; do
	sedargs+=(-e "s/:${defaults[$i]}\\b/:${ports[$i]}/g")
	echo "${names[$i]}=${ports[$i]}" >>"$out/ports.env"
done
rm -rf "$out/roles" "$out/directory"
mkdir -p "$out/roles" "$out/directory" "$out/run"
for d in "$root"/settings/dev/roles/*/; do
	r=$(basename "$d")
	mkdir -p "$out/roles/$r"
	for f in "$d"*; do sed "${sedargs[@]}" "$f" >"$out/roles/$r/$(basename "$f")"; done
done
for f in "$root"/settings/dev/directory/*.json; do
	sed "${sedargs[@]}" "$f" >"$out/directory/$(basename "$f")"
done
