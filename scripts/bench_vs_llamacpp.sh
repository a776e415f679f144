#!/usr/bin/env bash
# qkvshare's runtime side by side with llama.cpp on the same machine, in the same run, on the
# same random weights (small-100m shape): prefill 512 tokens and decode at depth 512, tokens/s,
# medians of ROUNDS interleaved rounds, and our/llama.cpp ratios, as one Markdown table.
#
# Usage: scripts/bench_vs_llamacpp.sh            (from the repository root or anywhere)
# Environment:
#   LLAMA_BENCH_DIR  folder with llama-bench and llama-quantize (default: build them once with
#                    ../shared/bench/build_llama_bench.sh into LLAMA_BUILD_CACHE, ~14 min)
#   LLAMA_BUILD_CACHE  where build_llama_bench.sh builds (default: its own default)
#   SHARED_BENCH     the shared bench folder (default: <repo>/../shared/bench)
#   WORK             scratch folder for the HF directories and GGUF files (default /tmp/qkv-vs-llamacpp)
#   GGUF_DIR         use these NAME-{F32,F16,Q8_0,Q4_0}.gguf files instead of making them
#   ROUNDS (3)  THREADS (2)  PRESET (small-100m)  DECODE_TOKENS (64)
#   QKV_WEIGHTS      quantized weight formats of OUR engine (default "q8 q4"): each runs
#                    runtime_bench --weights=FORMAT on the f32 checkpoint, next to llama.cpp's
#                    Q8_0 / Q4_0 of the same weights (q8 has Q8_0's block layout; q4 is Q4_1's
#                    layout with a searched scale and minimum, 5 bits a weight against Q4_0's 4.5).
#   DENSE_ROWS (1)   0 skips the dense rows (llama.cpp F32/F16, our f32/bf16): quantized only,
#                    e.g. for the llama-1b shape, whose f32 rows take most of the time
#   QKV_SIMD         force OUR engine down to this Highway target (e.g. avx2 on an AVX-512 CPU,
#                    to stand in for an AVX2-only CPU): runtime_bench --simd=QKV_SIMD, and for x86
#                    targets below AVX3 libtorch's own kernels are capped too (ATEN_CPU_CAPABILITY,
#                    ONEDNN_MAX_CPU_ISA, OPENBLAS_CORETYPE), so no AVX-512 runs in our process.
#                    Pair it with a llama.cpp built for the same ISA (LLAMA_BENCH_DIR); the
#                    header names both.
# Our rows also give the weight bytes the model holds and the growth of VmRSS over the load
# (one process per row), as "weights MiB / RSS MiB".
# Neither llama.cpp's source nor its binaries go into this repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$repo/../shared/bench}
work=${WORK:-/tmp/qkv-vs-llamacpp}
rounds=${ROUNDS:-3}
threads=${THREADS:-2}
preset=${PRESET:-small-100m}
steps=${DECODE_TOKENS:-64}
qkv_weights=${QKV_WEIGHTS:-q8 q4}
qkv_simd=${QKV_SIMD:-}
dense_rows=${DENSE_ROWS:-1}
mkdir -p "$work"
simd_flags=()
if [[ -n $qkv_simd ]]; then
  simd_flags=(--simd="$qkv_simd")
  case ${qkv_simd,,} in
    avx2) export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell ;;
    sse4 | ssse3) export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OPENBLAS_CORETYPE=Nehalem ;;
  esac
fi

if [[ -n ${LLAMA_BENCH_DIR:-} ]]; then
  bin=$LLAMA_BENCH_DIR
else
  bin=$("$shared/build_llama_bench.sh" ${LLAMA_BUILD_CACHE:+"$LLAMA_BUILD_CACHE"} | tail -1)
fi
[[ -x $bin/llama-bench ]] || { echo "no llama-bench in $bin" >&2; exit 1; }

# The same draws as float32 and rounded to bfloat16 (same seed).
for dt in float32 bfloat16; do
  [[ -f $work/hf-$dt/model.safetensors ]] ||
    /usr/bin/python3 "$repo/scripts/make_random_llama.py" "$work/hf-$dt" --preset "$preset" \
      --dtype "$dt" >/dev/null
done
gguf=${GGUF_DIR:-$work/gguf}
if [[ -z ${GGUF_DIR:-} ]]; then
  "$shared/make_gguf.sh" "$work/hf-float32" "$gguf" "$preset" "$bin" >/dev/null
fi

cd "$repo"
bazel build -c opt //bench:runtime_bench >/dev/null 2>&1 || bazel build -c opt //bench:runtime_bench
ours=$repo/bazel-bin/bench/runtime_bench

