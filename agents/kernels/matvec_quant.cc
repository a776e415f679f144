// Highway kernels of agents/kernels/matvec_quant.h: this file is compiled
// once per SIMD target (foreach_target.h) and dispatched at run time.
#include "agents/kernels/matvec_quant.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "agents/kernels/matvec_quant.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/fp16.h"

HWY_BEFORE_NAMESPACE();
namespace qkvshare::agents::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using weights::BlockQ4;
using weights::BlockQ6;
using weights::BlockQ8;
using weights::kBlockSize;

// At most 16 fp32 lanes (so 32 is a multiple of the lane count everywhere).
using DF = hn::CappedTag<float, 16>;

// Blocks prefetched ahead of the one a row reads (~1 KiB for q8): one row at
// a time with this prefetch measured 2-3x faster on Zen 3 than 4 rows per
// pass sharing the activation loads (4 interleaved weight streams defeat the
// hardware prefetcher); the prefetch itself added ~15%.
constexpr int64_t kPrefetchBlocks = 32;

// ------------------------------ q8: float widening
// x padded with zeros to whole blocks (the padding lanes of the last block of
// a row hold code 0).
const float* PaddedInput(const float* x, int64_t cols) {
  if (cols % kBlockSize == 0) return x;
  thread_local std::vector<float> padded;
  padded.assign(weights::BlocksPerRow(cols) * kBlockSize, 0.0f);
  std::memcpy(padded.data(), x, cols * sizeof(float));
  return padded.data();
}

// fp16 bits of a block scale -> float with the target's conversion (F16C
// vcvtph2ps, Arm fcvt; Highway's exact emulation elsewhere): the branches of
// scalar quant::HalfToFloat cost the q4 kernel ~45% of its time (two scales
// per 32 weights). Exact for finite values, as HalfToFloat; scales are finite.
HWY_INLINE float HalfToF32(uint16_t bits) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh;
  hwy::float16_t h;
  std::memcpy(&h, &bits, sizeof h);
  return hn::GetLane(hn::PromoteTo(d1, hn::LoadU(dh, &h)));
}

void MatVecQ8Rows(const BlockQ8* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  const float* xp = PaddedInput(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const size_t N = hn::Lanes(df);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ8* row = w + r * blocks;
    auto acc = hn::Zero(df);
    for (int64_t b = 0; b < blocks; ++b) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      const float* xb = xp + b * kBlockSize;
      auto part = hn::Zero(df);
      HWY_UNROLL(8)
      for (size_t k = 0; k < static_cast<size_t>(kBlockSize); k += N) {
        const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, row[b].qs + k)));
        part = hn::MulAdd(q, hn::LoadU(df, xb + k), part);
      }
      acc = hn::MulAdd(part, hn::Set(df, HalfToF32(row[b].d)), acc);
    }
    y[r] = hn::GetLane(hn::SumOfLanes(df, acc));
  }
}

// ------------------------------ q6: float widening
// At most 8 fp32 lanes (N divides 8): in step k the lanes read bytes
// [k, k + N) of the block's high pairs, which hold elements k + i, k + i + 8,
// k + i + 16 and k + i + 24, and bytes [k, k + N) and [k + 8, k + 8 + N) of
// its low nibbles, so each step assembles those four groups of N codes.
using DF8 = hn::CappedTag<float, 8>;

// Calls fn(g, codes) for g = 0..3 with the codes of elements [k, k + N) +
// 8 g of blk as exact floats q - 32: the code q (< 64) is or-ed into the
// mantissa of 2^23 (bits 0x4B000000 | q = 2^23 + q exactly) and 2^23 + 32
// subtracted. (A callback, not a struct of vectors: SVE vectors are sizeless.)
template <class Fn>
HWY_INLINE void ForQ6Codes(const BlockQ6& blk, size_t k, const Fn& fn) {
  const DF8 df;
  const hn::RebindToSigned<DF8> di;
  const hn::Rebind<uint8_t, DF8> du8;
  const auto magic = hn::Set(di, 0x4B000000);
  const auto nibble = hn::Set(di, 0x0F);
  const auto pair = hn::Set(di, 0x30);
  const auto bias = hn::Set(df, 8388608.0f + 32.0f);
  const auto l0 = hn::PromoteTo(di, hn::LoadU(du8, blk.ql + k));      // elements k, k + 16
  const auto l1 = hn::PromoteTo(di, hn::LoadU(du8, blk.ql + 8 + k));  // elements k + 8, k + 24
  const auto h = hn::PromoteTo(di, hn::LoadU(du8, blk.qh + k));
  auto as_float = [&](auto code) { return hn::Sub(hn::BitCast(df, code), bias); };
  fn(0, as_float(hn::Or3(hn::And(l0, nibble), hn::And(hn::ShiftLeft<4>(h), pair), magic)));
  fn(1, as_float(hn::Or3(hn::And(l1, nibble), hn::And(hn::ShiftLeft<2>(h), pair), magic)));
  fn(2, as_float(hn::Or3(hn::ShiftRight<4>(l0), hn::And(h, pair), magic)));
  fn(3, as_float(hn::Or3(hn::ShiftRight<4>(l1), hn::And(hn::ShiftRight<2>(h), pair), magic)));
}

