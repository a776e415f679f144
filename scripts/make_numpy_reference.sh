#!/usr/bin/env bash
# Regenerates agents/testdata/numpy_reference.json: for each spec below, writes
# the random model with the C++ test writer (//agents/testing:write_random_llama),
# runs the independent float64 numpy reference (scripts/ref_llama_numpy.py) and
# stores the spec, ids and logits. agents/sequence_test.cc rebuilds the same
# models from the stored specs and compares its fp32 logits (bound 1e-4).
# Usage: scripts/make_numpy_reference.sh   (needs /usr/bin/python3 with numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build //agents/testing:write_random_llama >/dev/null
writer=bazel-bin/agents/testing/write_random_llama
tmp=$(mktemp -d /tmp/qkv_numpy_ref.XXXXXX)
ids="1,17,42,5,93,60,8,77,31,2,64,50,19,88,11,72,45,3,90,26,58,14,81,37"
specs=(
  '{"model_type": "qwen2", "head_dim": 16, "rope_theta": 500000.0, "seed": 7, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}'
  '{"model_type": "llama", "tie": true, "attention_bias": true, "kv_heads": 1, "weight_dtype": "BF16", "seed": 11, "rope_scaling": {"type": "linear", "factor": 2.0}}'
)
out=agents/testdata/numpy_reference.json
{
  echo '{"generator": "scripts/make_numpy_reference.sh (scripts/ref_llama_numpy.py, float64)", "cases": ['
  sep=""
  for spec in "${specs[@]}"; do
    dir="$tmp/m$RANDOM"
    "$writer" "$dir" "$spec"
    result=$(/usr/bin/python3 scripts/ref_llama_numpy.py "$dir" --ids "$ids")
    printf '%s{"spec": %s, "result": %s}\n' "$sep" "$spec" "$result"
    sep=","
  done
  echo ']}'
} >"$out"
rm -rf "$tmp"
echo "wrote $out ($(wc -c <"$out") bytes)"
