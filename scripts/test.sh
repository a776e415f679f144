#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: setup, `bazel test //...`,
# the Python SDK's pytest suite (python/tests, against the binaries just
# built; its counts join the total), a short fuzz run, then `bazel shutdown`.
# Ends with the line "N passed, N failed" and exits non-zero when anything
# failed or did not build.
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
bazel shutdown >/dev/null 2>&1 || true

# Bazel's short summary: one line per test target, "//pkg:name  PASSED in 1.2s".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)' "$log" || true)
passed=$((passed + py_passed))
failed=$((failed + py_failed))
if ((rc != 0 || extra_rc != 0)) && ((failed == 0)); then
  failed=1  # the build itself failed before any test ran
fi
rm -f "$log"
echo "${passed} passed, ${failed} failed"
((rc == 0 && extra_rc == 0 && failed == 0))
