#!/usr/bin/env bash
# Builds and runs every libFuzzer target (tests/fuzz/fuzz_*.c) for
# FUZZ_SECONDS each (default 10), two at a time, on a copy of its seed corpus
# tests/fuzz/corpus/<name>/.  One check per fuzzer: passed when it built and
# ran its time without a finding.  Names given as arguments restrict the run.
# Ends with one line: "N passed, N failed".  Findings are kept as
# build/fuzz/<name>-crash-*, logs as build/fuzz/<name>.log.
set -u
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-10}
out=build/fuzz
mkdir -p "$out"

if [ $# -gt 0 ]; then names=("$@"); else
	names=(); for f in tests/fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
fi

# Build all first (two compilers at most: the machine is shared).
make --no-print-directory -j2 -k "${names[@]/#/$out/}" >"$out/build.log" 2>&1

run_one() { # name -> exit status of the fuzzer (0: no finding)
	local n=$1 c=$out/corpus/$1
	[ -x "$out/$n" ] || { echo "build failed, see $out/build.log" >"$out/$n.log"; return 1; }
	rm -rf "$c"; mkdir -p "$c"
	cp tests/fuzz/corpus/"$n"/* "$c"/ 2>/dev/null
	# -timeout: one input may not take over 10 s; -rss_limit_mb bounds memory.
	timeout $((secs + 60)) "$out/$n" -max_total_time="$secs" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/$n-" \
		"$c" >"$out/$n.log" 2>&1
}

pass=0; fail=0
for ((i = 0; i < ${#names[@]}; i += 2)); do
	pids=()
	for n in "${names[@]:i:2}"; do run_one "$n" & pids+=($!); done
	for j in "${!pids[@]}"; do
		n=${names[i + j]}
		if wait "${pids[j]}"; then
			pass=$((pass + 1))
			echo "ok - $n ($(grep -a -o 'stat::number_of_executed_units: [0-9]*' \
			    "$out/$n.log" | grep -o '[0-9]*$') runs in ${secs} s)"
		else
			fail=$((fail + 1))
			echo "not ok - $n (see $out/$n.log)"
			grep -a -E 'ERROR|check failed|runtime error|Test unit written|build failed' \
			    "$out/$n.log" | head -n 5 | sed 's/^/    /'
		fi
	done
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
