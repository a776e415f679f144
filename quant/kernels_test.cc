#include "quant/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "base/cpu_info.h"
#include "base/dtype.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "quant/bit_plan.h"
#include "quant/fp16.h"
#include "quant/kernels_internal.h"
#include "quant/kv_view.h"

namespace qkvshare::quant {
namespace {

using internal::KernelPath;

// One layer's K or V in the KV-cache layout [heads, capacity, head_dim].
class Tensor {
 public:
  Tensor(DType dtype, int heads, int head_dim, int64_t tokens, int64_t capacity)
      : dtype_(dtype),
        heads_(heads),
        head_dim_(head_dim),
        tokens_(tokens),
        capacity_(capacity),
        bytes_(DTypeSize(dtype) * heads * capacity * head_dim, 0) {}

  KvView view() {
    return {bytes_.data(), dtype_, heads_, head_dim_, capacity_ * head_dim_, tokens_};
  }
  ConstKvView cview() { return view(); }
  int channels() const { return heads_ * head_dim_; }
  int64_t tokens() const { return tokens_; }
  int64_t Index(int64_t t, int c) const {
    return (c / head_dim_) * capacity_ * head_dim_ + t * head_dim_ + c % head_dim_;
  }
  float Get(int64_t t, int c) const { return GetRaw(Index(t, c)); }
  void Set(int64_t t, int c, float v) { SetRaw(Index(t, c), v); }
  float GetRaw(int64_t i) const {
    switch (dtype_) {
      case DType::kBF16:
        return Bf16ToFloat(U16()[i]);
      case DType::kF16:
        return HalfToFloat(U16()[i]);
      default:
        return reinterpret_cast<const float*>(bytes_.data())[i];
    }
  }
  void SetRaw(int64_t i, float v) {
    switch (dtype_) {
      case DType::kBF16:
        MutU16()[i] = FloatToBf16(v);
        break;
      case DType::kF16:
        MutU16()[i] = FloatToHalf(v);
        break;
      default:
        reinterpret_cast<float*>(bytes_.data())[i] = v;
    }
  }
  void Fill(uint8_t byte) { std::fill(bytes_.begin(), bytes_.end(), byte); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  const uint16_t* U16() const { return reinterpret_cast<const uint16_t*>(bytes_.data()); }
  uint16_t* MutU16() { return reinterpret_cast<uint16_t*>(bytes_.data()); }
  DType dtype_;
  int heads_, head_dim_;
  int64_t tokens_, capacity_;
  std::vector<uint8_t> bytes_;
};

// KV-like data: per-channel offsets (outlier channels, as in keys) plus noise.
void FillRandom(Tensor& x, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, scale);
  std::vector<float> offset(x.channels());
  for (float& o : offset) o = noise(rng) * ((rng() % 8 == 0) ? 8.0f : 0.5f);
  for (int64_t t = 0; t < x.tokens(); ++t) {
    for (int c = 0; c < x.channels(); ++c) x.Set(t, c, offset[c] + noise(rng));
  }
}

std::vector<uint8_t> RandomBits(int64_t n, uint32_t seed, bool with16 = true) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bits(n);
  for (auto& b : bits) {
    const int r = static_cast<int>(rng() % (with16 ? 8 : 7));
    b = static_cast<uint8_t>(r == 7 ? 16 : r + 2);
  }
  return bits;
}

// Largest |rounding error| when a value v' is stored in `dtype` as v: the
// unit roundoff 2^-p (p = 8 significand bits for bf16, 11 for fp16) of |v'|,
// with |v'| <= |v| (1 + 2^-7).
double OutputRounding(DType dtype, double v) {
  const double a = std::fabs(v);
  switch (dtype) {
    case DType::kBF16:
      return a * std::ldexp(1.0, -8) * (1 + std::ldexp(1.0, -7)) + 1e-38;
    case DType::kF16:
      return a * std::ldexp(1.0, -11) * (1 + std::ldexp(1.0, -10)) + std::ldexp(1.0, -25);
    default:
      return 0.0;
  }
}

// Per element: the error bound of docs/quantization.md ("Error bounds"),
// recomputed from the source values and the spec, not from the packed bytes.
class BoundModel {
 public:
  BoundModel(const Tensor& x, const GroupSpec& spec, const std::vector<uint8_t>& bits)
      : x_(x), spec_(spec), bits_(bits) {}

