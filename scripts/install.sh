#!/usr/bin/env bash
# Installs qkvshared, qkvctl, the configuration, the bundled model and the
# systemd unit. Idempotent: a second run changes nothing; an edited config
# file is kept (the new one is written beside it as FILE.new). No network.
#
# Usage: scripts/install.sh [--prefix DIR] [--sysconfdir DIR] [--no-build] [--binaries DIR]
#   --prefix DIR      install root (default /usr/local)
#   --sysconfdir DIR  config root (default /etc for the /usr and /usr/local
#                     prefixes, else PREFIX/etc)
#   --no-build        install the binaries already in bazel-bin/
#   --binaries DIR    install DIR/qkvshared and DIR/qkvctl (implies --no-build)
#
# Layout:
#   PREFIX/bin/qkvshared, PREFIX/bin/qkvctl
#   SYSCONFDIR/qkvshare/daemon.yaml (model path made absolute), .../workflows/*.yaml
#   PREFIX/share/qkvshare/models/stories260K/ (the bundled model)
#   PREFIX/share/doc/qkvshare/ (operations.md, configuration.md)
#   PREFIX/lib/systemd/system/qkvshared.service (ExecStart pointing at the above)
# Users, groups and `systemctl` are left to the operator (docs/operations.md).
set -euo pipefail

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }
die() { echo "install: ERROR: $*" >&2; exit 1; }

prefix=/usr/local
sysconfdir=
build=1
bindir_src=
while (($#)); do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --sysconfdir) sysconfdir=${2:?--sysconfdir needs a directory}; shift 2 ;;
    --sysconfdir=*) sysconfdir=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    --binaries) bindir_src=${2:?--binaries needs a directory}; build=0; shift 2 ;;
    --binaries=*) bindir_src=${1#*=}; build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ $prefix == /* ]] || prefix="$PWD/$prefix"
prefix=${prefix%/}
if [[ -z $sysconfdir ]]; then
  case $prefix in
    /usr|/usr/local) sysconfdir=/etc ;;
    *) sysconfdir=$prefix/etc ;;
  esac
fi
[[ $sysconfdir == /* ]] || sysconfdir="$PWD/$sysconfdir"
sysconfdir=${sysconfdir%/}
[[ -z $bindir_src || $bindir_src == /* ]] || bindir_src="$PWD/$bindir_src"

cd "$(dirname "$0")/.."
root=$PWD

# Build (by target name: both must exist in the checkout).
targets=(//daemon:qkvshared //qkvctl:qkvctl)
if ((build)); then
  echo "install: bazel build -c opt ${targets[*]}"
  bazel build -c opt "${targets[@]}" || die "bazel build failed (see above)"
fi
if [[ -n $bindir_src ]]; then
  qkvshared_bin=$bindir_src/qkvshared
  qkvctl_bin=$bindir_src/qkvctl
else
  qkvshared_bin=$root/bazel-bin/daemon/qkvshared
  qkvctl_bin=$root/bazel-bin/qkvctl/qkvctl
fi
for b in "$qkvshared_bin" "$qkvctl_bin"; do
  [[ -x $b ]] || die "not found or not executable: $b (build it, or drop --no-build)"
done

changed=0
unchanged=0
kept=0

# install_file SRC DST MODE: copies when DST is missing or different.
install_file() {
  local src=$1 dst=$2 mode=$3
  if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
    chmod "$mode" "$dst"
    unchanged=$((unchanged + 1))
    return
  fi
  install -D -m "$mode" "$src" "$dst"
  echo "  $dst"
  changed=$((changed + 1))
}

# install_config SRC DST: like install_file, but never overwrites a file the
# operator changed: the new version goes to DST.new.
install_config() {
  local src=$1 dst=$2
  if [[ -f $dst ]] && ! cmp -s "$src" "$dst"; then
    if [[ -f $dst.new ]] && cmp -s "$src" "$dst.new"; then
      kept=$((kept + 1))
      return
    fi
    install -D -m 0644 "$src" "$dst.new"
    echo "  $dst kept (edited); the shipped version is $dst.new"
    kept=$((kept + 1))
    return
  fi
  install_file "$src" "$dst" 0644
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

echo "install: prefix $prefix, config $sysconfdir/qkvshare"
install_file "$qkvshared_bin" "$prefix/bin/qkvshared" 0755
install_file "$qkvctl_bin" "$prefix/bin/qkvctl" 0755

# The bundled model: the Hugging Face files the daemon loads (not the goldens).
model_dst=$prefix/share/qkvshare/models/stories260K
for f in README.md config.json generation_config.json model.safetensors tokenizer.json \
    tokenizer_config.json; do
  install_file "models/stories260K/$f" "$model_dst/$f" 0644
done

# daemon.yaml: the model path relative to the repository's configs/ becomes the
# installed model directory.
grep -q '^ *path: \.\./models/stories260K' configs/daemon.yaml ||
  die "configs/daemon.yaml: no 'path: ../models/stories260K' line to rewrite"
sed "s#^\( *path: \)\.\./models/stories260K#\1$prefix/share/qkvshare/models/stories260K#" \
  configs/daemon.yaml >"$stage/daemon.yaml"
install_config "$stage/daemon.yaml" "$sysconfdir/qkvshare/daemon.yaml"
for w in configs/workflows/*.yaml; do
  install_config "$w" "$sysconfdir/qkvshare/workflows/$(basename "$w")"
done

sed "s#^ExecStart=.*#ExecStart=$prefix/bin/qkvshared --config $sysconfdir/qkvshare/daemon.yaml#" \
  configs/systemd/qkvshared.service >"$stage/qkvshared.service"
install_file "$stage/qkvshared.service" "$prefix/lib/systemd/system/qkvshared.service" 0644

for d in docs/operations.md docs/configuration.md; do
  [[ -f $d ]] && install_file "$d" "$prefix/share/doc/qkvshare/$(basename "$d")" 0644
done

echo "install: $changed files installed, $unchanged unchanged, $kept configs kept"
if ((changed > 0)); then
  cat <<NEXT
next steps (as root; docs/operations.md):
  getent group qkvshare >/dev/null || groupadd --system qkvshare
  id qkvshare >/dev/null 2>&1 || useradd --system --gid qkvshare --no-create-home \\
      --home-dir /nonexistent --shell /usr/sbin/nologin qkvshare
  systemctl daemon-reload && systemctl enable --now qkvshared
NEXT
fi
