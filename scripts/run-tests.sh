#!/usr/bin/env bash
# Runs every test suite and ends with one line: "N passed, N failed".
#   unit tests (Criterion) built normally and with ASan/UBSan,
#   then every tests/e2e/*.sh script (each prints "N passed, N failed" last).
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0
log=build/test-logs; mkdir -p "$log"

count_criterion() { # file -> adds to pass/fail from Criterion's synthesis line
	local line t p f c
	line=$(grep -a 'Synthesis:' "$1" | tail -n 1)
	if [ -z "$line" ]; then fail=$((fail + 1)); return; fi
	p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$line")
	f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$line")
	c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$line")
	pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0} + ${c:-0}))
}

for variant in rel asan; do
	for t in build/$variant/tests/test_*; do
		[ -x "$t" ] || continue
		name=$variant/$(basename "$t")
		out=$log/${name//\//_}.log
		echo "== $name"
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
			timeout 600 "$t" --jobs 1 >"$out" 2>&1
		rc=$?
		grep -a -E 'FAIL|Synthesis|ERROR|runtime error' "$out" | tail -n 20
		count_criterion "$out"
		[ $rc -eq 0 ] || { [ $rc -eq 124 ] && echo "   timed out"; }
	done
done

# Every e2e script, then the five-process chain once more with the programs
# built with ASan/UBSan (a leak or a UB report makes a process exit non-zero,
# which the chain's "exits 0 on SIGTERM" checks catch).
runs=()
for s in tests/e2e/*.sh; do [ -x "$s" ] && runs+=("$s"); done
[ -x build/asan/bin/proxy ] && runs+=("asan:tests/e2e/chain.sh" "asan:tests/e2e/proxyproto.sh" \
	"asan:tests/e2e/pool.sh" "asan:tests/e2e/redis.sh" "asan:tests/e2e/pool_mint.sh" \
	"asan:tests/e2e/handover.sh" "asan:tests/e2e/cluster.sh")
for r in "${runs[@]}"; do
	s=${r#asan:}; name=$(basename "$s" .sh); envs=()
	if [ "$r" != "$s" ]; then
		name=$name-asan
		envs=(CHAIN_BIN=build/asan/bin ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1)
	fi
	out=$log/e2e_$name.log
	echo "== e2e/$name"
	timeout 1200 env "${envs[@]}" "$s" >"$out" 2>&1
	rc=$?
	grep -a -E '^(ok|not ok)|passed, [0-9]+ failed' "$out" | tail -n 40
	line=$(grep -a -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
	if [ -n "$line" ]; then
		pass=$((pass + $(cut -d' ' -f1 <<<"$line")))
		fail=$((fail + $(cut -d' ' -f3 <<<"$line")))
	else
		echo "   no result line (exit $rc); see $out"; tail -n 20 "$out"; fail=$((fail + 1))
	fi
	[ $rc -eq 0 ] || [ -n "$line" ] || true
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