void MatVecQ6Rows(const BlockQ6* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  const float* xp = PaddedInput(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const DF8 df;
  const size_t N = hn::Lanes(df);
  constexpr size_t kEighth = kBlockSize / 4;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ6* row = w + r * blocks;
    auto acc = hn::Zero(df);
    for (int64_t b = 0; b < blocks; ++b) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      const float* xb = xp + b * kBlockSize;
      auto part0 = hn::Zero(df);
      auto part1 = hn::Zero(df);
      for (size_t k = 0; k < kEighth; k += N) {
        ForQ6Codes(row[b], k, [&](size_t g, auto codes) {
          const auto xv = hn::LoadU(df, xb + g * kEighth + k);
          if (g % 2 == 0) {
            part0 = hn::MulAdd(codes, xv, part0);
          } else {
            part1 = hn::MulAdd(codes, xv, part1);
          }
        });
      }
      acc = hn::MulAdd(hn::Add(part0, part1), hn::Set(df, HalfToF32(row[b].d)), acc);
    }
    y[r] = hn::GetLane(hn::SumOfLanes(df, acc));
  }
}

// ------------------------------ q4: integer dot products
// The activations of one call, quantized (QuantizeActivationsQ8) once and
// reused by every row. Per thread: callers split rows across threads.
// The int8 codes are kept widened to int16, the width the dot products
// multiply in, so no row widens them again.
struct QuantizedInput {
  std::vector<int8_t> xq;
  std::vector<int16_t> x16;
  std::vector<float> dx, sums;
};

const QuantizedInput& Quantized(const float* x, int64_t cols) {
  thread_local QuantizedInput in;
  const int64_t blocks = weights::BlocksPerRow(cols);
  in.xq.resize(blocks * kBlockSize);
  in.x16.resize(blocks * kBlockSize);
  in.dx.resize(blocks);
  in.sums.resize(blocks);
  QuantizeActivationsQ8(x, cols, in.xq.data(), in.dx.data(), in.sums.data());
  std::copy(in.xq.begin(), in.xq.end(), in.x16.begin());
  return in;
}

void MatVecQ4Rows(const BlockQ4* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  const QuantizedInput& in = Quantized(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  constexpr size_t kHalf = kBlockSize / 2;
  // int16 products summed pairwise into int32 (ReorderWidenMulAccumulate:
  // pmaddwd / smlal / ...); at most 16 int16 lanes (SCALAR: 1).
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Rebind<uint16_t, decltype(d16)> du16;
  const hn::Rebind<uint8_t, decltype(d16)> du8;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t N = hn::Lanes(d16);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ4* row = w + r * blocks;
    auto acc = hn::Zero(df);
    float min_term = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      const BlockQ4& blk = row[b];
      const int16_t* xb = &in.x16[b * kBlockSize];
      auto sum0 = hn::Zero(d32);
      auto sum1 = hn::Zero(d32);
      // Element k < 16 is the low nibble of byte k, k >= 16 the high nibble
      // of byte k - 16 (N divides 16).
      for (size_t k = 0; k < kHalf; k += N) {
        const auto bytes = hn::LoadU(du8, blk.qs + k);
        const auto lo = hn::BitCast(d16, hn::PromoteTo(du16, hn::And(bytes, hn::Set(du8, 0x0F))));
        const auto hi = hn::BitCast(d16, hn::PromoteTo(du16, hn::ShiftRight<4>(bytes)));
        sum0 = hn::ReorderWidenMulAccumulate(d32, lo, hn::LoadU(d16, xb + k), sum0, sum1);
        sum0 = hn::ReorderWidenMulAccumulate(d32, hi, hn::LoadU(d16, xb + kHalf + k), sum0, sum1);
      }
      const auto dot = hn::ConvertTo(df, hn::RearrangeToOddPlusEven(sum0, sum1));
      acc = hn::MulAdd(dot, hn::Set(df, HalfToF32(blk.d) * in.dx[b]), acc);
      min_term += HalfToF32(blk.m) * in.sums[b];
    }
    y[r] = hn::GetLane(hn::SumOfLanes(df, acc)) + min_term;
  }
}

