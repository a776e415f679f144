#!/usr/bin/env bash
# Cross-compiles the torch-free test targets for aarch64 with Debian's
# aarch64-linux-gnu-g++ against the arm64 multiarch libraries and runs them
# under qemu-aarch64 (user mode), printing the Highway targets they ran
# (NEON, and SVE/SVE2 with QEMU_CPU=max). Ends with "N passed, N failed"
# (plus "N skipped" when a test needs an arm64 library that is not installed)
# and exits non-zero when anything failed.
#
# Nothing here lists sources by hand: the test targets are every cc_test that
# does not depend on libtorch (`bazel query`), and their compile and link
# command lines come from Bazel's own actions (`bazel aquery`, the host
# configuration): the same sources, copts (e.g. -ffp-contract=off), defines and
# linkopts, with the host compiler swapped for the cross one and -O1. Each
# object is built once and shared by every test that links it.
#
# Usage: scripts/test_aarch64.sh [TARGET_PATTERN...]
#   default patterns: //base/... //quant/... //cachecard/... //agents/kernels/... and
#   every other torch-free cc_test in //...
# Env: QKV_AARCH64_JOBS (default: nproc), QKV_AARCH64_OUT (build dir, default
#   /tmp/qkvshare-aarch64), QEMU_CPU (default max: NEON + SVE + SVE2),
#   QKV_AARCH64_OPT (default -O1).
set -uo pipefail
cd "$(dirname "$0")/.."

# ---- packages (apt only when something is missing, as scripts/setup.sh) ------
HOST_PACKAGES=(g++-aarch64-linux-gnu qemu-user-static)
ARM64_PACKAGES=(libabsl-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64 libhwy-dev:arm64
  libxxhash-dev:arm64 libssl-dev:arm64)
