#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: setup, `bazel test //...`,
# a short fuzz run, the fast sanitizer set (QKV_SKIP_SANITIZERS=1 skips it),
# then `bazel shutdown`. Ends with the line "N passed, N failed" and exits
# non-zero when anything failed or did not build.
# Usage: scripts/test.sh [extra bazel test flags]
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh || { echo "0 passed, 1 failed (setup)"; exit 1; }

log=$(mktemp /tmp/qkvshare-test.XXXXXX)
bazel test //... --nocache_test_results "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

extra_rc=0
if [[ -x scripts/fuzz.sh ]]; then
  # A short libFuzzer run of the card decoder (see scripts/fuzz.sh).
  if scripts/fuzz.sh --seconds "${QKV_FUZZ_SECONDS:-60}" 2>&1 | tail -5; then
    echo "//scripts:fuzz_card_decoder PASSED" >>"$log"
  else
    echo "//scripts:fuzz_card_decoder FAILED" >>"$log"
    extra_rc=1
  fi
fi
if [[ -x scripts/test_sanitizers.sh && -z ${QKV_SKIP_SANITIZERS:-} ]]; then
  # ASan+UBSan and TSan on the torch-free core (the full set:
  # scripts/test_sanitizers.sh without --fast, docs/operations.md "Security").
  if scripts/test_sanitizers.sh --fast 2>&1 | tail -15; then
    echo "//scripts:test_sanitizers_fast PASSED" >>"$log"
  else
    echo "//scripts:test_sanitizers_fast FAILED" >>"$log"
    extra_rc=1
  fi
fi
bazel shutdown >/dev/null 2>&1 || true

# Bazel's short summary: one line per test target, "//pkg:name  PASSED in 1.2s".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)' "$log" || true)
if ((rc != 0 || extra_rc != 0)) && ((failed == 0)); then
  failed=1  # the build itself failed before any test ran
fi
rm -f "$log"
echo "${passed} passed, ${failed} failed"
((rc == 0 && extra_rc == 0 && failed == 0))
