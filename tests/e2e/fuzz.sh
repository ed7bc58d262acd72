#!/usr/bin/env bash
# Every libFuzzer target for a short time (FUZZ_SECONDS, default 10 s each);
# see scripts/fuzz-short.sh.  Last line: "N passed, N failed".
exec "$(dirname "$0")/../../scripts/fuzz-short.sh" "$@"
