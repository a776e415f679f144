// card_bench: CacheCard build and inject time and card size.
//
// Shape: smollm-135m's KV cache (30 layers, 3 kv heads, head_dim 64) holding
// --tokens (default 1024 and 4096) tokens of synthetic KV data with realistic
// statistics (cachecard/testing/synthetic_kv.h: keys normal with per-channel
// offsets and scales, ~3% outlier channels; values normal), in an fp32 (or
// --dtype=bf16) KvCache. For each encoding:
//   full        the cache's dtype, raw (the full-precision transfer baseline)
//   16, 8, 4, 3 every token's K and V at that width (16 = raw fp16)
//   mix3        the adaptive controller (quant/controller.h) at a 3.0-bit
//               budget over Zipf-like synthetic importance
// and group sizes G = 32 and 64 (keys per-channel, values per-token), it
// reports:
//   bytes       the whole card (header, metadata, group parameters, padding)
//   x fp16      card bytes / bytes of an fp16 KV cache of the same tokens
//   bits/el     card bits per K/V element
//   build       WriteCard() (cachecard/build.h: validation, quantization,
//               checksums, metadata) into a reused, already-faulted buffer
//               (ms, and GB/s of cache bytes read)
//   fresh pages the extra cost of building into fresh memory (a new card
//               buffer or shm segment): mmap + first touch of every page of
//               card bytes + munmap (ms)
//   inject      InjectCard() into an empty cache with room (checksums,
//               dequantization; ms, and GB/s of cache bytes written)
//   x memcpy    inject time / time to memcpy the same cache bytes (baseline
//               measured in the same run)
// Times are thread CPU time (CLOCK_THREAD_CPUTIME_ID: per core, robust to
// other load on the machine), MEDIAN of --reps, one thread: build and inject
// are pinned to the calling thread (cachecard::SetMaxSectionThreads(1)),
// which would otherwise split large cards across cores; the multi-threaded
// end-to-end effect is in bench/handoff_bench.
//
// The header prints the CPU model and the SIMD target (base/cpu_info.h).
//
// Usage: bazel run -c opt //bench:card_bench -- [--tokens=1024,4096] [--reps=5] [--dtype=bf16]
//        [--simd=avx2|sse4|neon|...]
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "agents/kv_cache.h"
#include "base/cpu_info.h"
#include "bench/bench_util.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/inject.h"
#include "cachecard/parallel.h"
#include "cachecard/testing/synthetic_kv.h"
#include "quant/controller.h"

ABSL_FLAG(std::string, tokens, "1024,4096", "comma-separated token counts");
ABSL_FLAG(int, reps, 5, "timed repetitions; the median is reported");
ABSL_FLAG(std::string, simd, "", "force this Highway target (e.g. avx2, sse4, neon); default best");
ABSL_FLAG(std::string, dtype, "f32", "cache dtype (source and destination): f32 or bf16");