  // Bound on |x - deq(q(x))| before rounding to the destination dtype.
  double Bound(int64_t t, int c) const {
    const int b = bits_[t];
    const double v = x_.Get(t, c);
    if (b == 16) return std::fabs(v - HalfToFloat(FloatToHalf(static_cast<float>(v))));
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    if (spec_.axis == GroupAxis::kPerChannel) {
      const int64_t t0 = t / spec_.group_size * spec_.group_size;
      const int64_t t1 = std::min<int64_t>(t0 + spec_.group_size, x_.tokens());
      for (int64_t u = t0; u < t1; ++u) {
        if (bits_[u] == 16) continue;
        mn = std::min(mn, x_.Get(u, c));
        mx = std::max(mx, x_.Get(u, c));
      }
    } else {
      const int c0 = c / spec_.group_size * spec_.group_size;
      const int c1 = std::min(c0 + spec_.group_size, x_.channels());
      for (int k = c0; k < c1; ++k) {
        mn = std::min(mn, x_.Get(t, k));
        mx = std::max(mx, x_.Get(t, k));
      }
    }
    const double lo = HalfToFloat(FloatToHalf(mn + 0.0f, Fp16Rounding::kDown));
    const double hi = HalfToFloat(FloatToHalf(mx + 0.0f, Fp16Rounding::kUp));
    const double step = (hi - lo) / ((1 << b) - 1);
    // fp32 arithmetic in quantize and dequantize (docs/quantization.md):
    // eps <= 8.5 u (|lo| + |hi|), u = 2^-24.
    const double arith = 8.5 * std::ldexp(1.0, -24) * (std::fabs(lo) + std::fabs(hi));
    return step / 2 + arith;
  }

