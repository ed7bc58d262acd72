# redis_lib.sh - sourced by the e2e scripts that need Redis (redis.sh,
# cluster.sh), after lib.sh: Debian's redis-server on a free loopback port,
# started and stopped by the script, and the public proxy's settings moved
# from the file datastore to it.  Not executable: run-tests.sh skips it.
command -v redis-server >/dev/null || { echo "redis-server is missing (make deps)"; exit 1; }
REDIS_PORT=$(free_port)

start_redis() {
	start_bg redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
		--appendonly no --daemonize no
	wait_port 127.0.0.1 "$REDIS_PORT" 10
}
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# use_redis FILE PREFIX [TIMEOUT]: the datastore block of a public proxy's
# settings FILE (type file) replaced by this Redis with key_prefix PREFIX (a
# later settings file cannot remove a key).
use_redis() {
	python3 - "$1" "$REDIS_PORT" "$2" "${3:-}" <<'PY'
import re, sys
f, port, prefix, timeout = sys.argv[1:5]
s = open(f).read()
block = '  datastore:\n    type: redis\n    settings:\n      address: 127.0.0.1:%s\n' \
    '      key_prefix: "%s"\n' % (port, prefix)
if timeout:
    block += '      timeout: %s\n' % timeout
s, n = re.subn(r'  datastore:\n    type: file\n    settings:\n      filename: [^\n]*\n',
    lambda m: block, s)
assert n == 1, "no file datastore block in " + f
open(f, "w").write(s)
PY
}
