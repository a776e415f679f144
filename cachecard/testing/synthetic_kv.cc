#include "cachecard/testing/synthetic_kv.h"

#include <cmath>
#include <cstring>

#include "base/status_macros.h"

namespace qkvshare::cachecard::testing {
namespace {

// splitmix64: small, fast, and the same on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1).
  double Uniform() { return (static_cast<double>(Next() >> 11) + 0.5) * 0x1.0p-53; }
  // Standard normal (Box-Muller).
  double Normal() {
    return std::sqrt(-2.0 * std::log(Uniform())) * std::cos(6.283185307179586 * Uniform());
  }

 private:
  uint64_t state_;
};

void Store(void* base, DType dtype, size_t index, float value) {
  if (dtype == DType::kF32) {
    std::memcpy(static_cast<uint8_t*>(base) + index * 4, &value, 4);
  } else {
    // bf16 here; f16 caches are not produced by the runtime.
    const uint16_t h = FloatToBf16(value);
    std::memcpy(static_cast<uint8_t*>(base) + index * 2, &h, 2);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<agents::KvCache>> MakeSyntheticCache(const agents::KvShape& shape,
                                                                    DType dtype, int64_t tokens,
                                                                    uint64_t seed,
                                                                    int64_t max_tokens) {
  if (dtype == DType::kF16) return absl::InvalidArgumentError("synthetic caches are f32 or bf16");
  QKV_ASSIGN_OR_RETURN(
      std::unique_ptr<agents::KvCache> cache,
      agents::KvCache::Create(shape, dtype, max_tokens > 0 ? max_tokens : tokens, tokens));
  Rng rng(seed);
  const int C = shape.channels();
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    // Keys: per-channel offset and scale; ~3% outlier channels with large offsets.
    std::vector<float> offset(C), scale(C);
    for (int c = 0; c < C; ++c) {
      const bool outlier = rng.Uniform() < 0.03;
      offset[c] = static_cast<float>(rng.Normal() * (outlier ? 8.0 : 1.0));
      scale[c] = static_cast<float>(0.5 + rng.Uniform() * (outlier ? 3.0 : 1.0));
    }
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      for (int64_t t = 0; t < tokens; ++t) {
        for (int d = 0; d < shape.head_dim; ++d) {
          const int c = h * shape.head_dim + d;
          const size_t index =
              static_cast<size_t>(h * cache->head_stride() + t * shape.head_dim + d);
          Store(cache->k_data(layer), dtype, index,
                offset[c] + scale[c] * static_cast<float>(rng.Normal()));
          Store(cache->v_data(layer), dtype, index, static_cast<float>(rng.Normal()));
        }
      }
    }
  }
  QKV_RETURN_IF_ERROR(cache->SetLength(tokens));
  return cache;
}

float CacheElement(const agents::KvCache& cache, int layer, bool is_key, int head, int64_t token,
                   int dim) {
  const size_t index =
      static_cast<size_t>(head * cache.head_stride() + token * cache.shape().head_dim + dim);
  const auto* base =
      static_cast<const uint8_t*>(is_key ? cache.k_data(layer) : cache.v_data(layer));
  if (cache.dtype() == DType::kF32) {
    float f;
    std::memcpy(&f, base + index * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, base + index * 2, 2);
  return Bf16ToFloat(h);
}

std::vector<uint8_t> Snapshot(const agents::KvCache& cache, int64_t tokens) {
  const agents::KvShape& shape = cache.shape();
  const size_t run = static_cast<size_t>(tokens) * shape.head_dim * DTypeSize(cache.dtype());
  const size_t stride = static_cast<size_t>(cache.head_stride()) * DTypeSize(cache.dtype());
  std::vector<uint8_t> out;
  out.reserve(run * shape.num_kv_heads * shape.num_layers * 2);
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    for (const void* data : {cache.k_data(layer), cache.v_data(layer)}) {
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        const auto* p = static_cast<const uint8_t*>(data) + h * stride;
        out.insert(out.end(), p, p + run);
      }
    }
  }
  return out;
}

bool SameBytes(const agents::KvCache& a, const agents::KvCache& b, int64_t tokens) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         Snapshot(a, tokens) == Snapshot(b, tokens);
}

quant::BitPlan RandomPlan(int64_t tokens, const std::vector<uint8_t>& choices, uint64_t seed) {
  Rng rng(seed);
  quant::BitPlan plan;
  uint64_t sum = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    plan.k_bits.push_back(choices[rng.Next() % choices.size()]);
    plan.v_bits.push_back(choices[rng.Next() % choices.size()]);
    sum += plan.k_bits.back() + plan.v_bits.back();
  }
  plan.avg_bits = tokens > 0 ? static_cast<double>(sum) / (2.0 * tokens) : 0;
  return plan;
}

quant::BitPlan UniformPlan(int64_t tokens, uint8_t bits) {
  quant::BitPlan plan;
  plan.k_bits.assign(tokens, bits);
  plan.v_bits.assign(tokens, bits);
  plan.avg_bits = bits;
  return plan;
}

}  // namespace qkvshare::cachecard::testing
