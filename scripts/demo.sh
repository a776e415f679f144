#!/usr/bin/env bash
# The main job: sets up, builds, starts qkvshared on the bundled model and runs
# a 3-hop task through it. Until the daemon lands this only builds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bazel build //...
echo "demo: build OK (the daemon is not built yet)"
