#!/usr/bin/env bash
# Verifies configs/systemd/qkvshared.service with systemd-analyze.
#
# `systemd-analyze verify` requires ExecStart's binary to exist, and the
# daemon is not installed on a build machine: the test verifies a copy whose
# ExecStart binary is /bin/true (same arguments), and separately checks that
# the real ExecStart names /usr/local/bin/qkvshared --config /etc/qkvshare/daemon.yaml
# (scripts/install.sh's default layout).
set -euo pipefail

unit_src=configs/systemd/qkvshared.service
daemon_yaml=configs/daemon.yaml
work="${TEST_TMPDIR:-$(mktemp -d)}/unit"
mkdir -p "$work"
unit="$work/qkvshared.service"

fail() { echo "FAIL: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null || fail "systemd-analyze not installed (scripts/setup.sh installs systemd)"

# 1. The real ExecStart.
grep -qx 'ExecStart=/usr/local/bin/qkvshared --config /etc/qkvshare/daemon.yaml' "$unit_src" ||
  fail "ExecStart is not '/usr/local/bin/qkvshared --config /etc/qkvshare/daemon.yaml'"

# 2. systemd-analyze verify on the copy: no output about our unit, exit 0.
sed 's#^ExecStart=/usr/local/bin/qkvshared #ExecStart=/bin/true #' "$unit_src" >"$unit"
grep -q '^ExecStart=/bin/true --config' "$unit" || fail "could not rewrite ExecStart"
set +e
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$unit" 2>&1)
rc=$?
set -e
ours=$(grep -i 'qkvshared' <<<"$out" || true)
if ((rc != 0)) || [[ -n $ours ]]; then
  echo "$out" >&2
  fail "systemd-analyze verify: exit $rc, output above"
fi
echo "verify: OK"

# 3. The unit's contract.
for key in 'Type=notify' 'WatchdogSec=30s' 'ExecReload=/bin/kill -HUP $MAINPID' \
    'User=qkvshare' 'Group=qkvshare' 'RuntimeDirectory=qkvshare' 'RuntimeDirectoryMode=0750' \
    'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'PrivateDevices=yes' 'MemoryDenyWriteExecute=no' 'LockPersonality=yes' \
    'SystemCallArchitectures=native' 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6'; do
  grep -qxF "$key" "$unit_src" || fail "missing '$key'"
done
# Nothing may make /dev/shm unusable for card segments.
if grep -qE '^(InaccessiblePaths|ReadOnlyPaths|TemporaryFileSystem)=.*(/dev/shm|/dev( |$))' "$unit_src"; then
  fail "/dev/shm must stay writable (card store)"
fi
grep -q '^PrivateIPC=yes' "$unit_src" && fail "PrivateIPC=yes would hide card segments"

# 4. TimeoutStopSec > shutdown_grace_seconds + 2 s (metrics server stop).
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit_src")
grace=$(sed -n 's/^shutdown_grace_seconds: *\([0-9.]*\).*/\1/p' "$daemon_yaml")
[[ -n $stop && -n $grace ]] || fail "cannot read TimeoutStopSec ($stop) or shutdown_grace_seconds ($grace)"
awk -v s="$stop" -v g="$grace" 'BEGIN { exit !(s > g + 2) }' ||
  fail "TimeoutStopSec=${stop}s must exceed shutdown_grace_seconds ${grace} + 2"
echo "stop timeout: ${stop}s > grace ${grace}s + 2s"

# 5. Offline security exposure (0 = fully locked down, 10 = unprotected).
if score=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null |
    sed -n 's/.*Overall exposure level for qkvshared.service: \([0-9.]*\).*/\1/p'); then
  [[ -n $score ]] || fail "systemd-analyze security printed no exposure level"
  awk -v x="$score" 'BEGIN { exit !(x <= 2.0) }' || fail "exposure level $score > 2.0"
  echo "security exposure: $score"
fi
echo "PASS"
