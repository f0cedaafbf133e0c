#!/usr/bin/env bash
# Runs every test binary in $1; each prints PASS/FAIL lines and ends with "RESULT <passed> <failed>".
# Prints the closing line "N passed, N failed"; exits non-zero on any failure.
set -u
dir=${1:-build/tests}
cd "$(dirname "$0")/.." || exit 2
# Stage tests run several processes at once: OpenMP threads that spin while they wait would take
# the cores from each other (a 6-minute test instead of 10 s on 2 cores), so they sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0; failed=0
for t in "$dir"/test_*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  case "$t" in *.o|*.d) continue;; esac
  name=$(basename "$t")
  log=$(mktemp)
  start=$(date +%s)
  "$t" >"$log" 2>&1
  rc=$?
  grep -E '^(FAIL|SKIP)' "$log" | sed "s/^/[$name] /"
  res=$(grep -E '^RESULT [0-9]+ [0-9]+$' "$log" | tail -n 1)
  if [ -n "$res" ]; then
    p=$(echo "$res" | cut -d' ' -f2); f=$(echo "$res" | cut -d' ' -f3)
  else
    p=0; f=1
    echo "[$name] FAIL: exited with status $rc before reporting results:"; tail -n 20 "$log"
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "[$name] FAIL: exit status $rc"; tail -n 20 "$log"; fi
  if [ "$f" -gt 0 ]; then grep -vE '^(PASS|RESULT)' "$log" | head -n 60; fi
  printf "  %-28s %4d ok %3d bad %5ss\n" "$name" "$p" "$f" "$(( $(date +%s) - start ))"
  passed=$((passed + p)); failed=$((failed + f))
  rm -f "$log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
