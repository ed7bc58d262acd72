#!/usr/bin/env bash
# faults.sh - the short fault suite (tests/faults/run.sh with FAULTS_SHORT=1:
# a 3 s SIGSTOP instead of 15 s); `make faults` runs the long one.
cd "$(dirname "$0")/../.." && FAULTS_SHORT=1 exec tests/faults/run.sh