namespace qkvshare::cachecard {
namespace {

constexpr agents::KvShape kShape{30, 3, 64};  // smollm-135m

using bench::Median;
using bench::ThreadSeconds;

void Die(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "card_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

// Zipf-like importance: a few heavy tokens, a long light tail, shuffled.
std::vector<float> SyntheticImportance(int64_t n, uint32_t seed) {
  std::vector<float> imp(n);
  for (int64_t i = 0; i < n; ++i) imp[i] = 1.0f / static_cast<float>(i + 1);
  std::shuffle(imp.begin(), imp.end(), std::mt19937(seed));
  return imp;
}

// A sink over one buffer reused for every card (no allocation or page
// faults inside the timed region once it has been touched).
class ReusedSink final : public CardSink {
 public:
  explicit ReusedSink(size_t capacity) : buffer_(capacity, 0) {}
  absl::Status Begin(uint64_t card_bytes) override {
    if (card_bytes > buffer_.size()) return absl::ResourceExhaustedError("ReusedSink too small");
    size_ = card_bytes;
    return absl::OkStatus();
  }
  absl::Span<uint8_t> Window(uint64_t offset, uint64_t bytes) override {
    return absl::MakeSpan(buffer_).subspan(offset, bytes);
  }
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    std::memcpy(buffer_.data() + offset, data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Span<const uint8_t> bytes() const { return absl::MakeConstSpan(buffer_).first(size_); }

 private:
  std::vector<uint8_t> buffer_;
  uint64_t size_ = 0;
};

// Seconds to map `bytes` of fresh anonymous memory, touch every page and
// unmap it (what building into a new buffer or shm segment adds), median of `reps`.
double FreshPagesSeconds(size_t bytes, int reps) {
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const double t0 = ThreadSeconds();
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) Die(absl::ResourceExhaustedError("mmap"), "fresh pages");
    for (size_t i = 0; i < bytes; i += 4096) static_cast<volatile uint8_t*>(p)[i] = 1;
    ::munmap(p, bytes);
    times.push_back(ThreadSeconds() - t0);
  }
  return Median(times);
}

struct Row {
  std::string name;
  CardEncoding encoding;
  int group_size = 0;  // 0 for full
};

std::vector<Row> Rows(int64_t tokens) {
  std::vector<Row> rows = {{"full", CardEncoding::Full(), 0}};
  for (int g : {32, 64}) {
    const quant::GroupSpec k{quant::GroupAxis::kPerChannel, g};
    const quant::GroupSpec v{quant::GroupAxis::kPerToken, g};
    for (uint8_t bits : {16, 8, 4, 3}) {
      rows.push_back({std::to_string(bits),
                      CardEncoding::Quantized(testing::UniformPlan(tokens, bits), k, v), g});
    }
    const std::vector<float> importance = SyntheticImportance(tokens, 7);
    quant::AllocationRequest req;
    req.num_tokens = tokens;
    req.avg_bits = 3.0;
    req.importance = importance;
    absl::StatusOr<quant::BitPlan> plan = quant::AllocateBits(req);
    if (!plan.ok()) Die(plan.status(), "AllocateBits");
    rows.push_back({"mix3", CardEncoding::Quantized(*plan, k, v), g});
  }
  return rows;
}

// Seconds to memcpy every layer's K and V of `tokens` tokens (the bytes an
// injection writes), median of `reps`.
double MemcpySeconds(const agents::KvCache& src, agents::KvCache* dst, int64_t tokens, int reps) {
  const size_t run = static_cast<size_t>(tokens) * kShape.head_dim * DTypeSize(src.dtype());
  const size_t src_stride = src.head_stride() * DTypeSize(src.dtype());
  const size_t dst_stride = dst->head_stride() * DTypeSize(src.dtype());
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const double t0 = ThreadSeconds();
    for (int l = 0; l < kShape.num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        const auto* in = static_cast<const uint8_t*>(kv == 0 ? src.k_data(l) : src.v_data(l));
        auto* out = static_cast<uint8_t*>(kv == 0 ? dst->k_data(l) : dst->v_data(l));
        for (int h = 0; h < kShape.num_kv_heads; ++h) {
          std::memcpy(out + h * dst_stride, in + h * src_stride, run);
        }
      }
    }
    times.push_back(ThreadSeconds() - t0);
  }
  return Median(times);
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  SetMaxSectionThreads(1);  // per-core rates: see the file comment
  const int reps = absl::GetFlag(FLAGS_reps);
  if (reps < 1) {
    std::fprintf(stderr, "card_bench: --reps must be >= 1\n");
    return 2;
  }
  if (absl::Status s = ForceSimdTarget(absl::GetFlag(FLAGS_simd)); !s.ok()) {
    std::fprintf(stderr, "card_bench: --simd: %s\n", s.ToString().c_str());
    return 2;
  }
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (dtype_name != "f32" && dtype_name != "bf16") {
    std::fprintf(stderr, "card_bench: --dtype must be f32 or bf16\n");
    return 2;
  }
  const DType dtype = dtype_name == "f32" ? DType::kF32 : DType::kBF16;
  std::vector<int64_t> token_counts;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int64_t n;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::fprintf(stderr, "card_bench: bad --tokens\n");
      return 2;
    }
    token_counts.push_back(n);
  }
  std::printf(
      "card_bench: %d layers x %d kv heads x head_dim %d, %s cache; thread CPU time, MEDIAN of "
      "%d\n",
      kShape.num_layers, kShape.num_kv_heads, kShape.head_dim, dtype_name.c_str(), reps);
  std::printf("%s\n", CpuSummary().c_str());
  std::printf("GB/s = cache bytes (%s) read by build / written by inject per second\n\n",
              dtype_name.c_str());
  std::printf(
      "| tokens | encoding | G | card bytes | x fp16 | bits/el | build ms | build GB/s | "
      "fresh pages ms | inject ms | inject GB/s | inject x memcpy |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");

  for (int64_t tokens : token_counts) {
    absl::StatusOr<std::unique_ptr<agents::KvCache>> src =
        testing::MakeSyntheticCache(kShape, dtype, tokens, 42);
    if (!src.ok()) Die(src.status(), "synthetic cache");
    absl::StatusOr<std::unique_ptr<agents::KvCache>> dst =
        agents::KvCache::Create(kShape, dtype, tokens, tokens);
    if (!dst.ok()) Die(dst.status(), "destination cache");
    std::vector<int32_t> ids(tokens);
    std::iota(ids.begin(), ids.end(), 1);
    const double elements = 2.0 * kShape.num_layers * kShape.channels() * tokens;
    const double cache_bytes = elements * DTypeSize(dtype);
    const double memcpy_s = MemcpySeconds(**src, dst->get(), tokens, reps);
    ReusedSink sink(static_cast<size_t>(cache_bytes) + (size_t{1} << 20));  // > any card

    for (const Row& row : Rows(tokens)) {
      Provenance prov;
      prov.card_id.bytes.fill(1);
      std::vector<double> build_times;
      for (int r = 0; r < reps; ++r) {
        const double t0 = ThreadSeconds();
        absl::StatusOr<CardMetadata> m =
            WriteCard(**src, tokens, ids, row.encoding, ModelFingerprint{}, prov, nullptr, sink);
        build_times.push_back(ThreadSeconds() - t0);
        if (!m.ok()) Die(m.status(), "WriteCard");
      }
      absl::StatusOr<CardPtr> card = Card::Copy(sink.bytes());
      if (!card.ok()) Die(card.status(), "Card::Copy");
      const double fresh_s = FreshPagesSeconds((*card)->bytes().size(), reps);
      std::vector<double> inject_times;
      for (int r = 0; r < reps; ++r) {
        (*dst)->Truncate(0);
        const double t0 = ThreadSeconds();
        absl::Status s = InjectCard(**card, nullptr, ModelFingerprint{}, dst->get());
        inject_times.push_back(ThreadSeconds() - t0);
        if (!s.ok()) Die(s, "InjectCard");
      }
      const double build_s = Median(build_times);
      const double inject_s = Median(inject_times);
      const double bytes = static_cast<double>((*card)->bytes().size());
      std::printf(
          "| %lld | %s | %s | %.0f | %.4f | %.3f | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f |\n",
          static_cast<long long>(tokens), row.name.c_str(),
          row.group_size ? std::to_string(row.group_size).c_str() : "-", bytes,
          bytes / (2.0 * elements), 8.0 * bytes / elements, 1e3 * build_s,
          cache_bytes / build_s / 1e9, 1e3 * fresh_s, 1e3 * inject_s, cache_bytes / inject_s / 1e9,
          inject_s / memcpy_s);
    }
    std::printf("| %lld | (memcpy of the cache bytes) | | | | | | | | %.1f | %.2f | 1.00 |\n",
                static_cast<long long>(tokens), 1e3 * memcpy_s, cache_bytes / memcpy_s / 1e9);
  }
  return 0;
}

}  // namespace
}  // namespace qkvshare::cachecard

int main(int argc, char** argv) { return qkvshare::cachecard::Main(argc, argv); }