missing=()
for p in "${HOST_PACKAGES[@]}" "${ARM64_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "test_aarch64: installing ${missing[*]}"
  SUDO=()
  ((EUID == 0)) || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    "${SUDO[@]}" dpkg --add-architecture arm64 || {
      echo "0 passed, 1 failed (dpkg --add-architecture arm64)"
      exit 1
    }
  fi
  if ! { "${SUDO[@]}" apt-get update -q &&
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >/tmp/qkvshare-aarch64-apt.log 2>&1; then
    tail -15 /tmp/qkvshare-aarch64-apt.log >&2
    echo "0 passed, 1 failed (apt-get install ${missing[*]})"
    exit 1
  fi
fi

PATTERNS=("$@")
((${#PATTERNS[@]} > 0)) || PATTERNS=(//...)
OUT=${QKV_AARCH64_OUT:-/tmp/qkvshare-aarch64}
JOBS=${QKV_AARCH64_JOBS:-$(nproc)}
export QEMU_CPU=${QEMU_CPU:-max}
mkdir -p "$OUT"

# ---- the torch-free tests and Bazel's actions for them ------------------------
universe=$(printf ' + %s' "${PATTERNS[@]}")
universe=${universe# + }
if ! bazel query --noshow_progress \
  "kind(cc_test, $universe) except rdeps(//..., @system//:torch)" >"$OUT/tests.txt" \
  2>"$OUT/query.log"; then
  cat "$OUT/query.log" >&2
  echo "0 passed, 1 failed (bazel query)"
  exit 1
fi
if [[ ! -s $OUT/tests.txt ]]; then
  echo "0 passed, 1 failed (no torch-free tests under ${PATTERNS[*]})"
  exit 1
fi
tests_set=$(paste -sd+ "$OUT/tests.txt")
if ! bazel aquery --noshow_progress --include_param_files --output=jsonproto \
  "mnemonic('CppCompile|CppLink', deps($tests_set))" >"$OUT/aquery.json" 2>"$OUT/aquery.log"; then
  tail -20 "$OUT/aquery.log" >&2
  echo "0 passed, 1 failed (bazel aquery)"
  exit 1
fi

# ---- plan: cross compile and link commands (a Makefile, built once) ----------
python3 - "$OUT" <<'EOF' || { echo "0 passed, 1 failed (plan)"; exit 1; }
import json, os, re, shlex, subprocess, sys

out = sys.argv[1]
opt = os.environ.get("QKV_AARCH64_OPT", "-O1")
cxx = "aarch64-linux-gnu-g++"
tests = [l.strip() for l in open(os.path.join(out, "tests.txt")) if l.strip()]
aq = json.load(open(os.path.join(out, "aquery.json")))
label_of = {t["id"]: t["label"] for t in aq.get("targets", [])}

def obj_path(p):  # bazel-out/k8-opt/bin/quant/_objs/x/y.pic.o -> $OUT/obj/quant/_objs/x/y.o
    return os.path.join(out, "obj", re.sub(r"^bazel-out/[^/]+/bin/", "", p)
                        .replace(".pic.o", ".o"))

_found = {}
def has_arm64_lib(name):
    if name not in _found:
        r = subprocess.run([cxx, f"-print-file-name=lib{name}.so"], capture_output=True, text=True)
        r2 = subprocess.run([cxx, f"-print-file-name=lib{name}.a"], capture_output=True, text=True)
        _found[name] = os.path.isabs(r.stdout.strip()) or os.path.isabs(r2.stdout.strip())
    return _found[name]

def solib_label(name):  # Bazel's solib name "quant_Slibkernels" -> "//quant:kernels"
    path = re.sub(r"_(S|U)", lambda m: "/" if m.group(1) == "S" else "_", name)
    pkg, _, lib = path.rpartition("/")
    return f"//{pkg}:{lib[3:]}" if lib.startswith("lib") else None

objects_of = {}  # label -> {source: object}
compiles = {}    # object -> command
generated = set()
for a in aq.get("actions", []):
    if a["mnemonic"] != "CppCompile":
        continue
    args, label = a["arguments"], label_of.get(a.get("targetId"), "?")
    src, o = args[args.index("-c") + 1], obj_path(args[args.index("-o") + 1])
    if src.startswith(("bazel-out/", "external/")):
        generated.add(label)  # needs a generated source: not cross-built here
        continue
    if src in objects_of.setdefault(label, {}):
        continue  # the .o and .pic.o of one source: build it once
    keep, skip_next = [], False
    for x in args[1:]:
        if skip_next:
            skip_next = False
        elif x in ("-c", "-o", "-MF"):
            skip_next = True
        elif not (x in ("-MD", "-fPIC") or x.startswith(("-frandom-seed=", "-B", "-fuse-ld="))
                  or re.fullmatch(r"-O\d?", x)):
            keep.append(x)
    objects_of[label][src] = o
    compiles[o] = (src, [cxx] + keep + [opt, "-MMD", "-MP", "-c", src, "-o", o])

mk, runs, needed = ["all:"], [], set()
links = {label_of.get(a.get("targetId")): a["arguments"] for a in aq.get("actions", [])
         if a["mnemonic"] == "CppLink"}
for label in tests:
    args = links.get(label)
    if args is None:
        runs.append(f"SKIP\t{label}\tno link action")
        continue
    objs = list(objects_of.get(label, {}).values())
    libs, flags, missing, gen = [], [], [], label in generated
    for x in args[1:]:
        if x.startswith("-l"):
            dep = solib_label(x[2:])
            if dep in objects_of or dep in generated:
                objs += objects_of.get(dep, {}).values()
                gen |= dep in generated
            elif has_arm64_lib(x[2:]):
                libs.append(x)
            else:
                missing.append(x[2:])
        elif x == "-pthread":
            flags.append(x)
        elif x.endswith((".a", ".lo")) and x.startswith("bazel-out/"):
            gen = True  # a static archive of workspace code: not handled, report it
    if missing or gen:
        why = f"no arm64 lib{' lib'.join(sorted(set(missing)))}" if missing else \
            "needs generated sources"
        runs.append(f"SKIP\t{label}\t{why}")
        continue
    binary = os.path.join(out, "bin", label.lstrip("/").replace(":", "/"))
    objs = sorted(set(objs))
    needed.update(objs)
    mk.append(f"all: {binary}")
    mk.append(f"{binary}: {' '.join(objs)}\n\t@mkdir -p $(@D)\n\t@echo '  LINK {label}'\n"
              f"\t@{cxx} -o $@ {' '.join(objs)} {' '.join(flags + libs)}")
    runs.append(f"RUN\t{label}\t{binary}")
for o in sorted(needed):
    src, cmd = compiles[o]
    mk.append(f"{o}: {src}\n\t@mkdir -p $(@D)\n\t@echo '  CXX {src}'\n\t@"
              + " ".join(shlex.quote(c).replace("$", "$$") for c in cmd))
mk += [f"-include {o[:-2]}.d" for o in sorted(needed)]  # header dependencies
open(os.path.join(out, "Makefile"), "w").write("\n".join(mk) + "\n")
open(os.path.join(out, "runs.txt"), "w").write("\n".join(runs) + "\n")
EOF

# ---- build (each object once; make skips what is up to date) ------------------
echo "test_aarch64: building $(grep -c '^RUN' "$OUT/runs.txt") test binaries with $JOBS jobs" \
  "($(aarch64-linux-gnu-g++ --version | head -1))"
make -k -j"$JOBS" -f "$OUT/Makefile" all 2>&1 | grep -v '^make' | tail -n 200
build_rc=${PIPESTATUS[0]}

# ---- run under qemu -------------------------------------------------------------
export QEMU_LD_PREFIX=/
passed=0 failed=0 skipped=0
tmp_root=$(mktemp -d /tmp/qkvshare-aarch64-run.XXXXXX)
while IFS=$'\t' read -r kind label binary; do
  [[ -n $kind ]] || continue
  if [[ $kind == SKIP ]]; then
    echo "$label SKIPPED ($binary)"
    skipped=$((skipped + 1))
    continue
  fi
  if [[ ! -x $binary ]]; then
    echo "$label FAILED TO BUILD"
    failed=$((failed + 1))
    continue
  fi
  log="$binary.test.log"
  t0=$(date +%s)
  mkdir -p "$tmp_root/$label"
  if TEST_TMPDIR="$tmp_root/$label" qemu-aarch64-static "$binary" >"$log" 2>&1; then
    echo "$label PASSED in $(($(date +%s) - t0))s"
    passed=$((passed + 1))
  else
    echo "$label FAILED in $(($(date +%s) - t0))s (log: $log)"
    tail -30 "$log"
    failed=$((failed + 1))
  fi
  # The Highway targets a test checked (kernels/dtype tests print them).
  grep -h "targets checked\|checked against scalar" "$log" | sed 's/^/    /'
done <"$OUT/runs.txt"
rm -rf "$tmp_root"
if ((build_rc != 0)) && ((failed == 0)); then failed=1; fi
echo "test_aarch64 (QEMU_CPU=$QEMU_CPU): ${passed} passed, ${failed} failed, ${skipped} skipped"
((failed == 0))
