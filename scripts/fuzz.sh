#!/usr/bin/env bash
# Builds and runs a libFuzzer target with AddressSanitizer and UBSan:
#   card_decoder  the CacheCard decoder/validator
#                 (cachecard/fuzz/card_decoder_fuzzer.cc; the default)
#   config        the YAML configuration loader
#                 (daemon/config/fuzz/config_fuzzer.cc)
#   tokenizer     the tokenizer's Encode/Decode on the bundled stories260K
#                 tokenizer.json (agents/tokenizer/fuzz/tokenizer_fuzzer.cc)
#   gguf          the GGUF reader and the model conversion (config,
#                 tokenizer text, weights; agents/gguf/fuzz/gguf_fuzzer.cc)
# Built outside Bazel with Debian's clang++-14 (packages clang-14,
# libclang-rt-14-dev, libfuzzer-14-dev), compiling the needed .cc files
# directly; objects are cached, so a second run only recompiles what changed.
# Seed corpora: card_decoder from cachecard/fuzz/make_seeds.cc plus the
# checked-in golden card; config from configs/; tokenizer from the model's
# golden prompts and a few hand-written strings; gguf from the GGUF test files
# (agents/gguf/testdata; the larger ones arrive truncated to the max length).
#
# Usage: scripts/fuzz.sh [TARGET] [--seconds N] [--workdir DIR]
#   TARGET        card_decoder (default), config, tokenizer or gguf
#   --seconds N   fuzzing time (default 60); scripts/test.sh passes
#                 ${QKV_FUZZ_SECONDS:-60}
#   --workdir DIR objects, binaries, corpora and crash files
#                 (default ${TMPDIR:-/tmp}/qkvshare-fuzz)
# Exit status: 0 when the run found nothing, non-zero on a crash, a leak, an
# invariant violation, or a build failure. Crashing inputs are left in
# <workdir>/<target>/ (crash-*), reproduce with:
#   <workdir>/<target>_fuzzer <crash file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
workdir="${TMPDIR:-/tmp}/qkvshare-fuzz"
target=card_decoder
usage="usage: $0 [card_decoder|config|tokenizer|gguf] [--seconds N] [--workdir DIR]"
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    card_decoder|config|tokenizer|gguf) target="$1"; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done

CXX=${CXX_FUZZ:-clang++-14}
if ! command -v "$CXX" >/dev/null; then
  echo "fuzz: $CXX not found (install clang-14 libclang-rt-14-dev libfuzzer-14-dev)" >&2
  exit 1
fi

mkdir -p "$workdir/obj" "$workdir/$target"
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
CXXFLAGS=(-std=c++17 -O1 -g -fno-omit-frame-pointer -ffp-contract=off -I. -Wno-unused-command-line-argument)
# The Debian libraries the sources use (absl from third_party/system.BUILD).
mapfile -t ABSL < <(grep -o -- '"-labsl_[a-z0-9_]*"' third_party/system.BUILD | tr -d '"' | sort -u)
LIBS=(-Wl,--start-group "${ABSL[@]}" -Wl,--end-group -lxxhash -lpthread)