 private:
  const Tensor& x_;
  GroupSpec spec_;
  const std::vector<uint8_t>& bits_;
};

absl::Status RoundTrip(KernelPath path, Tensor& src, const GroupSpec& spec,
                       const std::vector<uint8_t>& bits, Tensor& dst,
                       std::vector<uint8_t>* packed_out = nullptr) {
  std::vector<uint8_t> packed(PackedBytes(src.channels(), spec, bits));
  absl::Status s =
      internal::QuantizeWithPath(path, src.cview(), spec, bits, absl::MakeSpan(packed));
  if (!s.ok()) return s;
  s = internal::DequantizeWithPath(path, packed, spec, bits, dst.view());
  if (packed_out != nullptr) *packed_out = std::move(packed);
  return s;
}

std::vector<KernelPath> SupportedPaths() { return {KernelPath::kScalar, KernelPath::kSimd}; }

const char* AxisName(GroupAxis a) { return a == GroupAxis::kPerChannel ? "K" : "V"; }

// ---- error bounds ------------------------------------------------------------

struct BoundCase {
  DType src, dst;
};

class RoundTripBoundTest : public ::testing::TestWithParam<BoundCase> {};

TEST_P(RoundTripBoundTest, EveryWidthBothAxesWithinBound) {
  const BoundCase bc = GetParam();
  constexpr int kHeads = 3, kHeadDim = 64;
  constexpr int64_t kTokens = 100, kCapacity = 128;  // 100: not a multiple of G = 32
  Tensor src(bc.src, kHeads, kHeadDim, kTokens, kCapacity);
  FillRandom(src, 1);
  for (KernelPath path : SupportedPaths()) {
    for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
      for (int b : {2, 3, 4, 5, 6, 7, 8, 16}) {
        const GroupSpec spec{axis, 32};
        const std::vector<uint8_t> bits(kTokens, static_cast<uint8_t>(b));
        Tensor dst(bc.dst, kHeads, kHeadDim, kTokens, kCapacity);
        ASSERT_TRUE(RoundTrip(path, src, spec, bits, dst).ok());
        const BoundModel model(src, spec, bits);
        double max_ratio = 0;  // max |error| / bound: must be <= 1
        for (int64_t t = 0; t < kTokens; ++t) {
          for (int c = 0; c < src.channels(); ++c) {
            const double x = src.Get(t, c), y = dst.Get(t, c);
            const double bound = model.Bound(t, c) + OutputRounding(bc.dst, y);
            ASSERT_LE(std::fabs(x - y), bound)
                << internal::KernelPathName(path) << " " << AxisName(axis) << " " << b
                << " bits, token " << t << " channel " << c << ": x=" << x << " y=" << y;
            if (bound > 0) max_ratio = std::max(max_ratio, std::fabs(x - y) / bound);
          }
        }
        // The bound is tight: some element lands near half a step away.
        if (b <= 8 && bc.dst == DType::kF32) {
          EXPECT_GT(max_ratio, 0.8) << b;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RoundTripBoundTest,
                         ::testing::Values(BoundCase{DType::kF32, DType::kF32},
                                           BoundCase{DType::kBF16, DType::kF32},
                                           BoundCase{DType::kF32, DType::kBF16},
                                           BoundCase{DType::kBF16, DType::kBF16},
                                           BoundCase{DType::kF16, DType::kF16}));

TEST(KernelsTest, MixedWidthsInOneGroupIncluding16) {
  constexpr int64_t kTokens = 70;
  Tensor src(DType::kF32, 4, 8, kTokens, kTokens);  // stories260K: 4 kv heads, head_dim 8
  FillRandom(src, 2);
  std::vector<uint8_t> bits = RandomBits(kTokens, 3);
  // A 16-bit token with a far-out value must not widen its K groups' range.
  bits[5] = 16;
  for (int c = 0; c < src.channels(); ++c) src.Set(5, c, 1000.0f + c);
  for (KernelPath path : SupportedPaths()) {
    for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
      for (int g : {32, 7, 1}) {
        const GroupSpec spec{axis, g};
        Tensor dst(DType::kF32, 4, 8, kTokens, kTokens + 3);
        ASSERT_TRUE(RoundTrip(path, src, spec, bits, dst).ok());
        const BoundModel model(src, spec, bits);
        for (int64_t t = 0; t < kTokens; ++t) {
          for (int c = 0; c < src.channels(); ++c) {
            ASSERT_LE(std::fabs(src.Get(t, c) - dst.Get(t, c)), model.Bound(t, c))
                << AxisName(axis) << " G=" << g << " token " << t << " channel " << c;
            if (t != 5 && bits[t] <= 8 && axis == GroupAxis::kPerChannel && g == 32) {
              ASSERT_LT(model.Bound(t, c), 6.0);  // range did not include the 1000s
            }
          }
        }
      }
    }
  }
}

// ---- edge cases ----------------------------------------------------------------

TEST(KernelsTest, ConstantGroupsAreExactWhenRepresentable) {
  Tensor src(DType::kF32, 2, 64, 40, 40);
  for (int64_t t = 0; t < 40; ++t) {
    for (int c = 0; c < 128; ++c) src.Set(t, c, c < 64 ? 0.375f : -3.0f);
  }
  for (KernelPath path : SupportedPaths()) {
    for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
      for (int b : {2, 3, 8}) {
        Tensor dst(DType::kF32, 2, 64, 40, 40);
        const std::vector<uint8_t> bits(40, static_cast<uint8_t>(b));
        ASSERT_TRUE(RoundTrip(path, src, {axis, 32}, bits, dst).ok());
        for (int64_t t = 0; t < 40; ++t) {
          for (int c = 0; c < 128; ++c) ASSERT_EQ(dst.Get(t, c), src.Get(t, c));
        }
      }
    }
  }
}

TEST(KernelsTest, ConstantGroupOfANonHalfValueStaysWithinOneHalfUlp) {
  Tensor src(DType::kF32, 1, 8, 3, 3);
  for (int64_t t = 0; t < 3; ++t) {
    for (int c = 0; c < 8; ++c) src.Set(t, c, 0.1f);
  }
  const std::vector<uint8_t> bits(3, 4);
  for (KernelPath path : SupportedPaths()) {
    Tensor dst(DType::kF32, 1, 8, 3, 3);
    ASSERT_TRUE(RoundTrip(path, src, {GroupAxis::kPerChannel, 32}, bits, dst).ok());
    // lo = 0.0999755859375, hi = 0.10003662109375 (fp16 neighbours of 0.1).
    for (int c = 0; c < 8; ++c) EXPECT_NEAR(dst.Get(0, c), 0.1, 0.5 * 6.103515625e-05 / 15 + 1e-9);
  }
}

TEST(KernelsTest, SingleTokenAndHeadDims) {
  for (int head_dim : {8, 24, 64, 128}) {
    for (int64_t tokens : {1, 31, 33}) {
      Tensor src(DType::kF32, 3, head_dim, tokens, tokens + 5);
      FillRandom(src, 10 + head_dim);
      const std::vector<uint8_t> bits = RandomBits(tokens, 4);
      for (KernelPath path : SupportedPaths()) {
        for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
          const GroupSpec spec{axis, 32};
          Tensor dst(DType::kF32, 3, head_dim, tokens, tokens);
          ASSERT_TRUE(RoundTrip(path, src, spec, bits, dst).ok());
          const BoundModel model(src, spec, bits);
          for (int64_t t = 0; t < tokens; ++t) {
            for (int c = 0; c < src.channels(); ++c) {
              ASSERT_LE(std::fabs(src.Get(t, c) - dst.Get(t, c)), model.Bound(t, c))
                  << "head_dim " << head_dim << " tokens " << tokens;
            }
          }
        }
      }
    }
  }
}

TEST(KernelsTest, DequantizeWritesOnlyTheViewTokensOfACacheWithSpareCapacity) {
  constexpr int64_t kTokens = 37, kCapacity = 64;
  Tensor src(DType::kBF16, 3, 64, kTokens, kTokens);
  FillRandom(src, 5);
  const std::vector<uint8_t> bits = RandomBits(kTokens, 6);
  for (KernelPath path : SupportedPaths()) {
    for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
      Tensor dst(DType::kBF16, 3, 64, kTokens, kCapacity);
      dst.Fill(0xAB);
      ASSERT_TRUE(RoundTrip(path, src, {axis, 32}, bits, dst).ok());
      const auto* raw = reinterpret_cast<const uint16_t*>(dst.bytes().data());
      for (int h = 0; h < 3; ++h) {
        for (int64_t t = kTokens; t < kCapacity; ++t) {
          for (int d = 0; d < 64; ++d) ASSERT_EQ(raw[(h * kCapacity + t) * 64 + d], 0xABAB);
        }
      }
    }
  }
}

