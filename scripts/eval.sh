#!/usr/bin/env bash
# Fidelity evaluation of multi-hop KV card handoffs on the bundled model:
# builds //eval:fidelity, runs the grid (golden prompts and the development
# prompts), the controller ablation and the diagnostics, then regenerates
# the measured part of docs/results.md (between its GENERATED markers) and
# the plots docs/fidelity_kl_vs_bits.png and docs/fidelity_kl_vs_hops.png.
#
# Usage: scripts/eval.sh [--quick]
#   default   everything: the golden grid, the development grid, the controller
#             ablation, the diagnostics and the sensitivity sweeps.
#   --quick   the golden grid only (a minute or two); the generated part of
#             docs/results.md then holds only the golden tables.
# Environment: EVAL_OUT=<dir> keeps the raw logs/CSVs there (default: a
# temporary directory, printed at the end). The runs go two at a time (the
# model is tiny: one compute thread per run); the run times are printed at the
# end of docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

bazel build //eval:fidelity
bin=bazel-bin/eval/fidelity
out=${EVAL_OUT:-$(mktemp -d /tmp/qkvshare-eval.XXXXXX)}
mkdir -p "$out"

# run NAME FLAGS...: one invocation, outputs NAME.log / NAME.csv / NAME.cases.csv.
run() {
  local name=$1
  shift
  echo "eval: $name $*" >&2
  "$bin" --label="$name" --csv="$out/$name.cases.csv" --summary_csv="$out/$name.csv" "$@" \
    >"$out/$name.log"
}

# Controller ablation (adaptive only): the previous rules, and the new default
# with one of its three changes reverted at a time.
ablation="--policies=adaptive --bits=4,3,2.5"
previous="--hop_transform=blend --novisible_rows_mean --key_weight=2"
ablate() {  # ablate SET PREFIX [--prompt_set=dev]
  local prefix=$1
  shift
  run "${prefix}_previous" "$@" $ablation $previous
  run "${prefix}_novisible" "$@" $ablation --novisible_rows_mean
  run "${prefix}_blend" "$@" $ablation --hop_transform=blend
  run "${prefix}_wk2" "$@" $ablation --key_weight=2
}

# Two lanes of about equal length: the golden runs plus the development
# diagnostics, and the development grid plus its ablation.
lane_a() {
  run golden --policies=full,uniform,adaptive --bits=16,8,4,3,2.5,2
  ((quick)) && return 0
  ablate golden
  run golden_consumer $ablation --importance=consumer
  run golden_fpp --policies=uniform,adaptive --bits=4,3,2.5 --full_precision_prefix
  run dev_consumer --prompt_set=dev $ablation --importance=consumer
  run dev_fpp --prompt_set=dev --policies=uniform,adaptive --bits=4,3,2.5 --full_precision_prefix
}
lane_b() {
  ((quick)) && return 0
  run dev --prompt_set=dev --policies=uniform,adaptive --bits=8,4,3,2.5
  ablate dev --prompt_set=dev
}
# Sensitivity sweeps (dev prompts, KL only: no greedy decoding), split over
# the two lanes.
sweep="--prompt_set=dev --greedy_tokens=1 --policies=adaptive --bits=4,3,2.5"
sweeps_a() {
  ((quick)) && return 0
  for w in 1.5 2 2.5 4 6; do run "sweep_wk_$w" $sweep --key_weight=$w; done
  run sweep_wk_3 $sweep
}
sweeps_b() {
  ((quick)) && return 0
  for a in 0 0.25 0.35 0.65 0.8; do run "sweep_shrink_$a" $sweep --shrink=$a; done
  for w in 1 2 8 16; do run "sweep_window_$w" $sweep --window=$w; done
}
{ lane_a; sweeps_a; } &
lane_a_pid=$!
{ lane_b; sweeps_b; } &
lane_b_pid=$!
wait "$lane_a_pid"
wait "$lane_b_pid"

python3 scripts/eval_report.py "$out" docs/results.md

gnuplot -e "out='$out'" scripts/eval_plots.gnuplot

echo "eval: wrote docs/results.md, docs/fidelity_kl_vs_bits.png, docs/fidelity_kl_vs_hops.png;" \
  "raw output in $out" >&2