case "$target" in
  card_decoder)
    FUZZER=cachecard/fuzz/card_decoder_fuzzer.cc
    EXTRA_MAINS=(cachecard/fuzz/make_seeds.cc)
    LIB_SOURCES=(
  agents/kv_cache.cc
  quant/kernels.cc quant/kernels_scalar.cc quant/kernels_hwy.cc base/cpu_info.cc
  cachecard/format.cc cachecard/ids.cc cachecard/content_id.cc cachecard/metadata.cc cachecard/metadata_codec.cc
  cachecard/io.cc cachecard/file_io.cc cachecard/card.cc cachecard/chain.cc
  cachecard/dtype_convert.cc cachecard/section_codec.cc cachecard/parallel.cc cachecard/card_writer.cc
  cachecard/build.cc cachecard/inject.cc cachecard/flatten.cc cachecard/card_file.cc
  cachecard/inspect.cc cachecard/testing/synthetic_kv.cc
    )
    LIBS+=(-lhwy -lcrypto)
    MAX_LEN=16384 ;;
  config)
    FUZZER=daemon/config/fuzz/config_fuzzer.cc
    EXTRA_MAINS=()
    LIB_SOURCES=(daemon/config/config.cc daemon/config/yaml_reader.cc agents/weights/quantized_matrix.cc
      agents/weights/block_formats.cc agents/tokenizer/utf8.cc)
    LIBS+=(-lyaml-cpp)
    MAX_LEN=8192 ;;
  tokenizer)
    FUZZER=agents/tokenizer/fuzz/tokenizer_fuzzer.cc
    EXTRA_MAINS=()
    mapfile -t LIB_SOURCES < <(ls agents/tokenizer/*.cc | grep -vE '_test\.cc$|_bench\.cc$|crosscheck\.cc$')
    LIBS+=(-lpcre2-8 -licuuc -licudata)
    CXXFLAGS+=(-DPCRE2_CODE_UNIT_WIDTH=8)
    MAX_LEN=4096 ;;
  gguf)
    FUZZER=agents/gguf/fuzz/gguf_fuzzer.cc
    EXTRA_MAINS=()
    LIB_SOURCES=(agents/gguf/gguf_file.cc agents/gguf/gguf_dequant.cc agents/gguf/gguf_model.cc
      agents/gguf/gguf_tokenizer.cc agents/safetensors.cc agents/model_config.cc
      agents/file_util.cc agents/kv_cache.cc agents/weights/quantized_matrix.cc
      agents/weights/block_formats.cc)
    MAX_LEN=65536 ;;
esac

# Objects are rebuilt when their source, or any project header, is newer.
newest_header=$(find agents base cachecard daemon quant -name '*.h' -printf '%T@\n' | sort -n | tail -1)
newest_header=${newest_header%.*}
obj_of() { echo "$workdir/obj/${1//\//_}.o"; }
stale=()
for src in "${LIB_SOURCES[@]}" "$FUZZER" "${EXTRA_MAINS[@]}"; do
  obj=$(obj_of "$src")
  if [[ ! -f $obj || $src -nt $obj ]] || ((newest_header >= $(stat -c %Y "$obj"))); then
    stale+=("$src")
  fi
done

echo "fuzz: building with $CXX in $workdir (${#stale[@]} files to compile)" >&2
if ((${#stale[@]})); then
  export CXX workdir
  export FLAGS="${CXXFLAGS[*]} ${SANITIZE[*]} -fsanitize=fuzzer-no-link"
  printf '%s\n' "${stale[@]}" | xargs -P "$(nproc)" -I{} sh -c \
    'obj="$workdir/obj/$(echo {} | tr / _).o"; $CXX $FLAGS -c {} -o "$obj"'
fi
objs=()
for src in "${LIB_SOURCES[@]}"; do objs+=("$(obj_of "$src")"); done
"$CXX" "${SANITIZE[@]}" -fsanitize=fuzzer "$(obj_of "$FUZZER")" \
  "${objs[@]}" "${LIBS[@]}" -o "$workdir/${target}_fuzzer"

corpus="$workdir/$target"
case "$target" in
  card_decoder)
    "$CXX" "${SANITIZE[@]}" "$(obj_of cachecard/fuzz/make_seeds.cc)" "${objs[@]}" "${LIBS[@]}" \
      -o "$workdir/make_seeds"
    "$workdir/make_seeds" "$corpus" >&2
    cp cachecard/testdata/golden_v*.qkvcard "$corpus/" ;;
  config)
    cp configs/daemon.yaml "$corpus/seed_daemon.yaml"
    for f in configs/workflows/*.yaml; do cp "$f" "$corpus/seed_workflow_$(basename "$f")"; done ;;
  tokenizer)
    export QKV_FUZZ_TOKENIZER="$PWD/models/stories260K/tokenizer.json"
    printf '\x01Once upon a time, there was a little girl.' >"$corpus/seed_story"
    printf '\x00<s> </s> <unk>\n\t  spaces  ' >"$corpus/seed_special"
    printf '\x01\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80' >"$corpus/seed_unicode"
    printf '\x02\x01\x00\x00\x00\xff\xff\xff\xff\x03\x01\x00\x00' >"$corpus/seed_ids" ;;
  gguf)
    cp agents/gguf/testdata/*.gguf "$corpus/" ;;
esac

echo "fuzz: running $target for ${seconds}s" >&2
cd "$workdir"
exec "./${target}_fuzzer" -max_total_time="$seconds" -max_len="$MAX_LEN" -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 "$target"
