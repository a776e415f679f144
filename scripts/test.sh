#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: setup, `bazel test //...`,
# the Python SDK's pytest suite (python/tests, against the binaries just
# built; its counts join the total), a short fuzz run, the aarch64 cross
# build of the torch-free tests under qemu (scripts/test_aarch64.sh; its
# counts join the total; QKV_SKIP_AARCH64=1 skips it), the fast sanitizer set
# (scripts/test_sanitizers.sh --fast: ASan+UBSan and TSan; each instrumented
# test counts once per sanitizer; QKV_SANITIZERS=0 skips it), then
# `bazel shutdown`. Ends with the line "N passed, N failed" and exits
# non-zero when anything failed or did not build.
# Usage: scripts/test.sh [extra bazel test flags]
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh || { echo "0 passed, 1 failed (setup)"; exit 1; }

log=$(mktemp /tmp/qkvshare-test.XXXXXX)
bazel test //... --nocache_test_results "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

extra_rc=0
py_passed=0
py_failed=0
if [[ -d python/tests ]]; then
  # Debian's python3 (python3-pytest, -numpy, -grpcio, -protobuf, -torch);
  # not a pyenv python3 that may come first on PATH. Exit 5 = no tests.
  pylog=$(mktemp /tmp/qkvshare-pytest.XXXXXX)
  QKVSHARE_BIN_DIR="$PWD/bazel-bin" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    python/tests 2>&1 | tee "$pylog"
  py_rc=${PIPESTATUS[0]}
  summary=$(grep -E '^=*.*[0-9]+ (passed|failed|errors?|skipped|deselected)' "$pylog" | tail -1)
  for word in $(grep -oE '[0-9]+ (passed|failed|errors?)' <<<"$summary" | tr ' ' ':'); do
    case ${word#*:} in
      passed) py_passed=$((py_passed + ${word%%:*})) ;;
      *) py_failed=$((py_failed + ${word%%:*})) ;;
    esac
  done
  if ((py_rc != 0 && py_rc != 5)); then
    extra_rc=1
    ((py_failed == 0)) && py_failed=1  # pytest itself failed (collection, interpreter)
  fi
  rm -f "$pylog"
fi
if [[ -x scripts/fuzz.sh ]]; then
  # A short libFuzzer run of the card decoder (see scripts/fuzz.sh).
  if scripts/fuzz.sh --seconds "${QKV_FUZZ_SECONDS:-60}" 2>&1 | tail -5; then
    echo "//scripts:fuzz_card_decoder PASSED" >>"$log"
  else
    echo "//scripts:fuzz_card_decoder FAILED" >>"$log"
    extra_rc=1
  fi
fi
aarch64_passed=0 aarch64_failed=0
if [[ ${QKV_SKIP_AARCH64:-0} != 1 ]]; then
  # Its own "N passed, N failed, N skipped" line joins the totals below.
  # CI runs the SIMD kernel and golden-card tests on aarch64 (NEON, SVE,
  # SVE2 under qemu): every Highway kernel against the scalar reference and
  # the golden card's bytes. The whole torch-free set is
  # `scripts/test_aarch64.sh` without arguments (docs/building.md).
  aarch64_log=$(mktemp /tmp/qkvshare-test-aarch64.XXXXXX)
  scripts/test_aarch64.sh //quant:kernels_test //quant:fp16_test //cachecard:dtype_convert_test \
    //cachecard:golden_card_test //base:cpu_info_test //agents/kernels:matvec_test 2>&1 | tee "$aarch64_log" | grep -E 'PASSED|FAILED|SKIPPED|passed,|targets checked|against scalar'
  aarch64_rc=${PIPESTATUS[0]}
  counts=$(grep -E '^test_aarch64.*passed, .* failed' "$aarch64_log" | tail -1)
  aarch64_passed=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$counts")
  aarch64_failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$counts")
  [[ $aarch64_passed =~ ^[0-9]+$ ]] || aarch64_passed=0
  [[ $aarch64_failed =~ ^[0-9]+$ ]] || aarch64_failed=0
  if ((aarch64_rc != 0 && aarch64_failed == 0)); then aarch64_failed=1; fi
  ((aarch64_failed == 0)) || extra_rc=1
  rm -f "$aarch64_log"
fi
if [[ -x scripts/test_sanitizers.sh && ${QKV_SANITIZERS:-1} != 0 ]]; then
  # ASan+UBSan on quant and the card decoder, TSan on the task manager and
  # the card store (the full set: scripts/test_sanitizers.sh without --fast,
  # docs/operations.md "Security"). Cold, on 2 cores, it adds ~2-3 minutes
  # to this script (docs/building.md "Sanitizers"). Each result joins the
  # totals as "//pkg:test[asan]" / "[tsan]".
  san_log=$(mktemp /tmp/qkvshare-test-san.XXXXXX)
  scripts/test_sanitizers.sh --fast --nocache_test_results 2>&1 | tee "$san_log" |
    grep -E '^== |PASSED|FAILED|TIMEOUT|NO STATUS|INCOMPLETE|ERROR:|SUMMARY:'
  san_rc=${PIPESTATUS[0]}
  san_results=$(awk '/^== ASan/ { tag = "asan" } /^== TSan/ { tag = "tsan" }
    tag != "" && /^\/\/[^ ]+ +(\(cached\) )?(PASSED|FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)/ {
      sub(/ /, "[" tag "] "); print }' "$san_log")
  [[ -n $san_results ]] && echo "$san_results" >>"$log"
  if ((san_rc != 0)); then
    extra_rc=1
    # A build that failed before any test ran leaves no result line.
    grep -qE '(FAILED|TIMEOUT|NO STATUS|INCOMPLETE)' <<<"$san_results" ||
      echo "//scripts:test_sanitizers_fast FAILED" >>"$log"
  fi
  rm -f "$san_log"
fi
bazel shutdown >/dev/null 2>&1 || true

# Bazel's short summary: one line per test target, "//pkg:name  PASSED in 1.2s".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)' "$log" || true)
passed=$((passed + py_passed + aarch64_passed))
failed=$((failed + py_failed + aarch64_failed))
if ((rc != 0 || extra_rc != 0)) && ((failed == 0)); then
  failed=1  # the build itself failed before any test ran
fi
rm -f "$log"
echo "${passed} passed, ${failed} failed"
((rc == 0 && extra_rc == 0 && failed == 0))