TEST(KernelsTest, LargeButRepresentableMagnitudes) {
  Tensor src(DType::kF32, 1, 16, 4, 4);
  for (int64_t t = 0; t < 4; ++t) {
    for (int c = 0; c < 16; ++c) src.Set(t, c, (c % 2 ? 1.0f : -1.0f) * (65504.0f - 100 * c));
  }
  const std::vector<uint8_t> bits = {8, 3, 16, 2};
  for (KernelPath path : SupportedPaths()) {
    for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
      const GroupSpec spec{axis, 32};
      Tensor dst(DType::kF32, 1, 16, 4, 4);
      ASSERT_TRUE(RoundTrip(path, src, spec, bits, dst).ok());
      const BoundModel model(src, spec, bits);
      for (int64_t t = 0; t < 4; ++t) {
        for (int c = 0; c < 16; ++c) {
          ASSERT_LE(std::fabs(src.Get(t, c) - dst.Get(t, c)), model.Bound(t, c));
        }
      }
    }
  }
}

TEST(KernelsTest, NonFiniteAndOutOfRangeValuesAreErrorsNamingTokenAndChannel) {
  struct Case {
    float value;
    int bits;
    const char* want;
  };
  const Case cases[] = {
      {std::numeric_limits<float>::quiet_NaN(), 3, "NaN at token 5, channel 17 (head 2, dim 1)"},
      {std::numeric_limits<float>::infinity(), 16, "Inf at token 5, channel 17 (head 2, dim 1)"},
      {-std::numeric_limits<float>::infinity(), 2, "Inf at token 5, channel 17"},
      {70000.0f, 8, "value 70000 at token 5, channel 17 (head 2, dim 1) is beyond the fp16"},
  };
  for (const Case& k : cases) {
    Tensor src(DType::kF32, 4, 8, 40, 40);
    FillRandom(src, 9);
    src.Set(5, 17, k.value);
    src.Set(30, 3, k.value);  // a later one is not the one reported
    std::vector<uint8_t> bits(40, 4);
    bits[5] = static_cast<uint8_t>(k.bits);
    for (KernelPath path : SupportedPaths()) {
      for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
        const GroupSpec spec{axis, 32};
        std::vector<uint8_t> out(PackedBytes(32, spec, bits));
        const absl::Status s =
            internal::QuantizeWithPath(path, src.cview(), spec, bits, absl::MakeSpan(out));
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_NE(std::string(s.message()).find(k.want), std::string::npos) << s;
      }
    }
  }
}

