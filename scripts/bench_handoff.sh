#!/usr/bin/env bash
# Handoff TTFT benchmark (docs/performance.md "Handoff TTFT"): the receiving
# agent's time to first token after a CacheCard handoff vs re-prefill of the
# text, on random smollm-135m-shaped models in bf16 and fp32.
#
# 1. makes the random models if missing (scripts/make_random_llama.py, numpy);
# 2. builds //bench:handoff_bench;
# 3. optionally waits for a quiet machine (--wait-quiet);
# 4. runs the bench (table on stdout, also saved as ${TMPDIR:-/tmp}/handoff_ttft.txt);
# 5. writes docs/handoff_ttft.csv, docs/handoff_ttft_stages.csv and plots
#    docs/handoff_ttft.png with gnuplot.
#
# Usage: scripts/bench_handoff.sh [--reps N] [--threads N] [--contexts 256,1024,...]
#            [--models-dir DIR] [--out-dir DIR] [--wait-quiet MAX_LOAD] [--quick]
#            [--plot-only] [-- extra handoff_bench flags]
#   --quick           2 reps, contexts 256,1024, output under /tmp (a smoke run)
#   --wait-quiet L    wait (up to 30 min) until the 1-minute load average is < L
#   --plot-only       redraw the PNG from an existing CSV in --out-dir
# Re-run after runtime changes (agents/) to refresh the table: the numbers in
# docs/performance.md come from this script's default invocation.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=7
THREADS=2
CONTEXTS=256,1024,2048,4096
MODELS_DIR=/tmp
OUT_DIR=$ROOT/docs
WAIT_LOAD=
PLOT_ONLY=0
PYTHON=${PYTHON:-/usr/bin/python3}
EXTRA=()
while (($#)); do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --contexts) CONTEXTS=$2; shift 2 ;;
    --models-dir) MODELS_DIR=$2; shift 2 ;;
    --out-dir) OUT_DIR=$2; shift 2 ;;
    --wait-quiet) WAIT_LOAD=$2; shift 2 ;;
    --plot-only) PLOT_ONLY=1; shift ;;
    --quick) REPS=2; CONTEXTS=256,1024; OUT_DIR=/tmp/handoff_bench_quick; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "bench_handoff: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
CSV=$OUT_DIR/handoff_ttft.csv
STAGES=$OUT_DIR/handoff_ttft_stages.csv
TXT=${TMPDIR:-/tmp}/handoff_ttft.txt

if ((PLOT_ONLY == 0)); then

# 1. Models: random weights, smollm-135m shape, 8192 positions.
MODELS=()
for dtype in bfloat16 float32; do
  dir=$MODELS_DIR/smollm-135m-random-$dtype
  if [[ ! -f $dir/model.safetensors ]]; then
    echo "bench_handoff: making $dir"
    "$PYTHON" "$ROOT/scripts/make_random_llama.py" "$dir" --preset smollm-135m --max-pos 8192 \
      --dtype "$dtype" >/dev/null
  fi
  MODELS+=("$dir")
done

# 2. Build.
cd "$ROOT"
bazel build //bench:handoff_bench
BIN=$ROOT/bazel-bin/bench/handoff_bench

# 3. Quiet machine?
if [[ -n $WAIT_LOAD ]]; then
  for ((i = 0; i < 180; ++i)); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$load" -v m="$WAIT_LOAD" 'BEGIN { exit !(l < m) }' && break
    ((i % 6 == 0)) && echo "bench_handoff: load average $load >= $WAIT_LOAD, waiting"
    sleep 10
  done
fi

# 4. Run.
{
  echo "# scripts/bench_handoff.sh at $(git -C "$ROOT" rev-parse --short HEAD) on $(date -u +%FT%TZ)"
  "$BIN" --models="$(IFS=,; echo "${MODELS[*]}")" --contexts="$CONTEXTS" --reps="$REPS" \
    --threads="$THREADS" --csv="$CSV" --stages_csv="$STAGES" "${EXTRA[@]}"
} | tee "$TXT"
fi  # PLOT_ONLY

# 5. Plot: TTFT (median, min-max bars) vs context, one panel per dtype. Each
# series is split out of the CSV into its own data file first.
PNG=$OUT_DIR/handoff_ttft.png
PLOT_DIR=$(mktemp -d)
trap 'rm -rf "$PLOT_DIR"' EXIT
awk -F, -v dir="$PLOT_DIR" 'NR > 1 {
  f = dir "/" $2 "_" $3 ($4 == "" ? "" : "_" $4) ".dat"
  print $1, $5, $6, $7 > f
}' "$CSV"
panel() {  # dtype full_bits
  local d=$1 fb=$2 p=$PLOT_DIR/$1
  cat <<EOF
set title "$d: receiver TTFT after a handoff (median, min-max bars)"
plot "${p}_reprefill.dat" using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb "black" title "re-prefill", \\
     "${p}_full_$fb.dat" using 1:2:3:4 with yerrorlines lw 2 pt 5 lc rgb "#1b9e77" title "full card ($fb-bit)", \\
     "${p}_card_16.dat" using 1:2:3:4 with yerrorlines lw 2 pt 9 lc rgb "#7570b3" title "card 16-bit", \\
     "${p}_card_4.dat" using 1:2:3:4 with yerrorlines lw 2 pt 11 lc rgb "#d95f02" title "card 4-bit (adaptive)", \\
     "${p}_card_3.dat" using 1:2:3:4 with yerrorlines lw 2 pt 13 lc rgb "#e7298a" title "card 3-bit (adaptive)"
EOF
}
XTICS=$(echo "$CONTEXTS" | sed 's/\([0-9][0-9]*\)/"\1" \1/g')
gnuplot <<EOF
set terminal pngcairo size 1400,600 font ",11"
set output "$PNG"
set multiplot layout 1,2
set logscale x 2
set logscale y 10
set xlabel "context (tokens)"
set ylabel "TTFT (ms, log scale)"
set xtics ($XTICS)
set offsets graph 0.05, graph 0.05, 0, 0
set grid
set key top left
$(panel bf16 16)
$(panel fp32 32)
unset multiplot
EOF
echo "bench_handoff: wrote $CSV, $STAGES, $TXT, $PNG"
