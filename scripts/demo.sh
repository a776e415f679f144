#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, start qkvshared on the
# bundled stories260K model with configs/daemon.yaml on a private socket, run
# the 3-hop `story` workflow through the gRPC API (qkvctl), streaming tokens and
# printing each hop's output and handoff stats, then the `story_mixed` workflow
# (one hop per handoff mode), then one graph workflow (`experts`: one card
# fanned out to 3 agents in parallel, then a join), and stop the daemon
# cleanly (SIGTERM).
# Exits 0 only if every step worked.
# Usage: scripts/demo.sh ["story input text"]
set -euo pipefail
cd "$(dirname "$0")/.."

INPUT=${1:-"Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."}

scripts/setup.sh
echo "demo: building qkvshared and qkvctl (the first build takes a few minutes)"
bazel build //daemon:qkvshared //qkvctl:qkvctl 2>&1 | tail -1

run=$(mktemp -d /tmp/qkvshare-demo.XXXXXX)
addr="unix://$run/qkvshared.sock"
qkvctl() { bazel-bin/qkvctl/qkvctl --addr "$addr" "$@"; }

bazel-bin/daemon/qkvshared --config configs/daemon.yaml --listen "$addr" \
  --instance "demo$$" >"$run/qkvshared.log" 2>&1 &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$run"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
  if qkvctl status >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "demo: qkvshared exited during start-up:" >&2
    cat "$run/qkvshared.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo
qkvctl status
echo
qkvctl agents
echo
qkvctl workflows
echo
echo "demo: === workflow 'story' (4-bit adaptive CacheCards between hops) ==="
echo "demo: input: $INPUT"
qkvctl submit story --input "$INPUT" --wait
echo
echo "demo: === workflow 'story_mixed' (full card, re-prefill, 3-bit uniform card) ==="
qkvctl submit story_mixed --input "$INPUT" --wait
echo
echo "demo: === graph workflow 'experts' (one card fanned out to 3 agents, then a join) ==="
qkvctl workflows experts
qkvctl submit experts --input "$INPUT" --wait
echo
qkvctl cards ls
echo
qkvctl stats

echo
echo "demo: stopping qkvshared (SIGTERM)"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
echo "demo: daemon log:"
sed 's/^/  /' "$run/qkvshared.log"
if ((rc != 0)); then
  echo "demo: FAILED: qkvshared exited with status $rc" >&2
  exit 1
fi
echo "demo: OK"
