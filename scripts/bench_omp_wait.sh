#!/usr/bin/env bash
# libgomp wait policy vs throughput (docs/performance.md "OpenMP waiting"):
# runs bench/runtime_bench and bench/handoff_bench under each setting, alone
# and (runtime_bench) as two processes at once, on random small-100m and
# smollm-135m models (made with scripts/make_random_llama.py if missing).
# GOMP_SPINCOUNT=300000 is libgomp's default when OMP_WAIT_POLICY is unset.
# The binaries re-exec with GOMP_SPINCOUNT=2000 only when neither variable is
# set (agents/compute_threads.h), so every setting below is explicit.
#
# Usage: scripts/bench_omp_wait.sh [--models-dir DIR]   (default /tmp)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODELS_DIR=/tmp
PYTHON=${PYTHON:-/usr/bin/python3}
while (($#)); do
  case $1 in
    --models-dir) MODELS_DIR=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "bench_omp_wait: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

model() {  # preset dtype -> prints the directory, making it if missing
  local dir=$MODELS_DIR/$1-random-$2
  if [[ ! -f $dir/model.safetensors ]]; then
    "$PYTHON" "$ROOT/scripts/make_random_llama.py" "$dir" --preset "$1" --max-pos 8192 \
      --dtype "$2" >/dev/null
  fi
  echo "$dir"
}
SMALL_BF16=$(model small-100m bfloat16)
SMALL_F32=$(model small-100m float32)
SMOL_BF16=$(model smollm-135m bfloat16)
SMOL_F32=$(model smollm-135m float32)

cd "$ROOT"
bazel build //bench:runtime_bench //bench:handoff_bench >/dev/null 2>&1
RT=$ROOT/bazel-bin/bench/runtime_bench
HB=$ROOT/bazel-bin/bench/handoff_bench
SETTINGS=("OMP_WAIT_POLICY=passive" "GOMP_SPINCOUNT=300000" "GOMP_SPINCOUNT=2000"
  "GOMP_SPINCOUNT=20000")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

rt() {  # setting model dtype -> "prefill512 decode"
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$1" "$RT" --models="$2" --dtypes="$3" --threads=2 \
    --repeats=3 --prefill=512 --decode_tokens=32 --baseline=false 2>/dev/null |
    tail -1 | awk '{ print $3, $4 }'
}
hb() {  # setting model -> "reprefill_ms card4_ms" at 1024 tokens
  env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$1" "$HB" --models="$2" --contexts=1024 \
    --modes=reprefill,card4 --reps=3 2>/dev/null |
    awk -F'|' '$2 ~ /1024/ && NF == 10 { printf "%s ", $6 + 0 } END { print "" }'
}

echo "# scripts/bench_omp_wait.sh at $(git rev-parse --short HEAD), $(nproc) cores," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| setting | small-100m bf16 prefill 512 (tok/s) | decode (tok/s) | two at once: prefill 512 each | small-100m fp32 prefill 512 | smollm-135m bf16 1K re-prefill / 4-bit card TTFT (ms) | smollm-135m fp32 1K re-prefill / 4-bit card TTFT (ms) |"
echo "|---|---:|---:|---:|---:|---|---|"
for s in "${SETTINGS[@]}"; do
  read -r bp bd < <(rt "$s" "$SMALL_BF16" bf16)
  rt "$s" "$SMALL_BF16" bf16 >"$TMP/a" &
  rt "$s" "$SMALL_BF16" bf16 >"$TMP/b" &
  wait
  two="$(cut -d' ' -f1 "$TMP/a") / $(cut -d' ' -f1 "$TMP/b")"
  read -r fp _ < <(rt "$s" "$SMALL_F32" f32)
  read -r hr hc < <(hb "$s" "$SMOL_BF16")
  read -r fr fc < <(hb "$s" "$SMOL_F32")
  echo "| \`$s\` | $bp | $bd | $two | $fp | $hr / $hc | $fr / $fc |"
done
