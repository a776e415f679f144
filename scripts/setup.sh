#!/usr/bin/env bash
# Installs the Debian 12 packages qkvshare builds and runs with. Idempotent:
# when everything is present it changes nothing and runs no apt command.
# Usage: scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap protobuf-compiler protobuf-compiler-grpc
  # libraries (all from Debian 12)
  libgrpc++-dev libprotobuf-dev libspdlog-dev libfmt-dev libabsl-dev libtorch-dev
  libyaml-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libpcre2-dev libicu-dev libxxhash-dev libssl-dev libsystemd-dev prometheus-cpp-dev libcli11-dev
  # portable SIMD kernels (run-time dispatch over SSE4/AVX2/AVX-512/NEON/SVE)
  libhwy-dev
  # workflow route regexes (linear-time matching on model output)
  libre2-dev
  # optimized BLAS for libtorch: without it fp32 matmuls use the reference BLAS (40x slower)
  libopenblas0-pthread
  # fuzzing (libFuzzer + ASan), unit verification, plots, model generator
  clang-14 libclang-rt-14-dev libfuzzer-14-dev systemd gnuplot-nox python3-numpy
  # Python SDK (python/): gRPC client, tests, Hugging Face cache adapters, offline pip install
  python3-grpcio python3-protobuf python3-pytest python3-torch python3-pip python3-setuptools
  python3-venv
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi

echo "setup: installing ${#missing[@]} missing Debian packages: ${missing[*]}"
SUDO=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null; then
    SUDO=(sudo)
  else
    echo "setup: ERROR: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -q >/tmp/qkvshare-apt-update.log 2>&1; then
  echo "setup: ERROR: 'apt-get update' failed; log in /tmp/qkvshare-apt-update.log:" >&2
  tail -5 /tmp/qkvshare-apt-update.log >&2
  exit 1
fi
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >/tmp/qkvshare-apt-install.log 2>&1; then
  echo "setup: ERROR: 'apt-get install' failed for: ${missing[*]}; log in /tmp/qkvshare-apt-install.log:" >&2
  tail -15 /tmp/qkvshare-apt-install.log >&2
  exit 1
fi
echo "setup: done"
