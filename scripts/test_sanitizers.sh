#!/usr/bin/env bash
# Runs the project's tests under sanitizers (the .bazelrc configs asan, tsan):
#   ASan+UBSan  every test of the torch-free packages (quant, cachecard,
#               cachecard/shm, base, agents/tokenizer, the daemon units that
#               do not need the model runtime, qkvctl's units): bazel query
#               picks the cc_tests that do not depend on @system//:torch.
#   TSan        the concurrent parts: the task manager, the card store and
#               the server core's building blocks.
#
# Usage: scripts/test_sanitizers.sh [--fast] [extra bazel test flags]
#   --fast  the part scripts/test.sh (and so CI) runs, in the smallest build
#           that covers what hostile input and threads reach:
#           ASan+UBSan  quant, the card format and decoder (cachecard: parse,
#                       inject, hostile cards), the card store and the daemon's
#                       card import and listing;
#           TSan        the task manager, the card store (its expiry timer),
#                       concurrent card imports and card listings during
#                       expiry.
#           No gRPC service code, no config loader tests (full set and
#           `scripts/fuzz.sh config`), nothing that links libtorch (checked).
#           Cold (no disk cache): ~255 s of CPU, docs/building.md "Sanitizers".
# The full set (no --fast) is documented in docs/operations.md "Security";
# it builds the gRPC/proto code twice more (one build per sanitizer).
# Exit status: non-zero when any test failed or did not build.
set -uo pipefail
cd "$(dirname "$0")/.."

fast=0
if [[ ${1:-} == --fast ]]; then fast=1; shift; fi

TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp"

if ((fast)); then
  # :all builds the packages' tests only (test:sanitizer_common --build_tests_only).
  asan_targets=(//quant:all //cachecard:all //cachecard/shm:all
                //daemon:card_import_test //daemon:card_listing_test
                //agents/gguf:gguf_file_test //agents/gguf:gguf_dequant_test)
  tsan_targets=(//daemon:task_manager_test //cachecard/shm:card_store_test
                //daemon:card_import_test //daemon:card_listing_test)
  # Nothing here may link libtorch (its headers make each instrumented TU
  # take minutes): a dependency that drags it in fails at once.
  if ! torch=$(bazel query --noshow_progress \
      "somepath(set(${asan_targets[*]} ${tsan_targets[*]}), @system//:torch)" 2>&1); then
    echo "test_sanitizers: bazel query failed:" >&2
    echo "$torch" >&2
    exit 1
  fi
  if grep -q '^//' <<<"$torch"; then
    echo "test_sanitizers: the fast set depends on libtorch:" >&2
    grep -E '^(//|@)' <<<"$torch" >&2
    exit 1
  fi
else
  scope='//quant/... + //cachecard/... + //base/... + //agents/tokenizer/... + //agents/gguf/... + //daemon/... + //qkvctl/...'
  mapfile -t asan_targets < <(bazel query --noshow_progress \
    "kind(cc_test, ${scope}) except rdeps(${scope}, @system//:torch)" 2>/dev/null)
  tsan_targets=(//daemon:task_manager_test //cachecard/shm:card_store_test
                //daemon:card_import_test //daemon:card_listing_test //cachecard:parallel_test
                //daemon:stats_test //daemon:metrics_test)
  if ((${#asan_targets[@]} == 0)); then
    echo "test_sanitizers: bazel query found no targets" >&2
    exit 1
  fi
fi

rc=0
echo "== ASan+UBSan: ${asan_targets[*]}" >&2
bazel test --config=asan "$@" -- "${asan_targets[@]}" || rc=1
echo "== TSan: ${tsan_targets[*]}" >&2
bazel test --config=tsan --test_env=TSAN_OPTIONS="$TSAN_OPTIONS" "$@" -- "${tsan_targets[@]}" || rc=1
exit $rc
