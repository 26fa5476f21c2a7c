#!/bin/bash
# Run every test: cmocka unit tests, then the integration tests (two files at a
# time, each in its own 127.0.N.0/24 block and under a time limit). Prints one
# closing line "N passed, N failed, N skipped" counting every test case.
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
passed=0; failed=0; skipped=0

for t in "$BUILD"/test_*; do
  [ -x "$t" ] || continue
  echo "== unit: $(basename "$t")"
  # a UBSan report fails the test binary instead of scrolling past
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$t" >"$OUT/unit.log" 2>&1; rc=$?
  cat "$OUT/unit.log"
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$OUT/unit.log" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$OUT/unit.log" | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  [ $rc -ne 0 ] && [ -z "$f" ] && failed=$((failed + 1))
done

# integration: each file gets a block number (by name, so a file keeps its
# block); two run at once (2 cores), the longest first (tests/integration/
# slow-first, measured) so that no long file starts last and runs alone.
files=(tests/integration/test_*.py)
i=20
for f in "${files[@]}"; do
  i=$((i + 1))
  rank=$(grep -nx "$(basename "$f" .py)" tests/integration/slow-first 2>/dev/null | cut -d: -f1)
  echo "${rank:-999} $i $f"
done | sort -n -k1,1 -s | cut -d' ' -f2- | xargs -P 2 -L 1 bash -c '
  net=$0; f=$1; name=$(basename "$f" .py)
  POSTERN_BUILD='"$BUILD"' POSTERN_TEST_NET=$net timeout -k 10 420 python3 "$f" >"'"$OUT"'/$name.log" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "FAIL $name: timed out" >>"'"$OUT"'/$name.log"
  [ $rc -ne 0 ] && ! grep -q "^FAIL" "'"$OUT"'/$name.log" && echo "FAIL $name: exited $rc" >>"'"$OUT"'/$name.log"
  true'
for f in "${files[@]}"; do
  name=$(basename "$f" .py)
  echo "== integration: $name"
  cat "$OUT/$name.log"
  passed=$((passed + $(grep -c '^ok ' "$OUT/$name.log")))
  failed=$((failed + $(grep -c '^FAIL ' "$OUT/$name.log")))
  skipped=$((skipped + $(grep -c '^skip ' "$OUT/$name.log")))
done
echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
