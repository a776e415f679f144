#!/usr/bin/env bash
# Smoke test of //bench:handoff_bench on the bundled model (tiny contexts, 3
# rounds): the header names the CPU, the SIMD target and the statistic
# reported (the median of --reps rounds), and every TTFT row has
# min <= median <= max.
set -euo pipefail
bin="$1"
out=$("$bin" --models=models/stories260K --contexts=32,64 --modes=reprefill,card4 \
  --reps=3 --warmup=0 --threads=1 2>/dev/null)
fail() {
  echo "FAIL: $1" >&2
  echo "$out" >&2
  exit 1
}
[[ "$out" == *"cpu: "*" | simd: "* ]] || fail "no CPU model / SIMD target in the header"
[[ "$out" == *"reported: median of 3 timed rounds (with min and max)"* ]] ||
  fail "the header does not say which statistic is reported"
# TTFT rows: | context | dtype | mode | bits | median | min | max | ratio |
rows=$(echo "$out" | awk -F'|' '$2 ~ /^ *(32|64) *$/ && NF >= 9 {print $6, $7, $8}')
[[ $(echo "$rows" | wc -l) -eq 4 ]] || fail "expected 4 TTFT rows, got: $rows"
echo "$rows" | awk '{ if (!($2 <= $1 && $1 <= $3)) { print "FAIL: min/median/max out of order: " $0; exit 1 } }'
echo PASS
