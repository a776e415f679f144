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

// q6 reads the 32-bit words of its blocks' high pairs with memcpy.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "matvec_quant.cc assumes a little-endian host (the q6 blocks' words)"
#endif

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
// In step k (N fp32 lanes, k = 0, N, ... < 16) lane i assembles the codes of
// elements e = k + i (low nibble of ql[e]) and e + 16 (its high nibble):
// the high pairs of both are at bits 2 * (e / 2) and 2 * (e / 2) + 16 of
// qh's 32-bit word W[e % 2] (block_formats.h), so one variable shift of the
// lane's word brings both down. The codes q (0..63) are multiplied as they
// are and the offset applied once per block: sum_k (q_k - 32) x_k =
// sum_k q_k x_k - 32 * sum_k x_k, with the blocks' sums of x computed once
// per call (saves a subtraction per vector: measured, docs/performance.md).

// Lanes i & ~1: the shifts of step 0, hoisted out of the loops.
template <class DU>
HWY_INLINE hn::Vec<DU> Q6Shifts(DU du) {
  return hn::And(hn::Iota(du, 0), hn::Set(du, ~1u));
}

// Calls fn(half, codes) for half = 0 (elements [k, k + N)) and 1 (elements
// [k + 16, k + 16 + N)) of blk, the codes q as exact floats. (A callback,
// not a returned pair: SVE vectors are sizeless.)
template <class Fn>
HWY_INLINE void ForQ6Codes(const BlockQ6& blk, size_t k, hn::Vec<hn::RebindToUnsigned<DF>> shifts0,
                           const Fn& fn) {
  const DF df;
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  const auto nibble = hn::Set(du, 0x0Fu);
  const auto pair = hn::Set(du, 0x30u);
  // (The words are little-endian, as the host: see the check at the top.)
#if HWY_TARGET == HWY_SCALAR
  // One lane: element k's word.
  uint32_t word;
  std::memcpy(&word, blk.qh + 4 * (k % 2), sizeof word);
  const auto words = hn::Set(du, word);
#else
  // N is even and so is k: lane i's word is W[i % 2], i.e. qh read as one
  // 64-bit value and broadcast.
  const hn::Repartition<uint64_t, decltype(du)> du64;
  uint64_t qh64;
  std::memcpy(&qh64, blk.qh, sizeof qh64);
  const auto words = hn::BitCast(du, hn::Set(du64, qh64));
#endif
  // Lane i: shift 2 * ((k + i) / 2) = k + (i & ~1) (k even but on SCALAR,
  // where i = 0 and the word is already element k's).
  const auto t =
      hn::Shr(words, hn::Add(shifts0, hn::Set(du, static_cast<uint32_t>(k & ~size_t{1}))));
  const auto l = hn::PromoteTo(du, hn::LoadU(du8, blk.ql + k));
  auto as_float = [&](auto code) { return hn::ConvertTo(df, hn::BitCast(di, code)); };
  fn(0, as_float(hn::Or(hn::And(l, nibble), hn::And(hn::ShiftLeft<4>(t), pair))));
  fn(1, as_float(hn::Or(hn::ShiftRight<4>(l), hn::And(hn::ShiftRight<12>(t), pair))));
}

// The fp32 sums of x's blocks of 32 (x padded to whole blocks), per thread.
const float* BlockSums(const float* xp, int64_t blocks) {
  thread_local std::vector<float> sums;
  sums.resize(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    float s = 0.0f;
    for (int64_t k = 0; k < kBlockSize; ++k) s += xp[b * kBlockSize + k];
    sums[b] = s;
  }
  return sums.data();
}

void MatVecQ6Rows(const BlockQ6* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  const float* xp = PaddedInput(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const float* sums = BlockSums(xp, blocks);
  const DF df;
  const hn::CappedTag<float, 1> d1;
  const size_t N = hn::Lanes(df);
  const auto shifts0 = Q6Shifts(hn::RebindToUnsigned<DF>());
  constexpr size_t kHalf = kBlockSize / 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ6* row = w + r * blocks;
    auto acc = hn::Zero(df);
    auto offset = hn::Zero(d1);  // sum_b d_b * sum of block b's x
    for (int64_t b = 0; b < blocks; ++b) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      const float* xb = xp + b * kBlockSize;
      auto part = hn::Zero(df);
      HWY_UNROLL(16)
      for (size_t k = 0; k < kHalf; k += N) {
        ForQ6Codes(row[b], k, shifts0, [&](size_t half, auto codes) {
          part = hn::MulAdd(codes, hn::LoadU(df, xb + half * kHalf + k), part);
        });
      }
      const float d = HalfToF32(row[b].d);
      acc = hn::MulAdd(part, hn::Set(df, d), acc);
      offset = hn::MulAdd(hn::Set(d1, d), hn::Set(d1, sums[b]), offset);
    }
    y[r] = hn::GetLane(hn::SumOfLanes(df, acc)) - 32.0f * hn::GetLane(offset);
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
  // d * dx * dot(codes, xq) + m * sum(x) of block b, accumulated into
  // acc / min_term.
  auto block = [&](const BlockQ4& blk, int64_t b, hn::Vec<decltype(df)>& acc, float& min_term) {
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
  };
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ4* row = w + r * blocks;
    // Two independent chains (even / odd blocks): with one, every block
    // waited for the previous block's fused multiply-add.
    auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
    float min0 = 0.0f, min1 = 0.0f;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      block(row[b], b, acc0, min0);
      block(row[b + 1], b + 1, acc1, min1);
    }
    if (b < blocks) block(row[b], b, acc0, min0);
    y[r] = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1))) + (min0 + min1);
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

// d * (q - 32), rounded as the scalar reference (q - 32 is exact: one
// rounding, the multiply).
HWY_INLINE void DequantizeBlock(const BlockQ6& blk, float* out) {
  const DF df;
  constexpr size_t kHalf = kBlockSize / 2;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  const auto offset = hn::Set(df, 32.0f);
  const auto shifts0 = Q6Shifts(hn::RebindToUnsigned<DF>());
  for (size_t k = 0; k < kHalf; k += hn::Lanes(df)) {
    ForQ6Codes(blk, k, shifts0, [&](size_t half, auto codes) {
      hn::StoreU(hn::Mul(d, hn::Sub(codes, offset)), df, out + half * kHalf + k);
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
