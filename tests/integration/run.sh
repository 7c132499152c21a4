#!/bin/bash
# Integration runner: runs every tests/integration/t-*.sh (or those matching
# $1), each in its own shell with its own scratch directory, and closes with
# "N passed, N failed, N skipped".  A test script reports each case through
# the helpers of tests/lib.sh; a script that dies counts as one failure.
# TEST_SCRIPTS names another directory of t-*.sh to run (tests/vm).
set -u
here=$(cd "$(dirname "$0")" && pwd)
filter=${1:-}
: "${INPLACE:?set INPLACE to the inplace binary}"
export INPLACE TOOLS="${TOOLS:-}" TESTS_DIR="$here/.."
results=$(mktemp)
trap 'rm -f "$results"' EXIT
export RESULTS=$results

for t in "${TEST_SCRIPTS:-$here}"/t-*.sh; do
	name=$(basename "$t" .sh)
	[ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && continue
	echo "== $name"
	before=$(wc -l < "$results")
	start=$(date +%s)
	timeout --kill-after=30 "${TEST_TIMEOUT:-1200}" bash "$t"
	rc=$?
	after=$(wc -l < "$results")
	if [ "$rc" -ne 0 ] && ! tail -n $((after - before)) "$results" | grep -q '^FAIL'; then
		echo "FAIL $name: script exited with status $rc" | tee -a "$results"
	fi
	echo "   ($(( $(date +%s) - start ))s)"
done
pass=$(grep -c '^PASS' "$results")
fail=$(grep -c '^FAIL' "$results")
skip=$(grep -c '^SKIP' "$results")
if [ "$fail" -gt 0 ]; then
	echo "failures:"
	grep '^FAIL' "$results" | sed 's/^/  /'
fi
if [ "$skip" -gt 0 ]; then
	echo "skipped:"
	grep '^SKIP' "$results" | sed 's/^/  /'
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