// Dequantizes one block into 32 floats: d * q (q8) or d * q + m (q4),
// rounded as the scalar reference (no fused multiply-add).
HWY_INLINE void DequantizeBlock(const BlockQ8& blk, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  for (size_t k = 0; k < static_cast<size_t>(kBlockSize); k += hn::Lanes(df)) {
    const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, blk.qs + k)));
    hn::StoreU(hn::Mul(d, q), df, out + k);
  }
}

HWY_INLINE void DequantizeBlock(const BlockQ4& blk, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  constexpr size_t kHalf = kBlockSize / 2;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  const auto m = hn::Set(df, quant::HalfToFloat(blk.m));
  const auto nibble = hn::Set(di, 0x0F);
  for (size_t k = 0; k < kHalf; k += hn::Lanes(df)) {
    const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, blk.qs + k));
    const auto lo = hn::ConvertTo(df, hn::And(bytes, nibble));
    const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(bytes));
    hn::StoreU(hn::Add(hn::Mul(d, lo), m), df, out + k);
    hn::StoreU(hn::Add(hn::Mul(d, hi), m), df, out + kHalf + k);
  }
}

// d * (q - 32), rounded as the scalar reference (one multiply of exact
// operands).
HWY_INLINE void DequantizeBlock(const BlockQ6& blk, float* out) {
  const DF8 df;
  constexpr size_t kEighth = kBlockSize / 4;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  for (size_t k = 0; k < kEighth; k += hn::Lanes(df)) {
    ForQ6Codes(blk, k, [&](size_t g, auto codes) {
      hn::StoreU(hn::Mul(d, codes), df, out + g * kEighth + k);
    });
  }
}

template <class Block>
void DequantizeRowsT(const Block* w, int64_t cols, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  const int64_t full = cols / kBlockSize;
  HWY_ALIGN float tail[kBlockSize];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const Block* row = w + r * blocks;
    float* o = out + (r - row_begin) * cols;
    for (int64_t b = 0; b < full; ++b) DequantizeBlock(row[b], o + b * kBlockSize);
    if (full < blocks) {
      DequantizeBlock(row[full], tail);
      std::memcpy(o + full * kBlockSize, tail, (cols - full * kBlockSize) * sizeof(float));
    }
  }
}

void DequantizeQ8Rows(const BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
}

void DequantizeQ4Rows(const BlockQ4* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
}

void DequantizeQ6Rows(const BlockQ6* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::agents::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qkvshare::agents::kernels {

void QuantizeActivationsQ8(const float* x, int64_t cols, int8_t* xq, float* dx, float* sums) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * weights::kBlockSize;
    const int64_t n = std::min<int64_t>(weights::kBlockSize, cols - begin);
    float amax = 0.0f, sum = 0.0f;
    for (int64_t k = 0; k < n; ++k) {
      amax = std::max(amax, std::fabs(x[begin + k]));
      sum += x[begin + k];
    }
    const float d = amax / 127.0f;
    const float id = d > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t k = 0; k < weights::kBlockSize; ++k) {
      xq[begin + k] = k < n ? static_cast<int8_t>(std::nearbyint(x[begin + k] * id)) : 0;
    }
    dx[b] = d;
    sums[b] = sum;
  }
}

HWY_EXPORT(MatVecQ8Rows);
HWY_EXPORT(MatVecQ4Rows);
HWY_EXPORT(DequantizeQ8Rows);
HWY_EXPORT(DequantizeQ4Rows);
HWY_EXPORT(MatVecQ6Rows);
HWY_EXPORT(DequantizeQ6Rows);

void MatVecQ8Rows(const weights::BlockQ8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ8Rows)(w, cols, x, y, row_begin, row_end);
}

void MatVecQ4Rows(const weights::BlockQ4* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ4Rows)(w, cols, x, y, row_begin, row_end);
}

void DequantizeQ8Rows(const weights::BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ8Rows)(w, cols, row_begin, row_end, out);
}

void DequantizeQ4Rows(const weights::BlockQ4* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ4Rows)(w, cols, row_begin, row_end, out);
}

void MatVecQ6Rows(const weights::BlockQ6* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ6Rows)(w, cols, x, y, row_begin, row_end);
}

void DequantizeQ6Rows(const weights::BlockQ6* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ6Rows)(w, cols, row_begin, row_end, out);
}

}  // namespace qkvshare::agents::kernels
#endif  // HWY_ONCE
