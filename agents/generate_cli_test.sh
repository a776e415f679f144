#!/usr/bin/env bash
# CLI test of //agents:generate on the bundled model: --json output fields
# against the run.c golden (first 10 greedy ids of "Once upon a time"), plain
# streaming mode, and an error exit for a missing model directory.
set -euo pipefail
bin="$1"
model=models/stories260K

out=$("$bin" --model "$model" --prompt "Once upon a time" --max_new_tokens 10 --json --threads 1)
expect_in() {
  if [[ "$out" != *"$1"* ]]; then
    echo "FAIL: '$1' not in: $out" >&2
    exit 1
  fi
}
expect_in '"prompt_ids":[1,403,407,261,378]'
expect_in '"generated_ids":[432,383,286,261,376,298,315,421,395,317]'
expect_in '"text":"Once upon a time, there was a little girl named Lily'
expect_in '"stopped_on":null'
expect_in '"stop_reason":"max_new_tokens"'
expect_in '"prefill_ms":'
expect_in '"ttft_ms":'
expect_in '"decode_tokens_per_s":'

out=$("$bin" --model "$model" --prompt "Once upon a time" --max_new_tokens 10 2>/dev/null)
expect_in "Once upon a time, there was a little girl named Lily"

if err=$("$bin" --model /nonexistent --prompt x 2>&1); then
  echo "FAIL: missing model directory exited 0" >&2
  exit 1
fi
out="$err"
expect_in "/nonexistent/config.json"
# Quantized weights compute in f32, as daemon.yaml says.
if err=$("$bin" --model "$model" --weights q4 --dtype bf16 --prompt x 2>&1); then
  echo "FAIL: --weights q4 --dtype bf16 exited 0" >&2
  exit 1
fi
out="$err"
expect_in "--weights q4 computes in f32; --dtype must be auto or f32, not bf16"
echo PASS
