#!/bin/sh
# Runs every fuzzer of targets.txt for FUZZTIME each (default 1m), one
# after the other, from the repository root. Prints one line per fuzzer
# and exits non-zero if any found a failure (the crasher is written to the
# package's testdata/fuzz/<Fuzzer>/ by go test).
#   test/fuzz/run.sh            # 1m each, the documented long run
#   FUZZTIME=5s test/fuzz/run.sh
set -u
cd "$(dirname "$0")/../.."
FUZZTIME=${FUZZTIME:-1m}
fail=0
grep -v '^#' test/fuzz/targets.txt | while read -r pkg fuzzer _; do
	[ -n "$pkg" ] || continue
	start=$(date +%s)
	out=$(go test -run='^$' -fuzz="^${fuzzer}\$" -fuzztime="$FUZZTIME" -parallel=2 "$pkg" 2>&1)
	rc=$?
	execs=$(printf '%s\n' "$out" | grep -o 'execs: [0-9]*' | tail -1 | cut -d' ' -f2)
	cov=$(printf '%s\n' "$out" | grep -o 'new interesting: [0-9]* (total: [0-9]*)' | tail -1)
	echo "$pkg $fuzzer rc=$rc secs=$(( $(date +%s) - start )) execs=${execs:-?} ${cov}"
	if [ $rc -ne 0 ]; then printf '%s\n' "$out" | tail -30; fi
done