raw=$work/raw.csv
: >"$raw"
# One measurement of our engine: ENGINE-ROW-LABEL, HF dir, dtype, extra flags.
run_ours() {
  local label=$1 dir=$2 dtype=$3
  shift 3
  local line
  line=$("$ours" --models="$dir" --dtypes="$dtype" --threads="$threads" --prefill=512 \
    --decode_context=512 --decode_tokens="$steps" --repeats=1 --baseline=false --chunk=0 \
    --csv "${simd_flags[@]}" "$@" | grep -v '^#' | tail -1)
  # model,dtype,compute,weights,prefill512,decode512,weight_mib,rss_mib
  local compute weights pp tg wmib rss
  IFS=, read -r _ _ compute weights pp tg wmib rss <<<"$line"
  echo "$label ($compute compute, $weights weights),$pp,$tg,$wmib,$rss" >>"$raw"
}
run_llama() {
  local fmt=$1 f=$gguf/$preset-$1.gguf pp tg
  pp=$("$bin/llama-bench" -m "$f" -t "$threads" -p 512 -n 0 -r 1 -o csv 2>/dev/null |
    /usr/bin/python3 -c 'import csv,sys; print([r for r in csv.DictReader(sys.stdin)][-1]["avg_ts"])')
  tg=$("$bin/llama-bench" -m "$f" -t "$threads" -p 0 -n "$steps" -d 512 -r 1 -o csv 2>/dev/null |
    /usr/bin/python3 -c 'import csv,sys; print([r for r in csv.DictReader(sys.stdin)][-1]["avg_ts"])')
  echo "llama.cpp $fmt,$pp,$tg,$(stat -c %s "$f" | awk '{printf "%.1f", $1 / 1048576}')," >>"$raw"
}

for ((r = 1; r <= rounds; r++)); do
  echo "round $r/$rounds" >&2
  if [[ $dense_rows != 0 ]]; then
    run_llama F32
    run_ours "qkvshare f32" "$work/hf-float32" f32
    run_llama F16
    run_ours "qkvshare bf16 checkpoint, dtype auto" "$work/hf-bfloat16" auto
    run_ours "qkvshare bf16 checkpoint, dtype bf16" "$work/hf-bfloat16" bf16
  fi
  for w in $qkv_weights; do
    fmt=${w^^}_0  # q8 -> Q8_0, q4 -> Q4_0
    run_llama "$fmt"
    run_ours "qkvshare $w" "$work/hf-float32" auto --weights="$w"
  done
done

simd=$("$ours" --models= --chunk=0 "${simd_flags[@]}" 2>/dev/null | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
  grep -E '^(sse4_2|avx|avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_bf16|avx512_vnni|amx_bf16|amx_tile)$' |
  tr '\n' ' ' || true)
[[ -z $flags ]] && flags=$(grep -m1 '^Features' /proc/cpuinfo | cut -d: -f2 || true)
echo "## qkvshare vs llama.cpp ($preset, $threads threads, medians of $rounds interleaved rounds, tokens/s)"
echo
echo "- $simd"
echo "- cpu flags: $flags"
# libtorch's fp32 GEMMs (prefill) run on OpenBLAS, whose kernel set OPENBLAS_CORETYPE can pin
# (some environments export it machine-wide); name the one that ran.
blas_core=$(OPENBLAS_VERBOSE=2 "$ours" --models= --chunk=0 "${simd_flags[@]}" 2>&1 >/dev/null |
  grep -m1 -o 'Core: .*' || true)
echo "- OpenBLAS (our fp32 GEMMs): ${blas_core:-unknown}${OPENBLAS_CORETYPE:+ (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE in the environment)}"
[[ -n $qkv_simd ]] && echo "- qkvshare forced to $qkv_simd (ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-} ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-} OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-})"
llama_isa=$(grep -oE 'GGML_(NATIVE|AVX512|AVX2):BOOL=[A-Z]+' "$bin/../CMakeCache.txt" 2>/dev/null | tr '\n' ' ' || true)
echo "- llama.cpp: $(basename "$(cd "$bin/../.." && pwd)") (${llama_isa:-build flags unknown}; ${bin})"
echo
/usr/bin/python3 - "$raw" <<'EOF'
import collections, csv, statistics, sys
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    # The label may hold commas ("bf16 checkpoint, dtype auto"): the four
    # numbers are the last four fields (weight MiB and VmRSS growth MiB may be empty).
    label, pp, tg, wmib, rss = line.rstrip("\n").rsplit(",", 4)
    r = rows.setdefault(label, ([], [], [], []))
    for vals, x in zip(r, (pp, tg, wmib, rss)):
        if x: vals.append(float(x))
def m(v): return statistics.median(v) if v else None
med = {k: tuple(m(x) for x in v) for k, v in rows.items()}
ref = {"F32": med.get("llama.cpp F32"), "F16": med.get("llama.cpp F16"),
       "Q8_0": med.get("llama.cpp Q8_0"), "Q4_0": med.get("llama.cpp Q4_0")}
def baseline(label):
    if label.startswith("llama.cpp"): return None
    if label.startswith("qkvshare q8"): return "Q8_0"
    if label.startswith("qkvshare q4"): return "Q4_0"
    if "bf16" in label: return "F16"
    return "F32"
def fmt(x, d=1): return "–" if x is None else f"{x:.{d}f}"
print("| engine, weights | prefill 512 | decode @512 | prefill / llama.cpp (F16; q8/q4: same width) | decode / llama.cpp (same width) | weight MiB | RSS growth MiB |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for label, (pp, tg, wmib, rss) in med.items():
    b = baseline(label)
    pr = tr = "–"
    if b is not None:
        pb = b if b in ("Q8_0", "Q4_0") else "F16"
        f16 = ref[pb]
        if pp is not None and f16 and f16[0]: pr = f"{pp / f16[0]:.2f} (vs {pb})"
        rb = ref[b]
        if tg is not None and rb and rb[1]: tr = f"{tg / rb[1]:.2f} (vs {b})"
    print(f"| {label} | {fmt(pp, 0)} | {fmt(tg)} | {pr} | {tr} | {fmt(wmib)} | {fmt(rss)} |")
EOF