TEST(KernelsTest, InvalidArgumentsAreRejectedBeforeWriting) {
  Tensor src(DType::kF32, 2, 8, 10, 10);
  FillRandom(src, 11);
  const std::vector<uint8_t> bits(10, 3);
  const GroupSpec spec{GroupAxis::kPerToken, 32};
  std::vector<uint8_t> out(PackedBytes(16, spec, bits));
  EXPECT_TRUE(Quantize(src.cview(), spec, bits, absl::MakeSpan(out)).ok());

  std::vector<uint8_t> short_out(out.size() - 1);
  EXPECT_EQ(Quantize(src.cview(), spec, bits, absl::MakeSpan(short_out)).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<uint8_t> nine_bits(10, 9);
  EXPECT_EQ(Quantize(src.cview(), spec, nine_bits, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<uint8_t> fewer(9, 3);
  EXPECT_EQ(Quantize(src.cview(), spec, fewer, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quantize(src.cview(), {GroupAxis::kPerToken, 0}, bits, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  ConstKvView overlapping = src.cview();
  overlapping.head_stride = 8;  // heads would overlap
  EXPECT_EQ(Quantize(overlapping, spec, bits, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PackedBytes(16, spec, nine_bits), 0u);

  Tensor dst(DType::kF32, 2, 8, 10, 10);
  dst.Fill(0x11);
  const std::vector<uint8_t> before = dst.bytes();
  const std::vector<uint8_t> other_bits(10, 4);
  EXPECT_EQ(Dequantize(out, spec, other_bits, dst.view()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Dequantize(absl::MakeSpan(out).subspan(1), spec, bits, dst.view()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dst.bytes(), before);
  EXPECT_TRUE(Dequantize(out, spec, bits, dst.view()).ok());
  EXPECT_NE(dst.bytes(), before);
}

TEST(KernelsTest, CorruptParametersOrRawValuesAreRejectedBeforeWriting) {
  Tensor src(DType::kF32, 2, 8, 40, 40);
  FillRandom(src, 12);
  std::vector<uint8_t> bits(40, 3);
  bits[35] = 16;
  for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
    const GroupSpec spec{axis, 32};
    std::vector<uint8_t> packed(PackedBytes(16, spec, bits));
    ASSERT_TRUE(Quantize(src.cview(), spec, bits, absl::MakeSpan(packed)).ok());
    // The blob starts with lo[16], hi[16] of block 0 (K) or lo[1], hi[1] of
    // token 0 (V); token 35's raw row follows the first 35 tokens.
    const size_t hi0 = axis == GroupAxis::kPerChannel ? 32 : 2;
    const size_t raw35 = PackedBytes(16, spec, absl::MakeSpan(bits).subspan(0, 35));
    struct Corruption {
      size_t offset;
      uint16_t value;
    };
    const Corruption corruptions[] = {
        {hi0, 0x7c00},    // hi = +Inf
        {hi0, 0xfe00},    // hi = NaN
        {hi0, 0xd800},    // hi = -128 < lo
        {raw35, 0x7c00},  // a raw value of token 35 = +Inf
    };
    for (const Corruption& k : corruptions) {
      std::vector<uint8_t> bad = packed;
      bad[k.offset] = static_cast<uint8_t>(k.value & 0xff);
      bad[k.offset + 1] = static_cast<uint8_t>(k.value >> 8);
      Tensor dst(DType::kF32, 2, 8, 40, 40);
      dst.Fill(0x22);
      const std::vector<uint8_t> before = dst.bytes();
      const absl::Status s = Dequantize(bad, spec, bits, dst.view());
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << AxisName(axis) << k.offset;
      EXPECT_NE(std::string(s.message()).find("packed data"), std::string::npos) << s;
      EXPECT_EQ(dst.bytes(), before);
    }
  }
}

// ---- layout ----------------------------------------------------------------------

TEST(KernelsTest, PackedBytesAreDense) {
  const GroupSpec k{GroupAxis::kPerChannel, 32};
  const GroupSpec v{GroupAxis::kPerToken, 32};
  // 64 channels, 32 tokens: K params 64 * 4 bytes per 32-token block.
  EXPECT_EQ(PackedBytes(64, k, std::vector<uint8_t>(32, 3)), 256u + 32u * 24u);
  EXPECT_EQ(PackedBytes(64, k, std::vector<uint8_t>(32, 2)), 256u + 32u * 16u);
  EXPECT_EQ(PackedBytes(64, k, std::vector<uint8_t>(33, 2)), 512u + 33u * 16u);  // tail block
  EXPECT_EQ(PackedBytes(64, k, std::vector<uint8_t>(33, 16)), 33u * 128u);       // no params
  // V: 2 groups of 32 channels per token, 4 bytes each.
  EXPECT_EQ(PackedBytes(64, v, std::vector<uint8_t>(32, 3)), 32u * (8u + 24u));
  EXPECT_EQ(PackedBytes(64, v, std::vector<uint8_t>(10, 2)), 10u * (8u + 16u));
  EXPECT_EQ(PackedBytes(70, v, std::vector<uint8_t>(1, 3)), 3u * 4u + 27u);  // 210 bits -> 27 B
  EXPECT_EQ(PackedBytes(64, v, std::vector<uint8_t>{3, 16}), 8u + 24u + 128u);
  // The smollm-135m layer slice of bench/quant_bench: 4096 tokens x 192 channels.
  const std::vector<uint8_t> three(4096, 3);
  EXPECT_EQ(PackedBytes(192, k, three), 128u * 192u * 4u + 4096u * 72u);
}

TEST(KernelsTest, DecodesHandBuiltPerTokenBuffer) {
  // One token, 8 channels (1 head), 3 bits, one group: lo = -1 (0xbc00),
  // hi = 6 (0x4600), step 1; codes 0..7 LSB-first: 0x88 0xc6 0xfa.
  const std::vector<uint8_t> packed = {0x00, 0xbc, 0x00, 0x46, 0x88, 0xc6, 0xfa};
  const std::vector<uint8_t> bits = {3};
  const GroupSpec spec{GroupAxis::kPerToken, 32};
  ASSERT_EQ(PackedBytes(8, spec, bits), packed.size());
  for (KernelPath path : SupportedPaths()) {
    Tensor dst(DType::kF32, 1, 8, 1, 1);
    ASSERT_TRUE(internal::DequantizeWithPath(path, packed, spec, bits, dst.view()).ok());
    for (int c = 0; c < 8; ++c) EXPECT_EQ(dst.Get(0, c), c - 1.0f);
    // And the encoder produces exactly these bytes.
    std::vector<uint8_t> again(packed.size());
    ASSERT_TRUE(
        internal::QuantizeWithPath(path, dst.cview(), spec, bits, absl::MakeSpan(again)).ok());
    EXPECT_EQ(again, packed);
  }
}

TEST(KernelsTest, DecodesHandBuiltPerChannelBuffer) {
  // 2 tokens x 8 channels, K grouping: params lo[8] then hi[8] for the block,
  // then token 0 at 2 bits (16 bits -> 2 bytes), token 1 raw fp16 (16 bytes).
  // Channel c: lo = 0, hi = 3 (0x4200), step 1 at 2 bits.
  std::vector<uint8_t> packed;
  for (int c = 0; c < 8; ++c) packed.insert(packed.end(), {0x00, 0x00});
  for (int c = 0; c < 8; ++c) packed.insert(packed.end(), {0x00, 0x42});
  packed.insert(packed.end(), {0xe4, 0x1b});                              // codes 0,1,2,3,3,2,1,0
  for (int c = 0; c < 8; ++c) packed.insert(packed.end(), {0x00, 0x3c});  // 1.0
  const std::vector<uint8_t> bits = {2, 16};
  const GroupSpec spec{GroupAxis::kPerChannel, 32};
  ASSERT_EQ(PackedBytes(8, spec, bits), packed.size());
  const float want0[8] = {0, 1, 2, 3, 3, 2, 1, 0};
  for (KernelPath path : SupportedPaths()) {
    Tensor dst(DType::kBF16, 2, 4, 2, 5);  // 2 heads of 4: channels cross a head boundary
    ASSERT_TRUE(internal::DequantizeWithPath(path, packed, spec, bits, dst.view()).ok());
    for (int c = 0; c < 8; ++c) {
      EXPECT_EQ(dst.Get(0, c), want0[c]);
      EXPECT_EQ(dst.Get(1, c), 1.0f);
    }
  }
}

// ---- SIMD == scalar ----------------------------------------------------------------

struct Shape {
  int heads, head_dim;
  int64_t tokens;
  int group_size;
};

// Every Highway target this binary has and this CPU runs (down to the
// portable fallback HWY_BASELINE_SCALAR: EMU128, or SCALAR where Highway
// deems EMU128 miscompiled, e.g. GCC < 12.3) against the scalar reference: identical packed bytes
// and identical dequantized outputs, for odd shapes (vector tails), all dtypes, both axes, mixed
// widths with raw 16-bit tokens.
TEST(KernelsTest, EverySimdTargetMatchesScalarBitForBit) {
  const std::vector<int64_t> targets = UsableSimdTargets();
  ASSERT_FALSE(targets.empty());
  bool saw_fallback = false;
  for (int64_t target : targets) {
    const char* name = hwy::TargetName(target);
    saw_fallback |= target == HWY_BASELINE_SCALAR;
    ASSERT_TRUE(ForceSimdTarget(name).ok()) << name;
    ASSERT_EQ(BestSimdTargetName(), name);
    const Shape shapes[] = {{4, 8, 100, 32}, {3, 64, 77, 32}, {2, 128, 40, 32}, {3, 5, 50, 7},
                            {3, 24, 65, 20}, {1, 3, 9, 2},    {5, 64, 33, 64},  {3, 64, 64, 1},
                            {2, 36, 41, 16}, {3, 100, 20, 48}};
    uint32_t seed = 100;
    for (const Shape& sh : shapes) {
      for (DType in : {DType::kF32, DType::kBF16, DType::kF16}) {
        Tensor src(in, sh.heads, sh.head_dim, sh.tokens, sh.tokens + 3);
        ++seed;
        FillRandom(src, seed, seed % 2 ? 1.0f : 1e-3f);
        src.Set(0, 0, -0.0f);  // signed zeros must not change the stored params
        src.Set(sh.tokens - 1, 0, 0.0f);
        const std::vector<uint8_t> bits = RandomBits(sh.tokens, ++seed);
        for (GroupAxis axis : {GroupAxis::kPerChannel, GroupAxis::kPerToken}) {
          const GroupSpec spec{axis, sh.group_size};
          for (DType out : {DType::kF32, DType::kBF16, DType::kF16}) {
            Tensor a(out, sh.heads, sh.head_dim, sh.tokens, sh.tokens);
            Tensor b(out, sh.heads, sh.head_dim, sh.tokens, sh.tokens);
            std::vector<uint8_t> pa, pb;
            ASSERT_TRUE(RoundTrip(KernelPath::kScalar, src, spec, bits, a, &pa).ok());
            ASSERT_TRUE(RoundTrip(KernelPath::kSimd, src, spec, bits, b, &pb).ok()) << name;
            ASSERT_EQ(pa, pb) << name << ": packed bytes differ: heads " << sh.heads << " head_dim "
                              << sh.head_dim << " G " << sh.group_size << " " << AxisName(axis)
                              << " in " << DTypeName(in);
            ASSERT_EQ(a.bytes(), b.bytes())
                << name << ": dequantized output differs, out " << DTypeName(out);
          }
        }
      }
    }
  }
  ASSERT_TRUE(ForceSimdTarget("").ok());
  if (HWY_TARGETS & HWY_BASELINE_SCALAR) {  // not compiled in where NEON is the baseline
    EXPECT_TRUE(saw_fallback) << hwy::TargetName(HWY_BASELINE_SCALAR) << " was not tested";
  }
  std::printf("kernels_test: SIMD targets checked against scalar: %s\n", CpuSummary().c_str());
}

}  // namespace
}  // namespace qkvshare::quant
