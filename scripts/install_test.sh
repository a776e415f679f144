#!/usr/bin/env bash
# scripts/install.sh into a temporary prefix with the built binaries: layout,
# modes, rewritten paths, the installed unit passing systemd-analyze verify,
# the installed daemon serving the installed config to the installed qkvctl,
# idempotency, and edited configs kept.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }

tmp=${TEST_TMPDIR:-$(mktemp -d)}
bins=$tmp/bins
prefix=$tmp/root/opt/qkvshare
mkdir -p "$bins"
cp daemon/qkvshared qkvctl/qkvctl "$bins/"

snapshot() { (cd "$prefix" && find . -type f -printf '%p %m ' -exec sha256sum {} \; | sort); }

# --no-build without built binaries fails with a clear message (no bazel-bin
# in the runfiles tree).
if out=$(scripts/install.sh --prefix "$tmp/nobuild" --no-build 2>&1); then
  fail "--no-build without binaries succeeded"
fi
grep -q 'not found or not executable: .*bazel-bin/daemon/qkvshared (build it, or drop --no-build)' \
  <<<"$out" || fail "unexpected --no-build error: $out"
[[ ! -e $tmp/nobuild ]] || fail "--no-build failure left files in $tmp/nobuild"

scripts/install.sh --prefix "$prefix" --binaries "$bins" >"$tmp/first.log"
cat "$tmp/first.log"

etc=$prefix/etc/qkvshare
share=$prefix/share/qkvshare
for f in bin/qkvshared bin/qkvctl; do
  [[ -x $prefix/$f ]] || fail "$f missing or not executable"
  [[ $(stat -c %a "$prefix/$f") == 755 ]] || fail "$f mode $(stat -c %a "$prefix/$f")"
done
for f in "$etc/daemon.yaml" "$etc/workflows/story.yaml" "$etc/workflows/story_mixed.yaml" \
    "$share/models/stories260K/config.json" "$share/models/stories260K/tokenizer.json" \
    "$prefix/lib/systemd/system/qkvshared.service" "$prefix/share/doc/qkvshare/operations.md"; do
  [[ -f $f ]] || fail "missing $f"
  [[ $(stat -c %a "$f") == 644 ]] || fail "$f mode $(stat -c %a "$f")"
done
cmp models/stories260K/model.safetensors "$share/models/stories260K/model.safetensors" ||
  fail "model.safetensors differs"
[[ ! -e $share/models/stories260K/golden ]] || fail "test goldens were installed"

# Paths adjusted: the model path is absolute and names the installed model.
grep -qx "    path: $share/models/stories260K      # HF directory (config.json, model.safetensors, tokenizer.json)" \
  "$etc/daemon.yaml" || fail "daemon.yaml model path not rewritten: $(grep 'path:' "$etc/daemon.yaml")"
diff <(grep -v '^    path:' configs/daemon.yaml) <(grep -v '^    path:' "$etc/daemon.yaml") ||
  fail "daemon.yaml differs beyond the model path"

# The unit runs the installed binary with the installed config and verifies.
unit=$prefix/lib/systemd/system/qkvshared.service
grep -qx "ExecStart=$prefix/bin/qkvshared --config $etc/daemon.yaml" "$unit" ||
  fail "unit ExecStart: $(grep '^ExecStart=' "$unit")"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
if grep -i qkvshared <<<"$out"; then fail "systemd-analyze verify warned about the unit"; fi

# The installed qkvctl runs: help, and exit 2 with one line when no daemon.
"$prefix/bin/qkvctl" --help | grep -q '^Exit codes:' || fail "installed qkvctl --help"
set +e
err=$("$prefix/bin/qkvctl" --addr "unix://$tmp/none.sock" status 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 ]] || fail "qkvctl status without a daemon: exit $rc"
[[ $(wc -l <<<"$err") == 1 ]] || fail "qkvctl error is not one line: $err"

# The installed daemon accepts the installed config, loads the installed
# model and serves the installed qkvctl (on a private socket and instance).
check=$("$prefix/bin/qkvshared" --config "$etc/daemon.yaml" --check_config) ||
  fail "qkvshared --check_config on the installed config: $check"
num_workflows=$(find "$etc/workflows" -name '*.yaml' | wc -l)
grep -q ": OK (1 model(s), 3 agent(s), ${num_workflows} workflow(s))\$" <<<"$check" ||
  fail "check_config (expected ${num_workflows} workflows): $check"
sock_dir=$(mktemp -d /tmp/qkvinst.XXXXXX)
"$prefix/bin/qkvshared" --config "$etc/daemon.yaml" --listen "unix://$sock_dir/q.sock" \
  --instance "install_test_$$" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
trap 'kill -TERM $daemon_pid 2>/dev/null; rm -rf "$sock_dir"' EXIT
qkvctl=("$prefix/bin/qkvctl" --addr "unix://$sock_dir/q.sock")
for _ in $(seq 1 300); do
  "${qkvctl[@]}" status >/dev/null 2>&1 && break
  kill -0 $daemon_pid 2>/dev/null || fail "installed daemon exited: $(cat "$tmp/daemon.log")"
  sleep 0.1
done
"${qkvctl[@]}" status | grep -q '^state      serving' || fail "daemon not serving: $(cat "$tmp/daemon.log")"
run=$("${qkvctl[@]}" submit story --input "Once upon a time" --max-new-tokens 4 --wait) ||
  fail "submit --wait on the installed daemon: $run"
grep -q '^\[task .* finished\]$' <<<"$run" || fail "task did not finish: $run"
kill -TERM $daemon_pid
wait $daemon_pid || fail "installed daemon exit status $? on SIGTERM"
trap 'rm -rf "$sock_dir"' EXIT

# Idempotent: a second run changes nothing.
before=$(snapshot)
scripts/install.sh --prefix "$prefix" --binaries "$bins" >"$tmp/second.log"
n=$(sed -n 's/^install: \([0-9]*\) files installed, 0 unchanged, 0 configs kept$/\1/p' "$tmp/first.log")
[[ -n $n ]] || fail "first run summary: $(tail -1 "$tmp/first.log")"
grep -qx "install: 0 files installed, $n unchanged, 0 configs kept" "$tmp/second.log" ||
  fail "second run: $(grep '^install: [0-9]' "$tmp/second.log")"
[[ $(snapshot) == "$before" ]] || fail "second run changed the tree"

# An edited config is kept; the shipped one lands beside it as .new.
echo "# local edit" >>"$etc/daemon.yaml"
edited=$(sha256sum <"$etc/daemon.yaml")
scripts/install.sh --prefix "$prefix" --binaries "$bins" >"$tmp/third.log"
[[ $(sha256sum <"$etc/daemon.yaml") == "$edited" ]] || fail "edited daemon.yaml overwritten"
cmp -s <(sed '$d' "$etc/daemon.yaml") "$etc/daemon.yaml.new" || fail "daemon.yaml.new is not the shipped file"
grep -q "daemon.yaml kept (edited)" "$tmp/third.log" || fail "no notice about the kept config"
echo "PASS"
